// Circuit breaking, outlier detection with an injected clock, retry back-off and retry rules.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  CircuitBreaker,
  DEFAULT_LIMIT,
  isIdempotentMethod,
  OutlierDetector,
  retryBackoffMs,
  shouldRetry,
  type AttemptOutcome,
  type BreakerKind,
} from '../../src/dataplane/resilience.ts';
import type { PassiveHealthCheck } from '../../src/chain/types.ts';
import type { Endpoint } from '../../src/workers/messages.ts';

// ------------------------------------------------------------------------------------------
// CircuitBreaker

test('breaker: zero limits mean 1024; retries default to 3', () => {
  const b = new CircuitBreaker({ maxConnections: 0, maxPendingRequests: 0, maxConcurrentRequests: 0 });
  assert.equal(b.maxConnections, DEFAULT_LIMIT);
  assert.equal(b.maxPendingRequests, DEFAULT_LIMIT);
  assert.equal(b.maxRequests, DEFAULT_LIMIT);
  assert.equal(b.maxRetries, 3);
});

test('breaker: acquisitions beyond the limit overflow and are counted; releases reopen', () => {
  const b = new CircuitBreaker({ maxConnections: 2, maxPendingRequests: 1, maxConcurrentRequests: 3 });
  assert.ok(b.tryAcquireConnection() && b.tryAcquireConnection());
  assert.equal(b.isOpen('connections'), true);
  assert.equal(b.tryAcquireConnection(), false);
  assert.equal(b.tryAcquireConnection(), false);
  assert.equal(b.overflows.connections, 2);
  b.releaseConnection();
  assert.equal(b.isOpen('connections'), false);
  assert.ok(b.tryAcquireConnection());

  assert.ok(b.tryAcquirePending());
  assert.equal(b.tryAcquirePending(), false);
  b.releasePending();
  b.releasePending();
  b.releasePending();
  assert.equal(b.pending, 0);
  assert.equal(b.overflows.pending, 1);

  for (let i = 0; i < 3; i++) assert.ok(b.tryAcquireRequest());
  assert.equal(b.tryAcquireRequest(), false);
  assert.deepEqual(b.overflows, { connections: 2, pending: 1, requests: 1, retries: 0 });

  for (let i = 0; i < 3; i++) assert.ok(b.tryAcquireRetry());
  assert.equal(b.tryAcquireRetry(), false);
  assert.equal(b.isOpen('retries'), true);
  b.releaseRetry();
  assert.equal(b.isOpen('retries'), false);

  b.setLimits({ maxConnections: 10, maxPendingRequests: 0, maxConcurrentRequests: 3 });
  assert.equal(b.connections, 2);
  assert.equal(b.isOpen('connections'), false);
  assert.equal(b.maxPendingRequests, DEFAULT_LIMIT);
});

test('breaker property: counts stay within [0, max] and overflows equal refusals', () => {
  const kinds = ['connections', 'pending', 'requests', 'retries'] as const;
  fc.assert(
    fc.property(
      fc.integer({ min: 1, max: 5 }),
      fc.array(fc.tuple(fc.constantFrom(...kinds), fc.boolean()), { maxLength: 200 }),
      (limit, ops) => {
        const b = new CircuitBreaker({ maxConnections: limit, maxPendingRequests: limit, maxConcurrentRequests: limit }, limit);
        const refused: Record<BreakerKind, number> = { connections: 0, pending: 0, requests: 0, retries: 0 };
        const model: Record<BreakerKind, number> = { connections: 0, pending: 0, requests: 0, retries: 0 };
        for (const [k, acquire] of ops) {
          if (acquire) {
            const ok =
              k === 'connections' ? b.tryAcquireConnection() : k === 'pending' ? b.tryAcquirePending() : k === 'requests' ? b.tryAcquireRequest() : b.tryAcquireRetry();
            assert.equal(ok, model[k] < limit);
            if (ok) model[k]++;
            else refused[k]++;
          } else {
            if (k === 'connections') b.releaseConnection();
            else if (k === 'pending') b.releasePending();
            else if (k === 'requests') b.releaseRequest();
            else b.releaseRetry();
            model[k] = Math.max(0, model[k] - 1);
          }
          assert.equal(b.isOpen(k), model[k] >= limit);
        }
        assert.deepEqual({ ...b.overflows }, refused);
        assert.deepEqual({ connections: b.connections, pending: b.pending, requests: b.requests, retries: b.retries }, model);
      },
    ),
  );
});

// ------------------------------------------------------------------------------------------
// OutlierDetector

function phc(over: Partial<PassiveHealthCheck> = {}): PassiveHealthCheck {
  return { intervalMs: 10_000, maxFailures: 5, enforcingConsecutive5xx: 100, maxEjectionPercent: 10, baseEjectionTimeMs: 30_000, ...over };
}

function clock(): { now: () => number; advance: (ms: number) => void } {
  let t = 1_000_000;
  return { now: () => t, advance: (ms) => (t += ms) };
}

const keys = (n: number): string[] => Array.from({ length: n }, (_v, i) => `10.0.0.${i + 1}:8080`);

test('outlier: maxFailures consecutive 5xx or connect failures eject; a success in between resets', () => {
  const c = clock();
  const od = new OutlierDetector(phc({ maxFailures: 3, maxEjectionPercent: 100 }), { now: c.now });
  od.setHosts(keys(4));
  const h = '10.0.0.1:8080';
  od.record(h, true);
  od.record(h, 'connect-failure');
  od.record(h, false);
  od.record(h, true);
  od.record(h, true);
  assert.equal(od.isEjected(h), false);
  od.record(h, 'connect-failure');
  assert.equal(od.isEjected(h), true);
  assert.equal(od.ejections, 1);
  assert.equal(od.ejectedNow, 1);
  assert.equal(od.isEjected('10.0.0.2:8080'), false);
});

test('outlier: ejected for base × times ejected, back after it (injected clock), capped at 300 s', () => {
  const c = clock();
  const od = new OutlierDetector(phc({ maxFailures: 1, baseEjectionTimeMs: 100_000, intervalMs: 1000 }), { now: c.now });
  od.setHosts(keys(3));
  const h = '10.0.0.1:8080';
  const v0 = od.version;
  od.record(h, true);
  assert.equal(od.isEjected(h), true);
  assert.notEqual(od.version, v0);
  c.advance(99_999);
  assert.equal(od.isEjected(h), true);
  c.advance(1);
  assert.equal(od.ejectedNow, 0);
  assert.equal(od.isEjected(h), false);
  // Second ejection: 200 s. Third: 300 s (the cap), not 300 s+.
  od.record(h, true);
  c.advance(199_999);
  assert.equal(od.isEjected(h), true);
  c.advance(1);
  assert.equal(od.isEjected(h), false);
  od.record(h, true);
  c.advance(299_999);
  assert.equal(od.isEjected(h), true);
  c.advance(1);
  assert.equal(od.isEjected(h), false);
  od.record(h, true);
  c.advance(300_000);
  assert.equal(od.isEjected(h), false);
  assert.equal(od.ejections, 4);
});

test('outlier: sweep returns expired hosts and decays the multiplier after healthy intervals', () => {
  const c = clock();
  const od = new OutlierDetector(phc({ maxFailures: 1, baseEjectionTimeMs: 10_000, intervalMs: 1000 }), { now: c.now });
  od.setHosts(keys(2));
  const h = '10.0.0.1:8080';
  od.record(h, true); // 10 s
  c.advance(10_000);
  od.sweep();
  assert.equal(od.ejectedNow, 0);
  od.record(h, true); // times 2 ⇒ 20 s
  c.advance(20_000);
  od.sweep(); // un-ejected now, not yet healthy for an interval
  c.advance(1000);
  od.sweep(); // times 2 → 1
  c.advance(1000);
  od.sweep(); // → 0
  od.record(h, true); // times 1 ⇒ 10 s again
  c.advance(10_000);
  assert.equal(od.isEjected(h), false);
});

test('outlier: maxEjectionPercent caps ejections; one host is always ejectable', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 40 }), fc.integer({ min: 1, max: 100 }), (n, pct) => {
      const c = clock();
      const od = new OutlierDetector(phc({ maxFailures: 1, maxEjectionPercent: pct }), { now: c.now });
      const ks = keys(n);
      od.setHosts(ks);
      for (const k of ks) od.record(k, true);
      const allowed = Math.max(1, Math.floor((pct * n) / 100));
      assert.equal(od.ejectedNow, allowed);
      assert.equal(od.detected, n);
      assert.equal(ks.filter((k) => od.isEjected(k)).length, allowed);
    }),
  );
  const od = new OutlierDetector(phc({ maxFailures: 1, maxEjectionPercent: 0 }), { now: () => 0 });
  od.setHosts(keys(3));
  od.record('10.0.0.1:8080', true);
  assert.equal(od.ejectedNow, 0);
});

test('outlier: enforcingConsecutive5xx is the ejection chance; an outlier not enforced starts counting again', () => {
  const c = clock();
  const rs = [0.7, 0.2];
  let i = 0;
  const od = new OutlierDetector(phc({ maxFailures: 2, enforcingConsecutive5xx: 50, maxEjectionPercent: 100 }), { now: c.now, random: () => rs[i++] ?? 0 });
  od.setHosts(keys(2));
  const h = '10.0.0.1:8080';
  od.record(h, true);
  od.record(h, true); // roll 70 ≥ 50: not ejected
  assert.equal(od.isEjected(h), false);
  assert.equal(od.detected, 1);
  od.record(h, true); // count restarted at 0 → 1
  assert.equal(od.isEjected(h), false);
  od.record(h, true); // roll 20 < 50
  assert.equal(od.isEjected(h), true);
  const never = new OutlierDetector(phc({ maxFailures: 1, enforcingConsecutive5xx: 0 }), { now: c.now, random: () => 0 });
  never.record(h, true);
  assert.equal(never.ejections, 0);
  assert.equal(never.detected, 1);
});

test('outlier: healthyEndpoints filters ejected hosts, with Envoy\'s 50% panic rule; setHosts forgets removed hosts', () => {
  const c = clock();
  const od = new OutlierDetector(phc({ maxFailures: 1, maxEjectionPercent: 100 }), { now: c.now });
  const list: Endpoint[] = Array.from({ length: 4 }, (_v, i) => ({ host: `10.0.0.${i + 1}`, port: 8080, service: 'api' }));
  od.setHosts(keys(4));
  assert.equal(od.healthyEndpoints(list), list);
  od.record('10.0.0.1:8080', true);
  assert.deepEqual(od.healthyEndpoints(list), list.slice(1));
  od.record('10.0.0.2:8080', true);
  assert.deepEqual(od.healthyEndpoints(list), list.slice(2)); // 50% healthy: no panic
  od.record('10.0.0.3:8080', true);
  assert.equal(od.healthyEndpoints(list), list); // 25% healthy: panic, use all
  const v = od.version;
  od.setHosts(keys(4).slice(1));
  assert.equal(od.ejectedNow, 2);
  assert.notEqual(od.version, v);
  // Results for an ejected host are ignored until it is back.
  od.record('10.0.0.2:8080', false);
  assert.equal(od.isEjected('10.0.0.2:8080'), true);
});

// ------------------------------------------------------------------------------------------
// Retries

test('retryBackoffMs: full jitter under min((2^n − 1) × 25, 250) ms', () => {
  assert.equal(retryBackoffMs(1, () => 0), 0);
  assert.equal(retryBackoffMs(1, () => 0.999999), 24);
  assert.equal(retryBackoffMs(2, () => 0.999999), 74);
  assert.equal(retryBackoffMs(3, () => 0.999999), 174);
  assert.equal(retryBackoffMs(4, () => 0.999999), 249);
  assert.equal(retryBackoffMs(100, () => 0.5), 125);
  assert.equal(retryBackoffMs(0, () => 0.5), 12);
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 1000 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (n, r) => {
      const ms = retryBackoffMs(n, () => r);
      assert.ok(Number.isInteger(ms) && ms >= 0 && ms < Math.min((2 ** Math.min(n, 30) - 1) * 25, 250));
    }),
  );
});

const policy = (retryOn: string[], codes: number[] = [], connect = false) => ({ retryOn, retryOnStatusCodes: codes, retryOnConnectFailure: connect });
const status = (s: number): AttemptOutcome => ({ kind: 'status', status: s });
const CF: AttemptOutcome = { kind: 'connect-failure' };
const RESET: AttemptOutcome = { kind: 'reset' };
const TIMEOUT: AttemptOutcome = { kind: 'timeout' };
const REFUSED: AttemptOutcome = { kind: 'refused-stream' };

test('shouldRetry: Envoy retry_on conditions', () => {
  const cases: [string[], AttemptOutcome, boolean][] = [
    [['5xx'], status(500), true],
    [['5xx'], status(503), true],
    [['5xx'], status(404), false],
    [['5xx'], CF, true],
    [['5xx'], RESET, true],
    [['5xx'], TIMEOUT, true],
    [['5xx'], REFUSED, true],
    [['gateway-error'], status(500), false],
    [['gateway-error'], status(502), true],
    [['gateway-error'], status(504), true],
    [['gateway-error'], RESET, true],
    [['reset'], status(503), false],
    [['reset'], RESET, true],
    [['reset'], CF, true],
    [['connect-failure'], CF, true],
    [['connect-failure'], RESET, false],
    [['connect-failure'], status(503), false],
    [['retriable-4xx'], status(409), true],
    [['retriable-4xx'], status(429), false],
    [['refused-stream'], REFUSED, true],
    [['refused-stream'], RESET, false],
    [['retriable-headers', 'envoy-ratelimited'], status(503), false],
    [[], status(503), false],
  ];
  for (const [on, outcome, want] of cases) assert.equal(shouldRetry(policy(on), outcome, 'GET'), want, `${on.join(',')} ${JSON.stringify(outcome)}`);
  // Status codes: a non-empty list enables them, with or without the condition named.
  assert.equal(shouldRetry(policy([], [429]), status(429), 'GET'), true);
  assert.equal(shouldRetry(policy(['retriable-status-codes'], [429]), status(429), 'GET'), true);
  assert.equal(shouldRetry(policy([], [429]), status(503), 'GET'), false);
  // RetryOnConnectFailure alone.
  assert.equal(shouldRetry(policy([], [], true), CF, 'GET'), true);
  assert.equal(shouldRetry(policy([], [], true), status(503), 'GET'), false);
});

test('shouldRetry: only idempotent methods, except when the upstream never got the request', () => {
  const p = policy(['5xx', 'refused-stream'], [429], true);
  for (const m of ['GET', 'HEAD', 'OPTIONS', 'PUT', 'DELETE', 'TRACE', 'get']) {
    assert.equal(isIdempotentMethod(m), true, m);
    assert.equal(shouldRetry(p, status(503), m), true, m);
  }
  for (const m of ['POST', 'PATCH', 'CONNECT', 'post']) {
    assert.equal(isIdempotentMethod(m), false, m);
    assert.equal(shouldRetry(p, status(503), m), false, m);
    assert.equal(shouldRetry(p, status(429), m), false, m);
    assert.equal(shouldRetry(p, RESET, m), false, m);
    assert.equal(shouldRetry(p, TIMEOUT, m), false, m);
    assert.equal(shouldRetry(p, CF, m), true, m);
    assert.equal(shouldRetry(p, REFUSED, m), true, m);
    assert.equal(shouldRetry(p, status(503), m, { idempotentOnly: false }), true, m);
    assert.equal(shouldRetry(p, RESET, m, { idempotentOnly: false }), true, m);
  }
  // A safe outcome still needs a condition that covers it.
  assert.equal(shouldRetry(policy(['retriable-4xx']), CF, 'POST'), false);
});
