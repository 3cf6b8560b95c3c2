// ingress-gateway: Consul's documented shapes (HCL and JSON twins decode alike, encode ->
// decode round trips), Consul's API JSON, and one invalid entry per validation rule, each
// FieldError naming the field and saying the rule in Consul's words where it has them.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { decodeConfigEntry, encodeConfigEntry, ingressListenerTls, ingressServiceNames, type IngressGatewayEntry } from '../../src/config/entries.ts';
import { decodePair, rejectsEach } from './pair.ts';

function pair(hcl: string, json: unknown): Promise<IngressGatewayEntry> {
  return decodePair<IngressGatewayEntry>('ingress-gateway', hcl, json);
}

const NONE = { add: {}, set: {}, remove: [] };

test('docs: a tcp listener and an http listener with hosts, a wildcard and header modifiers (HCL blocks and lists)', async () => {
  const e = await pair(
    `
Kind = "ingress-gateway"
Name = "us-east-ingress"
Meta {
  team = "edge"
}
TLS {
  Enabled = false
}
Listeners = [
  {
    Port     = 3456
    Protocol = "tcp"
    Services = [
      {
        Name = "db"
      }
    ]
  },
  {
    Port     = 8080
    Protocol = "HTTP"
    Services = [
      {
        Name  = "api"
        Hosts = ["api.example.com", "*.api.example.com:8443"]
        RequestHeaders {
          Set {
            x-from-ingress = "1"
          }
          Remove = ["x-debug"]
        }
        ResponseHeaders {
          Add {
            x-served-by = "ingress"
          }
        }
      },
      {
        Name = "*"
      }
    ]
  }
]
`,
    {
      Kind: 'ingress-gateway',
      Name: 'us-east-ingress',
      Meta: { team: 'edge' },
      TLS: { Enabled: false },
      Listeners: [
        { Port: 3456, Protocol: 'tcp', Services: [{ Name: 'db' }] },
        {
          Port: 8080,
          Protocol: 'HTTP',
          Services: [
            {
              Name: 'api',
              Hosts: ['api.example.com', '*.api.example.com:8443'],
              RequestHeaders: { Set: { 'x-from-ingress': '1' }, Remove: ['x-debug'] },
              ResponseHeaders: { Add: { 'x-served-by': 'ingress' } },
            },
            { Name: '*' },
          ],
        },
      ],
    },
  );
  assert.deepEqual(e, {
    kind: 'ingress-gateway',
    name: 'us-east-ingress',
    meta: { team: 'edge' },
    listeners: [
      { port: 3456, protocol: 'tcp', services: [{ name: 'db', hosts: [], requestHeaders: NONE, responseHeaders: NONE, meta: {} }] },
      {
        port: 8080,
        protocol: 'http',
        services: [
          {
            name: 'api',
            hosts: ['api.example.com', '*.api.example.com:8443'],
            requestHeaders: { add: {}, set: { 'x-from-ingress': '1' }, remove: ['x-debug'] },
            responseHeaders: { add: { 'x-served-by': 'ingress' }, set: {}, remove: [] },
            meta: {},
          },
          { name: '*', hosts: [], requestHeaders: NONE, responseHeaders: NONE, meta: {} },
        ],
      },
    ],
  });
  assert.deepEqual(ingressServiceNames(e), ['api', 'db']);
  // Consul's API JSON: TLS always present, Hosts null when none, omitempty elsewhere.
  assert.deepEqual(encodeConfigEntry(e, { createIndex: 5, modifyIndex: 6 }), {
    Kind: 'ingress-gateway',
    Name: 'us-east-ingress',
    TLS: { Enabled: false },
    Listeners: [
      { Port: 3456, Protocol: 'tcp', Services: [{ Name: 'db', Hosts: null }] },
      {
        Port: 8080,
        Protocol: 'http',
        Services: [
          {
            Name: 'api',
            Hosts: ['api.example.com', '*.api.example.com:8443'],
            RequestHeaders: { Set: { 'x-from-ingress': '1' }, Remove: ['x-debug'] },
            ResponseHeaders: { Add: { 'x-served-by': 'ingress' } },
          },
          { Name: '*', Hosts: null },
        ],
      },
    ],
    Meta: { team: 'edge' },
    CreateIndex: 5,
    ModifyIndex: 6,
  });
});

test('snake_case keys, repeated HCL blocks, Protocol defaulting to tcp, "*" host, no listeners at all', async () => {
  const e = await pair(
    `
kind = "ingress-gateway"
name = "edge"
listeners {
  port = 9000
  services {
    name = "billing"
  }
}
listeners {
  port     = 9001
  protocol = "http"
  services {
    name  = "web"
    hosts = ["*"]
  }
  services {
    name = "admin"
  }
}
`,
    {
      kind: 'ingress-gateway',
      name: 'edge',
      listeners: [
        { port: 9000, services: [{ name: 'billing' }] },
        { port: 9001, protocol: 'http', services: [{ name: 'web', hosts: ['*'] }, { name: 'admin' }] },
      ],
    },
  );
  assert.deepEqual(
    e.listeners.map((l) => [l.port, l.protocol, l.services.map((s) => [s.name, s.hosts])]),
    [
      [9000, 'tcp', [['billing', []]]],
      [9001, 'http', [['web', ['*']], ['admin', []]]],
    ],
  );
  const empty = await pair('Kind = "ingress-gateway"\nName = "idle"\n', { Kind: 'ingress-gateway', Name: 'idle' });
  assert.deepEqual(empty.listeners, []);
});

test('a GET body (indexes, TLS false, null Hosts) decodes back to the same entry', () => {
  const body = { Kind: 'ingress-gateway', Name: 'gw', TLS: { Enabled: false }, Listeners: [{ Port: 0, Protocol: 'http', Services: [{ Name: 'web', Hosts: null }] }], CreateIndex: 3, ModifyIndex: 9, Hash: 1234 };
  const e = decodeConfigEntry(body) as IngressGatewayEntry;
  assert.equal(e.listeners[0]?.port, 0);
  assert.deepEqual(decodeConfigEntry(encodeConfigEntry(e, { createIndex: 3, modifyIndex: 9 })), e);
});

const BASE = {
  Kind: 'ingress-gateway',
  Name: 'gw',
  Listeners: [
    { Port: 8080, Protocol: 'http', Services: [{ Name: 'web', Hosts: ['web.example.com'] }, { Name: 'api' }] },
    { Port: 9000, Protocol: 'tcp', Services: [{ Name: 'db' }] },
  ],
};

type Doc = Record<string, unknown>;

/** A copy of BASE with `edit` applied to it. */
function with_(edit: (d: { Listeners: Doc[] } & Doc) => void): Doc {
  const d = structuredClone(BASE) as unknown as { Listeners: Doc[] } & Doc;
  edit(d);
  return d;
}

const http = (d: { Listeners: Doc[] }): Doc => d.Listeners[0] as Doc;
const tcp = (d: { Listeners: Doc[] }): Doc => d.Listeners[1] as Doc;
const svc = (l: Doc, i: number): Doc => (l.Services as Doc[])[i] as Doc;

const CASES: [string, Doc, string, string | RegExp][] = [
  ['no Name', with_((d) => delete d.Name), 'Name', 'is required'],
  ['wildcard Name', with_((d) => (d.Name = '*')), 'Name', /is not a valid service name/],
  ['duplicate port', with_((d) => (tcp(d).Port = 8080)), 'Listeners[1].Port', 'port 8080 declared on two listeners'],
  ['port out of range', with_((d) => (tcp(d).Port = 70000)), 'Listeners[1].Port', 'must be between 0 and 65535, got 70000'],
  ['unknown protocol', with_((d) => (tcp(d).Protocol = 'udp')), 'Listeners[1].Protocol', "protocol must be 'tcp', 'http', 'http2', or 'grpc'. 'udp' is an unsupported protocol"],
  ['http2 listener', with_((d) => (http(d).Protocol = 'http2')), 'Listeners[0].Protocol', /not supported by meshd yet/],
  ['no services', with_((d) => (tcp(d).Services = [])), 'Listeners[1].Services', 'No service declared for listener with port 9000'],
  ['two services on tcp', with_((d) => ((tcp(d).Services as Doc[]).push({ Name: 'cache' }))), 'Listeners[1].Services', "Multiple services per listener are only supported for protocol = 'http' (listener on port 9000)"],
  ['wildcard on tcp', with_((d) => (svc(tcp(d), 0).Name = '*')), 'Listeners[1].Services[0].Name', "Wildcard service name is only valid for protocol = 'http' (listener on port 9000)"],
  ['hosts on tcp', with_((d) => (svc(tcp(d), 0).Hosts = ['db.example.com'])), 'Listeners[1].Services[0].Hosts', 'Associating hosts to a service is not supported for the tcp protocol (listener on port 9000)'],
  ['hosts on a wildcard', with_((d) => Object.assign(svc(http(d), 1), { Name: '*', Hosts: ['x.example.com'] })), 'Listeners[0].Services[1].Hosts', 'Associating hosts to a wildcard service is not supported (listener on port 8080)'],
  ['blank service name', with_((d) => (svc(http(d), 1).Name = '')), 'Listeners[0].Services[1].Name', 'Service name cannot be blank (listener on port 8080)'],
  ['invalid service name', with_((d) => (svc(http(d), 1).Name = 'my api')), 'Listeners[0].Services[1].Name', /"my api" is not a valid service name/],
  ['same service twice', with_((d) => (svc(http(d), 1).Name = 'web')), 'Listeners[0].Services[1].Name', 'Service web cannot be added multiple times (listener on port 8080)'],
  ['duplicate host (case-insensitive)', with_((d) => (svc(http(d), 1).Hosts = ['WEB.example.com'])), 'Listeners[0].Services[1].Hosts[0]', 'Hosts must be unique within a specific listener (listener on port 8080)'],
  ['wildcard not leftmost', with_((d) => (svc(http(d), 1).Hosts = ['api.*.com'])), 'Listeners[0].Services[1].Hosts[0]', 'Host "api.*.com" is not valid, a wildcard specifier is only allowed as the leftmost label'],
  ['suffix wildcard', with_((d) => (svc(http(d), 1).Hosts = ['api.ingress.*'])), 'Listeners[0].Services[1].Hosts[0]', 'Host "api.ingress.*" is not valid, a wildcard specifier is only allowed as the leftmost label'],
  ['not a DNS name', with_((d) => (svc(http(d), 1).Hosts = ['api example'])), 'Listeners[0].Services[1].Hosts[0]', 'Host "api example" must be a valid DNS hostname'],
  ['bad host port', with_((d) => (svc(http(d), 1).Hosts = ['api.example.com:99999'])), 'Listeners[0].Services[1].Hosts[0]', 'Host "api.example.com:99999" must be a valid DNS hostname'],
  ['header modifiers on tcp', with_((d) => (svc(tcp(d), 0).RequestHeaders = { Set: { a: 'b' } })), 'Listeners[1].Services[0].RequestHeaders', 'header modifiers are only valid on http listeners (service "db" on listener on port 9000)'],
  ['bad modified header', with_((d) => (svc(http(d), 0).ResponseHeaders = { Set: { 'bad header': 'b' } })), 'Listeners[0].Services[0].ResponseHeaders.Set.bad header', /is not a valid HTTP header name/],
  // TLS: what meshd does not do is refused, naming the field.
  ['gateway TLS with a tcp listener', with_((d) => (d.TLS = { Enabled: true })), 'TLS.Enabled', /TLS on a tcp listener is not supported by meshd yet, and the gateway-wide TLS applies to every listener, listener on port 9000 \(Listeners\[1\]\) included/],
  ['gateway TLS with a tcp listener that says Enabled = false (Consul or-s them)', with_((d) => ((d.TLS = { Enabled: true }), (tcp(d).TLS = { Enabled: false }))), 'TLS.Enabled', /TLS on a tcp listener is not supported/],
  ['tcp listener TLS enabled', with_((d) => (tcp(d).TLS = { Enabled: true })), 'Listeners[1].TLS.Enabled', /^TLS on a tcp listener is not supported by meshd yet \(listener on port 9000\): it terminates TLS on http listeners only/],
  ['TLS SDS', with_((d) => (d.TLS = { SDS: { ClusterName: 'sds', CertResource: 'c' } })), 'TLS.SDS', /is not supported by meshd: give the gateway its certificate with -tls-cert-file and -tls-key-file/],
  ['listener TLS SDS', with_((d) => (http(d).TLS = { Enabled: true, SDS: { ClusterName: 'sds', CertResource: 'c' } })), 'Listeners[0].TLS.SDS', /is not supported by meshd/],
  ['TLSMaxVersion', with_((d) => (http(d).TLS = { Enabled: true, TLSMaxVersion: 'TLSv1_2' })), 'Listeners[0].TLS.TLSMaxVersion', /is not supported by meshd: its ingress listeners offer TLS up to TLSv1_3/],
  ['CipherSuites', with_((d) => (d.TLS = { CipherSuites: ['TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256'] })), 'TLS.CipherSuites', /is not supported by meshd/],
  ['TLSMinVersion TLSv1_1', with_((d) => (http(d).TLS = { Enabled: true, TLSMinVersion: 'TLSv1_1' })), 'Listeners[0].TLS.TLSMinVersion', 'TLSv1_1 is not supported by meshd: its ingress listeners speak TLSv1_2 or TLSv1_3'],
  ['TLSMinVersion misspelt', with_((d) => (d.TLS = { TLSMinVersion: 'TLS1.3' })), 'TLS.TLSMinVersion', '"TLS1.3" is not a valid TLS version: give TLSv1_2 or TLSv1_3'],
  ['TLS Enabled not a bool', with_((d) => (http(d).TLS = { Enabled: 'yes' })), 'Listeners[0].TLS.Enabled', /must be true or false/],
  ['unknown TLS key', with_((d) => (d.TLS = { Enabled: false, Certificate: 'x' })), 'TLS.Certificate', 'invalid config key "Certificate"'],
  ['service TLS SDS', with_((d) => (svc(http(d), 0).TLS = { SDS: { CertResource: 'c' } })), 'Listeners[0].Services[0].TLS.SDS', /per-service certificates \(SDS\) are not supported by meshd/],
  ['Defaults', with_((d) => (d.Defaults = { MaxConnections: 10 })), 'Defaults.MaxConnections', /not supported on an ingress gateway by meshd yet: set it in the UpstreamConfig/],
  ['service MaxPendingRequests', with_((d) => (svc(http(d), 0).MaxPendingRequests = 5)), 'Listeners[0].Services[0].MaxPendingRequests', /not supported on an ingress service/],
  ['service PassiveHealthCheck', with_((d) => (svc(http(d), 0).PassiveHealthCheck = { MaxFailures: 3 })), 'Listeners[0].Services[0].PassiveHealthCheck', /not supported on an ingress service/],
  ['service namespace', with_((d) => (svc(http(d), 0).Namespace = 'team-a')), 'Listeners[0].Services[0].Namespace', /^namespaces are a Consul Enterprise feature/],
  ['unknown listener key', with_((d) => (http(d).Header = 'x')), 'Listeners[0].Header', 'invalid config key "Header"'],
  ['Services not a list of objects', with_((d) => (http(d).Services = ['web'])), 'Listeners[0].Services[0]', 'must be an object, got string "web"'],
];

test('the valid base decodes', () => {
  decodeConfigEntry(BASE);
});

rejectsEach(CASES);

test('TLS: the entry default and listener overrides (HCL and JSON alike), Consul API JSON back', async () => {
  const e = await pair(
    `
Kind = "ingress-gateway"
Name = "edge"
TLS {
  Enabled       = true
  TLSMinVersion = "TLSv1_2"
}
Listeners = [
  {
    Port     = 8443
    Protocol = "http"
    Services = [{ Name = "api", Hosts = ["api.example.com"] }]
  },
  {
    Port     = 9443
    Protocol = "http"
    TLS {
      TLSMinVersion = "TLSv1_3"
    }
    Services = [{ Name = "web" }]
  },
]
`,
    {
      Kind: 'ingress-gateway',
      Name: 'edge',
      TLS: { Enabled: true, TLSMinVersion: 'TLSv1_2' },
      Listeners: [
        { Port: 8443, Protocol: 'http', Services: [{ Name: 'api', Hosts: ['api.example.com'] }] },
        { Port: 9443, Protocol: 'http', TLS: { TLSMinVersion: 'TLSv1_3' }, Services: [{ Name: 'web' }] },
      ],
    },
  );
  assert.deepEqual(e.tls, { enabled: true, minVersion: 'TLSv1_2' });
  assert.equal(e.listeners[0]?.tls, undefined);
  assert.deepEqual(e.listeners[1]?.tls, { enabled: false, minVersion: 'TLSv1_3' });
  // The entry's TLS is every listener's; a listener's version replaces the entry's.
  assert.deepEqual(e.listeners.map((l) => ingressListenerTls(e, l)), [{ minVersion: 'TLSv1.2' }, { minVersion: 'TLSv1.3' }]);
  const json = encodeConfigEntry(e, { createIndex: 1, modifyIndex: 2 }) as { TLS: unknown; Listeners: Record<string, unknown>[] };
  assert.deepEqual(json.TLS, { Enabled: true, TLSMinVersion: 'TLSv1_2' });
  assert.equal('TLS' in (json.Listeners[0] as object), false, 'a listener without a TLS block has none in the JSON (omitempty)');
  assert.deepEqual(json.Listeners[1]?.TLS, { Enabled: false, TLSMinVersion: 'TLSv1_3' });
});

test('TLS on one listener only: that listener terminates TLS (TLS 1.3 by default), the tcp one stays plain', async () => {
  const e = await pair(
    `
Kind = "ingress-gateway"
Name = "edge"
Listeners = [
  { Port = 8443, Protocol = "http", TLS { Enabled = true }, Services = [{ Name = "api" }] },
  { Port = 8080, Protocol = "http", Services = [{ Name = "api" }] },
  { Port = 5432, Protocol = "tcp", TLS { Enabled = false }, Services = [{ Name = "db" }] },
]
`,
    {
      Kind: 'ingress-gateway',
      Name: 'edge',
      Listeners: [
        { Port: 8443, Protocol: 'http', TLS: { Enabled: true }, Services: [{ Name: 'api' }] },
        { Port: 8080, Protocol: 'http', Services: [{ Name: 'api' }] },
        { Port: 5432, Protocol: 'tcp', TLS: { Enabled: false }, Services: [{ Name: 'db' }] },
      ],
    },
  );
  assert.equal(e.tls, undefined);
  assert.deepEqual(e.listeners.map((l) => ingressListenerTls(e, l)), [{ minVersion: 'TLSv1.3' }, null, null]);
  const json = encodeConfigEntry(e, { createIndex: 1, modifyIndex: 2 }) as { TLS: unknown; Listeners: Record<string, unknown>[] };
  assert.deepEqual(json.TLS, { Enabled: false });
  assert.deepEqual(json.Listeners.map((l) => l.TLS), [{ Enabled: true }, undefined, { Enabled: false }]);
  // snake_case and TLS_AUTO (Consul's "the default") are taken too.
  const snake = decodeConfigEntry({ kind: 'ingress-gateway', name: 'e', tls: { enabled: true, tls_min_version: 'TLS_AUTO' }, listeners: [{ port: 1, protocol: 'http', services: [{ name: 'a' }] }] }) as IngressGatewayEntry;
  assert.deepEqual(ingressListenerTls(snake, snake.listeners[0] as IngressGatewayEntry['listeners'][number]), { minVersion: 'TLSv1.3' });
});

test('property: any TLS blocks on the entry and an http listener round trip, and merge as Consul does', () => {
  const version = fc.constantFrom('', 'TLS_AUTO', 'TLSv1_2', 'TLSv1_3');
  const block = fc.option(fc.record({ Enabled: fc.boolean(), TLSMinVersion: version }, { requiredKeys: [] }), { nil: undefined });
  fc.assert(
    fc.property(block, block, (gw, ls) => {
      const doc = { Kind: 'ingress-gateway', Name: 'g', ...(gw === undefined ? {} : { TLS: gw }), Listeners: [{ Port: 1, Protocol: 'http', ...(ls === undefined ? {} : { TLS: ls }), Services: [{ Name: 'a' }] }] };
      const e = decodeConfigEntry(doc) as IngressGatewayEntry;
      assert.deepEqual(decodeConfigEntry(encodeConfigEntry(e, { createIndex: 1, modifyIndex: 1 })), e);
      const l = e.listeners[0] as IngressGatewayEntry['listeners'][number];
      const enabled = gw?.Enabled === true || ls?.Enabled === true;
      const own = ls?.TLSMinVersion ?? '';
      const v = own !== '' ? own : (gw?.TLSMinVersion ?? '');
      assert.deepEqual(ingressListenerTls(e, l), enabled ? { minVersion: v === 'TLSv1_2' ? 'TLSv1.2' : 'TLSv1.3' } : null);
    }),
    { numRuns: 300 },
  );
});
