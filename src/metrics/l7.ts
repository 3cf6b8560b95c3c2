// HTTP (L7) counters per listener, per worker, and the hook that records request durations.
//
// Layout: one SharedArrayBuffer of float64 slots; worker w, listener l has the block at
// ((w * listeners) + l) * L7_SLOTS, block number w * listeners + l. Listener 0 is the public
// (inbound) listener, 1..n the upstream listeners in the order `-upstream` gave them (the list
// is fixed for a proxy's life, so the layout is too). Each slot has one writer, its worker; the
// control thread sums the blocks on scrape, as for the L4 counters (./counters.ts).
//
// Durations are not in the shared buffer: `recordRequest` hands them to the worker's HDR
// histograms (./latency.ts), found by the block's number, and the control thread merges those
// on scrape. The rendered histogram keeps its classic buckets, 0.5 ms to 10 s, `_sum` in seconds.

import { DURATION_BUCKETS, type DurationHistogram, EMPTY_DURATIONS, recordDuration } from './latency.ts';

export { DURATION_BUCKETS };
export type { DurationHistogram };

export const CODE_CLASSES = ['1xx', '2xx', '3xx', '4xx', '5xx'] as const;

/**
 * Why the proxy itself answered a request instead of the destination (Envoy's response
 * flags, by their meaning): each is a stable metric label.
 * - no_healthy_upstream (UH): no instance of any target in the chain is healthy
 * - connect_failure (UF): TCP/TLS to the chosen instance failed (or timed out connecting)
 * - overflow (UO): a circuit-breaker limit was reached, or the listener already had
 *   -max-concurrent-requests in progress (503, answered at once)
 * - request_timeout (UT): the route's request timeout passed before the response began
 * - reset (UR): the connection to the destination broke before the response began
 * - rbac_denied: an intention denied the request (403)
 * - bad_request: the path could not be normalised or a header is not allowed (400)
 * - local_app_unreachable: inbound only, the local app refused or timed out connecting
 * - source_limit: inbound only, the calling service already had -max-requests-per-source
 *   requests in progress on this listener (429, answered at once)
 */
export const RESPONSE_FLAGS = ['no_healthy_upstream', 'connect_failure', 'overflow', 'request_timeout', 'reset', 'rbac_denied', 'bad_request', 'local_app_unreachable', 'source_limit'] as const;
export type ResponseFlag = (typeof RESPONSE_FLAGS)[number];

/**
 * Why an intention refused a request (label `reason`; layer L4, L7, or JWT for `jwt_invalid`:
 * a token no applying jwt-provider verifies, answered 401 instead of 403).
 */
export const L7_DENY_REASONS = ['l4_deny', 'permission_deny', 'default_deny', 'jwt_invalid'] as const;
export type L7DenyReason = (typeof L7_DENY_REASONS)[number];

export const OVERFLOW_KINDS = ['connections', 'pending', 'requests'] as const;
export type OverflowKind = (typeof OVERFLOW_KINDS)[number];

let next = 0;
const take = (n: number): number => {
  const at = next;
  next += n;
  return at;
};

/** Slot offsets within one listener's block. */
export const L = {
  REQUESTS: take(CODE_CLASSES.length),
  FLAGS: take(RESPONSE_FLAGS.length),
  L7_DENIED: take(L7_DENY_REASONS.length),
  OVERFLOWS: take(OVERFLOW_KINDS.length),
  RETRIES: take(1),
  EJECTIONS: take(1),
  /** Gauges written by the worker (last value wins; summed across workers on scrape). */
  EJECTED_NOW: take(1),
  BREAKER_OPEN: take(1),
} as const;
export const L7_SLOTS = next;
const BLOCK_BYTES = L7_SLOTS * Float64Array.BYTES_PER_ELEMENT;

export function allocateL7(workers: number, listeners: number): SharedArrayBuffer {
  return new SharedArrayBuffer(workers * listeners * BLOCK_BYTES);
}

export function l7Block(buffer: SharedArrayBuffer, worker: number, listeners: number, listener: number): Float64Array {
  return new Float64Array(buffer, l7BlockNumber(worker, listeners, listener) * BLOCK_BYTES, L7_SLOTS);
}

/** The number of worker `worker`'s block for `listener` (its offset in blocks). */
export function l7BlockNumber(worker: number, listeners: number, listener: number): number {
  return worker * listeners + listener;
}

/**
 * Counts one finished request: its status class in the block, and how long it took (seconds)
 * in this worker's HDR histogram for the block's listener (a no-op on a thread without a
 * recorder, ./latency.ts).
 */
export function recordRequest(b: Float64Array, status: number, seconds: number): void {
  const cls = Math.floor(status / 100) - 1;
  if (cls >= 0 && cls < CODE_CLASSES.length) b[L.REQUESTS + cls] = (b[L.REQUESTS + cls] as number) + 1;
  recordDuration(b.byteOffset / BLOCK_BYTES, seconds);
}

export function countFlag(b: Float64Array, flag: ResponseFlag): void {
  const i = L.FLAGS + RESPONSE_FLAGS.indexOf(flag);
  b[i] = (b[i] as number) + 1;
}

export function countL7Denied(b: Float64Array, reason: L7DenyReason): void {
  const i = L.L7_DENIED + L7_DENY_REASONS.indexOf(reason);
  b[i] = (b[i] as number) + 1;
}

export function countOverflow(b: Float64Array, kind: OverflowKind): void {
  const i = L.OVERFLOWS + OVERFLOW_KINDS.indexOf(kind);
  b[i] = (b[i] as number) + 1;
}

export function bump(b: Float64Array, slot: number, by = 1): void {
  b[slot] = (b[slot] as number) + by;
}

interface Sample {
  readonly labels: Readonly<Record<string, string>>;
  readonly value: number;
}

export interface L7Family {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge' | 'histogram';
  readonly samples: readonly Sample[];
}

/** Each listener's block summed over workers (index = listener). */
export function l7Totals(buffer: SharedArrayBuffer, workers: number, listeners: number): Float64Array[] {
  return Array.from({ length: listeners }, (_l, li) => {
    const t = new Float64Array(L7_SLOTS);
    for (let w = 0; w < workers; w++) {
      const b = l7Block(buffer, w, listeners, li);
      for (let i = 0; i < L7_SLOTS; i++) t[i] = (t[i] as number) + (b[i] as number);
    }
    return t;
  });
}

/**
 * The L7 families for every listener, counters summed over workers. `listenerLabels[l]` labels
 * listener l (e.g. {direction: 'inbound'} or {direction: 'outbound', upstream: 'api'});
 * `durations[l]` is its merged duration histogram (./latency.ts LatencyTotals).
 */
export function l7Families(buffer: SharedArrayBuffer, workers: number, listenerLabels: readonly Readonly<Record<string, string>>[], durations: readonly DurationHistogram[]): L7Family[] {
  const totals = l7Totals(buffer, workers, listenerLabels.length);
  const each = (f: (t: Float64Array, labels: Readonly<Record<string, string>>) => Sample[]): Sample[] => totals.flatMap((t, li) => f(t, listenerLabels[li] as Readonly<Record<string, string>>));
  const histogram: Sample[] = listenerLabels.flatMap((labels, li) => {
    const d = durations[li] ?? EMPTY_DURATIONS;
    const out: Sample[] = DURATION_BUCKETS.map((le, i) => ({ labels: { ...labels, le: String(le) }, value: d.buckets[i] as number }));
    out.push({ labels: { ...labels, le: '+Inf' }, value: d.count });
    out.push({ labels: { ...labels, __suffix: '_sum' }, value: d.sum });
    out.push({ labels: { ...labels, __suffix: '_count' }, value: d.count });
    return out;
  });
  return [
    {
      name: 'meshd_http_requests_total',
      help: 'HTTP requests answered, by response code class.',
      type: 'counter',
      samples: each((t, labels) => CODE_CLASSES.map((c, i) => ({ labels: { ...labels, code_class: c }, value: t[L.REQUESTS + i] as number }))),
    },
    {
      name: 'meshd_http_request_duration_seconds',
      help: 'Time from the request headers to the end of the response.',
      type: 'histogram',
      samples: histogram,
    },
    {
      name: 'meshd_http_local_responses_total',
      help: 'Requests the proxy answered itself, by cause (Envoy response flag meaning).',
      type: 'counter',
      samples: each((t, labels) => RESPONSE_FLAGS.map((f, i) => ({ labels: { ...labels, flag: f }, value: t[L.FLAGS + i] as number }))),
    },
    {
      name: 'meshd_http_requests_denied_total',
      help: 'Requests refused by intentions (403; 401 for an invalid JWT), by layer and reason.',
      type: 'counter',
      samples: each((t, labels) => L7_DENY_REASONS.map((r, i) => ({ labels: { ...labels, layer: r === 'l4_deny' ? 'L4' : r === 'jwt_invalid' ? 'JWT' : 'L7', reason: r }, value: t[L.L7_DENIED + i] as number }))),
    },
    {
      name: 'meshd_upstream_overflows_total',
      help: 'Requests refused because a circuit-breaker limit was reached, by limit.',
      type: 'counter',
      samples: each((t, labels) => OVERFLOW_KINDS.map((k, i) => ({ labels: { ...labels, limit: k }, value: t[L.OVERFLOWS + i] as number }))),
    },
    { name: 'meshd_upstream_retries_total', help: 'Request attempts retried.', type: 'counter', samples: each((t, labels) => [{ labels, value: t[L.RETRIES] as number }]) },
    { name: 'meshd_upstream_request_timeouts_total', help: 'Requests that ran past their route timeout (504).', type: 'counter', samples: each((t, labels) => [{ labels, value: t[L.FLAGS + RESPONSE_FLAGS.indexOf('request_timeout')] as number }]) },
    { name: 'meshd_upstream_connect_failures_total', help: 'Upstream connections that failed to open (per attempt).', type: 'counter', samples: each((t, labels) => [{ labels, value: t[L.FLAGS + RESPONSE_FLAGS.indexOf('connect_failure')] as number }]) },
    { name: 'meshd_outlier_ejections_total', help: 'Instances ejected by passive health checking.', type: 'counter', samples: each((t, labels) => [{ labels, value: t[L.EJECTIONS] as number }]) },
    { name: 'meshd_outlier_ejected', help: 'Instances currently ejected.', type: 'gauge', samples: each((t, labels) => [{ labels, value: t[L.EJECTED_NOW] as number }]) },
    { name: 'meshd_circuit_breaker_open', help: '1 while a circuit-breaker limit is reached (summed over workers).', type: 'gauge', samples: each((t, labels) => [{ labels, value: t[L.BREAKER_OPEN] as number }]) },
  ];
}

function labelText(labels: Readonly<Record<string, string>>): string {
  const parts = Object.entries(labels)
    .filter(([k]) => k !== '__suffix')
    .map(([k, v]) => `${k}="${v.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n')}"`);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

export function renderL7(families: readonly L7Family[], extraLabels: Readonly<Record<string, string>>): string {
  const out: string[] = [];
  for (const f of families) {
    out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
    for (const s of f.samples) {
      const suffix = s.labels.__suffix ?? (f.type === 'histogram' ? '_bucket' : '');
      out.push(`${f.name}${suffix}${labelText({ ...extraLabels, ...s.labels })} ${s.value}`);
    }
  }
  return out.join('\n') + '\n';
}
