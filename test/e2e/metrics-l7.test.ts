// L7 metrics counted exactly, end to end: real processes from the CLI, an `api` sidecar
// (meshd format) in front of an HTTP app, and two `web` client sidecars, one in each format
// (`-metrics-format envoy` on the second). Exactly N requests through each client must move
// the request counters and histogram counts by exactly N on both sides; both /metrics texts
// must pass the strict checker (test/helpers/prom-check.ts) and promtool after the traffic.
// Durations live in per-worker HDR histograms merged on scrape (src/metrics/latency.ts), so a
// last test spreads requests over both client workers and checks each is counted once.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { get } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { parseMetrics, scrape, total, type Samples } from '../helpers/net.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';
import { assertStrictMetrics } from '../helpers/prom-check.ts';

const hasPromtool = spawnSync('promtool', ['--version']).status === 0;
const N = 137;
const M = 61;

/** Sends `count` GETs one after another (keep-alive), each read to the end; all must be 200. */
async function send(base: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const r = await fetch(`${base}/item/${i}`);
    await r.arrayBuffer();
    assert.equal(r.status, 200, `request ${i}`);
  }
}

/** One GET on a connection of its own (so the kernel may hand it to either worker). */
function getOnNewConnection(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    get(url, { agent: false }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    }).on('error', reject);
  });
}

/**
 * Scrapes until `value(samples)` reaches `target` (a response is counted when its stream
 * closes, which may be a moment after the client read it), then once more after a pause to
 * show it does not overshoot.
 */
async function settle(addr: string, value: (s: Samples) => number, target: number): Promise<number> {
  const end = Date.now() + 5000;
  let v = value(await scrape(addr));
  while (v < target && Date.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
    v = value(await scrape(addr));
  }
  await new Promise((r) => setTimeout(r, 100));
  return value(await scrape(addr));
}

describe('L7 metrics through two sidecars, exactly N requests, both formats', () => {
  let dir: string;
  let agent: MeshdProcess;
  let app: HttpApp;
  let api: MeshdProcess;
  let web: MeshdProcess;
  let webEnvoy: MeshdProcess;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-metrics-l7-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    const http = agent.fields.http as string;
    await putConfig(http, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(http, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] });
    app = await startApp('api-a');
    const common = ['-workers', '2', '-metrics-addr', '127.0.0.1:0', '-http-addr', http];
    api = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', ...common]);
    web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', ...common]);
    webEnvoy = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-metrics-format', 'envoy', ...common]);
    // Both clients route to api before counting starts.
    for (const p of [web, webEnvoy]) {
      const base = `http://${p.fields['upstream.api'] as string}`;
      const deadline = Date.now() + 10_000;
      for (;;) {
        const r = await fetch(`${base}/warmup`).catch(() => null);
        await r?.arrayBuffer();
        if (r?.status === 200) break;
        assert.ok(Date.now() < deadline, 'api never reachable through the client sidecar');
        await new Promise((res) => setTimeout(res, 50));
      }
    }
  });

  after(async () => {
    await Promise.all([web?.stop(), webEnvoy?.stop(), api?.stop()]);
    await agent?.stop();
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test(`${N} requests (meshd client) and ${M} (envoy client): every counter moves by exactly that`, async () => {
    const apiAddr = api.fields.metrics as string;
    const webAddr = web.fields.metrics as string;
    const envoyAddr = webEnvoy.fields.metrics as string;
    const out2xx = (s: Samples): number => total(s, 'meshd_http_requests_total', { direction: 'outbound', upstream: 'api', code_class: '2xx' });
    const outCount = (s: Samples): number => total(s, 'meshd_http_request_duration_seconds_count', { direction: 'outbound', upstream: 'api' });
    const outInf = (s: Samples): number => total(s, 'meshd_http_request_duration_seconds_bucket', { direction: 'outbound', upstream: 'api', le: '+Inf' });
    const in2xx = (s: Samples): number => total(s, 'meshd_http_requests_total', { direction: 'inbound', code_class: '2xx' });
    const inCount = (s: Samples): number => total(s, 'meshd_http_request_duration_seconds_count', { direction: 'inbound' });
    const cluster = { consul_destination_service: 'api', envoy_cluster_name: 'api', consul_source_service: 'web' };
    const e2xx = (s: Samples): number => total(s, 'envoy_cluster_upstream_rq_xx', { ...cluster, envoy_response_code_class: '2' });
    const eTotal = (s: Samples): number => total(s, 'envoy_cluster_upstream_rq_total', cluster);
    const eCount = (s: Samples): number => total(s, 'envoy_cluster_upstream_rq_time_count', cluster);
    const eHcm = (s: Samples): number => total(s, 'envoy_http_downstream_rq_xx', { envoy_http_conn_manager_prefix: 'upstream', consul_upstream_service: 'api', envoy_response_code_class: '2' });

    const [api0, web0, env0] = await Promise.all([scrape(apiAddr), scrape(webAddr), scrape(envoyAddr)]);
    const hits0 = app.hits;
    await send(`http://${web.fields['upstream.api'] as string}`, N);
    await send(`http://${webEnvoy.fields['upstream.api'] as string}`, M);
    assert.equal(app.hits - hits0, N + M, 'the app saw every request once');

    assert.equal((await settle(webAddr, out2xx, out2xx(web0) + N)) - out2xx(web0), N, 'client 2xx');
    assert.equal((await settle(webAddr, outCount, outCount(web0) + N)) - outCount(web0), N, 'client histogram _count');
    assert.equal((await settle(webAddr, outInf, outInf(web0) + N)) - outInf(web0), N, 'client +Inf bucket');
    assert.equal((await settle(apiAddr, in2xx, in2xx(api0) + N + M)) - in2xx(api0), N + M, 'server inbound 2xx');
    assert.equal((await settle(apiAddr, inCount, inCount(api0) + N + M)) - inCount(api0), N + M, 'server inbound histogram _count');
    assert.equal((await settle(envoyAddr, e2xx, e2xx(env0) + M)) - e2xx(env0), M, 'envoy rq_xx class 2');
    assert.equal((await settle(envoyAddr, eTotal, eTotal(env0) + M)) - eTotal(env0), M, 'envoy rq_total');
    assert.equal((await settle(envoyAddr, eCount, eCount(env0) + M)) - eCount(env0), M, 'envoy rq_time _count');
    assert.equal((await settle(envoyAddr, eHcm, eHcm(env0) + M)) - eHcm(env0), M, 'envoy upstream HCM rq_xx class 2');

    // No errors anywhere along the way.
    const [apiEnd, webEnd, envEnd] = await Promise.all([scrape(apiAddr), scrape(webAddr), scrape(envoyAddr)]);
    for (const cls of ['4xx', '5xx']) {
      assert.equal(total(webEnd, 'meshd_http_requests_total', { code_class: cls }), total(web0, 'meshd_http_requests_total', { code_class: cls }), cls);
      assert.equal(total(apiEnd, 'meshd_http_requests_total', { code_class: cls }), total(api0, 'meshd_http_requests_total', { code_class: cls }), cls);
    }
    assert.equal(total(envEnd, 'envoy_cluster_upstream_rq_xx', { envoy_response_code_class: '5' }), 0);
  });

  test('both expositions pass the strict checker and promtool after real traffic', async () => {
    const meshd = await (await fetch(`http://${api.fields.metrics as string}/metrics`)).text();
    const client = await (await fetch(`http://${web.fields.metrics as string}/metrics`)).text();
    const envoy = await (await fetch(`http://${webEnvoy.fields.metrics as string}/metrics`)).text();
    assertStrictMetrics(meshd, { countersEndInTotal: true });
    assertStrictMetrics(client, { countersEndInTotal: true });
    assertStrictMetrics(envoy);
    assert.doesNotMatch(envoy, /^meshd_http_/m, 'the envoy format renames the traffic families');
    assert.doesNotMatch(meshd, /^envoy_/m);
    if (hasPromtool) {
      for (const text of [meshd, client, envoy]) {
        const r = spawnSync('promtool', ['check', 'metrics'], { input: text });
        assert.equal(r.status, 0, `promtool: ${r.stdout.toString()}${r.stderr.toString()}`);
        assert.equal(r.stdout.toString() + r.stderr.toString(), '');
      }
    }
  });

  test('requests spread over both client workers: the merged histogram counts each exactly once', async () => {
    const addr = web.fields.metrics as string;
    const labels = { direction: 'outbound', upstream: 'api' };
    const count = (s: Samples): number => total(s, 'meshd_http_request_duration_seconds_count', labels);
    const bucket = (s: Samples, le: string): number => total(s, 'meshd_http_request_duration_seconds_bucket', { ...labels, le });
    const accepted = (s: Samples, worker: string): number => total(s, 'meshd_worker_connections_accepted_total', { worker });
    const s0 = await scrape(addr);
    const K = 60;
    for (let i = 0; i < K; i++) assert.equal(await getOnNewConnection(`http://${web.fields['upstream.api'] as string}/spread/${i}`), 200);
    assert.equal((await settle(addr, count, count(s0) + K)) - count(s0), K, '_count');
    const s1 = await scrape(addr);
    assert.ok(accepted(s1, '0') > accepted(s0, '0') && accepted(s1, '1') > accepted(s0, '1'), 'both workers took connections');
    assert.equal(bucket(s1, '+Inf') - bucket(s0, '+Inf'), K);
    assert.equal(bucket(s1, '10') - bucket(s0, '10'), K, 'every request took less than 10 s');
    const sum = total(s1, 'meshd_http_request_duration_seconds_sum', labels) - total(s0, 'meshd_http_request_duration_seconds_sum', labels);
    assert.ok(sum > 0 && sum < K * 10, `_sum moved by ${sum}`);
    assertStrictMetrics(await (await fetch(`http://${addr}/metrics`)).text(), { countersEndInTotal: true });
  });

  test('per-worker event-loop lag and heap, and process memory, in both formats', async () => {
    // Workers write their first lag window after LAG_WINDOW_MS (2 s).
    const deadline = Date.now() + 8000;
    let s = await scrape(api.fields.metrics as string);
    while (total(s, 'meshd_worker_event_loop_lag_seconds_count', { worker: '1' }) === 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200));
      s = await scrape(api.fields.metrics as string);
    }
    for (const worker of ['0', '1']) {
      assert.ok(total(s, 'meshd_worker_event_loop_lag_seconds_count', { service: 'api', worker }) > 0, `worker ${worker} sampled`);
      const p99 = total(s, 'meshd_worker_event_loop_lag_seconds', { worker, quantile: '0.99' });
      const max = total(s, 'meshd_worker_event_loop_lag_seconds', { worker, quantile: '1' });
      assert.ok(p99 >= 0 && p99 <= max && max < 5, `worker ${worker}: p99 ${p99} max ${max}`);
      assert.ok(total(s, 'meshd_worker_heap_used_bytes', { worker }) > 1e5);
    }
    assert.ok(total(s, 'meshd_process_resident_memory_bytes', { service: 'api' }) > 10e6);
    assert.ok(total(s, 'meshd_process_heap_used_bytes', { service: 'api' }) > 1e5);
    const e = parseMetrics(await (await fetch(`http://${webEnvoy.fields.metrics as string}/metrics`)).text());
    assert.ok(total(e, 'meshd_process_resident_memory_bytes', { consul_source_service: 'web' }) > 10e6);
    assert.equal([...e.keys()].filter((k) => k.startsWith('meshd_worker_event_loop_lag_seconds{') && k.includes('quantile="1"')).length, 2);
  });
});
