// The ingress gateway beyond one entry: its virtual-host domains and Envoy's Host matching
// (src/gateway/hosts.ts), Consul's listener-protocol rule across entries, and the agent's
// gateway-config answer with a wildcard (src/gateway/config.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeConfigEntry, type ConfigEntry } from '../../src/config/entries.ts';
import { gatewayConfig, ingressProtocolErrors } from '../../src/gateway/config.ts';
import { HostTable, ingressDomains } from '../../src/gateway/hosts.ts';

test('domains: <service>.ingress.* by default, explicit Hosts replace it, :port added where a port can matter', () => {
  assert.deepEqual(ingressDomains('web', [], 8080), ['web.ingress.*']);
  assert.deepEqual(ingressDomains('api', ['API.example.com', '*.api.example.com', 'x.example.com:9000', '*'], 8080), [
    'api.example.com',
    '*.api.example.com',
    'x.example.com:9000',
    '*',
    'api.example.com:8080',
    '*.api.example.com:8080',
  ]);
});

test("Host matching follows Envoy's order: exact, longest suffix wildcard, longest prefix wildcard, then *", () => {
  const t = new HostTable([
    { domains: ingressDomains('web', [], 8080), value: 'web' },
    { domains: ingressDomains('api', ['api.example.com'], 8080), value: 'api' },
    { domains: ingressDomains('wild', ['*.example.com'], 8080), value: 'wild' },
    { domains: ingressDomains('deep', ['*.b.example.com'], 8080), value: 'deep' },
    { domains: ['web.ingress.special.*'], value: 'special' },
  ]);
  assert.equal(t.match('web.ingress.example'), 'web');
  assert.equal(t.match('WEB.Ingress.example.org:8080'), 'web');
  assert.equal(t.match('web.ingress.example.com'), 'wild', 'a suffix wildcard beats a prefix wildcard');
  assert.equal(t.match('web.ingress.special.x'), 'special', 'the longer prefix wins');
  assert.equal(t.match('api.example.com'), 'api');
  assert.equal(t.match('api.example.com:8080'), 'api');
  assert.equal(t.match('api.example.com:9090'), undefined, 'another port is another host');
  assert.equal(t.match('other.example.com'), 'wild');
  assert.equal(t.match('a.b.example.com'), 'deep', 'the longer suffix wins');
  assert.equal(t.match('.example.com'), undefined, 'a wildcard never matches the empty string');
  assert.equal(t.match('web.ingress.'), undefined);
  assert.equal(t.match('unknown.test'), undefined);
  const any = new HostTable([{ domains: ['x.test'], value: 1 }, { domains: ['*'], value: 2 }]);
  assert.equal(any.match('x.test'), 1);
  assert.equal(any.match('anything'), 2);
});

function entries(...docs: unknown[]): ConfigEntry[] {
  return docs.map(decodeConfigEntry);
}

const HTTP_API = { Kind: 'service-defaults', Name: 'api', Protocol: 'http' };
const GATEWAY = {
  Kind: 'ingress-gateway',
  Name: 'gw',
  Listeners: [
    { Port: 8080, Protocol: 'http', Services: [{ Name: 'api' }] },
    { Port: 9000, Protocol: 'tcp', Services: [{ Name: 'db' }] },
  ],
};

test("protocols: an http listener needs an http-like service, Consul's message naming the field", () => {
  assert.deepEqual([...ingressProtocolErrors(entries(HTTP_API, GATEWAY), { datacenter: 'dc1' })], []);
  assert.deepEqual([...ingressProtocolErrors(entries(GATEWAY), { datacenter: 'dc1' })], [
    ['ingress-gateway/gw', 'ingress-gateway "gw": Listeners[0].Services[0].Name: service "api" has protocol "tcp", which does not match defined listener protocol "http"'],
  ]);
});

test('protocols: a tcp listener takes an http service whose chain starts at a resolver, not one with a router', () => {
  const httpDb = { Kind: 'service-defaults', Name: 'db', Protocol: 'http' };
  assert.deepEqual([...ingressProtocolErrors(entries(HTTP_API, httpDb, GATEWAY), { datacenter: 'dc1' })], []);
  const router = { Kind: 'service-router', Name: 'db', Routes: [{ Match: { HTTP: { PathPrefix: '/x' } } }] };
  const errors = ingressProtocolErrors(entries(HTTP_API, httpDb, router, GATEWAY), { datacenter: 'dc1' });
  assert.match(errors.get('ingress-gateway/gw') ?? '', /Listeners\[1\]\.Services\[0\]\.Name: service "db" has protocol "http", which does not match defined listener protocol "tcp"/);
});

test('gateway config: explicit chains compiled with the gateway as downstream; a wildcard expands to the http services of the catalog', () => {
  const all = entries(
    HTTP_API,
    { Kind: 'service-defaults', Name: 'web', Protocol: 'http' },
    { Kind: 'service-defaults', Name: 'gw', UpstreamConfig: { Defaults: { ConnectTimeoutMs: 1234 } } },
    { ...GATEWAY, Listeners: [...GATEWAY.Listeners, { Port: 8081, Protocol: 'http', Services: [{ Name: '*' }] }] },
  );
  const cfg = gatewayConfig(all, 'gw', ['api', 'web', 'db', 'gw', 'web'], { datacenter: 'dc1', trustDomain: 'td.consul' });
  assert.equal(cfg.Entry?.name, 'gw');
  // db is tcp and gw is the gateway itself: neither is in the wildcard.
  assert.deepEqual(cfg.WildcardServices, ['api', 'web']);
  assert.deepEqual(Object.keys(cfg.Chains).sort(), ['api', 'db', 'web']);
  assert.equal(Object.values(cfg.Chains.api?.targets ?? {})[0]?.connectTimeoutMs, 1234, "the gateway's UpstreamConfig applies");
  assert.deepEqual(cfg.ChainErrors, {});
  const none = gatewayConfig(all, 'other', ['api'], { datacenter: 'dc1' });
  assert.equal(none.Entry, null);
  assert.deepEqual(none.Chains, {});
});
