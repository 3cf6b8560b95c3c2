// HCL1 and JSON config files decode to the same document after block collapsing, and syntax
// errors say where.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { CA_CONFIG_OBJECT_KEYS, ConfigSyntaxError, collapseBlocks, parseConfigText } from '../../src/config/hcl.ts';
import { decodeCaConfiguration } from '../../src/control/ca-config.ts';
import { parseJson, parseJsonObject } from '../../src/control/decode.ts';

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

// V8's JSON.parse (Node 24) misreads an escaped key when an earlier parse left a map
// transition, from the object built so far, to a key its source characters start with
// (nodejs/node#63785): after `{"p":"x","\\":"y"}`, `{"p":"x","\"":"y"}` comes back with key
// `\`. A key p that nothing parsed before makes this deterministic.
let freshKeys = 0;
const freshKey = (): string => `!poison-${freshKeys++}-${process.pid}`;

test('escaped keys survive V8 JSON.parse key poisoning (JSON and HCL files, API bodies)', async (t) => {
  let nativeWrong = 0;
  for (const k of ['"', '\n', '\t', '\u0000', '\\']) {
    const p = freshKey();
    JSON.parse(JSON.stringify({ [p]: 'x', '\\': 'y' }));
    const meta = { [p]: 'x', [k]: 'y' };
    const text = JSON.stringify(meta);
    if (!Object.hasOwn(JSON.parse(text) as object, k)) nativeWrong++;
assert.deepEqual(parseJson(text), meta);
    const doc = { Kind: 'k', Name: 'n', Meta: meta };
    JSON.parse(JSON.stringify({ Kind: 'k', Name: 'n', Meta: { [p]: 'x', '\\': 'y' } }));
assert.deepEqual(parseJsonObject(JSON.stringify(doc)), doc);
    assert.deepEqual(await parseConfigText(JSON.stringify(doc), 'x.json'), doc);
  }
  // The HCL parser's JSON lists Meta keys sorted ('!' < '"'), so `"` follows p there too.
  const p = freshKey();
  JSON.parse(`{"Kind":"k","Meta":[{${JSON.stringify(p)}:"x","\\\\":"y"}]}`);
  assert.deepEqual(await parseConfigText(`Kind = "k"\nMeta = { ${JSON.stringify(p)} = "x", "\\"" = "y" }`, 'x.hcl'), { Kind: 'k', Meta: [{ [p]: 'x', '"': 'y' }] });
  t.diagnostic(`native JSON.parse misread ${nativeWrong} of 5 escaped keys${nativeWrong === 0 ? ' (the V8 bug may be fixed in this Node)' : ''}`);
});

test('parseJson is JSON.parse: same values, same errors, data __proto__, any depth', () => {
  const key = fc.oneof(fc.string({ unit: 'binary', maxLength: 4 }), fc.constantFrom('"', '\\', '\n', '\\"', '"\\', '__proto__', '0', '1'));
  const value = fc.letrec((tie) => ({
    v: fc.oneof({ depthSize: 'small' }, fc.jsonValue({ maxDepth: 0 }), fc.string({ unit: 'binary' }), fc.array(tie('v'), { maxLength: 4 }), fc.dictionary(key, tie('v'), { maxKeys: 4 })),
  })).v;
  fc.assert(
    fc.property(value, (v) => {
      const text = JSON.stringify(v, null, v !== null && typeof v === 'object' && Object.keys(v).length % 2 === 1 ? 2 : 0);
      assert.equal(JSON.stringify(parseJson(text), null, text.includes('\n  ') ? 2 : 0), text);
    }),
    { numRuns: 2000 },
  );
  for (const bad of ['', '{', '{"a":1,}', '["\\x"]', '{"a" 1}', '[1]x', '"\\', '{"\\"":}']) {
    assert.throws(() => JSON.parse(bad), SyntaxError);
    assert.throws(() => parseJson(bad), (e: unknown) => e instanceof SyntaxError && e.message === (() => { try { JSON.parse(bad); } catch (err) { return (err as Error).message; } return ''; })());
  }
  const proto = parseJson('{"__proto__":{"polluted":"\\n"}}') as Record<string, unknown>;
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
  assert.ok(Object.hasOwn(proto, '__proto__'));
  assert.deepEqual(parseJson('{"a":1,"b":"\\n","a":2,"1":-0}'), JSON.parse('{"a":1,"b":"\\n","a":2,"1":-0}'));
  assert.ok(Object.is((parseJson('[-0,"\\n"]') as unknown[])[0], -0));
  const deep = `${'['.repeat(100_000)}"\\n"${']'.repeat(100_000)}`;
  let d = parseJson(deep);
  for (let n = 0; n < 100_000; n++) d = (d as unknown[])[0];
  assert.equal(d, '\n');
});
