// The HTTP data plane end to end, with real processes from the CLI: an agent, two `api`
// instances and one `api-canary` behind their sidecars, and a `web` sidecar whose upstream
// listener the test talks plain HTTP to. Config entries (service-defaults, service-intentions
// with L7 permissions, service-router, service-splitter) go in through PUT /v1/config.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { request, type IncomingHttpHeaders } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { scrapeUntil, total } from '../helpers/net.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';

describe('HTTP through two sidecars: L7 intentions, router, splitter, retries, timeouts', () => {
  let dir: string;
  let agent: MeshdProcess;
  const procs: MeshdProcess[] = [];
  const apps: HttpApp[] = [];
  let web: MeshdProcess;
  let apiA: HttpApp;
  let apiB: HttpApp;
  let canary: HttpApp;
  let http: string;
  let base: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-l7-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    http = agent.fields.http as string;
    await putConfig(http, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(http, { Kind: 'service-defaults', Name: 'api-canary', Protocol: 'http' });
    await putConfig(http, {
      Kind: 'service-intentions',
      Name: 'api',
      Sources: [
        {
          Name: 'web',
          Permissions: [
            { Action: 'deny', HTTP: { PathPrefix: '/admin' } },
            { Action: 'allow', HTTP: { Methods: ['GET', 'HEAD'] } },
          ],
        },
      ],
    });
    await putConfig(http, { Kind: 'service-intentions', Name: 'api-canary', Sources: [{ Name: 'web', Action: 'allow' }] });
    apiA = await startApp('api-a');
    apiB = await startApp('api-b', { flaky: true });
    canary = await startApp('canary');
    apps.push(apiA, apiB, canary);
    const sidecar = (service: string, app: HttpApp, id: string): Promise<MeshdProcess> =>
      startMeshd(['connect', 'proxy', '-service', service, '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-register-id', id, '-workers', '1', '-http-addr', http]);
    procs.push(await sidecar('api', apiA, 'a'), await sidecar('api', apiB, 'b'), await sidecar('api-canary', canary, 'c'));
    web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http]);
    procs.push(web);
    base = `http://${web.fields['upstream.api'] as string}`;
    // Both api instances and the canary registered and seen by web.
    const deadline = Date.now() + 10_000;
    const seen = new Set<string>();
    while (seen.size < 2 && Date.now() < deadline) {
      const r = await fetch(`${base}/who`);
      if (r.status === 200) seen.add(r.headers.get('x-instance') ?? '');
      else await r.arrayBuffer();
    }
    assert.deepEqual([...seen].sort(), ['api-a', 'api-b']);
  });

  after(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await agent?.stop();
    await Promise.all(apps.map((a) => a.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  test('an allowed request reaches the app with the caller in x-forwarded-client-cert, hop-by-hop headers removed', async () => {
    // node:http, not fetch: fetch refuses to send a Connection header.
    const r = await new Promise<{ status: number; headers: IncomingHttpHeaders; text: string }>((resolve, reject) => {
      const req = request(`${base}/items?x=1`, { headers: { 'x-forwarded-client-cert': 'By=forged', connection: 'keep-alive, x-drop-me', 'x-drop-me': '1' } }, (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text }));
      });
      req.on('error', reject);
      req.end();
    });
    assert.equal(r.status, 200);
    const body = JSON.parse(r.text) as { url: string; xfcc: string };
    assert.equal(body.url, '/items?x=1');
    assert.match(body.xfcc, /^By=spiffe:\/\/[^;]+\/svc\/api;Hash=[0-9a-f]{64};URI=spiffe:\/\/[^;]+\/svc\/web$/);
    const seen = [apiA, apiB].map((a) => a.last).find((l) => l?.url === '/items?x=1');
    assert.equal(seen?.headers['x-drop-me'], undefined);
    // The app's own hop-by-hop header (named in its Connection) does not come back.
    assert.equal(r.headers['x-secret'], undefined);
  });

  test('L7 permissions: a deny permission, and no matching permission (default deny), answer 403 RBAC and never reach the app', async () => {
    const hits = apiA.hits + apiB.hits;
    const admin = await fetch(`${base}/admin/users`);
    assert.equal(admin.status, 403);
    assert.equal(await admin.text(), 'RBAC: access denied\n');
    const post = await fetch(`${base}/items`, { method: 'POST', body: 'x' });
    assert.equal(post.status, 403);
    await post.arrayBuffer();
    // The path is normalised before authorization: /public/../admin is /admin.
    const sneaky = await fetch(`${base}/public/%2e%2e/admin`);
    assert.equal(sneaky.status, 403);
    await sneaky.arrayBuffer();
    assert.equal(apiA.hits + apiB.hits, hits);
  });

  test('a service-router route with RetryOnStatusCodes retries a 503 on the other instance', async () => {
    await putConfig(http, {
      Kind: 'service-router',
      Name: 'api',
      Routes: [
        { Match: { HTTP: { PathPrefix: '/flaky' } }, Destination: { NumRetries: 2, RetryOnStatusCodes: [503] } },
        { Match: { HTTP: { PathPrefix: '/slowidle' } }, Destination: { IdleTimeout: '300ms' } },
        { Match: { HTTP: { Header: [{ Name: 'x-canary', Exact: '1' }] } }, Destination: { Service: 'api-canary' } },
        {
          Match: { HTTP: { PathPrefix: '/m', Methods: ['PUT'] } },
          Destination: { Service: 'api-canary', RequestHeaders: { Set: { 'x-routed': 'put' } }, ResponseHeaders: { Add: { 'x-route': 'put-to-canary' } } },
        },
        { Match: { HTTP: { PathPrefix: '/slow' } }, Destination: { RequestTimeout: '500ms' } },
        { Match: { HTTP: { PathPrefix: '/old' } }, Destination: { PrefixRewrite: '/new' } },
      ],
    });
    // Wait for the router to arrive: the rewrite shows it.
    const deadline = Date.now() + 5000;
    for (;;) {
      const r = (await (await fetch(`${base}/old/x`)).json()) as { url: string };
      if (r.url === '/new/x') break;
      assert.ok(Date.now() < deadline, 'router not applied within 5 s');
      await new Promise((res) => setTimeout(res, 50));
    }
    const flakyBefore = apiB.hits;
    const statuses = await Promise.all(Array.from({ length: 40 }, () => fetch(`${base}/flaky`).then(async (r) => (await r.arrayBuffer(), r.status))));
    assert.deepEqual(new Set(statuses), new Set([200]));
    assert.ok(apiB.hits > flakyBefore, 'the flaky instance was tried');
    const m = await scrapeUntil(web.fields.metrics as string, (s) => total(s, 'meshd_upstream_retries_total', { upstream: 'api' }) > 0);
    assert.ok(total(m, 'meshd_upstream_retries_total', { upstream: 'api' }) > 0);
  });

  test('header and method routes, with request and response header modifiers', async () => {
    const byHeader = await fetch(`${base}/anything`, { headers: { 'x-canary': '1' } });
    await byHeader.arrayBuffer();
    assert.equal(byHeader.headers.get('x-instance'), 'canary');
    const put = await fetch(`${base}/m/1`, { method: 'PUT', body: 'x' });
    await put.arrayBuffer();
    assert.equal(put.status, 200);
    assert.equal(put.headers.get('x-instance'), 'canary');
    assert.equal(put.headers.get('x-route'), 'put-to-canary');
    assert.equal(canary.last?.headers['x-routed'], 'put');
    // The same path with GET is not that route: it goes to api (and GET is allowed there).
    const get = await fetch(`${base}/m/1`);
    await get.arrayBuffer();
    assert.match(get.headers.get('x-instance') ?? '', /^api-/);
  });

  test('a route IdleTimeout of 300 ms ends a stalled exchange with 504', async () => {
    const t0 = performance.now();
    const r = await fetch(`${base}/slowidle`);
    const ms = performance.now() - t0;
    assert.equal(r.status, 504);
    assert.match(await r.text(), /idle/);
    assert.ok(ms >= 270 && ms <= 600, `504 after ${ms.toFixed(0)} ms`);
  });

  test('a route RequestTimeout of 500 ms gives 504 within 10 % of the setting', async () => {
    const t0 = performance.now();
    const r = await fetch(`${base}/slow`);
    const ms = performance.now() - t0;
    assert.equal(r.status, 504);
    await r.arrayBuffer();
    assert.ok(ms >= 450 && ms <= 550, `504 after ${ms.toFixed(0)} ms`);
  });

  test('a 90/10 split over 10,000 requests lands in the binomial 99.9 % interval; a 0-weight split gets nothing', async () => {
    await putConfig(http, { Kind: 'service-splitter', Name: 'api', Splits: [{ Weight: 90 }, { Weight: 10, Service: 'api-canary' }] });
    const deadline = Date.now() + 5000;
    while ((await fetch(`${base}/probe`).then(async (r) => (await r.arrayBuffer(), r.headers.get('x-instance')))) !== 'canary') {
      assert.ok(Date.now() < deadline, 'splitter not applied within 5 s');
    }
    let toCanary = 0;
    const n = 10_000;
    for (let i = 0; i < n; i += 50) {
      const batch = await Promise.all(Array.from({ length: 50 }, () => fetch(`${base}/split`).then(async (r) => (await r.arrayBuffer(), r.headers.get('x-instance')))));
      toCanary += batch.filter((x) => x === 'canary').length;
    }
    // 99.9 % two-sided: mean 1000, sd sqrt(10000 * 0.1 * 0.9) = 30, z = 3.29.
    assert.ok(Math.abs(toCanary - 1000) <= 99, `canary got ${toCanary} of ${n}`);

    await putConfig(http, { Kind: 'service-splitter', Name: 'api', Splits: [{ Weight: 100 }, { Weight: 0, Service: 'api-canary' }] });
    await new Promise((r) => setTimeout(r, 1000));
    const before = canary.hits;
    for (let i = 0; i < 500; i += 50) await Promise.all(Array.from({ length: 50 }, () => fetch(`${base}/split`).then((r) => r.arrayBuffer())));
    assert.equal(canary.hits, before);
  });

  test('L7 metrics: requests by code class and a duration histogram on the client sidecar', async () => {
    const m = await scrapeUntil(web.fields.metrics as string, (s) => total(s, 'meshd_http_requests_total', { upstream: 'api', code_class: '2xx' }) > 10_000);
    assert.ok(total(m, 'meshd_http_requests_total', { upstream: 'api', code_class: '2xx' }) > 10_000);
    assert.ok(total(m, 'meshd_http_requests_total', { upstream: 'api', code_class: '4xx' }) >= 3);
    assert.ok(total(m, 'meshd_http_local_responses_total', { upstream: 'api', flag: 'request_timeout' }) >= 1);
    const count = total(m, 'meshd_http_request_duration_seconds_count', { upstream: 'api' });
    const inf = total(m, 'meshd_http_request_duration_seconds_bucket', { upstream: 'api', le: '+Inf' });
    assert.equal(inf, count);
  });
});
