import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FieldError } from '../../src/control/decode.ts';
import type { JsonObject } from '../../src/control/decode.ts';
import { FileStore } from '../../src/control/store.ts';
import { CHECKS, Catalog, SERVICES, decodeRegistration } from '../../src/control/catalog.ts';
import type { CheckRecord } from '../../src/control/catalog.ts';

function isFieldError(field: string, pattern?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof FieldError, `expected FieldError, got ${String(e)}`);
    assert.equal(e.field, field);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  };
}

const NODE = { Node: 'node-1', Address: '127.0.0.1', Datacenter: 'dc1' };

function sidecar(name: string, dest: string, extra: JsonObject = {}): JsonObject {
  return {
    Name: name,
    Kind: 'connect-proxy',
    Port: 21000,
    Proxy: { DestinationServiceName: dest, LocalServicePort: 8080 },
    ...extra,
  };
}

function fresh(): { store: FileStore; catalog: Catalog; clock: { now: number } } {
  const store = new FileStore(null);
  const clock = { now: 1_000_000 };
  return { store, catalog: new Catalog(store, NODE, () => clock.now), clock };
}

interface HealthEntry {
  Node: { Node: string; Address: string; Datacenter: string };
  Service: { ID: string; Service: string; Kind: string; Port: number; Proxy: { DestinationServiceName: string } | null; CreateIndex: number; ModifyIndex: number };
  Checks: { CheckID: string; Status: string; ServiceID: string; Output: string }[];
}

function health(c: Catalog, name: string, connect: boolean, passingOnly: boolean): HealthEntry[] {
  return c.health(name, connect, passingOnly) as HealthEntry[];
}

test('decodeRegistration: a plain service with defaults', () => {
  const reg = decodeRegistration({ Name: 'api', Port: 9090 });
  assert.deepEqual(reg, {
    service: { ID: 'api', Service: 'api', Kind: '', Address: '', Port: 9090, Tags: [], Meta: {}, Proxy: null },
    check: null,
  });
});

test('decodeRegistration accepts lower-case keys as a python client sends them', () => {
  const reg = decodeRegistration({ name: 'api', port: 9090, id: 'api-1', tags: ['v1'], meta: { a: 'b' }, address: '10.0.0.5' });
  assert.equal(reg.service.Service, 'api');
  assert.equal(reg.service.ID, 'api-1');
  assert.equal(reg.service.Port, 9090);
  assert.deepEqual(reg.service.Tags, ['v1']);
  assert.deepEqual(reg.service.Meta, { a: 'b' });
  assert.equal(reg.service.Address, '10.0.0.5');
  const p = decodeRegistration({ name: 'web-proxy', kind: 'connect-proxy', proxy: { destination_service_name: 'web' }, check: { ttl: '10s', status: 'passing' } });
  assert.equal(p.service.Proxy?.DestinationServiceName, 'web');
  assert.equal(p.check?.TTLMs, 10_000);
  assert.equal(p.check?.Status, 'passing');
});

test('decodeRegistration: Name is required and validated', () => {
  assert.throws(() => decodeRegistration({}), isFieldError('Name', /is required/));
  assert.throws(() => decodeRegistration({ Name: '' }), isFieldError('Name', /is required/));
  assert.throws(() => decodeRegistration({ Name: 42 }), isFieldError('Name', /must be a string/));
  for (const bad of ['a b', 'web/1', '-web', 'x'.repeat(129), 'wéb']) {
    assert.throws(() => decodeRegistration({ Name: bad }), isFieldError('Name', /1-128 characters/), bad);
  }
  assert.equal(decodeRegistration({ Name: 'x'.repeat(128) }).service.Service.length, 128);
});

test('decodeRegistration: Kind is "" or connect-proxy; connect-proxy requires Proxy; Proxy requires the kind', () => {
  assert.throws(() => decodeRegistration({ Name: 'gw', Kind: 'terminating-gateway' }), isFieldError('Kind', /unsupported kind "terminating-gateway"/));
  assert.throws(() => decodeRegistration({ Name: 'p', Kind: 'connect-proxy' }), isFieldError('Proxy', /is required/));
  assert.throws(() => decodeRegistration({ Name: 'p', Kind: 'connect-proxy', Proxy: {} }), isFieldError('Proxy.DestinationServiceName', /is required/));
  assert.throws(
    () => decodeRegistration({ Name: 'p', Kind: 'connect-proxy', Proxy: { DestinationServiceName: 'bad name' } }),
    isFieldError('Proxy.DestinationServiceName'),
  );
  assert.throws(() => decodeRegistration({ Name: 'p', Proxy: { DestinationServiceName: 'web' } }), isFieldError('Proxy', /only valid with Kind/));
  const reg = decodeRegistration(sidecar('web-sidecar-proxy', 'web'));
  assert.equal(reg.service.Kind, 'connect-proxy');
  assert.deepEqual(reg.service.Proxy, { DestinationServiceName: 'web', DestinationServiceID: 'web', LocalServiceAddress: '', LocalServicePort: 8080 });
});

test('decodeRegistration: Port must be an integer in 0..65535; Tags a list of strings', () => {
  for (const ok of [0, 1, 65535]) assert.equal(decodeRegistration({ Name: 'a', Port: ok }).service.Port, ok);
  for (const bad of [-1, 65536, 1.5]) assert.throws(() => decodeRegistration({ Name: 'a', Port: bad }), isFieldError('Port', /0\.\.65535/), String(bad));
  assert.throws(() => decodeRegistration({ Name: 'a', Port: '80' }), isFieldError('Port'));
  assert.throws(() => decodeRegistration({ Name: 'a', Tags: 'x' }), isFieldError('Tags'));
  assert.throws(() => decodeRegistration({ Name: 'a', Tags: [1] }), isFieldError('Tags'));
});

test('decodeRegistration: Check.TTL is parsed, at least 1s, and Status defaults to critical', () => {
  const reg = decodeRegistration({ Name: 'api', ID: 'api-1', Check: { TTL: '1m30s' } });
  assert.deepEqual(reg.check, {
    CheckID: 'service:api-1',
    Name: "Service 'api' check",
    ServiceID: 'api-1',
    ServiceName: 'api',
    Status: 'critical',
    Output: '',
    Type: 'ttl',
    TTLMs: 90_000,
  });
  assert.equal(decodeRegistration({ Name: 'a', Check: { TTL: '10s', Status: 'warning', CheckID: 'c1' } }).check?.CheckID, 'c1');
  assert.throws(() => decodeRegistration({ Name: 'a', Check: {} }), isFieldError('Check.TTL', /is required/));
  assert.throws(() => decodeRegistration({ Name: 'a', Check: { TTL: '10' } }), isFieldError('Check.TTL', /invalid duration/));
  assert.throws(() => decodeRegistration({ Name: 'a', Check: { TTL: '500ms' } }), isFieldError('Check.TTL', /at least 1s/));
  assert.throws(() => decodeRegistration({ Name: 'a', Check: { TTL: '10s', Status: 'ok' } }), isFieldError('Check.Status'));
  assert.throws(() => decodeRegistration({ Name: 'a', Check: 'x' }), isFieldError('Check', /must be an object/));
});

test(
  'decodeRegistration: an empty ID defaults to the Name, as Consul\'s agent does',
  () => {
    const reg = decodeRegistration({ ID: '', Name: 'api', Check: { TTL: '10s' } });
    assert.equal(reg.service.ID, 'api');
    assert.equal(reg.check?.CheckID, 'service:api');
  },
);

test(
  'decodeRegistration does not silently drop a Checks list',
  () => {
    let reg: ReturnType<typeof decodeRegistration> | undefined;
    try {
      reg = decodeRegistration({ Name: 'api', Checks: [{ TTL: '10s' }] });
    } catch (e) {
      assert.ok(e instanceof FieldError);
      return;
    }
    assert.notEqual(reg.check, null, 'Checks was accepted but produced no check');
  },
);

test('Catalog: a TTL check turns critical after its TTL via expireChecks(), and updateCheck refreshes it', () => {
  const { catalog, clock, store } = fresh();
  catalog.register(decodeRegistration(sidecar('api-proxy', 'api', { Check: { TTL: '10s', Status: 'passing' } })));
  assert.equal(health(catalog, 'api', true, true).length, 1);

  clock.now += 9_999;
  assert.equal(catalog.expireChecks(), 0, 'not yet expired');
  assert.equal(health(catalog, 'api', true, true).length, 1);

  clock.now += 1;
  const before = store.tableIndex(CHECKS);
  assert.equal(catalog.expireChecks(), 1);
  assert.ok(store.tableIndex(CHECKS) > before, 'expiry is a write blocking queries can see');
  assert.equal(catalog.expireChecks(), 0, 'an already critical check is not rewritten');
  assert.deepEqual(health(catalog, 'api', true, true), []);
  const all = health(catalog, 'api', true, false);
  assert.equal(all.length, 1);
  const own = all[0]?.Checks.find((c) => c.CheckID === 'service:api-proxy');
  assert.equal(own?.Status, 'critical');
  assert.equal(own?.Output, 'TTL expired');

  assert.equal(catalog.updateCheck('service:api-proxy', 'passing', 'ok'), true);
  assert.equal(health(catalog, 'api', true, true).length, 1);
  clock.now += 9_000;
  assert.equal(catalog.expireChecks(), 0, 'updateCheck restarted the TTL');
  clock.now += 1_000;
  assert.equal(catalog.expireChecks(), 1);
  assert.equal(catalog.updateCheck('no-such-check', 'passing', ''), false);
});

test('Catalog.health(passingOnly) hides warning and critical instances', () => {
  const { catalog } = fresh();
  catalog.register(decodeRegistration(sidecar('p1', 'api', { Check: { TTL: '10s', Status: 'passing' } })));
  catalog.register(decodeRegistration(sidecar('p2', 'api', { Check: { TTL: '10s', Status: 'warning' } })));
  catalog.register(decodeRegistration(sidecar('p3', 'api', { Check: { TTL: '10s' } })));
  catalog.register(decodeRegistration(sidecar('p4', 'api')));
  const passing = health(catalog, 'api', true, true).map((h) => h.Service.ID).sort();
  assert.deepEqual(passing, ['p1', 'p4']);
  assert.equal(health(catalog, 'api', true, false).length, 4);
});

test('Catalog.health returns Consul\'s [{Node, Service, Checks}] shape for sidecars of the destination', () => {
  const { catalog, store } = fresh();
  catalog.register(decodeRegistration({ Name: 'api', Port: 9090 }));
  catalog.register(decodeRegistration(sidecar('api-sidecar-proxy', 'api', { Tags: ['t'], Check: { TTL: '10s', Status: 'passing' } })));
  catalog.register(decodeRegistration(sidecar('web-sidecar-proxy', 'web')));

  const h = health(catalog, 'api', true, false);
  assert.equal(h.length, 1, 'only the sidecar whose destination is api');
  const e = h[0];
  assert.ok(e !== undefined);
  assert.deepEqual({ Node: e.Node.Node, Address: e.Node.Address, Datacenter: e.Node.Datacenter }, NODE);
  assert.equal(e.Service.ID, 'api-sidecar-proxy');
  assert.equal(e.Service.Service, 'api-sidecar-proxy');
  assert.equal(e.Service.Kind, 'connect-proxy');
  assert.equal(e.Service.Port, 21000);
  assert.equal(e.Service.Proxy?.DestinationServiceName, 'api');
  const entry = store.get(SERVICES, 'api-sidecar-proxy');
  assert.equal(e.Service.CreateIndex, entry?.createIndex);
  assert.equal(e.Service.ModifyIndex, entry?.modifyIndex);
  assert.deepEqual(
    e.Checks.map((c) => [c.CheckID, c.Status, c.ServiceID]),
    [
      ['serfHealth', 'passing', ''],
      ['service:api-sidecar-proxy', 'passing', 'api-sidecar-proxy'],
    ],
  );

  // Non-connect health is by service name; the api service itself is not a sidecar.
  assert.deepEqual(health(catalog, 'api', false, false).map((x) => x.Service.ID), ['api']);
  assert.deepEqual(health(catalog, 'nobody', true, false), []);
  assert.deepEqual(health(catalog, 'api-sidecar-proxy', true, false), []);
});

test('deregister removes the service and its checks; re-registration replaces old checks', () => {
  const { catalog, store } = fresh();
  catalog.register(decodeRegistration(sidecar('p1', 'api', { Check: { TTL: '10s', CheckID: 'old' } })));
  catalog.register(decodeRegistration(sidecar('p2', 'api', { Check: { TTL: '10s' } })));
  catalog.register(decodeRegistration(sidecar('p1', 'api', { Check: { TTL: '20s', CheckID: 'new' } })));
  assert.deepEqual(
    store.list<CheckRecord>(CHECKS).map((c) => c.value.CheckID).sort(),
    ['new', 'service:p2'],
  );
  assert.equal(catalog.deregister('p1'), true);
  assert.equal(catalog.deregister('p1'), false);
  assert.deepEqual(catalog.services().map((s) => s.ID), ['p2']);
  assert.deepEqual(store.list<CheckRecord>(CHECKS).map((c) => c.value.CheckID), ['service:p2']);
  assert.equal(catalog.updateCheck('new', 'passing', ''), false);
  assert.deepEqual(health(catalog, 'api', true, false).map((x) => x.Service.ID), ['p2']);
});
