// The ingress gateway end to end, with real processes from the CLI: an agent; `web`, `api` and
// `api-canary` HTTP apps and a `db` TCP echo app, each behind its sidecar; and
// `meshd connect gateway -ingress -service ingress` with three listeners from its
// ingress-gateway entry (written as HCL through `meshd config write`): an http listener on
// port 0 with web (default host) and api (explicit host, header modifiers), an http listener
// with the wildcard service, and a tcp listener for db. The test plays the outside client.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { meshd } from '../helpers/cli.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';
import { assertStrictMetrics } from '../helpers/prom-check.ts';
import { echoOnce, scrapeUntil, startEchoApp, total, waitUntilRefused, type EchoApp } from '../helpers/net.ts';
import { until } from '../helpers/until.ts';

interface Reply {
  readonly status: number;
  readonly instance: string;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

/** One GET to `addr` with the given Host header (fetch cannot set Host). */
function get(addr: string, host: string, path = '/'): Promise<Reply> {
  const [h, p] = addr.split(':') as [string, string];
  return new Promise((resolve, reject) => {
    const req = request({ host: h, port: Number(p), path, headers: { host } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, instance: String(res.headers['x-instance'] ?? ''), headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('ingress gateway: Host routing to the mesh over mTLS, chains, intentions, metrics', () => {
  let dir: string;
  let agent: MeshdProcess;
  let gateway: MeshdProcess;
  let http: string;
  const procs: MeshdProcess[] = [];
  const apps: HttpApp[] = [];
  let echo: EchoApp;
  let canary: HttpApp;
  let api: HttpApp;
  /** The three listeners: http on port 0, http with the wildcard, tcp. */
  let main: string;
  let wild: string;
  let tcpPort: number;
  let wildPort: number;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-ingress-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0']);
    http = agent.fields.http as string;
    for (const s of ['web', 'api', 'api-canary']) await putConfig(http, { Kind: 'service-defaults', Name: s, Protocol: 'http' });
    // The gateway calls as itself: intentions are written from its name.
    for (const s of ['web', 'api', 'api-canary', 'db']) await putConfig(http, { Kind: 'service-intentions', Name: s, Sources: [{ Name: 'ingress', Action: 'allow' }] });
    const web = await startApp('web');
    api = await startApp('api');
    canary = await startApp('canary');
    apps.push(web, api, canary);
    echo = await startEchoApp();
    const sidecar = (service: string, port: number): Promise<MeshdProcess> =>
      startMeshd(['connect', 'proxy', '-service', service, '-service-addr', `127.0.0.1:${port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1', '-http-addr', http]);
    procs.push(...(await Promise.all([sidecar('web', web.port), sidecar('api', api.port), sidecar('api-canary', canary.port), sidecar('db', echo.port)])));

    wildPort = await freePort();
    tcpPort = await freePort();
    // A tcp service on an http listener is refused, naming the field, and nothing is stored.
    const bad = join(dir, 'bad.hcl');
    writeFileSync(bad, `Kind = "ingress-gateway"\nName = "ingress"\nListeners = [{ Port = 0, Protocol = "http", Services = [{ Name = "db" }] }]\n`);
    const refused = await meshd(['config', 'write', '-http-addr', http, bad]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /Listeners\[0\]\.Services\[0\]\.Name: service "db" has protocol "tcp", which does not match defined listener protocol "http"/);

    const hcl = join(dir, 'ingress.hcl');
    writeFileSync(
      hcl,
      `Kind = "ingress-gateway"
Name = "ingress"
Listeners = [
  {
    Port     = 0
    Protocol = "http"
    Services = [
      { Name = "web" },
      {
        Name  = "api"
        Hosts = ["api.example.com"]
        RequestHeaders {
          Set { x-ingress = "1" }
        }
        ResponseHeaders {
          Add { x-gw = "ingress" }
        }
      },
    ]
  },
  {
    Port     = ${wildPort}
    Protocol = "http"
    Services = [{ Name = "*" }]
  },
  {
    Port     = ${tcpPort}
    Protocol = "tcp"
    Services = [{ Name = "db" }]
  },
]
`,
    );
    const w = await meshd(['config', 'write', '-http-addr', http, hcl]);
    assert.equal(w.code, 0, w.stderr);
    assert.match(w.stdout, /Config entry written: ingress-gateway\/ingress/);

    gateway = await startMeshd(['connect', 'gateway', '-ingress', '-service', 'ingress', '-workers', '1', '-metrics-addr', '127.0.0.1:0', '-register', '-http-addr', http]);
    procs.push(gateway);
    main = gateway.fields['listener.0'] as string;
    wild = gateway.fields[`listener.${wildPort}`] as string;
    assert.match(main, /^127\.0\.0\.1:\d+$/);
    assert.equal(wild, `127.0.0.1:${wildPort}`);
    assert.equal(gateway.fields[`listener.${tcpPort}`], `127.0.0.1:${tcpPort}`);
    await until('web reachable through the gateway', async () => (await get(main, 'web.ingress.example')).status === 200, 10_000);
    await until('api reachable through the gateway', async () => (await get(main, 'api.example.com')).status === 200, 10_000);
  });

  after(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await agent?.stop();
    await Promise.all(apps.map((a) => a.close()));
    await echo?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('Host routing: the default host <svc>.ingress.* and explicit Hosts (with the listener port), the app sees the gateway identity', async () => {
    const web = await get(main, 'web.ingress.example', '/hello?x=1');
    assert.equal(web.status, 200);
    assert.equal(web.instance, 'web');
    const body = JSON.parse(web.body) as { url: string; xfcc: string };
    assert.equal(body.url, '/hello?x=1');
    assert.match(body.xfcc, /^By=spiffe:\/\/[^;]+\/svc\/web;Hash=[0-9a-f]{64};URI=spiffe:\/\/[^;]+\/ns\/default\/dc\/dc1\/svc\/ingress$/);
    assert.equal((await get(main, `web.ingress.example:${main.split(':')[1] as string}`)).instance, 'web');

    const a = await get(main, 'API.Example.com');
    assert.equal(a.status, 200);
    assert.equal(a.instance, 'api');
    assert.equal(a.headers['x-gw'], 'ingress', 'the service ResponseHeaders apply');
    assert.equal(api.last?.headers['x-ingress'], '1', 'the service RequestHeaders apply');
    assert.equal((await get(main, `api.example.com:${main.split(':')[1] as string}`)).instance, 'api');
    // Explicit Hosts replace the default one.
    assert.equal((await get(main, 'api.ingress.example')).status, 404);
  });

  test('unknown host: 404 from the gateway, nothing reaches an app', async () => {
    const hits = apps.reduce((n, x) => n + x.hits, 0);
    const r = await get(main, 'nobody.example.org');
    assert.equal(r.status, 404);
    assert.match(r.body, /no service of this ingress listener answers host "nobody.example.org"/);
    assert.equal(apps.reduce((n, x) => n + x.hits, 0), hits);
  });

  test('a wildcard listener exposes every http service by <svc>.ingress.*; a tcp listener proxies L4', async () => {
    assert.equal((await get(wild, 'api-canary.ingress.example')).instance, 'canary');
    assert.equal((await get(wild, `web.ingress.example:${wildPort}`)).instance, 'web');
    assert.equal((await get(wild, 'db.ingress.example')).status, 404, 'a tcp service is not in the wildcard');
    assert.equal(await echoOnce(tcpPort, 'ping through ingress'), 'ping through ingress');
  });

  test('a splitter behind the ingress: 50/50 between api and api-canary over 200 requests', async () => {
    await putConfig(http, { Kind: 'service-splitter', Name: 'api', Splits: [{ Weight: 50 }, { Weight: 50, Service: 'api-canary' }] });
    await until('splitter applied', async () => (await get(main, 'api.example.com')).instance === 'canary');
    const seen = { api: 0, canary: 0 };
    for (let i = 0; i < 200; i += 20) {
      const batch = await Promise.all(Array.from({ length: 20 }, () => get(main, 'api.example.com', '/split')));
      for (const r of batch) {
        assert.equal(r.status, 200);
        if (r.instance === 'api') seen.api++;
        else if (r.instance === 'canary') seen.canary++;
      }
    }
    // Mean 100, sd 7.1: a 99.99 % interval is ±28.
    assert.equal(seen.api + seen.canary, 200);
    assert.ok(Math.abs(seen.canary - 100) <= 28, `canary got ${seen.canary} of 200`);
    await putConfig(http, { Kind: 'service-splitter', Name: 'api', Splits: [{ Weight: 100 }] });
  });

  test('live entry changes: new Hosts apply without a restart; a new listener is logged as needing one', async () => {
    await putConfig(http, {
      Kind: 'ingress-gateway',
      Name: 'ingress',
      Listeners: [
        { Port: 0, Protocol: 'http', Services: [{ Name: 'web', Hosts: ['www.example.com'] }, { Name: 'api', Hosts: ['api.example.com'], RequestHeaders: { Set: { 'x-ingress': '1' } }, ResponseHeaders: { Add: { 'x-gw': 'ingress' } } }] },
        { Port: wildPort, Protocol: 'http', Services: [{ Name: '*' }] },
        { Port: tcpPort, Protocol: 'tcp', Services: [{ Name: 'db' }] },
        { Port: 1, Protocol: 'http', Services: [{ Name: 'web' }] },
      ],
    });
    await until('new host applied', async () => (await get(main, 'www.example.com')).instance === 'web');
    assert.equal((await get(main, 'web.ingress.example')).status, 404);
    await until('restart logged', () => Promise.resolve(/RESTART THE GATEWAY/.test(gateway.stderr())));
    // The entry as the API gives it back.
    const read = await meshd(['config', 'read', '-http-addr', http, '-kind', 'ingress-gateway', '-name', 'ingress']);
    const entry = JSON.parse(read.stdout) as { TLS: unknown; Listeners: { Port: number; Services: { Name: string; Hosts: string[] | null }[] }[] };
    assert.deepEqual(entry.TLS, { Enabled: false });
    assert.deepEqual(entry.Listeners[0]?.Services.map((s) => [s.Name, s.Hosts]), [['web', ['www.example.com']], ['api', ['api.example.com']]]);
  });

  test('intentions decide what the gateway reaches: 403 RBAC for an http service, a closed connection for a tcp one', async () => {
    await putConfig(http, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'ingress', Action: 'deny' }] });
    await putConfig(http, { Kind: 'service-intentions', Name: 'db', Sources: [{ Name: 'ingress', Action: 'deny' }] });
    // 20 s, not 8: once (1 run in 5, a full CI run on 2 cores) the deny took longer than 8 s to
    // reach api's sidecar; not reproduced alone or three runs at a time. A sidecar whose watch
    // failed a few times in a row backs off up to 8 s before reading again (agent-session.ts).
    await until('api denied', async () => (await get(main, 'api.example.com')).status === 403, 20_000);
    const r = await get(main, 'api.example.com', '/denied');
    assert.equal(r.status, 403);
    assert.equal(r.body, 'RBAC: access denied\n');
    assert.ok((await waitUntilRefused(tcpPort, 8000)) >= 0, 'db still reachable after the deny');
    // Others are unaffected.
    assert.equal((await get(main, 'www.example.com')).status, 200);
  });

  test("metrics on the gateway's -metrics-addr, per listener and per exposed service", async () => {
    const m = await scrapeUntil(gateway.fields.metrics as string, (s) => total(s, 'meshd_http_requests_total', { listener: String(wildPort), upstream: 'api-canary', code_class: '2xx' }) >= 1);
    assert.ok(total(m, 'meshd_http_requests_total', { service: 'ingress', listener: '0', upstream: 'web', code_class: '2xx' }) >= 3);
    assert.ok(total(m, 'meshd_http_requests_total', { listener: '0', upstream: 'api', code_class: '2xx' }) >= 200);
    assert.ok(total(m, 'meshd_http_requests_total', { listener: '0', upstream: 'api', code_class: '4xx' }) >= 1, 'the 403s');
    assert.ok(total(m, 'meshd_http_requests_total', { listener: String(wildPort), upstream: 'api-canary', code_class: '2xx' }) >= 1);
    assert.ok(total(m, 'meshd_http_requests_total', { listener: String(wildPort), upstream: 'web', code_class: '2xx' }) >= 1);
    // The 404s count on the listener itself (no upstream label).
    const notFound = [...m.entries()].filter(([k]) => k.startsWith('meshd_http_requests_total{') && k.includes('listener="0"') && !k.includes('upstream=') && k.includes('code_class="4xx"'));
    assert.equal(notFound.length, 1);
    assert.ok((notFound[0]?.[1] ?? 0) >= 2);
    const count = total(m, 'meshd_http_request_duration_seconds_count', { listener: '0', upstream: 'api' });
    assert.equal(total(m, 'meshd_http_request_duration_seconds_bucket', { listener: '0', upstream: 'api', le: '+Inf' }), count);
    assert.ok(count >= 200);
    assert.ok(total(m, 'meshd_connections_accepted_total', { direction: 'outbound' }) >= 2);
    assert.equal(total(m, 'meshd_workers'), 1);
    // Valid exposition: histograms consistent, no duplicate series, counters named *_total.
    assertStrictMetrics(await (await fetch(`http://${gateway.fields.metrics as string}/metrics`)).text(), { countersEndInTotal: true });
  });

  test('-register: the gateway is in the catalog as Kind ingress-gateway', async () => {
    const r = await fetch(`http://${http}/v1/agent/services`);
    const services = (await r.json()) as Record<string, { Kind?: string; Service: string; Port: number }>;
    assert.equal(services.ingress?.Kind, 'ingress-gateway');
    assert.equal(services.ingress?.Service, 'ingress');
  });
});

describe('ingress gateway on an agent with ACLs: a service token for the gateway name is enough', () => {
  let dir: string;
  let agent: MeshdProcess;
  let gateway: MeshdProcess | undefined;
  let http: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-ingress-acl-'));
    agent = await startMeshd(['agent', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    http = agent.fields.http as string;
  });

  after(async () => {
    await gateway?.stop();
    await agent?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('-token: reads its own gateway config, gets its leaf, registers; not another gateway\'s config, not config writes', async () => {
    const management = { 'x-consul-token': readFileSync(join(dir, 'agent', 'acl-management-token'), 'utf8').trim() };
    const entry = { Kind: 'ingress-gateway', Name: 'edge', Listeners: [{ Port: 0, Protocol: 'tcp', Services: [{ Name: 'db' }] }] };
    let r = await fetch(`http://${http}/v1/config`, { method: 'PUT', headers: management, body: JSON.stringify(entry) });
    assert.equal(r.status, 200, await r.text());
    r = await fetch(`http://${http}/v1/acl/token`, { method: 'PUT', headers: management, body: JSON.stringify({ ServiceIdentities: [{ ServiceName: 'edge' }] }) });
    const token = ((await r.json()) as { SecretID: string }).SecretID;
    const as = { 'x-consul-token': token };
    assert.equal((await fetch(`http://${http}/v1/internal/meshd/gateway-config/edge`, { headers: as })).status, 200);
    assert.equal((await fetch(`http://${http}/v1/internal/meshd/gateway-config/other`, { headers: as })).status, 403);
    assert.equal((await fetch(`http://${http}/v1/config`, { method: 'PUT', headers: as, body: JSON.stringify(entry) })).status, 403);
    gateway = await startMeshd(['connect', 'gateway', '-ingress', '-service', 'edge', '-register', '-workers', '1', '-http-addr', http, '-token', token]);
    assert.match(gateway.fields['listener.0'] ?? '', /^127\.0\.0\.1:\d+$/);
    const services = (await (await fetch(`http://${http}/v1/agent/services`, { headers: management })).json()) as Record<string, { Kind?: string }>;
    assert.equal(services.edge?.Kind, 'ingress-gateway');
    // db has no instance: the tcp listener closes the connection.
    assert.equal(await echoOnce(Number((gateway.fields['listener.0'] ?? ':0').split(':')[1]), 'x', 1000), '');
  });
});
