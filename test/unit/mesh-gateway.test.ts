// The mesh gateway's pure parts: the agent's routing answer (src/gateway/mesh-config.ts), the
// route a server name takes (src/gateway/mesh-route.ts), the catalog's mesh-gateway
// registration (Kind, TaggedAddresses) and the gateway's metric families.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import type { ServiceResolverEntry } from '../../src/config/service-resolver.ts';
import type { HealthEntry } from '../../src/control/agent-session.ts';
import { Catalog, agentServiceJson, decodeRegistration } from '../../src/control/catalog.ts';
import { FieldError } from '../../src/control/decode.ts';
import { FileStore } from '../../src/control/store.ts';
import { meshGatewayConfig, serviceSni, type FederationState } from '../../src/gateway/mesh-config.ts';
import { compileMeshRoutes, selectMeshRoute } from '../../src/gateway/mesh-route.ts';
import { serviceLabel } from '../../src/gateway/mesh.ts';
import { D, G, allocateMeshMetrics, destSlot, meshGatewayFamilies, meshMetricsRegion, refusedSlot } from '../../src/metrics/mesh-gateway.ts';
import { renderFamilies } from '../../src/metrics/prometheus.ts';
import { assertStrictMetrics } from '../helpers/prom-check.ts';
import type { MeshGatewayRouting } from '../../src/workers/messages.ts';

const TD = '11111111-2222-3333-4444-555555555555.consul';

function entry(id: string, port: number, meta: Record<string, string>, statuses: string[], address = '10.0.0.1'): HealthEntry {
  return {
    Node: { Address: '192.168.0.1' },
    Service: { ID: id, Address: address, Port: port, Tags: [], Meta: meta, Proxy: { DestinationServiceName: 'api' } },
    Checks: statuses.map((Status) => ({ Status })),
  } as HealthEntry;
}

function resolver(subsets: ServiceResolverEntry['subsets']): ServiceResolverEntry {
  return { kind: 'service-resolver', name: 'api', subsets } as unknown as ServiceResolverEntry;
}

test('serviceSni is Consul\'s default-partition form, lower-cased', () => {
  assert.equal(serviceSni('api', '', 'dc1', TD), `api.default.dc1.internal.${TD}`);
  assert.equal(serviceSni('Api', 'V1', 'DC2', TD), `v1.api.default.dc2.internal.${TD}`);
});

test('mesh-config: services by SNI with passing and warning sidecars, subsets filtered, OnlyPassing honoured', () => {
  const api = [
    entry('a1', 21001, { version: 'v1' }, ['passing']),
    entry('a2', 21002, { version: 'v2' }, ['passing', 'warning']),
    entry('a3', 21003, { version: 'v2' }, ['critical']),
    entry('a4', 21004, { version: 'v1' }, ['passing'], ''),
  ];
  const cfg = meshGatewayConfig({
    datacenter: 'dc1',
    trustDomain: TD,
    services: new Map([
      ['api', api],
      ['db', []],
    ]),
    resolvers: [resolver({ v1: { filter: 'Service.Meta.version == v1', onlyPassing: false }, v2: { filter: 'Service.Meta.version == v2', onlyPassing: true }, all: { filter: '', onlyPassing: false } })],
    federationStates: [],
  });
  assert.equal(cfg.Datacenter, 'dc1');
  assert.equal(cfg.TrustDomain, TD);
  const s = cfg.Services;
  // a3 is critical (never); a4 has no service address (the node's).
  assert.deepEqual(s[`api.default.dc1.internal.${TD}`], [
    { Address: '10.0.0.1', Port: 21001 },
    { Address: '10.0.0.1', Port: 21002 },
    { Address: '192.168.0.1', Port: 21004 },
  ]);
  assert.deepEqual(s[`v1.api.default.dc1.internal.${TD}`], [
    { Address: '10.0.0.1', Port: 21001 },
    { Address: '192.168.0.1', Port: 21004 },
  ]);
  // v2 is OnlyPassing: the warning instance a2 is left out, so nothing is left.
  assert.deepEqual(s[`v2.api.default.dc1.internal.${TD}`], []);
  assert.equal(s[`all.api.default.dc1.internal.${TD}`]?.length, 3);
  // A service whose sidecars are all gone still has its name (refused as no_healthy_upstream, not unknown).
  assert.deepEqual(s[`db.default.dc1.internal.${TD}`], []);
  assert.deepEqual(Object.keys(s).sort(), [`all.api.default.dc1.internal.${TD}`, `api.default.dc1.internal.${TD}`, `db.default.dc1.internal.${TD}`, `v1.api.default.dc1.internal.${TD}`, `v2.api.default.dc1.internal.${TD}`]);
});

test('mesh-config: a filter that does not compile selects nothing and is reported', () => {
  const bad: string[] = [];
  const cfg = meshGatewayConfig({
    datacenter: 'dc1',
    trustDomain: TD,
    services: new Map([['api', [entry('a1', 1, {}, ['passing'])]]]),
    resolvers: [resolver({ broken: { filter: 'Service.Nope == 1', onlyPassing: false } })],
    federationStates: [],
    onBadFilter: (svc, subset) => bad.push(`${svc}/${subset}`),
  });
  assert.deepEqual(cfg.Services[`broken.api.default.dc1.internal.${TD}`], []);
  assert.deepEqual(bad, ['api/broken']);
});

test('mesh-config: datacenters from the federation states, the local one and empty gateways left out', () => {
  const st = (dc: string, gws: { Address: string; Port: number }[]): FederationState => ({ Datacenter: dc, Address: 'x', MeshGateways: gws, UpdatedAt: '' });
  const cfg = meshGatewayConfig({
    datacenter: 'dc1',
    trustDomain: TD,
    services: new Map(),
    resolvers: [],
    federationStates: [st('dc1', [{ Address: '10.1.0.1', Port: 8443 }]), st('DC2', [{ Address: '10.2.0.1', Port: 8443 }, { Address: '', Port: 1 }, { Address: '10.2.0.2', Port: 0 }]), st('dc3', [])],
  });
  assert.deepEqual(cfg.Datacenters, { dc2: [{ Address: '10.2.0.1', Port: 8443 }], dc3: [] });
  assert.deepEqual(cfg.Services, {});
});

const routing: MeshGatewayRouting = {
  datacenter: 'dc1',
  trustDomain: TD,
  services: {
    [`api.default.dc1.internal.${TD}`]: { endpoints: [{ host: '10.0.0.1', port: 1 }], block: 1 },
    [`v1.api.default.dc1.internal.${TD}`]: { endpoints: [{ host: '10.0.0.1', port: 1 }], block: 2 },
  },
  datacenters: { dc2: { endpoints: [{ host: '10.2.0.1', port: 8443 }], block: 3 } },
};

test('route selection: exact local names, other datacenters by suffix, everything else refused with its reason', () => {
  const t = compileMeshRoutes(routing);
  const kind = (sni: string): string => {
    const r = selectMeshRoute(t, sni);
    return r.kind === 'refuse' ? r.reason : `${r.kind}:${r.key}:${r.destination.block}`;
  };
  assert.equal(kind(`api.default.dc1.internal.${TD}`), `service:api.default.dc1.internal.${TD}:1`);
  assert.equal(kind(`v1.api.default.dc1.internal.${TD}`), `service:v1.api.default.dc1.internal.${TD}:2`);
  assert.equal(kind(`v9.api.default.dc1.internal.${TD}`), 'unknown_service');
  assert.equal(kind(`web.default.dc1.internal.${TD}`), 'unknown_service');
  assert.equal(kind(`dc1.internal.${TD}`), 'unknown_service', 'the local gateway name is not a route');
  assert.equal(kind(`web.default.dc2.internal.${TD}`), 'datacenter:dc2:3');
  assert.equal(kind(`v2.web.default.dc2.internal.${TD}`), 'datacenter:dc2:3');
  assert.equal(kind(`dc2.internal.${TD}`), 'datacenter:dc2:3', 'the whole-datacenter gateway name');
  assert.equal(kind(`web.default.dc3.internal.${TD}`), 'unknown_datacenter');
  assert.equal(kind('api.default.dc1.internal.99999999-2222-3333-4444-555555555555.consul'), 'foreign_trust_domain');
  assert.equal(kind(`api.default.dc1.internal-v1.${TD}`), 'foreign_trust_domain');
  assert.equal(kind('example.com'), 'foreign_trust_domain');
  assert.equal(kind(`internal.${TD}`), 'foreign_trust_domain');
  assert.equal(kind(`.internal.${TD}`), 'unknown_service');
  // Object prototype names are ordinary unknown names.
  for (const evil of ['__proto__', 'constructor', `__proto__.internal.${TD}`, `constructor.internal.${TD}`, `x.hasownproperty.internal.${TD}`]) assert.match(kind(evil), /^(unknown_|foreign)/, evil);
});

test('property: a route is only ever a known local name or a known other datacenter', () => {
  const t = compileMeshRoutes(routing);
  const label = fc.stringMatching(/^[a-z0-9_-]{1,12}$/);
  const name = fc.oneof(
    fc.array(label, { minLength: 1, maxLength: 6 }).map((ls) => ls.join('.')),
    fc.tuple(fc.array(label, { maxLength: 3 }), fc.constantFrom('dc1', 'dc2', 'dc3', 'DC2')).map(([ls, dc]) => [...ls, dc, 'internal', TD].join('.').toLowerCase()),
  );
  fc.assert(
    fc.property(name, (sni) => {
      const r = selectMeshRoute(t, sni);
      if (r.kind === 'service') assert.ok(Object.hasOwn(routing.services, sni));
      if (r.kind === 'datacenter') {
        assert.ok(sni.endsWith(`.dc2.internal.${TD}`) || sni === `dc2.internal.${TD}`, sni);
        assert.equal(r.key, 'dc2');
      }
      if (r.kind === 'refuse' && r.reason === 'foreign_trust_domain') assert.ok(!sni.endsWith(`.internal.${TD}`));
    }),
    { numRuns: 500 },
  );
});

test('serviceLabel: the SNI without the local suffix', () => {
  assert.equal(serviceLabel(`v1.api.default.dc1.internal.${TD}`, 'dc1', TD), 'v1.api');
  assert.equal(serviceLabel(`api.default.dc1.internal.${TD}`, 'DC1', TD.toUpperCase()), 'api');
});

test('catalog: Kind mesh-gateway with TaggedAddresses is stored and returned in Consul\'s shape', () => {
  const reg = decodeRegistration({
    Name: 'mesh-gateway',
    Kind: 'mesh-gateway',
    Address: '10.0.0.5',
    Port: 8443,
    TaggedAddresses: { lan: { Address: '10.0.0.5', Port: 8443 }, wan: { Address: '198.51.100.5', Port: 443 } },
  });
  assert.equal(reg.service.Kind, 'mesh-gateway');
  assert.deepEqual(reg.service.TaggedAddresses, { lan: { Address: '10.0.0.5', Port: 8443 }, wan: { Address: '198.51.100.5', Port: 443 } });
  const json = agentServiceJson(reg.service, 'dc1');
  assert.equal(json.Kind, 'mesh-gateway');
  assert.deepEqual(json.TaggedAddresses, reg.service.TaggedAddresses);
  const catalog = new Catalog(new FileStore(null), { Node: 'n', Address: '127.0.0.1', Datacenter: 'dc1' }, Date.now);
  catalog.register(reg);
  const health = catalog.health('mesh-gateway', false, false) as { Service: { Kind: string; TaggedAddresses?: unknown } }[];
  assert.equal(health[0]?.Service.Kind, 'mesh-gateway');
  assert.deepEqual(health[0]?.Service.TaggedAddresses, reg.service.TaggedAddresses);
  // Without TaggedAddresses the field is left out (Consul's omitempty).
  const plain = decodeRegistration({ Name: 'web', Port: 80 });
  assert.equal('TaggedAddresses' in plain.service, false);
  assert.equal('TaggedAddresses' in agentServiceJson(plain.service, 'dc1'), false);
});

test('catalog: bad mesh-gateway registrations are refused naming the field', () => {
  const refused = (body: Record<string, unknown>, field: string): void => {
    assert.throws(() => decodeRegistration(body), (e: unknown) => e instanceof FieldError && e.message.startsWith(field), `${JSON.stringify(body)} → ${field}`);
  };
  const gw = { Name: 'mesh-gateway', Kind: 'mesh-gateway', Port: 8443 };
  refused({ Name: 'mesh-gateway', Kind: 'mesh-gateway' }, 'Port');
  refused({ ...gw, Kind: 'terminating-gateway' }, 'Kind');
  refused({ ...gw, TaggedAddresses: { wan: { Address: '1.2.3.4' } } }, 'TaggedAddresses.wan.Port');
  refused({ ...gw, TaggedAddresses: { wan: { Port: 1 } } }, 'TaggedAddresses.wan.Address');
  refused({ ...gw, TaggedAddresses: { wan: { Address: '1.2.3.4:443', Port: 443 } } }, 'TaggedAddresses.wan.Address');
  refused({ ...gw, TaggedAddresses: { wan: { Address: 'a b', Port: 443 } } }, 'TaggedAddresses.wan.Address');
  refused({ ...gw, TaggedAddresses: { wan: { Address: '1.2.3.4', Port: 70000 } } }, 'TaggedAddresses.wan.Port');
  refused({ ...gw, TaggedAddresses: { wan: { Address: '1.2.3.4', Port: 1, Weight: 2 } } }, 'TaggedAddresses.wan.Weight');
  refused({ ...gw, TaggedAddresses: { wan: 'x' } }, 'TaggedAddresses.wan');
  refused({ ...gw, TaggedAddresses: { 'bad tag': { Address: '1.2.3.4', Port: 1 } } }, 'TaggedAddresses.bad tag');
  refused({ ...gw, TaggedAddresses: ['x'] }, 'TaggedAddresses');
  refused({ ...gw, Proxy: { DestinationServiceName: 'x' } }, 'Proxy');
  refused({ ...gw, Connect: { SidecarService: {} } }, 'Connect.SidecarService');
  refused({ Name: 'web', Port: 1, Connect: { SidecarService: { TaggedAddresses: { lan: { Address: 'a', Port: 1 } } } } }, 'Connect.SidecarService.TaggedAddresses');
  // IPv6 addresses are fine.
  assert.deepEqual(decodeRegistration({ ...gw, TaggedAddresses: { wan: { Address: '2001:db8::1', Port: 443 } } }).service.TaggedAddresses, { wan: { Address: '2001:db8::1', Port: 443 } });
});

test('metrics: families sum the workers, label destinations by name, and pass the strict checker', () => {
  const cap = 8;
  const buf = allocateMeshMetrics(2, cap);
  const w0 = meshMetricsRegion(buf, 0, cap);
  const w1 = meshMetricsRegion(buf, 1, cap);
  w0[G.OPENED] = 3;
  w1[G.OPENED] = 2;
  w0[G.CLOSED] = 1;
  w1[G.CLOSED] = 2;
  w0[G.ROUTED] = 1;
  w0[refusedSlot('not_tls')] = 1;
  w1[refusedSlot('not_tls')] = 1;
  w0[destSlot(1, D.FORWARDED)] = 2;
  w1[destSlot(1, D.CLOSED)] = 1;
  w1[destSlot(2, D.CONNECT_FAILURES)] = 4;
  const fams = meshGatewayFamilies(buf, 2, [{ kind: 'other', destination: '_other' }, { kind: 'service', destination: 'api' }, { kind: 'datacenter', destination: 'dc2' }], cap);
  const text = renderFamilies(fams, { service: 'mesh-gateway' });
  assertStrictMetrics(text);
  assert.match(text, /^meshd_mesh_gateway_connections_opened_total\{service="mesh-gateway"\} 5$/m);
  assert.match(text, /^meshd_mesh_gateway_connections_active\{service="mesh-gateway"\} 2$/m);
  assert.match(text, /^meshd_mesh_gateway_connections_refused_total\{service="mesh-gateway",reason="not_tls"\} 2$/m);
  assert.match(text, /^meshd_mesh_gateway_connections_total\{service="mesh-gateway",result="routed"\} 1$/m);
  assert.match(text, /^meshd_mesh_gateway_connections_total\{service="mesh-gateway",result="refused"\} 2$/m);
  assert.match(text, /^meshd_mesh_gateway_destination_connections_active\{service="mesh-gateway",kind="service",destination="api"\} 1$/m);
  assert.match(text, /^meshd_mesh_gateway_destination_connect_failures_total\{service="mesh-gateway",kind="datacenter",destination="dc2"\} 4$/m);
  // Blocks beyond the labelled ones are not rendered.
  assert.equal((text.match(/^meshd_mesh_gateway_destination_connections_total/gm) ?? []).length, 3);
});
