// (c) Publication under concurrency: real worker threads read while the main thread publishes,
// once through PolicyTableReader and once through its WebAssembly twin (WasmPolicyProbe).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { compileIntentions } from '../../src/authz/compile.ts';
import { PolicyTableWriter } from '../../src/authz/table.ts';
import { generationSpec } from './fixtures.ts';
import type { ReaderWorkerData, ReaderWorkerResult } from './reader-worker.ts';

const WORKERS = 4;
const GENERATIONS = 200;

for (const probe of ['ts', 'wasm'] as const) test(`${WORKERS} ${probe} worker readers never see a half-written table across ${GENERATIONS} publishes with growth`, async (t) => {
  const hashKey: [number, number] = [0x243f6a88, 0x85a308d3];
  // One page to start: generation 200 holds 3,022 rules over 3,120 names (215 KiB), so the writer
  // relocates halves and grows the memory repeatedly while the workers read.
  const writer = new PolicyTableWriter({ maxReaders: WORKERS, initialPages: 1, maximumPages: 1024 });
  const control = new Int32Array(new SharedArrayBuffer(8));
  const workers = Array.from({ length: WORKERS }, (_, slot) => {
    const data: ReaderWorkerData = { probe, memory: writer.memory, slot, control: control.buffer, hashKey };
    return new Worker(new URL('./reader-worker.ts', import.meta.url), { workerData: data });
  });
  const results = workers.map((w) => new Promise<ReaderWorkerResult>((resolve, reject) => {
    w.once('message', (m: ReaderWorkerResult) => resolve(m));
    w.once('error', reject);
    w.once('exit', (code) => reject(new Error(`worker exited with ${code} before reporting`)));
  }));
  try {
    while (Atomics.load(control, 0) < WORKERS) await nextTurn();
    const startBytes = writer.memory.buffer.byteLength;
    const started = performance.now();
    for (let n = 1; n <= GENERATIONS; n++) {
      const model = compileIntentions({ ...generationSpec(n), hashKey });
      assert.equal(await writer.publish(model), n);
    }
    const publishMs = performance.now() - started;
    // Let readers run a little on the final generation, then stop them.
    for (let i = 0; i < 20; i++) await nextTurn();
    Atomics.store(control, 1, 1);
    const reports = await Promise.all(results);
    let total = 0;
    for (const [slot, r] of reports.entries()) {
      assert.deepEqual(r.mismatches, [], `worker ${slot}`);
      assert.ok(r.decisions > 0, `worker ${slot} made no decisions`);
      total += r.decisions;
      t.diagnostic(`worker ${slot}: ${r.decisions} decisions over ${r.generationsSeen} generations (last ${r.maxGeneration})`);
    }
    // The test is only meaningful if reads and publishes overlapped: readers must have observed
    // many distinct generations, not just the first and the last.
    assert.ok(reports.some((r) => r.generationsSeen >= 20), 'readers did not overlap with publishing');
    t.diagnostic(`${GENERATIONS} publishes in ${publishMs.toFixed(0)} ms; memory ${startBytes} → ${writer.memory.buffer.byteLength} bytes; ${total} checked decisions`);
    assert.ok(writer.memory.buffer.byteLength > startBytes, 'memory never grew');
  } finally {
    Atomics.store(control, 1, 1);
    await Promise.allSettled(results);
    await Promise.all(workers.map((w) => w.terminate()));
  }
});
