// Request-duration histograms (src/metrics/latency.ts): what two workers record in their HDR
// histograms, merged as the control thread merges their scrape answers, gives Prometheus
// bucket counts equal to the sum of the two and to a naive count of the values <= each bound.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { build, initWebAssemblySync, WasmHistogram } from 'hdr-histogram-js';
import { doDecode } from 'hdr-histogram-js/dist/JsHistogram.encoding.js';
import { allocateL7, l7Block, recordRequest } from '../../src/metrics/l7.ts';
import { BOUNDS_US, COUNTS_LENGTH, DURATION_BUCKETS, HDR_PARAMS, LatencyRecorder, LatencyTotals, decodeCounts, installLatencyRecorder, micros, type LatencyDelta } from '../../src/metrics/latency.ts';

const LISTENERS = 2;

/** Records `values` (µs) on listener `listener` of worker `w`, as recordRequest does there. */
function workerDelta(l7: SharedArrayBuffer, w: number, listener: number, values: readonly number[]): LatencyDelta {
  const r = new LatencyRecorder(w * LISTENERS, LISTENERS);
  installLatencyRecorder(r);
  try {
    const block = l7Block(l7, w, LISTENERS, listener);
    for (const us of values) recordRequest(block, 200, us / 1e6);
  } finally {
    installLatencyRecorder(null);
  }
  const d = r.takeDelta();
  r.destroy();
  return d;
}

const naive = (values: readonly number[]): number[] => BOUNDS_US.map((b) => values.filter((v) => v <= b).length);

// Durations in µs with quarter-µs fractions: anywhere up to past the 60 s clamp, and often
// right around a bucket bound, where an HDR equivalence range would straddle it.
const micro = fc.oneof(
  fc.integer({ min: 0, max: 70_000_000 }),
  fc.integer({ min: 0, max: 30_000 }),
  fc.constantFrom(...BOUNDS_US).chain((b) => fc.integer({ min: b - 40, max: b + 40 })),
);
const duration = fc.tuple(micro, fc.constantFrom(0, 0.25, 0.5, 0.75)).map(([us, f]) => Math.max(0, us - f));

test('merged bucket counts = sum of the two workers = naive count of values <= bound (property)', () => {
  fc.assert(
    fc.property(fc.array(duration, { maxLength: 300 }), fc.array(duration, { maxLength: 300 }), (a, b) => {
      const l7 = allocateL7(2, LISTENERS);
      const da = workerDelta(l7, 0, 1, a);
      const db = workerDelta(l7, 1, 1, b);
      const merged = new LatencyTotals(LISTENERS);
      merged.merge(da);
      merged.merge(db);
      const ta = new LatencyTotals(LISTENERS);
      ta.merge(da);
      const tb = new LatencyTotals(LISTENERS);
      tb.merge(db);
      const h = merged.histogram(1);
      const ha = ta.histogram(1);
      const hb = tb.histogram(1);
      assert.deepEqual(h.buckets, ha.buckets.map((n, i) => n + (hb.buckets[i] as number)));
      assert.deepEqual(h.buckets, naive([...a, ...b]));
      assert.equal(h.count, a.length + b.length);
      const exact = [...a, ...b].reduce((s, v) => s + v / 1e6, 0);
      assert.ok(Math.abs(h.sum - exact) <= 1e-9 * Math.max(1, exact), `sum ${h.sum} vs ${exact}`);
      // Listener 0 saw nothing.
      assert.equal(merged.histogram(0).count, 0);
      assert.deepEqual(merged.histogram(0).buckets, DURATION_BUCKETS.map(() => 0));
    }),
    { seed: 20261124, numRuns: 150 },
  );
});

test('quantiles of the merged histogram are within HDR precision (3 digits)', () => {
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 1, max: 60_000_000 }), { minLength: 1, maxLength: 400 }), fc.array(fc.integer({ min: 1, max: 20_000 }), { maxLength: 400 }), (a, b) => {
      const l7 = allocateL7(2, LISTENERS);
      const t = new LatencyTotals(LISTENERS);
      t.merge(workerDelta(l7, 0, 0, a));
      t.merge(workerDelta(l7, 1, 0, b));
      const sorted = [...a, ...b].sort((x, y) => x - y);
      for (const q of [0.5, 0.99, 0.999, 1]) {
        const exact = sorted[Math.max(1, Math.ceil(q * sorted.length)) - 1] as number;
        const got = t.quantile(0, q) * 1e6;
        // At or above the true value, by at most two HDR units (the range and the bound shift).
        assert.ok(got >= exact - 1e-6 && got <= exact * (1 + 2 / 1024) + 1, `q${q}: ${got} vs ${exact}`);
      }
    }),
    { seed: 7, numRuns: 60 },
  );
});

test('micros: rounds up, keeps bounds exact, moves a straddling value past its bound, clamps at 60 s', () => {
  for (const b of BOUNDS_US) {
    assert.equal(micros(b / 1e6), b, `bound ${b}`);
    assert.ok(micros((b + 1) / 1e6) > b);
  }
  assert.equal(micros(0.0005), 500);
  assert.equal(micros(0.0005001), 501);
  assert.equal(micros(0.000_000_4), 1);
  assert.equal(micros(0), 0);
  assert.equal(micros(-1), 0);
  assert.equal(micros(Number.NaN), 0);
  assert.equal(micros(25_003e-6), 25_008, '25 000..25 007 is one HDR range: 25 003 goes to the next');
  assert.equal(micros(3600), HDR_PARAMS.highestTrackableValue);
});

test('decodeCounts reads the WebAssembly encoding as the library decoder does', () => {
  initWebAssemblySync();
  const w = build({ ...HDR_PARAMS, useWebAssembly: true });
  assert.ok(w instanceof WasmHistogram);
  const values = [0, 1, 1, 7, 2047, 2048, 2049, 99_999, 1_000_000, 60_000_000];
  for (const v of values) w.recordValue(v);
  w.recordValueWithCount(1234, 300);
  const bytes = w.encode();
  w.destroy();
  const pairs = decodeCounts(bytes);
  const ref = doDecode(bytes, 32);
  const fromRef: number[] = [];
  for (let i = 0; i < COUNTS_LENGTH; i++) {
    const c = ref.getCountAtIndex(i);
    if (c > 0) fromRef.push(i, c);
  }
  assert.deepEqual(pairs, fromRef);
  assert.equal(ref.totalCount, values.length + 300);
});

test('a worker answers with what it recorded since its last answer; totals stay cumulative', () => {
  const l7 = allocateL7(1, LISTENERS);
  const r = new LatencyRecorder(0, LISTENERS);
  const t = new LatencyTotals(LISTENERS);
  installLatencyRecorder(r);
  try {
    recordRequest(l7Block(l7, 0, LISTENERS, 0), 200, 0.002);
    t.merge(r.takeDelta());
    const empty = r.takeDelta();
    assert.deepEqual(empty.encoded, [null, null]);
    assert.deepEqual(empty.sums, [0, 0]);
    t.merge(empty);
    recordRequest(l7Block(l7, 0, LISTENERS, 0), 200, 0.02);
    recordRequest(l7Block(l7, 0, LISTENERS, 1), 503, 2);
    t.merge(r.takeDelta());
  } finally {
    installLatencyRecorder(null);
    r.destroy();
  }
  assert.equal(t.histogram(0).count, 2);
  assert.deepEqual(t.histogram(0).buckets, [0, 0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2]);
  assert.ok(Math.abs(t.histogram(0).sum - 0.022) < 1e-12);
  assert.equal(t.histogram(1).count, 1);
  assert.equal(t.histogram(1).buckets[10], 0, '2 s is above the 1 s bound');
  assert.equal(t.histogram(1).buckets[11], 1);
  // The SAB counters are unchanged by the move of durations out of them.
  assert.equal(l7Block(l7, 0, LISTENERS, 0)[1], 2, '2xx requests');
});

test('an answer that does not fit is refused whole', () => {
  const l7 = allocateL7(1, LISTENERS);
  const good = workerDelta(l7, 0, 0, [100, 200]);
  const t = new LatencyTotals(LISTENERS);
  assert.throws(() => t.merge({ encoded: [good.encoded[0] ?? null], sums: [1] }), /listeners/);
  const bytes = good.encoded[0];
  assert.ok(bytes instanceof Uint8Array);
  const cut = bytes.slice(0, bytes.length - 1);
  assert.throws(() => t.merge({ encoded: [cut, null], sums: [1, 0] }), /truncated|varint/);
  const other = build({ ...HDR_PARAMS, highestTrackableValue: 1_000_000, useWebAssembly: true }) as WasmHistogram;
  other.recordValue(5);
  const foreign = other.encode();
  other.destroy();
  assert.throws(() => t.merge({ encoded: [bytes, foreign], sums: [1, 1] }), /parameters/);
  assert.equal(t.histogram(0).count, 0, 'nothing added by a refused answer');
  t.merge(good);
  assert.equal(t.histogram(0).count, 2);
});
