// The discovery-chain compiler: each compilation rule, the errors that name the entry at
// fault, Consul's JSON for a documented example, and a property over random nested splitter
// graphs (flattened weights sum to exactly 10000; each leaf is the product of its path).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FieldError } from '../../src/control/decode.ts';
import { decodeConfigEntry, parseConfigEntryText, type ConfigEntry } from '../../src/config/entries.ts';
import { ChainCompileError, compileChain, distributeWeight, mergeHeaderModifiers, type CompileOptions } from '../../src/chain/compile.ts';
import type { ChainSplit, DataPlaneChain } from '../../src/chain/types.ts';

const DC = 'dc1';
const OPTS: CompileOptions = { datacenter: DC };
const id = (s: string): string => `${s}.default.default.${DC}`;
const entries = (...docs: Record<string, unknown>[]): ConfigEntry[] => docs.map((d) => decodeConfigEntry(d));
const http = (...names: string[]): Record<string, unknown>[] => names.map((Name) => ({ Kind: 'service-defaults', Name, Protocol: 'http' }));
const NONE = { add: {}, set: {}, remove: [] };

function splits(chain: DataPlaneChain, route = 0): [number, string][] {
  return (chain.routes[route]?.action.splits ?? []).map((s: ChainSplit) => [s.weightBp, s.targetId]);
}

function compileError(fn: () => unknown, field: string, message: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof ChainCompileError && e instanceof FieldError, `expected a ChainCompileError, got ${String(e)}`);
    assert.equal(e.field, field, e.message);
    assert.match(e.message, message);
    return true;
  });
}

test('no entries: tcp, resolver only, one catch-all route to the service, 5 s connect timeout, Envoy defaults', () => {
  const { consul, dataPlane } = compileChain([], 'web', OPTS);
  assert.deepEqual(dataPlane, {
    serviceName: 'web',
    protocol: 'tcp',
    routes: [
      {
        match: null,
        action: {
          splits: [{ weightBp: 10000, targetId: id('web'), requestHeaders: NONE, responseHeaders: NONE }],
          prefixRewrite: '',
          requestTimeoutMs: 0,
          idleTimeoutMs: 0,
          numRetries: 0,
          retryOnConnectFailure: false,
          retryOn: [],
          retryOnStatusCodes: [],
          requestHeaders: NONE,
          responseHeaders: NONE,
        },
      },
    ],
    targets: {
      [id('web')]: {
        id: id('web'),
        service: 'web',
        subset: '',
        filter: '',
        onlyPassing: false,
        connectTimeoutMs: 5000,
        requestTimeoutMs: 0,
        loadBalancer: { policy: 'round_robin', choiceCount: 2, minimumRingSize: 1024, maximumRingSize: 8388608, hashPolicies: [] },
        failover: [],
        datacenter: DC,
        sni: '',
        meshGatewayMode: 'none',
      },
    },
    limits: { maxConnections: 0, maxPendingRequests: 0, maxConcurrentRequests: 0 },
    passiveHealthCheck: { intervalMs: 10000, maxFailures: 5, enforcingConsecutive5xx: 100, maxEjectionPercent: 10, baseEjectionTimeMs: 30000 },
  });
  assert.deepEqual(consul, {
    Chain: {
      ServiceName: 'web',
      Namespace: 'default',
      Partition: 'default',
      Datacenter: DC,
      Default: true,
      Protocol: 'tcp',
      StartNode: `resolver:${id('web')}`,
      Nodes: { [`resolver:${id('web')}`]: { Type: 'resolver', Name: id('web'), Resolver: { Default: true, ConnectTimeout: '5s', Target: id('web') } } },
      Targets: {
        [id('web')]: {
          ID: id('web'), Service: 'web', Namespace: 'default', Partition: 'default', Datacenter: DC, MeshGateway: {}, Subset: {}, TransparentProxy: {}, ConnectTimeout: '5s',
        },
      },
    },
  });
});

test('tcp ignores routers and splitters, even when they exist', () => {
  const es = entries(
    { Kind: 'service-router', Name: 'web', Routes: [{ Match: { HTTP: { PathPrefix: '/admin' } }, Destination: { Service: 'admin' } }] },
    { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 50, ServiceSubset: 'v1' }, { Weight: 50, ServiceSubset: 'v2' }] },
    { Kind: 'service-resolver', Name: 'web', Subsets: { v1: {}, v2: {} } },
  );
  const { dataPlane, consul } = compileChain(es, 'web', OPTS);
  assert.equal(dataPlane.protocol, 'tcp');
  assert.deepEqual(splits(dataPlane), [[10000, id('web')]]);
  assert.equal((consul.Chain as Record<string, unknown>).StartNode, `resolver:${id('web')}`);
});

test('start node: splitter when there is no router; resolver DefaultSubset applies to a split without a subset', () => {
  const es = entries(
    ...http('web'),
    { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 90 }, { Weight: 10, ServiceSubset: 'v2' }] },
    { Kind: 'service-resolver', Name: 'web', DefaultSubset: 'v1', Subsets: { v1: { Filter: 'Service.Meta.version == v1' }, v2: { Filter: 'Service.Meta.version == v2', OnlyPassing: true } } },
  );
  const { dataPlane, consul } = compileChain(es, 'web', OPTS);
  assert.equal(dataPlane.protocol, 'http');
  assert.equal((consul.Chain as Record<string, unknown>).StartNode, 'splitter:web.default.default');
  assert.deepEqual(splits(dataPlane), [[9000, id('v1.web')], [1000, id('v2.web')]]);
  assert.equal(dataPlane.targets[id('v1.web')]?.filter, 'Service.Meta.version == v1');
  assert.equal(dataPlane.targets[id('v2.web')]?.onlyPassing, true);
  assert.deepEqual(Object.keys(dataPlane.targets), [id('v1.web'), id('v2.web')]);
});

test('router: routes in order, then the implicit catch-all; Service-only continues to that service’s splitter; ServiceSubset goes straight to the resolver', () => {
  const es = entries(
    ...http('web', 'api', 'admin'),
    {
      Kind: 'service-router',
      Name: 'web',
      Routes: [
        { Match: { HTTP: { PathPrefix: '/api' } }, Destination: { Service: 'api', PrefixRewrite: '/', RequestTimeout: '3s', NumRetries: 2, RetryOn: ['5xx'], RequestHeaders: { Set: { 'x-route': 'api' } } } },
        { Match: { HTTP: { PathPrefix: '/api-pinned' } }, Destination: { Service: 'api', ServiceSubset: 'v2' } },
        { Match: { HTTP: { Header: [{ Name: 'x-admin', Present: true }], Methods: ['get'] } }, Destination: { Service: 'admin', IdleTimeout: '30s' } },
        { Match: { HTTP: { QueryParam: [{ Name: 'canary', Exact: '1' }] } }, Destination: { ServiceSubset: 'canary' } },
      ],
    },
    { Kind: 'service-splitter', Name: 'api', Splits: [{ Weight: 75, ServiceSubset: 'v1' }, { Weight: 25, ServiceSubset: 'v2' }] },
    { Kind: 'service-resolver', Name: 'api', Subsets: { v1: {}, v2: {} } },
    { Kind: 'service-resolver', Name: 'web', Subsets: { canary: { Filter: 'Service.Tags contains canary' } } },
  );
  const { dataPlane: dp, consul } = compileChain(es, 'web', OPTS);
  assert.equal((consul.Chain as Record<string, unknown>).StartNode, 'router:web.default.default');
  assert.equal(dp.routes.length, 5);
  assert.deepEqual(dp.routes[0]?.match, { path: { kind: 'prefix', value: '/api' }, headers: [], queryParams: [], methods: [] });
  assert.deepEqual(splits(dp, 0), [[7500, id('v1.api')], [2500, id('v2.api')]]);
  const a0 = dp.routes[0]?.action;
  assert.deepEqual([a0?.prefixRewrite, a0?.requestTimeoutMs, a0?.numRetries, a0?.retryOn, a0?.requestHeaders.set], ['/', 3000, 2, ['5xx'], { 'x-route': 'api' }]);
  assert.deepEqual(splits(dp, 1), [[10000, id('v2.api')]]);
  assert.deepEqual(dp.routes[2]?.match?.methods, ['GET']);
  assert.deepEqual(splits(dp, 2), [[10000, id('admin')]]);
  assert.equal(dp.routes[2]?.action.idleTimeoutMs, 30000);
  assert.deepEqual(splits(dp, 3), [[10000, id('canary.web')]]);
  assert.equal(dp.routes[4]?.match, null);
  assert.deepEqual(splits(dp, 4), [[10000, id('web')]]);
  const router = ((consul.Chain as Record<string, unknown>).Nodes as Record<string, Record<string, unknown>>)['router:web.default.default'];
  const last = (router?.Routes as Record<string, unknown>[])[4];
  assert.deepEqual(last, { Definition: { Match: { HTTP: { PathPrefix: '/' } }, Destination: { Service: 'web', Namespace: 'default', Partition: 'default' } }, NextNode: `resolver:${id('web')}` });
});

test('the catch-all goes to the service’s own splitter when it has one', () => {
  const es = entries(
    ...http('web'),
    { Kind: 'service-router', Name: 'web', Routes: [{ Match: { HTTP: { PathExact: '/health' } }, Destination: { ServiceSubset: 'v1' } }] },
    { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 50, ServiceSubset: 'v1' }, { Weight: 50, ServiceSubset: 'v2' }] },
    { Kind: 'service-resolver', Name: 'web', Subsets: { v1: {}, v2: {} } },
  );
  const { dataPlane } = compileChain(es, 'web', OPTS);
  assert.deepEqual(splits(dataPlane, 0), [[10000, id('v1.web')]]);
  assert.deepEqual(splits(dataPlane, 1), [[5000, id('v1.web')], [5000, id('v2.web')]]);
});

test('nested splitters flatten: weights multiply, the remainder goes to the first split, header modifiers merge', () => {
  const es = entries(
    ...http('web', 'next', 'leaf'),
    {
      Kind: 'service-splitter',
      Name: 'web',
      Splits: [
        { Weight: 50, ServiceSubset: 'v1' },
        {
          Weight: 50,
          Service: 'next',
          RequestHeaders: { Set: { 'x-level': 'parent', 'x-parent': '1' }, Remove: ['x-a'] },
          ResponseHeaders: { Set: { 'x-resp': 'parent' }, Add: { 'x-p': '1' } },
        },
      ],
    },
    {
      Kind: 'service-splitter',
      Name: 'next',
      Splits: [
        { Weight: 33.33, ServiceSubset: 'a', RequestHeaders: { Set: { 'x-level': 'child' }, Remove: ['x-b', 'x-a'] }, ResponseHeaders: { Set: { 'x-resp': 'child', 'x-c': '1' } } },
        { Weight: 33.33, ServiceSubset: 'b' },
        { Weight: 33.34, Service: 'leaf' },
      ],
    },
    { Kind: 'service-resolver', Name: 'web', Subsets: { v1: {} } },
    { Kind: 'service-resolver', Name: 'next', Subsets: { a: {}, b: {} } },
  );
  const { dataPlane: dp, consul } = compileChain(es, 'web', OPTS);
  // 50% of 33.33% = 1666.5 bp, 50% of 33.34% = 1667 bp: floor for all but the first, which
  // takes the rest (5000 - 1666 - 1667).
  assert.deepEqual(splits(dp), [[5000, id('v1.web')], [1667, id('a.next')], [1666, id('b.next')], [1667, id('leaf')]]);
  assert.equal(dp.routes[0]?.action.splits.reduce((s, x) => s + x.weightBp, 0), 10000);
  const merged = dp.routes[0]?.action.splits[1];
  assert.deepEqual(merged?.requestHeaders, { add: {}, set: { 'x-level': 'child', 'x-parent': '1' }, remove: ['x-a', 'x-b'] });
  assert.deepEqual(merged?.responseHeaders, { add: { 'x-p': '1' }, set: { 'x-resp': 'parent', 'x-c': '1' }, remove: [] });
  assert.deepEqual(dp.routes[0]?.action.splits[2]?.requestHeaders, { add: {}, set: { 'x-level': 'parent', 'x-parent': '1' }, remove: ['x-a'] });
  // Consul's view: the nested splitter node is gone, the flattened weights are percentages.
  const nodes = (consul.Chain as Record<string, unknown>).Nodes as Record<string, Record<string, unknown>>;
  assert.equal(nodes['splitter:next.default.default'], undefined);
  assert.deepEqual((nodes['splitter:web.default.default']?.Splits as Record<string, unknown>[]).map((s) => s.Weight), [50, 16.67, 16.66, 16.67]);
});

test('distributeWeight and mergeHeaderModifiers', () => {
  assert.deepEqual(distributeWeight(10000, [5000, 5000]), [5000, 5000]);
  assert.deepEqual(distributeWeight(1, [0, 5000, 5000]), [1, 0, 0]);
  assert.deepEqual(distributeWeight(0, [10000]), [0]);
  assert.deepEqual(mergeHeaderModifiers({ add: { a: '1' }, set: { s: '1' }, remove: ['r'] }, { add: { a: '2', b: '2' }, set: {}, remove: ['r', 'q'] }), {
    add: { a: '2', b: '2' }, set: { s: '1' }, remove: ['r', 'q'],
  });
});

test('redirect: followed once per resolver (a redirect to a subset of itself stops there), chains followed, loops refused', () => {
  const es = entries(
    { Kind: 'service-resolver', Name: 'web', Redirect: { Service: 'web2' } },
    { Kind: 'service-resolver', Name: 'web2', Subsets: { v1: {} }, Redirect: { Service: 'web2', ServiceSubset: 'v1' } },
  );
  const { dataPlane, consul } = compileChain(es, 'web', OPTS);
  assert.deepEqual(splits(dataPlane), [[10000, id('v1.web2')]]);
  assert.deepEqual(Object.keys(dataPlane.targets), [id('v1.web2')]);
  const chain = consul.Chain as Record<string, unknown>;
  assert.equal(chain.StartNode, `resolver:${id('v1.web2')}`);
  assert.equal(chain.Default, undefined);
  compileError(
    () => compileChain(entries({ Kind: 'service-resolver', Name: 'a', Redirect: { Service: 'b' } }, { Kind: 'service-resolver', Name: 'b', Redirect: { Service: 'a' } }), 'a', OPTS),
    'service-resolver/b.Redirect',
    /detected circular resolver redirect: \[a\.default\.default\.dc1 -> b\.default\.default\.dc1 -> a\.default\.default\.dc1\]/,
  );
  // A redirect names the local datacenter or another one; the target lands there.
  assert.deepEqual(splits(compileChain(entries({ Kind: 'service-resolver', Name: 'web', Redirect: { Service: 'api', Datacenter: DC } }), 'web', OPTS).dataPlane), [[10000, id('api')]]);
  assert.deepEqual(splits(compileChain(entries({ Kind: 'service-resolver', Name: 'web', Redirect: { Service: 'api', Datacenter: 'dc2' } }), 'web', OPTS).dataPlane), [[10000, 'api.default.default.dc2']]);
});

test('datacenters: a chain evaluated in another datacenter, its SNI, cross-DC redirect and failover', () => {
  const TD = '11111111-2222-3333-4444-555555555555.consul';
  const remote = compileChain([], 'api', { datacenter: DC, evaluateInDatacenter: 'dc2', trustDomain: TD });
  const t = remote.dataPlane.targets['api.default.default.dc2'];
  assert.ok(t !== undefined, JSON.stringify(Object.keys(remote.dataPlane.targets)));
  assert.equal(t.datacenter, 'dc2');
  assert.equal(t.sni, `api.default.dc2.internal.${TD}`);
  assert.equal(t.meshGatewayMode, 'none');
  // Consul's JSON: the chain reports the local datacenter, its target the remote one.
  const chain = remote.consul.Chain as { Datacenter: string; Targets: Record<string, { Datacenter: string; SNI: string }> };
  assert.equal(chain.Datacenter, DC);
  assert.deepEqual([chain.Targets['api.default.default.dc2']?.Datacenter, chain.Targets['api.default.default.dc2']?.SNI], ['dc2', `api.default.dc2.internal.${TD}`]);
  // Failover to other datacenters, in order; the same service and subset there; the primary's dc dropped.
  const es = entries(
    { Kind: 'service-resolver', Name: 'api', Subsets: { v1: { Filter: 'Service.Meta.version == v1' } }, Failover: { '*': { Datacenters: ['dc2', 'dc1', 'dc3'] } } },
    { Kind: 'service-resolver', Name: 'web', Failover: { '*': { Targets: [{ Service: 'api', ServiceSubset: 'v1', Datacenter: 'dc3' }] } } },
  );
  const api = compileChain(es, 'api', { datacenter: DC, evaluateInDatacenter: 'dc2', trustDomain: TD }).dataPlane;
  assert.deepEqual(api.targets['api.default.default.dc2']?.failover, ['api.default.default.dc1', 'api.default.default.dc3']);
  assert.equal(api.targets['api.default.default.dc3']?.sni, `api.default.dc3.internal.${TD}`);
  const web = compileChain(es, 'web', { datacenter: DC, trustDomain: TD }).dataPlane;
  assert.deepEqual(web.targets[id('web')]?.failover, ['v1.api.default.default.dc3']);
  assert.equal(web.targets['v1.api.default.default.dc3']?.sni, `v1.api.default.dc3.internal.${TD}`);
  assert.equal(web.targets['v1.api.default.default.dc3']?.filter, 'Service.Meta.version == v1');
});

test('mesh-gateway mode: the upstream override, then the downstream service-defaults, the target service-defaults, proxy-defaults; none by default', () => {
  const mode = (es: ConfigEntry[], override: '' | 'none' | 'local' | 'remote' = ''): string | undefined =>
    compileChain(es, 'api', { datacenter: DC, evaluateInDatacenter: 'dc2', downstream: 'web', overrideMeshGatewayMode: override }).dataPlane.targets['api.default.default.dc2']?.meshGatewayMode;
  const pd = { Kind: 'proxy-defaults', Name: 'global', MeshGateway: { Mode: 'remote' } };
  const target = { Kind: 'service-defaults', Name: 'api', MeshGateway: { Mode: 'local' } };
  const down = { Kind: 'service-defaults', Name: 'web', MeshGateway: { Mode: 'none' } };
  assert.equal(mode([]), 'none');
  assert.equal(mode(entries(pd)), 'remote');
  assert.equal(mode(entries(pd, target)), 'local');
  assert.equal(mode(entries(pd, target, { ...down, MeshGateway: { Mode: 'remote' } })), 'remote');
  assert.equal(mode(entries(pd, target, down)), 'none');
  assert.equal(mode(entries(pd, target, down), 'local'), 'local');
  // Consul's JSON shows the mode in force on each target.
  const consul = compileChain(entries(pd), 'api', { datacenter: DC, evaluateInDatacenter: 'dc2' }).consul.Chain as { Targets: Record<string, { MeshGateway: unknown }> };
  assert.deepEqual(consul.Targets['api.default.default.dc2']?.MeshGateway, { Mode: 'remote' });
  // proxy-defaults: one entry named global; Envoy-only fields are refused, naming the field.
  assert.throws(() => decodeConfigEntry({ Kind: 'proxy-defaults', Name: 'web' }), (e: unknown) => e instanceof FieldError && e.field === 'Name');
  assert.throws(() => decodeConfigEntry({ Kind: 'proxy-defaults', Name: 'global', Config: { protocol: 'http' } }), (e: unknown) => e instanceof FieldError && e.field === 'Config');
  assert.throws(() => decodeConfigEntry({ Kind: 'proxy-defaults', Name: 'global', MeshGateway: { Mode: 'sideways' } }), (e: unknown) => e instanceof FieldError && e.field === 'MeshGateway.Mode');
});

test('failover: by subset or "*", Service / ServiceSubset / Targets, ordered, resolved, never the primary or a target twice', () => {
  const es = entries(
    {
      Kind: 'service-resolver',
      Name: 'web',
      DefaultSubset: 'v1',
      Subsets: { v1: {}, v2: {}, v3: {} },
      Failover: {
        v1: { ServiceSubset: 'v2' },
        '*': { Targets: [{ ServiceSubset: 'v1' }, { Service: 'backup' }, { ServiceSubset: 'v3' }, { Service: 'backup2' }, { Service: 'web', ServiceSubset: 'v1' }] },
      },
    },
    // backup2 redirects to backup: the same target, listed once.
    { Kind: 'service-resolver', Name: 'backup2', Redirect: { Service: 'backup' } },
    { Kind: 'service-resolver', Name: 'backup', ConnectTimeout: '2s', Failover: { '*': { Service: 'elsewhere' } } },
    ...http('web'),
    { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 50 }, { Weight: 50, ServiceSubset: 'v3' }] },
  );
  // Protocols must agree: everything here is http.
  const all = [...es, ...entries(...http('backup', 'backup2', 'elsewhere'))];
  const { dataPlane: dp, consul } = compileChain(all, 'web', OPTS);
  assert.deepEqual(splits(dp), [[5000, id('v1.web')], [5000, id('v3.web')]]);
  assert.deepEqual(dp.targets[id('v1.web')]?.failover, [id('v2.web')]);
  assert.deepEqual(dp.targets[id('v3.web')]?.failover, [id('v1.web'), id('backup')]);
  // A failover target's own failover is not followed (one level, as in Consul).
  assert.deepEqual(dp.targets[id('backup')]?.failover, []);
  assert.equal(dp.targets[id('backup')]?.connectTimeoutMs, 2000);
  assert.equal(dp.targets[id('elsewhere')], undefined);
  const nodes = (consul.Chain as Record<string, unknown>).Nodes as Record<string, Record<string, unknown>>;
  assert.deepEqual((nodes[`resolver:${id('v3.web')}`]?.Resolver as Record<string, unknown>).Failover, { Targets: [id('v1.web'), id('backup')] });
});

test('failover Datacenters: the local one adds nothing; repeats collapse; others are tried in order', () => {
  const local = compileChain(entries({ Kind: 'service-resolver', Name: 'web', Failover: { '*': { Datacenters: [DC] } } }), 'web', OPTS);
  assert.deepEqual(local.dataPlane.targets[id('web')]?.failover, []);
  const withService = compileChain(entries({ Kind: 'service-resolver', Name: 'web', Failover: { '*': { Service: 'web-backup', Datacenters: [DC, DC] } } }), 'web', OPTS);
  assert.deepEqual(withService.dataPlane.targets[id('web')]?.failover, [id('web-backup')]);
  const remote = compileChain(entries({ Kind: 'service-resolver', Name: 'web', Failover: { '*': { Datacenters: [DC, 'dc2'] } } }), 'web', OPTS);
  assert.deepEqual(remote.dataPlane.targets[id('web')]?.failover, ['web.default.default.dc2']);
  const target = compileChain(entries({ Kind: 'service-resolver', Name: 'web', Failover: { '*': { Targets: [{ Datacenter: 'dc3' }] } } }), 'web', OPTS);
  assert.deepEqual(target.dataPlane.targets[id('web')]?.failover, ['web.default.default.dc3']);
});

test('a subset that does not exist on the resolver is a compile error naming the entry that asked for it', () => {
  const base = [...http('web', 'api'), { Kind: 'service-resolver', Name: 'api', Subsets: { v1: {} } }];
  compileError(
    () => compileChain(entries(...base, { Kind: 'service-router', Name: 'web', Routes: [{ Destination: { Service: 'api', ServiceSubset: 'v2' } }] }), 'web', OPTS),
    'service-router/web.Routes[0].Destination.ServiceSubset',
    /service "api" does not have a subset named "v2"/,
  );
  compileError(
    () => compileChain(entries(...base, { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 100, ServiceSubset: 'v1' }] }), 'web', OPTS),
    'service-splitter/web.Splits[0].ServiceSubset',
    /service "web" does not have a subset named "v1" \(it has no service-resolver\)/,
  );
  compileError(
    () => compileChain(entries(...base, { Kind: 'service-resolver', Name: 'web', Failover: { '*': { Service: 'api', ServiceSubset: 'v9' } } }), 'web', OPTS),
    'service-resolver/web.Failover.*',
    /service "api" does not have a subset named "v9"/,
  );
  compileError(
    () => compileChain(entries(...base, { Kind: 'service-resolver', Name: 'web', Redirect: { Service: 'api', ServiceSubset: 'v3' } }), 'web', OPTS),
    'service-resolver/web.Redirect',
    /service "api" does not have a subset named "v3"/,
  );
});

test('inconsistent protocols and splitter cycles are compile errors', () => {
  compileError(
    () => compileChain(entries(...http('web'), { Kind: 'service-router', Name: 'web', Routes: [{ Destination: { Service: 'db' } }] }), 'web', OPTS),
    'service-router/web.Routes[0].Destination',
    /discovery chain "web" uses inconsistent protocols; service "db" has "tcp" which is not "http"/,
  );
  compileError(
    () =>
      compileChain(
        entries(
          ...http('a', 'b'),
          { Kind: 'service-splitter', Name: 'a', Splits: [{ Weight: 100, Service: 'b' }] },
          { Kind: 'service-splitter', Name: 'b', Splits: [{ Weight: 50, Service: 'a' }, { Weight: 50, Service: 'b' }] },
        ),
        'a',
        OPTS,
      ),
    'service-splitter/a.Splits',
    /detected circular reference: \[splitter:a\.default\.default -> splitter:b\.default\.default -> splitter:a\.default\.default\]/,
  );
});

test('resolver settings: ConnectTimeout, RequestTimeout, LoadBalancer with defaults filled in', () => {
  const es = entries({
    Kind: 'service-resolver',
    Name: 'web',
    ConnectTimeout: '1.5s',
    RequestTimeout: '20s',
    LoadBalancer: { Policy: 'ring_hash', RingHashConfig: { MaximumRingSize: 4096 }, HashPolicies: [{ Field: 'cookie', FieldValue: 'sid', CookieConfig: { TTL: '10s' } }, { SourceIP: true, Terminal: true }] },
  });
  const { dataPlane, consul } = compileChain(es, 'web', OPTS);
  const t = dataPlane.targets[id('web')];
  assert.equal(t?.connectTimeoutMs, 1500);
  assert.equal(t?.requestTimeoutMs, 20000);
  assert.deepEqual(t?.loadBalancer, {
    policy: 'ring_hash',
    choiceCount: 2,
    minimumRingSize: 1024,
    maximumRingSize: 4096,
    hashPolicies: [
      { field: 'cookie', fieldValue: 'sid', sourceIp: false, terminal: false, cookie: { session: false, ttlMs: 10000, path: '' } },
      { field: '', fieldValue: '', sourceIp: true, terminal: true, cookie: null },
    ],
  });
  const node = ((consul.Chain as Record<string, unknown>).Nodes as Record<string, Record<string, unknown>>)[`resolver:${id('web')}`];
  assert.deepEqual(node?.Resolver, { ConnectTimeout: '1.5s', RequestTimeout: 20_000_000_000, Target: id('web') });
  assert.deepEqual(node?.LoadBalancer, { Policy: 'ring_hash', RingHashConfig: { MaximumRingSize: 4096 }, HashPolicies: [{ Field: 'cookie', FieldValue: 'sid', CookieConfig: { TTL: '10s' } }, { SourceIP: true, Terminal: true }] });
  const lr = compileChain(entries({ Kind: 'service-resolver', Name: 'web', LoadBalancer: { Policy: 'least_request', LeastRequestConfig: { ChoiceCount: 4 } } }), 'web', OPTS);
  assert.equal(lr.dataPlane.targets[id('web')]?.loadBalancer.choiceCount, 4);
});

test('the downstream’s UpstreamConfig: limits and passive health check (override over defaults), connect timeout and protocol overrides', () => {
  const es = entries(
    ...http('api'),
    { Kind: 'service-router', Name: 'api', Routes: [{ Match: { HTTP: { PathPrefix: '/x' } }, Destination: { Service: 'api' } }] },
    {
      Kind: 'service-defaults',
      Name: 'web',
      UpstreamConfig: {
        Defaults: { Limits: { MaxConnections: 100, MaxPendingRequests: 10 }, PassiveHealthCheck: { MaxFailures: 9 } },
        Overrides: [
          { Name: 'api', ConnectTimeoutMs: 750, PassiveHealthCheck: { Interval: '2s', EnforcingConsecutive5xx: 0, BaseEjectionTime: '5s' } },
          { Name: 'plain', Protocol: 'tcp' },
        ],
      },
    },
  );
  const api = compileChain(es, 'api', { datacenter: DC, downstream: 'web' });
  assert.deepEqual(api.dataPlane.limits, { maxConnections: 100, maxPendingRequests: 10, maxConcurrentRequests: 0 });
  assert.deepEqual(api.dataPlane.passiveHealthCheck, { intervalMs: 2000, maxFailures: 5, enforcingConsecutive5xx: 0, maxEjectionPercent: 10, baseEjectionTimeMs: 5000 });
  assert.equal(api.dataPlane.targets[id('api')]?.connectTimeoutMs, 750);
  assert.equal(api.dataPlane.routes.length, 2);
  assert.match(String((api.consul.Chain as Record<string, unknown>).CustomizationHash), /^[0-9a-f]{8}$/);
  // Defaults apply to an upstream without an override; another downstream gets Envoy's defaults.
  const other = compileChain(entries({ Kind: 'service-defaults', Name: 'web', UpstreamConfig: { Defaults: { PassiveHealthCheck: { MaxFailures: 9 } } } }), 'db', { datacenter: DC, downstream: 'web' });
  assert.equal(other.dataPlane.passiveHealthCheck.maxFailures, 9);
  assert.equal(compileChain(es, 'api', { datacenter: DC, downstream: 'nobody' }).dataPlane.passiveHealthCheck.maxFailures, 5);
  // A tcp protocol override makes an http chain resolver-only, reported as tcp.
  const asTcp = compileChain(es, 'api', { datacenter: DC, overrideProtocol: 'tcp' });
  assert.equal(asTcp.dataPlane.protocol, 'tcp');
  assert.equal(asTcp.dataPlane.routes.length, 1);
  // An http override on a tcp chain changes the protocol but adds no routing.
  const asHttp = compileChain([], 'db', { datacenter: DC, overrideProtocol: 'http' });
  assert.equal(asHttp.dataPlane.protocol, 'http');
  assert.equal(asHttp.dataPlane.routes.length, 1);
  assert.equal(compileChain([], 'db', { datacenter: DC, overrideConnectTimeoutMs: 1234 }).dataPlane.targets[id('db')]?.connectTimeoutMs, 1234);
});

test('external SNI, mesh gateway mode and dialed-directly from service-defaults show on Consul’s targets', () => {
  const es = entries(
    { Kind: 'service-defaults', Name: 'ext', ExternalSNI: 'ext.example.com' },
    { Kind: 'service-defaults', Name: 'web', MeshGateway: { Mode: 'local' }, TransparentProxy: { DialedDirectly: true } },
  );
  const td = '11111111-2222-3333-4444-555555555555.consul';
  const ext = compileChain(es, 'ext', { datacenter: DC, trustDomain: td }).consul.Chain as Record<string, Record<string, Record<string, unknown>>>;
  assert.equal(ext.Targets?.[id('ext')]?.SNI, 'ext.example.com');
  assert.equal(ext.Targets?.[id('ext')]?.Name, `ext.default.${DC}.internal.${td}`);
  assert.equal(ext.Targets?.[id('ext')]?.External, true);
  const web = compileChain(es, 'web', { datacenter: DC, trustDomain: td }).consul.Chain as Record<string, Record<string, Record<string, unknown>>>;
  assert.deepEqual(web.Targets?.[id('web')]?.MeshGateway, { Mode: 'local' });
  assert.deepEqual(web.Targets?.[id('web')]?.TransparentProxy, { DialedDirectly: true });
  compileError(
    () => compileChain([...es, ...entries({ Kind: 'service-resolver', Name: 'ext', Subsets: { v1: {} } })], 'ext', OPTS),
    'service-resolver/ext',
    /service "ext" has an external SNI set; cannot define subsets for external services/,
  );
});

test('Consul docs example (discovery-chain API "HTTP Path Routing"): the whole chain, with partition-qualified IDs', async () => {
  const td = 'fce8a058-0981-2c04-d23c-b7375af64ce8.consul';
  const docs = [
    'kind = "service-resolver"\nname = "web"\nsubsets = {\n  "canary" = {\n    filter = "Service.Meta.flavor == canary"\n  }\n}\n',
    'kind = "service-defaults"\nname = "web"\nprotocol = "http"\n',
    'kind = "service-defaults"\nname = "admin"\nprotocol = "http"\n',
    `kind = "service-router"
name = "web"
routes = [
  {
    match { http { path_prefix = "/admin" } }
    destination {
      service         = "admin"
      prefix_rewrite  = "/"
      request_timeout = "15s"
    }
  },
  {
    match { http { header = [ { name = "x-debug", exact = "1" } ] } }
    destination {
      service                  = "web"
      service_subset           = "canary"
      num_retries              = 5
      retry_on_connect_failure = true
      retry_on_status_codes    = [401, 409]
    }
  },
]
`,
  ];
  const es: ConfigEntry[] = [];
  for (const d of docs) es.push(await parseConfigEntryText(d, 'doc.hcl'));
  const target = (service: string, subset: string, filter: string): Record<string, unknown> => ({
    ID: id(subset === '' ? service : `${subset}.${service}`),
    Service: service,
    ...(subset === '' ? {} : { ServiceSubset: subset }),
    Namespace: 'default',
    Partition: 'default',
    Datacenter: DC,
    MeshGateway: {},
    Subset: filter === '' ? {} : { Filter: filter },
    TransparentProxy: {},
    ConnectTimeout: '5s',
    SNI: `${subset === '' ? '' : `${subset}.`}${service}.default.${DC}.internal.${td}`,
    Name: `${subset === '' ? '' : `${subset}.`}${service}.default.${DC}.internal.${td}`,
  });
  assert.deepEqual(compileChain(es, 'web', { datacenter: DC, trustDomain: td }).consul, {
    Chain: {
      ServiceName: 'web',
      Namespace: 'default',
      Partition: 'default',
      Datacenter: DC,
      Protocol: 'http',
      StartNode: 'router:web.default.default',
      Nodes: {
        [`resolver:${id('admin')}`]: { Type: 'resolver', Name: id('admin'), Resolver: { Default: true, ConnectTimeout: '5s', Target: id('admin') } },
        [`resolver:${id('canary.web')}`]: { Type: 'resolver', Name: id('canary.web'), Resolver: { ConnectTimeout: '5s', Target: id('canary.web') } },
        [`resolver:${id('web')}`]: { Type: 'resolver', Name: id('web'), Resolver: { ConnectTimeout: '5s', Target: id('web') } },
        'router:web.default.default': {
          Type: 'router',
          Name: 'web.default.default',
          Routes: [
            {
              Definition: { Match: { HTTP: { PathPrefix: '/admin' } }, Destination: { RequestTimeout: '15s', Service: 'admin', PrefixRewrite: '/' } },
              NextNode: `resolver:${id('admin')}`,
            },
            {
              Definition: {
                Match: { HTTP: { Header: [{ Name: 'x-debug', Exact: '1' }] } },
                Destination: { Service: 'web', ServiceSubset: 'canary', NumRetries: 5, RetryOnConnectFailure: true, RetryOnStatusCodes: [401, 409] },
              },
              NextNode: `resolver:${id('canary.web')}`,
            },
            { Definition: { Match: { HTTP: { PathPrefix: '/' } }, Destination: { Service: 'web', Namespace: 'default', Partition: 'default' } }, NextNode: `resolver:${id('web')}` },
          ],
        },
      },
      Targets: {
        [id('admin')]: target('admin', '', ''),
        [id('canary.web')]: target('web', 'canary', 'Service.Meta.flavor == canary'),
        [id('web')]: target('web', '', ''),
      },
    },
  });
});

test('the data-plane chain is structured-cloneable and JSON-safe', () => {
  const es = entries(...http('web'), { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 100, ServiceSubset: 'v1', RequestHeaders: { Set: { a: 'b' } } }] }, { Kind: 'service-resolver', Name: 'web', Subsets: { v1: {} } });
  const { dataPlane, consul } = compileChain(es, 'web', OPTS);
  assert.deepEqual(structuredClone(dataPlane), dataPlane);
  assert.deepEqual(JSON.parse(JSON.stringify(dataPlane)), dataPlane);
  assert.deepEqual(JSON.parse(JSON.stringify(consul)), consul);
});

// ---------------------------------------------------------------------------------------
// Property: random nested splitter graphs (a DAG s0 -> s1 -> ... ; each split goes to a
// subset of its own service, to a later splitter service, or to a plain service).

type Spec = { codes: number[]; raw: number[] }[];

function basisPoints(raw: readonly number[], n: number): number[] {
  const r = raw.slice(0, n);
  const total = r.reduce((a, b) => a + b, 0);
  if (total === 0) return r.map((_, i) => (i === 0 ? 10000 : 0));
  const bp = r.map((x) => Math.floor((x * 10000) / total));
  bp[0] = (bp[0] as number) + 10000 - bp.reduce((a, b) => a + b, 0);
  return bp;
}

function target(spec: Spec, i: number, code: number): { service: string; subset: string } {
  if (code < 3) return { service: `s${i}`, subset: ['a', 'b', 'c'][code] as string };
  const j = i + 1 + (code - 3);
  return j < spec.length ? { service: `s${j}`, subset: '' } : { service: `leaf${code}`, subset: '' };
}

function build(spec: Spec): ConfigEntry[] {
  const docs: Record<string, unknown>[] = [];
  const services = new Set<string>();
  spec.forEach((s, i) => {
    services.add(`s${i}`);
    const bp = basisPoints(s.raw, s.codes.length);
    docs.push({
      Kind: 'service-splitter',
      Name: `s${i}`,
      Splits: s.codes.map((code, k) => {
        const t = target(spec, i, code);
        if (t.subset === '') services.add(t.service);
        return { Weight: (bp[k] as number) / 100, Service: t.service, ...(t.subset === '' ? {} : { ServiceSubset: t.subset }) };
      }),
    });
    docs.push({ Kind: 'service-resolver', Name: `s${i}`, Subsets: { a: {}, b: {}, c: {} } });
  });
  docs.push(...http(...services));
  return entries(...docs);
}

/** The exact leaves, in order: [target ID, exact weight, allowed rounding error]. */
function expected(spec: Spec, i: number, total: number, tol: number, out: [string, number, number][]): void {
  const s = spec[i] as Spec[number];
  const bp = basisPoints(s.raw, s.codes.length);
  s.codes.forEach((code, k) => {
    const w = (total * (bp[k] as number)) / 10000;
    const levelTol = tol + Math.max(1, s.codes.length - 1);
    const t = target(spec, i, code);
    const j = Number(t.service.slice(1));
    if (t.subset === '' && t.service.startsWith('s') && j < spec.length) expected(spec, j, w, levelTol, out);
    else out.push([id(t.subset === '' ? t.service : `${t.subset}.${t.service}`), w, levelTol]);
  });
}

test('property: flattened nested splitters sum to exactly 10000 and each leaf is the product of its path weights', () => {
  const splitter = fc.record({
    codes: fc.uniqueArray(fc.integer({ min: 0, max: 7 }), { minLength: 1, maxLength: 4 }),
    raw: fc.array(fc.integer({ min: 0, max: 10000 }), { minLength: 4, maxLength: 4 }),
  });
  fc.assert(
    fc.property(fc.array(splitter, { minLength: 1, maxLength: 5 }), (spec) => {
      const { dataPlane } = compileChain(build(spec), 's0', OPTS);
      assert.equal(dataPlane.routes.length, 1);
      const got = dataPlane.routes[0]?.action.splits ?? [];
      assert.equal(got.reduce((a, s) => a + s.weightBp, 0), 10000);
      const want: [string, number, number][] = [];
      expected(spec, 0, 10000, 0, want);
      assert.deepEqual(got.map((s) => s.targetId), want.map((w) => w[0]));
      got.forEach((s, k) => {
        const [, exact, tol] = want[k] as [string, number, number];
        assert.ok(Number.isInteger(s.weightBp) && s.weightBp >= 0, `weight ${s.weightBp}`);
        assert.ok(Math.abs(s.weightBp - exact) < tol, `leaf ${k}: ${s.weightBp} vs ${exact} (tolerance ${tol})`);
      });
      for (const s of got) assert.ok(dataPlane.targets[s.targetId] !== undefined, `target ${s.targetId} missing`);
    }),
    { numRuns: 500 },
  );
});
