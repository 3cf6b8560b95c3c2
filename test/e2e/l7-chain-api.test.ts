// The discovery-chain API and the chain kinds through the real CLI: a service-router, a
// service-splitter and a service-resolver written with `meshd config write FILE` in HCL as
// Consul documents it (one file per kind), read back, listed and deleted, and
// `GET /v1/discovery-chain/:service` answering in Consul's shape at each step — including a
// refused entry that changes nothing, and a blocking query woken by an entry change.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { meshd } from '../helpers/cli.ts';

const FILES: Readonly<Record<string, string>> = {
  'defaults-api.hcl': `Kind     = "service-defaults"
Name     = "api"
Protocol = "http"
`,
  'defaults-canary.hcl': `Kind     = "service-defaults"
Name     = "api-canary"
Protocol = "http"
`,
  'resolver.hcl': `Kind           = "service-resolver"
Name           = "api"
ConnectTimeout = "3s"

Subsets = {
  "v1" = {
    Filter = "Service.Meta.version == v1"
  }
  "v2" = {
    Filter      = "Service.Meta.version == v2"
    OnlyPassing = true
  }
}

Failover = {
  "v2" = {
    ServiceSubset = "v1"
  }
}

LoadBalancer = {
  Policy = "least_request"
  LeastRequestConfig = {
    ChoiceCount = 3
  }
}
`,
  'splitter.hcl': `Kind = "service-splitter"
Name = "api"
Splits = [
  {
    Weight = 90
  },
  {
    Weight  = 10
    Service = "api-canary"
    RequestHeaders {
      Set {
        x-canary = "1"
      }
    }
  },
]
`,
  'router.hcl': `Kind = "service-router"
Name = "api"
Routes = [
  {
    Match {
      HTTP {
        PathPrefix = "/admin"
      }
    }

    Destination {
      ServiceSubset = "v2"
      PrefixRewrite = "/"
    }
  },
  {
    Match {
      HTTP {
        Header = [
          {
            Name  = "x-debug"
            Exact = "1"
          },
        ]
      }
    }

    Destination {
      Service            = "api-canary"
      NumRetries         = 3
      RetryOnStatusCodes = [503]
    }
  },
]
`,
  // 90 + 9: Consul refuses it at write time.
  'splitter-99.hcl': `Kind = "service-splitter"
Name = "api"
Splits = [
  {
    Weight = 90
  },
  {
    Weight  = 9
    Service = "api-canary"
  },
]
`,
  'splitter-80.hcl': `Kind = "service-splitter"
Name = "api"
Splits = [
  {
    Weight = 80
  },
  {
    Weight  = 20
    Service = "api-canary"
  },
]
`,
};

interface ChainNode {
  Type: string;
  Name: string;
  Routes?: { Definition: { Match: { HTTP: Record<string, unknown> }; Destination: Record<string, unknown> }; NextNode: string }[];
  Splits?: { Weight: number; NextNode: string; Definition: Record<string, unknown> }[];
  Resolver?: { ConnectTimeout: string; Target: string; Default?: boolean; Failover?: { Targets: string[] } };
  LoadBalancer?: Record<string, unknown>;
}

interface ChainTarget {
  ID: string;
  Service: string;
  ServiceSubset?: string;
  Namespace: string;
  Partition: string;
  Datacenter: string;
  Subset: { Filter?: string; OnlyPassing?: boolean };
  ConnectTimeout: string;
  SNI: string;
  Name: string;
}

interface Chain {
  ServiceName: string;
  Namespace: string;
  Datacenter: string;
  Protocol: string;
  StartNode: string;
  Nodes: Record<string, ChainNode>;
  Targets: Record<string, ChainTarget>;
}

describe('discovery-chain API and config write|read|list|delete for the chain kinds', () => {
  let dir: string;
  let agent: MeshdProcess;
  let http: string;

  const cli = (...args: string[]): ReturnType<typeof meshd> => {
    const [group, sub, ...rest] = args;
    return meshd([group as string, sub as string, '-http-addr', http, ...rest]);
  };
  const write = async (file: string): Promise<void> => {
    const r = await cli('config', 'write', join(dir, file));
    assert.equal(r.code, 0, r.stderr);
  };
  const chain = async (query = ''): Promise<{ index: number; chain: Chain }> => {
    const r = await fetch(`http://${http}/v1/discovery-chain/api${query}`);
    assert.equal(r.status, 200);
    const index = Number(r.headers.get('x-consul-index'));
    assert.ok(index > 0, 'X-Consul-Index');
    return { index, chain: ((await r.json()) as { Chain: Chain }).Chain };
  };
  const node = (c: Chain, id: string): ChainNode => {
    const n = c.Nodes[id];
    assert.ok(n !== undefined, `no node ${id} in ${Object.keys(c.Nodes).join(', ')}`);
    return n;
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-chain-'));
    for (const [name, text] of Object.entries(FILES)) writeFileSync(join(dir, name), text);
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    http = agent.fields.http as string;
  });

  after(async () => {
    await agent?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('with no entries the chain is the resolver alone, tcp', async () => {
    const { chain: c } = await chain();
    assert.equal(c.Protocol, 'tcp');
    assert.equal(c.StartNode, 'resolver:api.default.default.dc1');
    assert.deepEqual(Object.keys(c.Nodes), ['resolver:api.default.default.dc1']);
    assert.equal(node(c, 'resolver:api.default.default.dc1').Resolver?.Default, true);
  });

  test('config write takes the HCL files, one per kind', async () => {
    for (const f of ['defaults-api.hcl', 'defaults-canary.hcl', 'resolver.hcl', 'splitter.hcl', 'router.hcl']) {
      const r = await cli('config', 'write', join(dir, f));
      assert.equal(r.code, 0, `${f}: ${r.stderr}`);
      const kind = f.startsWith('defaults') ? 'service-defaults' : `service-${f.replace('.hcl', '')}`;
      const name = f === 'defaults-canary.hcl' ? 'api-canary' : 'api';
      assert.equal(r.stdout.trim(), `Config entry written: ${kind}/${name}`);
    }
  });

  test("GET /v1/discovery-chain/api answers in Consul's shape: router -> splitter -> resolvers, and the targets", async () => {
    const { chain: c } = await chain();
    assert.equal(c.ServiceName, 'api');
    assert.equal(c.Namespace, 'default');
    assert.equal(c.Datacenter, 'dc1');
    assert.equal(c.Protocol, 'http');
    assert.equal(c.StartNode, 'router:api.default.default');
    assert.deepEqual(Object.keys(c.Nodes).sort(), [
      'resolver:api-canary.default.default.dc1',
      'resolver:api.default.default.dc1',
      'resolver:v2.api.default.default.dc1',
      'router:api.default.default',
      'splitter:api.default.default',
    ]);

    const router = node(c, 'router:api.default.default');
    assert.equal(router.Type, 'router');
    assert.equal(router.Name, 'api.default.default');
    assert.deepEqual(
      router.Routes?.map((r) => [r.Definition.Match.HTTP, r.NextNode]),
      [
        [{ PathPrefix: '/admin' }, 'resolver:v2.api.default.default.dc1'],
        [{ Header: [{ Name: 'x-debug', Exact: '1' }] }, 'resolver:api-canary.default.default.dc1'],
        // The compiler's catch-all, to the service's splitter.
        [{ PathPrefix: '/' }, 'splitter:api.default.default'],
      ],
    );
    assert.equal(router.Routes?.[0]?.Definition.Destination.PrefixRewrite, '/');
    assert.deepEqual(router.Routes?.[1]?.Definition.Destination.RetryOnStatusCodes, [503]);
    assert.equal(router.Routes?.[2]?.Definition.Destination.Service, 'api');

    const splitter = node(c, 'splitter:api.default.default');
    assert.equal(splitter.Type, 'splitter');
    assert.deepEqual(
      splitter.Splits?.map((s) => [s.Weight, s.NextNode]),
      [
        [90, 'resolver:api.default.default.dc1'],
        [10, 'resolver:api-canary.default.default.dc1'],
      ],
    );
    assert.deepEqual(splitter.Splits?.[1]?.Definition.RequestHeaders, { Set: { 'x-canary': '1' } });

    const api = node(c, 'resolver:api.default.default.dc1');
    assert.equal(api.Type, 'resolver');
    assert.equal(api.Name, 'api.default.default.dc1');
    assert.equal(api.Resolver?.Target, 'api.default.default.dc1');
    assert.equal(api.Resolver?.ConnectTimeout, '3s');
    assert.notEqual(api.Resolver?.Default, true);
    assert.deepEqual(api.LoadBalancer, { Policy: 'least_request', LeastRequestConfig: { ChoiceCount: 3 } });
    const v2 = node(c, 'resolver:v2.api.default.default.dc1');
    assert.deepEqual(v2.Resolver?.Failover?.Targets, ['v1.api.default.default.dc1']);
    // No resolver entry for the canary: Consul's default resolver, 5 s connect timeout.
    const canary = node(c, 'resolver:api-canary.default.default.dc1');
    assert.equal(canary.Resolver?.Default, true);
    assert.equal(canary.Resolver?.ConnectTimeout, '5s');

    // The failover target is a target but not a node.
    assert.deepEqual(Object.keys(c.Targets).sort(), ['api-canary.default.default.dc1', 'api.default.default.dc1', 'v1.api.default.default.dc1', 'v2.api.default.default.dc1']);
    for (const [id, t] of Object.entries(c.Targets)) {
      assert.equal(t.ID, id);
      assert.equal(t.Namespace, 'default');
      assert.equal(t.Partition, 'default');
      assert.equal(t.Datacenter, 'dc1');
      assert.equal(t.Name, t.SNI);
    }
    const tv2 = c.Targets['v2.api.default.default.dc1'];
    assert.equal(tv2?.Service, 'api');
    assert.equal(tv2?.ServiceSubset, 'v2');
    assert.deepEqual(tv2?.Subset, { Filter: 'Service.Meta.version == v2', OnlyPassing: true });
    assert.equal(tv2?.ConnectTimeout, '3s');
    assert.match(tv2?.SNI ?? '', /^v2\.api\.default\.dc1\.internal\.[0-9a-f-]{36}\.consul$/);
    assert.match(c.Targets['api.default.default.dc1']?.SNI ?? '', /^api\.default\.dc1\.internal\.[0-9a-f-]{36}\.consul$/);
    assert.equal(c.Targets['api-canary.default.default.dc1']?.Service, 'api-canary');
    assert.equal(c.Targets['api-canary.default.default.dc1']?.ServiceSubset, undefined);
  });

  test('config read prints each entry, config list names it', async () => {
    for (const kind of ['service-router', 'service-splitter', 'service-resolver']) {
      const list = await cli('config', 'list', '-kind', kind);
      assert.equal(list.code, 0, list.stderr);
      assert.equal(list.stdout, 'api\n');
    }
    const router = await cli('config', 'read', '-kind', 'service-router', '-name', 'api');
    assert.equal(router.code, 0, router.stderr);
    const r = JSON.parse(router.stdout) as { Kind: string; Name: string; Routes: { Match: unknown; Destination: unknown }[]; CreateIndex: number; ModifyIndex: number };
    assert.equal(r.Kind, 'service-router');
    assert.equal(r.Name, 'api');
    assert.deepEqual(r.Routes, [
      { Match: { HTTP: { PathPrefix: '/admin' } }, Destination: { ServiceSubset: 'v2', PrefixRewrite: '/' } },
      { Match: { HTTP: { Header: [{ Name: 'x-debug', Exact: '1' }] } }, Destination: { Service: 'api-canary', NumRetries: 3, RetryOnStatusCodes: [503] } },
    ]);
    assert.ok(r.ModifyIndex > 0 && r.CreateIndex === r.ModifyIndex);

    const splitter = JSON.parse((await cli('config', 'read', '-kind', 'service-splitter', '-name', 'api')).stdout) as { Splits: unknown };
    assert.deepEqual(splitter.Splits, [{ Weight: 90 }, { Weight: 10, Service: 'api-canary', RequestHeaders: { Set: { 'x-canary': '1' } } }]);
    const resolver = JSON.parse((await cli('config', 'read', '-kind', 'service-resolver', '-name', 'api')).stdout) as Record<string, unknown>;
    assert.equal(resolver.ConnectTimeout, '3s');
    assert.deepEqual(resolver.Subsets, { v1: { Filter: 'Service.Meta.version == v1' }, v2: { Filter: 'Service.Meta.version == v2', OnlyPassing: true } });
    assert.deepEqual(resolver.Failover, { v2: { ServiceSubset: 'v1' } });
  });

  test('a splitter whose weights sum to 99 is refused, naming the field and the sum; the chain is unchanged', async () => {
    const before = await chain();
    const r = await cli('config', 'write', join(dir, 'splitter-99.hcl'));
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Splits/);
    assert.match(r.stderr, /the sum of all split weights must be 100, not 99/);
    const now = await chain();
    assert.deepEqual(now, before);
    const splits = (JSON.parse((await cli('config', 'read', '-kind', 'service-splitter', '-name', 'api')).stdout) as { Splits: { Weight: number }[] }).Splits;
    assert.deepEqual(splits.map((s) => s.Weight), [90, 10]);
  });

  test('a blocking query (?index=N&wait=5s) returns when an entry changes, with the new chain and a higher index', async () => {
    const { index } = await chain();
    // Nothing changes: it waits out `wait`, same index.
    const t0 = performance.now();
    const idle = await chain(`?index=${index}&wait=500ms`);
    const idleMs = performance.now() - t0;
    assert.ok(idleMs >= 450, `returned after ${idleMs.toFixed(0)} ms with nothing changed`);
    assert.equal(idle.index, index);

    const t1 = performance.now();
    const blocked = chain(`?index=${index}&wait=5s`);
    await new Promise((r) => setTimeout(r, 300));
    await write('splitter-80.hcl');
    const woke = await blocked;
    const ms = performance.now() - t1;
    assert.ok(ms >= 300 && ms < 4000, `blocking query returned after ${ms.toFixed(0)} ms`);
    assert.ok(woke.index > index, `index ${woke.index} after ${index}`);
    assert.deepEqual(node(woke.chain, 'splitter:api.default.default').Splits?.map((s) => s.Weight), [80, 20]);
  });

  test('config delete removes the router, then the splitter: the chain falls back to splitter, then to the resolver alone', async () => {
    const del = await cli('config', 'delete', '-kind', 'service-router', '-name', 'api');
    assert.equal(del.code, 0, del.stderr);
    assert.equal(del.stdout.trim(), 'Config entry deleted: service-router/api');
    assert.equal((await cli('config', 'list', '-kind', 'service-router')).stdout, '');
    const gone = await cli('config', 'read', '-kind', 'service-router', '-name', 'api');
    assert.notEqual(gone.code, 0);
    assert.match(gone.stderr, /404/);
    const s = (await chain()).chain;
    assert.equal(s.StartNode, 'splitter:api.default.default');
    assert.equal(s.Nodes['router:api.default.default'], undefined);
    // The router's v2 route is gone with it.
    assert.equal(s.Nodes['resolver:v2.api.default.default.dc1'], undefined);

    assert.equal((await cli('config', 'delete', '-kind', 'service-splitter', '-name', 'api')).code, 0);
    const { chain: c } = await chain();
    assert.equal(c.Protocol, 'http');
    assert.equal(c.StartNode, 'resolver:api.default.default.dc1');
    assert.deepEqual(Object.keys(c.Nodes), ['resolver:api.default.default.dc1']);
    assert.equal(node(c, 'resolver:api.default.default.dc1').Resolver?.ConnectTimeout, '3s');
    assert.deepEqual(Object.keys(c.Targets), ['api.default.default.dc1']);
    // The resolver itself is still there.
    assert.equal((await cli('config', 'list', '-kind', 'service-resolver')).stdout, 'api\n');
  });
});
