// The Envoy-named rendering (src/metrics/envoy.ts) and the runtime gauges
// (src/metrics/runtime.ts) over synthetic counter blocks and duration histograms recorded as
// two workers would and merged as the control thread does: exact names, Consul labels,
// millisecond buckets, and both texts clean for promtool and the strict checker.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { S, allocateCounters, counterBlock, deniedSlot } from '../../src/metrics/counters.ts';
import { renderEnvoy } from '../../src/metrics/envoy.ts';
import { L, allocateL7, bump, countFlag, countL7Denied, countOverflow, l7Block, l7Families, l7Totals, recordRequest, renderL7 } from '../../src/metrics/l7.ts';
import { LatencyRecorder, LatencyTotals, installLatencyRecorder, type DurationHistogram } from '../../src/metrics/latency.ts';
import { renderPrometheus } from '../../src/metrics/prometheus.ts';
import { W, WORKER_GAUGE_SLOTS, allocateWorkerGauges, renderRuntime, runtimeFamilies, startLagMonitor, workerGaugeBlock } from '../../src/metrics/runtime.ts';
import { parseMetrics, total } from '../helpers/net.ts';
import { assertStrictMetrics } from '../helpers/prom-check.ts';

const hasPromtool = spawnSync('promtool', ['--version']).status === 0;
const WORKERS = 2;
const UPSTREAMS = ['api', 'db'];
const MEM = { rss: 50e6, heapUsed: 10e6, heapTotal: 20e6, external: 1e6 };

/**
 * Runs `f` as worker `w` of a proxy with `listeners` listeners would: its recordRequest calls
 * land in that worker's HDR histograms, whose answer is then merged into `totals`.
 */
function asWorker(totals: LatencyTotals, w: number, listeners: number, f: () => void): void {
  const r = new LatencyRecorder(w * listeners, listeners);
  installLatencyRecorder(r);
  try {
    f();
  } finally {
    installLatencyRecorder(null);
  }
  totals.merge(r.takeDelta());
  r.destroy();
}

/** Two workers' worth of traffic: inbound 3x200 + 1x403, upstream api 2x200 + 1x503 + a retry. */
function fixture(): { counters: Float64Array[]; l7: SharedArrayBuffer; durations: DurationHistogram[] } {
  const cbuf = allocateCounters(WORKERS);
  const counters = [counterBlock(cbuf, 0), counterBlock(cbuf, 1)];
  const c0 = counters[0] as Float64Array;
  const c1 = counters[1] as Float64Array;
  c0[S.ACCEPTED_IN] = 3;
  c1[S.ACCEPTED_IN] = 2;
  c0[S.CLOSED_IN] = 4;
  c0[S.RX_IN] = 1000;
  c1[S.TX_IN] = 2000;
  c1[deniedSlot('intention')] = 7;
  const l7 = allocateL7(WORKERS, 1 + UPSTREAMS.length);
  const totals = new LatencyTotals(1 + UPSTREAMS.length);
  const in0 = l7Block(l7, 0, 3, 0);
  const in1 = l7Block(l7, 1, 3, 0);
  const api = l7Block(l7, 1, 3, 1);
  asWorker(totals, 0, 3, () => {
    recordRequest(in0, 200, 0.0004);
    recordRequest(in0, 200, 0.003);
  });
  asWorker(totals, 1, 3, () => {
    recordRequest(in1, 200, 20);
    recordRequest(in1, 403, 0.001);
    recordRequest(api, 200, 0.002);
    recordRequest(api, 200, 0.002);
    recordRequest(api, 503, 0.05);
  });
  countL7Denied(in1, 'permission_deny');
  countL7Denied(in0, 'jwt_invalid');
  bump(api, L.RETRIES);
  countFlag(api, 'request_timeout');
  countOverflow(api, 'pending');
  countOverflow(api, 'requests');
  bump(api, L.EJECTIONS, 2);
  api[L.EJECTED_NOW] = 1;
  return { counters, l7, durations: [0, 1, 2].map((l) => totals.histogram(l)) };
}

function envoyText(protocol = 'http'): string {
  const { counters, l7, durations } = fixture();
  return renderEnvoy({ service: 'web', datacenter: 'dc2', counters, l7: l7Totals(l7, WORKERS, 3), durations, upstreams: UPSTREAMS, hasInbound: true, inboundProtocol: protocol });
}

function promtool(text: string): void {
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text });
  assert.equal(r.status, 0, `promtool: ${r.stdout.toString()}${r.stderr.toString()}`);
  assert.equal(r.stdout.toString() + r.stderr.toString(), '');
}

test('envoy format: HCM and cluster request counts by class with Consul labels', () => {
  const m = parseMetrics(envoyText());
  const src = { consul_source_service: 'web', consul_source_datacenter: 'dc2', consul_source_namespace: 'default', consul_source_partition: 'default' };
  const pub = { ...src, envoy_http_conn_manager_prefix: 'public_listener' };
  assert.equal(total(m, 'envoy_http_downstream_rq_xx', { ...pub, envoy_response_code_class: '2' }), 3);
  assert.equal(total(m, 'envoy_http_downstream_rq_xx', { ...pub, envoy_response_code_class: '4' }), 1);
  assert.equal(total(m, 'envoy_listener_http_downstream_rq_xx', { ...pub, envoy_response_code_class: '2' }), 3);
  assert.equal(total(m, 'envoy_http_downstream_rq_total', pub), 4);
  const up = { envoy_http_conn_manager_prefix: 'upstream', consul_upstream_service: 'api', consul_upstream_datacenter: 'dc2' };
  assert.equal(total(m, 'envoy_http_downstream_rq_xx', { ...up, envoy_response_code_class: '5' }), 1);
  const api = { envoy_cluster_name: 'api', consul_destination_service: 'api', consul_destination_datacenter: 'dc2', consul_destination_namespace: 'default' };
  assert.equal(total(m, 'envoy_cluster_upstream_rq_xx', { ...api, envoy_response_code_class: '2' }), 2);
  assert.equal(total(m, 'envoy_cluster_upstream_rq_xx', { ...api, envoy_response_code_class: '5' }), 1);
  assert.equal(total(m, 'envoy_cluster_upstream_rq_total', api), 3);
  assert.equal(total(m, 'envoy_cluster_upstream_rq_completed', api), 3);
  assert.equal(total(m, 'envoy_cluster_upstream_rq_total', { consul_destination_service: 'db' }), 0);
  assert.equal(total(m, 'envoy_cluster_upstream_rq_retry', api), 1);
  assert.equal(total(m, 'envoy_cluster_upstream_rq_timeout', api), 1);
  assert.equal(total(m, 'envoy_cluster_upstream_rq_pending_overflow', api), 2);
  assert.equal(total(m, 'envoy_cluster_outlier_detection_ejections_enforced_total', api), 2);
  assert.equal(total(m, 'envoy_cluster_outlier_detection_ejections_active', api), 1);
  assert.equal(total(m, 'envoy_http_rbac_denied', pub), 1);
  assert.equal(total(m, 'envoy_http_jwt_authn_denied', pub), 1);
  assert.equal(total(m, 'envoy_connect_authz_rbac_denied', src), 7);
  // Every sample carries the proxy's own identity.
  for (const key of m.keys()) assert.match(key, /consul_source_service="web"/);
});

test('envoy format: request time histograms are in milliseconds, cumulative, +Inf = count', () => {
  const text = envoyText();
  const m = parseMetrics(text);
  const pub = 'envoy_http_conn_manager_prefix="public_listener"';
  const bucket = (le: string): number => total(m, 'envoy_http_downstream_rq_time_bucket', { envoy_http_conn_manager_prefix: 'public_listener', le });
  assert.equal(bucket('0.5'), 1, '0.4 ms');
  assert.equal(bucket('1'), 2, '+1 ms');
  assert.equal(bucket('5'), 3, '+3 ms');
  assert.equal(bucket('10000'), 3, '20 s is past the last bound');
  assert.equal(bucket('+Inf'), 4);
  assert.equal(total(m, 'envoy_http_downstream_rq_time_count', { envoy_http_conn_manager_prefix: 'public_listener' }), 4);
  assert.ok(Math.abs(total(m, 'envoy_http_downstream_rq_time_sum', { envoy_http_conn_manager_prefix: 'public_listener' }) - 20_004.4) < 1e-6);
  assert.match(text, new RegExp(`envoy_cluster_upstream_rq_time_bucket\\{[^}]*envoy_cluster_name="api"[^}]*le="2.5"\\} 2`));
  assert.ok(text.includes(pub));
  assertStrictMetrics(text);
});

test('envoy format: inbound connections under the HTTP or the TCP prefix by protocol', () => {
  const h = parseMetrics(envoyText('http'));
  assert.equal(total(h, 'envoy_http_downstream_cx_total', { envoy_http_conn_manager_prefix: 'public_listener' }), 5);
  assert.equal(total(h, 'envoy_http_downstream_cx_active', { envoy_http_conn_manager_prefix: 'public_listener' }), 1);
  assert.equal(total(h, 'envoy_http_downstream_cx_rx_bytes_total'), 1000);
  assert.equal(total(h, 'envoy_tcp_downstream_cx_total'), 0);
  const t = parseMetrics(envoyText('tcp'));
  assert.equal(total(t, 'envoy_tcp_downstream_cx_total', { envoy_tcp_prefix: 'public_listener' }), 5);
  assert.equal(total(t, 'envoy_tcp_downstream_cx_tx_bytes_total', { envoy_tcp_prefix: 'public_listener' }), 2000);
  assert.equal(total(t, 'envoy_http_downstream_cx_total'), 0);
});

test('envoy format without an inbound listener has no public_listener series', () => {
  const { counters, l7, durations } = fixture();
  const text = renderEnvoy({ service: 'web', datacenter: 'dc1', counters, l7: l7Totals(l7, WORKERS, 3), durations, upstreams: UPSTREAMS, hasInbound: false, inboundProtocol: 'tcp' });
  assert.doesNotMatch(text, /public_listener|rbac|tcp_downstream/);
  assert.match(text, /envoy_cluster_upstream_rq_total\{[^}]*consul_destination_service="api"/);
  assertStrictMetrics(text);
});

test('runtime gauges: lag summary per worker and process memory', () => {
  const buf = allocateWorkerGauges(2);
  const b = workerGaugeBlock(buf, 1);
  b[W.LAG_P50] = 0.01;
  b[W.LAG_P99] = 0.02;
  b[W.LAG_MAX] = 0.05;
  b[W.LAG_SUM] = 3;
  b[W.LAG_COUNT] = 200;
  b[W.HEAP_USED] = 1234;
  const text = renderRuntime(runtimeFamilies(buf, 2, MEM), { service: 'web' });
  const m = parseMetrics(text);
  assert.equal(m.get('meshd_worker_event_loop_lag_seconds{service="web",worker="1",quantile="0.99"}'), 0.02);
  assert.equal(m.get('meshd_worker_event_loop_lag_seconds{service="web",worker="1",quantile="1"}'), 0.05);
  assert.equal(m.get('meshd_worker_event_loop_lag_seconds_count{service="web",worker="1"}'), 200);
  assert.equal(m.get('meshd_worker_heap_used_bytes{service="web",worker="1"}'), 1234);
  assert.equal(m.get('meshd_process_resident_memory_bytes{service="web"}'), 50e6);
  assertStrictMetrics(text, { countersEndInTotal: true });
});

test('the lag monitor sees a blocked event loop and writes its own block only', async () => {
  const buf = allocateWorkerGauges(2);
  const stop = startLagMonitor(workerGaugeBlock(buf, 1), 150);
  try {
    await new Promise((r) => setTimeout(r, 30));
    const until = performance.now() + 60;
    while (performance.now() < until) {
      /* block the loop for 60 ms */
    }
    await new Promise((r) => setTimeout(r, 250));
  } finally {
    stop();
  }
  const b = workerGaugeBlock(buf, 1);
  assert.ok((b[W.LAG_COUNT] as number) > 0, 'samples were taken');
  assert.ok((b[W.LAG_SUM] as number) >= 0.04, `sum ${b[W.LAG_SUM]}`);
  assert.ok((b[W.HEAP_USED] as number) > 0);
  assert.ok((b[W.UPDATED_MS] as number) > 0);
  assert.ok((b[W.LAG_P99] as number) <= (b[W.LAG_MAX] as number));
  assert.deepEqual([...workerGaugeBlock(buf, 0)], new Array<number>(WORKER_GAUGE_SLOTS).fill(0), 'worker 0 untouched');
});

test('both formats, whole, pass the strict checker and promtool', { skip: hasPromtool ? false : 'promtool not installed' }, () => {
  const { counters, l7, durations } = fixture();
  const runtime = runtimeFamilies(allocateWorkerGauges(WORKERS), WORKERS, MEM);
  const listeners = [{ direction: 'inbound' }, ...UPSTREAMS.map((u) => ({ direction: 'outbound', upstream: u }))];
  const meshd = renderL7(l7Families(l7, WORKERS, listeners, durations), { service: 'web' }) + renderPrometheus(counters, { service: 'web' }) + renderRuntime(runtime, { service: 'web' });
  assertStrictMetrics(meshd, { countersEndInTotal: true });
  promtool(meshd);
  const envoy = envoyText() + renderRuntime(runtime, { consul_source_service: 'web' });
  assertStrictMetrics(envoy);
  promtool(envoy);
  promtool(envoyText('tcp'));
});
