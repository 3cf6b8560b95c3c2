// CSR admission: token bucket (CSRMaxPerSecond, burst = one second's worth) or a concurrency
// cap (CSRMaxConcurrent), with Retry-After hints; an injected clock drives it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { CsrLimiter } from '../../src/control/rate-limit.ts';

test('a token bucket admits one second of burst, then refuses with the time to the next token', () => {
  let now = 1_000_000;
  const l = new CsrLimiter(() => now, 50, 0);
  for (let i = 0; i < 50; i++) assert.equal(l.admit().ok, true, `request ${i}`);
  const refused = l.admit();
  assert.equal(refused.ok, false);
  assert.ok(!refused.ok && refused.retryAfterMs > 0 && refused.retryAfterMs <= 20, JSON.stringify(refused));
  now += 20; // one token at 50/s
  assert.equal(l.admit().ok, true);
  assert.equal(l.admit().ok, false);
  now += 10_000; // refills to the burst, not beyond
  let admitted = 0;
  while (l.admit().ok) admitted++;
  assert.equal(admitted, 50);
});

test('a fractional rate still admits one at a time', () => {
  let now = 0;
  const l = new CsrLimiter(() => now, 0.5, 0);
  assert.equal(l.admit().ok, true);
  const r = l.admit();
  assert.ok(!r.ok && r.retryAfterMs === 2000);
  now += 2000;
  assert.equal(l.admit().ok, true);
});

test('CSRMaxConcurrent caps requests in flight and frees a slot on release (once)', () => {
  const l = new CsrLimiter(() => 0, 0, 2);
  const a = l.admit();
  const b = l.admit();
  assert.ok(a.ok && b.ok);
  assert.equal(l.admit().ok, false);
  if (a.ok) {
    a.release();
    a.release(); // double release must not free two slots
  }
  assert.equal(l.admit().ok, true);
  assert.equal(l.admit().ok, false);
});

test('both limits 0 means unlimited, and reconfiguring takes effect at once', () => {
  const l = new CsrLimiter(() => 0, 0, 0);
  for (let i = 0; i < 10_000; i++) assert.equal(l.admit().ok, true);
  l.configure(1, 0);
  assert.equal(l.admit().ok, true);
  assert.equal(l.admit().ok, false);
});
