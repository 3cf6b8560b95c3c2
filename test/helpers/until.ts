// Polling with a deadline, for end-to-end tests that wait for something another process does.

import assert from 'node:assert/strict';

/**
 * Resolves once `check` says true, with the milliseconds it took; fails the test with `what`
 * when `limitMs` passes first. A check that throws is a check that says false.
 */
export async function until(what: string, check: () => boolean | Promise<boolean>, limitMs = 10_000, stepMs = 50): Promise<number> {
  const start = performance.now();
  for (;;) {
    if (await Promise.resolve().then(check).catch(() => false)) return performance.now() - start;
    assert.ok(performance.now() - start < limitMs, `${what}: not within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}

/**
 * Resolves with the first value `fn` gives other than undefined; fails with `what` (and the last
 * error `fn` threw, if any) when `limitMs` passes first.
 */
export async function eventually<T>(what: string, fn: () => Promise<T | undefined>, limitMs = 10_000, stepMs = 100): Promise<T> {
  const deadline = Date.now() + limitMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) assert.fail(`${what}: not within ${limitMs} ms${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
