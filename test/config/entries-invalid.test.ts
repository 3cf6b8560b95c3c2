// One invalid entry per rule: each is a valid entry with one thing broken, and the FieldError
// must name the field (canonical path) and say the rule (Consul's wording where it has one).
import { test } from 'node:test';
import { decodeConfigEntry } from '../../src/config/entries.ts';
import { rejectsEach } from './pair.ts';

type Doc = Record<string, unknown>;

const INTENTIONS: Doc = {
  Kind: 'service-intentions',
  Name: 'api',
  Sources: [
    { Name: 'web', Action: 'allow' },
    { Name: 'admin', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/v2', Methods: ['GET'], Header: [{ Name: 'x-tenant', Exact: 'a' }] } }] },
  ],
};

const DEFAULTS: Doc = { Kind: 'service-defaults', Name: 'api', Protocol: 'http' };

const JWKS = Buffer.from(JSON.stringify({ keys: [{ kty: 'EC', crv: 'P-256', x: 'AA', y: 'AA' }] })).toString('base64');
const PROVIDER: Doc = {
  Kind: 'jwt-provider',
  Name: 'okta',
  Issuer: 'https://example.okta.com',
  JSONWebKeySet: { Local: { JWKS } },
};

/**
 * A deep copy of `base` with the value at `path` (such as `Sources[1].Permissions[0].HTTP`)
 * set to `value`, or deleted when `value` is undefined. Missing containers are created.
 */
function set(base: Doc, path: string, value: unknown): Doc {
  const d = structuredClone(base);
  const steps = path.split(/\.|(?=\[)/).map((s) => (s.startsWith('[') ? Number(s.slice(1, -1)) : s));
  let node = d as Record<string | number, unknown>;
  for (const [i, step] of steps.entries()) {
    if (i === steps.length - 1) {
      if (value === undefined) delete node[step];
      else node[step] = value;
    } else {
      node[step] ??= typeof steps[i + 1] === 'number' ? [] : {};
      node = node[step] as Record<string | number, unknown>;
    }
  }
  return d;
}

const P = 'Sources[1].Permissions[0]';
const H = `${P}.HTTP`;
const b64 = (s: string): string => Buffer.from(s).toString('base64');

// [what, document, field, message (exact string, or a pattern)]
const CASES: [string, unknown, string, string | RegExp][] = [
  // Kind dispatch
  ['not an object', ['Kind'], 'entry', 'must be an object with a Kind'],
  ['no Kind', { Name: 'api' }, 'Kind', 'is required (one of service-intentions, service-defaults, jwt-provider, service-router, service-splitter, service-resolver, ingress-gateway, proxy-defaults)'],
  ['Kind not a string', { Kind: 3 }, 'Kind', 'must be a string'],
  ['unsupported kind', { Kind: 'terminating-gateway', Name: 'egress' }, 'Kind', 'unsupported config entry kind "terminating-gateway": meshd supports service-intentions, service-defaults, jwt-provider, service-router, service-splitter, service-resolver, ingress-gateway, proxy-defaults'],
  ['proxy-defaults under another name', { Kind: 'proxy-defaults', Name: 'web' }, 'Name', 'must be "global" (there is one proxy-defaults entry), got "web"'],
  ['proxy-defaults with Envoy config', { Kind: 'proxy-defaults', Name: 'global', Config: { envoy_prometheus_bind_addr: '0.0.0.0:9102' } }, 'Config', 'is a Consul feature meshd does not implement in proxy-defaults; remove it'],

  // service-intentions: the entry
  ['no Name', set(INTENTIONS, 'Name', undefined), 'Name', 'is required'],
  ['partial wildcard destination', set(INTENTIONS, 'Name', 'api*'), 'Name', "wildcard character '*' cannot be used with partial values"],
  ['bad destination name', set(INTENTIONS, 'Name', 'my api'), 'Name', /^"my api" is not a valid service name/],
  ['ENT namespace', set(INTENTIONS, 'Namespace', 'team-a'), 'Namespace', /^namespaces are a Consul Enterprise feature/],
  ['wildcard partition', set(INTENTIONS, 'Partition', '*'), 'Partition', /^admin partitions are a Consul Enterprise feature/],
  ['Meta over 64 pairs', set(INTENTIONS, 'Meta', Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']))), 'Meta', 'exceeds maximum element count 64'],
  ['Meta key over 128', set(INTENTIONS, 'Meta', { ['k'.repeat(129)]: 'v' }), 'Meta', `key "${'k'.repeat(129)}" exceeds maximum length 128`],
  ['Meta value over 512', set(INTENTIONS, 'Meta', { k: 'v'.repeat(513) }), 'Meta', 'value for key "k" exceeds maximum length 512'],
  ['Meta value not a string', set(INTENTIONS, 'Meta', { k: 1 }), 'Meta.k', 'must be a string, got number 1'],
  ['entry JWT provider without Name', set(INTENTIONS, 'JWT', { Providers: [{ VerifyClaims: [] }] }), 'JWT.Providers[0].Name', 'JWT provider name is required'],
  ['claim check without Path', set(INTENTIONS, 'JWT', { Providers: [{ Name: 'okta', VerifyClaims: [{ Value: 'admin' }] }] }), 'JWT.Providers[0].VerifyClaims[0].Path', 'must name at least one claim'],
  ['no sources', set(INTENTIONS, 'Sources', []), 'Sources', 'at least one source is required'],
  ['unknown top-level key', set(INTENTIONS, 'Destination', 'api'), 'Destination', 'invalid config key "Destination"'],
  ['same key twice in two spellings', set(INTENTIONS, 'name', 'web'), 'Name', 'given twice, as "Name" and "name" (keys match case-insensitively, "_" ignored)'],

  // service-intentions: sources
  ['source without Name', set(INTENTIONS, 'Sources[0].Name', undefined), 'Sources[0].Name', 'is required'],
  ['source Name not a string', set(INTENTIONS, 'Sources[0].Name', 5), 'Sources[0].Name', 'must be a string, got number 5'],
  ['partial wildcard source', set(INTENTIONS, 'Sources[0].Name', 'web*'), 'Sources[0].Name', "wildcard character '*' cannot be used with partial values"],
  ['source Peer', set(INTENTIONS, 'Sources[0].Peer', 'dc2'), 'Sources[0].Peer', 'cluster peering is not supported by meshd'],
  ['source SamenessGroup', set(INTENTIONS, 'Sources[0].SamenessGroup', 'sg'), 'Sources[0].SamenessGroup', /^sameness groups are a Consul Enterprise feature/],
  ['source Namespace', set(INTENTIONS, 'Sources[0].Namespace', '*'), 'Sources[0].Namespace', /^namespaces are a Consul Enterprise feature/],
  ['Description over 512 bytes', set(INTENTIONS, 'Sources[0].Description', 'd'.repeat(513)), 'Sources[0].Description', 'exceeds maximum length 512'],
  ['Description over 512 bytes in 300 characters', set(INTENTIONS, 'Sources[0].Description', 'é'.repeat(300)), 'Sources[0].Description', 'exceeds maximum length 512'],
  ['LegacyID on a write', set(INTENTIONS, 'Sources[0].LegacyID', 'a1b2'), 'Sources[0].LegacyID', 'must be omitted'],
  ['LegacyMeta on a write', set(INTENTIONS, 'Sources[0].LegacyMeta', { a: 'b' }), 'Sources[0].LegacyMeta', 'must be omitted'],
  ['LegacyCreateTime on a write', set(INTENTIONS, 'Sources[0].LegacyCreateTime', '2024-01-01T00:00:00Z'), 'Sources[0].LegacyCreateTime', 'must be omitted'],
  ['LegacyUpdateTime on a write', set(INTENTIONS, 'Sources[0].legacy_update_time', '2024-01-01T00:00:00Z'), 'Sources[0].LegacyUpdateTime', 'must be omitted'],
  ['L4 source without Action', set(INTENTIONS, 'Sources[0].Action', undefined), 'Sources[0].Action', "must be set to 'allow' or 'deny'"],
  ['Action not lower-case', set(INTENTIONS, 'Sources[0].Action', 'Allow'), 'Sources[0].Action', "must be set to 'allow' or 'deny'"],
  ['Action with Permissions', set(INTENTIONS, 'Sources[1].Action', 'deny'), 'Sources[1].Action', 'must be omitted if Permissions are specified'],
  ['Permissions on a wildcard destination', set(INTENTIONS, 'Name', '*'), 'Sources[1].Permissions', 'cannot be specified on intentions with wildcarded destinations'],
  ['Type other than consul', set(INTENTIONS, 'Sources[0].Type', 'external-uri'), 'Sources[0].Type', "must be set to 'consul'"],
  ['Precedence not a number', set(INTENTIONS, 'Sources[0].Precedence', 'high'), 'Sources[0].Precedence', 'must be a number (it is computed; omit it)'],
  ['duplicate source', set(INTENTIONS, 'Sources[2]', { Name: 'web', Action: 'deny' }), 'Sources[2].Name', 'defines "web" more than once'],
  ['unknown source key', set(INTENTIONS, 'Sources[0].Port', 80), 'Sources[0].Port', 'invalid config key "Port"'],

  // service-intentions: permissions
  ['permission without Action', set(INTENTIONS, 'Sources[1].Permissions[0].Action', undefined), `${P}.Action`, "must be set to 'allow' or 'deny'"],
  ['permission without HTTP', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP', undefined), `${P}.HTTP`, 'is required'],
  ['empty HTTP', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP', {}), H, 'should not be empty'],
  ['HTTP with only empty values', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP', { PathPrefix: '', Methods: [] }), H, 'should not be empty'],
  ['PathPrefix without /', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.PathPrefix', 'v2'), `${H}.PathPrefix`, `doesn't start with '/': "v2"`],
  ['PathExact without /', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP', { path_exact: 'health' }), `${H}.PathExact`, `doesn't start with '/': "health"`],
  ['two path fields', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.PathExact', '/v2/x'), H, 'should only contain at most one of PathExact, PathPrefix, or PathRegex'],
  ['PathRegex with a backreference', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP', { PathRegex: '/(a)\\1' }), `${H}.PathRegex`, /^is not a valid RE2 regular expression: .*invalid escape/],
  ['PathRegex with lookahead', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP', { PathRegex: '/(?=admin).*' }), `${H}.PathRegex`, /^is not a valid RE2 regular expression/],
  ['PathRegex unbalanced', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP', { PathRegex: '/v[0-9' }), `${H}.PathRegex`, /^is not a valid RE2 regular expression/],
  ['PathRegex too long', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP', { PathRegex: `/${'a'.repeat(1024)}` }), `${H}.PathRegex`, 'is longer than 1024 characters'],
  ['invalid method', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.Methods', ['GET', 'fetch']), `${H}.Methods`, 'contains an invalid method "FETCH"'],
  ['duplicate method after upper-casing', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.Methods', ['get', 'GET']), `${H}.Methods`, 'contains "GET" more than once'],
  ['method not a string', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.Methods', ['GET', 7]), `${H}.Methods[1]`, 'must be a string, got number 7'],
  ['header without Name', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.Header[0].Name', undefined), `${H}.Header[0].Name`, 'missing required Name field'],
  ['header name not a token', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.Header[0].Name', 'x tenant'), `${H}.Header[0].Name`, '"x tenant" is not a valid HTTP header name'],
  ['header with two matchers', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.Header[0].Prefix', 'b'), `${H}.Header[0]`, 'should only contain one of Present, Exact, Prefix, Suffix, Contains, or Regex'],
  ['header with Present and Contains', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.Header[0]', { Name: 'x', Present: true, Contains: 'y' }), `${H}.Header[0]`, 'should only contain one of Present, Exact, Prefix, Suffix, Contains, or Regex'],
  ['header with no matcher', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.Header[0]', { Name: 'x', Present: false, Invert: true }), `${H}.Header[0]`, 'should only contain one of Present, Exact, Prefix, Suffix, Contains, or Regex'],
  ['header Regex not RE2', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.Header[0]', { Name: 'x', Regex: '(a+)+\\2' }), `${H}.Header[0].Regex`, /^is not a valid RE2 regular expression/],
  ['header Present not a bool', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.Header[0]', { Name: 'x', Present: 'yes' }), `${H}.Header[0].Present`, 'must be true or false, got string "yes"'],
  ['unknown HTTP key', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP.PathSuffix', '/x'), `${H}.PathSuffix`, 'invalid config key "PathSuffix"'],
  ['permission JWT provider without Name', set(INTENTIONS, 'Sources[1].Permissions[0].JWT', { Providers: [{ Name: '' }] }), `${P}.JWT.Providers[0].Name`, 'JWT provider name is required'],
  ['HTTP as a list of two', set(INTENTIONS, 'Sources[1].Permissions[0].HTTP', [{ PathPrefix: '/a' }, { PathPrefix: '/b' }]), `${P}.HTTP`, 'must be an object, got a list'],

  // service-defaults
  ['service-defaults wildcard Name', set(DEFAULTS, 'Name', '*'), 'Name', /^"\*" is not a valid service name/],
  ['unknown Protocol', set(DEFAULTS, 'Protocol', 'redis'), 'Protocol', 'must be one of "tcp", "http", "http2", "grpc", got "redis"'],
  ['unknown Mode', set(DEFAULTS, 'Mode', 'sidecar'), 'Mode', 'must be one of "direct", "transparent", got "sidecar"'],
  ['unknown MutualTLSMode', set(DEFAULTS, 'mutual_tls_mode', 'optional'), 'MutualTLSMode', 'must be one of "strict", "permissive", got "optional"'],
  ['unknown MeshGateway.Mode', set(DEFAULTS, 'MeshGateway', { Mode: 'far' }), 'MeshGateway.Mode', 'must be one of "none", "local", "remote", got "far"'],
  ['negative MaxInboundConnections', set(DEFAULTS, 'MaxInboundConnections', -1), 'MaxInboundConnections', 'must be between 0 and 2147483647, got -1'],
  ['fractional timeout', set(DEFAULTS, 'LocalConnectTimeoutMs', 1.5), 'LocalConnectTimeoutMs', 'must be a whole number, got number 1.5'],
  ['port out of range', set(DEFAULTS, 'TransparentProxy', { OutboundListenerPort: 70000 }), 'TransparentProxy.OutboundListenerPort', 'must be between 0 and 65535, got 70000'],
  ['UpstreamConfig EnvoyClusterJSON', set(DEFAULTS, 'UpstreamConfig', { Defaults: { EnvoyClusterJSON: '{}' } }), 'UpstreamConfig.Defaults.EnvoyClusterJSON', 'is a Consul feature meshd does not implement; remove it'],
  ['UpstreamConfig EnvoyListenerJSON', set(DEFAULTS, 'UpstreamConfig', { Overrides: [{ Name: 'db', EnvoyListenerJSON: '{}' }] }), 'UpstreamConfig.Overrides[0].EnvoyListenerJSON', 'is a Consul feature meshd does not implement; remove it'],
  ['UpstreamConfig MeshGateway', set(DEFAULTS, 'UpstreamConfig', { Defaults: { MeshGateway: { Mode: 'local' } } }), 'UpstreamConfig.Defaults.MeshGateway', 'is a Consul feature meshd does not implement; remove it'],
  ['UpstreamConfig BalanceOutboundConnections', set(DEFAULTS, 'UpstreamConfig', { Defaults: { BalanceOutboundConnections: 'exact_balance' } }), 'UpstreamConfig.Defaults.BalanceOutboundConnections', 'is a Consul feature meshd does not implement; remove it'],
  ['UpstreamConfig override Peer', set(DEFAULTS, 'UpstreamConfig', { Overrides: [{ Name: 'db', Peer: 'other' }] }), 'UpstreamConfig.Overrides[0].Peer', 'cluster peering is not supported by meshd'],
  ['UpstreamConfig override Namespace', set(DEFAULTS, 'UpstreamConfig', { Overrides: [{ Name: 'db', Namespace: 'ns1' }] }), 'UpstreamConfig.Overrides[0].Namespace', /^namespaces are a Consul Enterprise feature/],
  ['UpstreamConfig Defaults with a Name', set(DEFAULTS, 'UpstreamConfig', { Defaults: { Name: 'db' } }), 'UpstreamConfig.Defaults.Name', 'must be empty'],
  ['UpstreamConfig override without Name', set(DEFAULTS, 'UpstreamConfig', { Overrides: [{ ConnectTimeoutMs: 100 }] }), 'UpstreamConfig.Overrides[0].Name', 'is required'],
  ['UpstreamConfig override wildcard', set(DEFAULTS, 'UpstreamConfig', { Overrides: [{ Name: '*' }] }), 'UpstreamConfig.Overrides[0].Name', 'Wildcard name is not supported'],
  ['UpstreamConfig override twice', set(DEFAULTS, 'UpstreamConfig', { Overrides: [{ Name: 'db' }, { Name: 'db' }] }), 'UpstreamConfig.Overrides[1].Name', 'overrides "db" more than once'],
  ['UpstreamConfig bad Protocol', set(DEFAULTS, 'UpstreamConfig', { Defaults: { Protocol: 'redis' } }), 'UpstreamConfig.Defaults.Protocol', 'must be one of "tcp", "http", "http2", "grpc", got "redis"'],
  ['UpstreamConfig negative ConnectTimeoutMs', set(DEFAULTS, 'UpstreamConfig', { Defaults: { ConnectTimeoutMs: -1 } }), 'UpstreamConfig.Defaults.ConnectTimeoutMs', 'must be between 0 and 2147483647, got -1'],
  ['UpstreamConfig negative MaxConnections', set(DEFAULTS, 'UpstreamConfig', { Defaults: { Limits: { MaxConnections: -1 } } }), 'UpstreamConfig.Defaults.Limits.MaxConnections', 'must be between 0 and 2147483647, got -1'],
  ['UpstreamConfig unknown Limits key', set(DEFAULTS, 'UpstreamConfig', { Defaults: { Limits: { MaxRetries: 3 } } }), 'UpstreamConfig.Defaults.Limits.MaxRetries', 'invalid config key "MaxRetries"'],
  ['UpstreamConfig enforcing over 100', set(DEFAULTS, 'UpstreamConfig', { Defaults: { PassiveHealthCheck: { EnforcingConsecutive5xx: 101 } } }), 'UpstreamConfig.Defaults.PassiveHealthCheck.EnforcingConsecutive5xx', 'must be between 0 and 100, got 101'],
  ['UpstreamConfig max ejection over 100', set(DEFAULTS, 'UpstreamConfig', { Defaults: { PassiveHealthCheck: { MaxEjectionPercent: 150 } } }), 'UpstreamConfig.Defaults.PassiveHealthCheck.MaxEjectionPercent', 'must be between 0 and 100, got 150'],
  ['UpstreamConfig bad Interval', set(DEFAULTS, 'UpstreamConfig', { Defaults: { PassiveHealthCheck: { Interval: 'soon' } } }), 'UpstreamConfig.Defaults.PassiveHealthCheck.Interval', /^invalid duration "soon"/],
  ['UpstreamConfig negative BaseEjectionTime', set(DEFAULTS, 'UpstreamConfig', { Defaults: { PassiveHealthCheck: { BaseEjectionTime: -5 } } }), 'UpstreamConfig.Defaults.PassiveHealthCheck.BaseEjectionTime', /^must be a duration such as "10s"/],
  ['misspelt key', set(DEFAULTS, 'Protocl', 'http'), 'Protocl', 'invalid config key "Protocl"'],
  ['service-defaults Meta over 64', set(DEFAULTS, 'Meta', Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, 'v']))), 'Meta', 'exceeds maximum element count 64'],

  // jwt-provider
  ['provider without Name', set(PROVIDER, 'Name', undefined), 'Name', 'is required'],
  ['provider without key set', set(PROVIDER, 'JSONWebKeySet', undefined), 'JSONWebKeySet', 'is required'],
  ['remote key set', set(PROVIDER, 'JSONWebKeySet', { Remote: { URI: 'https://example.okta.com/keys' } }), 'JSONWebKeySet.Remote', /^is not supported: meshd does not fetch keys over the network; use JSONWebKeySet\.Local/],
  ['neither Local nor Remote', set(PROVIDER, 'JSONWebKeySet', {}), 'JSONWebKeySet', 'must specify exactly one of Local or Remote JSON Web key set'],
  ['JWKS and Filename', set(PROVIDER, 'JSONWebKeySet.Local.Filename', '/etc/jwks.json'), 'JSONWebKeySet.Local', 'must specify exactly one of JWKS or Filename for local keyset'],
  ['empty Local', set(PROVIDER, 'JSONWebKeySet.Local', {}), 'JSONWebKeySet.Local', 'must specify exactly one of JWKS or Filename for local keyset'],
  ['JWKS not base64', set(PROVIDER, 'JSONWebKeySet.Local.JWKS', 'not base64!'), 'JSONWebKeySet.Local.JWKS', 'JWKS must be valid base64 encoded string'],
  ['JWKS base64url, not std', set(PROVIDER, 'JSONWebKeySet.Local.JWKS', JWKS.replace(/=+$/, '')), 'JSONWebKeySet.Local.JWKS', 'JWKS must be valid base64 encoded string'],
  ['JWKS not JSON', set(PROVIDER, 'JSONWebKeySet.Local.JWKS', b64('{keys:')), 'JSONWebKeySet.Local.JWKS', /^does not decode to JSON: /],
  ['JWKS without keys', set(PROVIDER, 'JSONWebKeySet.Local.JWKS', b64('{"kty":"EC"}')), 'JSONWebKeySet.Local.JWKS', 'must decode to a JSON Web Key Set: an object with a "keys" list'],
  ['JWKS key without kty', set(PROVIDER, 'JSONWebKeySet.Local.JWKS', b64('{"keys":[{"kid":"a"}]}')), 'JSONWebKeySet.Local.JWKS', 'keys[0] has no "kty"'],
  ['location with nothing', set(PROVIDER, 'Locations', [{}]), 'Locations[0]', 'must set exactly one of: JWT location header, query param or cookie'],
  ['location with two', set(PROVIDER, 'Locations', [{ Header: { Name: 'a' }, Cookie: { Name: 'b' } }]), 'Locations[0]', 'must set exactly one of: JWT location header, query param or cookie'],
  ['location header without Name', set(PROVIDER, 'Locations', [{ Header: { ValuePrefix: 'Bearer' } }]), 'Locations[0].Header.Name', 'JWT location header name must be specified'],
  ['location query param without Name', set(PROVIDER, 'Locations', [{ Cookie: { Name: 'c' } }, { query_param: {} }]), 'Locations[1].QueryParam.Name', 'JWT location query param name must be specified'],
  ['location cookie without Name', set(PROVIDER, 'Locations', [{ Cookie: { Name: '' } }]), 'Locations[0].Cookie.Name', 'JWT location cookie name must be specified'],
  ['forwarding without HeaderName', set(PROVIDER, 'Forwarding', { PadForwardPayloadHeader: true }), 'Forwarding.HeaderName', 'Header name required for forwarding config'],
  ['negative clock skew', set(PROVIDER, 'ClockSkewSeconds', -5), 'ClockSkewSeconds', 'must be between 0 and 2147483647, got -5'],
  ['cache size not a number', set(PROVIDER, 'CacheConfig', { Size: 'big' }), 'CacheConfig.Size', 'must be a whole number, got string "big"'],
  ['empty audience', set(PROVIDER, 'Audiences', ['api', '']), 'Audiences[1]', 'must not be empty'],
  ['provider ENT namespace', set(PROVIDER, 'Namespace', 'ns1'), 'Namespace', /^namespaces are a Consul Enterprise feature/],
];

test('the valid bases decode', () => {
  for (const d of [INTENTIONS, DEFAULTS, PROVIDER]) decodeConfigEntry(d);
});

rejectsEach(CASES);
