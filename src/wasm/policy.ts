// The WebAssembly twin of PolicyTableReader.decide: policy.wat (built into policy.wasm by
// scripts/build-wasm.ts) computes the keyed hashes and probes the published table in place in
// the shared memory. Runs on: any thread, one WasmPolicyProbe per thread per reader slot.
//
// Division of work:
//  - Slot ownership and header validation are the TS reader's: a WasmPolicyProbe wraps a
//    PolicyTableReader (composition), which checks MAGIC/LAYOUT_VERSION, claims the slot and
//    releases it on close(). Both use the same READER_EPOCH word, never concurrently (one
//    thread, synchronous calls), which the protocol allows: one owner per slot.
//  - The reader epoch protocol (R1–R5 in table.ts) runs inside the WASM decide() with
//    i32.atomic.load/store, so the half it reads is always the one whose generation it announced.
//  - Names: the shared layout has no per-reader scratch room, so the module owns a second, private
//    (non-shared) memory exported as "scratch"; this wrapper UTF-8-encodes source and destination
//    there and passes (offset, length). A name equal (===) to the previous call's is not
//    re-encoded; its length carries a REUSE bit so the module can reuse its cached id when the
//    generation is unchanged, the same one-entry caches as the TS reader.
//  - Growth: the module reads memory 0 directly, but only up to `limit`, a byte length this
//    wrapper confirmed by reading `memory.buffer` (which also makes V8 publish the grown size to
//    this thread's instance). A half beyond it makes decide() return NEED_REFRESH; we re-fetch
//    memory.buffer and retry, like the TS reader's view refresh.

import { readFileSync } from 'node:fs';
import { MAX_NAME_BYTES, PolicyTableError, PolicyTableErrorCode, readerEpochWord } from '../authz/layout.ts';
import { PolicyTableReader } from '../authz/table.ts';
import type { RuleView } from '../authz/table.ts';

/** Byte offsets inside the module's scratch memory (see policy.wat). */
const SRC_OFFSET = 0;
const DST_OFFSET = MAX_NAME_BYTES;
/** Bit 30 of a name length: "same bytes as on the previous call". */
const REUSE = 0x40000000;
/** Length passed for a name that cannot be interned (too long, unpaired surrogate). */
const NO_NAME = MAX_NAME_BYTES + 1;
/** decide() result when the half lies beyond the confirmed limit. */
const NEED_REFRESH = -1;
/** decideId() result when the published generation is not the one the cached id belongs to. */
const STALE = -2;
/**
 * Bound of the per-generation source name → id cache. A sidecar's callers are a few services,
 * and names come from certificates our CA signed; a full cache admits no more names until the
 * next generation (clearing it instead would make a caller with many peers pay for churn).
 */
const MAX_CACHED_IDS = 1024;
/** Lookups per hit-rate window, and decisions the cache sits out after a window with < 50 % hits. */
const CACHE_WINDOW = 512;
const CACHE_BYPASS = 8192;
const VIEW_REFRESH_ATTEMPTS = 1000;

interface PolicyExports {
  readonly scratch: WebAssembly.Memory;
  // Exported WASM functions ignore `this`.
  init(this: void, epochAddr: number, limit: number): void;
  setLimit(this: void, limit: number): void;
  lastGeneration(this: void): number;
  leave(this: void): void;
  hash(this: void, key0: number, key1: number, ptr: number, len: number): number;
  decide(this: void, srcPtr: number, srcLen: number, dstPtr: number, dstLen: number): number;
  decideId(this: void, srcId: number, idGeneration: number, dstPtr: number, dstLen: number): number;
  lastSrcId(this: void): number;
}

export const POLICY_WASM_URL = new URL('./policy.wasm', import.meta.url);

let compiled: WebAssembly.Module | undefined;

/** The compiled policy module (compiled once per thread, synchronously: it is ~1.5 KB). */
export function policyModule(): WebAssembly.Module {
  compiled ??= new WebAssembly.Module(readFileSync(POLICY_WASM_URL));
  return compiled;
}

/** A fresh instance bound to `memory` (tests use its raw exports, e.g. hash()). */
export function instantiatePolicy(memory: WebAssembly.Memory): PolicyExports {
  const instance = new WebAssembly.Instance(policyModule(), { env: { memory } });
  return instance.exports as unknown as PolicyExports;
}

/**
 * UTF-8 encoder into `out` at `at`, at most MAX_NAME_BYTES bytes; returns the length or NO_NAME
 * for strings that cannot be an interned name (too long, unpaired surrogate). Same contract as
 * table.ts's private encoder: TextEncoder.encodeInto would turn a lone surrogate into U+FFFD,
 * which could then equal an interned name containing U+FFFD.
 */
function encodeName(s: string, out: Uint8Array, at: number): number {
  const n = s.length;
  if (n > MAX_NAME_BYTES) return NO_NAME;
  const limit = at + MAX_NAME_BYTES;
  let w = at;
  for (let i = 0; i < n; i++) {
    let c = s.charCodeAt(i);
    if (c < 0x80) {
      if (w + 1 > limit) return NO_NAME;
      out[w++] = c;
      continue;
    }
    if (c < 0x800) {
      if (w + 2 > limit) return NO_NAME;
      out[w++] = 0xc0 | (c >> 6);
      out[w++] = 0x80 | (c & 0x3f);
      continue;
    }
    if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (c > 0xdbff || d < 0xdc00 || d > 0xdfff || w + 4 > limit) return NO_NAME;
      i++;
      c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
      out[w++] = 0xf0 | (c >> 18);
      out[w++] = 0x80 | ((c >> 12) & 0x3f);
      out[w++] = 0x80 | ((c >> 6) & 0x3f);
      out[w++] = 0x80 | (c & 0x3f);
      continue;
    }
    if (w + 3 > limit) return NO_NAME;
    out[w++] = 0xe0 | (c >> 12);
    out[w++] = 0x80 | ((c >> 6) & 0x3f);
    out[w++] = 0x80 | (c & 0x3f);
  }
  return w - at;
}

/**
 * L4 decisions from the WASM probe; same contract and results as PolicyTableReader.decide.
 * One instance per thread per reader slot.
 */
export class WasmPolicyProbe {
  readonly #memory: WebAssembly.Memory;
  readonly #reader: PolicyTableReader;
  readonly #exports: PolicyExports;
  readonly #decide: (srcPtr: number, srcLen: number, dstPtr: number, dstLen: number) => number;
  readonly #decideId: (srcId: number, idGeneration: number, dstPtr: number, dstLen: number) => number;
  // Source name → interned id, all for generation #idGen (0 = empty). Skips encoding, hashing
  // and the name-table probe for a source seen before in this generation.
  readonly #ids = new Map<string, number>();
  #idGen = 0;
  // The cache pays for itself only when sources repeat (a sidecar's few callers); for a
  // stream of ever-new names (a gateway, a random mix) each miss costs a lookup and an insert.
  // So it watches its hit rate per window of lookups and stands aside for a while when most
  // of them missed.
  #window = 0;
  #windowHits = 0;
  #bypass = 0;
  readonly #scratch: Uint8Array;
  #closed = false;
  // Names whose bytes are in scratch now; null = unknown (after an error or before any call).
  #srcName: string | null = null;
  #srcLen = 0;
  #dstName: string | null = null;
  #dstLen = 0;

  constructor(memory: WebAssembly.Memory, readerSlot: number) {
    // Validates the memory and claims the slot (throws PolicyTableError like the TS reader).
    this.#reader = new PolicyTableReader(memory, readerSlot);
    this.#memory = memory;
    try {
      this.#exports = instantiatePolicy(memory);
    } catch (cause) {
      this.#reader.close();
      throw new PolicyTableError(PolicyTableErrorCode.BAD_OPTION,
        `cannot instantiate the WASM policy probe on this memory: ${String(cause)}`);
    }
    this.#exports.init(readerEpochWord(readerSlot) * 4, memory.buffer.byteLength);
    this.#decide = this.#exports.decide;
    this.#decideId = this.#exports.decideId;
    this.#scratch = new Uint8Array(this.#exports.scratch.buffer);
  }

  /** The currently published generation (0 = nothing published yet). */
  generation(): number {
    return this.#reader.generation();
  }

  /** The generation the last decide() call read. */
  get lastGeneration(): number {
    return this.#exports.lastGeneration();
  }

  /**
   * L4 authorization of `source` → `destination`: a decision int (decisionCode, decisionRule,
   * isAllowed in table.ts). Before the first publish: DEFAULT_DENY. Allocation-free.
   */
  decide(source: string, destination: string): number {
    if (this.#closed) {
      throw new PolicyTableError(PolicyTableErrorCode.BAD_SLOT, 'this WasmPolicyProbe was closed');
    }
    let dl: number;
    if (destination === this.#dstName) {
      dl = this.#dstLen | REUSE;
    } else {
      this.#dstName = null;
      dl = this.#dstLen = encodeName(destination, this.#scratch, DST_OFFSET);
      this.#dstName = destination;
    }
    try {
      if (source !== this.#srcName && this.#idGen !== 0 && this.#useCache()) {
        const id = this.#ids.get(source);
        if (id !== undefined) {
          this.#windowHits++;
          // The module's one-entry source cache now holds this id, not the scratch bytes' name.
          this.#srcName = null;
          const gen = this.#idGen;
          let d = this.#decideId(id, gen, DST_OFFSET, dl);
          if (d === NEED_REFRESH) d = this.#afterGrowth(() => this.#decideId(id, gen, DST_OFFSET, dl));
          if (d !== STALE) return d;
          this.#ids.clear();
          this.#idGen = 0;
        }
      }
      let sl: number;
      const fresh = source !== this.#srcName;
      if (fresh) {
        sl = this.#srcLen = encodeName(source, this.#scratch, SRC_OFFSET);
        this.#srcName = source;
      } else {
        sl = this.#srcLen | REUSE;
      }
      let d = this.#decide(SRC_OFFSET, sl, DST_OFFSET, dl);
      if (d === NEED_REFRESH) d = this.#afterGrowth(() => this.#decide(SRC_OFFSET, sl, DST_OFFSET, dl));
      if (fresh && this.#bypass === 0) this.#remember(source);
      return d;
    } catch (e) {
      // A trap (corrupt table) must not leave the epoch announced, or the writer stalls.
      this.#exports.leave();
      this.#srcName = null;
      this.#dstName = null;
      this.#ids.clear();
      this.#idGen = 0;
      throw e;
    }
  }

  /** False while the cache stands aside; counts a lookup otherwise. */
  #useCache(): boolean {
    if (this.#bypass > 0) {
      this.#bypass--;
      return false;
    }
    if (++this.#window === CACHE_WINDOW) {
      if (this.#windowHits * 2 < CACHE_WINDOW) this.#bypass = CACHE_BYPASS;
      this.#window = 0;
      this.#windowHits = 0;
    }
    return true;
  }

  /** Caches the id the last by-name decide() interned for `source`, for the generation it read. */
  #remember(source: string): void {
    const g = this.#exports.lastGeneration();
    if (g === 0) return;
    if (g !== this.#idGen) {
      this.#ids.clear();
      this.#idGen = g;
    }
    // Full: keep the names already in (the frequent ones came first) rather than churn.
    if (this.#ids.size < MAX_CACHED_IDS) this.#ids.set(source, this.#exports.lastSrcId());
  }

  /** The rule at `index` if `generation` is still the published one (PolicyTableReader.ruleAtGeneration). */
  ruleAtGeneration(index: number, generation: number): RuleView | undefined {
    return this.#reader.ruleAtGeneration(index, generation);
  }

  /** Releases the slot. The probe must not be used afterwards. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#exports.leave();
    this.#reader.close();
  }

  #afterGrowth(call: () => number): number {
    for (let attempt = 0; attempt < VIEW_REFRESH_ATTEMPTS; attempt++) {
      this.#exports.setLimit(this.#memory.buffer.byteLength);
      const d = call();
      if (d !== NEED_REFRESH) return d;
    }
    throw new PolicyTableError(PolicyTableErrorCode.STALE_VIEW,
      `policy table memory still ${this.#memory.buffer.byteLength} bytes after growth; the engine did not propagate memory.grow to this thread`);
  }
}
