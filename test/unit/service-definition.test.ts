// Consul service definitions: every field of decodeRegistration, each refusal naming its field,
// the Connect.SidecarService expansion (Consul's defaults, port range, default checks), alias
// checks, the critical-service reaper, and reading definition files (HCL and JSON).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FieldError, type JsonObject } from '../../src/control/decode.ts';
import { FileStore } from '../../src/control/store.ts';
import {
  CHECKS,
  Catalog,
  SIDECAR_MAX_PORT,
  SIDECAR_MIN_PORT,
  agentServiceJson,
  decodeRegistration,
  formatDuration,
  registrationChecks,
  type CheckRecord,
  type Registration,
} from '../../src/control/catalog.ts';
import { parseConfigText } from '../../src/config/hcl.ts';
import { ServicesFileError, definitionsFromDocument } from '../../src/cli/services.ts';

function fieldError(field: string, pattern?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof FieldError, `expected FieldError, got ${String(e)}`);
    assert.equal(e.field, field);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  };
}

function fresh(): { catalog: Catalog; clock: { now: number }; store: FileStore } {
  const store = new FileStore(null);
  const clock = { now: 1_000_000 };
  return { catalog: new Catalog(store, { Node: 'n1', Address: '127.0.0.1', Datacenter: 'dc1' }, () => clock.now), clock, store };
}

function statusOf(c: Catalog, id: string): string | undefined {
  return c.check(id)?.Status;
}

function passingSidecars(c: Catalog, name: string): string[] {
  return (c.health(name, true, true) as { Service: { ID: string } }[]).map((e) => e.Service.ID);
}

const FULL: JsonObject = {
  ID: 'web-1',
  Name: 'web',
  Address: '10.0.0.5',
  Port: 8080,
  Tags: ['v1', 'primary'],
  Meta: { version: '1' },
  EnableTagOverride: false,
  Namespace: 'default',
  Check: { CheckID: 'web-http', Name: 'web health', Notes: 'GET /health', HTTP: 'http://10.0.0.5:8080/health', Method: 'post', Header: { 'X-Probe': ['a', 'b'], Host: 'web.local' }, Body: '{}', Interval: '5s', Timeout: '2s', TLSSkipVerify: true, TLSServerName: 'web', DisableRedirects: true, DeregisterCriticalServiceAfter: '90m' },
  Checks: [
    { TCP: '10.0.0.5:8080', Interval: '10s' },
    { TTL: '30s', Status: 'passing' },
  ],
};

test('decodeRegistration: every service and check field', () => {
  const reg = decodeRegistration(FULL);
  assert.deepEqual(reg.service, { ID: 'web-1', Service: 'web', Kind: '', Address: '10.0.0.5', Port: 8080, Tags: ['v1', 'primary'], Meta: { version: '1' }, Proxy: null });
  assert.deepEqual(reg.check, {
    CheckID: 'web-http',
    Name: 'web health',
    Notes: 'GET /health',
    ServiceID: 'web-1',
    ServiceName: 'web',
    Status: 'critical',
    Output: '',
    DeregisterCriticalServiceAfterMs: 90 * 60_000,
    Type: 'http',
    HTTP: 'http://10.0.0.5:8080/health',
    Method: 'POST',
    Header: { 'X-Probe': ['a', 'b'], Host: ['web.local'] },
    Body: '{}',
    DisableRedirects: true,
    TLSSkipVerify: true,
    TLSServerName: 'web',
    IntervalMs: 5000,
    TimeoutMs: 2000,
  });
  // Check comes first, then Checks; unnamed IDs are numbered when there are several (Consul).
  assert.deepEqual(
    registrationChecks(reg).map((c) => [c.CheckID, c.Type, c.Status]),
    [
      ['web-http', 'http', 'critical'],
      ['service:web-1:2', 'tcp', 'critical'],
      ['service:web-1:3', 'ttl', 'passing'],
    ],
  );
  const tcp = registrationChecks(reg)[1];
  assert.equal(tcp?.Type === 'tcp' ? tcp.TimeoutMs : 0, 10_000, 'Timeout defaults to 10s');
  assert.equal(reg.sidecar, undefined);
});

test('decodeRegistration: snake_case and lower-case keys, and a Checks list alone', () => {
  const reg = decodeRegistration({
    name: 'api',
    checks: [{ check_id: 'a', http: 'http://127.0.0.1:1/', interval: '1s', tls_skip_verify: false }, { id: 'b', tcp: '[::1]:80', interval: '2s', timeout: '1s' }],
  });
  assert.deepEqual(registrationChecks(reg).map((c) => c.CheckID), ['a', 'b']);
  const one = decodeRegistration({ name: 'api', checks: [{ tcp: '127.0.0.1:80', interval: '1s' }] });
  assert.equal(one.check?.CheckID, 'service:api', 'one check keeps the unnumbered ID');
  assert.equal(one.moreChecks, undefined);
});

test('decodeRegistration: an Interval under 1s is raised to 1s, as Consul does', () => {
  const reg = decodeRegistration({ Name: 'a', Check: { HTTP: 'http://127.0.0.1/', Interval: '100ms' } });
  assert.equal(reg.check?.Type === 'http' ? reg.check.IntervalMs : 0, 1000);
});

test('decodeRegistration: a connect-proxy with Upstreams', () => {
  const reg = decodeRegistration({
    Name: 'web-proxy',
    Kind: 'connect-proxy',
    Port: 21000,
    Proxy: {
      DestinationServiceName: 'web',
      DestinationServiceID: 'web-1',
      LocalServiceAddress: '127.0.0.1',
      LocalServicePort: 8080,
      Upstreams: [
        { DestinationName: 'api', LocalBindPort: 9191 },
        { destination_name: 'db', destination_type: 'service', local_bind_address: '127.0.0.2', local_bind_port: 9191, datacenter: '', destination_namespace: 'default' },
        // The same service in another datacenter is another upstream, with its own gateway mode.
        { DestinationName: 'api', Datacenter: 'dc2', LocalBindPort: 9192, MeshGateway: { Mode: 'local' } },
      ],
      MeshGateway: { mode: 'remote' },
    },
  });
  assert.deepEqual(reg.service.Proxy, {
    DestinationServiceName: 'web',
    DestinationServiceID: 'web-1',
    LocalServiceAddress: '127.0.0.1',
    LocalServicePort: 8080,
    Upstreams: [
      { DestinationType: 'service', DestinationName: 'api', LocalBindAddress: '', LocalBindPort: 9191 },
      { DestinationType: 'service', DestinationName: 'db', LocalBindAddress: '127.0.0.2', LocalBindPort: 9191 },
      { DestinationType: 'service', DestinationName: 'api', LocalBindAddress: '', LocalBindPort: 9192, Datacenter: 'dc2', MeshGateway: { Mode: 'local' } },
    ],
    MeshGateway: { Mode: 'remote' },
  });
});

test('decodeRegistration: each invalid field is named', () => {
  const http = (extra: JsonObject): JsonObject => ({ Name: 'a', Check: { HTTP: 'http://127.0.0.1/', Interval: '1s', ...extra } });
  const proxy = (extra: JsonObject): JsonObject => ({ Name: 'p', Kind: 'connect-proxy', Proxy: { DestinationServiceName: 'web', ...extra } });
  const up = (u: JsonObject): JsonObject => proxy({ Upstreams: [u] });
  const cases: [JsonObject, string, RegExp][] = [
    [{ Name: 'a', Bogus: 1 }, 'Bogus', /unknown field/],
    [{ Name: 'a', Weights: { Passing: 1 } }, 'Weights', /not supported/],
    [{ Name: 'a', SocketPath: '/tmp/x' }, 'SocketPath', /not supported/],
    [{ Name: 'a', Namespace: 'team' }, 'Namespace', /must be "default"/],
    [{ Name: 'a', ID: 'a/b' }, 'ID', /"\/"/],
    [{ Name: 'a', EnableTagOverride: 'yes' }, 'EnableTagOverride', /true or false/],
    [{ Name: 'a', Checks: 'x' }, 'Checks[0]', /must be an object/],
    [{ Name: 'a', Checks: [{ TTL: '10s', Bogus: 1 }] }, 'Checks[0].Bogus', /unknown field/],
    [{ Name: 'a', Checks: [{ TTL: '10s' }, { TTL: '10s', CheckID: 'service:a:1' }] }, 'Checks[1]', /used twice/],
    [{ Name: 'a', Check: { Args: ['/bin/true'], Interval: '1s' } }, 'Check.Args', /script checks are not run/],
    [{ Name: 'a', Check: { GRPC: 'x:1', Interval: '1s' } }, 'Check.GRPC', /not supported/],
    [{ Name: 'a', Check: { TTL: '10s', HTTP: 'http://x/' } }, 'Check', /only one of/],
    [{ Name: 'a', Check: { TTL: '10s', Interval: '1s' } }, 'Check.Interval', /only valid with an HTTP or TCP check/],
    [{ Name: 'a', Check: { TCP: '127.0.0.1:1', Interval: '1s', Method: 'GET' } }, 'Check.Method', /only valid with an HTTP check/],
    [http({ Interval: undefined }), 'Check.Interval', /is required/],
    [http({ Interval: '0' }), 'Check.Interval', /greater than 0/],
    [http({ Interval: 'soon' }), 'Check.Interval', /invalid duration/],
    [http({ Timeout: 'x' }), 'Check.Timeout', /invalid duration/],
    [http({ HTTP: 'ftp://x/' }), 'Check.HTTP', /http:\/\/ or https:\/\//],
    [http({ HTTP: 'not a url' }), 'Check.HTTP', /http:\/\/ or https:\/\//],
    [http({ Method: 'GE T' }), 'Check.Method', /HTTP method/],
    [http({ Header: { 'Bad Name': ['x'] } }), 'Check.Header.Bad Name', /header name/],
    [http({ Header: { X: [1] } }), 'Check.Header.X', /list of strings/],
    [http({ Header: { X: ['a\r\nInjected: 1'] } }), 'Check.Header.X', /one line each/],
    [http({ TLSSkipVerify: 'true' }), 'Check.TLSSkipVerify', /true or false/],
    [http({ Status: 'ok' }), 'Check.Status', /passing, warning or critical/],
    [http({ DeregisterCriticalServiceAfter: '0' }), 'Check.DeregisterCriticalServiceAfter', /greater than 0/],
    [{ Name: 'a', Check: { TCP: 'localhost', Interval: '1s' } }, 'Check.TCP', /HOST:PORT/],
    [{ Name: 'a', Check: { TCP: '127.0.0.1:0', Interval: '1s' } }, 'Check.TCP', /HOST:PORT/],
    [{ Name: 'a', Check: { AliasService: 'a' } }, 'Check.AliasService', /cannot alias the service/],
    [{ Name: 'a', Check: { AliasNode: 'n1' } }, 'Check.AliasNode', /not supported/],
    [proxy({ Config: { protocol: 'http' } }), 'Proxy.Config', /service-defaults/],
    [proxy({ Mode: 'transparent' }), 'Proxy.Mode', /not supported/],
    [proxy({ Bogus: 1 }), 'Proxy.Bogus', /unknown field/],
    [proxy({ LocalServicePort: 70000 }), 'Proxy.LocalServicePort', /0\.\.65535/],
    [up({ LocalBindPort: 1 }), 'Proxy.Upstreams[0].DestinationName', /is required/],
    [up({ DestinationName: 'bad name', LocalBindPort: 1 }), 'Proxy.Upstreams[0].DestinationName', /not a valid service name/],
    [up({ DestinationName: 'api' }), 'Proxy.Upstreams[0].LocalBindPort', /is required/],
    [up({ DestinationName: 'api', LocalBindPort: 1, DestinationType: 'prepared_query' }), 'Proxy.Upstreams[0].DestinationType', /prepared queries/],
    [up({ DestinationName: 'api', LocalBindPort: 1, Datacenter: 'DC 2' }), 'Proxy.Upstreams[0].Datacenter', /not a valid datacenter name/],
    [up({ DestinationName: 'api', LocalBindPort: 1, MeshGateway: { Mode: 'sideways' } }), 'Proxy.Upstreams[0].MeshGateway.Mode', /"none", "local" or "remote"/],
    [up({ DestinationName: 'api', LocalBindPort: 1, MeshGateway: { Mode: 'local', Extra: 1 } }), 'Proxy.Upstreams[0].MeshGateway.Extra', /unknown field/],
    [proxy({ MeshGateway: { Mode: 'up' } }), 'Proxy.MeshGateway.Mode', /"none", "local" or "remote"/],
    [up({ DestinationName: 'api', LocalBindPort: 1, LocalBindSocketPath: '/x' }), 'Proxy.Upstreams[0].LocalBindSocketPath', /not supported/],
    [up({ DestinationName: 'api', LocalBindPort: 1, Config: {} }), 'Proxy.Upstreams[0].Config', /service-defaults/],
    [proxy({ Upstreams: [{ DestinationName: 'api', LocalBindPort: 1 }, { DestinationName: 'api', LocalBindPort: 2 }] }), 'Proxy.Upstreams[1].DestinationName', /listed twice/],
    [proxy({ Upstreams: [{ DestinationName: 'a', LocalBindPort: 1 }, { DestinationName: 'b', LocalBindPort: 1, LocalBindAddress: '127.0.0.1' }] }), 'Proxy.Upstreams[1].LocalBindPort', /already bound/],
    [{ Name: 'a', Connect: { Bogus: 1 } }, 'Connect.Bogus', /unknown field/],
    [{ Name: 'a', Connect: { Native: true } }, 'Connect.Native', /not supported/],
    [{ Name: 'a', Connect: { SidecarService: 'x' } }, 'Connect.SidecarService', /must be an object/],
    [{ Name: 'a', Connect: { SidecarService: { ID: 'x' } } }, 'Connect.SidecarService.ID', /always <service ID>-sidecar-proxy/],
    [{ Name: 'a', Connect: { SidecarService: { Kind: 'mesh-gateway' } } }, 'Connect.SidecarService.Kind', /connect-proxy/],
    [{ Name: 'a', Connect: { SidecarService: { Connect: {} } } }, 'Connect.SidecarService.Connect', /cannot have a sidecar/],
    [{ Name: 'a', Connect: { SidecarService: { Port: -1 } } }, 'Connect.SidecarService.Port', /0\.\.65535/],
    [{ Name: 'a', Connect: { SidecarService: { Name: 'bad name' } } }, 'Connect.SidecarService.Name', /1-128 characters/],
    [{ Name: 'a', Connect: { SidecarService: { Proxy: { Upstreams: [{ DestinationName: 'x' }] } } } }, 'Connect.SidecarService.Proxy.Upstreams[0].LocalBindPort', /is required/],
    [{ Name: 'a', Connect: { SidecarService: { Checks: [{ TCP: 'x', Interval: '1s' }] } } }, 'Connect.SidecarService.Checks[0].TCP', /HOST:PORT/],
    [{ Name: 'a', Connect: { SidecarService: { Weights: {} } } }, 'Connect.SidecarService.Weights', /not supported/],
    [{ ...proxy({}), Connect: { SidecarService: {} } }, 'Connect.SidecarService', /connect-proxy cannot have a sidecar/],
  ];
  for (const [body, field, pattern] of cases) {
    const clean = JSON.parse(JSON.stringify(body)) as JsonObject; // drops undefined values
    assert.throws(() => decodeRegistration(clean), fieldError(field, pattern), `${field} for ${JSON.stringify(clean)}`);
  }
});

test('Connect.SidecarService expands with Consul\'s defaults', () => {
  const reg = decodeRegistration({ Name: 'web', ID: 'web-1', Port: 8080, Address: '10.0.0.5', Tags: ['v1'], Meta: { version: '1' }, Connect: { SidecarService: {} } });
  const s = reg.sidecar;
  assert.ok(s !== undefined);
  assert.deepEqual(s.service, {
    ID: 'web-1-sidecar-proxy',
    Service: 'web-sidecar-proxy',
    Kind: 'connect-proxy',
    Address: '10.0.0.5',
    Port: 0,
    Tags: ['v1'],
    Meta: { version: '1' },
    Proxy: { DestinationServiceName: 'web', DestinationServiceID: 'web-1', LocalServiceAddress: '127.0.0.1', LocalServicePort: 8080 },
    LocallyRegisteredAsSidecar: true,
  });
  assert.equal(s.checks, null, 'no checks given: the defaults are made at registration');

  const own = decodeRegistration({
    Name: 'web',
    Port: 8080,
    Tags: ['v1'],
    Connect: {
      SidecarService: {
        Name: 'web-proxy',
        Port: 21500,
        Tags: ['sidecar'],
        Meta: { role: 'proxy' },
        Proxy: { LocalServicePort: 9090, Upstreams: [{ DestinationName: 'api', LocalBindPort: 9191 }] },
        Check: { TCP: '127.0.0.1:21500', Interval: '3s' },
      },
    },
  }).sidecar;
  assert.ok(own !== undefined);
  assert.equal(own.service.Service, 'web-proxy');
  assert.equal(own.service.Port, 21500);
  assert.deepEqual(own.service.Tags, ['sidecar'], 'its own tags replace the inherited ones');
  assert.deepEqual(own.service.Meta, { role: 'proxy' });
  assert.equal(own.service.Proxy?.LocalServicePort, 9090);
  assert.equal(own.service.Proxy?.LocalServiceAddress, '127.0.0.1');
  assert.deepEqual(own.service.Proxy?.Upstreams, [{ DestinationType: 'service', DestinationName: 'api', LocalBindAddress: '', LocalBindPort: 9191 }]);
  assert.deepEqual(own.checks?.map((c) => [c.CheckID, c.ServiceID, c.Type]), [['service:web-sidecar-proxy', 'web-sidecar-proxy', 'tcp']]);
});

test('Catalog: a sidecar_service registers <id>-sidecar-proxy with a port from 21000-21255 and the default checks', () => {
  const { catalog } = fresh();
  const ids = catalog.register(decodeRegistration({ Name: 'web', ID: 'web-1', Port: 8080, Check: { TTL: '1h', Status: 'passing' }, Connect: { SidecarService: {} } }));
  assert.deepEqual(ids, ['web-1', 'web-1-sidecar-proxy']);
  const sidecar = catalog.service('web-1-sidecar-proxy');
  assert.equal(sidecar?.Port, SIDECAR_MIN_PORT);
  const checks = catalog.checks().filter((c) => c.ServiceID === 'web-1-sidecar-proxy');
  assert.deepEqual(
    checks.map((c) => [c.CheckID, c.Name, c.Type]),
    [
      ['service:web-1-sidecar-proxy:1', 'Connect Sidecar Listening', 'tcp'],
      ['service:web-1-sidecar-proxy:2', 'Connect Sidecar Aliasing web-1', 'alias'],
    ],
  );
  const tcp = checks[0];
  assert.equal(tcp?.Type === 'tcp' ? `${tcp.TCP} every ${formatDuration(tcp.IntervalMs)}` : '', `127.0.0.1:${SIDECAR_MIN_PORT} every 10s`);
  assert.equal(statusOf(catalog, 'service:web-1-sidecar-proxy:2'), 'passing', 'the alias mirrors the passing TTL check at once');
  assert.deepEqual(catalog.probeChecks().map((c) => c.CheckID), ['service:web-1-sidecar-proxy:1']);

  // Ports: the next sidecar gets the next port; re-registering keeps the port.
  catalog.register(decodeRegistration({ Name: 'api', Port: 9090, Connect: { SidecarService: {} } }));
  assert.equal(catalog.service('api-sidecar-proxy')?.Port, SIDECAR_MIN_PORT + 1);
  catalog.register(decodeRegistration({ Name: 'web', ID: 'web-1', Port: 8080, Connect: { SidecarService: {} } }));
  assert.equal(catalog.service('web-1-sidecar-proxy')?.Port, SIDECAR_MIN_PORT);
  // A registration with an explicit port in the range blocks it.
  catalog.register(decodeRegistration({ Name: 'x', Port: SIDECAR_MIN_PORT + 2 }));
  catalog.register(decodeRegistration({ Name: 'db', Port: 5432, Connect: { SidecarService: {} } }));
  assert.equal(catalog.service('db-sidecar-proxy')?.Port, SIDECAR_MIN_PORT + 3);
});

test('Catalog: the sidecar port range can run out, and the error names the field', () => {
  const { catalog } = fresh();
  for (let p = SIDECAR_MIN_PORT; p <= SIDECAR_MAX_PORT; p++) catalog.register(decodeRegistration({ Name: `s${p}`, Port: p }));
  assert.throws(() => catalog.register(decodeRegistration({ Name: 'web', Port: 80, Connect: { SidecarService: {} } })), fieldError('Connect.SidecarService.Port', /no port is left/));
  assert.equal(catalog.service('web'), undefined, 'nothing was written');
});

test('Catalog: the alias check follows the parent; the sidecar leaves ?passing when the parent fails', () => {
  const { catalog } = fresh();
  catalog.register(
    decodeRegistration({
      Name: 'web',
      Port: 8080,
      Check: { CheckID: 'web-ttl', TTL: '1h', Status: 'passing' },
      Connect: { SidecarService: { Port: 21999, Checks: [{ CheckID: 'sc-ttl', TTL: '1h', Status: 'passing' }, { CheckID: 'sc-alias', AliasService: 'web' }] } },
    }),
  );
  assert.deepEqual(passingSidecars(catalog, 'web'), ['web-sidecar-proxy']);
  catalog.updateCheck('web-ttl', 'warning', 'slow');
  assert.equal(statusOf(catalog, 'sc-alias'), 'warning');
  assert.match(catalog.check('sc-alias')?.Output ?? '', /Not passing: .*warning/);
  assert.deepEqual(passingSidecars(catalog, 'web'), []);
  catalog.updateCheck('web-ttl', 'critical', 'down');
  assert.equal(statusOf(catalog, 'sc-alias'), 'critical');
  catalog.updateCheck('web-ttl', 'passing', '');
  assert.equal(statusOf(catalog, 'sc-alias'), 'passing');
  assert.deepEqual(passingSidecars(catalog, 'web'), ['web-sidecar-proxy']);
});

test('Catalog: an alias of an unregistered service is critical; aliases of aliases settle', () => {
  const { catalog } = fresh();
  catalog.register(decodeRegistration({ Name: 'a', Check: { CheckID: 'a-alias', AliasService: 'b' } }));
  assert.equal(statusOf(catalog, 'a-alias'), 'critical');
  assert.match(catalog.check('a-alias')?.Output ?? '', /not registered/);
  catalog.register(decodeRegistration({ Name: 'b', Check: { CheckID: 'b-alias', AliasService: 'c' } }));
  catalog.register(decodeRegistration({ Name: 'c' }));
  assert.equal(statusOf(catalog, 'b-alias'), 'passing', 'c has no checks: passing');
  assert.equal(statusOf(catalog, 'a-alias'), 'passing');
  catalog.deregister('c');
  assert.equal(statusOf(catalog, 'b-alias'), 'critical');
  assert.equal(statusOf(catalog, 'a-alias'), 'critical');
});

test('Catalog: deregistering a service removes the sidecar it registered; dropping sidecar_service does too', () => {
  const { catalog } = fresh();
  const def = { Name: 'web', Port: 8080, Connect: { SidecarService: {} } };
  catalog.register(decodeRegistration(def));
  assert.equal(catalog.deregister('web'), true);
  assert.deepEqual(catalog.services(), []);
  assert.deepEqual(catalog.checks(), []);

  catalog.register(decodeRegistration(def));
  catalog.register(decodeRegistration({ Name: 'web', Port: 8080 }));
  assert.deepEqual(catalog.services().map((s) => s.ID), ['web']);

  // A proxy registered on its own is not the service's to remove.
  catalog.register(decodeRegistration({ Name: 'web-sidecar-proxy', Kind: 'connect-proxy', Port: 21000, Proxy: { DestinationServiceName: 'web', DestinationServiceID: 'web' } }));
  catalog.deregister('web');
  assert.deepEqual(catalog.services().map((s) => s.ID), ['web-sidecar-proxy']);
});

test('Catalog: probe results are written on change; an unchanged re-registration keeps the status', () => {
  const { catalog, store } = fresh();
  const def = { Name: 'web', Check: { CheckID: 'h', HTTP: 'http://127.0.0.1:1/', Interval: '1s' } };
  catalog.register(decodeRegistration(def));
  assert.equal(catalog.setCheckResult('h', 'passing', 'HTTP GET: 200 OK Output: ok'), true);
  const idx = store.tableIndex(CHECKS);
  catalog.setCheckResult('h', 'passing', 'HTTP GET: 200 OK Output: ok');
  catalog.setCheckResult('h', 'passing', 'HTTP GET: 200 OK Output: ok (2)');
  assert.equal(store.tableIndex(CHECKS), idx, 'same status and a new output within 5m: no write');
  catalog.register(decodeRegistration(def));
  assert.equal(statusOf(catalog, 'h'), 'passing', 'an identical re-registration keeps the result');
  catalog.register(decodeRegistration({ ...def, Check: { ...def.Check, Interval: '2s' } }));
  assert.equal(statusOf(catalog, 'h'), 'critical', 'a changed probe starts over');
  assert.equal(catalog.setCheckResult('nope', 'passing', ''), false);
  catalog.register(decodeRegistration({ Name: 't', Check: { CheckID: 't', TTL: '10s' } }));
  assert.equal(catalog.setCheckResult('t', 'passing', ''), false, 'TTL checks are not probe results');
});

test('Catalog.reapCritical deregisters after DeregisterCriticalServiceAfter (at least 1m), sidecar included', () => {
  const { catalog, clock } = fresh();
  catalog.register(
    decodeRegistration({ Name: 'web', Port: 80, Check: { CheckID: 'h', HTTP: 'http://127.0.0.1:1/', Interval: '1s', DeregisterCriticalServiceAfter: '10s', Status: 'passing' }, Connect: { SidecarService: {} } }),
  );
  catalog.setCheckResult('h', 'critical', 'down');
  clock.now += 30_000;
  assert.deepEqual(catalog.reapCritical(), [], '10s is raised to Consul\'s 1m minimum');
  catalog.setCheckResult('h', 'passing', 'up');
  clock.now += 60_000;
  assert.deepEqual(catalog.reapCritical(), [], 'passing again: the critical time starts over');
  catalog.setCheckResult('h', 'critical', 'down again');
  clock.now += 59_999;
  assert.deepEqual(catalog.reapCritical(), []);
  clock.now += 1;
  assert.deepEqual(catalog.reapCritical(), ['web']);
  assert.deepEqual(catalog.services(), []);
});

test('agentServiceJson: Consul\'s AgentService shape with a content hash that follows changes', () => {
  const reg: Registration = decodeRegistration({ Name: 'web', Port: 80, Connect: { SidecarService: { Port: 21000, Proxy: { Upstreams: [{ DestinationName: 'api', LocalBindPort: 9191 }] } } } });
  const plain = agentServiceJson(reg.service, 'dc1');
  assert.equal('Kind' in plain, false, 'Kind is omitted for a typical service');
  assert.equal('Proxy' in plain, false);
  assert.match(plain.ContentHash as string, /^[0-9a-f]{16}$/);
  const sc = agentServiceJson(reg.sidecar?.service ?? reg.service, 'dc1');
  assert.equal(sc.Kind, 'connect-proxy');
  assert.deepEqual((sc.Proxy as { Upstreams: unknown[] }).Upstreams, [{ DestinationType: 'service', DestinationName: 'api', LocalBindAddress: '', LocalBindPort: 9191 }]);
  assert.notEqual(agentServiceJson({ ...reg.service, Port: 81 }, 'dc1').ContentHash, plain.ContentHash);
  assert.equal(agentServiceJson(reg.service, 'dc1').ContentHash, plain.ContentHash);
});

test('formatDuration writes Go durations', () => {
  assert.deepEqual([0, 500, 1000, 1500, 10_000, 90_000, 3_600_000].map(formatDuration), ['0s', '500ms', '1s', '1.5s', '10s', '1m30s', '1h0m0s']);
});

test('definition files: service blocks, a services list, or one bare definition, in HCL or JSON', async () => {
  const hcl = `
service {
  name = "web"
  id   = "web-1"
  port = 8080
  meta { version = "1" }
  check {
    id       = "web-http"
    http     = "http://127.0.0.1:8080/health"
    header   = { X-Probe = ["a"] }
    interval = "1s"
  }
  connect {
    sidecar_service {
      port = 21001
      proxy {
        upstreams = [{ destination_name = "api", local_bind_port = 9191 }]
        upstreams { destination_name = "db" local_bind_port = 9192 }
      }
    }
  }
}
services {
  name = "other"
}
`;
  const defs = definitionsFromDocument(await parseConfigText(hcl, 'web.hcl'), 'web.hcl');
  assert.deepEqual(defs.map((d) => [d.id, d.name]), [['web-1', 'web'], ['other', 'other']]);
  const web = decodeRegistration(defs[0]?.body ?? {});
  assert.equal(web.check?.Type, 'http');
  assert.deepEqual(web.service.Meta, { version: '1' });
  assert.deepEqual(web.sidecar?.service.Proxy?.Upstreams?.map((u) => u.DestinationName), ['api', 'db']);

  const json = JSON.stringify({ services: [{ Name: 'a' }, { Name: 'b', ID: 'b-1' }] });
  assert.deepEqual(definitionsFromDocument(await parseConfigText(json, 'x.json'), 'x.json').map((d) => d.id), ['a', 'b-1']);
  assert.deepEqual(definitionsFromDocument({ service: { name: 'one' } }, 'x').map((d) => d.id), ['one']);
  assert.deepEqual(definitionsFromDocument({ Name: 'bare', Port: 1 }, 'x').map((d) => d.id), ['bare']);
  const bareHcl = await parseConfigText('name = "bare"\nport = 80\n', 'bare.hcl');
  assert.deepEqual(definitionsFromDocument(bareHcl, 'bare.hcl').map((d) => d.name), ['bare']);
});

test('definition files: errors name the file, the service and the field', () => {
  const bad = (doc: unknown, pattern: RegExp): void =>
    assert.throws(() => definitionsFromDocument(doc, 'svc.hcl'), (e: unknown) => e instanceof ServicesFileError && pattern.test(e.message), JSON.stringify(doc));
  bad({ service: { name: 'web', check: { http: 'http://x/' } } }, /^svc\.hcl: service "web": Check\.Interval: is required/);
  bad({ services: [{ name: 'ok' }, { name: 'web', port: 'x' }] }, /^svc\.hcl: service "web": Port: must be a number/);
  bad({ service: { port: 1 } }, /^svc\.hcl: service #1: Name: is required/);
  bad({ service: { name: 'a' }, extra: 1 }, /^svc\.hcl: extra: unknown field/);
  bad({ services: [] }, /no service definitions/);
  bad({ services: ['x'] }, /service #1: must be an object/);
  bad(['x'], /expected an object/);
  bad({ Name: 'a', Bogus: true }, /service "a": Bogus: unknown field/);
});

test('store records keep ExpiresAt only meaningful for TTL checks', () => {
  const { catalog, store } = fresh();
  catalog.register(decodeRegistration({ Name: 'a', Checks: [{ CheckID: 't', TTL: '10s' }, { CheckID: 'h', TCP: '127.0.0.1:1', Interval: '1s' }] }));
  const rec = new Map(store.list<CheckRecord>(CHECKS).map((e) => [e.value.CheckID, e.value]));
  assert.equal(rec.get('t')?.ExpiresAt, 1_000_000 + 10_000);
  assert.equal(rec.get('h')?.ExpiresAt, 0);
});
