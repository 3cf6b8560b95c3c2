// In-process tests of the agent's Consul-compatible HTTP API: one Agent on 127.0.0.1:0 with
// an in-memory store and a fixed clock, driven with fetch.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent } from '../../src/control/agent.ts';
import { makeCsr } from '../ca/helpers.ts';

/** Fixed for the whole run: TTL checks never expire behind a test's back. */
const NOW = Date.now();

let agent: Agent;
let base: string;

function newAgent(): Agent {
  return new Agent({ host: '127.0.0.1', port: 0, dataDir: null, datacenter: 'dc1', defaultAllow: false, dev: true, nodeName: 'test-node', now: () => NOW });
}

before(async () => {
  agent = newAgent();
  await agent.start();
  base = `http://127.0.0.1:${agent.address.port}`;
});

after(async () => {
  await agent.stop();
});

interface Reply {
  readonly status: number;
  readonly text: string;
  readonly headers: Headers;
  json<T = unknown>(): T;
  index(): number;
}

async function call(method: string, path: string, body?: unknown, at: string = base): Promise<Reply> {
  const res = await fetch(`${at}${path}`, {
    method,
    body: body === undefined ? undefined : typeof body === 'string' ? body : JSON.stringify(body),
  });
  const text = await res.text();
  return {
    status: res.status,
    text,
    headers: res.headers,
    json: <T,>() => JSON.parse(text) as T,
    index: () => {
      const raw = res.headers.get('x-consul-index');
      assert.ok(raw !== null, `${method} ${path}: no X-Consul-Index`);
      return Number(raw);
    },
  };
}

interface HealthEntry {
  Node: { Node: string; Datacenter: string };
  Service: { ID: string; Service: string; Kind: string; Port: number; Proxy: { DestinationServiceName: string } | null };
  Checks: { CheckID: string; Status: string }[];
}

function sidecar(id: string, dest: string, status?: 'passing' | 'critical'): object {
  return {
    ID: id,
    Name: `${dest}-sidecar-proxy`,
    Kind: 'connect-proxy',
    Port: 21000,
    Proxy: { DestinationServiceName: dest, LocalServicePort: 8080 },
    ...(status === undefined ? {} : { Check: { TTL: '1h', Status: status } }),
  };
}

test('register: bad JSON is a 400 naming the problem, and the catalog is unchanged', async () => {
  const before = await call('GET', '/v1/agent/services');
  const idx = (await call('GET', '/v1/catalog/services')).index();
  for (const bad of ['{"Name":', '[{"Name":"api"}]', 'null']) {
    const r = await call('PUT', '/v1/agent/service/register', bad);
    assert.equal(r.status, 400, bad);
    assert.match(r.text, /^Request decode failed: body: (invalid JSON|must be a JSON object)/, r.text);
  }
  assert.equal((await call('GET', '/v1/agent/services')).text, before.text);
  assert.equal((await call('GET', '/v1/catalog/services')).index(), idx);
});

test('register: a missing Name is a 400 naming Name; other invalid fields are named too', async () => {
  const r = await call('PUT', '/v1/agent/service/register', { Port: 80 });
  assert.equal(r.status, 400);
  assert.match(r.text, /Name: is required/);
  const k = await call('PUT', '/v1/agent/service/register', { Name: 'p', Kind: 'connect-proxy' });
  assert.equal(k.status, 400);
  assert.match(k.text, /Proxy: is required/);
  const t = await call('PUT', '/v1/agent/service/register', { Name: 'a', Check: { TTL: 'soon' } });
  assert.equal(t.status, 400);
  assert.match(t.text, /Check\.TTL: invalid duration/);
  assert.deepEqual(Object.keys((await call('GET', '/v1/agent/services')).json<object>()), []);
});

test('register: lower-case keys (python client) are accepted', async () => {
  const r = await call('PUT', '/v1/agent/service/register', { name: 'pyapi', port: 9090 });
  assert.equal(r.status, 200, r.text);
  const services = (await call('GET', '/v1/agent/services')).json<Record<string, { Service: string; Port: number }>>();
  assert.equal(services.pyapi?.Service, 'pyapi');
  assert.equal(services.pyapi?.Port, 9090);
});

test('a connect-proxy registration shows up in /v1/health/connect/<dest> and not for other services', async () => {
  const r = await call('PUT', '/v1/agent/service/register', sidecar('api-proxy-1', 'api', 'passing'));
  assert.equal(r.status, 200, r.text);
  const h = await call('GET', '/v1/health/connect/api');
  assert.equal(h.status, 200);
  assert.equal(h.headers.get('content-type'), 'application/json');
  assert.equal(h.headers.get('x-consul-default-acl-policy'), 'deny');
  const entries = h.json<HealthEntry[]>();
  assert.equal(entries.length, 1);
  assert.equal(entries[0]?.Service.ID, 'api-proxy-1');
  assert.equal(entries[0]?.Service.Kind, 'connect-proxy');
  assert.equal(entries[0]?.Service.Proxy?.DestinationServiceName, 'api');
  assert.equal(entries[0]?.Node.Node, 'test-node');
  assert.equal(entries[0]?.Node.Datacenter, 'dc1');
  assert.ok(h.index() > 0);

  assert.deepEqual((await call('GET', '/v1/health/connect/other')).json(), []);
  // The sidecar is not an instance of "api" itself.
  assert.deepEqual((await call('GET', '/v1/health/service/api')).json(), []);
});

test('?passing=1 hides a critical instance', async () => {
  assert.equal((await call('PUT', '/v1/agent/service/register', sidecar('api-proxy-2', 'api', 'critical'))).status, 200);
  const all = (await call('GET', '/v1/health/connect/api')).json<HealthEntry[]>();
  assert.deepEqual(all.map((e) => e.Service.ID).sort(), ['api-proxy-1', 'api-proxy-2']);
  const passing = (await call('GET', '/v1/health/connect/api?passing=1')).json<HealthEntry[]>();
  assert.deepEqual(passing.map((e) => e.Service.ID), ['api-proxy-1']);
  assert.equal((await call('GET', '/v1/health/connect/api?passing=false')).json<HealthEntry[]>().length, 2);
  // A TTL pass makes it visible; deregistering removes it entirely.
  assert.equal((await call('PUT', '/v1/agent/check/pass/service:api-proxy-2')).status, 200);
  assert.equal((await call('GET', '/v1/health/connect/api?passing')).json<HealthEntry[]>().length, 2);
  assert.equal((await call('PUT', '/v1/agent/check/fail/nope')).status, 404);
  assert.equal((await call('PUT', '/v1/agent/service/deregister/api-proxy-2')).status, 200);
  assert.equal((await call('PUT', '/v1/agent/service/deregister/api-proxy-2')).status, 404);
  assert.equal((await call('GET', '/v1/health/connect/api')).json<HealthEntry[]>().length, 1);
});

test('a blocking health query returns only after a registration, with a larger index and the new instance', async () => {
  const first = await call('GET', '/v1/health/connect/blocky');
  assert.deepEqual(first.json(), []);
  const n = first.index();

  let settled = false;
  const started = Date.now();
  const pending = call('GET', `/v1/health/connect/blocky?index=${n}&wait=5s`).then((r) => {
    settled = true;
    return r;
  });
  await sleep(100);
  assert.equal(settled, false, 'the blocking query returned before anything changed');
  // An unrelated write (intentions) does not end it either.
  assert.equal((await call('PUT', '/v1/connect/intentions/exact?source=a&destination=b', { Action: 'deny' })).status, 200);
  await sleep(50);
  assert.equal(settled, false, 'an intention write woke a health query');

  assert.equal((await call('PUT', '/v1/agent/service/register', sidecar('blocky-proxy', 'blocky', 'passing'))).status, 200);
  const r = await pending;
  assert.ok(Date.now() - started < 4_500, 'it waited for the timeout instead of the write');
  assert.equal(r.status, 200);
  assert.ok(r.index() > n, `${r.index()} > ${n}`);
  assert.deepEqual(r.json<HealthEntry[]>().map((e) => e.Service.ID), ['blocky-proxy']);
  assert.equal((await call('DELETE', '/v1/connect/intentions/exact?source=a&destination=b')).status, 200);
});

test('a blocking query with a bad index or wait is a 400', async () => {
  const a = await call('GET', '/v1/health/connect/api?index=abc');
  assert.equal(a.status, 400);
  assert.match(a.text, /invalid index "abc"/);
  const w = await call('GET', '/v1/health/connect/api?index=1&wait=5');
  assert.equal(w.status, 400);
  assert.match(w.text, /wait: invalid duration/);
});

test('intentions/check: default deny, allow after PUT exact, deny again after DELETE', async () => {
  const path = '/v1/connect/intentions/check?source=web&destination=db';
  const c1 = await call('GET', path);
  assert.equal(c1.status, 200);
  assert.deepEqual(c1.json(), { Allowed: false });
  assert.equal(c1.headers.get('x-consul-default-acl-policy'), 'deny');

  const put = await call('PUT', '/v1/connect/intentions/exact?source=web&destination=db', { Action: 'allow', Description: 'test' });
  assert.equal(put.status, 200, put.text);
  assert.equal(put.json(), true);
  assert.deepEqual((await call('GET', path)).json(), { Allowed: true });
  const got = await call('GET', '/v1/connect/intentions/exact?source=web&destination=db');
  assert.equal(got.json<{ Action: string; Precedence: number }>().Action, 'allow');
  assert.equal(got.json<{ Precedence: number }>().Precedence, 9);
  // Another pair is unaffected.
  assert.deepEqual((await call('GET', '/v1/connect/intentions/check?source=api&destination=db')).json(), { Allowed: false });

  const del = await call('DELETE', '/v1/connect/intentions/exact?source=web&destination=db');
  assert.equal(del.status, 200);
  assert.deepEqual((await call('GET', path)).json(), { Allowed: false });
  assert.equal((await call('GET', '/v1/connect/intentions/exact?source=web&destination=db')).status, 404);
});

test('intentions: bad input is a 400 naming the problem', async () => {
  const partial = await call('PUT', '/v1/connect/intentions/exact?source=web*&destination=db', { Action: 'allow' });
  assert.equal(partial.status, 400);
  assert.match(partial.text, /source: partial wildcards/);
  const noAction = await call('PUT', '/v1/connect/intentions/exact?source=web&destination=db', {});
  assert.equal(noAction.status, 400);
  assert.match(noAction.text, /Action/);
  const noSource = await call('GET', '/v1/connect/intentions/check?destination=db');
  assert.equal(noSource.status, 400);
  assert.match(noSource.text, /"source"/);
  assert.deepEqual((await call('GET', '/v1/connect/intentions')).json(), []);
});

test('agent/connect/authorize: default deny, then allowed by an L4 intention, with Consul\'s reasons', async () => {
  const body = { Target: 'api', ClientCertURI: 'spiffe://x.consul/ns/default/dc/dc1/svc/web' };
  const r1 = await call('POST', '/v1/agent/connect/authorize', body);
  assert.equal(r1.status, 200, r1.text);
  assert.deepEqual(r1.json(), { Authorized: false, Reason: 'Default intention policy' });

  assert.equal((await call('PUT', '/v1/connect/intentions/exact?source=web&destination=api', { Action: 'allow' })).status, 200);
  const r2 = (await call('POST', '/v1/agent/connect/authorize', body)).json<{ Authorized: boolean; Reason: string }>();
  assert.equal(r2.Authorized, true);
  assert.ok(r2.Reason.startsWith('Matched L4 intention:'), r2.Reason);
  assert.match(r2.Reason, /web => api \(allow\)/);

  // Trust domain and datacenter of the URI are ignored (§2.8); only the service name matters.
  const other = await call('POST', '/v1/agent/connect/authorize', { Target: 'api', ClientCertURI: 'spiffe://other.consul/ns/default/dc/dc9/svc/web' });
  assert.equal(other.json<{ Authorized: boolean }>().Authorized, true);

  // A more specific deny wins over a wildcard allow.
  assert.equal((await call('PUT', '/v1/connect/intentions/exact?source=*&destination=api', { Action: 'allow' })).status, 200);
  assert.equal((await call('PUT', '/v1/connect/intentions/exact?source=admin&destination=api', { Action: 'deny' })).status, 200);
  const denied = (await call('POST', '/v1/agent/connect/authorize', { Target: 'api', ClientCertURI: 'spiffe://x.consul/ns/default/dc/dc1/svc/admin' })).json<{ Authorized: boolean; Reason: string }>();
  assert.equal(denied.Authorized, false);
  assert.match(denied.Reason, /^Matched L4 intention: admin => api \(deny\)/);
  const wild = (await call('POST', '/v1/agent/connect/authorize', { Target: 'api', ClientCertURI: 'spiffe://x.consul/ns/default/dc/dc1/svc/cache' })).json<{ Authorized: boolean; Reason: string }>();
  assert.equal(wild.Authorized, true);
  assert.match(wild.Reason, /^Matched L4 intention: \* => api \(allow\)/);
  for (const s of ['web', '*', 'admin']) await call('DELETE', `/v1/connect/intentions/exact?source=${encodeURIComponent(s)}&destination=api`);
});

test('agent/connect/authorize: missing Target and non-service or non-SPIFFE ClientCertURI are 400s', async () => {
  const noTarget = await call('POST', '/v1/agent/connect/authorize', { ClientCertURI: 'spiffe://x.consul/ns/default/dc/dc1/svc/web' });
  assert.equal(noTarget.status, 400);
  assert.match(noTarget.text, /Target/);
  const notSpiffe = await call('POST', '/v1/agent/connect/authorize', { Target: 'api', ClientCertURI: 'https://example.com/svc/web' });
  assert.equal(notSpiffe.status, 400);
  assert.match(notSpiffe.text, /not a valid Connect identifier/);
  const agentId = await call('POST', '/v1/agent/connect/authorize', { Target: 'api', ClientCertURI: 'spiffe://x.consul/agent/client/dc/dc1/id/node1' });
  assert.equal(agentId.status, 400);
  assert.match(agentId.text, /not a valid Service identifier/);
  const noUri = await call('POST', '/v1/agent/connect/authorize', { Target: 'api' });
  assert.equal(noUri.status, 400);
  assert.match(noUri.text, /ClientCertURI/);
  assert.equal((await call('POST', '/v1/agent/connect/authorize', '{')).status, 400);
});

test('connect/ca/sign: a CSR with two URIs is a 400 invalid CSR; a missing CSR is a 400', async () => {
  const td = agent.trustDomain;
  const csr = await makeCsr([
    { type: 'url', value: `spiffe://${td}/ns/default/dc/dc1/svc/web` },
    { type: 'url', value: `spiffe://${td}/ns/default/dc/dc1/svc/api` },
  ]);
  const r = await call('POST', '/v1/connect/ca/sign', { CSR: csr });
  assert.equal(r.status, 400, r.text);
  assert.match(r.text, /^invalid CSR: /);
  assert.match(r.text, /URI/);
  const none = await call('PUT', '/v1/connect/ca/sign', {});
  assert.equal(none.status, 400);
  assert.match(none.text, /CSR: is required/);
  const junk = await call('POST', '/v1/connect/ca/sign', { CSR: 'not a pem' });
  assert.equal(junk.status, 400);
  assert.match(junk.text, /^invalid CSR: /);
});

test('unknown path is 404; a known path with the wrong method is 405', async () => {
  const nf = await call('GET', '/v1/no/such/thing');
  assert.equal(nf.status, 404);
  assert.match(nf.text, /no such endpoint: \/v1\/no\/such\/thing/);
  const m1 = await call('GET', '/v1/agent/service/register');
  assert.equal(m1.status, 405);
  assert.match(m1.text, /method GET not allowed/);
  assert.equal((await call('POST', '/v1/health/connect/api')).status, 405);
  assert.equal((await call('DELETE', '/v1/agent/self')).status, 405);
});

test(
  'a malformed percent-escape in a path parameter is a 400, not a 500',
  async () => {
    const r = await call('GET', '/v1/health/connect/%E0%A4%A');
    assert.equal(r.status, 400, `${r.status} ${r.text}`);
  },
);

test(
  'a blocking health query on an empty catalog is not ended by unrelated writes',
  async () => {
    const b = newAgent();
    await b.start();
    try {
      const at = `http://127.0.0.1:${b.address.port}`;
      assert.equal((await call('PUT', '/v1/connect/intentions/exact?source=web&destination=db', { Action: 'allow' }, at)).status, 200);
      const first = await call('GET', '/v1/health/connect/x', undefined, at);
      const n = first.index();
      const started = Date.now();
      const r = await call('GET', `/v1/health/connect/x?index=${n}&wait=2s`, undefined, at);
      const took = Date.now() - started;
      assert.deepEqual(r.json(), []);
      assert.ok(took >= 1_500, `returned after ${took} ms with index ${r.index()} (asked to wait past index ${n})`);
      assert.equal(r.index(), n, 'nothing in the catalog changed, so neither should its index');
    } finally {
      await b.stop();
    }
  },
);

test('GET /v1/connect/intentions?filter= selects with Consul bexpr and refuses unknown fields', async () => {
  for (const [src, dst, action] of [['fa', 'fdb', 'allow'], ['fb', 'fdb', 'deny'], ['fa', 'fcache', 'allow']]) {
    assert.equal((await call('PUT', `/v1/connect/intentions/exact?source=${src}&destination=${dst}`, { Action: action })).status, 200);
  }
  const q = encodeURIComponent('DestinationName == "fdb" and Action == "allow"');
  const r = await call('GET', `/v1/connect/intentions?filter=${q}`);
  assert.equal(r.status, 200);
  const got = (JSON.parse(r.text) as { SourceName: string; DestinationName: string }[]).map((i) => `${i.SourceName}->${i.DestinationName}`);
  assert.deepEqual(got, ['fa->fdb']);
  const bad = await call('GET', `/v1/connect/intentions?filter=${encodeURIComponent('Src == "x"')}`);
  assert.equal(bad.status, 400);
  assert.match(bad.text, /unknown field "Src"/);
  for (const [src, dst] of [['fa', 'fdb'], ['fb', 'fdb'], ['fa', 'fcache']]) await call('DELETE', `/v1/connect/intentions/exact?source=${src}&destination=${dst}`);
});

test('the legacy ID API: create with Meta, read and update by ID, filter on Meta, duplicate refused, config writes keep it read-only', async () => {
  const created = await call('POST', '/v1/connect/intentions', { SourceName: 'lweb', DestinationName: 'ldb', SourceType: 'consul', Action: 'allow', Description: 'legacy', Meta: { team: 'payments' } });
  assert.equal(created.status, 200, created.text);
  const { ID } = created.json<{ ID: string }>();
  assert.match(ID, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);

  const dup = await call('POST', '/v1/connect/intentions', { SourceName: 'lweb', DestinationName: 'ldb', Action: 'deny' });
  assert.equal(dup.status, 409);
  assert.match(dup.text, /duplicate intention found: lweb => ldb/);

  // A second source on the same destination, written by name, must not disturb the legacy one.
  assert.equal((await call('PUT', '/v1/connect/intentions/exact?source=lother&destination=ldb', { Action: 'deny' })).status, 200);

  type Legacy = { ID?: string; Meta: Record<string, string>; Action: string; CreatedAt?: string; UpdatedAt?: string; SourceName: string };
  const byId = await call('GET', `/v1/connect/intentions/${ID}`);
  assert.equal(byId.status, 200);
  const got = byId.json<Legacy>();
  assert.deepEqual([got.ID, got.Meta, got.Action, got.CreatedAt, got.UpdatedAt], [ID, { team: 'payments' }, 'allow', new Date(NOW).toISOString(), new Date(NOW).toISOString()]);
  const plain = (await call('GET', '/v1/connect/intentions/exact?source=lother&destination=ldb')).json<Legacy>();
  assert.equal(plain.ID, undefined, 'an intention written by name has no legacy ID');
  assert.deepEqual(plain.Meta, {});

  const filtered = await call('GET', `/v1/connect/intentions?filter=${encodeURIComponent('Meta.team == "payments"')}`);
  assert.deepEqual(filtered.json<Legacy[]>().map((i) => i.SourceName), ['lweb']);

  // The config entry shows the legacy fields, read-only: writing them back is refused.
  const entry = (await call('GET', '/v1/config/service-intentions/ldb')).json<{ Sources: Record<string, unknown>[] }>();
  const src = entry.Sources.find((x) => x.Name === 'lweb');
  assert.deepEqual([src?.LegacyID, src?.LegacyMeta], [ID, { team: 'payments' }]);
  const writeBack = await call('PUT', '/v1/config', { Kind: 'service-intentions', Name: 'ldb', Sources: entry.Sources });
  assert.equal(writeBack.status, 400);
  assert.match(writeBack.text, /LegacyID: must be omitted|LegacyMeta: must be omitted/);

  const upd = await call('PUT', `/v1/connect/intentions/${ID}`, { SourceName: 'lweb', DestinationName: 'ldb', Action: 'deny', Meta: { team: 'risk' } });
  assert.equal(upd.status, 200, upd.text);
  const after = (await call('GET', `/v1/connect/intentions/${ID}`)).json<Legacy>();
  assert.deepEqual([after.Action, after.Meta, after.CreatedAt], ['deny', { team: 'risk' }, new Date(NOW).toISOString()]);
  assert.equal((await call('GET', '/v1/connect/intentions/check?source=lweb&destination=ldb')).json<{ Allowed: boolean }>().Allowed, false);
  const move = await call('PUT', `/v1/connect/intentions/${ID}`, { SourceName: 'lweb', DestinationName: 'elsewhere', Action: 'deny' });
  assert.equal(move.status, 400);
  assert.match(move.text, /DestinationName: cannot change/);
  const badMeta = await call('POST', '/v1/connect/intentions', { SourceName: 'x', DestinationName: 'ldb', Action: 'allow', Meta: { k: 'v'.repeat(513) } });
  assert.equal(badMeta.status, 400);
  assert.match(badMeta.text, /Meta: value for key "k" exceeds maximum length 512/);

  assert.equal((await call('DELETE', `/v1/connect/intentions/${ID}`)).status, 200);
  assert.equal((await call('GET', `/v1/connect/intentions/${ID}`)).status, 404);
  assert.equal((await call('GET', '/v1/connect/intentions/not-a-uuid')).status, 400);
  assert.equal((await call('GET', '/v1/connect/intentions/exact?source=lother&destination=ldb')).status, 200, 'the other source stays');
  await call('DELETE', '/v1/connect/intentions/exact?source=lother&destination=ldb');
});

test('explain with a path evaluates L7 permissions as the data plane does: normalised path, first match, default policy', async () => {
  const entry = {
    Kind: 'service-intentions',
    Name: 'explained',
    Sources: [
      {
        Name: 'web',
        Permissions: [
          { Action: 'deny', HTTP: { PathPrefix: '/admin' } },
          { Action: 'allow', HTTP: { PathPrefix: '/api', Methods: ['GET'] } },
          { Action: 'allow', HTTP: { PathExact: '/h', Header: [{ Name: 'x-team', Exact: 'core' }] } },
        ],
      },
    ],
  };
  assert.equal((await call('PUT', '/v1/config', entry)).status, 200);
  type Explained = { Allowed: boolean; Layer: string; Permission: { Index: number; Action: string } | null; Request?: { Path: string } };
  const ask = async (q: string): Promise<Explained> => {
    const r = await call('GET', `/v1/connect/intentions/explain?source=web&destination=explained${q}`);
    assert.equal(r.status, 200, r.text);
    return r.json<Explained>();
  };
  const connection = await ask('');
  assert.equal(connection.Layer, 'L7');
  assert.equal(connection.Allowed, false);
  assert.deepEqual((await ask('&path=/api/x')).Permission, { Index: 1, Action: 'allow' });
  const sneaky = await ask(`&path=${encodeURIComponent('/api/../admin/x')}`);
  assert.equal(sneaky.Request?.Path, '/admin/x');
  assert.deepEqual(sneaky.Permission, { Index: 0, Action: 'deny' });
  assert.equal(sneaky.Allowed, false);
  const post = await ask('&path=/api/x&method=POST');
  assert.equal(post.Permission, null);
  assert.equal(post.Allowed, false);
  assert.equal((await ask('&path=/h&header=x-team:core')).Allowed, true);
  assert.equal((await ask('&path=/h&header=x-team:other')).Allowed, false);
  assert.equal((await call('GET', '/v1/connect/intentions/explain?source=web&destination=explained&path=nope')).status, 400);
});

test('a config write or delete that would break a discovery chain is refused with the field named, and nothing changes', async () => {
  const put = (e: object): Promise<Reply> => call('PUT', '/v1/config', e);
  assert.equal((await put({ Kind: 'service-defaults', Name: 'shop', Protocol: 'http' })).status, 200);
  assert.equal((await put({ Kind: 'service-resolver', Name: 'shop', Subsets: { v1: { Filter: 'Service.Meta.version == v1' } } })).status, 200);
  const bad = await put({ Kind: 'service-router', Name: 'shop', Routes: [{ Match: { HTTP: { PathPrefix: '/b' } }, Destination: { ServiceSubset: 'v2' } }] });
  assert.equal(bad.status, 400, bad.text);
  assert.match(bad.text, /discovery chain for "shop" would not compile/);
  assert.match(bad.text, /ServiceSubset/);
  assert.equal((await call('GET', '/v1/config/service-router/shop')).status, 404);
  assert.equal((await put({ Kind: 'service-router', Name: 'shop', Routes: [{ Match: { HTTP: { PathPrefix: '/b' } }, Destination: { ServiceSubset: 'v1' } }] })).status, 200);
  // Deleting the resolver would leave the route pointing at a subset nobody defines.
  const del = await call('DELETE', '/v1/config/service-resolver/shop');
  assert.equal(del.status, 400, del.text);
  assert.equal((await call('GET', '/v1/config/service-resolver/shop')).status, 200);
  assert.equal((await call('DELETE', '/v1/config/service-router/shop')).status, 200);
  assert.equal((await call('DELETE', '/v1/config/service-resolver/shop')).status, 200);
});
