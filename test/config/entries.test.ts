// Config entries: normalisation, Consul's lenient decode rules (spellings, lone values for
// lists, HCL blocks), read-only fields echoed back from a GET, and the flattening to rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FieldError } from '../../src/control/decode.ts';
import { ConfigSyntaxError } from '../../src/config/hcl.ts';
import {
  decodeConfigEntry,
  decodeServiceDefaults,
  encodeConfigEntry,
  intentionRules,
  isHttpLike,
  parseConfigEntryKind,
  parseConfigEntryText,
  referencedJwtProviders,
  resolveUpstreamConfig,
  type ConfigEntry,
  type JwtProviderEntry,
  type ServiceDefaultsEntry,
  type ServiceIntentionsEntry,
} from '../../src/config/entries.ts';

function intentions(doc: Record<string, unknown>): ServiceIntentionsEntry {
  const e = decodeConfigEntry({ Kind: 'service-intentions', ...doc });
  assert.ok(e.kind === 'service-intentions');
  return e;
}

test('sources are re-sorted by precedence then name, and a given Precedence is recomputed', () => {
  const e = intentions({
    Name: 'db',
    Sources: [
      { Name: '*', Action: 'deny', Precedence: 99 },
      { Name: 'web', Action: 'allow', Precedence: 1 },
      { Name: 'api', Action: 'allow' },
    ],
  });
  assert.deepEqual(
    e.sources.map((s) => [s.name, s.precedence]),
    [['api', 9], ['web', 9], ['*', 8]],
  );
});

test('Kind, Type and methods are normalised; an empty JWT requirement is none', () => {
  const e = decodeConfigEntry({
    kind: 'Service-Intentions',
    Name: 'api',
    JWT: { Providers: [] },
    Sources: [{ Name: 'web', Type: '', Permissions: [{ Action: 'allow', HTTP: { Methods: ['get', 'Post'] } }] }],
  }) as ServiceIntentionsEntry;
  assert.equal(e.kind, 'service-intentions');
  assert.equal(e.jwt, null);
  const src = e.sources[0];
  assert.ok(src !== undefined && src.layer === 'l7');
  assert.equal(src.type, 'consul');
  assert.deepEqual(src.permissions[0]?.http.methods, ['GET', 'POST']);
});

test('CE tenancy and read-only fields a GET returns are accepted on a write', () => {
  const e = intentions({
    Name: 'db',
    Namespace: 'default',
    Partition: '',
    CreateIndex: 10,
    ModifyIndex: 12,
    Hash: 2 ** 64 - 1, // a uint64 that JSON cannot hold exactly
    Sources: [{ Name: 'web', Action: 'allow', Namespace: 'default', Peer: '', SamenessGroup: '', LegacyID: '', LegacyMeta: {}, LegacyCreateTime: null, Precedence: 9, Type: 'consul' }],
  });
  assert.equal(e.sources.length, 1);
});

test('a lone value stands for a one-element list (Consul weak decoding)', () => {
  const e = intentions({
    Name: 'api',
    Sources: { Name: 'web', Permissions: { Action: 'allow', HTTP: { Methods: 'get', Header: { Name: 'x-a', Present: true } } } },
  });
  const src = e.sources[0];
  assert.ok(src?.layer === 'l7');
  assert.deepEqual(src.permissions[0]?.http, { path: null, methods: ['GET'], headers: [{ name: 'x-a', matcher: { kind: 'present' }, invert: false, ignoreCase: false }] });
});

test('one-element lists stand for their element, as HCL1 blocks decode (Consul HookWeakDecodeFromSlice)', () => {
  const hclShaped = intentions({
    Name: ['api'],
    Meta: [{ team: 'x' }],
    Sources: [{ Name: 'web', Permissions: [{ Action: 'allow', HTTP: [{ PathPrefix: '/v1', Header: [{ Name: 'x-a', Exact: 'b' }] }], JWT: [] }] }],
  });
  const plain = intentions({
    Name: 'api',
    Meta: { team: 'x' },
    Sources: [{ Name: 'web', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/v1', Header: [{ Name: 'x-a', Exact: 'b' }] } }] }],
  });
  assert.deepEqual(hclShaped, plain);
});

test('a Meta key named __proto__ stays data and pollutes nothing', () => {
  const raw = JSON.parse('{"Kind":"service-intentions","Name":"db","Meta":{"__proto__":"x"},"Sources":[{"Name":"web","Action":"allow"}]}') as unknown;
  const e = decodeConfigEntry(raw) as ServiceIntentionsEntry;
  assert.ok(Object.hasOwn(e.meta, '__proto__'));
  assert.equal(Object.getPrototypeOf(e.meta), Object.prototype);
  const out = encodeConfigEntry(e, { createIndex: 1, modifyIndex: 1 });
  assert.ok(Object.hasOwn(out.Meta as object, '__proto__'));
  assert.equal(({} as Record<string, unknown>).x, undefined);
  assert.deepEqual(decodeConfigEntry(JSON.parse(JSON.stringify(out))), e);
});

test('a top-level __proto__ key is an unknown key, not a prototype', () => {
  const raw = JSON.parse('{"Kind":"service-intentions","Name":"db","__proto__":{"Sources":[]},"Sources":[{"Name":"web","Action":"allow"}]}') as unknown;
  assert.throws(() => decodeConfigEntry(raw), (e: unknown) => e instanceof FieldError && e.field === '__proto__');
});

test('RE2 patterns that would backtrack catastrophically in JS are accepted and checked in linear time', () => {
  const started = performance.now();
  const e = intentions({
    Name: 'api',
    Sources: [{ Name: 'web', Permissions: [{ Action: 'allow', HTTP: { PathRegex: '/(a+)+$', Header: [{ Name: 'x', Regex: '(x|x)*y' }] } }] }],
  });
  assert.equal(e.sources.length, 1);
  assert.ok(performance.now() - started < 1000);
});

test('HCL: repeated Sources blocks, nested HTTP and Header blocks, snake_case keys', async () => {
  const e = (await parseConfigEntryText(
    `
Kind = "service-intentions"
Name = "api"
Sources {
  Name = "web"
  Permissions {
    Action = "allow"
    HTTP {
      path_exact = "/healthz"
      Header {
        name = "x-debug"
        present = true
        invert = true
      }
    }
  }
}
Sources {
  Name   = "*"
  Action = "deny"
}
`,
    'api.hcl',
  )) as ServiceIntentionsEntry;
  assert.deepEqual(e.sources.map((s) => s.name), ['web', '*']);
  const web = e.sources[0];
  assert.ok(web?.layer === 'l7');
  assert.deepEqual(web.permissions[0]?.http, {
    path: { kind: 'exact', value: '/healthz' },
    methods: [],
    headers: [{ name: 'x-debug', matcher: { kind: 'present' }, invert: true, ignoreCase: false }],
  });
});

test('HCL: errors name the path inside blocks; syntax errors stay ConfigSyntaxError', async () => {
  await assert.rejects(
    parseConfigEntryText('Kind = "service-intentions"\nName = "api"\nSources { Name = "web"\nPermissions { Action = "allow"\nHTTP { PathPrefix = "v1" } } }', 'a.hcl'),
    (e: unknown) => e instanceof FieldError && e.field === 'Sources[0].Permissions[0].HTTP.PathPrefix' && e.message.endsWith(`doesn't start with '/': "v1"`),
  );
  await assert.rejects(
    parseConfigEntryText('Kind = "service-defaults"\nName = "api"\nmesh_gateway { mode = "local" port = 1 }', 'b.hcl'),
    (e: unknown) => e instanceof FieldError && e.field === 'MeshGateway.port' && e.message === 'MeshGateway.port: invalid config key "port"',
  );
  await assert.rejects(parseConfigEntryText('Kind = "service-intentions"\nSources {', 'c.hcl'), ConfigSyntaxError);
  await assert.rejects(parseConfigEntryText('{"Kind": ', 'd.json'), ConfigSyntaxError);
});

test('a per-kind decoder called directly refuses another kind', () => {
  assert.throws(
    () => decodeServiceDefaults({ Kind: 'jwt-provider', Name: 'okta' }),
    (e: unknown) => e instanceof FieldError && e.message === 'Kind: must be "service-defaults", got "jwt-provider"',
  );
});

test('parseConfigEntryKind accepts the three kinds in any case and names them otherwise', () => {
  assert.equal(parseConfigEntryKind('JWT-Provider'), 'jwt-provider');
  assert.throws(() => parseConfigEntryKind('mesh', 'kind'), (e: unknown) => e instanceof FieldError && e.field === 'kind' && /service-intentions, service-defaults, jwt-provider, service-router, service-splitter, service-resolver, ingress-gateway/.test(e.message));
});

test('service-defaults: tcp by default, protocol lower-cased, Consul GET output (Expose {}) accepted back', () => {
  const plain = decodeConfigEntry({ Kind: 'service-defaults', Name: 'db' }) as ServiceDefaultsEntry;
  assert.equal(plain.protocol, 'tcp');
  assert.equal(isHttpLike(plain.protocol), false);
  for (const p of ['HTTP', 'http2', 'gRPC']) {
    const e = decodeConfigEntry({ Kind: 'service-defaults', Name: 'api', Protocol: p }) as ServiceDefaultsEntry;
    assert.equal(e.protocol, p.toLowerCase());
    assert.ok(isHttpLike(e.protocol));
  }
  const full = decodeConfigEntry({
    Kind: 'service-defaults',
    Name: 'api',
    Protocol: 'http',
    Mode: 'transparent',
    TransparentProxy: { OutboundListenerPort: 15001, DialedDirectly: true },
    MutualTLSMode: 'strict',
    ExternalSNI: 'api.example.com',
    LocalConnectTimeoutMs: 2000,
    BalanceInboundConnections: 'exact_balance',
    Expose: {},
    UpstreamConfig: null,
    EnvoyExtensions: [],
  });
  const wire = encodeConfigEntry(full, { createIndex: 4, modifyIndex: 4 });
  assert.deepEqual(wire.Expose, {});
  assert.deepEqual(decodeConfigEntry(wire), full);
});

test('jwt-provider: Filename key set, wrapped base64, default clock skew, empty CacheConfig, HCL blocks', async () => {
  const byFile = decodeConfigEntry({ Kind: 'jwt-provider', Name: 'auth0', JSONWebKeySet: { Local: { Filename: '/etc/meshd/jwks.json' } }, ClockSkewSeconds: 0, CacheConfig: {} }) as JwtProviderEntry;
  assert.deepEqual(byFile.jsonWebKeySet, { kind: 'file', filename: '/etc/meshd/jwks.json' });
  assert.equal(byFile.clockSkewSeconds, 30);
  assert.deepEqual(byFile.cacheConfig, { size: 0 });
  assert.deepEqual(decodeConfigEntry(encodeConfigEntry(byFile, { createIndex: 1, modifyIndex: 1 })), byFile);

  const b64 = Buffer.from(JSON.stringify({ keys: [{ kty: 'OKP', crv: 'Ed25519', x: 'AAAA' }, { kty: 'RSA', n: 'AQAB', e: 'AQAB' }] })).toString('base64');
  const wrapped = b64.replace(/(.{20})/g, '$1\n');
  const e = (await parseConfigEntryText(
    `
Kind = "jwt-provider"
Name = "okta"
ClockSkewSeconds = 5
JSONWebKeySet {
  Local {
    JWKS = ${JSON.stringify(wrapped)}
  }
}
Locations {
  Header {
    Name = "x-token"
  }
}
Forwarding {
  header_name = "x-claims"
  pad_forward_payload_header = true
}
`,
    'okta.hcl',
  )) as JwtProviderEntry;
  assert.equal(e.jsonWebKeySet.kind, 'inline');
  assert.deepEqual(e.jsonWebKeySet.kind === 'inline' && e.jsonWebKeySet.keys.map((k) => k.kty), ['OKP', 'RSA']);
  assert.deepEqual(e.locations, [{ kind: 'header', name: 'x-token', valuePrefix: '', forward: false }]);
  assert.deepEqual(e.forwarding, { headerName: 'x-claims', padForwardPayloadHeader: true });
  assert.equal(e.clockSkewSeconds, 5);
});

test('intentionRules flattens every intentions entry in evaluation order, L7 as l7, other kinds skipped', () => {
  const entries: ConfigEntry[] = [
    intentions({ Name: '*', Sources: [{ Name: '*', Action: 'deny' }, { Name: 'prometheus', Action: 'allow' }] }),
    decodeConfigEntry({ Kind: 'service-defaults', Name: 'api', Protocol: 'http' }),
    intentions({ Name: 'api', Sources: [{ Name: 'web', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/' } }] }, { Name: '*', Action: 'deny' }, { Name: 'admin', Action: 'allow' }] }),
    intentions({ Name: 'db', Sources: [{ Name: 'api', Action: 'allow' }] }),
  ];
  assert.deepEqual(intentionRules(entries), [
    { source: 'admin', destination: 'api', action: 'allow' },
    { source: 'api', destination: 'db', action: 'allow' },
    { source: 'web', destination: 'api', action: 'l7' },
    { source: '*', destination: 'api', action: 'deny' },
    { source: 'prometheus', destination: '*', action: 'allow' },
    { source: '*', destination: '*', action: 'deny' },
  ]);
  assert.deepEqual(intentionRules([]), []);
});

test('referencedJwtProviders lists entry- and permission-level providers once each', () => {
  const e = intentions({
    Name: 'api',
    JWT: { Providers: [{ Name: 'okta' }] },
    Sources: [
      { Name: 'web', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/a' }, JWT: { Providers: [{ Name: 'auth0' }, { Name: 'okta' }] } }] },
      { Name: 'db', Action: 'deny' },
    ],
  });
  assert.deepEqual(referencedJwtProviders(e), ['auth0', 'okta']);
});

test('service-defaults UpstreamConfig (Consul docs example): HCL and JSON alike, durations as strings or nanoseconds, round trip', async () => {
  const hcl = `
Kind     = "service-defaults"
Name     = "web"
Protocol = "http"
UpstreamConfig {
  Defaults {
    ConnectTimeoutMs = 5000
    Limits {
      MaxConnections        = 512
      MaxPendingRequests    = 512
      MaxConcurrentRequests = 512
    }
  }
  Overrides = [
    {
      Name     = "api"
      Protocol = "HTTP2"
      PassiveHealthCheck {
        Interval                = "10s"
        MaxFailures             = 3
        EnforcingConsecutive5xx = 0
        MaxEjectionPercent      = 50
        BaseEjectionTime        = "1m"
      }
    },
    {
      name               = "db"
      connect_timeout_ms = 1500
      limits { max_connections = 0 }
    },
  ]
}
`;
  const json = {
    Kind: 'service-defaults',
    Name: 'web',
    Protocol: 'http',
    UpstreamConfig: {
      Defaults: { ConnectTimeoutMs: 5000, Limits: { MaxConnections: 512, MaxPendingRequests: 512, MaxConcurrentRequests: 512 } },
      Overrides: [
        // Consul's GET writes these durations as nanoseconds.
        { Name: 'api', Protocol: 'http2', PassiveHealthCheck: { Interval: 10_000_000_000, MaxFailures: 3, EnforcingConsecutive5xx: 0, MaxEjectionPercent: 50, BaseEjectionTime: 60_000_000_000 } },
        { Name: 'db', ConnectTimeoutMs: 1500, Limits: { MaxConnections: 0 } },
      ],
    },
  };
  const a = (await parseConfigEntryText(hcl, 'sd.hcl')) as ServiceDefaultsEntry;
  const b = (await parseConfigEntryText(JSON.stringify(json), 'sd.json')) as ServiceDefaultsEntry;
  assert.deepEqual(a, b);
  assert.deepEqual(a.upstreamConfig, {
    defaults: { protocol: '', connectTimeoutMs: 5000, limits: { maxConnections: 512, maxPendingRequests: 512, maxConcurrentRequests: 512 }, passiveHealthCheck: null },
    overrides: [
      {
        name: 'api',
        protocol: 'http2',
        connectTimeoutMs: 0,
        limits: null,
        passiveHealthCheck: { intervalMs: 10_000, maxFailures: 3, enforcingConsecutive5xx: 0, maxEjectionPercent: 50, baseEjectionTimeMs: 60_000 },
      },
      { name: 'db', protocol: '', connectTimeoutMs: 1500, limits: { maxConnections: 0, maxPendingRequests: null, maxConcurrentRequests: null }, passiveHealthCheck: null },
    ],
  });
  const wire = encodeConfigEntry(a, { createIndex: 2, modifyIndex: 2 });
  assert.deepEqual(wire.UpstreamConfig, json.UpstreamConfig);
  assert.deepEqual(decodeConfigEntry(wire), a);
});

test('resolveUpstreamConfig: the override naming the upstream is laid over Defaults field by field', () => {
  const e = decodeConfigEntry({
    Kind: 'service-defaults',
    Name: 'web',
    UpstreamConfig: {
      Defaults: { Protocol: 'http', ConnectTimeoutMs: 2000, Limits: { MaxConnections: 10 }, PassiveHealthCheck: { MaxFailures: 7 } },
      Overrides: [{ Name: 'api', ConnectTimeoutMs: 500, PassiveHealthCheck: { Interval: '1s' } }, { Name: 'solo' }],
    },
  }) as ServiceDefaultsEntry;
  const uc = e.upstreamConfig;
  assert.deepEqual(resolveUpstreamConfig(uc, 'api'), {
    protocol: 'http',
    connectTimeoutMs: 500,
    limits: { maxConnections: 10, maxPendingRequests: null, maxConcurrentRequests: null },
    passiveHealthCheck: { intervalMs: 1000, maxFailures: 0, enforcingConsecutive5xx: null, maxEjectionPercent: null, baseEjectionTimeMs: null },
  });
  assert.deepEqual(resolveUpstreamConfig(uc, 'other'), uc?.defaults);
  assert.equal(resolveUpstreamConfig(null, 'api'), null);
  const onlyOverrides = decodeConfigEntry({ Kind: 'service-defaults', Name: 'web', UpstreamConfig: { Overrides: [{ Name: 'api', Protocol: 'grpc' }] } }) as ServiceDefaultsEntry;
  assert.equal(resolveUpstreamConfig(onlyOverrides.upstreamConfig, 'api')?.protocol, 'grpc');
  assert.equal(resolveUpstreamConfig(onlyOverrides.upstreamConfig, 'db'), null);
  // An empty UpstreamConfig is no UpstreamConfig.
  assert.equal((decodeConfigEntry({ Kind: 'service-defaults', Name: 'web', UpstreamConfig: {} }) as ServiceDefaultsEntry).upstreamConfig, null);
});
