// Upstream faults (hardening issue, "Faults and overload"), with real processes and a
// fault-injecting TCP proxy (../helpers/fault-proxy.ts) in two places:
//
//   web ──mTLS──▶ S1 (api, version=faulty) ──▶ F1 (fault proxy) ──▶ app "faulty"
//       ──mTLS──▶ S2 (api, version=good)   ──▶ app "good"
//       ──mTLS──▶ F2 (fault proxy, registered as api, version=net) ──▶ S2
//
// F1 breaks the application (slow, reset after the response head, blackhole, refused); F2 the
// network in front of a sidecar (refused, reset at connect, blackhole). web's routes pick the
// instance by subset: /t/ faulty with a 500 ms RequestTimeout, /x/ faulty, /n/ net, /r/ any
// instance with 3 retries. Each fault must give the status Envoy gives (504, 502, 503), retries
// and outlier ejection must behave as configured, and afterwards web's and S1's sockets and
// their workers' handles and timers must be back to what they were before.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent as UndiciAgent, request } from 'undici';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { scrape, scrapeUntil, total, type Samples } from '../helpers/net.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';
import { startFaultProxy, type FaultProxy } from '../helpers/fault-proxy.ts';
import { dataPlaneSockets } from '../helpers/proc.ts';

interface Reply {
  readonly status: number;
  readonly flag: string | null;
  readonly ms: number;
  /** The body, or the error that cut it. */
  readonly body: string;
  readonly broken: boolean;
}

async function get(base: string, path: string, dispatcher: UndiciAgent): Promise<Reply> {
  const t0 = performance.now();
  const r = await request(`${base}${path}`, { dispatcher, headersTimeout: 15_000, bodyTimeout: 15_000 });
  const flag = r.headers['x-meshd-response-flag'];
  let body = '';
  let broken = false;
  try {
    body = await r.body.text();
  } catch (e) {
    broken = true;
    body = (e as Error).message;
  }
  return { status: r.statusCode, flag: typeof flag === 'string' ? flag : null, ms: performance.now() - t0, body, broken };
}

const port = (hostPort: string): number => Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));

describe('upstream faults: timeouts, resets, refused and silent peers, retries, ejection, no leaks', () => {
  let dir: string;
  let agent: MeshdProcess;
  let http: string;
  let faultyApp: HttpApp;
  let goodApp: HttpApp;
  let f1: FaultProxy;
  let f2: FaultProxy;
  let s1: MeshdProcess;
  let s2: MeshdProcess;
  let web: MeshdProcess;
  let base: string;
  let client: UndiciAgent;

  interface Snapshot {
    readonly webSockets: number;
    readonly s1Sockets: number;
    readonly handles: number;
    readonly timers: number;
  }
  const snapshot = async (): Promise<Snapshot> => {
    const [mw, ms] = await Promise.all([scrape(web.fields.metrics as string), scrape(s1.fields.metrics as string)]);
    const sum = (name: string, ...m: Samples[]): number => m.reduce((a, s) => a + total(s, name), 0);
    const agentPort = port(http);
    return {
      webSockets: dataPlaneSockets(web.child.pid as number, [agentPort, port(web.fields.metrics as string)]),
      s1Sockets: dataPlaneSockets(s1.child.pid as number, [agentPort, port(s1.fields.metrics as string)]),
      handles: sum('meshd_worker_active_handles', mw, ms),
      timers: sum('meshd_worker_active_timers', mw, ms),
    };
  };
  let baseline: Snapshot;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-faults-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    http = agent.fields.http as string;
    await putConfig(http, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(http, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] });
    await putConfig(http, {
      Kind: 'service-defaults',
      Name: 'web',
      UpstreamConfig: { Overrides: [{ Name: 'api', PassiveHealthCheck: { Interval: '1s', MaxFailures: 2, BaseEjectionTime: '60s', MaxEjectionPercent: 50 } }] },
    });
    await putConfig(http, {
      Kind: 'service-resolver',
      Name: 'api',
      ConnectTimeout: '1s',
      Subsets: { faulty: { Filter: 'Service.Meta.version == faulty' }, good: { Filter: 'Service.Meta.version == good' }, net: { Filter: 'Service.Meta.version == net' } },
    });
    await putConfig(http, {
      Kind: 'service-router',
      Name: 'api',
      Routes: [
        { Match: { HTTP: { PathPrefix: '/t/' } }, Destination: { ServiceSubset: 'faulty', RequestTimeout: '500ms' } },
        { Match: { HTTP: { PathPrefix: '/x/' } }, Destination: { ServiceSubset: 'faulty' } },
        { Match: { HTTP: { PathPrefix: '/n/' } }, Destination: { ServiceSubset: 'net' } },
        { Match: { HTTP: { PathPrefix: '/r/' } }, Destination: { NumRetries: 3, RetryOn: ['gateway-error', 'reset', 'connect-failure'] } },
      ],
    });
    [faultyApp, goodApp] = await Promise.all([startApp('faulty'), startApp('good')]);
    f1 = await startFaultProxy({ host: '127.0.0.1', port: faultyApp.port });
    // Pools idle 1 s, public listeners idle 3 s: between tests nothing lingers for long.
    const idle = ['-upstream-idle-timeout', '1s', '-http-idle-timeout', '3s'];
    const common = ['-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http, ...idle];
    [s1, s2, web] = await Promise.all([
      startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${f1.port}`, '-listen', '127.0.0.1:0', '-register', '-register-id', 'faulty', '-service-meta', 'version=faulty', ...common]),
      startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${goodApp.port}`, '-listen', '127.0.0.1:0', '-register', '-register-id', 'good', '-service-meta', 'version=good', ...common]),
      startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', ...common]),
    ]);
    f2 = await startFaultProxy({ host: '127.0.0.1', port: port(s2.fields.inbound as string) });
    const reg = await fetch(`http://${http}/v1/agent/service/register`, {
      method: 'PUT',
      body: JSON.stringify({
        ID: 'api-proxy-net',
        Name: 'api-proxy',
        Kind: 'connect-proxy',
        Address: '127.0.0.1',
        Port: f2.port,
        Meta: { version: 'net' },
        Proxy: { DestinationServiceName: 'api', DestinationServiceID: 'api' },
      }),
    });
    assert.equal(reg.status, 200, await reg.text());
    base = `http://${web.fields['upstream.api'] as string}`;
    client = new UndiciAgent({ connections: 32 });
    // Every route answers through every path (subsets resolved, all three instances seen).
    const end = Date.now() + 15_000;
    const seen = new Set<string>();
    const ready = async (): Promise<boolean> => (await get(base, '/t/ok', client)).status === 200 && (await get(base, '/n/ok', client)).status === 200;
    while (!(seen.has('faulty') && seen.has('good') && (await ready()))) {
      assert.ok(Date.now() < end, `mesh not ready: saw ${[...seen].join(',')}`);
      const r = await request(`${base}/r/who`, { dispatcher: client });
      await r.body.arrayBuffer();
      if (r.statusCode === 200) seen.add(String(r.headers['x-instance']));
      await new Promise((res) => setTimeout(res, 20));
    }
    // The baseline: nothing in flight, pools idle and closed, a fresh runtime window.
    await client.close();
    client = new UndiciAgent({ connections: 32 });
    await new Promise((r) => setTimeout(r, 4500));
    baseline = await snapshot();
  });

  after(async () => {
    await client?.close().catch(() => undefined);
    await Promise.all([web, s1, s2].map((p) => p?.stop()));
    await agent?.stop();
    await Promise.all([f1?.close(), f2?.close(), faultyApp?.close(), goodApp?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  test('a slow app: the route timeout (500 ms) answers 504 request_timeout', async () => {
    await f1.set('slow', { delayMs: 1500 });
    const r = await get(base, '/t/slow', client);
    assert.equal(r.status, 504);
    assert.equal(r.flag, 'request_timeout');
    assert.ok(r.ms >= 450 && r.ms < 1200, `504 after ${r.ms.toFixed(0)} ms`);
  });

  test('a blackhole app (accepts, never answers): 504 at the route timeout', async () => {
    await f1.set('blackhole');
    const rs = await Promise.all(Array.from({ length: 4 }, () => get(base, '/t/bh', client)));
    for (const r of rs) {
      assert.equal(r.status, 504);
      assert.ok(r.ms >= 450 && r.ms < 1500, `504 after ${r.ms.toFixed(0)} ms`);
    }
  });

  test('the app resets right after its response head: 502 reset (nothing was sent downstream, no retry policy)', async () => {
    await f1.set('reset-after-headers', { bodyBytes: 0 });
    const r = await get(base, '/x/reset', client);
    assert.equal(r.status, 502);
    assert.equal(r.flag, 'reset');
  });

  test('the app resets after the head and some body: the caller gets the head, then a broken body', async () => {
    await f1.set('reset-after-headers', { bodyBytes: 8 });
    const r = await get(base, '/x/partial', client);
    assert.equal(r.status, 200);
    assert.equal(r.broken, true, `body read whole: ${r.body}`);
  });

  test('connect failures: refused app 503 local_app_unreachable; refused, reset and silent instances 503 connect_failure', async () => {
    await f1.set('refuse');
    const app = await get(base, '/x/refused', client);
    assert.equal(app.status, 503);
    assert.match(app.body, /local app unreachable: ECONNREFUSED/);

    await f2.set('refuse');
    const refused = await get(base, '/n/refused', client);
    assert.equal(refused.status, 503);
    assert.equal(refused.flag, 'connect_failure');
    assert.ok(refused.ms < 1000, `refused took ${refused.ms.toFixed(0)} ms`);

    await f2.set('reset');
    const reset = await get(base, '/n/reset', client);
    assert.equal(reset.status, 503);
    assert.equal(reset.flag, 'connect_failure');

    await f2.set('blackhole');
    const silent = await get(base, '/n/silent', client);
    assert.equal(silent.status, 503);
    assert.equal(silent.flag, 'connect_failure');
    assert.ok(silent.ms >= 900 && silent.ms < 3000, `ConnectTimeout 1s ended after ${silent.ms.toFixed(0)} ms`);
    const m = await scrapeUntil(web.fields.metrics as string, (s) => total(s, 'meshd_upstream_connect_failures_total', { upstream: 'api' }) >= 3);
    assert.ok(total(m, 'meshd_upstream_connect_failures_total', { upstream: 'api' }) >= 3);
  });

  test('retries: with one instance resetting, every request on the retry route succeeds; it is ejected after 2 failures', async () => {
    await f2.set('pass');
    await f1.set('reset-after-headers', { bodyBytes: 0 });
    const m0 = await scrape(web.fields.metrics as string);
    const retries0 = total(m0, 'meshd_upstream_retries_total', { upstream: 'api' });
    const ejections0 = total(m0, 'meshd_outlier_ejections_total', { upstream: 'api' });
    const statuses: number[] = [];
    for (let i = 0; i < 30; i++) statuses.push((await get(base, '/r/retry', client)).status);
    assert.deepEqual(new Set(statuses), new Set([200]));
    const m1 = await scrapeUntil(web.fields.metrics as string, (s) => total(s, 'meshd_outlier_ejections_total', { upstream: 'api' }) > ejections0);
    const retries = total(m1, 'meshd_upstream_retries_total', { upstream: 'api' }) - retries0;
    assert.ok(retries >= 2, `${retries} retries`);
    assert.ok(total(m1, 'meshd_outlier_ejections_total', { upstream: 'api' }) > ejections0, 'the resetting instance was not ejected');
    // Ejected: the next requests go only to the others (no more attempts on it, no retries).
    const accepted = f1.accepted();
    for (let i = 0; i < 20; i++) assert.equal((await get(base, '/r/after', client)).status, 200);
    assert.equal(f1.accepted(), accepted, 'the ejected instance was still tried');
    const m2 = await scrape(web.fields.metrics as string);
    assert.equal(total(m2, 'meshd_upstream_retries_total', { upstream: 'api' }), total(m1, 'meshd_upstream_retries_total', { upstream: 'api' }));
  });

  test('afterwards: sockets, worker handles and timers of web and S1 are back to the baseline within 10 s', async (t) => {
    await f1.set('pass');
    await f2.set('pass');
    await client.close();
    const end = Date.now() + 10_000;
    let now = await snapshot();
    while (!(now.webSockets <= baseline.webSockets && now.s1Sockets <= baseline.s1Sockets && now.handles <= baseline.handles && now.timers <= baseline.timers) && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 250));
      now = await snapshot();
    }
    const shown = `baseline ${JSON.stringify(baseline)}, after ${JSON.stringify(now)}`;
    t.diagnostic(shown);
    assert.ok(baseline.webSockets > 0 && baseline.handles > 0, shown);
    for (const k of ['webSockets', 's1Sockets', 'handles', 'timers'] as const) assert.ok(now[k] <= baseline[k], `${k}: ${shown}`);
    assert.equal(f1.open(), 0, 'connections to the faulty app still open');
  });
});
