// Intentions → compiled policy table. Runs on: the control thread (and tests, benchmarks).
//
// Pure: no clock, no I/O, no randomness, no module state. The hash key is an input, so the same
// input always yields the same bytes, and tests can pin keys.
//
// Semantics implemented (Consul CE, shared/reference/consul-mesh.md §2.2–2.4):
//  - "precedence = max − (2 − count(source))" with count(`*`) = 1, count(exact) = 2 in CE
//    (no namespaces yet), max = 9 for an exact destination, 6 for `*`: so exact→exact 9,
//    `*`→exact 8, exact→`*` 6, `*`→`*` 5.
//  - "The first intention whose source matches S is authoritative" after sorting by precedence;
//    with one intention per (source, destination) pair the four candidate keys
//    (s,d), (*,d), (s,*), (*,*) have distinct precedences, so "first match" = "highest precedence".
//  - "L7 intention on a TCP listener [or any L4-only evaluator] → treated as deny": kept as its
//    own action (Action.L7) so the caller can say "Matched L7 intention".
//  - "No matching intention → default policy."
//
// The layout written by encodeTable() is documented in layout.ts.

import { halfSipHash24, halfSipHash24Pair } from './halfsiphash.ts';
import {
  Action,
  LAYOUT_VERSION,
  MAX_NAME_BYTES,
  MAX_NAMES,
  MAX_RULES,
  NAME_DIR_FROM_ANY,
  NAME_DIR_LENGTH,
  NAME_DIR_OFFSET,
  NAME_DIR_TO_ANY,
  NAME_DIR_WORDS,
  NAME_SLOT_HASH,
  NAME_SLOT_ID,
  NAME_SLOT_WORDS,
  PolicyTableError,
  PolicyTableErrorCode,
  RULE_ACTION,
  RULE_DST,
  RULE_PRECEDENCE,
  RULE_SLOT_WORDS,
  RULE_SRC,
  RULE_WORDS,
  TABLE_MAGIC,
  TBL_ANY_TO_ANY,
  TBL_ARENA,
  TBL_ARENA_BYTES,
  TBL_FLAGS,
  TBL_FLAG_DEFAULT_ALLOW,
  TBL_HEADER_WORDS,
  TBL_KEY0,
  TBL_KEY1,
  TBL_MAGIC,
  TBL_NAME_CAP,
  TBL_NAME_COUNT,
  TBL_NAME_DIR,
  TBL_NAME_TABLE,
  TBL_RULES,
  TBL_RULE_CAP,
  TBL_RULE_COUNT,
  TBL_RULE_TABLE,
  TBL_TOTAL_BYTES,
  TBL_VERSION,
  WILDCARD,
  WILDCARD_ID,
  alignUp,
  isPowerOfTwo,
  powerOfTwoAtLeast,
} from './layout.ts';
import type { ActionCode } from './layout.ts';

export type IntentionAction = 'allow' | 'deny' | 'l7';

/** One L4 intention in the CE model. `l7` = an intention with Permissions (deny for L4). */
export interface IntentionRule {
  readonly source: string;
  readonly destination: string;
  readonly action: IntentionAction;
}

export interface CompileInput {
  readonly intentions: readonly IntentionRule[];
  readonly defaultAllow: boolean;
  /** HalfSipHash key as two uint32 words (key bytes 0..3 and 4..7, little-endian). */
  readonly hashKey: readonly [number, number];
}

export interface CompiledRule {
  readonly srcId: number;
  readonly dstId: number;
  readonly action: ActionCode;
  /** Consul precedence: 9, 8, 6 or 5 in CE. */
  readonly precedence: number;
}

/** The plain model of one table; encodeTable() turns it into the bytes of one half. */
export interface CompiledTable {
  /** Normalised to uint32 words. */
  readonly hashKey: readonly [number, number];
  readonly defaultAllow: boolean;
  /** Interned names; index = id. names[0] is always `*`; the rest are sorted (code-unit order). */
  readonly names: readonly string[];
  /** Name hash table slots: power of two, ≥ 2 × (names.length − 1), ≥ 4. */
  readonly nameCapacity: number;
  /** Sorted by precedence descending, then source name, then destination name (Consul's order). */
  readonly rules: readonly CompiledRule[];
  /** Rule hash table slots: power of two, ≥ 2 × rules.length, ≥ 4. */
  readonly ruleCapacity: number;
}

export const IntentionCompileErrorCode = {
  INVALID_INPUT: 'AUTHZ_INVALID_INPUT',
  INVALID_NAME: 'AUTHZ_INVALID_NAME',
  NAME_TOO_LONG: 'AUTHZ_NAME_TOO_LONG',
  PARTIAL_WILDCARD: 'AUTHZ_PARTIAL_WILDCARD',
  INVALID_ACTION: 'AUTHZ_INVALID_ACTION',
  DUPLICATE_PAIR: 'AUTHZ_DUPLICATE_INTENTION',
  INVALID_HASH_KEY: 'AUTHZ_INVALID_HASH_KEY',
  TOO_MANY: 'AUTHZ_TOO_MANY_INTENTIONS',
} as const;
export type IntentionCompileErrorCodeValue =
  (typeof IntentionCompileErrorCode)[keyof typeof IntentionCompileErrorCode];

/** A rejected input. `field` names the offending field, e.g. `intentions[3].source`. */
export class IntentionCompileError extends Error {
  readonly code: IntentionCompileErrorCodeValue;
  readonly field: string;
  constructor(code: IntentionCompileErrorCodeValue, field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = 'IntentionCompileError';
    this.code = code;
    this.field = field;
  }
}

const ACTION_CODES: Readonly<Record<IntentionAction, ActionCode>> = {
  allow: Action.ALLOW,
  deny: Action.DENY,
  l7: Action.L7,
};

const ACTION_NAMES: Readonly<Record<ActionCode, IntentionAction>> = {
  [Action.ALLOW]: 'allow',
  [Action.DENY]: 'deny',
  [Action.L7]: 'l7',
};

export function actionName(code: number): IntentionAction | undefined {
  return ACTION_NAMES[code as ActionCode];
}

/** Consul CE precedence of a (source, destination) pattern: 9, 8, 6 or 5. */
export function intentionPrecedence(source: string, destination: string): number {
  const max = destination === WILDCARD ? 6 : 9;
  return max - (source === WILDCARD ? 1 : 0);
}

/** The same precedence from interned ids (0 = `*`); used to check decoded and hand-built models. */
function precedenceOfIds(srcId: number, dstId: number): number {
  return (dstId === WILDCARD_ID ? 6 : 9) - (srcId === WILDCARD_ID ? 1 : 0);
}

const utf8 = new TextEncoder();

// Control characters never appear in a service name or SPIFFE ID; refusing them keeps NUL and
// friends out of the arena a future C/WASM reader walks.
// eslint-disable-next-line no-control-regex
const CONTROL_CHARS = /[\u0000-\u001f\u007f]/;

function validateName(value: unknown, field: string): string {
  if (typeof value !== 'string') {
    throw new IntentionCompileError(IntentionCompileErrorCode.INVALID_NAME, field, 'must be a string');
  }
  if (value.length === 0) {
    throw new IntentionCompileError(IntentionCompileErrorCode.INVALID_NAME, field,
      'must not be empty; use "*" to match every service');
  }
  if (value !== WILDCARD && value.includes(WILDCARD)) {
    throw new IntentionCompileError(IntentionCompileErrorCode.PARTIAL_WILDCARD, field,
      `"${value}" mixes "*" with other characters; only the whole name may be "*" (Consul has no prefix wildcards)`);
  }
  // Lone surrogates would encode to U+FFFD, so two different strings could intern to the same
  // bytes; a valid name is always well-formed UTF-16.
  if (!value.isWellFormed() || CONTROL_CHARS.test(value)) {
    throw new IntentionCompileError(IntentionCompileErrorCode.INVALID_NAME, field,
      'contains a control character or an unpaired surrogate; service names are printable text');
  }
  // UTF-8 length ≤ 3 × UTF-16 length, so short strings skip the encode.
  if (value.length * 3 > MAX_NAME_BYTES && utf8.encode(value).length > MAX_NAME_BYTES) {
    throw new IntentionCompileError(IntentionCompileErrorCode.NAME_TOO_LONG, field,
      `is longer than ${MAX_NAME_BYTES} UTF-8 bytes (the SPIFFE ID limit)`);
  }
  return value;
}

function validateKeyWord(value: unknown, field: string): number {
  if (typeof value !== 'number' || !Number.isInteger(value) || value < -0x80000000 || value > 0xffffffff) {
    throw new IntentionCompileError(IntentionCompileErrorCode.INVALID_HASH_KEY, field,
      'must be an integer in [-2^31, 2^32); draw it with crypto.getRandomValues(new Uint32Array(2))');
  }
  return value >>> 0;
}

/** Ids fit in 22 bits (MAX_NAMES = 2^22), so (src, dst) pairs pack into 44 bits. */
const ID_RADIX = MAX_NAMES;

function compareStrings(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * Validates the intentions and builds the table model: names interned to dense ids (1.., sorted;
 * 0 = `*`), rules with ids and precedence, sorted in Consul's evaluation order, and hash-table
 * capacities at load factor ≤ 0.5. Throws IntentionCompileError naming the offending field.
 */
export function compileIntentions(input: CompileInput): CompiledTable {
  // Runtime checks on typed fields are deliberate: this is defence in depth behind the control
  // thread's own validation, so it must hold even for inputs that bypassed the type system.
  const { intentions, defaultAllow, hashKey } = input as Partial<CompileInput>;
  if (!Array.isArray(intentions)) {
    throw new IntentionCompileError(IntentionCompileErrorCode.INVALID_INPUT, 'intentions', 'must be an array');
  }
  if (typeof defaultAllow !== 'boolean') {
    throw new IntentionCompileError(IntentionCompileErrorCode.INVALID_INPUT, 'defaultAllow', 'must be a boolean');
  }
  if (!Array.isArray(hashKey) || hashKey.length !== 2) {
    throw new IntentionCompileError(IntentionCompileErrorCode.INVALID_HASH_KEY, 'hashKey', 'must be [uint32, uint32]');
  }
  const key: [number, number] = [validateKeyWord(hashKey[0], 'hashKey[0]'), validateKeyWord(hashKey[1], 'hashKey[1]')];
  if (intentions.length > MAX_RULES) {
    throw new IntentionCompileError(IntentionCompileErrorCode.TOO_MANY, 'intentions',
      `has ${intentions.length} entries; the table holds at most ${MAX_RULES}`);
  }

  // Pass 1: validate and intern with provisional ids in first-seen order. Each distinct name is
  // validated once (a 100k-rule set typically names a few thousand services), and duplicate
  // pairs are found on integer keys instead of strings.
  const typed = intentions as readonly unknown[];
  const count = typed.length;
  const provisional = new Map<string, number>(); // name → provisional id (1..); `*` is 0
  const provisionalNames: string[] = [WILDCARD];
  const srcP = new Int32Array(count);
  const dstP = new Int32Array(count);
  const actions = new Uint8Array(count);
  const seenPairs = new Set<number>();
  const intern = (value: unknown, field: string): number => {
    if (typeof value === 'string') {
      if (value === WILDCARD) return WILDCARD_ID;
      const known = provisional.get(value);
      if (known !== undefined) return known;
    }
    const name = validateName(value, field);
    if (provisionalNames.length >= MAX_NAMES) {
      throw new IntentionCompileError(IntentionCompileErrorCode.TOO_MANY, field,
        `is the ${MAX_NAMES}th distinct service name; the table holds at most ${MAX_NAMES - 1}`);
    }
    const id = provisionalNames.length;
    provisional.set(name, id);
    provisionalNames.push(name);
    return id;
  };
  for (let i = 0; i < count; i++) {
    const raw = typed[i];
    const field = `intentions[${i}]`;
    if (typeof raw !== 'object' || raw === null) {
      throw new IntentionCompileError(IntentionCompileErrorCode.INVALID_INPUT, field, 'must be an object');
    }
    const entry = raw as Partial<Record<keyof IntentionRule, unknown>>;
    const s = intern(entry.source, `${field}.source`);
    const d = intern(entry.destination, `${field}.destination`);
    const action = typeof entry.action === 'string' && Object.hasOwn(ACTION_CODES, entry.action)
      ? ACTION_CODES[entry.action as IntentionAction]
      : undefined;
    if (action === undefined) {
      throw new IntentionCompileError(IntentionCompileErrorCode.INVALID_ACTION, `${field}.action`,
        'must be "allow", "deny" or "l7"');
    }
    const pair = s * ID_RADIX + d; // < 2^44: exact in a double
    if (seenPairs.has(pair)) {
      // Consul keeps one intention per (source, destination): a second one is ambiguous.
      throw new IntentionCompileError(IntentionCompileErrorCode.DUPLICATE_PAIR, field,
        `duplicates the intention ${provisionalNames[s]} → ${provisionalNames[d]}; merge them into one`);
    }
    seenPairs.add(pair);
    srcP[i] = s;
    dstP[i] = d;
    actions[i] = action;
  }

  // Final ids: names in code-unit order, so id order is name order.
  const sortedNames = provisionalNames.slice(1).sort(compareStrings);
  const names = [WILDCARD, ...sortedNames];
  const finalId = new Int32Array(provisionalNames.length); // provisional → final; 0 stays 0
  for (let id = 1; id < names.length; id++) finalId[provisional.get(names[id]!)!] = id;

  // Consul's evaluation order: precedence descending, then source name, then destination name.
  // Within one precedence class sources are all `*` or all exact (likewise destinations), so
  // name order there is id order. One sortable number per rule, 48 bits (exact in a double):
  //   rank (2 bits: 9→0, 8→1, 6→2, 5→3) | srcId (22) | dstId (22) | action (2)
  // and a native Float64Array sort replaces a string comparator (≈5× faster at 100k rules).
  const keys = new Float64Array(count);
  for (let i = 0; i < count; i++) {
    const src = finalId[srcP[i]!]!;
    const dst = finalId[dstP[i]!]!;
    const rank = (src === WILDCARD_ID ? 1 : 0) + (dst === WILDCARD_ID ? 2 : 0);
    keys[i] = ((rank * ID_RADIX + src) * ID_RADIX + dst) * 4 + actions[i]!;
  }
  keys.sort();
  const rules: CompiledRule[] = new Array<CompiledRule>(count);
  for (let i = 0; i < count; i++) {
    const k = keys[i]!;
    const action = (k % 4) as ActionCode;
    const pair = (k - action) / 4;
    const dstId = pair % ID_RADIX;
    const srcId = Math.floor(pair / ID_RADIX) % ID_RADIX;
    rules[i] = { srcId, dstId, action, precedence: precedenceOfIds(srcId, dstId) };
  }

  return {
    hashKey: key,
    defaultAllow,
    names,
    nameCapacity: powerOfTwoAtLeast(2 * (names.length - 1)),
    rules,
    ruleCapacity: powerOfTwoAtLeast(2 * rules.length),
  };
}

interface SectionOffsets {
  readonly nameDir: number;
  readonly nameTable: number;
  readonly ruleTable: number;
  readonly rules: number;
  readonly arena: number;
  readonly total: number;
}

function sectionOffsets(nameCount: number, nameCap: number, ruleCount: number, ruleCap: number, arenaBytes: number): SectionOffsets {
  const nameDir = TBL_HEADER_WORDS * 4;
  const nameTable = alignUp(nameDir + nameCount * NAME_DIR_WORDS * 4, 8);
  const ruleTable = alignUp(nameTable + nameCap * NAME_SLOT_WORDS * 4, 8);
  const rules = alignUp(ruleTable + ruleCap * RULE_SLOT_WORDS * 4, 8);
  const arena = alignUp(rules + ruleCount * RULE_WORDS * 4, 8);
  const total = alignUp(arena + arenaBytes, 8);
  return { nameDir, nameTable, ruleTable, rules, arena, total };
}

function corrupt(message: string): PolicyTableError {
  return new PolicyTableError(PolicyTableErrorCode.TABLE_CORRUPT, `policy table: ${message}`);
}

/** Checks the invariants encodeTable relies on; a hand-built model gets the same guarantees. */
function checkModel(model: CompiledTable): void {
  const { names, rules, nameCapacity, ruleCapacity } = model;
  if (names[0] !== WILDCARD) throw corrupt('names[0] must be "*"');
  if (!isPowerOfTwo(nameCapacity) || nameCapacity < 4 || nameCapacity < 2 * (names.length - 1)) {
    throw corrupt(`nameCapacity ${nameCapacity} must be a power of two ≥ max(4, 2 × ${names.length - 1})`);
  }
  if (!isPowerOfTwo(ruleCapacity) || ruleCapacity < 4 || ruleCapacity < 2 * rules.length) {
    throw corrupt(`ruleCapacity ${ruleCapacity} must be a power of two ≥ max(4, 2 × ${rules.length})`);
  }
  if (rules.length > MAX_RULES || names.length > MAX_NAMES) throw corrupt('model exceeds the format limits');
  for (const r of rules) {
    if (!(r.srcId >= 0 && r.srcId < names.length && r.dstId >= 0 && r.dstId < names.length)) {
      throw corrupt(`rule ids (${r.srcId}, ${r.dstId}) out of range`);
    }
    if (actionName(r.action) === undefined) throw corrupt(`rule action ${r.action} unknown`);
    if (r.precedence !== precedenceOfIds(r.srcId, r.dstId)) throw corrupt(`rule precedence ${r.precedence} wrong for its pattern`);
  }
}

/**
 * Encodes a model into the bytes of one half (layout.ts). Offsets are relative to the half start.
 * Deterministic: the same model gives the same bytes.
 */
export function encodeTable(model: CompiledTable): Uint8Array {
  checkModel(model);
  const { names, rules, nameCapacity, ruleCapacity } = model;
  const k0 = model.hashKey[0] | 0;
  const k1 = model.hashKey[1] | 0;
  const encoded = names.map((n) => utf8.encode(n));
  let arenaBytes = 0;
  for (const b of encoded) arenaBytes += b.length;
  const off = sectionOffsets(names.length, nameCapacity, rules.length, ruleCapacity, arenaBytes);

  const bytes = new Uint8Array(off.total);
  const w = new Int32Array(bytes.buffer);
  w[TBL_MAGIC] = TABLE_MAGIC;
  w[TBL_VERSION] = LAYOUT_VERSION;
  w[TBL_TOTAL_BYTES] = off.total;
  w[TBL_KEY0] = k0;
  w[TBL_KEY1] = k1;
  w[TBL_FLAGS] = model.defaultAllow ? TBL_FLAG_DEFAULT_ALLOW : 0;
  w[TBL_NAME_COUNT] = names.length;
  w[TBL_NAME_CAP] = nameCapacity;
  w[TBL_RULE_COUNT] = rules.length;
  w[TBL_RULE_CAP] = ruleCapacity;
  w[TBL_NAME_DIR] = off.nameDir;
  w[TBL_NAME_TABLE] = off.nameTable;
  w[TBL_ARENA] = off.arena;
  w[TBL_ARENA_BYTES] = arenaBytes;
  w[TBL_RULE_TABLE] = off.ruleTable;
  w[TBL_RULES] = off.rules;

  // Arena and directory: id order, so the arena is the names concatenated.
  let cursor = off.arena;
  for (let id = 0; id < encoded.length; id++) {
    const b = encoded[id]!;
    bytes.set(b, cursor);
    const d = (off.nameDir >> 2) + id * NAME_DIR_WORDS;
    w[d + NAME_DIR_OFFSET] = cursor;
    w[d + NAME_DIR_LENGTH] = b.length;
    cursor += b.length;
  }

  // Name hash table: every id but the wildcard.
  const nameMask = nameCapacity - 1;
  const nameBase = off.nameTable >> 2;
  for (let id = 1; id < encoded.length; id++) {
    const b = encoded[id]!;
    const h = halfSipHash24(k0, k1, b, 0, b.length);
    let i = h & nameMask;
    while (w[nameBase + i * NAME_SLOT_WORDS + NAME_SLOT_ID] !== 0) i = (i + 1) & nameMask;
    w[nameBase + i * NAME_SLOT_WORDS + NAME_SLOT_HASH] = h;
    w[nameBase + i * NAME_SLOT_WORDS + NAME_SLOT_ID] = id;
  }

  // Rules array and rule hash table.
  const ruleMask = ruleCapacity - 1;
  const ruleTableBase = off.ruleTable >> 2;
  const rulesBase = off.rules >> 2;
  for (let r = 0; r < rules.length; r++) {
    const rule = rules[r]!;
    const e = rulesBase + r * RULE_WORDS;
    w[e + RULE_SRC] = rule.srcId;
    w[e + RULE_DST] = rule.dstId;
    w[e + RULE_ACTION] = rule.action;
    w[e + RULE_PRECEDENCE] = rule.precedence;
    // Compile-time wildcard resolution (layout.ts): the reader's three fallbacks become reads.
    if (rule.srcId === WILDCARD_ID && rule.dstId === WILDCARD_ID) w[TBL_ANY_TO_ANY] = r + 1;
    else if (rule.srcId === WILDCARD_ID) w[(off.nameDir >> 2) + rule.dstId * NAME_DIR_WORDS + NAME_DIR_FROM_ANY] = r + 1;
    else if (rule.dstId === WILDCARD_ID) w[(off.nameDir >> 2) + rule.srcId * NAME_DIR_WORDS + NAME_DIR_TO_ANY] = r + 1;
    let i = halfSipHash24Pair(k0, k1, rule.srcId, rule.dstId) & ruleMask;
    while (w[ruleTableBase + i] !== 0) {
      const other = rules[w[ruleTableBase + i]! - 1]!;
      if (other.srcId === rule.srcId && other.dstId === rule.dstId) {
        throw corrupt(`two rules for the pair (${rule.srcId}, ${rule.dstId})`);
      }
      i = (i + 1) & ruleMask;
    }
    w[ruleTableBase + i] = r + 1;
  }
  return bytes;
}

/**
 * Decodes the bytes of one half back into its model, checking every structural invariant
 * (bounds, alignment, capacities, that each name and rule is reachable by its probe sequence)
 * and finally that the bytes are exactly encodeTable(model).
 * Used by the round-trip test and for inspecting a live table; throws PolicyTableError
 * (AUTHZ_TABLE_CORRUPT) on any inconsistency.
 */
export function decodeTable(input: Uint8Array): CompiledTable {
  // Int32Array needs 4-byte alignment; copy when the view is unaligned (or shared: decoding must
  // not race a writer, and TextDecoder refuses shared views).
  const bytes = input.byteOffset % 4 === 0 && !(input.buffer instanceof SharedArrayBuffer)
    ? input
    : input.slice();
  if (bytes.length < TBL_HEADER_WORDS * 4) throw corrupt(`${bytes.length} bytes is shorter than the header`);
  const w = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.length >> 2);
  const word = (i: number): number => w[i]!;
  if (word(TBL_MAGIC) !== TABLE_MAGIC) throw corrupt(`bad table magic 0x${(word(TBL_MAGIC) >>> 0).toString(16)}`);
  if (word(TBL_VERSION) !== LAYOUT_VERSION) throw corrupt(`table layout version ${word(TBL_VERSION)}, expected ${LAYOUT_VERSION}`);
  const total = word(TBL_TOTAL_BYTES);
  if (total > bytes.length || total < TBL_HEADER_WORDS * 4) throw corrupt(`total ${total} outside ${bytes.length} bytes`);
  const nameCount = word(TBL_NAME_COUNT);
  const nameCap = word(TBL_NAME_CAP);
  const ruleCount = word(TBL_RULE_COUNT);
  const ruleCap = word(TBL_RULE_CAP);
  const arenaBytes = word(TBL_ARENA_BYTES);
  if (nameCount < 1 || nameCount > MAX_NAMES || !isPowerOfTwo(nameCap) || nameCap < 2 * (nameCount - 1)) {
    throw corrupt(`name count ${nameCount} / capacity ${nameCap} inconsistent`);
  }
  if (ruleCount < 0 || ruleCount > MAX_RULES || !isPowerOfTwo(ruleCap) || ruleCap < 2 * ruleCount) {
    throw corrupt(`rule count ${ruleCount} / capacity ${ruleCap} inconsistent`);
  }
  if (arenaBytes < 0) throw corrupt('negative arena length');
  const expected = sectionOffsets(nameCount, nameCap, ruleCount, ruleCap, arenaBytes);
  if (word(TBL_NAME_DIR) !== expected.nameDir || word(TBL_NAME_TABLE) !== expected.nameTable ||
      word(TBL_RULE_TABLE) !== expected.ruleTable || word(TBL_RULES) !== expected.rules ||
      word(TBL_ARENA) !== expected.arena || total !== expected.total) {
    throw corrupt('section offsets do not match the counts');
  }
  const flags = word(TBL_FLAGS);
  if ((flags & ~TBL_FLAG_DEFAULT_ALLOW) !== 0) throw corrupt(`unknown flags 0x${flags.toString(16)}`);
  const k0 = word(TBL_KEY0);
  const k1 = word(TBL_KEY1);

  const decoder = new TextDecoder('utf-8', { fatal: true });
  const names: string[] = [];
  const dirBase = expected.nameDir >> 2;
  for (let id = 0; id < nameCount; id++) {
    const start = word(dirBase + id * NAME_DIR_WORDS + NAME_DIR_OFFSET);
    const len = word(dirBase + id * NAME_DIR_WORDS + NAME_DIR_LENGTH);
    if (start < expected.arena || len < 0 || len > MAX_NAME_BYTES || start + len > expected.arena + arenaBytes) {
      throw corrupt(`name ${id} points outside the arena`);
    }
    let name: string;
    try {
      name = decoder.decode(bytes.subarray(start, start + len));
    } catch {
      throw corrupt(`name ${id} is not valid UTF-8`);
    }
    names.push(name);
  }
  if (names[0] !== WILDCARD) throw corrupt('id 0 is not "*"');

  // Every name but the wildcard must be reachable from its hash; every used slot must be a name.
  const nameBase = expected.nameTable >> 2;
  const nameMask = nameCap - 1;
  let usedNameSlots = 0;
  for (let i = 0; i < nameCap; i++) if (word(nameBase + i * NAME_SLOT_WORDS + NAME_SLOT_ID) !== 0) usedNameSlots++;
  if (usedNameSlots !== nameCount - 1) throw corrupt(`${usedNameSlots} used name slots for ${nameCount - 1} names`);
  for (let id = 1; id < nameCount; id++) {
    const d = dirBase + id * NAME_DIR_WORDS;
    const start = word(d + NAME_DIR_OFFSET);
    const h = halfSipHash24(k0, k1, bytes, start, start + word(d + NAME_DIR_LENGTH));
    let i = h & nameMask;
    for (let probes = 0; ; probes++) {
      const s = nameBase + i * NAME_SLOT_WORDS;
      const slotId = word(s + NAME_SLOT_ID);
      if (slotId === 0 || probes === nameCap) throw corrupt(`name ${id} unreachable in the name table`);
      if (slotId === id) {
        if (word(s + NAME_SLOT_HASH) !== h) throw corrupt(`name ${id} stored with a wrong hash`);
        break;
      }
      i = (i + 1) & nameMask;
    }
  }

  const rules: CompiledRule[] = [];
  const rulesBase = expected.rules >> 2;
  for (let r = 0; r < ruleCount; r++) {
    const e = rulesBase + r * RULE_WORDS;
    const srcId = word(e + RULE_SRC);
    const dstId = word(e + RULE_DST);
    const action = word(e + RULE_ACTION);
    const precedence = word(e + RULE_PRECEDENCE);
    if (srcId < 0 || srcId >= nameCount || dstId < 0 || dstId >= nameCount) throw corrupt(`rule ${r} ids out of range`);
    if (actionName(action) === undefined) throw corrupt(`rule ${r} has unknown action ${action}`);
    if (precedence !== precedenceOfIds(srcId, dstId)) throw corrupt(`rule ${r} has precedence ${precedence}, not its pattern's`);
    rules.push({ srcId, dstId, action: action as ActionCode, precedence });
  }
  const ruleTableBase = expected.ruleTable >> 2;
  const ruleMask = ruleCap - 1;
  let usedRuleSlots = 0;
  for (let i = 0; i < ruleCap; i++) {
    const v = word(ruleTableBase + i);
    if (v < 0 || v > ruleCount) throw corrupt(`rule slot ${i} holds ${v}`);
    if (v !== 0) usedRuleSlots++;
  }
  if (usedRuleSlots !== ruleCount) throw corrupt(`${usedRuleSlots} used rule slots for ${ruleCount} rules`);
  for (let r = 0; r < ruleCount; r++) {
    const rule = rules[r]!;
    let i = halfSipHash24Pair(k0, k1, rule.srcId, rule.dstId) & ruleMask;
    for (let probes = 0; ; probes++) {
      const v = word(ruleTableBase + i);
      if (v === 0 || probes === ruleCap) throw corrupt(`rule ${r} unreachable in the rule table`);
      if (v === r + 1) break;
      i = (i + 1) & ruleMask;
    }
  }

  const model: CompiledTable = {
    hashKey: [k0 >>> 0, k1 >>> 0],
    defaultAllow: (flags & TBL_FLAG_DEFAULT_ALLOW) !== 0,
    names,
    nameCapacity: nameCap,
    rules,
    ruleCapacity: ruleCap,
  };
  // Last, the strongest check: the bytes must be exactly what encodeTable writes for this model
  // (reserved words and padding zero, every entry in the slot its probe order gives it). So a
  // decoded model always describes its bytes completely, and nothing can hide in unused space.
  const canonical = encodeTable(model);
  for (let i = 0; i < total; i++) {
    if (canonical[i] !== bytes[i]) throw corrupt(`byte ${i} differs from the canonical encoding of the decoded model`);
  }
  return model;
}
