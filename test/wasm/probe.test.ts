// The WASM probe against the TS reader and the naive Consul evaluator (test/authz/fixtures.ts).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { compileIntentions } from '../../src/authz/compile.ts';
import type { IntentionRule } from '../../src/authz/compile.ts';
import { halfSipHash24 } from '../../src/authz/halfsiphash.ts';
import { PolicyTableError, PolicyTableErrorCode, readerEpochWord } from '../../src/authz/layout.ts';
import { Decision, PolicyTableReader, PolicyTableWriter, decisionCode } from '../../src/authz/table.ts';
import { WasmPolicyProbe, instantiatePolicy } from '../../src/wasm/policy.ts';
import { assertMatchesNaive } from '../authz/fixtures.ts';

const KEY: [number, number] = [0x9e3779b9, 0x7f4a7c15];

function hasCode(code: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof PolicyTableError, String(e));
    assert.equal(e.code, code);
    return true;
  };
}

test('WASM HalfSipHash-2-4 equals the TS implementation on random keys and bytes', () => {
  const writer = new PolicyTableWriter({ maxReaders: 1 });
  const wasm = instantiatePolicy(writer.memory);
  const scratch = new Uint8Array(wasm.scratch.buffer);
  fc.assert(
    fc.property(fc.nat(0xffffffff), fc.nat(0xffffffff), fc.uint8Array({ maxLength: 64 }), (k0, k1, bytes) => {
      scratch.set(bytes, 0);
      assert.equal(wasm.hash(k0, k1, 0, bytes.length), halfSipHash24(k0, k1, bytes, 0, bytes.length));
    }),
    { numRuns: 500 },
  );
});

// Rule names include non-ASCII (2-, 3- and 4-byte UTF-8) and a name containing U+FFFD, which a
// lone surrogate would turn into if encoded with TextEncoder; queries add unknown, empty,
// wildcard, lone-surrogate and over-long names.
const RULE_NAMES = ['web', 'db', 'api', 'cache', 'ünï', '日本', 'x\u{1f600}', 'we\ufffd', 'abcdefghijklmnopq', '*'] as const;
const QUERY_NAMES = [...RULE_NAMES, 'unknown', 'web2', '', 'we\ud800', '\udc00', 'x'.repeat(2049), 'é'.repeat(1025), 'abcdefghijklmnopr'] as const;

const intentionSets = fc.uniqueArray(
  fc.record({
    source: fc.constantFrom(...RULE_NAMES),
    destination: fc.constantFrom(...RULE_NAMES),
    action: fc.constantFrom('allow' as const, 'deny' as const, 'l7' as const),
  }),
  { selector: (i) => `${i.source}\u0000${i.destination}`, maxLength: 60 },
);
const queryName = fc.oneof(
  { weight: 4, arbitrary: fc.constantFrom(...QUERY_NAMES) },
  { weight: 1, arbitrary: fc.string({ unit: 'binary', maxLength: 8 }) },
);


test('property: WasmPolicyProbe.decide == PolicyTableReader.decide == naive Consul evaluator', async () => {
  // One writer for all runs: many generations, both halves, relocations as tables vary in size.
  const writer = new PolicyTableWriter({ maxReaders: 2, initialPages: 1 });
  const reader = new PolicyTableReader(writer.memory, 0);
  const probe = new WasmPolicyProbe(writer.memory, 1);
  assert.equal(probe.decide('web', 'db'), Decision.DEFAULT_DENY);
  await fc.assert(
    fc.asyncProperty(
      intentionSets,
      fc.boolean(),
      fc.tuple(fc.nat(0xffffffff), fc.nat(0xffffffff)),
      fc.array(fc.tuple(queryName, queryName), { minLength: 1, maxLength: 40 }),
      async (intentions, defaultAllow, hashKey, queries) => {
        const g = await writer.publish(compileIntentions({ intentions, defaultAllow, hashKey }));
        // Queries in order and then repeated: exercises both probes' one-entry name caches.
        for (const [src, dst] of [...queries, ...queries]) {
          const w = probe.decide(src, dst);
          assert.equal(probe.lastGeneration, g);
          assert.equal(w, reader.decide(src, dst), `wasm vs ts: ${src} → ${dst}`);
          assertMatchesNaive(intentions, defaultAllow, reader, g, src, dst, w);
        }
        assert.equal(new Int32Array(writer.memory.buffer)[readerEpochWord(1)], 0, 'epoch left announced');
      },
    ),
    { numRuns: 400 },
  );
});

test('same names across a re-publish: cached ids are not reused from the old generation', async () => {
  const writer = new PolicyTableWriter({ maxReaders: 2 });
  const reader = new PolicyTableReader(writer.memory, 0);
  const probe = new WasmPolicyProbe(writer.memory, 1);
  const a: IntentionRule[] = [{ source: 'web', destination: 'db', action: 'allow' }, { source: 'api', destination: 'db', action: 'deny' }];
  // Same names, interned in another order (so different ids), other key, other actions.
  const b: IntentionRule[] = [{ source: 'api', destination: 'db', action: 'allow' }, { source: 'zz', destination: 'web', action: 'allow' },
    { source: 'web', destination: 'db', action: 'l7' }];
  for (let round = 0; round < 6; round++) {
    const intentions = round % 2 === 0 ? a : b;
    const g = await writer.publish(compileIntentions({ intentions, defaultAllow: round % 3 === 0, hashKey: [round, round * 7919] }));
    for (const [src, dst] of [['web', 'db'], ['web', 'db'], ['api', 'db'], ['zz', 'web'], ['nobody', 'db']] as const) {
      const d = probe.decide(src, dst);
      assert.equal(d, reader.decide(src, dst));
      assertMatchesNaive(intentions, round % 3 === 0, reader, g, src, dst, d);
    }
  }
  assert.equal(probe.generation(), 6);
});

test('the per-generation source id cache: alternating sources agree with the TS reader before and after a re-publish that renumbers them', async () => {
  const writer = new PolicyTableWriter({ maxReaders: 2 });
  const reader = new PolicyTableReader(writer.memory, 0);
  const probe = new WasmPolicyProbe(writer.memory, 1);
  const names = Array.from({ length: 50 }, (_v, i) => `svc-${i}`);
  for (let round = 0; round < 4; round++) {
    // Each round interns the names in another order (other ids) and flips which are allowed.
    const order = round % 2 === 0 ? names : [...names].reverse();
    const intentions: IntentionRule[] = order.map((n, i) => ({ source: n, destination: 'db', action: (i + round) % 3 === 0 ? 'deny' : 'allow' }));
    await writer.publish(compileIntentions({ intentions, defaultAllow: false, hashKey: [round + 1, round * 31] }));
    // Alternating sources never repeat the previous call's name, so after the first pass each
    // decision comes from the id cache; 'nobody' caches "not interned".
    for (let pass = 0; pass < 3; pass++) {
      for (const src of [...names, 'nobody']) assert.equal(probe.decide(src, 'db'), reader.decide(src, 'db'), `round ${round} pass ${pass}: ${src}`);
    }
  }
});

test('memory growth: a probe created on the first page reads halves relocated beyond it', async () => {
  const writer = new PolicyTableWriter({ maxReaders: 2, initialPages: 1, maximumPages: 256 });
  const reader = new PolicyTableReader(writer.memory, 0);
  const probe = new WasmPolicyProbe(writer.memory, 1);
  const before = writer.memory.buffer.byteLength;
  for (const n of [10, 1000, 5000, 20_000]) {
    const intentions: IntentionRule[] = [];
    for (let i = 0; i < n; i++) intentions.push({ source: `svc-${i % 211}`, destination: `api-${i}`, action: i % 3 === 0 ? 'deny' : 'allow' });
    intentions.push({ source: '*', destination: 'api-1', action: 'l7' });
    const g = await writer.publish(compileIntentions({ intentions, defaultAllow: false, hashKey: KEY }));
    for (const i of [0, 1, 2, 7, n - 1, n + 5]) {
      for (const src of [`svc-${i % 211}`, 'svc-999', 'other']) {
        const d = probe.decide(src, `api-${i}`);
        assert.equal(d, reader.decide(src, `api-${i}`));
        assertMatchesNaive(intentions, false, reader, g, src, `api-${i}`, d);
      }
    }
  }
  assert.ok(writer.memory.buffer.byteLength > before * 8, 'memory did not grow');
});

test('imports any writer memory (maximumPages 1 .. 32767); validation and slot claims follow the TS reader', () => {
  for (const maximumPages of [1, 16384, 32767]) {
    const writer = new PolicyTableWriter({ maxReaders: 2, initialPages: 1, maximumPages });
    assert.equal(new WasmPolicyProbe(writer.memory, 0).decide('a', 'b'), Decision.DEFAULT_DENY);
  }
  const writer = new PolicyTableWriter({ maxReaders: 2 });
  const probe = new WasmPolicyProbe(writer.memory, 0);
  assert.throws(() => new WasmPolicyProbe(writer.memory, 0), hasCode(PolicyTableErrorCode.SLOT_IN_USE));
  assert.throws(() => new PolicyTableReader(writer.memory, 0), hasCode(PolicyTableErrorCode.SLOT_IN_USE));
  assert.throws(() => new WasmPolicyProbe(writer.memory, 2), hasCode(PolicyTableErrorCode.BAD_SLOT));
  assert.throws(() => new WasmPolicyProbe(new WebAssembly.Memory({ initial: 1 }), 0), hasCode(PolicyTableErrorCode.NOT_SHARED));
  probe.close();
  assert.throws(() => probe.decide('a', 'b'), hasCode(PolicyTableErrorCode.BAD_SLOT));
  assert.equal(new WasmPolicyProbe(writer.memory, 0).decide('a', 'b'), Decision.DEFAULT_DENY);
});

test('the WASM epoch protocol leaves the slot idle between calls and reports the generation read', async () => {
  // Concurrent publishes against WASM readers are covered by publication.test.ts (workers).
  const writer = new PolicyTableWriter({ maxReaders: 1 });
  const probe = new WasmPolicyProbe(writer.memory, 0);
  const allow = compileIntentions({ intentions: [{ source: '*', destination: '*', action: 'allow' }], defaultAllow: false, hashKey: KEY });
  for (let i = 1; i <= 5; i++) {
    assert.equal(await writer.publish(allow), i);
    assert.equal(decisionCode(probe.decide('a', 'b')), Decision.ALLOW);
    assert.equal(probe.lastGeneration, i);
    assert.equal(new Int32Array(writer.memory.buffer)[readerEpochWord(0)], 0);
  }
});
