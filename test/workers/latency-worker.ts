// The real data-plane worker, plus test hooks for the latency scrape: {type: 'test-record'}
// records durations as finished requests would (through recordRequest, into this worker's
// HDR histograms), {type: 'test-stall', ms} blocks the event loop, {type: 'test-crash'} throws.
import { parentPort } from 'node:worker_threads';
import '../../src/workers/dataplane-worker.ts';
import { l7Block, recordRequest } from '../../src/metrics/l7.ts';
import type { ToWorker } from '../../src/workers/messages.ts';

type TestMessage = ToWorker | { type: 'test-record'; listener: number; seconds: number[] } | { type: 'test-stall'; ms: number } | { type: 'test-crash' };

let blocks: Float64Array[] = [];
parentPort?.on('message', (m: TestMessage) => {
  if (m.type === 'init') {
    const n = 1 + m.upstreams.length;
    blocks = Array.from({ length: n }, (_v, l) => l7Block(m.l7Metrics, m.index, n, l));
  } else if (m.type === 'test-record') {
    const b = blocks[m.listener];
    if (b !== undefined) for (const s of m.seconds) recordRequest(b, 200, s);
  } else if (m.type === 'test-stall') {
    const until = performance.now() + m.ms;
    while (performance.now() < until) {
      /* a stuck event loop */
    }
  } else if (m.type === 'test-crash') {
    setImmediate(() => {
      throw new Error('injected worker crash');
    });
  }
});
