// Request durations: one HDR histogram (hdr-histogram-js, WebAssembly mode) per listener in
// every data-plane worker, merged by the control thread when /metrics is scraped.
//
// Worker side: `recordRequest` (./l7.ts) hands each finished request's duration to the
// thread's LatencyRecorder, which records it in microseconds (integers: the library truncates
// fractions) and adds the exact seconds to a per-listener sum. Nothing is sent per request.
// On a scrape the control thread posts one `latency` message per worker; the worker answers
// with what it recorded since its previous answer (each histogram's V2 encoding, uncompressed,
// and the sums) and resets its histograms, which it keeps for its whole life (no histogram is
// created per scrape, so none leaks WebAssembly memory; `destroy()` frees them on drain).
//
// Control side: LatencyTotals adds every answer into one counts array per listener, indexed as
// the HDR counts array is (same parameters everywhere, so indexes agree), and never resets it:
// the totals are cumulative since the proxy started, a replaced worker's earlier answers stay
// in them, and a late answer (after a scrape stopped waiting) is simply added when it arrives.
// Parsing the raw encoding straight into the counts costs ~15 µs per listener for a second of
// traffic at 5000 req/s, where `decodeFromCompressedBase64` + `add()` costs ~75 µs, plus ~90 µs
// more on the worker to compress (bench/micro.ts, "One scrape").
//
// Precision: 3 significant digits (values within 0.1 %), 1 µs to 60 s (longer requests are
// recorded as 60 s; `_sum` stays exact). Prometheus buckets need the count of values <= each
// bound, exactly. Two choices make that exact: microseconds are rounded up (a duration d is
// <= a bound B, both in µs with B an integer, exactly when ceil(d) <= B), and a value that falls
// in the HDR equivalence range holding a bound but above the bound (e.g. 25 001..25 007 µs, in
// the range 25 000..25 007) is recorded as the first value of the next range: a shift of less
// than one HDR unit, inside the histogram's own 0.1 %. Then every value <= B lies at or below
// B's counts index and every value > B above it, so `le` counts are exact sums of counts.

import { build, initWebAssemblySync, JsHistogram, WasmHistogram } from 'hdr-histogram-js';

/** Upper bounds (seconds) of the request-duration buckets; +Inf is implicit. */
export const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const;

/** The HDR parameters of every duration histogram (workers and the control thread agree). */
export const HDR_PARAMS = {
  lowestDiscernibleValue: 1,
  /** 60 s in µs; longer durations are clamped to it. */
  highestTrackableValue: 60_000_000,
  numberOfSignificantValueDigits: 3,
  autoResize: false,
  bitBucketSize: 32,
} as const;
const HIGHEST = HDR_PARAMS.highestTrackableValue;

// Index arithmetic comes from the library itself (a plain JS histogram with the same
// parameters, used once at load and dropped), so it cannot drift from what the encoder writes.
const layout = build({ ...HDR_PARAMS, useWebAssembly: false });
if (!(layout instanceof JsHistogram)) throw new Error('hdr-histogram-js: expected a JS histogram');
/** Length of an HDR counts array with HDR_PARAMS. */
export const COUNTS_LENGTH = layout.countsArrayLength;
/** The bounds in µs. */
export const BOUNDS_US: readonly number[] = DURATION_BUCKETS.map((s) => Math.round(s * 1e6));
/** Counts index of each bound: after the shift above, values <= bound sit at or below it. */
const BOUND_INDEX: readonly number[] = BOUNDS_US.map((b) => layout.countsArrayIndex(b));
/** [bound, last value of its equivalence range] for the bounds whose range goes past them. */
const SPLITS: readonly number[] = BOUNDS_US.flatMap((b) => {
  const hi = layout.highestEquivalentValue(b);
  return hi > b ? [b, hi] : [];
});
/** Values at or below this need no shift (the first split bound). */
const SPLIT_FROM = SPLITS[0] ?? HIGHEST;
/** Index -> highest value of that index's equivalence range (for quantiles). */
const valueAt = (index: number): number => layout.highestEquivalentValue(layout.valueFromIndex(index));

/** The integer the histograms record for a duration in seconds (see the header). */
export function micros(seconds: number): number {
  // 1 ns of slack so that a float like 0.0005 * 1e6 = 500.00000000000006 stays 500.
  const us = Math.ceil(seconds * 1e6 - 1e-3);
  if (!(us > SPLIT_FROM)) return us > 0 ? us : 0;
  if (us >= HIGHEST) return HIGHEST;
  for (let i = 0; i < SPLITS.length; i += 2) {
    const hi = SPLITS[i + 1] as number;
    if (us <= hi) return us > (SPLITS[i] as number) ? hi + 1 : us;
  }
  return us;
}

/** What one worker recorded since its previous answer, per listener (index = listener). */
export interface LatencyDelta {
  /** HDR V2 encoding (uncompressed) of each listener's histogram; null when it recorded nothing. */
  readonly encoded: readonly (Uint8Array | null)[];
  /** Exact sum of the durations, in seconds. */
  readonly sums: readonly number[];
}

/**
 * A worker's histograms: one per listener of the proxy, for blocks `firstBlock ..
 * firstBlock + listeners - 1` of the L7 counter buffer (./l7.ts numbers blocks worker-major).
 */
export class LatencyRecorder {
  readonly #first: number;
  readonly #h: WasmHistogram[];
  readonly #sums: Float64Array;

  constructor(firstBlock: number, listeners: number) {
    // Idempotent: instantiates the module once per thread.
    initWebAssemblySync();
    this.#first = firstBlock;
    this.#h = Array.from({ length: listeners }, () => {
      const h = build({ ...HDR_PARAMS, useWebAssembly: true });
      if (!(h instanceof WasmHistogram)) throw new Error('hdr-histogram-js: expected a WebAssembly histogram');
      return h;
    });
    this.#sums = new Float64Array(listeners);
  }

  /** Records one duration for the listener whose L7 block number is `block`. */
  record(block: number, seconds: number): void {
    const i = block - this.#first;
    const h = this.#h[i];
    if (h === undefined) return;
    h.recordValue(micros(seconds));
    this.#sums[i] = (this.#sums[i] as number) + seconds;
  }

  /** Everything recorded since the previous call; the histograms start again from empty. */
  takeDelta(): LatencyDelta {
    const encoded = this.#h.map((h) => {
      if (h.totalCount === 0) return null;
      const bytes = h.encode();
      h.reset();
      return bytes;
    });
    const sums = Array.from(this.#sums);
    this.#sums.fill(0);
    return { encoded, sums };
  }

  /** Frees the WebAssembly histograms; the recorder must not be used afterwards. */
  destroy(): void {
    for (const h of this.#h) h.destroy();
    this.#h.length = 0;
  }
}

let current: LatencyRecorder | null = null;

/** Sets this thread's recorder (a data-plane worker at init; null on drain). */
export function installLatencyRecorder(r: LatencyRecorder | null): void {
  current = r;
}

/** Records a duration for L7 block `block` if this thread has a recorder (only workers do). */
export function recordDuration(block: number, seconds: number): void {
  current?.record(block, seconds);
}

const V2_COOKIE_BASE = 0x1c849303;

/**
 * Decodes an HDR V2 encoding (uncompressed, as WasmHistogram.encode writes it) made with
 * HDR_PARAMS into [index, count] pairs. Throws on anything else, before any count is used.
 */
export function decodeCounts(bytes: Uint8Array): number[] {
  if (bytes.byteLength < 40) throw new Error('HDR encoding: too short');
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if ((dv.getInt32(0) & ~0xf0) !== V2_COOKIE_BASE) throw new Error('HDR encoding: not V2');
  const payload = dv.getInt32(4);
  const digits = dv.getInt32(12);
  const lowest = dv.getUint32(16) * 2 ** 32 + dv.getUint32(20);
  const highest = dv.getUint32(24) * 2 ** 32 + dv.getUint32(28);
  if (digits !== HDR_PARAMS.numberOfSignificantValueDigits || lowest !== HDR_PARAMS.lowestDiscernibleValue || highest !== HIGHEST) {
    throw new Error(`HDR encoding: parameters ${digits}/${lowest}/${highest} differ from the proxy's`);
  }
  const end = 40 + payload;
  if (payload < 0 || end > bytes.byteLength) throw new Error('HDR encoding: truncated');
  const out: number[] = [];
  let pos = 40;
  let index = 0;
  while (pos < end) {
    // ZigZag LEB128: a positive value is the count at `index`, a negative one a run of zeros.
    let b = bytes[pos++] as number;
    let v = b & 0x7f;
    for (let mul = 128; (b & 0x80) !== 0; mul *= 128) {
      if (pos >= end || mul > 2 ** 56) throw new Error('HDR encoding: bad varint');
      b = bytes[pos++] as number;
      v += (b & 0x7f) * mul;
    }
    const n = v % 2 === 0 ? v / 2 : -(v + 1) / 2;
    if (n < 0) {
      index -= n;
      continue;
    }
    if (index >= COUNTS_LENGTH) throw new Error('HDR encoding: index out of range');
    if (n > 0) out.push(index, n);
    index++;
  }
  return out;
}

/** A request-duration histogram ready to render: cumulative counts at DURATION_BUCKETS. */
export interface DurationHistogram {
  /** Count of durations <= DURATION_BUCKETS[i]. */
  readonly buckets: readonly number[];
  readonly count: number;
  /** Seconds. */
  readonly sum: number;
}

export const EMPTY_DURATIONS: DurationHistogram = { buckets: DURATION_BUCKETS.map(() => 0), count: 0, sum: 0 };

/** The control thread's merged histograms, one per listener, cumulative since start. */
export class LatencyTotals {
  readonly #counts: Float64Array[];
  readonly #count: Float64Array;
  readonly #sum: Float64Array;

  constructor(listeners: number) {
    this.#counts = Array.from({ length: listeners }, () => new Float64Array(COUNTS_LENGTH));
    this.#count = new Float64Array(listeners);
    this.#sum = new Float64Array(listeners);
  }

  get listeners(): number {
    return this.#counts.length;
  }

  /** Adds one worker's answer. Throws (adding nothing) when it does not fit this proxy. */
  merge(delta: LatencyDelta): void {
    if (delta.encoded.length !== this.#counts.length || delta.sums.length !== this.#counts.length) throw new Error('latency answer: wrong number of listeners');
    const decoded = delta.encoded.map((e) => (e === null ? [] : decodeCounts(e)));
    decoded.forEach((pairs, l) => {
      const c = this.#counts[l] as Float64Array;
      let n = 0;
      for (let i = 0; i < pairs.length; i += 2) {
        const k = pairs[i] as number;
        const v = pairs[i + 1] as number;
        c[k] = (c[k] as number) + v;
        n += v;
      }
      this.#count[l] = (this.#count[l] as number) + n;
      this.#sum[l] = (this.#sum[l] as number) + (delta.sums[l] as number);
    });
  }

  /** Listener `l`'s cumulative bucket counts, total count and sum. */
  histogram(l: number): DurationHistogram {
    const c = this.#counts[l];
    if (c === undefined) return EMPTY_DURATIONS;
    const buckets: number[] = [];
    let cum = 0;
    let i = 0;
    for (const bi of BOUND_INDEX) {
      for (; i <= bi; i++) cum += c[i] as number;
      buckets.push(cum);
    }
    return { buckets, count: this.#count[l] as number, sum: this.#sum[l] as number };
  }

  /**
   * The duration (seconds) that a fraction `q` (0 < q <= 1) of listener `l`'s requests did not
   * exceed, to HDR precision (the top of the value's equivalence range); 0 with no requests.
   */
  quantile(l: number, q: number): number {
    const c = this.#counts[l];
    const total = this.#count[l] ?? 0;
    if (c === undefined || total === 0) return 0;
    const want = Math.max(1, Math.ceil(q * total));
    let cum = 0;
    for (let i = 0; i < c.length; i++) {
      cum += c[i] as number;
      if (cum >= want) return valueAt(i) / 1e6;
    }
    return HIGHEST / 1e6;
  }
}
