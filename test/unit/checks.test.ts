// Agent-run HTTP and TCP checks: the probes against real local targets (Consul's status rules),
// the runner's schedule on a fake clock, and the agent's wiring: register starts a check,
// deregister and stop end it, results reach /v1/health, /v1/agent/service(s) and
// /v1/agent/checks, and `connect proxy -sidecar-for` finds its settings there.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { CheckRunner, httpStatusToCheck, probeHttp, probeTcp, splitHostPort, type CheckTimers, type ProbeResult } from '../../src/control/checks.ts';
import { decodeRegistration, type HttpCheck, type ProbeCheck, type TcpCheck } from '../../src/control/catalog.ts';
import { Agent } from '../../src/control/agent.ts';
import { AgentClient } from '../../src/control/client.ts';
import { SidecarForError, planSidecarFor } from '../../src/cli/sidecar-for.ts';

/** A manual clock: timers fire only when the test advances it. */
class FakeTimers implements CheckTimers {
  t = 0;
  #next = 1;
  readonly #pending = new Map<number, { at: number; fn: () => void }>();

  now(): number {
    return this.t;
  }

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.#pending.set(id, { at: this.t + ms, fn });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.#pending.delete(handle as number);
  }

  get pending(): number {
    return this.#pending.size;
  }

  /** Moves the clock forward, firing due timers in time order. */
  advance(ms: number): void {
    const end = this.t + ms;
    for (;;) {
      let due: [number, { at: number; fn: () => void }] | undefined;
      for (const e of this.#pending) if (e[1].at <= end && (due === undefined || e[1].at < due[1].at)) due = e;
      if (due === undefined) break;
      this.#pending.delete(due[0]);
      this.t = due[1].at;
      due[1].fn();
    }
    this.t = end;
  }
}

interface Target {
  readonly port: number;
  status: number;
  body: string;
  hang: boolean;
  hits: number;
  close(): Promise<void>;
}

async function httpTarget(): Promise<Target> {
  const t: Target = {
    port: 0,
    status: 200,
    body: 'ok',
    hang: false,
    hits: 0,
    close: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
  const server: HttpServer = createHttpServer((req, res) => {
    t.hits++;
    if (t.hang) return;
    if (req.url === '/redirect') {
      res.writeHead(302, { location: '/health' });
      res.end();
      return;
    }
    res.writeHead(t.status, { 'content-type': 'text/plain', 'x-seen-probe': String(req.headers['x-probe'] ?? '') });
    res.end(req.headers['x-probe'] === undefined ? t.body : `${t.body} probe=${String(req.headers['x-probe'])}`);
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  return Object.assign(t, { port: (server.address() as AddressInfo).port });
}

async function tcpListener(): Promise<{ port: number; server: TcpServer }> {
  const server = createTcpServer((s) => s.destroy());
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  return { port: (server.address() as AddressInfo).port, server };
}

async function closedPort(): Promise<number> {
  const { port, server } = await tcpListener();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

function httpCheck(url: string, extra: Partial<HttpCheck> = {}): HttpCheck {
  const c = decodeRegistration({ Name: 'web', Check: { CheckID: 'h', HTTP: url, Interval: '1s', Timeout: '2s' } }).check;
  assert.ok(c?.Type === 'http');
  return { ...c, ...extra };
}

function tcpCheck(addr: string, extra: Partial<TcpCheck> = {}): TcpCheck {
  const c = decodeRegistration({ Name: 'web', Check: { CheckID: 't', TCP: addr, Interval: '1s', Timeout: '2s' } }).check;
  assert.ok(c?.Type === 'tcp');
  return { ...c, ...extra };
}

describe('probes', () => {
  let target: Target;
  before(async () => {
    target = await httpTarget();
  });
  after(async () => {
    await target.close();
  });

  test('Consul\'s HTTP rule: 2xx passing, 429 warning, anything else critical', () => {
    assert.deepEqual([200, 204, 299, 429, 300, 404, 500, 503].map(httpStatusToCheck), ['passing', 'passing', 'passing', 'warning', 'critical', 'critical', 'critical', 'critical']);
  });

  test('HTTP: status, output with the body, headers sent, redirects followed unless disabled', async () => {
    const url = `http://127.0.0.1:${target.port}/health`;
    for (const [code, want] of [[200, 'passing'], [429, 'warning'], [503, 'critical']] as const) {
      target.status = code;
      const r = await probeHttp(httpCheck(url));
      assert.equal(r.status, want, `${code}`);
      assert.match(r.output, new RegExp(`^HTTP GET ${url}: ${code} .* Output: ok$`));
    }
    target.status = 200;
    const h = await probeHttp(httpCheck(url, { Header: { 'X-Probe': ['yes'] } }));
    assert.match(h.output, /Output: ok probe=yes$/);
    assert.equal((await probeHttp(httpCheck(`http://127.0.0.1:${target.port}/redirect`))).status, 'passing');
    const noFollow = await probeHttp(httpCheck(`http://127.0.0.1:${target.port}/redirect`, { DisableRedirects: true }));
    assert.equal(noFollow.status, 'critical');
    assert.match(noFollow.output, /302/);
  });

  test('HTTP: output is capped at 4 KiB', async () => {
    target.body = 'x'.repeat(10_000);
    const r = await probeHttp(httpCheck(`http://127.0.0.1:${target.port}/`));
    target.body = 'ok';
    assert.equal(r.status, 'passing');
    assert.ok(r.output.length < 4200, `${r.output.length}`);
  });

  test('HTTP: a refused connection and a timeout are critical', async () => {
    const refused = await probeHttp(httpCheck(`http://127.0.0.1:${await closedPort()}/`));
    assert.equal(refused.status, 'critical');
    assert.match(refused.output, /ECONNREFUSED/);
    target.hang = true;
    const started = Date.now();
    const slow = await probeHttp(httpCheck(`http://127.0.0.1:${target.port}/`, { TimeoutMs: 150 }));
    target.hang = false;
    assert.equal(slow.status, 'critical');
    assert.match(slow.output, /timed out after 150 ms/);
    assert.ok(Date.now() - started < 2000);
  });

  test('TCP: passing when the port accepts, critical when refused', async () => {
    const { port, server } = await tcpListener();
    const ok = await probeTcp(tcpCheck(`127.0.0.1:${port}`));
    assert.deepEqual(ok, { status: 'passing', output: `TCP connect 127.0.0.1:${port}: Success` });
    await new Promise<void>((resolve) => server.close(() => resolve()));
    const down = await probeTcp(tcpCheck(`127.0.0.1:${port}`));
    assert.equal(down.status, 'critical');
    assert.match(down.output, /ECONNREFUSED/);
  });

  test('splitHostPort', () => {
    assert.deepEqual(splitHostPort('127.0.0.1:80'), { host: '127.0.0.1', port: 80 });
    assert.deepEqual(splitHostPort('[::1]:8080'), { host: '::1', port: 8080 });
    for (const bad of ['localhost', ':80', 'a:0', 'a:65536', '::1:80', 'a:b']) assert.equal(splitHostPort(bad), null, bad);
  });
});

describe('CheckRunner on a fake clock', () => {
  test('probes at once, then every Interval; stop and sync end and restart checks', async () => {
    const timers = new FakeTimers();
    const calls: string[] = [];
    const reports: [string, ProbeResult][] = [];
    let wake: (() => void) | undefined;
    const reported = (): Promise<void> => new Promise((resolve) => (wake = resolve));
    const runner = new CheckRunner({
      timers,
      probe: (c) => {
        calls.push(`${c.CheckID}@${timers.now()}`);
        return Promise.resolve({ status: 'passing', output: `ok ${c.CheckID}` });
      },
      report: (id, r) => {
        reports.push([id, r]);
        wake?.();
      },
    });
    const a = httpCheck('http://127.0.0.1:1/', { CheckID: 'a', IntervalMs: 1000 });
    const b = tcpCheck('127.0.0.1:1', { CheckID: 'b', IntervalMs: 3000 });
    let next = reported();
    runner.sync([a, b]);
    assert.deepEqual(runner.ids(), ['a', 'b']);
    timers.advance(0);
    await next;
    await Promise.resolve();
    assert.deepEqual(calls, ['a@0', 'b@0']);
    next = reported();
    timers.advance(999);
    assert.equal(calls.length, 2, 'not before the interval');
    timers.advance(1);
    await next;
    assert.deepEqual(calls.slice(2), ['a@1000']);
    // 2000 and 3000: a twice, b once more.
    for (let i = 0; i < 2; i++) {
      next = reported();
      timers.advance(1000);
      await next;
      await Promise.resolve();
    }
    assert.deepEqual(calls.slice(3).sort(), ['a@2000', 'a@3000', 'b@3000']);

    // An unchanged definition keeps its schedule; a changed one restarts at once.
    runner.sync([a, { ...b, TCP: '127.0.0.1:2' }]);
    assert.deepEqual(runner.ids(), ['a', 'b']);
    next = reported();
    timers.advance(0);
    await next;
    assert.deepEqual(calls.at(-1), 'b@3000');
    runner.sync([b]);
    assert.deepEqual(runner.ids(), ['b']);
    runner.stopAll();
    assert.deepEqual(runner.ids(), []);
    assert.equal(timers.pending, 0, 'no timer left behind');
  });

  test('a result that arrives after the check was stopped is dropped', async () => {
    const timers = new FakeTimers();
    let release: ((r: ProbeResult) => void) | undefined;
    const reports: string[] = [];
    const runner = new CheckRunner({ timers, probe: () => new Promise((resolve) => (release = resolve)), report: (id) => reports.push(id) });
    runner.sync([httpCheck('http://127.0.0.1:1/')]);
    timers.advance(0);
    runner.stop('h');
    release?.({ status: 'passing', output: '' });
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(reports, []);
    assert.equal(timers.pending, 0);
  });

  test('a real HTTP target: passing, then critical one interval after it dies', async () => {
    const target = await httpTarget();
    const timers = new FakeTimers();
    const results: ProbeResult[] = [];
    let wake: (() => void) | undefined;
    const runner = new CheckRunner({ timers, report: (_id, r) => (results.push(r), wake?.()) });
    const step = async (ms: number): Promise<ProbeResult> => {
      const p = new Promise<void>((resolve) => (wake = resolve));
      timers.advance(ms);
      await p;
      return results.at(-1) as ProbeResult;
    };
    const check: ProbeCheck = httpCheck(`http://127.0.0.1:${target.port}/health`, { IntervalMs: 5000 });
    runner.sync([check]);
    assert.equal((await step(0)).status, 'passing');
    await target.close();
    assert.equal((await step(5000)).status, 'critical', 'the next probe, one interval later, sees it gone');
    runner.stopAll();
  });
});

describe('agent wiring', () => {
  const NOW = Date.now();
  let timers: FakeTimers;
  let agent: Agent;
  let base: string;
  let target: Target;

  before(async () => {
    timers = new FakeTimers();
    target = await httpTarget();
    agent = new Agent({ host: '127.0.0.1', port: 0, dataDir: null, datacenter: 'dc1', defaultAllow: false, dev: true, nodeName: 'n1', now: () => NOW + timers.t, checkTimers: timers });
    await agent.start();
    base = `http://127.0.0.1:${agent.address.port}`;
  });
  after(async () => {
    await agent.stop();
    await target.close();
  });

  const put = async (path: string, body?: unknown): Promise<Response> => fetch(`${base}${path}`, { method: 'PUT', ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  const get = async <T,>(path: string): Promise<T> => (await fetch(`${base}${path}`)).json() as Promise<T>;
  const checkStatus = async (id: string): Promise<string | undefined> => (await get<Record<string, { Status: string }>>('/v1/agent/checks'))[id]?.Status;
  /** Fires due probes and waits (real time) until the check reaches `want`. */
  const until = async (id: string, want: string): Promise<void> => {
    for (let i = 0; i < 200; i++) {
      if ((await checkStatus(id)) === want) return;
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.fail(`${id} never became ${want}: ${JSON.stringify(await get('/v1/agent/checks'))}`);
  };

  test('an HTTP check runs from registration; the sidecar leaves ?passing when the app dies', async () => {
    const sidecarPort = await tcpListener();
    const r = await put('/v1/agent/service/register', {
      Name: 'web',
      ID: 'web-1',
      Port: target.port,
      Tags: ['v1'],
      Meta: { version: '1' },
      Check: { CheckID: 'web-http', HTTP: `http://127.0.0.1:${target.port}/health`, Interval: '10s' },
      Connect: { SidecarService: { Port: sidecarPort.port, Proxy: { Upstreams: [{ DestinationName: 'api', LocalBindPort: 19191 }] } } },
    });
    assert.equal(r.status, 200, await r.text());
    timers.advance(0);
    await until('web-http', 'passing');
    await until('service:web-1-sidecar-proxy:1', 'passing');
    await until('service:web-1-sidecar-proxy:2', 'passing');
    const passing = await get<{ Service: { ID: string } }[]>('/v1/health/connect/web?passing=1');
    assert.deepEqual(passing.map((e) => e.Service.ID), ['web-1-sidecar-proxy']);

    const checks = await get<Record<string, { Type: string; Interval: string; Output: string; ServiceTags: string[] }>>('/v1/agent/checks');
    assert.equal(checks['web-http']?.Type, 'http');
    assert.equal(checks['web-http']?.Interval, '10s');
    assert.deepEqual(checks['web-http']?.ServiceTags, ['v1']);
    assert.match(checks['web-http']?.Output ?? '', /200 OK Output: ok/);
    assert.equal(checks['service:web-1-sidecar-proxy:1']?.Interval, '10s', 'Consul\'s default sidecar TCP interval');

    target.status = 500;
    timers.advance(10_000);
    await until('web-http', 'critical');
    await until('service:web-1-sidecar-proxy:2', 'critical');
    assert.deepEqual(await get('/v1/health/connect/web?passing=1'), []);
    target.status = 200;
    timers.advance(10_000);
    await until('service:web-1-sidecar-proxy:2', 'passing');

    // A TTL update of an agent-run check is refused.
    const bad = await put('/v1/agent/check/pass/web-http');
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /http check run by the agent/);
    sidecarPort.server.close();
  });

  test('GET /v1/agent/service/:id and /v1/agent/services return Consul\'s AgentService', async () => {
    const svc = await fetch(`${base}/v1/agent/service/web-1`);
    assert.equal(svc.status, 200);
    const body = (await svc.json()) as Record<string, unknown>;
    assert.equal(svc.headers.get('x-consul-contenthash'), body.ContentHash);
    assert.deepEqual(
      { ID: body.ID, Service: body.Service, Port: body.Port, Tags: body.Tags, Meta: body.Meta, Kind: body.Kind },
      { ID: 'web-1', Service: 'web', Port: target.port, Tags: ['v1'], Meta: { version: '1' }, Kind: undefined },
    );
    const all = await get<Record<string, { Kind?: string; Proxy?: { DestinationServiceID: string; Upstreams: unknown[] } }>>('/v1/agent/services');
    assert.deepEqual(Object.keys(all).sort(), ['web-1', 'web-1-sidecar-proxy']);
    assert.equal(all['web-1-sidecar-proxy']?.Kind, 'connect-proxy');
    assert.equal(all['web-1-sidecar-proxy']?.Proxy?.DestinationServiceID, 'web-1');
    const missing = await fetch(`${base}/v1/agent/service/nope`);
    assert.equal(missing.status, 404);
    assert.match(await missing.text(), /unknown service ID: nope/);

    // Hash-blocking: returns when the service changes, not before.
    const hash = body.ContentHash as string;
    let settled = false;
    const pending = fetch(`${base}/v1/agent/service/web-1?hash=${hash}&wait=5s`).then(async (res) => {
      settled = true;
      return (await res.json()) as { Port: number; ContentHash: string };
    });
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.equal(settled, false);
    await put('/v1/agent/service/register', { Name: 'other', Port: 1 });
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(settled, false, 'another service changing does not end it');
    const def = decodeRegistration({ Name: 'web', ID: 'web-1', Port: 1234, Tags: ['v1'] });
    await put('/v1/agent/service/register', { Name: def.service.Service, ID: def.service.ID, Port: 1234 });
    const changed = await pending;
    assert.equal(changed.Port, 1234);
    assert.notEqual(changed.ContentHash, hash);
  });

  test('deregistering stops its probes; register errors name the field', async () => {
    assert.equal((await put('/v1/agent/service/deregister/web-1')).status, 200);
    assert.equal((await put('/v1/agent/service/deregister/other')).status, 200);
    const checks = await get<Record<string, unknown>>('/v1/agent/checks');
    assert.deepEqual(Object.keys(checks), []);
    const hits = target.hits;
    timers.advance(60_000);
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(target.hits, hits, 'no probe after deregistration');
    assert.equal(timers.pending, 0, 'no timer left behind');
    const bad = await put('/v1/agent/service/register', { Name: 'x', Check: { HTTP: 'http://127.0.0.1/', Interval: '1s', Bogus: 1 } });
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /Check\.Bogus: unknown field/);
  });

  test('planSidecarFor: the proxy\'s settings come from the registrations', async () => {
    const client = new AgentClient(new URL(base));
    await put('/v1/agent/service/register', {
      Name: 'api',
      ID: 'api-7',
      Port: 9090,
      Tags: ['blue'],
      Meta: { zone: 'a' },
      Connect: { SidecarService: { Port: 21777, Proxy: { Upstreams: [{ DestinationName: 'db', LocalBindPort: 15432 }, { DestinationName: 'cache', LocalBindAddress: '127.0.0.9', LocalBindPort: 16379 }] } } },
    });
    const plan = await planSidecarFor(client, 'API-7');
    assert.deepEqual(plan, {
      service: 'api',
      serviceAddr: { host: '127.0.0.1', port: 9090 },
      listen: { host: '127.0.0.1', port: 21777 },
      upstreams: [
        { name: 'db', host: '127.0.0.1', port: 15432 },
        { name: 'cache', host: '127.0.0.9', port: 16379 },
      ],
      tags: ['blue'],
      meta: { zone: 'a' },
      proxyId: 'api-7-sidecar-proxy',
    });
    await assert.rejects(planSidecarFor(client, 'nope'), (e: unknown) => e instanceof SidecarForError && /no service with ID "nope"/.test(e.message));
    await put('/v1/agent/service/register', { Name: 'lonely', Port: 1 });
    await assert.rejects(planSidecarFor(client, 'lonely'), (e: unknown) => e instanceof SidecarForError && /no sidecar is registered for service "lonely"/.test(e.message));
    await put('/v1/agent/service/register', { Name: 'api-proxy-2', Kind: 'connect-proxy', Port: 21778, Proxy: { DestinationServiceName: 'api', DestinationServiceID: 'api-7' } });
    await assert.rejects(planSidecarFor(client, 'api-7'), (e: unknown) => e instanceof SidecarForError && /2 proxies are registered/.test(e.message));
    for (const id of ['api-7', 'api-proxy-2', 'lonely']) await put(`/v1/agent/service/deregister/${id}`);
  });
});
