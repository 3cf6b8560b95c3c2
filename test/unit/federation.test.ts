// Federation, the pure parts: federation-state decoding and validation, the mesh gateways a
// datacenter advertises, which writes a secondary forwards, config snapshot replication
// into a store, and the primary's roots as a secondary checks them.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FileStore } from '../../src/control/store.ts';
import { FieldError } from '../../src/control/decode.ts';
import { applyConfigSnapshot, configSnapshot, decodeFederationState, forwardedWriteKind, localMeshGateways, sameFederationState, type FederationState } from '../../src/control/federation.ts';
import { CaStateError, decodePrimaryRoots } from '../../src/control/ca-state.ts';
import type { CheckRecord, ServiceRecord } from '../../src/control/catalog.ts';

const valid: FederationState = { Datacenter: 'dc2', Address: '127.0.0.1:8501', MeshGateways: [{ Address: '10.0.0.1', Port: 8443 }], UpdatedAt: '2026-01-02T03:04:05.678Z' };

function fieldOf(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof FieldError) return err.field;
    throw err;
  }
  assert.fail('expected a FieldError');
}

test('a valid federation state decodes to itself', () => {
  assert.deepEqual(decodeFederationState(structuredClone(valid)), valid);
  assert.deepEqual(decodeFederationState({ ...valid, MeshGateways: [], Address: '[::1]:8500' }).Address, '[::1]:8500');
});

test('each invalid federation-state field is refused by name', () => {
  const cases: [unknown, string][] = [
    [null, 'body'],
    [{ ...valid, Datacenter: 'DC2' }, 'Datacenter'],
    [{ ...valid, Datacenter: '' }, 'Datacenter'],
    [{ ...valid, Address: '127.0.0.1' }, 'Address'],
    [{ ...valid, Address: '127.0.0.1:99999' }, 'Address'],
    [{ ...valid, MeshGateways: null }, 'MeshGateways'],
    [{ ...valid, MeshGateways: [{ Address: '10.0.0.1', Port: 0 }] }, 'MeshGateways[0].Port'],
    [{ ...valid, MeshGateways: [{ Address: '10.0.0.1', Port: 1.5 }] }, 'MeshGateways[0].Port'],
    [{ ...valid, MeshGateways: [{ Address: '', Port: 443 }] }, 'MeshGateways[0].Address'],
    [{ ...valid, MeshGateways: [{ Address: 'a b', Port: 443 }] }, 'MeshGateways[0].Address'],
    [{ ...valid, MeshGateways: [{ Address: 'gw', Port: 443, Extra: 1 }] }, 'MeshGateways[0].Extra'],
    [{ ...valid, UpdatedAt: 'yesterday' }, 'UpdatedAt'],
    [{ ...valid, UpdatedAt: '2026-13-45T00:00:00Z' }, 'UpdatedAt'],
    [{ ...valid, Surprise: true }, 'Surprise'],
  ];
  for (const [body, field] of cases) assert.equal(fieldOf(() => decodeFederationState(body)), field, JSON.stringify(body));
  // Inside the primary's list, the path says which element.
  assert.equal(fieldOf(() => decodeFederationState({ ...valid, Address: 'x' }, '[3]')), '[3].Address');
});

const dcArb = fc.stringMatching(/^[a-z0-9][a-z0-9_-]{0,20}$/);
const hostArb = fc.oneof(fc.ipV4(), fc.domain());
const stateArb = fc.record({
  Datacenter: dcArb,
  Address: fc.tuple(hostArb, fc.integer({ min: 0, max: 65535 })).map(([h, p]) => `${h}:${p}`),
  MeshGateways: fc.array(fc.record({ Address: hostArb, Port: fc.integer({ min: 1, max: 65535 }) }), { maxLength: 5 }),
  UpdatedAt: fc.date({ min: new Date(0), max: new Date(4e12), noInvalidDate: true }).map((d) => d.toISOString()),
});

test('property: every well-formed state round-trips through JSON and decoding', () => {
  fc.assert(
    fc.property(stateArb, (s) => {
      const wire = JSON.parse(JSON.stringify(s)) as unknown;
      assert.deepEqual(decodeFederationState(wire), wire);
    }),
  );
});

test('property: decoding never throws anything but FieldError, whatever the input', () => {
  fc.assert(
    fc.property(fc.oneof(fc.jsonValue(), stateArb.chain((s) => fc.record({ ...Object.fromEntries(Object.entries(s).map(([k, v]) => [k, fc.oneof(fc.constant(v), fc.jsonValue())])) }))), (v) => {
      try {
        decodeFederationState(v);
      } catch (err) {
        assert.ok(err instanceof FieldError, String(err));
      }
    }),
  );
});

test('sameFederationState ignores UpdatedAt only', () => {
  assert.ok(sameFederationState(valid, { ...valid, UpdatedAt: '2030-01-01T00:00:00Z' }));
  assert.ok(!sameFederationState(valid, { ...valid, Address: '127.0.0.1:1' }));
  assert.ok(!sameFederationState(valid, { ...valid, MeshGateways: [] }));
  assert.ok(!sameFederationState(undefined, valid));
});

function svc(id: string, kind: string, address: string, port: number, tagged?: Record<string, { Address: string; Port: number }>): ServiceRecord {
  return { ID: id, Service: id, Kind: kind, Address: address, Port: port, Tags: [], Meta: {}, Proxy: null, ...(tagged === undefined ? {} : { TaggedAddresses: tagged }) } as unknown as ServiceRecord;
}
function check(serviceId: string, status: string): CheckRecord {
  return { CheckID: `c-${serviceId}-${status}`, ServiceID: serviceId, Status: status } as unknown as CheckRecord;
}

test('mesh gateways: only Kind mesh-gateway, no critical check, WAN tagged address first, sorted', () => {
  const services = [
    svc('web', '', '10.0.0.9', 80),
    svc('gw-b', 'mesh-gateway', '10.0.0.2', 8443, { wan: { Address: '198.51.100.2', Port: 443 } }),
    svc('gw-a', 'mesh-gateway', '10.0.0.1', 8443),
    svc('gw-down', 'mesh-gateway', '10.0.0.3', 8443),
    svc('gw-warn', 'mesh-gateway', '', 9443),
  ];
  const checks = [check('gw-down', 'passing'), check('gw-down', 'critical'), check('gw-warn', 'warning'), check('web', 'critical')];
  assert.deepEqual(localMeshGateways(services, checks, '192.0.2.1'), [
    { Address: '10.0.0.1', Port: 8443 },
    { Address: '192.0.2.1', Port: 9443 },
    { Address: '198.51.100.2', Port: 443 },
  ]);
});

test('a secondary forwards exactly the config, intention and CA configuration writes', () => {
  const yes: [string, string, 'config' | 'ca'][] = [
    ['PUT', '/v1/config', 'config'],
    ['DELETE', '/v1/config/service-defaults/web', 'config'],
    ['PUT', '/v1/connect/intentions/exact', 'config'],
    ['DELETE', '/v1/connect/intentions/exact', 'config'],
    ['POST', '/v1/connect/intentions', 'config'],
    ['PUT', '/v1/connect/intentions/0b1c7a2e-58c1-4c0b-9a3d-9d0a3c1e0f11', 'config'],
    ['DELETE', '/v1/connect/intentions/0b1c7a2e-58c1-4c0b-9a3d-9d0a3c1e0f11', 'config'],
    ['PUT', '/v1/connect/ca/configuration', 'ca'],
  ];
  for (const [m, p, k] of yes) assert.equal(forwardedWriteKind(m, p), k, `${m} ${p}`);
  const no: [string, string][] = [
    ['GET', '/v1/config/service-defaults/web'],
    ['GET', '/v1/connect/intentions'],
    ['GET', '/v1/connect/intentions/check'],
    ['GET', '/v1/connect/ca/configuration'],
    ['PUT', '/v1/agent/service/register'],
    ['PUT', '/v1/acl/token'],
    ['POST', '/v1/connect/ca/sign'],
  ];
  for (const [m, p] of no) assert.equal(forwardedWriteKind(m, p), null, `${m} ${p}`);
});

test('config snapshots replicate puts and deletes, and an unchanged snapshot writes nothing', () => {
  const tables = ['config/service-defaults', 'config/service-intentions'];
  const primary = new FileStore(null);
  const secondary = new FileStore(null);
  primary.put(tables[0]!, 'web', { kind: 'service-defaults', name: 'web', protocol: 'http' });
  primary.put(tables[1]!, 'api', { kind: 'service-intentions', name: 'api', sources: [{ name: 'web', legacy: { id: 'x', meta: { a: 'b' } } }] });
  secondary.put(tables[0]!, 'stale', { kind: 'service-defaults', name: 'stale' });

  const snap = JSON.parse(JSON.stringify(configSnapshot(primary, tables))) as unknown;
  assert.deepEqual([...applyConfigSnapshot(secondary, tables, snap)].sort(), tables);
  assert.equal(secondary.get(tables[0]!, 'stale'), undefined);
  assert.deepEqual(secondary.get(tables[1]!, 'api')?.value, primary.get(tables[1]!, 'api')?.value, 'legacy IDs and Meta come across as stored');

  const index = secondary.index;
  assert.equal(applyConfigSnapshot(secondary, tables, snap).size, 0);
  assert.equal(secondary.index, index, 'no write, so no blocking query wakes');

  primary.delete(tables[0]!, 'web');
  assert.deepEqual([...applyConfigSnapshot(secondary, tables, configSnapshot(primary, tables))], [tables[0]]);
  assert.equal(secondary.list(tables[0]!).length, 0);
  assert.throws(() => applyConfigSnapshot(secondary, tables, { Tables: { [tables[0]!]: [{ Key: 'x' }] } }), /not \{Key, Value\}/);
});

test('the primary roots a secondary adopts must name their active root', () => {
  const root = { ID: 'aa', RootCert: '-----BEGIN CERTIFICATE-----\n', NotAfter: '2030-01-01T00:00:00Z', IntermediateCerts: null, Active: true };
  assert.equal(decodePrimaryRoots({ ActiveRootID: 'aa', TrustDomain: 't.consul', Roots: [root] }).Roots[0]?.Active, true);
  assert.throws(() => decodePrimaryRoots({ ActiveRootID: 'bb', TrustDomain: 't.consul', Roots: [root] }), CaStateError);
  assert.throws(() => decodePrimaryRoots({ ActiveRootID: 'aa', TrustDomain: '', Roots: [root] }), /TrustDomain/);
  assert.throws(() => decodePrimaryRoots({ ActiveRootID: 'aa', TrustDomain: 't.consul', Roots: [] }), /Roots is empty/);
  assert.throws(() => decodePrimaryRoots({ ActiveRootID: 'aa', TrustDomain: 't.consul', Roots: [{ ...root, IntermediateCerts: [1] }] }), /IntermediateCerts/);
});
