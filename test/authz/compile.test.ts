import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  IntentionCompileError,
  IntentionCompileErrorCode,
  compileIntentions,
  decodeTable,
  encodeTable,
} from '../../src/authz/compile.ts';
import type { CompiledTable, IntentionRule } from '../../src/authz/compile.ts';
import { Action, PolicyTableError, PolicyTableErrorCode, TBL_NAME_CAP, TBL_RULE_TABLE } from '../../src/authz/layout.ts';

const KEY: [number, number] = [0xdeadbeef, 0x01020304];

function compile(intentions: IntentionRule[], defaultAllow = false): CompiledTable {
  return compileIntentions({ intentions, defaultAllow, hashKey: KEY });
}

function expectCompileError(intentions: unknown, code: string, field: string): void {
  assert.throws(
    () => compileIntentions({ intentions: intentions as IntentionRule[], defaultAllow: false, hashKey: KEY }),
    (e: unknown) => {
      assert.ok(e instanceof IntentionCompileError, String(e));
      assert.equal(e.code, code);
      assert.equal(e.field, field);
      assert.ok(e.message.startsWith(`${field}: `));
      return true;
    },
  );
}

test('interns names to sorted dense ids with * = 0 and orders rules by Consul precedence', () => {
  const model = compile([
    { source: '*', destination: '*', action: 'deny' },
    { source: 'web', destination: '*', action: 'allow' },
    { source: '*', destination: 'db', action: 'l7' },
    { source: 'web', destination: 'db', action: 'allow' },
    { source: 'api', destination: 'db', action: 'deny' },
  ]);
  assert.deepEqual(model.names, ['*', 'api', 'db', 'web']);
  assert.deepEqual(model.hashKey, [0xdeadbeef, 0x01020304]);
  assert.deepEqual(model.rules, [
    { srcId: 1, dstId: 2, action: Action.DENY, precedence: 9 }, // api → db
    { srcId: 3, dstId: 2, action: Action.ALLOW, precedence: 9 }, // web → db
    { srcId: 0, dstId: 2, action: Action.L7, precedence: 8 }, // * → db
    { srcId: 3, dstId: 0, action: Action.ALLOW, precedence: 6 }, // web → *
    { srcId: 0, dstId: 0, action: Action.DENY, precedence: 5 }, // * → *
  ]);
  // Load factor ≤ 0.5, powers of two, at least 4 slots.
  assert.equal(model.nameCapacity, 8);
  assert.equal(model.ruleCapacity, 16);
  assert.deepEqual(compile([]).names, ['*']);
  assert.equal(compile([]).nameCapacity, 4);
  assert.equal(compile([]).ruleCapacity, 4);
});

test('compile is deterministic and independent of input order', () => {
  const rules: IntentionRule[] = [
    { source: 'b', destination: 'a', action: 'allow' },
    { source: 'a', destination: '*', action: 'deny' },
    { source: '*', destination: 'b', action: 'l7' },
  ];
  const one = compile(rules);
  const two = compile([...rules].reverse());
  assert.deepEqual(one, two);
  assert.deepEqual(encodeTable(one), encodeTable(two));
});

test('rejects invalid input with a coded error naming the field', () => {
  expectCompileError([{ source: '', destination: 'db', action: 'allow' }], IntentionCompileErrorCode.INVALID_NAME, 'intentions[0].source');
  expectCompileError([{ source: 'web', destination: 'db', action: 'allow' }, { source: 'web*', destination: 'db', action: 'allow' }],
    IntentionCompileErrorCode.PARTIAL_WILDCARD, 'intentions[1].source');
  expectCompileError([{ source: 'web', destination: '*db', action: 'allow' }], IntentionCompileErrorCode.PARTIAL_WILDCARD, 'intentions[0].destination');
  expectCompileError([{ source: 'web', destination: '**', action: 'allow' }], IntentionCompileErrorCode.PARTIAL_WILDCARD, 'intentions[0].destination');
  expectCompileError([{ source: 'web', destination: 'db', action: 'permit' }], IntentionCompileErrorCode.INVALID_ACTION, 'intentions[0].action');
  expectCompileError([{ source: 'web', destination: 'db', action: 'toString' }], IntentionCompileErrorCode.INVALID_ACTION, 'intentions[0].action');
  expectCompileError([
    { source: 'web', destination: 'db', action: 'allow' },
    { source: '*', destination: 'db', action: 'allow' },
    { source: 'web', destination: 'db', action: 'deny' },
  ], IntentionCompileErrorCode.DUPLICATE_PAIR, 'intentions[2]');
  expectCompileError([{ source: 'we\u0000b', destination: 'db', action: 'allow' }], IntentionCompileErrorCode.INVALID_NAME, 'intentions[0].source');
  expectCompileError([{ source: 'web', destination: 'd\ud800b', action: 'allow' }], IntentionCompileErrorCode.INVALID_NAME, 'intentions[0].destination');
  expectCompileError([{ source: 42, destination: 'db', action: 'allow' }], IntentionCompileErrorCode.INVALID_NAME, 'intentions[0].source');
  expectCompileError([null], IntentionCompileErrorCode.INVALID_INPUT, 'intentions[0]');
  expectCompileError([{ source: 'é'.repeat(1025), destination: 'db', action: 'allow' }], IntentionCompileErrorCode.NAME_TOO_LONG, 'intentions[0].source');
  expectCompileError('nope', IntentionCompileErrorCode.INVALID_INPUT, 'intentions');
  // 1024 two-byte characters = 2048 bytes: exactly the limit, accepted.
  assert.equal(compile([{ source: 'é'.repeat(1024), destination: 'db', action: 'allow' }]).names.length, 3);

  const badKey = (hashKey: unknown, field: string): void => {
    assert.throws(() => compileIntentions({ intentions: [], defaultAllow: true, hashKey: hashKey as [number, number] }),
      (e: unknown) => e instanceof IntentionCompileError && e.code === IntentionCompileErrorCode.INVALID_HASH_KEY && e.field === field);
  };
  badKey([1], 'hashKey');
  badKey([1.5, 2], 'hashKey[0]');
  badKey([1, 2 ** 32], 'hashKey[1]');
  assert.throws(() => compileIntentions({ intentions: [], defaultAllow: 'yes' as unknown as boolean, hashKey: KEY }),
    (e: unknown) => e instanceof IntentionCompileError && e.field === 'defaultAllow');
});

test('round trip: decode(encode(model)) equals the model (example)', () => {
  const model = compile([
    { source: 'web', destination: 'db', action: 'allow' },
    { source: 'ünïcode-svc', destination: '*', action: 'l7' },
    { source: '*', destination: 'web', action: 'deny' },
  ], true);
  const bytes = encodeTable(model);
  assert.equal(bytes.length % 8, 0);
  assert.deepEqual(decodeTable(bytes), model);
  // Unaligned and shared views decode the same.
  const unaligned = new Uint8Array(bytes.length + 3);
  unaligned.set(bytes, 3);
  assert.deepEqual(decodeTable(unaligned.subarray(3)), model);
  const shared = new Uint8Array(new SharedArrayBuffer(bytes.length));
  shared.set(bytes);
  assert.deepEqual(decodeTable(shared), model);
});

const NAME_POOL = ['web', 'db', 'api', 'cache', 'ü-svc', 'billing.v2', 'x'.repeat(300), '*'];
const arbIntentions = fc.uniqueArray(
  fc.record({
    source: fc.constantFrom(...NAME_POOL, 'a', 'b', 'c'),
    destination: fc.constantFrom(...NAME_POOL, 'd', 'e'),
    action: fc.constantFrom('allow' as const, 'deny' as const, 'l7' as const),
  }),
  { selector: (i) => `${i.source}\u0000${i.destination}`, maxLength: 60 },
);

test('round trip property: decode(encode(model)) equals model; encode(decode(bytes)) equals bytes', () => {
  fc.assert(
    fc.property(arbIntentions, fc.boolean(), fc.nat(0xffffffff), fc.nat(0xffffffff), (intentions, defaultAllow, k0, k1) => {
      const model = compileIntentions({ intentions, defaultAllow, hashKey: [k0, k1] });
      const bytes = encodeTable(model);
      const decoded = decodeTable(bytes);
      assert.deepEqual(decoded, model);
      assert.deepEqual(encodeTable(decoded), bytes);
    }),
    { numRuns: 300 },
  );
});

test('decodeTable rejects corrupted bytes instead of returning a wrong model', () => {
  const model = compile([
    { source: 'web', destination: 'db', action: 'allow' },
    { source: 'api', destination: 'db', action: 'deny' },
  ]);
  const good = encodeTable(model);
  const isCorrupt = (e: unknown): boolean => e instanceof PolicyTableError && e.code === PolicyTableErrorCode.TABLE_CORRUPT;

  const badMagic = good.slice();
  badMagic[0] = 0;
  assert.throws(() => decodeTable(badMagic), isCorrupt);

  assert.throws(() => decodeTable(good.subarray(0, 50)), isCorrupt);
  assert.throws(() => decodeTable(good.subarray(0, good.length - 8)), isCorrupt);

  const badCap = good.slice();
  new Int32Array(badCap.buffer)[TBL_NAME_CAP] = 6;
  assert.throws(() => decodeTable(badCap), isCorrupt);

  // Clear the rule hash table: the rules exist but can no longer be found.
  const noSlots = good.slice();
  const w = new Int32Array(noSlots.buffer);
  w.fill(0, w[TBL_RULE_TABLE]! >> 2, (w[TBL_RULE_TABLE]! >> 2) + model.ruleCapacity);
  assert.throws(() => decodeTable(noSlots), isCorrupt);

  // Every single-byte flip anywhere in the table is either detected or yields a model whose
  // canonical encoding is exactly the flipped bytes (e.g. a renamed name that still hashes to the
  // same slot): decode never returns a model that does not describe its input.
  let detected = 0;
  for (let i = 0; i < good.length; i++) {
    const flipped = good.slice();
    flipped[i] = flipped[i]! ^ 0x40;
    let decoded: CompiledTable;
    try {
      decoded = decodeTable(flipped);
    } catch (e) {
      assert.ok(isCorrupt(e), `byte ${i}: ${String(e)}`);
      detected++;
      continue;
    }
    assert.deepEqual(encodeTable(decoded), flipped, `byte ${i} decoded to a model that does not describe it`);
  }
  assert.ok(detected > good.length * 0.9, `only ${detected} of ${good.length} flips detected`);
});

test('encodeTable refuses a hand-built model that breaks the invariants', () => {
  const model = compile([{ source: 'web', destination: 'db', action: 'allow' }]);
  const isCorrupt = (e: unknown): boolean => e instanceof PolicyTableError && e.code === PolicyTableErrorCode.TABLE_CORRUPT;
  assert.throws(() => encodeTable({ ...model, ruleCapacity: 3 }), isCorrupt);
  assert.throws(() => encodeTable({ ...model, nameCapacity: 2 }), isCorrupt);
  assert.throws(() => encodeTable({ ...model, names: ['web', 'db', '*'] }), isCorrupt);
  assert.throws(() => encodeTable({ ...model, rules: [{ srcId: 9, dstId: 1, action: Action.ALLOW, precedence: 9 }] }), isCorrupt);
  assert.throws(() => encodeTable({ ...model, rules: [{ srcId: 2, dstId: 1, action: Action.ALLOW, precedence: 5 }] }), isCorrupt);
  const dup = model.rules[0]!;
  assert.throws(() => encodeTable({ ...model, rules: [dup, dup] }), isCorrupt);
});
