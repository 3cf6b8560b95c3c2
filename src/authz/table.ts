// The published policy table: one writer (control thread), many readers (data-plane workers, and
// the control thread itself for /v1/connect/intentions/check), sharing one
// `WebAssembly.Memory({ shared: true })`. Layout: layout.ts. Compilation: compile.ts.
//
// Runs on: PolicyTableWriter → control thread only. PolicyTableReader → any thread, one reader
// per thread per slot.
//
// ───────────────────────── publication protocol ─────────────────────────
//
// Double buffering. The table of generation g lives in half g & 1; a publish writes half
// (g + 1) & 1, the inactive one, then bumps GENERATION. A reader announces the generation it is
// about to read in its own READER_EPOCH slot, then re-checks GENERATION:
//
//   reader                                      writer, publishing generation g+1 into h = (g+1)&1
//   R1 e = load(GENERATION)                     W1 wait until every READER_EPOCH[i] is 0 or ≥ g
//   R2 store(EPOCH[me], e)                      W2 write half h (plain writes), HALF_OFFSET/BYTES[h]
//   R3 if load(GENERATION) ≠ e: goto R1         W3 add(GENERATION, 1)
//   R4 read half e & 1 (plain reads)
//   R5 store(EPOCH[me], 0)
//
// Why no reader ever sees half h while it is being written (all five Atomics operations are
// sequentially consistent, so they sit in one total order S that respects each thread's
// program order):
//  - A reader reads half h only with an announced epoch e where e & 1 = h and, at R3, GENERATION
//    was still e. While the writer is between W1 and W3 of generation g+1, GENERATION = g with
//    g & 1 ≠ h, so any such reader has e ≤ g − 1 (generations only grow).
//  - Suppose that reader's R2 (store e) comes before the writer's W1 load of its slot in S: then
//    W1 sees e, or a later value of that slot. e is nonzero and < g, so W1 keeps waiting until
//    the slot shows 0 (R5, after R4 in program order) or a generation ≥ g (a later R2, also after
//    R5). Either way R4 is finished before W2 starts: the reader's R5/R2 store synchronises with
//    W1's load, so the plain reads of R4 happen-before the plain writes of W2.
//  - Otherwise W1's load of the slot precedes R2 in S, hence R3 (after R2) also follows W1, and
//    W1 follows the writer's W3 of generation g (program order). So R3 reads GENERATION ≥ g ≠ e
//    and the reader retries instead of reading. A reader that re-validates against g reads half
//    g & 1 ≠ h.
//  - In the other direction, W3 is a release: a reader whose R1/R3 load returns g+1
//    synchronises with it, so every plain write of W2 (the half and its offset/size slots)
//    happens-before the reader's R4. Readers therefore see a complete table, never a partial one.
// The only wait is on the writer side (W1); the reader path is two loads and two stores, no lock,
// no loop except the R3 retry, which only runs when a publish lands in that ~100 ns window.
//
// A reader that dies between R2 and R5 would block W1 forever; the writer gives up after
// `drainTimeoutMs` with AUTHZ_READER_STALLED (it never overwrites a half that may be in use), and
// the control thread, which sees worker exits, calls releaseReaderSlot() for dead workers.
//
// ───────────────────────── growth ─────────────────────────
//
// A table that does not fit its half is written somewhere else: the inactive half is relocated
// (new HALF_OFFSET/HALF_BYTES, set before W3), to the end of the heap, or extended in place if it
// already is the last allocation. Capacity at least doubles on each relocation, so the space left
// behind by old half positions is a geometric series bounded by the live size: memory stays
// ≤ ~3× the two halves. If the heap end passes the memory size the writer calls memory.grow().
//
// Growing a shared WebAssembly.Memory never moves or detaches it, but `memory.buffer` then
// returns a NEW SharedArrayBuffer object of the new length; the old object keeps its old length,
// and views on it cannot see the new pages. Readers keep views on the buffer they last fetched
// and, per lookup, compare the half's end (HALF_OFFSET + HALF_BYTES, read anyway) against their
// view's length: one integer comparison. Only when it is too short do they re-fetch
// `memory.buffer` (measured on Node 24: a worker sees the grown length on its next access,
// even right after an Atomics.wait wake-up). The header lives in the first page, so the
// constructor-time view of it stays valid forever.

import { setImmediate as nextTurn, setTimeout as sleep } from 'node:timers/promises';
import { actionName, encodeTable } from './compile.ts';
import type { CompiledTable, IntentionAction } from './compile.ts';
import { halfSipHash24, halfSipHash24Pair } from './halfsiphash.ts';
import {
  HDR_FIXED_WORDS,
  HDR_GENERATION,
  HDR_HALF_BYTES,
  HDR_HALF_OFFSET,
  HDR_HALVES_START,
  HDR_HEAP_END,
  HDR_LAYOUT_VERSION,
  HDR_MAGIC,
  HDR_MAX_READERS,
  LAYOUT_VERSION,
  MAGIC,
  MAX_MEMORY_PAGES,
  MAX_NAME_BYTES,
  MAX_READER_SLOTS,
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
  RULE_SRC,
  RULE_WORDS,
  TBL_ANY_TO_ANY,
  TBL_FLAGS,
  TBL_FLAG_DEFAULT_ALLOW,
  TBL_KEY0,
  TBL_KEY1,
  TBL_NAME_CAP,
  TBL_NAME_COUNT,
  TBL_NAME_DIR,
  TBL_NAME_TABLE,
  TBL_RULES,
  TBL_RULE_CAP,
  TBL_RULE_COUNT,
  TBL_RULE_TABLE,
  WASM_PAGE_BYTES,
  alignUp,
  globalHeaderBytes,
  readerClaimWord,
  readerEpochWord,
} from './layout.ts';

// ───────────────────────── decisions ─────────────────────────

/**
 * Decision codes, in the low 3 bits of a decision int. ALLOW/DENY/L7_DENY equal the stored
 * rule action (layout.ts Action), so a matched rule's action is returned as is.
 */
export const Decision = {
  ALLOW: 1,
  DENY: 2,
  /** Matched an intention with Permissions: deny for any L4 check ("Matched L7 intention"). */
  L7_DENY: 3,
  DEFAULT_ALLOW: 4,
  DEFAULT_DENY: 5,
} as const;
export type DecisionCode = (typeof Decision)[keyof typeof Decision];

/** decision = code | (ruleIndex + 1) << 3; rule bits 0 = no rule matched (default policy). */
const DECISION_RULE_SHIFT = 3;
const DECISION_CODE_MASK = (1 << DECISION_RULE_SHIFT) - 1;
export const NO_RULE = -1;

export function decisionCode(decision: number): DecisionCode {
  return (decision & DECISION_CODE_MASK) as DecisionCode;
}

/** Index of the matched rule (for ruleAt), or NO_RULE (-1) when the default policy decided. */
export function decisionRule(decision: number): number {
  return (decision >>> DECISION_RULE_SHIFT) - 1;
}

export function isAllowed(decision: number): boolean {
  const code = decision & DECISION_CODE_MASK;
  return code === Decision.ALLOW || code === Decision.DEFAULT_ALLOW;
}

export interface RuleView {
  readonly source: string;
  readonly destination: string;
  readonly action: IntentionAction;
  readonly precedence: number;
}

// ───────────────────────── writer ─────────────────────────

export interface PolicyTableWriterOptions {
  /** Reader slots: one per worker thread, plus one for every control-thread reader. */
  readonly maxReaders: number;
  /**
   * Initial memory size in 64 KiB pages. Default 4: two halves of ~128 KiB, which hold ~4,000
   * rules over a few hundred services, or ~1,800 rules that each name a new service.
   */
  readonly initialPages?: number;
  /** Growth limit in pages. Default 16384 (1 GiB); at most 32767 (offsets are int32). */
  readonly maximumPages?: number;
  /**
   * How long publish() waits for readers to leave the half it must overwrite before failing
   * with AUTHZ_READER_STALLED. A lookup takes well under 10 µs, so the 10 s default only trips
   * on a reader that died mid-lookup (see releaseReaderSlot).
   */
  readonly drainTimeoutMs?: number;
}

const DEFAULT_INITIAL_PAGES = 4;
const DEFAULT_MAXIMUM_PAGES = 16384;
const DEFAULT_DRAIN_TIMEOUT_MS = 10_000;
/** The smallest encoded table (no names, no rules) is 96 + 8 + 32 + 16 + 8 = 160 bytes. */
const MIN_HALF_BYTES = 4096;
/** GENERATION is an int32; stop before it wraps (2^31 − 1 publishes ≈ 68 years at 1 per second). */
const MAX_GENERATION = 0x7fffffff;
/** Drain polling: this many setImmediate turns (≈ µs each) before falling back to 1 ms sleeps. */
const DRAIN_SPIN_TURNS = 16;

function checkIntOption(name: string, value: number, min: number, max: number): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new PolicyTableError(PolicyTableErrorCode.BAD_OPTION, `${name} must be an integer in [${min}, ${max}], got ${value}`);
  }
  return value;
}

/** Creates the shared memory and publishes compiled tables into it. Control thread only. */
export class PolicyTableWriter {
  readonly #memory: WebAssembly.Memory;
  /** View of the global header on the first buffer; the header never moves. */
  readonly #hdr: Int32Array;
  readonly #maxReaders: number;
  readonly #maximumPages: number;
  readonly #drainTimeoutMs: number;
  /** Publishes run one at a time, in call order. */
  #tail: Promise<unknown> = Promise.resolve();

  constructor(opts: PolicyTableWriterOptions) {
    const maxReaders = checkIntOption('maxReaders', opts.maxReaders, 1, MAX_READER_SLOTS);
    const maximumPages = checkIntOption('maximumPages', opts.maximumPages ?? DEFAULT_MAXIMUM_PAGES, 1, MAX_MEMORY_PAGES);
    const requestedPages = checkIntOption('initialPages', opts.initialPages ?? DEFAULT_INITIAL_PAGES, 1, maximumPages);
    this.#drainTimeoutMs = opts.drainTimeoutMs ?? DEFAULT_DRAIN_TIMEOUT_MS;
    if (!(this.#drainTimeoutMs > 0)) {
      throw new PolicyTableError(PolicyTableErrorCode.BAD_OPTION, `drainTimeoutMs must be > 0, got ${this.#drainTimeoutMs}`);
    }
    const halvesStart = globalHeaderBytes(maxReaders);
    const initialPages = Math.max(requestedPages, Math.ceil((halvesStart + 2 * MIN_HALF_BYTES) / WASM_PAGE_BYTES));
    if (initialPages > maximumPages) {
      throw new PolicyTableError(PolicyTableErrorCode.BAD_OPTION, `maximumPages ${maximumPages} is too small for ${maxReaders} readers`);
    }
    this.#maxReaders = maxReaders;
    this.#maximumPages = maximumPages;
    this.#memory = new WebAssembly.Memory({ initial: initialPages, maximum: maximumPages, shared: true });
    const buffer = this.#memory.buffer;
    const halfBytes = Math.floor((buffer.byteLength - halvesStart) / 2 / 64) * 64;
    const hdr = new Int32Array(buffer, 0, HDR_FIXED_WORDS + 2 * maxReaders);
    // Fresh memory is zeroed: GENERATION 0 (nothing published), every reader idle and unclaimed.
    hdr[HDR_LAYOUT_VERSION] = LAYOUT_VERSION;
    hdr[HDR_HALF_OFFSET] = halvesStart;
    hdr[HDR_HALF_OFFSET + 1] = halvesStart + halfBytes;
    hdr[HDR_HALF_BYTES] = halfBytes;
    hdr[HDR_HALF_BYTES + 1] = halfBytes;
    hdr[HDR_MAX_READERS] = maxReaders;
    hdr[HDR_HEAP_END] = halvesStart + 2 * halfBytes;
    hdr[HDR_HALVES_START] = halvesStart;
    // MAGIC last: a memory with a valid MAGIC has a complete header. (postMessage to workers
    // happens after the constructor returns, which orders these writes before any reader.)
    Atomics.store(hdr, HDR_MAGIC, MAGIC);
    this.#hdr = hdr;
  }

  /** The shared memory; post it to workers (it is shared, not transferred). */
  get memory(): WebAssembly.Memory {
    return this.#memory;
  }

  get maxReaders(): number {
    return this.#maxReaders;
  }

  /** The last published generation (0 before the first publish). */
  generation(): number {
    return Atomics.load(this.#hdr, HDR_GENERATION);
  }

  /**
   * Encodes `model`, waits until no reader can be reading the inactive half, writes it there and
   * makes it the active one. Resolves to the new generation. Calls are serialised in call order.
   * Rejects with IntentionCompile/PolicyTable errors; a rejected publish leaves the active table
   * untouched.
   */
  async publish(model: CompiledTable): Promise<number> {
    const bytes = encodeTable(model);
    const run = this.#tail.then(() => this.#publishBytes(bytes));
    this.#tail = run.then(
      () => undefined,
      () => undefined,
    );
    return run;
  }

  /**
   * Marks reader slot `slot` idle and unclaimed. Call it only after the thread that owned the slot
   * has exited (Worker 'exit' event): a live reader in that slot would lose its protection.
   */
  releaseReaderSlot(slot: number): void {
    checkIntOption('slot', slot, 0, this.#maxReaders - 1);
    Atomics.store(this.#hdr, readerEpochWord(slot), 0);
    Atomics.store(this.#hdr, readerClaimWord(this.#maxReaders, slot), 0);
  }

  async #publishBytes(bytes: Uint8Array): Promise<number> {
    const hdr = this.#hdr;
    const g = Atomics.load(hdr, HDR_GENERATION);
    if (g >= MAX_GENERATION) {
      throw new PolicyTableError(PolicyTableErrorCode.GENERATION_EXHAUSTED,
        'policy table generation counter exhausted; restart the process to start a new memory');
    }
    const h = (g + 1) & 1;
    await this.#drain(g);
    let offset = hdr[HDR_HALF_OFFSET + h]!;
    let capacity = hdr[HDR_HALF_BYTES + h]!;
    if (bytes.length > capacity) [offset, capacity] = this.#relocate(h, bytes.length);
    new Uint8Array(this.#memory.buffer, offset, bytes.length).set(bytes);
    Atomics.store(hdr, HDR_HALF_OFFSET + h, offset);
    Atomics.store(hdr, HDR_HALF_BYTES + h, capacity);
    return Atomics.add(hdr, HDR_GENERATION, 1) + 1;
  }

  /** First reader slot that may still be reading the half generation g made inactive, or -1. */
  #blockingSlot(g: number): number {
    for (let i = 0; i < this.#maxReaders; i++) {
      const epoch = Atomics.load(this.#hdr, readerEpochWord(i));
      if (epoch !== 0 && epoch < g) return i;
    }
    return -1;
  }

  async #drain(g: number): Promise<void> {
    if (this.#blockingSlot(g) < 0) return;
    const started = performance.now();
    for (let turn = 0; ; turn++) {
      if (turn < DRAIN_SPIN_TURNS) await nextTurn();
      else await sleep(1);
      const slot = this.#blockingSlot(g);
      if (slot < 0) return;
      if (performance.now() - started > this.#drainTimeoutMs) {
        throw new PolicyTableError(PolicyTableErrorCode.READER_STALLED,
          `reader slot ${slot} has been reading generation ${Atomics.load(this.#hdr, readerEpochWord(slot))} ` +
          `for over ${this.#drainTimeoutMs} ms; if its worker exited, call releaseReaderSlot(${slot})`);
      }
    }
  }

  /** Gives half h room for `need` bytes; only called after #drain, so nobody reads half h. */
  #relocate(h: number, need: number): [number, number] {
    const hdr = this.#hdr;
    const oldOffset = hdr[HDR_HALF_OFFSET + h]!;
    const oldCapacity = hdr[HDR_HALF_BYTES + h]!;
    const heapEnd = hdr[HDR_HEAP_END]!;
    const limit = this.#maximumPages * WASM_PAGE_BYTES;
    // Extend in place when this half is the last allocation; otherwise move it to the heap end.
    const offset = oldOffset + oldCapacity === heapEnd ? oldOffset : heapEnd;
    let capacity = alignUp(Math.max(need, 2 * oldCapacity), 64);
    if (offset + capacity > limit) capacity = alignUp(need, 64);
    const end = offset + capacity;
    if (end > limit) {
      throw new PolicyTableError(PolicyTableErrorCode.TABLE_TOO_LARGE,
        `a ${need}-byte table does not fit in maximumPages ${this.#maximumPages} ` +
        `(${limit} bytes); raise maximumPages or reduce the intentions`);
    }
    const current = this.#memory.buffer.byteLength;
    if (end > current) {
      try {
        this.#memory.grow(Math.ceil((end - current) / WASM_PAGE_BYTES));
      } catch (cause) {
        throw new PolicyTableError(PolicyTableErrorCode.TABLE_TOO_LARGE,
          `cannot grow the policy table memory to ${end} bytes: ${String(cause)}`);
      }
    }
    Atomics.store(hdr, HDR_HEAP_END, Math.max(heapEnd, end));
    return [offset, capacity];
  }
}

// ───────────────────────── reader ─────────────────────────

/**
 * UTF-8-encodes `s` into `out` without allocating; returns the byte length, or -1 when it does
 * not fit or `s` has an unpaired surrogate (such a string can never equal an interned name,
 * which compile.ts requires to be well-formed). Hand-written rather than
 * TextEncoder.encodeInto: equal speed on service names (≈55 ns for a mix of short names and an
 * 80-byte SPIFFE ID, Node 24), but no `{ read, written }` result object per call.
 */
function encodeUtf8(s: string, out: Uint8Array): number {
  const n = s.length;
  const cap = out.length;
  let w = 0;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      if (w >= cap) return -1;
      out[w++] = c;
    } else if (c < 0x800) {
      if (w + 2 > cap) return -1;
      out[w++] = 0xc0 | (c >> 6);
      out[w++] = 0x80 | (c & 0x3f);
    } else if (c >= 0xd800 && c <= 0xdfff) {
      if (c > 0xdbff || i + 1 >= n) return -1;
      const d = s.charCodeAt(i + 1);
      if (d < 0xdc00 || d > 0xdfff) return -1;
      if (w + 4 > cap) return -1;
      i++;
      const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
      out[w++] = 0xf0 | (cp >> 18);
      out[w++] = 0x80 | ((cp >> 12) & 0x3f);
      out[w++] = 0x80 | ((cp >> 6) & 0x3f);
      out[w++] = 0x80 | (cp & 0x3f);
    } else {
      if (w + 3 > cap) return -1;
      out[w++] = 0xe0 | (c >> 12);
      out[w++] = 0x80 | ((c >> 6) & 0x3f);
      out[w++] = 0x80 | (c & 0x3f);
    }
  }
  return w;
}

/**
 * How often a reader re-fetches `memory.buffer` when the published half lies beyond its view.
 * V8 updates other threads' buffers on their next interrupt check (any call or loop back edge),
 * so one re-fetch has always sufficed in tests; 1000 calls bound the wait before failing loudly.
 */
const VIEW_REFRESH_ATTEMPTS = 1000;

/** Reads the published table in place. One instance per thread, each with its own reader slot. */
export class PolicyTableReader {
  readonly #memory: WebAssembly.Memory;
  /** View of the global header on the constructor-time buffer; the header never moves. */
  readonly #hdr: Int32Array;
  readonly #epochWord: number;
  readonly #claimWord: number;
  /** Views of the whole memory; replaced when growth makes them too short. */
  #i32: Int32Array;
  #u8: Uint8Array;
  /** Reused for every name; MAX_NAME_BYTES because longer strings cannot be interned. */
  readonly #scratch = new Uint8Array(MAX_NAME_BYTES);
  #lastGeneration = 0;
  #closed = false;
  // One-entry name → id caches, valid for one generation only (ids are per table). A sidecar's
  // worker mostly asks about one destination (its own service) and about repeating peers, so
  // these skip encode + hash + probe without allocating; a miss costs one string comparison.
  // Measured at 100k rules (min of 7 rounds, same process): one destination and 200 sources
  // 308 → 222 ns/op; uniformly random pairs 398 vs 403 ns/op (neutral). Attacker-chosen names
  // can only make them miss.
  #srcGeneration = 0;
  #srcName = '';
  #srcId = -1;
  #dstGeneration = 0;
  #dstName = '';
  #dstId = -1;

  constructor(memory: WebAssembly.Memory, readerSlot: number) {
    if (!(memory instanceof WebAssembly.Memory)) {
      throw new PolicyTableError(PolicyTableErrorCode.BAD_OPTION, 'expected the WebAssembly.Memory of a PolicyTableWriter');
    }
    const buffer = memory.buffer;
    if (!(buffer instanceof SharedArrayBuffer)) {
      throw new PolicyTableError(PolicyTableErrorCode.NOT_SHARED,
        'policy table memory is not shared; create it with PolicyTableWriter (WebAssembly.Memory({ shared: true }))');
    }
    if (buffer.byteLength < HDR_FIXED_WORDS * 4) {
      throw new PolicyTableError(PolicyTableErrorCode.BAD_MAGIC, 'memory is too small to hold a policy table header');
    }
    const fixed = new Int32Array(buffer, 0, HDR_FIXED_WORDS);
    const magic = Atomics.load(fixed, HDR_MAGIC);
    if (magic !== MAGIC) {
      throw new PolicyTableError(PolicyTableErrorCode.BAD_MAGIC,
        `not a policy table: magic 0x${(magic >>> 0).toString(16)}, expected 0x${MAGIC.toString(16)} ("MSHD")`);
    }
    const version = Atomics.load(fixed, HDR_LAYOUT_VERSION);
    if (version !== LAYOUT_VERSION) {
      throw new PolicyTableError(PolicyTableErrorCode.LAYOUT_VERSION,
        `policy table layout version ${version}, this reader understands ${LAYOUT_VERSION}; run the same meshd build on all threads`);
    }
    const maxReaders = Atomics.load(fixed, HDR_MAX_READERS);
    if (maxReaders < 1 || maxReaders > MAX_READER_SLOTS || globalHeaderBytes(maxReaders) > buffer.byteLength) {
      throw new PolicyTableError(PolicyTableErrorCode.TABLE_CORRUPT, `policy table header claims ${maxReaders} reader slots`);
    }
    if (!Number.isInteger(readerSlot) || readerSlot < 0 || readerSlot >= maxReaders) {
      throw new PolicyTableError(PolicyTableErrorCode.BAD_SLOT,
        `reader slot ${readerSlot} outside [0, ${maxReaders - 1}]; raise maxReaders in PolicyTableWriter`);
    }
    const hdr = new Int32Array(buffer, 0, HDR_FIXED_WORDS + 2 * maxReaders);
    const claimWord = readerClaimWord(maxReaders, readerSlot);
    // Two readers in one slot would break the protocol (one's R5 would clear the other's epoch),
    // so a slot is claimed once, atomically.
    if (Atomics.compareExchange(hdr, claimWord, 0, 1) !== 0) {
      throw new PolicyTableError(PolicyTableErrorCode.SLOT_IN_USE,
        `reader slot ${readerSlot} is already claimed; give each thread its own slot (or close() the old reader)`);
    }
    this.#memory = memory;
    this.#hdr = hdr;
    this.#epochWord = readerEpochWord(readerSlot);
    this.#claimWord = claimWord;
    this.#i32 = new Int32Array(buffer);
    this.#u8 = new Uint8Array(buffer);
  }

  /** The currently published generation (0 = nothing published yet). */
  generation(): number {
    return Atomics.load(this.#hdr, HDR_GENERATION);
  }

  /** The generation the last decide()/ruleAt() call read. */
  get lastGeneration(): number {
    return this.#lastGeneration;
  }

  /**
   * L4 authorization of `source` → `destination` (service names). Returns a decision int: see
   * decisionCode / decisionRule / isAllowed. Before the first publish: DEFAULT_DENY (fail closed).
   * Allocation-free.
   */
  decide(source: string, destination: string): number {
    const g = this.#enter();
    try {
      if (g === 0) return Decision.DEFAULT_DENY;
      return this.#evaluate(g, this.#halfOffset(g), source, destination);
    } finally {
      Atomics.store(this.#hdr, this.#epochWord, 0);
    }
  }

  /**
   * The rule at `index` (from decisionRule) in the current table, for logs and API answers.
   * Throws AUTHZ_RULE_OUT_OF_RANGE for an index the current table does not have.
   *
   * Safe right after decide() on the control thread: publish() runs on that same thread, so no
   * publish can land between two synchronous calls. On a worker a publish can; use
   * ruleAtGeneration(index, reader.lastGeneration) there.
   */
  ruleAt(index: number): RuleView {
    const rule = this.#readRule(index, undefined);
    if (rule === undefined) {
      throw new PolicyTableError(PolicyTableErrorCode.RULE_OUT_OF_RANGE,
        `rule ${index} does not exist in generation ${this.#lastGeneration}; pass decisionRule(decision) of a matched rule`);
    }
    return rule;
  }

  /**
   * Like ruleAt, but undefined when `generation` is no longer the published one (or the index is
   * out of range): the rule a worker's decision matched may have been replaced meanwhile.
   */
  ruleAtGeneration(index: number, generation: number): RuleView | undefined {
    return this.#readRule(index, generation);
  }

  #readRule(index: number, generation: number | undefined): RuleView | undefined {
    const g = this.#enter();
    try {
      if (g === 0 || (generation !== undefined && generation !== g)) return undefined;
      const half = this.#halfOffset(g);
      const w = this.#i32;
      const base = half >> 2;
      if (!Number.isInteger(index) || index < 0 || index >= w[base + TBL_RULE_COUNT]!) return undefined;
      const e = ((half + w[base + TBL_RULES]!) >> 2) + index * RULE_WORDS;
      return {
        source: this.#nameOf(half, w[e + RULE_SRC]!),
        destination: this.#nameOf(half, w[e + RULE_DST]!),
        action: actionName(w[e + RULE_ACTION]!) ?? 'deny',
        precedence: w[e + RULE_PRECEDENCE]!,
      };
    } finally {
      Atomics.store(this.#hdr, this.#epochWord, 0);
    }
  }

  /** Releases the slot. The reader must not be used afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    Atomics.store(this.#hdr, this.#epochWord, 0);
    Atomics.store(this.#hdr, this.#claimWord, 0);
  }

  /** Steps R1–R3 of the protocol: announce a generation that is still current. */
  #enter(): number {
    if (this.#closed) {
      throw new PolicyTableError(PolicyTableErrorCode.BAD_SLOT, 'this PolicyTableReader was closed');
    }
    const hdr = this.#hdr;
    let g = Atomics.load(hdr, HDR_GENERATION);
    for (;;) {
      Atomics.store(hdr, this.#epochWord, g);
      const now = Atomics.load(hdr, HDR_GENERATION);
      if (now === g) break;
      g = now;
    }
    this.#lastGeneration = g;
    return g;
  }

  /** Byte offset of generation g's half, with views long enough to read all of it. */
  #halfOffset(g: number): number {
    const hdr = this.#hdr;
    const h = g & 1;
    const offset = hdr[HDR_HALF_OFFSET + h]!;
    const end = offset + hdr[HDR_HALF_BYTES + h]!;
    if (end > this.#u8.length) this.#refreshViews(end);
    return offset;
  }

  #refreshViews(end: number): void {
    for (let attempt = 0; attempt < VIEW_REFRESH_ATTEMPTS; attempt++) {
      const buffer = this.#memory.buffer;
      if (buffer.byteLength >= end) {
        this.#i32 = new Int32Array(buffer);
        this.#u8 = new Uint8Array(buffer);
        return;
      }
    }
    throw new PolicyTableError(PolicyTableErrorCode.STALE_VIEW,
      `policy table memory still ${this.#memory.buffer.byteLength} bytes after growth to ${end}; the engine did not propagate memory.grow to this thread`);
  }

  #evaluate(g: number, half: number, source: string, destination: string): number {
    const w = this.#i32;
    const base = half >> 2;
    const k0 = w[base + TBL_KEY0]!;
    const k1 = w[base + TBL_KEY1]!;
    let srcId: number;
    if (g === this.#srcGeneration && source === this.#srcName) {
      srcId = this.#srcId;
    } else {
      srcId = this.#lookupName(half, k0, k1, source);
      this.#srcGeneration = g;
      this.#srcName = source;
      this.#srcId = srcId;
    }
    let dstId: number;
    if (g === this.#dstGeneration && destination === this.#dstName) {
      dstId = this.#dstId;
    } else {
      dstId = this.#lookupName(half, k0, k1, destination);
      this.#dstGeneration = g;
      this.#dstName = destination;
      this.#dstId = dstId;
    }
    // Consul: the highest-precedence matching intention decides. With one intention per pair the
    // four candidate keys have distinct precedences, so trying them in precedence order and
    // stopping at the first hit is exactly that rule:
    //   9 exact → exact, 8 * → exact, 6 exact → *, 5 * → *.
    // Only the exact pair needs a hash probe; compile.ts stored the other three as rule index + 1
    // (0 = none) in the directory entries of dst and src and in the half header. An unknown name
    // (-1) can only match through `*`.
    let r = -1;
    const dir = (half + w[base + TBL_NAME_DIR]!) >> 2;
    if (srcId > 0 && dstId > 0) r = this.#findRule(half, k0, k1, srcId, dstId);
    if (r < 0 && dstId > 0) r = w[dir + dstId * NAME_DIR_WORDS + NAME_DIR_FROM_ANY]! - 1;
    if (r < 0 && srcId > 0) r = w[dir + srcId * NAME_DIR_WORDS + NAME_DIR_TO_ANY]! - 1;
    if (r < 0) r = w[base + TBL_ANY_TO_ANY]! - 1;
    if (r >= 0) {
      // "L7 intention ... on any L4-only evaluator → treated as deny": the stored L7 action is
      // Decision.L7_DENY, which isAllowed() rejects.
      const action = w[((half + w[base + TBL_RULES]!) >> 2) + r * RULE_WORDS + RULE_ACTION]!;
      return action | ((r + 1) << DECISION_RULE_SHIFT);
    }
    return (w[base + TBL_FLAGS]! & TBL_FLAG_DEFAULT_ALLOW) !== 0 ? Decision.DEFAULT_ALLOW : Decision.DEFAULT_DENY;
  }

  /** Interned id of `name` in the half at byte offset `half`, or -1 if it is not interned. */
  #lookupName(half: number, k0: number, k1: number, name: string): number {
    // UTF-8 is never shorter than UTF-16 code units, so longer strings cannot fit.
    if (name.length === 0 || name.length > MAX_NAME_BYTES) return -1;
    const scratch = this.#scratch;
    const len = encodeUtf8(name, scratch);
    if (len < 0) return -1;
    const w = this.#i32;
    const u8 = this.#u8;
    const base = half >> 2;
    const cap = w[base + TBL_NAME_CAP]!;
    const count = w[base + TBL_NAME_COUNT]!;
    const slots = (half + w[base + TBL_NAME_TABLE]!) >> 2;
    const dir = (half + w[base + TBL_NAME_DIR]!) >> 2;
    const h = halfSipHash24(k0, k1, scratch, 0, len);
    const mask = cap - 1;
    let i = h & mask;
    // Load factor ≤ 0.5 guarantees an empty slot; `probes < cap` only bounds a corrupt table.
    for (let probes = 0; probes < cap; probes++) {
      const s = slots + i * NAME_SLOT_WORDS;
      const id = w[s + NAME_SLOT_ID]!;
      if (id === 0) return -1;
      if (w[s + NAME_SLOT_HASH]! === h && id < count) {
        const d = dir + id * NAME_DIR_WORDS;
        if (w[d + NAME_DIR_LENGTH]! === len) {
          const start = half + w[d + NAME_DIR_OFFSET]!;
          let j = 0;
          while (j < len && u8[start + j] === scratch[j]) j++;
          if (j === len) return id;
        }
      }
      i = (i + 1) & mask;
    }
    return -1;
  }

  /** Index of the rule for (srcId, dstId), or -1. */
  #findRule(half: number, k0: number, k1: number, srcId: number, dstId: number): number {
    const w = this.#i32;
    const base = half >> 2;
    const cap = w[base + TBL_RULE_CAP]!;
    const slots = (half + w[base + TBL_RULE_TABLE]!) >> 2;
    const rules = (half + w[base + TBL_RULES]!) >> 2;
    const mask = cap - 1;
    let i = halfSipHash24Pair(k0, k1, srcId, dstId) & mask;
    for (let probes = 0; probes < cap; probes++) {
      const v = w[slots + i]!;
      if (v === 0) return -1;
      const e = rules + (v - 1) * RULE_WORDS;
      if (w[e + RULE_SRC] === srcId && w[e + RULE_DST] === dstId) return v - 1;
      i = (i + 1) & mask;
    }
    return -1;
  }

  #nameOf(half: number, id: number): string {
    const w = this.#i32;
    const base = half >> 2;
    if (id < 0 || id >= w[base + TBL_NAME_COUNT]!) return '';
    const d = ((half + w[base + TBL_NAME_DIR]!) >> 2) + id * NAME_DIR_WORDS;
    const start = half + w[d + NAME_DIR_OFFSET]!;
    // slice() copies out of the shared buffer: TextDecoder refuses shared views.
    return new TextDecoder().decode(this.#u8.slice(start, start + w[d + NAME_DIR_LENGTH]!));
  }
}
