// Runtime health gauges: each data-plane worker's event-loop delay and V8 heap, and the
// process's memory as the control thread sees it.
//
// Worker side: a worker samples its own loop delay with perf_hooks.monitorEventLoopDelay
// (a libuv timer inside Node, no JavaScript per sample) and, once per window, writes the
// window's p50/p99/max and its heap size into its own block of a SharedArrayBuffer, then
// resets the histogram. Nothing runs per request. As for the traffic counters
// (./counters.ts), each slot has exactly one writer, its worker; the control thread reads
// the blocks when Prometheus scrapes.
//
// The delay is exposed as a summary per worker: quantiles 0.5, 0.99 and 1 (the maximum) over
// the last complete window, and `_sum`/`_count` over every sample since the worker started
// (a restarted worker continues the sums of the slots it inherits).
//
// Each window also counts what keeps the worker's event loop alive, from
// process.getActiveResourcesInfo(): timers (`Timeout`) apart from everything else (sockets,
// servers, pending requests, the message port). Unref'd timers and handles are not listed by
// Node, so these are the referenced ones. A count that keeps growing at a steady load is a leak.

import { monitorEventLoopDelay } from 'node:perf_hooks';
import { getHeapStatistics } from 'node:v8';
import { labelText } from './prometheus.ts';

/** Slots of one worker's gauge block. */
export const W = {
  LAG_P50: 0,
  LAG_P99: 1,
  LAG_MAX: 2,
  /** Seconds, summed over every sample since start. */
  LAG_SUM: 3,
  LAG_COUNT: 4,
  HEAP_USED: 5,
  HEAP_TOTAL: 6,
  /** Date.now() of the last window written (0: none yet). */
  UPDATED_MS: 7,
  /** Referenced handles and requests other than timers, at the end of the last window. */
  ACTIVE_HANDLES: 8,
  /** Referenced timers, at the end of the last window. */
  ACTIVE_TIMERS: 9,
} as const;
export const WORKER_GAUGE_SLOTS = 10;

/** How long one lag window lasts. */
export const LAG_WINDOW_MS = 2000;
/** Sampling period of the delay monitor (Node's default is 10 ms). */
const LAG_RESOLUTION_MS = 10;

export function allocateWorkerGauges(workers: number): SharedArrayBuffer {
  return new SharedArrayBuffer(workers * WORKER_GAUGE_SLOTS * Float64Array.BYTES_PER_ELEMENT);
}

export function workerGaugeBlock(buffer: SharedArrayBuffer, worker: number): Float64Array {
  return new Float64Array(buffer, worker * WORKER_GAUGE_SLOTS * Float64Array.BYTES_PER_ELEMENT, WORKER_GAUGE_SLOTS);
}

/**
 * Starts sampling this thread's event-loop delay into `b`, one write per `windowMs`.
 * Returns a function that stops it. The timer is unref'd: it never keeps a thread alive.
 */
export function startLagMonitor(b: Float64Array, windowMs = LAG_WINDOW_MS): () => void {
  const h = monitorEventLoopDelay({ resolution: LAG_RESOLUTION_MS });
  h.enable();
  const flush = (): void => {
    const heap = getHeapStatistics();
    b[W.HEAP_USED] = heap.used_heap_size;
    b[W.HEAP_TOTAL] = heap.total_heap_size;
    if (h.count > 0) {
      // The histogram reports nanoseconds.
      b[W.LAG_P50] = h.percentile(50) / 1e9;
      b[W.LAG_P99] = h.percentile(99) / 1e9;
      b[W.LAG_MAX] = h.max / 1e9;
      b[W.LAG_SUM] = (b[W.LAG_SUM] as number) + (h.mean * h.count) / 1e9;
      b[W.LAG_COUNT] = (b[W.LAG_COUNT] as number) + h.count;
    }
    let timers = 0;
    let handles = 0;
    for (const r of process.getActiveResourcesInfo()) {
      if (r === 'Timeout') timers++;
      else handles++;
    }
    b[W.ACTIVE_HANDLES] = handles;
    b[W.ACTIVE_TIMERS] = timers;
    b[W.UPDATED_MS] = Date.now();
    h.reset();
  };
  const timer = setInterval(flush, windowMs);
  timer.unref();
  return () => {
    clearInterval(timer);
    h.disable();
  };
}

export interface RuntimeSample {
  readonly labels: Readonly<Record<string, string>>;
  /** '' for the family's own name; '_sum' or '_count' for a summary's totals. */
  readonly suffix: '' | '_sum' | '_count';
  readonly value: number;
}

export interface RuntimeFamily {
  readonly name: string;
  readonly help: string;
  readonly type: 'gauge' | 'summary';
  readonly samples: readonly RuntimeSample[];
}

export interface MemoryFigures {
  readonly rss: number;
  readonly heapUsed: number;
  readonly heapTotal: number;
  readonly external: number;
}

/** The worker gauges and the process memory, as families (label values are fixed strings). */
export function runtimeFamilies(buffer: SharedArrayBuffer, workers: number, mem: MemoryFigures): RuntimeFamily[] {
  const blocks = Array.from({ length: workers }, (_v, i) => workerGaugeBlock(buffer, i));
  const perWorker = (slot: number): RuntimeSample[] => blocks.map((b, i) => ({ labels: { worker: String(i) }, suffix: '', value: b[slot] as number }));
  const lag: RuntimeSample[] = [];
  blocks.forEach((b, i) => {
    const worker = String(i);
    lag.push(
      { labels: { worker, quantile: '0.5' }, suffix: '', value: b[W.LAG_P50] as number },
      { labels: { worker, quantile: '0.99' }, suffix: '', value: b[W.LAG_P99] as number },
      { labels: { worker, quantile: '1' }, suffix: '', value: b[W.LAG_MAX] as number },
      { labels: { worker }, suffix: '_sum', value: b[W.LAG_SUM] as number },
      { labels: { worker }, suffix: '_count', value: b[W.LAG_COUNT] as number },
    );
  });
  const one = (value: number): RuntimeSample[] => [{ labels: {}, suffix: '', value }];
  return [
    {
      name: 'meshd_worker_event_loop_lag_seconds',
      help: `Event-loop delay of each data-plane worker: quantiles over the last ${LAG_WINDOW_MS / 1000} s window (1 = maximum), sum and count since the worker started.`,
      type: 'summary',
      samples: lag,
    },
    { name: 'meshd_worker_heap_used_bytes', help: "V8 heap in use by each data-plane worker's isolate.", type: 'gauge', samples: perWorker(W.HEAP_USED) },
    { name: 'meshd_worker_heap_total_bytes', help: "V8 heap reserved by each data-plane worker's isolate.", type: 'gauge', samples: perWorker(W.HEAP_TOTAL) },
    { name: 'meshd_worker_active_handles', help: "Referenced handles and requests other than timers (sockets, servers, ...) in each data-plane worker's event loop, at the end of the last window.", type: 'gauge', samples: perWorker(W.ACTIVE_HANDLES) },
    { name: 'meshd_worker_active_timers', help: "Referenced timers in each data-plane worker's event loop, at the end of the last window.", type: 'gauge', samples: perWorker(W.ACTIVE_TIMERS) },
    { name: 'meshd_process_resident_memory_bytes', help: 'Resident set size of the proxy process (all threads).', type: 'gauge', samples: one(mem.rss) },
    { name: 'meshd_process_heap_used_bytes', help: "V8 heap in use by the control thread's isolate.", type: 'gauge', samples: one(mem.heapUsed) },
    { name: 'meshd_process_heap_total_bytes', help: "V8 heap reserved by the control thread's isolate.", type: 'gauge', samples: one(mem.heapTotal) },
    { name: 'meshd_process_external_memory_bytes', help: 'Memory of C++ objects bound to JavaScript objects (Buffers included), as process.memoryUsage() reports it.', type: 'gauge', samples: one(mem.external) },
  ];
}

export function renderRuntime(families: readonly RuntimeFamily[], extraLabels: Readonly<Record<string, string>>): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) out.push(`${f.name}${s.suffix}${labelText({ ...extraLabels, ...s.labels })} ${s.value}`);
  }
  return out.join('\n') + '\n';
}
