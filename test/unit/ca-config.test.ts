// CA configuration decoding and encoding (src/control/ca-config.ts, consul-mesh.md §1.8):
// every rule from a table, both key spellings, the keep-what-you-did-not-send semantics,
// Consul's GET shape without secrets, and a fast-check round trip.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  decodeCaConfiguration,
  defaultCaConfig,
  encodeCaConfiguration,
  formatDuration,
  type CaConfig,
} from '../../src/control/ca-config.ts';
import { FieldError, parseDuration } from '../../src/control/decode.ts';

const HOUR = 3_600_000;
const KEY_PEM = '-----BEGIN EC PRIVATE KEY-----\nMHc=\n-----END EC PRIVATE KEY-----\n';
const CERT_PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';

function isFieldError(field: string, pattern: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof FieldError, `expected FieldError, got ${String(e)}`);
    assert.equal(e.field, field, e.message);
    assert.match(e.message, pattern);
    return true;
  };
}

const put = (config: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ Provider: 'consul', Config: config, ...extra });

test("defaults are Consul's (§1.8) plus meshd's RootRenewalFraction", () => {
  const want: CaConfig = {
    provider: 'consul',
    leafCertTtlMs: 72 * HOUR,
    intermediateCertTtlMs: 8760 * HOUR,
    rootCertTtlMs: 87_600 * HOUR,
    privateKeyType: 'ec',
    privateKeyBits: 256,
    csrMaxPerSecond: 50,
    csrMaxConcurrent: 0,
    forceWithoutCrossSigning: false,
    rootRenewalFraction: 0.2,
  };
  assert.deepEqual(defaultCaConfig(), want);
  assert.deepEqual(decodeCaConfiguration({ Provider: 'consul' }), want);
  assert.deepEqual(decodeCaConfiguration(put({})), want);
  assert.deepEqual(decodeCaConfiguration({ Provider: 'consul', Config: null, State: null, ForceWithoutCrossSigning: null }), want);
});

test('PascalCase and snake_case bodies decode alike', () => {
  const pascal = {
    Provider: 'consul',
    Config: {
      LeafCertTTL: '24h',
      IntermediateCertTTL: '720h',
      RootCertTTL: '43800h',
      PrivateKeyType: 'rsa',
      PrivateKeyBits: 4096,
      PrivateKey: KEY_PEM,
      RootCert: CERT_PEM,
      CSRMaxPerSecond: 12.5,
      CSRMaxConcurrent: 4,
      RootRenewalFraction: 0.1,
    },
    ForceWithoutCrossSigning: true,
  };
  const snake = {
    provider: 'consul',
    config: {
      leaf_cert_ttl: '24h',
      intermediate_cert_ttl: '720h',
      root_cert_ttl: '43800h',
      private_key_type: 'rsa',
      private_key_bits: 4096,
      private_key: KEY_PEM,
      root_cert: CERT_PEM,
      csr_max_per_second: 12.5,
      csr_max_concurrent: 4,
      root_renewal_fraction: 0.1,
    },
    force_without_cross_signing: true,
  };
  const want: CaConfig = {
    provider: 'consul',
    leafCertTtlMs: 24 * HOUR,
    intermediateCertTtlMs: 720 * HOUR,
    rootCertTtlMs: 43_800 * HOUR,
    privateKeyType: 'rsa',
    privateKeyBits: 4096,
    privateKey: KEY_PEM,
    rootCert: CERT_PEM,
    csrMaxPerSecond: 12.5,
    csrMaxConcurrent: 4,
    forceWithoutCrossSigning: true,
    rootRenewalFraction: 0.1,
  };
  assert.deepEqual(decodeCaConfiguration(pascal), want);
  assert.deepEqual(decodeCaConfiguration(snake), want);
  // Go duration syntax with several units.
  assert.equal(decodeCaConfiguration(put({ LeafCertTTL: '1h30m' })).leafCertTtlMs, 1.5 * HOUR);
  assert.equal(decodeCaConfiguration(put({ LeafCertTTL: '90m' })).leafCertTtlMs, 1.5 * HOUR);
});

test('every rule refuses with a FieldError that names the field and the rule', () => {
  const cases: [string, unknown, string, RegExp][] = [
    ['body not an object', [], 'body', /must be a JSON object/],
    ['no Provider', { Config: {} }, 'Provider', /is required and must be "consul"/],
    ['vault', { Provider: 'vault', Config: {} }, 'Provider', /must be "consul".*"vault"/],
    ['Config not an object', { Provider: 'consul', Config: 'x' }, 'Config', /must be a JSON object/],
    ['unknown top-level key', { Provider: 'consul', Foo: 1 }, 'Foo', /unknown field; allowed: Provider, Config/],
    ['unknown Config key', put({ SkipValidate: true }), 'Config.SkipValidate', /unknown field; allowed: LeafCertTTL/],
    ['key given twice', put({ LeafCertTTL: '24h', leaf_cert_ttl: '48h' }), 'Config.leaf_cert_ttl', /given twice \(also as "LeafCertTTL"\)/],
    ['State set', { Provider: 'consul', State: { k: 'v' } }, 'State', /read-only/],
    ['ForceWithoutCrossSigning not boolean', { Provider: 'consul', ForceWithoutCrossSigning: 'yes' }, 'ForceWithoutCrossSigning', /true or false/],
    ['TTL as a number', put({ LeafCertTTL: 3600 }), 'Config.LeafCertTTL', /Go duration string such as "72h"/],
    ['TTL not Go syntax', put({ LeafCertTTL: '1 day' }), 'Config.LeafCertTTL', /invalid duration/],
    ['negative TTL', put({ LeafCertTTL: '-1h' }), 'Config.LeafCertTTL', /invalid duration/],
    ['sub-millisecond TTL', put({ LeafCertTTL: '1h1us' }), 'Config.LeafCertTTL', /whole number of milliseconds/],
    ['LeafCertTTL below 1h', put({ LeafCertTTL: '59m59s' }), 'Config.LeafCertTTL', /must be at least 1h, got 59m59s/],
    ['LeafCertTTL above 8760h', put({ LeafCertTTL: '8761h' }), 'Config.LeafCertTTL', /must be at most 8760h, got 8761h/],
    ['IntermediateCertTTL below 3h', put({ LeafCertTTL: '1h', IntermediateCertTTL: '2h' }), 'Config.IntermediateCertTTL', /must be at least 3h, got 2h/],
    [
      'IntermediateCertTTL below 3 × LeafCertTTL',
      put({ LeafCertTTL: '8760h' }),
      'Config.IntermediateCertTTL',
      /must be at least 3 × LeafCertTTL \(26280h\), got 8760h/,
    ],
    ['RootCertTTL below IntermediateCertTTL', put({ RootCertTTL: '8759h' }), 'Config.RootCertTTL', /must be at least IntermediateCertTTL \(8760h\), got 8759h/],
    ['PrivateKeyType dsa', put({ PrivateKeyType: 'dsa' }), 'Config.PrivateKeyType', /must be "ec" or "rsa", got "dsa"/],
    ['rsa without bits', put({ PrivateKeyType: 'rsa' }), 'Config.PrivateKeyBits', /is required when PrivateKeyType is "rsa" \(2048 or 4096\)/],
    ['rsa 3072', put({ PrivateKeyType: 'rsa', PrivateKeyBits: 3072 }), 'Config.PrivateKeyBits', /must be one of 2048, 4096 for PrivateKeyType "rsa", got 3072/],
    ['ec 224', put({ PrivateKeyType: 'ec', PrivateKeyBits: 224 }), 'Config.PrivateKeyBits', /must be one of 256, 384, 521 for PrivateKeyType "ec", got 224/],
    ['ec with rsa bits', put({ PrivateKeyBits: 2048 }), 'Config.PrivateKeyBits', /256, 384, 521/],
    ['bits as a string', put({ PrivateKeyBits: '256' }), 'Config.PrivateKeyBits', /must be a number/],
    ['PrivateKey without RootCert', put({ PrivateKey: KEY_PEM }), 'Config.RootCert', /PrivateKey and RootCert must be given together/],
    ['RootCert without PrivateKey', put({ RootCert: CERT_PEM }), 'Config.PrivateKey', /must be given together/],
    ['one of them empty', put({ PrivateKey: '', RootCert: CERT_PEM }), 'Config.PrivateKey', /must be given together/],
    ['PrivateKey not PEM', put({ PrivateKey: 'secret', RootCert: CERT_PEM }), 'Config.PrivateKey', /must be a PEM private key/],
    ['RootCert not PEM', put({ PrivateKey: KEY_PEM, RootCert: 'cert' }), 'Config.RootCert', /must be a PEM certificate/],
    ['RootCert not a string', put({ PrivateKey: KEY_PEM, RootCert: 7 }), 'Config.RootCert', /must be a PEM string/],
    ['CSRMaxPerSecond negative', put({ CSRMaxPerSecond: -1 }), 'Config.CSRMaxPerSecond', /must be >= 0/],
    ['CSRMaxPerSecond a string', put({ CSRMaxPerSecond: '50' }), 'Config.CSRMaxPerSecond', /must be a number/],
    ['CSRMaxConcurrent fractional', put({ CSRMaxConcurrent: 1.5 }), 'Config.CSRMaxConcurrent', /whole number >= 0/],
    ['CSRMaxConcurrent negative', put({ CSRMaxConcurrent: -2 }), 'Config.CSRMaxConcurrent', /whole number >= 0/],
    ['RootRenewalFraction 0.5', put({ RootRenewalFraction: 0.5 }), 'Config.RootRenewalFraction', /below 0\.5 \(0 disables automatic root renewal\), got 0\.5/],
    ['RootRenewalFraction negative', put({ RootRenewalFraction: -0.1 }), 'Config.RootRenewalFraction', /at least 0/],
  ];
  for (const [name, body, field, message] of cases) {
    assert.throws(() => decodeCaConfiguration(body), isFieldError(field, message), name);
  }
  // The edges themselves are allowed.
  const edges = decodeCaConfiguration(put({ LeafCertTTL: '1h', IntermediateCertTTL: '3h', RootCertTTL: '3h', RootRenewalFraction: 0, CSRMaxPerSecond: 0 }));
  assert.deepEqual([edges.leafCertTtlMs, edges.intermediateCertTtlMs, edges.rootCertTtlMs, edges.rootRenewalFraction], [HOUR, 3 * HOUR, 3 * HOUR, 0]);
  assert.equal(decodeCaConfiguration(put({ LeafCertTTL: '8760h', IntermediateCertTTL: '26280h', RootCertTTL: '87600h' })).leafCertTtlMs, 8760 * HOUR);
});

test('fields left out keep their current value; secrets survive a GET → PUT round trip', () => {
  const current: CaConfig = {
    ...defaultCaConfig(),
    leafCertTtlMs: 24 * HOUR,
    privateKeyType: 'rsa',
    privateKeyBits: 2048,
    privateKey: KEY_PEM,
    rootCert: CERT_PEM,
    forceWithoutCrossSigning: true,
    rootRenewalFraction: 0.3,
  };
  const ttlOnly = decodeCaConfiguration(put({ RootCertTTL: '50000h' }), current);
  assert.deepEqual(ttlOnly, { ...current, rootCertTtlMs: 50_000 * HOUR, forceWithoutCrossSigning: false });
  // ForceWithoutCrossSigning is per request: it never stays armed.
  assert.equal(ttlOnly.forceWithoutCrossSigning, false);
  // Both secrets given as "" return to a generated root.
  const cleared = decodeCaConfiguration(put({ PrivateKey: '', RootCert: '' }), current);
  assert.equal('privateKey' in cleared || 'rootCert' in cleared, false);
  // New secrets replace the old pair.
  const other = CERT_PEM.replace('MIIB', 'MIIC');
  assert.equal(decodeCaConfiguration(put({ PrivateKey: KEY_PEM, RootCert: other }), current).rootCert, other);
  // Changing the type without bits takes the new type's default (ec: 256)...
  assert.equal(decodeCaConfiguration(put({ PrivateKeyType: 'ec' }), current).privateKeyBits, 256);
  // ...the same type keeps the current bits...
  assert.equal(decodeCaConfiguration(put({ PrivateKeyType: 'rsa' }), current).privateKeyBits, 2048);
  // ...and rsa from ec needs bits.
  assert.throws(() => decodeCaConfiguration(put({ PrivateKeyType: 'rsa' }), defaultCaConfig()), isFieldError('Config.PrivateKeyBits', /required/));
  // Cross-field rules apply to the merged result.
  assert.throws(() => decodeCaConfiguration(put({ LeafCertTTL: '8760h' }), current), isFieldError('Config.IntermediateCertTTL', /3 × LeafCertTTL/));
  // A GET body, PUT back as it is, changes nothing (ClusterID/CreateIndex/ModifyIndex ignored).
  const get = { ...encodeCaConfiguration(current, { createIndex: 3, modifyIndex: 9 }), ClusterID: 'ignored' };
  assert.deepEqual(decodeCaConfiguration(JSON.parse(JSON.stringify(get)), current), current);
  // An empty State is accepted too.
  assert.deepEqual(decodeCaConfiguration({ ...get, State: {} }, current), current);
});

test("encode: Consul's GET shape, durations as Go strings, never the key or the root", () => {
  const body = encodeCaConfiguration({ ...defaultCaConfig(), privateKey: KEY_PEM, rootCert: CERT_PEM }, { createIndex: 5, modifyIndex: 7 });
  assert.deepEqual(body, {
    Provider: 'consul',
    Config: {
      LeafCertTTL: '72h',
      IntermediateCertTTL: '8760h',
      RootCertTTL: '87600h',
      PrivateKeyType: 'ec',
      PrivateKeyBits: 256,
      CSRMaxPerSecond: 50,
      CSRMaxConcurrent: 0,
      RootRenewalFraction: 0.2,
    },
    State: null,
    ForceWithoutCrossSigning: false,
    CreateIndex: 5,
    ModifyIndex: 7,
  });
  const json = JSON.stringify(body);
  assert.doesNotMatch(json, /PRIVATE KEY|BEGIN CERTIFICATE|"PrivateKey"|"RootCert"/);
});

test('formatDuration writes Go duration strings that parse back', () => {
  const table: [number, string][] = [
    [0, '0s'],
    [1, '1ms'],
    [1000, '1s'],
    [90_000, '1m30s'],
    [HOUR, '1h'],
    [1.5 * HOUR, '1h30m'],
    [72 * HOUR, '72h'],
    [8760 * HOUR, '8760h'],
    [87_600 * HOUR, '87600h'],
    [25 * HOUR + 61_001, '25h1m1s1ms'],
    [60_500, '1m500ms'],
  ];
  for (const [ms, s] of table) {
    assert.equal(formatDuration(ms), s);
    assert.equal(parseDuration(s, 'x'), ms);
  }
  assert.throws(() => formatDuration(-1), RangeError);
  assert.throws(() => formatDuration(1.5), RangeError);
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 1_000_000 * HOUR }), (ms) => parseDuration(formatDuration(ms), 'x') === ms),
    { numRuns: 2000 },
  );
});

/** Any configuration the decoder accepts. */
const validConfig: fc.Arbitrary<CaConfig> = fc
  .record({
    leaf: fc.integer({ min: HOUR, max: 8760 * HOUR }),
    interExtra: fc.integer({ min: 0, max: 20_000 * HOUR }),
    rootExtra: fc.integer({ min: 0, max: 100_000 * HOUR }),
    key: fc.oneof(
      fc.constantFrom(256, 384, 521).map((bits) => ({ type: 'ec' as const, bits })),
      fc.constantFrom(2048, 4096).map((bits) => ({ type: 'rsa' as const, bits })),
    ),
    secrets: fc.boolean(),
    perSecond: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 10_000 }), fc.double({ min: 0, max: 1e6, noNaN: true, noDefaultInfinity: true })),
    concurrent: fc.nat({ max: 10_000 }),
    force: fc.boolean(),
    fraction: fc.double({ min: 0, max: 0.5, maxExcluded: true, noNaN: true }),
  })
  .map((r): CaConfig => {
    const intermediate = Math.max(3 * HOUR, 3 * r.leaf) + r.interExtra;
    return {
      provider: 'consul',
      leafCertTtlMs: r.leaf,
      intermediateCertTtlMs: intermediate,
      rootCertTtlMs: intermediate + r.rootExtra,
      privateKeyType: r.key.type,
      privateKeyBits: r.key.bits,
      ...(r.secrets ? { privateKey: KEY_PEM, rootCert: CERT_PEM } : {}),
      csrMaxPerSecond: r.perSecond + 0, // + 0 turns -0 into 0, as JSON does
      csrMaxConcurrent: r.concurrent,
      forceWithoutCrossSigning: r.force,
      rootRenewalFraction: r.fraction + 0,
    };
  });

function withoutSecrets(cfg: CaConfig): CaConfig {
  const { privateKey: _k, rootCert: _c, ...rest } = cfg;
  return rest;
}

function snakeKeys(v: unknown): unknown {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return v;
  return Object.fromEntries(
    Object.entries(v).map(([k, x]) => [
      k.replace(/([a-z0-9])([A-Z])/g, '$1_$2').replace(/([A-Z]+)([A-Z][a-z])/g, '$1_$2').toLowerCase(),
      snakeKeys(x),
    ]),
  );
}

test('property: decode(encode(cfg)) == cfg without secrets; with current = cfg, == cfg', () => {
  fc.assert(
    fc.property(validConfig, fc.nat(), fc.nat(), (cfg, a, b) => {
      const wire: unknown = JSON.parse(JSON.stringify(encodeCaConfiguration(cfg, { createIndex: a, modifyIndex: b })));
      assert.deepEqual(decodeCaConfiguration(wire), withoutSecrets(cfg));
      assert.deepEqual(decodeCaConfiguration(snakeKeys(wire)), withoutSecrets(cfg));
      assert.deepEqual(decodeCaConfiguration(wire, cfg), cfg);
    }),
    { numRuns: 1000 },
  );
});
