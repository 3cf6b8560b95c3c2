// HCL1 and JSON config files decode to the same document after block collapsing, and syntax
// errors say where.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CA_CONFIG_OBJECT_KEYS, ConfigSyntaxError, collapseBlocks, parseConfigText } from '../../src/config/hcl.ts';
import { decodeCaConfiguration } from '../../src/control/ca-config.ts';

test('a CA config in HCL decodes like its JSON twin', async () => {
  const hcl = `
# Consul's set-config file, written as HCL
Provider = "consul"
Config {
  LeafCertTTL      = "24h"
  PrivateKeyType   = "ec"
  PrivateKeyBits   = 384
  csr_max_per_second = 10
}
ForceWithoutCrossSigning = false
`;
  const json = JSON.stringify({ Provider: 'consul', Config: { LeafCertTTL: '24h', PrivateKeyType: 'ec', PrivateKeyBits: 384, csr_max_per_second: 10 }, ForceWithoutCrossSigning: false });
  const fromHcl = collapseBlocks(await parseConfigText(hcl, 'ca.hcl'), CA_CONFIG_OBJECT_KEYS);
  const fromJson = collapseBlocks(await parseConfigText(json, 'ca.json'), CA_CONFIG_OBJECT_KEYS);
  assert.deepEqual(fromHcl, fromJson);
  const cfg = decodeCaConfiguration(fromHcl);
  assert.equal(cfg.leafCertTtlMs, 24 * 3_600_000);
  assert.equal(cfg.privateKeyBits, 384);
  assert.equal(cfg.csrMaxPerSecond, 10);
});

test('syntax errors name the file and the position', async () => {
  await assert.rejects(parseConfigText('Config {\n  LeafCertTTL = "24h"\n', 'ca.hcl'), (e: unknown) => e instanceof ConfigSyntaxError && /ca\.hcl: invalid HCL: At \d+:\d+/.test(e.message));
  await assert.rejects(parseConfigText('{"Provider": ', 'ca.json'), (e: unknown) => e instanceof ConfigSyntaxError && /ca\.json: invalid JSON/.test(e.message));
});

test('collapseBlocks only unwraps one-object lists under object keys', () => {
  assert.deepEqual(collapseBlocks({ config: [{ a: 1 }], Sources: [{ n: 1 }] }, CA_CONFIG_OBJECT_KEYS), { config: { a: 1 }, Sources: [{ n: 1 }] });
  assert.deepEqual(collapseBlocks({ Config: [{ a: 1 }, { b: 2 }] }, CA_CONFIG_OBJECT_KEYS), { Config: [{ a: 1 }, { b: 2 }] });
  assert.deepEqual(collapseBlocks({ Config: ['x'] }, CA_CONFIG_OBJECT_KEYS), { Config: ['x'] });
  const evil = JSON.parse('{"__proto__": [{"polluted": true}], "config": [{"__proto__": {"x": 1}}]}') as unknown;
  const c = collapseBlocks(evil, CA_CONFIG_OBJECT_KEYS) as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(c), Object.prototype);
  assert.ok(Object.hasOwn(c, '__proto__'));
  assert.equal(({} as Record<string, unknown>).polluted, undefined);
  fc.assert(
    fc.property(fc.jsonValue(), (v) => {
      // Without object keys nothing changes.
      assert.deepEqual(collapseBlocks(v, new Set()), v);
    }),
  );
});
