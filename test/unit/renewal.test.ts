import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { renewalDelayMs } from '../../src/control/renewal.ts';

const H = 3_600_000;
const MAX_TIMER = 2 ** 31 - 1;
const T0 = Date.parse('2026-03-01T12:00:00Z');

test('random = 0 renews at 60 % of the lifetime', () => {
  assert.equal(renewalDelayMs(T0, T0 + 10 * H, T0, 0), 6 * H);
  // Measured from now, not from validAfter.
  assert.equal(renewalDelayMs(T0, T0 + 10 * H, T0 + 1 * H, 0), 5 * H);
});

test('random close to 1 renews close to 90 % of the lifetime; values outside [0,1] are clamped', () => {
  const d = renewalDelayMs(T0, T0 + 10 * H, T0, 0.999999999);
  assert.ok(d <= 9 * H && d >= 9 * H - 1, String(d));
  assert.equal(renewalDelayMs(T0, T0 + 10 * H, T0, 1), 9 * H);
  assert.equal(renewalDelayMs(T0, T0 + 10 * H, T0, 5), 9 * H);
  assert.equal(renewalDelayMs(T0, T0 + 10 * H, T0, -3), 6 * H);
  assert.equal(renewalDelayMs(T0, T0 + 10 * H, T0, 0.5), 7.5 * H);
});

test('past the renewal point (or past expiry) the delay is 0', () => {
  assert.equal(renewalDelayMs(T0, T0 + 10 * H, T0 + 9 * H, 0.999), 0);
  assert.equal(renewalDelayMs(T0, T0 + 10 * H, T0 + 9.5 * H, 0), 0);
  assert.equal(renewalDelayMs(T0, T0 + 10 * H, T0 + 20 * H, 0.5), 0);
  // Exactly at the 60 % point with random = 0.
  assert.equal(renewalDelayMs(T0, T0 + 10 * H, T0 + 6 * H, 0), 0);
});

test('lifetimes of 10 minutes or less renew at once', () => {
  assert.equal(renewalDelayMs(T0, T0 + 10 * 60_000 - 1, T0, 0.5), 0);
  assert.equal(renewalDelayMs(T0, T0 + 10 * 60_000, T0, 0.5), 0);
  assert.equal(renewalDelayMs(T0, T0 + 60_000, T0, 0), 0);
  // A backwards or empty validity window.
  assert.equal(renewalDelayMs(T0, T0, T0, 0.5), 0);
  assert.equal(renewalDelayMs(T0 + H, T0, T0, 0.5), 0);
  // Just above the threshold it is scheduled.
  assert.ok(renewalDelayMs(T0, T0 + 10 * 60_000 + 1000, T0, 0) > 0);
});

test('long delays are clamped to setTimeout\'s limit 2^31-1', () => {
  const tenYears = 87_600 * H;
  assert.equal(renewalDelayMs(T0, T0 + tenYears, T0, 0), MAX_TIMER);
  assert.equal(renewalDelayMs(T0, T0 + 72 * H, T0, 0), Math.round(0.6 * 72 * H));
  assert.ok(renewalDelayMs(T0, T0 + 72 * H, T0, 0) < MAX_TIMER);
});

test('property: the delay is an integer in [0, 2^31-1] for any inputs', () => {
  const time = fc.integer({ min: 0, max: 4_000_000_000_000 });
  fc.assert(
    fc.property(time, time, time, fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (a, b, now, r) => {
      const d = renewalDelayMs(a, b, now, r);
      assert.ok(Number.isInteger(d), String(d));
      assert.ok(d >= 0 && d <= MAX_TIMER, String(d));
    }),
  );
});

test('property: with now = validAfter the renewal falls inside the 60–90 % window (clamped to 2^31-1)', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: 4_000_000_000_000 }),
      fc.integer({ min: 10 * 60_000 + 1, max: 100 * 365 * 24 * H }),
      fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }),
      (validAfter, lifetime, r) => {
        const d = renewalDelayMs(validAfter, validAfter + lifetime, validAfter, r);
        const lo = Math.min(Math.floor(0.6 * lifetime), MAX_TIMER);
        const hi = Math.min(Math.ceil(0.9 * lifetime), MAX_TIMER);
        assert.ok(d >= lo && d <= hi, `${d} not in [${lo}, ${hi}] for lifetime ${lifetime}`);
        // Unclamped, the exact point is validAfter + lifetime * (0.6 + 0.3 r).
        if (hi < MAX_TIMER) assert.ok(Math.abs(d - lifetime * (0.6 + 0.3 * r)) <= 1, `${d} vs ${lifetime * (0.6 + 0.3 * r)}`);
        // Monotone in random: a larger draw never renews earlier.
        const d2 = renewalDelayMs(validAfter, validAfter + lifetime, validAfter, r + (1 - r) / 2);
        assert.ok(d2 >= d);
      },
    ),
  );
});
