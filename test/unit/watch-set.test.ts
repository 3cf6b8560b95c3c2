// WatchSet (src/control/agent-session.ts), the blocking-query loops of a proxy or gateway:
// resync() interrupts a long blocking query and reads from index 0 at once, wakes a loop
// that is backing off after errors, and reports failed reads; stopping ends every loop.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { WatchSet } from '../../src/control/agent-session.ts';

/** A step that blocks like a blocking query with index > 0 (until aborted), and answers at once with index 0. */
function blockingStep(calls: number[], onRead: () => number = () => 7): (index: number, signal: AbortSignal) => Promise<number> {
  return (index, signal) => {
    calls.push(index);
    if (index === 0) return Promise.resolve(onRead());
    return new Promise((_resolve, reject) => {
      const t = setTimeout(() => reject(new Error('wait timed out')), 60_000);
      signal.addEventListener('abort', () => {
        clearTimeout(t);
        reject(new Error('aborted'));
      });
    });
  };
}

test('resync interrupts a blocking query in flight and reads from index 0 at once', async () => {
  const stop = new AbortController();
  const lines: string[] = [];
  const watches = new WatchSet({ who: 'proxy', log: (l) => lines.push(l), signal: stop.signal });
  const calls: number[] = [];
  watches.add('roots', 5, blockingStep(calls));
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(calls, [5], 'the loop is in its blocking query');

  const started = performance.now();
  const r = await watches.resync();
  assert.ok(performance.now() - started < 500);
  assert.deepEqual(r, { watches: 1, failed: 0 });
  // Read from 0, then blocking again from the index that read returned.
  await new Promise((r) => setTimeout(r, 20));
  assert.deepEqual(calls, [5, 0, 7]);
  assert.deepEqual(lines, [], 'an interrupted query is not a failure');
  stop.abort();
});

test('resync wakes a loop backing off after errors; failed reads are counted', async () => {
  const stop = new AbortController();
  const lines: string[] = [];
  // The longest backoff: 1 s after the first failure.
  const watches = new WatchSet({ who: 'gateway', log: (l) => lines.push(l), signal: stop.signal, random: () => 0.999 });
  let agentUp = false;
  const calls: number[] = [];
  watches.add('config', 3, (index, signal) => {
    calls.push(index);
    if (!agentUp) return Promise.reject(new Error('agent unreachable'));
    return blockingStep([], () => 9)(index, signal);
  });
  await new Promise((r) => setTimeout(r, 20));
  assert.equal(lines.length, 1);
  assert.match(lines[0] as string, /\[WARN\] gateway: watch config failed \(1 in a row\), retrying in 999 ms/);

  // Still down: the resync's read fails and is reported.
  assert.deepEqual(await watches.resync(), { watches: 1, failed: 1 });
  agentUp = true;
  const started = performance.now();
  assert.deepEqual(await watches.resync(), { watches: 1, failed: 0 });
  assert.ok(performance.now() - started < 500, 'the resync waited out the backoff');
  assert.deepEqual(calls.slice(0, 3), [3, 0, 0]);
  stop.abort();
});

test('a watch with its own stop switch leaves the set; stopping the set ends every loop', async () => {
  const stop = new AbortController();
  const watches = new WatchSet({ who: 'proxy', log: () => undefined, signal: stop.signal });
  const own = new AbortController();
  watches.add('health a', 4, blockingStep([]), own.signal);
  watches.add('health b', 4, blockingStep([]));
  assert.equal(watches.size, 2);
  own.abort();
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(watches.size, 1);
  stop.abort();
  await new Promise((r) => setTimeout(r, 10));
  assert.equal(watches.size, 0);
  assert.deepEqual(await watches.resync(), { watches: 0, failed: 0 });
});
