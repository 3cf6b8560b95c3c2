// Weighted split choice: exact basis-point shares over every r, and health redistribution.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { apportion, SplitPicker, TOTAL_BP } from '../../src/dataplane/split.ts';
import type { ChainSplit } from '../../src/chain/types.ts';

const NO_HEADERS = { add: {}, set: {}, remove: [] };

function splits(weights: readonly number[]): ChainSplit[] {
  return weights.map((w, i) => ({ weightBp: w, targetId: `t${i}.web.default.default.dc1`, requestHeaders: NO_HEADERS, responseHeaders: NO_HEADERS }));
}

/** 1–20 integer weights summing to 10000, zeros included. */
const arbWeights = fc.array(fc.integer({ min: 0, max: TOTAL_BP }), { minLength: 0, maxLength: 19 }).map((cuts) => {
  const s = [0, ...cuts.sort((a, b) => a - b), TOTAL_BP];
  return s.slice(1).map((v, i) => v - (s[i] as number));
});

function counts(p: SplitPicker): number[] {
  const c = new Array<number>(p.size).fill(0);
  for (let r = 0; r < TOTAL_BP; r++) {
    const i = p.pick(r);
    c[i] = (c[i] as number) + 1;
  }
  return c;
}

test('over all r in [0, 10000) each split is picked exactly weightBp times (zero weights never)', () => {
  fc.assert(
    fc.property(arbWeights, (weights) => {
      const p = new SplitPicker(splits(weights));
      assert.deepEqual(counts(p), weights);
      for (let i = 0; i < weights.length; i++) assert.equal(p.weightBp(i), weights[i]);
    }),
    { numRuns: 200 },
  );
});

test('the default draw is floor(random × 10000); out-of-range r is clamped to a positive split', () => {
  const p = new SplitPicker(splits([9000, 999, 1, 0]), { random: (() => {
    const rs = [0, 0.9, 0.99989, 0.99999];
    let i = 0;
    return () => rs[i++] ?? 0;
  })() });
  assert.equal(p.pick(), 0);
  assert.equal(p.pick(), 1); // 9000
  assert.equal(p.pick(), 1); // 9998
  assert.equal(p.pick(), 2); // 9999
  assert.equal(p.pick(10000), 2);
  assert.equal(p.pick(-1), 0);
  assert.equal(p.pick(Number.NaN), 0);
  assert.equal(new SplitPicker(splits([0, 10000, 0])).pick(-5), 1);
  assert.throws(() => new SplitPicker([]), RangeError);
});

test('an unhealthy split gives its share to the healthy ones in proportion to their weights', () => {
  const p = new SplitPicker(splits([5000, 3000, 2000]));
  p.setHealthy(0, false);
  assert.deepEqual(counts(p), [0, 6000, 4000]);
  assert.equal(p.isHealthy(0), false);
  p.setHealthy(0, true);
  assert.deepEqual(counts(p), [5000, 3000, 2000]);
  // By target ID, all at once.
  p.withHealthy((id) => !id.startsWith('t1.'));
  assert.deepEqual(counts(p), [7143, 0, 2857]);
  // All unhealthy: the configured weights stand (the request fails as in Consul).
  p.withHealthy(() => false);
  assert.deepEqual(counts(p), [5000, 3000, 2000]);
  // A zero-weight split stays at zero even when it is the only healthy one.
  const z = new SplitPicker(splits([10000, 0]));
  z.setHealthy(0, false);
  assert.deepEqual(counts(z), [10000, 0]);
  assert.throws(() => z.setHealthy(2, false), RangeError);
});

test('health redistribution: exact sum, zero for the unhealthy, proportional within 1 bp', () => {
  fc.assert(
    fc.property(arbWeights, fc.array(fc.boolean(), { minLength: 20, maxLength: 20 }), (weights, health) => {
      const p = new SplitPicker(splits(weights));
      p.withHealthy((id) => health[Number(id.slice(1, id.indexOf('.')))] as boolean);
      const got = counts(p);
      assert.equal(got.reduce((a, b) => a + b, 0), TOTAL_BP);
      const healthySum = weights.reduce((a, w, i) => a + (health[i] ? w : 0), 0);
      for (let i = 0; i < weights.length; i++) {
        const w = weights[i] as number;
        if (healthySum === 0) {
          assert.equal(got[i], w);
        } else if (!health[i] || w === 0) {
          assert.equal(got[i], 0);
        } else {
          assert.ok(Math.abs((got[i] as number) - (w * TOTAL_BP) / healthySum) < 1, `${got[i]} vs ${(w * TOTAL_BP) / healthySum}`);
        }
      }
    }),
    { numRuns: 200 },
  );
});

test('apportion: integer shares summing to the total; weights off 10000 are normalised', () => {
  assert.deepEqual([...apportion([1, 1, 1], 10000)], [3334, 3333, 3333]);
  assert.deepEqual([...apportion([0, 0], 10000)], [10000, 0]);
  const off = new SplitPicker(splits([50, 50, 0]));
  assert.deepEqual(counts(off), [5000, 5000, 0]);
  fc.assert(
    fc.property(fc.array(fc.integer({ min: 0, max: 100000 }), { minLength: 1, maxLength: 30 }), (ws) => {
      const out = apportion(ws, TOTAL_BP);
      assert.equal(out.reduce((a, b) => a + b, 0), TOTAL_BP);
      const sum = ws.reduce((a, b) => a + b, 0);
      if (sum > 0) for (let i = 0; i < ws.length; i++) assert.ok(Math.abs((out[i] as number) - ((ws[i] as number) * TOTAL_BP) / sum) < 1);
    }),
  );
});
