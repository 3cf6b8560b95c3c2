// Golden tests: Consul-style example files, each written as HCL1 and as JSON, decode to the
// same entry, and that entry is the one spelled out here. Encoding gives Consul's API JSON.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import {
  decodeConfigEntry,
  encodeConfigEntry,
  parseConfigEntryText,
  type ConfigEntry,
  type JwtProviderEntry,
  type ServiceDefaultsEntry,
  type ServiceIntentionsEntry,
} from '../../src/config/entries.ts';

const FIXTURES = new URL('./fixtures/', import.meta.url);

async function loadPair(name: string): Promise<ConfigEntry> {
  const hcl = await parseConfigEntryText(readFileSync(new URL(`${name}.hcl`, FIXTURES), 'utf8'), `${name}.hcl`);
  const json = await parseConfigEntryText(readFileSync(new URL(`${name}.json`, FIXTURES), 'utf8'), `${name}.json`);
  assert.deepEqual(hcl, json, `${name}: HCL and JSON decode differently`);
  // Encoding then decoding gives the same entry back.
  assert.deepEqual(decodeConfigEntry(encodeConfigEntry(hcl, { createIndex: 7, modifyIndex: 9 })), hcl);
  return hcl;
}

const JWKS_B64 =
  'eyJrZXlzIjpbeyJrdHkiOiJFQyIsIngiOiJYQnpqSDd6SEYzT2RtcnF4Yk9SUHc2dEoxX2NJRUpZV3FYa2Z3cUhZZzZNIiwieSI6Il9NTHNzbC1mNjROVF9XMFVSZVJqUUV1bUZLUG1nckRVUlZUbnlXS0pxc0EiLCJjcnYiOiJQLTI1NiIsImtpZCI6Im9rdGEtMjAyNCIsInVzZSI6InNpZyIsImFsZyI6IkVTMjU2In1dfQ==';

test('L4 intentions: sources sorted by precedence then name, Type defaulted', async () => {
  const want: ServiceIntentionsEntry = {
    kind: 'service-intentions',
    name: 'db',
    meta: {},
    jwt: null,
    sources: [
      { name: 'api', type: 'consul', description: 'api reads the orders table', precedence: 9, layer: 'l4', action: 'allow' },
      { name: 'web', type: 'consul', description: '', precedence: 9, layer: 'l4', action: 'deny' },
      { name: '*', type: 'consul', description: '', precedence: 8, layer: 'l4', action: 'deny' },
    ],
  };
  assert.deepEqual(await loadPair('intentions-l4'), want);
});

test('L7 intentions: paths, methods upper-cased, headers from a list and from repeated blocks, JWT at both levels', async () => {
  const want: ServiceIntentionsEntry = {
    kind: 'service-intentions',
    name: 'api',
    meta: { team: 'payments' },
    jwt: { providers: [{ name: 'okta', verifyClaims: [{ path: ['perms', 'role'], value: 'admin' }] }] },
    sources: [
      {
        name: 'admin',
        type: 'consul',
        description: '',
        precedence: 9,
        layer: 'l7',
        permissions: [
          { action: 'deny', http: { path: { kind: 'prefix', value: '/v2/admin' }, methods: [], headers: [] }, jwt: null },
          {
            action: 'allow',
            http: {
              path: { kind: 'prefix', value: '/v2' },
              methods: ['GET', 'PUT'],
              headers: [{ name: 'x-tenant', matcher: { kind: 'exact', value: 'a' }, invert: false, ignoreCase: false }],
            },
            jwt: { providers: [{ name: 'okta', verifyClaims: [] }] },
          },
        ],
      },
      {
        name: 'report-generator',
        type: 'consul',
        description: '',
        precedence: 9,
        layer: 'l7',
        permissions: [
          {
            action: 'allow',
            http: {
              path: { kind: 'regex', value: '/v2/widgets/[0-9]+' },
              methods: ['GET'],
              headers: [
                { name: 'x-debug', matcher: { kind: 'present' }, invert: true, ignoreCase: false },
                { name: 'x-region', matcher: { kind: 'suffix', value: '-EU' }, invert: false, ignoreCase: true },
              ],
            },
            jwt: null,
          },
        ],
      },
      { name: 'web', type: 'consul', description: '', precedence: 9, layer: 'l4', action: 'allow' },
      { name: '*', type: 'consul', description: '', precedence: 8, layer: 'l4', action: 'deny' },
    ],
  };
  const got = await loadPair('intentions-l7');
  assert.deepEqual(got, want);
  // Consul's API JSON: PascalCase, omitempty, Precedence and Type filled in.
  assert.deepEqual(encodeConfigEntry(got, { createIndex: 3, modifyIndex: 5 }), {
    Kind: 'service-intentions',
    Name: 'api',
    Sources: [
      {
        Name: 'admin',
        Permissions: [
          { Action: 'deny', HTTP: { PathPrefix: '/v2/admin' } },
          {
            Action: 'allow',
            HTTP: { PathPrefix: '/v2', Header: [{ Name: 'x-tenant', Exact: 'a' }], Methods: ['GET', 'PUT'] },
            JWT: { Providers: [{ Name: 'okta' }] },
          },
        ],
        Precedence: 9,
        Type: 'consul',
      },
      {
        Name: 'report-generator',
        Permissions: [
          {
            Action: 'allow',
            HTTP: {
              PathRegex: '/v2/widgets/[0-9]+',
              Header: [
                { Name: 'x-debug', Present: true, Invert: true },
                { Name: 'x-region', Suffix: '-EU', IgnoreCase: true },
              ],
              Methods: ['GET'],
            },
          },
        ],
        Precedence: 9,
        Type: 'consul',
      },
      { Name: 'web', Action: 'allow', Precedence: 9, Type: 'consul' },
      { Name: '*', Action: 'deny', Precedence: 8, Type: 'consul' },
    ],
    JWT: { Providers: [{ Name: 'okta', VerifyClaims: [{ Path: ['perms', 'role'], Value: 'admin' }] }] },
    Meta: { team: 'payments' },
    CreateIndex: 3,
    ModifyIndex: 5,
  });
});

test('wildcard destination in lower-case/snake_case keys: precedence 6 and 5', async () => {
  const want: ServiceIntentionsEntry = {
    kind: 'service-intentions',
    name: '*',
    meta: {},
    jwt: null,
    sources: [
      { name: 'prometheus', type: 'consul', description: '', precedence: 6, layer: 'l4', action: 'allow' },
      { name: '*', type: 'consul', description: 'default deny', precedence: 5, layer: 'l4', action: 'deny' },
    ],
  };
  assert.deepEqual(await loadPair('intentions-wildcard'), want);
});

test('service-defaults with Protocol http, snake_case keys and a mesh_gateway block', async () => {
  const want: ServiceDefaultsEntry = {
    kind: 'service-defaults',
    name: 'api',
    meta: { owner: 'payments' },
    protocol: 'http',
    mode: '',
    transparentProxy: null,
    mutualTlsMode: '',
    meshGatewayMode: 'local',
    externalSni: '',
    maxInboundConnections: 512,
    localConnectTimeoutMs: 0,
    localRequestTimeoutMs: 30000,
    balanceInboundConnections: '',
    upstreamConfig: null,
  };
  const got = await loadPair('service-defaults-http');
  assert.deepEqual(got, want);
  assert.deepEqual(encodeConfigEntry(got, { createIndex: 1, modifyIndex: 1 }), {
    Kind: 'service-defaults',
    Name: 'api',
    Protocol: 'http',
    MeshGateway: { Mode: 'local' },
    Expose: {},
    MaxInboundConnections: 512,
    LocalRequestTimeoutMs: 30000,
    Meta: { owner: 'payments' },
    CreateIndex: 1,
    ModifyIndex: 1,
  });
});

test('jwt-provider with a local JWKS: keys decoded, ClockSkewSeconds defaulted to 30', async () => {
  const want: JwtProviderEntry = {
    kind: 'jwt-provider',
    name: 'okta',
    meta: {},
    issuer: 'https://example.okta.com',
    audiences: ['api://default'],
    jsonWebKeySet: {
      kind: 'inline',
      jwks: JWKS_B64,
      keys: [
        {
          kty: 'EC',
          x: 'XBzjH7zHF3OdmrqxbORPw6tJ1_cIEJYWqXkfwqHYg6M',
          y: '_MLssl-f64NT_W0UReRjQEumFKPmgrDURVTnyWKJqsA',
          crv: 'P-256',
          kid: 'okta-2024',
          use: 'sig',
          alg: 'ES256',
        },
      ],
    },
    locations: [
      { kind: 'header', name: 'Authorization', valuePrefix: 'Bearer', forward: true },
      { kind: 'query-param', name: 'access_token' },
      { kind: 'cookie', name: 'session' },
    ],
    forwarding: { headerName: 'x-jwt-payload', padForwardPayloadHeader: false },
    clockSkewSeconds: 30,
    cacheConfig: { size: 100 },
  };
  const got = await loadPair('jwt-provider-local');
  assert.deepEqual(got, want);
  assert.deepEqual(encodeConfigEntry(got, { createIndex: 2, modifyIndex: 4 }), {
    Kind: 'jwt-provider',
    Name: 'okta',
    JSONWebKeySet: { Local: { JWKS: JWKS_B64 } },
    Issuer: 'https://example.okta.com',
    Audiences: ['api://default'],
    Locations: [
      { Header: { Name: 'Authorization', ValuePrefix: 'Bearer', Forward: true } },
      { QueryParam: { Name: 'access_token' } },
      { Cookie: { Name: 'session' } },
    ],
    Forwarding: { HeaderName: 'x-jwt-payload', PadForwardPayloadHeader: false },
    ClockSkewSeconds: 30,
    CacheConfig: { Size: 100 },
    CreateIndex: 2,
    ModifyIndex: 4,
  });
});
