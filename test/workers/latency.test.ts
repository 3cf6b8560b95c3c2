// The latency scrape between a proxy's control thread and real worker threads
// (src/workers/supervisor.ts collectLatency, src/metrics/latency.ts): one message per worker
// per scrape, a stuck worker cannot hold the scrape past its timeout and its answer is merged
// when it comes, and a replaced worker's earlier answers stay in the (never decreasing) totals.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { PolicyEngine } from '../../src/control/policy.ts';
import { allocateCounters } from '../../src/metrics/counters.ts';
import { allocateL7 } from '../../src/metrics/l7.ts';
import { LatencyTotals } from '../../src/metrics/latency.ts';
import { WorkerSupervisor } from '../../src/workers/supervisor.ts';

const WORKERS = 2;
let supervisor: WorkerSupervisor;
const totals = new LatencyTotals(1);
let answers = 0;

const record = (w: number, seconds: number[]): void => {
  assert.equal(supervisor.post(w, { type: 'test-record', listener: 0, seconds }), true);
};
const count = (): number => totals.histogram(0).count;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

before(async () => {
  const engine = new PolicyEngine({ maxWorkers: WORKERS, defaultAllow: false });
  // No listeners: the workers only record what the test tells them to (no TLS is used).
  supervisor = new WorkerSupervisor({
    count: WORKERS,
    base: { policy: engine.memory, counters: allocateCounters(WORKERS), service: 'api', inbound: null, upstreams: [], l7Metrics: allocateL7(WORKERS, 1), connectTimeoutMs: 1000, handshakeTimeoutMs: 1000 },
    currentTls: () => ({ keyPem: '', certPem: '', caPems: [], trustDomain: 'example.consul', uri: '' }),
    currentRouting: () => ({
      version: 1,
      inbound: { protocol: 'http', localConnectTimeoutMs: 1000, localRequestTimeoutMs: 1000, intentionSources: [], intentionJwt: null, defaultAllow: false },
      upstreams: {},
    }),
    onWorkerExit: (_index, slot) => engine.releaseReader(slot),
    onLatency: (_index, delta) => {
      answers++;
      totals.merge(delta);
    },
    workerUrl: new URL('./latency-worker.ts', import.meta.url),
  });
  await supervisor.start();
});

after(async () => {
  await supervisor?.stop();
});

test('a scrape merges every worker, one answer each', async () => {
  record(0, [0.0004, 0.003, 0.02]);
  record(1, [0.001, 2]);
  const before = answers;
  await supervisor.collectLatency(5000);
  assert.equal(answers - before, WORKERS);
  assert.equal(count(), 5);
  assert.deepEqual(totals.histogram(0).buckets, [1, 2, 2, 3, 3, 4, 4, 4, 4, 4, 4, 5, 5, 5]);
  assert.ok(Math.abs(totals.histogram(0).sum - 2.0244) < 1e-9);
  // Nothing new: the next scrape adds nothing.
  await supervisor.collectLatency(5000);
  assert.equal(count(), 5);
});

test('a stuck worker does not hold the scrape; its answer is merged when it comes', async () => {
  record(0, [0.001]);
  record(1, [0.001, 0.001]);
  assert.equal(supervisor.post(1, { type: 'test-stall', ms: 1500 }), true);
  const t0 = performance.now();
  await supervisor.collectLatency(150);
  const waited = performance.now() - t0;
  assert.ok(waited < 1000, `the scrape waited ${Math.round(waited)} ms`);
  assert.equal(count(), 6, "worker 0's answer only");
  for (let i = 0; i < 100 && count() < 8; i++) await sleep(50);
  assert.equal(count(), 8, "worker 1's late answer, merged on arrival");
});

test('a replaced worker: its earlier answers stay in the totals, counting goes on', async () => {
  record(0, [0.005]);
  await supervisor.collectLatency(5000);
  assert.equal(count(), 9);
  assert.equal(supervisor.post(0, { type: 'test-crash' }), true);
  for (let i = 0; i < 100 && supervisor.running().includes(0); i++) await sleep(10);
  // While worker 0 is down, a scrape waits only for worker 1.
  await supervisor.collectLatency(5000);
  assert.equal(count(), 9, 'never backwards');
  for (let i = 0; i < 200 && supervisor.running().length < WORKERS; i++) await sleep(10);
  assert.deepEqual(supervisor.running(), [0, 1]);
  record(0, [0.05, 0.05]);
  await supervisor.collectLatency(5000);
  assert.equal(count(), 11);
  const h = totals.histogram(0);
  assert.equal(h.buckets[6], 10, '<= 50 ms: all but the 2 s one');
  assert.equal(h.buckets[11], 11, '<= 2.5 s');
});
