import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import fc from 'fast-check';
import { compileIntentions } from '../../src/authz/compile.ts';
import type { IntentionRule } from '../../src/authz/compile.ts';
import {
  HDR_GENERATION,
  HDR_HALF_BYTES,
  HDR_HALF_OFFSET,
  HDR_HEAP_END,
  HDR_LAYOUT_VERSION,
  HDR_MAGIC,
  LAYOUT_VERSION,
  MAGIC,
  PolicyTableError,
  PolicyTableErrorCode,
  readerEpochWord,
} from '../../src/authz/layout.ts';
import {
  Decision,
  NO_RULE,
  PolicyTableReader,
  PolicyTableWriter,
  decisionCode,
  decisionRule,
  isAllowed,
} from '../../src/authz/table.ts';
import { assertMatchesNaive } from './fixtures.ts';

const KEY: [number, number] = [0x9e3779b9, 0x7f4a7c15];

function hasCode(code: string): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof PolicyTableError, String(e));
    assert.equal(e.code, code);
    return true;
  };
}

function header(writer: PolicyTableWriter): Int32Array {
  return new Int32Array(writer.memory.buffer);
}

test('decision helpers pack code and rule index', () => {
  const d = Decision.L7_DENY | ((41 + 1) << 3);
  assert.equal(decisionCode(d), Decision.L7_DENY);
  assert.equal(decisionRule(d), 41);
  assert.equal(isAllowed(d), false);
  assert.equal(decisionRule(Decision.DEFAULT_ALLOW), NO_RULE);
  assert.equal(isAllowed(Decision.DEFAULT_ALLOW), true);
  assert.equal(isAllowed(Decision.ALLOW | (7 << 3)), true);
  assert.equal(isAllowed(Decision.DENY), false);
  assert.equal(isAllowed(Decision.DEFAULT_DENY), false);
});

test('before the first publish every decision is DEFAULT_DENY (fail closed)', () => {
  const writer = new PolicyTableWriter({ maxReaders: 1 });
  const reader = new PolicyTableReader(writer.memory, 0);
  assert.equal(reader.generation(), 0);
  assert.equal(reader.decide('web', 'db'), Decision.DEFAULT_DENY);
  assert.equal(writer.memory.buffer instanceof SharedArrayBuffer, true);
});

test('Consul precedence: exact beats *→dst beats src→* beats *→*; L7 is distinguishable; ruleAt explains', async () => {
  const writer = new PolicyTableWriter({ maxReaders: 2 });
  const reader = new PolicyTableReader(writer.memory, 1);
  const intentions: IntentionRule[] = [
    { source: '*', destination: '*', action: 'allow' },
    { source: 'web', destination: '*', action: 'deny' },
    { source: '*', destination: 'db', action: 'l7' },
    { source: 'web', destination: 'db', action: 'allow' },
  ];
  const g = await writer.publish(compileIntentions({ intentions, defaultAllow: false, hashKey: KEY }));
  assert.equal(g, 1);
  assert.equal(reader.generation(), 1);

  const explain = (s: string, d: string): [number, string] => {
    const decision = reader.decide(s, d);
    const rule = reader.ruleAt(decisionRule(decision));
    return [decisionCode(decision), `${rule.source}→${rule.destination}:${rule.action}:${rule.precedence}`];
  };
  assert.deepEqual(explain('web', 'db'), [Decision.ALLOW, 'web→db:allow:9']);
  assert.deepEqual(explain('api', 'db'), [Decision.L7_DENY, '*→db:l7:8']);
  assert.deepEqual(explain('web', 'cache'), [Decision.DENY, 'web→*:deny:6']);
  assert.deepEqual(explain('api', 'cache'), [Decision.ALLOW, '*→*:allow:5']);
  assert.deepEqual(explain('never-seen', 'db'), [Decision.L7_DENY, '*→db:l7:8']);
  assert.equal(reader.lastGeneration, 1);
  assert.deepEqual(reader.ruleAtGeneration(0, 1), { source: 'web', destination: 'db', action: 'allow', precedence: 9 });
  assert.equal(reader.ruleAtGeneration(0, 2), undefined);
  assert.equal(reader.ruleAtGeneration(99, 1), undefined);
  assert.throws(() => reader.ruleAt(99), hasCode(PolicyTableErrorCode.RULE_OUT_OF_RANGE));

  await writer.publish(compileIntentions({ intentions: [], defaultAllow: true, hashKey: KEY }));
  assert.equal(reader.decide('web', 'db'), Decision.DEFAULT_ALLOW);
  await writer.publish(compileIntentions({ intentions: [], defaultAllow: false, hashKey: KEY }));
  assert.equal(reader.decide('web', 'db'), Decision.DEFAULT_DENY);
  assert.equal(reader.generation(), 3);
  // The reader's epoch slot is idle between calls.
  assert.equal(header(writer)[readerEpochWord(1)], 0);
});

// ── (b) property: the shared-memory evaluator equals Consul's rules applied literally ──

const RULE_NAMES = ['web', 'db', 'api', 'cache', 'ünï', '*'] as const;
const QUERY_NAMES = ['web', 'db', 'api', 'cache', 'ünï', 'unknown', 'web2', '', '*', 'we\ud800'] as const;

test('property: decide() equals the naive Consul evaluator for random intentions, defaults and queries', async () => {
  // One writer across all runs, so the property also exercises many generations and both halves.
  const writer = new PolicyTableWriter({ maxReaders: 1 });
  const reader = new PolicyTableReader(writer.memory, 0);
  await fc.assert(
    fc.asyncProperty(
      fc.uniqueArray(
        fc.record({
          source: fc.constantFrom(...RULE_NAMES),
          destination: fc.constantFrom(...RULE_NAMES),
          action: fc.constantFrom('allow' as const, 'deny' as const, 'l7' as const),
        }),
        { selector: (i) => `${i.source}\u0000${i.destination}`, maxLength: 36 },
      ),
      fc.boolean(),
      fc.tuple(fc.nat(0xffffffff), fc.nat(0xffffffff)),
      fc.array(fc.tuple(fc.constantFrom(...QUERY_NAMES), fc.constantFrom(...QUERY_NAMES)), { minLength: 1, maxLength: 30 }),
      async (intentions, defaultAllow, hashKey, queries) => {
        const g = await writer.publish(compileIntentions({ intentions, defaultAllow, hashKey }));
        for (const [src, dst] of queries) {
          assertMatchesNaive(intentions, defaultAllow, reader, g, src, dst, reader.decide(src, dst));
        }
      },
    ),
    { numRuns: 400 },
  );
});

// ── (e) header validation ──

test('reader rejects a memory with bad MAGIC, a newer layout, no sharing, or a bad slot', () => {
  const blank = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
  assert.throws(() => new PolicyTableReader(blank, 0), hasCode(PolicyTableErrorCode.BAD_MAGIC));

  const future = new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
  const h = new Int32Array(future.buffer);
  h[HDR_MAGIC] = MAGIC;
  h[HDR_LAYOUT_VERSION] = LAYOUT_VERSION + 1;
  assert.throws(() => new PolicyTableReader(future, 0), hasCode(PolicyTableErrorCode.LAYOUT_VERSION));

  const unshared = new WebAssembly.Memory({ initial: 1 });
  assert.throws(() => new PolicyTableReader(unshared, 0), hasCode(PolicyTableErrorCode.NOT_SHARED));
  assert.throws(() => new PolicyTableReader({} as WebAssembly.Memory, 0), hasCode(PolicyTableErrorCode.BAD_OPTION));

  const writer = new PolicyTableWriter({ maxReaders: 2 });
  assert.throws(() => new PolicyTableReader(writer.memory, 2), hasCode(PolicyTableErrorCode.BAD_SLOT));
  assert.throws(() => new PolicyTableReader(writer.memory, -1), hasCode(PolicyTableErrorCode.BAD_SLOT));
  const r0 = new PolicyTableReader(writer.memory, 0);
  assert.throws(() => new PolicyTableReader(writer.memory, 0), hasCode(PolicyTableErrorCode.SLOT_IN_USE));
  r0.close();
  assert.throws(() => r0.decide('a', 'b'), hasCode(PolicyTableErrorCode.BAD_SLOT));
  const again = new PolicyTableReader(writer.memory, 0);
  assert.equal(again.decide('a', 'b'), Decision.DEFAULT_DENY);
  // releaseReaderSlot frees a slot whose owner died without close().
  writer.releaseReaderSlot(0);
  assert.ok(new PolicyTableReader(writer.memory, 0));
});

test('writer validates its options', () => {
  assert.throws(() => new PolicyTableWriter({ maxReaders: 0 }), hasCode(PolicyTableErrorCode.BAD_OPTION));
  assert.throws(() => new PolicyTableWriter({ maxReaders: 1.5 }), hasCode(PolicyTableErrorCode.BAD_OPTION));
  assert.throws(() => new PolicyTableWriter({ maxReaders: 1, maximumPages: 40_000 }), hasCode(PolicyTableErrorCode.BAD_OPTION));
  assert.throws(() => new PolicyTableWriter({ maxReaders: 1, initialPages: 8, maximumPages: 4 }), hasCode(PolicyTableErrorCode.BAD_OPTION));
  assert.throws(() => new PolicyTableWriter({ maxReaders: 1, drainTimeoutMs: 0 }), hasCode(PolicyTableErrorCode.BAD_OPTION));
});

// ── publication: the writer never overwrites a half a reader may be reading ──

test('publish waits for a reader still announcing an old generation, and gives up loudly', async () => {
  // The drain timeout must outlast the 50 event-loop turns below even on a loaded machine
  // (at 200 ms the waiting publish sometimes gave up first under the full suite).
  const writer = new PolicyTableWriter({ maxReaders: 2, drainTimeoutMs: 1500 });
  const reader = new PolicyTableReader(writer.memory, 0);
  const allowAll = compileIntentions({ intentions: [{ source: '*', destination: '*', action: 'allow' }], defaultAllow: false, hashKey: KEY });
  const denyAll = compileIntentions({ intentions: [{ source: '*', destination: '*', action: 'deny' }], defaultAllow: false, hashKey: KEY });
  await writer.publish(allowAll); // generation 1 → half 1
  const hdr = header(writer);
  // Simulate slot 1 frozen mid-lookup in generation 1 (i.e. reading half 1).
  Atomics.store(hdr, readerEpochWord(1), 1);
  // Generation 2 goes to half 0: not blocked by a reader of half 1.
  assert.equal(await writer.publish(denyAll), 2);
  assert.equal(decisionCode(reader.decide('a', 'b')), Decision.DENY);
  // Generation 3 must overwrite half 1: it waits.
  const half1 = hdr.slice(hdr[HDR_HALF_OFFSET + 1]! >> 2, (hdr[HDR_HALF_OFFSET + 1]! + 256) >> 2);
  let settled = false;
  const pending = writer.publish(allowAll).then((g) => {
    settled = true;
    return g;
  });
  for (let i = 0; i < 50; i++) await nextTurn();
  assert.equal(settled, false);
  assert.equal(Atomics.load(hdr, HDR_GENERATION), 2);
  assert.deepEqual(hdr.slice(hdr[HDR_HALF_OFFSET + 1]! >> 2, (hdr[HDR_HALF_OFFSET + 1]! + 256) >> 2), half1);
  // The reader moves on (idle): the publish completes.
  Atomics.store(hdr, readerEpochWord(1), 0);
  assert.equal(await pending, 3);
  assert.equal(decisionCode(reader.decide('a', 'b')), Decision.ALLOW);

  // A reader that never moves on: the publish fails with a coded error and changes nothing.
  // Slot 1 announces generation 3 (half 1): generation 4 (half 0) proceeds, generation 5 needs
  // half 1 again and must not overwrite it.
  Atomics.store(hdr, readerEpochWord(1), 3);
  assert.equal(await writer.publish(denyAll), 4);
  await assert.rejects(writer.publish(allowAll), hasCode(PolicyTableErrorCode.READER_STALLED));
  assert.equal(writer.generation(), 4);
  assert.equal(decisionCode(reader.decide('a', 'b')), Decision.DENY);
  // The control thread learns the worker died and frees the slot: publishing works again,
  // and a rejected publish did not wedge the queue.
  writer.releaseReaderSlot(1);
  assert.equal(await writer.publish(allowAll), 5);
});

test('concurrent publish calls are serialised in call order', async () => {
  const writer = new PolicyTableWriter({ maxReaders: 1 });
  const reader = new PolicyTableReader(writer.memory, 0);
  const models = Array.from({ length: 10 }, (_, i) =>
    compileIntentions({ intentions: [{ source: 'a', destination: 'b', action: i % 2 === 0 ? 'allow' : 'deny' }], defaultAllow: false, hashKey: KEY }));
  const gens = await Promise.all(models.map((m) => writer.publish(m)));
  assert.deepEqual(gens, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.equal(decisionCode(reader.decide('a', 'b')), Decision.DENY); // the 10th (odd index)
  // A model that fails to encode rejects at once and does not disturb the order.
  const bad = { ...models[0]!, ruleCapacity: 3 };
  await assert.rejects(writer.publish(bad), hasCode(PolicyTableErrorCode.TABLE_CORRUPT));
  assert.equal(await writer.publish(models[0]!), 11);
});

// ── growth ──

function bigIntentions(n: number): IntentionRule[] {
  const out: IntentionRule[] = [];
  for (let i = 0; i < n; i++) out.push({ source: `svc-${i % 211}`, destination: `dst-${i}`, action: i % 3 === 0 ? 'deny' : 'allow' });
  return out;
}

test('growth: tables larger than a half relocate it and grow the memory; old readers refresh their views', async () => {
  const writer = new PolicyTableWriter({ maxReaders: 1, initialPages: 1, maximumPages: 256 });
  const reader = new PolicyTableReader(writer.memory, 0); // views on the initial 64 KiB buffer
  const initialBuffer = writer.memory.buffer;
  const small = compileIntentions({ intentions: bigIntentions(10), defaultAllow: false, hashKey: KEY });
  await writer.publish(small);
  assert.equal(decisionCode(reader.decide('svc-1', 'dst-1')), Decision.ALLOW);

  for (const size of [5_000, 20, 20_000, 50, 20_000, 10]) {
    const intentions = bigIntentions(size);
    const g = await writer.publish(compileIntentions({ intentions, defaultAllow: true, hashKey: KEY }));
    for (const i of [0, 1, 2, size - 1, Math.floor(size / 2)]) {
      const rule = intentions[i]!;
      assert.equal(decisionCode(reader.decide(rule.source, rule.destination)),
        rule.action === 'deny' ? Decision.DENY : Decision.ALLOW, `gen ${g}, size ${size}, rule ${i}`);
    }
    assert.equal(reader.decide('svc-1', `dst-${size + 1}`), Decision.DEFAULT_ALLOW);
  }
  assert.equal(initialBuffer.byteLength, 65536, 'the old SharedArrayBuffer object keeps its length');
  const hdr = header(writer);
  const grownBytes = writer.memory.buffer.byteLength;
  assert.ok(grownBytes > 65536);
  // Space is bounded: the heap end stays within 3× the two halves' current capacity.
  const live = hdr[HDR_HALF_BYTES]! + hdr[HDR_HALF_BYTES + 1]!;
  assert.ok(hdr[HDR_HEAP_END]! <= 3 * live + 65536, `heap end ${hdr[HDR_HEAP_END]} vs live ${live}`);
  // Halves never overlap.
  const [o0, o1, b0, b1] = [hdr[HDR_HALF_OFFSET]!, hdr[HDR_HALF_OFFSET + 1]!, hdr[HDR_HALF_BYTES]!, hdr[HDR_HALF_BYTES + 1]!];
  assert.ok(o0 + b0 <= o1 || o1 + b1 <= o0, 'halves overlap');
});

test('a table that cannot fit maximumPages is refused and the active table keeps serving', async () => {
  const writer = new PolicyTableWriter({ maxReaders: 1, initialPages: 1, maximumPages: 2 });
  const reader = new PolicyTableReader(writer.memory, 0);
  await writer.publish(compileIntentions({ intentions: bigIntentions(10), defaultAllow: false, hashKey: KEY }));
  await assert.rejects(
    writer.publish(compileIntentions({ intentions: bigIntentions(20_000), defaultAllow: true, hashKey: KEY })),
    hasCode(PolicyTableErrorCode.TABLE_TOO_LARGE),
  );
  assert.equal(writer.generation(), 1);
  assert.equal(decisionCode(reader.decide('svc-1', 'dst-1')), Decision.ALLOW);
  assert.equal(reader.decide('svc-1', 'nowhere'), Decision.DEFAULT_DENY);
});
