// Connection and request limits, and idle timeouts (hardening issue, "Limits"), with real
// processes from the CLI: an agent; `api` (HTTP) and `echo` (tcp) behind their sidecars; three
// client sidecars, `web`, `web2` and `web3`, with upstream listeners for both. Each limit is set small on
// one sidecar and driven just past it: the connection over the limit is closed at accept and
// counted while the others stay open; the caller over its per-source request limit gets 429
// while another caller still gets 200s; a listener over its request limit answers 503 at once.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent as UndiciAgent, request } from 'undici';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { meshd } from '../helpers/cli.ts';
import { scrapeUntil, startEchoApp, total, type EchoApp } from '../helpers/net.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';

/** A raw TCP connection, and whether the server closed it within `ms` of connecting. */
interface Probe {
  readonly socket: net.Socket;
  readonly closedFast: boolean;
}

function probe(hostPort: string, ms = 400): Promise<Probe> {
  const [host, port] = hostPort.split(':') as [string, string];
  return new Promise((resolve) => {
    const socket = net.connect({ host, port: Number(port) });
    socket.on('error', () => undefined);
    let done = false;
    const finish = (closedFast: boolean): void => {
      if (done) return;
      done = true;
      clearTimeout(t);
      resolve({ socket, closedFast });
    };
    const t = setTimeout(() => finish(false), ms);
    socket.once('close', () => finish(true));
  });
}

/** Resolves with how long the socket stayed open after `since` (or -1 if still open after `limitMs`). */
function closedAfter(socket: net.Socket, since: number, limitMs: number): Promise<number> {
  return new Promise((resolve) => {
    if (socket.destroyed) return resolve(performance.now() - since);
    const t = setTimeout(() => resolve(-1), limitMs);
    socket.once('close', () => {
      clearTimeout(t);
      resolve(performance.now() - since);
    });
  });
}

const INBOUND_LIMIT = 12;

interface Reply {
  readonly status: number;
  readonly flag: string | null;
  readonly ms: number;
}

async function get(base: string, path: string, dispatcher: UndiciAgent): Promise<Reply> {
  const t0 = performance.now();
  const r = await request(`${base}${path}`, { dispatcher, headersTimeout: 10_000, bodyTimeout: 10_000 });
  await r.body.arrayBuffer();
  const flag = r.headers['x-meshd-response-flag'];
  return { status: r.statusCode, flag: typeof flag === 'string' ? flag : null, ms: performance.now() - t0 };
}

describe('limits: connections per listener and per proxy, requests per listener and per source, idle timeouts', () => {
  let dir: string;
  let agent: MeshdProcess;
  let http: string;
  let app: HttpApp;
  let echoApp: EchoApp;
  let api: MeshdProcess;
  let echo: MeshdProcess;
  let web: MeshdProcess;
  let web2: MeshdProcess;
  let web3: MeshdProcess;
  const common = (): string[] => ['-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-limits-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    http = agent.fields.http as string;
    await putConfig(http, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(http, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }, { Name: 'web2', Action: 'allow' }] });
    await putConfig(http, { Kind: 'service-intentions', Name: 'echo', Sources: [{ Name: 'web3', Action: 'allow' }] });
    app = await startApp('api');
    echoApp = await startEchoApp();
    [api, echo] = await Promise.all([
      // A public listener of 12 connections (handshakes included); 2 requests per calling service.
      startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-max-inbound-connections', String(INBOUND_LIMIT), '-max-requests-per-source', '2', '-handshake-timeout', '5s', ...common()]),
      startMeshd(['connect', 'proxy', '-service', 'echo', '-service-addr', `127.0.0.1:${echoApp.port}`, '-listen', '127.0.0.1:0', '-register', '-tcp-idle-timeout', '1500ms', ...common()]),
    ]);
    // Pooled connections to api close 1 s after use, so api's connection count drops to 0 quickly.
    const pools = ['-upstream-idle-timeout', '1s'];
    [web, web2, web3] = await Promise.all([
      startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', ...pools, ...common()]),
      // 3 requests in progress on each listener; HTTP connections idle 500 ms are closed.
      startMeshd(['connect', 'proxy', '-service', 'web2', '-upstream', 'api:0', '-max-concurrent-requests', '3', '-http-idle-timeout', '500ms', ...pools, ...common()]),
      // 2 connections per upstream listener, 3 over the whole proxy; tcp idle 600 ms.
      startMeshd(['connect', 'proxy', '-service', 'web3', '-upstream', 'api:0', '-upstream', 'echo:0', '-max-upstream-connections', '2', '-max-connections', '3', '-tcp-idle-timeout', '600ms', ...pools, ...common()]),
    ]);
    // Both HTTP callers reach api (instances seen, intentions applied).
    for (const p of [web, web2]) {
      const base = `http://${p.fields['upstream.api'] as string}`;
      const d = new UndiciAgent({ connections: 1 });
      const end = Date.now() + 10_000;
      while ((await get(base, '/ready', d).catch(() => ({ status: 0 }))).status !== 200) {
        assert.ok(Date.now() < end, 'the mesh did not become ready');
        await new Promise((r) => setTimeout(r, 100));
      }
      await d.close();
    }
  });

  after(async () => {
    await Promise.all([web, web2, web3, api, echo].map((p) => p?.stop()));
    await agent?.stop();
    await Promise.all([app?.close(), echoApp?.close()]);
    rmSync(dir, { recursive: true, force: true });
  });

  test(`public listener: with ${INBOUND_LIMIT} connections open the next is closed at accept and counted; a slot freed is usable again`, async () => {
    const inbound = api.fields.inbound as string;
    const m0 = await scrapeUntil(api.fields.metrics as string, (s) => total(s, 'meshd_listener_connections', { direction: 'inbound' }) === 0, 10_000);
    // web's and web2's pooled connections may still be open from before: wait for none.
    assert.equal(total(m0, 'meshd_listener_connections', { direction: 'inbound' }), 0, 'pooled connections still open on api');
    const denied0 = total(m0, 'meshd_connections_denied_total', { reason: 'listener_connection_limit' });
    const open: net.Socket[] = [];
    try {
      for (let i = 0; i < INBOUND_LIMIT; i++) {
        const p = await probe(inbound, i === INBOUND_LIMIT - 1 ? 400 : 50);
        open.push(p.socket);
        assert.equal(p.closedFast, false, `connection ${i + 1} of ${INBOUND_LIMIT} was closed`);
      }
      const over = await probe(inbound);
      open.push(over.socket);
      assert.equal(over.closedFast, true, 'the connection over the limit was not closed at accept');
      const m = await scrapeUntil(api.fields.metrics as string, (s) => total(s, 'meshd_connections_denied_total', { reason: 'listener_connection_limit' }) > denied0);
      assert.equal(total(m, 'meshd_connections_denied_total', { reason: 'listener_connection_limit' }), denied0 + 1);
      assert.equal(total(m, 'meshd_listener_connections', { direction: 'inbound' }), INBOUND_LIMIT);
      // A TLS client over the limit fails too (no handshake is attempted).
      const tlsErr = await new Promise<string>((resolve) => {
        const [host, port] = inbound.split(':') as [string, string];
        const s = tls.connect({ host, port: Number(port), rejectUnauthorized: false });
        s.once('secureConnect', () => resolve('connected'));
        s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? e.message));
      });
      assert.notEqual(tlsErr, 'connected');
      // Free one slot (a reset: a client that half-closes during the handshake keeps its
      // server socket, and its slot, until the handshake timeout): the next one stays open.
      (open.shift() as net.Socket).resetAndDestroy();
      await scrapeUntil(api.fields.metrics as string, (s) => total(s, 'meshd_listener_connections', { direction: 'inbound' }) === INBOUND_LIMIT - 1);
      const again = await probe(inbound);
      open.push(again.socket);
      assert.equal(again.closedFast, false, 'a freed slot was not reusable');
    } finally {
      for (const s of open) s.resetAndDestroy();
    }
    await scrapeUntil(api.fields.metrics as string, (s) => total(s, 'meshd_listener_connections', { direction: 'inbound' }) === 0);
  });

  test('upstream listeners: 2 per listener, 3 over the proxy; each excess connection refused with its reason', async () => {
    const apiL = web3.fields['upstream.api'] as string;
    const echoL = web3.fields['upstream.echo'] as string;
    const metrics = web3.fields.metrics as string;
    await scrapeUntil(metrics, (s) => total(s, 'meshd_listener_connections') === 0, 10_000);
    const reasons = (s: Map<string, number>): [number, number] => [total(s, 'meshd_connections_denied_total', { reason: 'listener_connection_limit' }), total(s, 'meshd_connections_denied_total', { reason: 'proxy_connection_limit' })];
    const [l0, p0] = reasons(await scrapeUntil(metrics, () => true));
    const open: net.Socket[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        const p = await probe(apiL);
        open.push(p.socket);
        assert.equal(p.closedFast, false);
      }
      const overListener = await probe(apiL);
      open.push(overListener.socket);
      assert.equal(overListener.closedFast, true, 'the 3rd connection to one upstream listener was accepted');
      const third = await probe(echoL);
      open.push(third.socket);
      assert.equal(third.closedFast, false, 'the echo listener refused its first connection');
      const overProxy = await probe(echoL);
      open.push(overProxy.socket);
      assert.equal(overProxy.closedFast, true, 'a 4th connection to the proxy was accepted');
      const m = await scrapeUntil(metrics, (s) => reasons(s)[1] > p0);
      assert.deepEqual(reasons(m), [l0 + 1, p0 + 1]);
      assert.equal(total(m, 'meshd_listener_connections', { upstream: 'api' }), 2);
      assert.equal(total(m, 'meshd_listener_connections', { upstream: 'echo' }), 1);
    } finally {
      for (const s of open) s.destroy();
    }
    // Closed connections give their slots back.
    const after = await scrapeUntil(metrics, (s) => total(s, 'meshd_listener_connections') === 0);
    assert.equal(total(after, 'meshd_listener_connections'), 0);
  });

  test('per source: web over its 2 requests in progress gets 429 source_limit, web2 meanwhile gets 200s', async () => {
    const a = new UndiciAgent({ connections: 16 });
    const b = new UndiciAgent({ connections: 16 });
    const baseA = `http://${web.fields['upstream.api'] as string}`;
    const baseB = `http://${web2.fields['upstream.api'] as string}`;
    try {
      // /slow holds each request 2 s at the app: all of them overlap at api's sidecar.
      const fromA = Promise.all(Array.from({ length: 5 }, () => get(baseA, '/slow', a)));
      await new Promise((r) => setTimeout(r, 300));
      const fromB = Promise.all(Array.from({ length: 2 }, () => get(baseB, '/slow', b)));
      const [ra, rb] = await Promise.all([fromA, fromB]);
      assert.deepEqual(
        ra.map((r) => r.status).sort(),
        [200, 200, 429, 429, 429],
      );
      assert.deepEqual(
        rb.map((r) => r.status),
        [200, 200],
      );
      for (const r of ra.filter((x) => x.status === 429)) assert.ok(r.ms < 1500, `a 429 took ${r.ms.toFixed(0)} ms`);
      const m = await scrapeUntil(api.fields.metrics as string, (s) => total(s, 'meshd_http_local_responses_total', { direction: 'inbound', flag: 'source_limit' }) >= 3);
      assert.equal(total(m, 'meshd_http_local_responses_total', { direction: 'inbound', flag: 'source_limit' }), 3);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test('listener requests: web2 admits 3 requests in progress, the others get 503 overflow at once', async () => {
    const d = new UndiciAgent({ connections: 16 });
    const base = `http://${web2.fields['upstream.api'] as string}`;
    try {
      // web2 admits 3 of the 6 and answers the others itself; of its 3, api admits 2 (its
      // per-source limit) and answers the third 429 at once — which frees one of web2's slots,
      // so a request arriving after that 429 (on a loaded machine they do not all arrive
      // together) is admitted by web2 and then refused 429 by api too.
      const replies = await Promise.all(Array.from({ length: 6 }, () => get(base, '/slow', d)));
      const shown = replies.map((r) => `${r.status}/${r.flag ?? '-'}`).join(' ');
      const local = replies.filter((r) => r.status === 503 && r.flag === 'overflow');
      const refusedByApi = replies.filter((r) => r.status === 429);
      assert.equal(replies.filter((r) => r.status === 200).length, 2, shown);
      assert.ok(local.length >= 2 && local.length <= 3, shown);
      assert.equal(local.length + refusedByApi.length, 4, shown);
      for (const r of local) assert.ok(r.ms < 1000, `a 503 overflow took ${r.ms.toFixed(0)} ms`);
      const m = await scrapeUntil(web2.fields.metrics as string, (s) => total(s, 'meshd_http_local_responses_total', { upstream: 'api', flag: 'overflow' }) >= local.length);
      assert.equal(total(m, 'meshd_http_local_responses_total', { upstream: 'api', flag: 'overflow' }), local.length);
    } finally {
      await d.close();
    }
  });

  test('tcp idle timeout: an idle connection through web3 is closed after 600 ms and counted; a chatty one stays', async () => {
    const [host, port] = (web3.fields['upstream.echo'] as string).split(':') as [string, string];
    const connect = (): Promise<net.Socket> =>
      new Promise((resolve, reject) => {
        const s = net.connect({ host, port: Number(port) });
        s.once('error', reject);
        s.once('data', () => resolve(s));
        s.on('connect', () => s.write('hi'));
      });
    const idle = await connect();
    const chatty = await connect();
    const t0 = performance.now();
    const timer = setInterval(() => chatty.write('.'), 150);
    try {
      const ms = await closedAfter(idle, t0, 5000);
      assert.ok(ms >= 450 && ms < 2000, `idle connection closed after ${ms.toFixed(0)} ms`);
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(chatty.destroyed, false, 'a connection with traffic was closed');
      const m = await scrapeUntil(web3.fields.metrics as string, (s) => total(s, 'meshd_tcp_idle_timeouts_total', { direction: 'outbound' }) >= 1);
      assert.equal(total(m, 'meshd_tcp_idle_timeouts_total', { direction: 'outbound' }), 1);
    } finally {
      clearInterval(timer);
      idle.destroy();
      chatty.destroy();
    }
  });

  test('tcp idle timeout on the public listener: an idle mTLS connection is closed after 1.5 s and counted', async () => {
    const leaf = (await (await fetch(`http://${http}/v1/agent/connect/ca/leaf/web3`)).json()) as { CertPEM: string; PrivateKeyPEM: string };
    const roots = (await (await fetch(`http://${http}/v1/agent/connect/ca/roots`)).json()) as { Roots: { RootCert: string }[] };
    const [host, port] = (echo.fields.inbound as string).split(':') as [string, string];
    const s = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const c = tls.connect({ host, port: Number(port), key: leaf.PrivateKeyPEM, cert: leaf.CertPEM, ca: roots.Roots.map((r) => r.RootCert), checkServerIdentity: () => undefined });
      c.once('error', reject);
      c.once('secureConnect', () => c.write('x'));
      c.once('data', () => resolve(c));
    });
    const ms = await closedAfter(s, performance.now(), 6000);
    s.destroy();
    assert.ok(ms >= 1300 && ms < 3500, `closed after ${ms.toFixed(0)} ms`);
    const m = await scrapeUntil(echo.fields.metrics as string, (x) => total(x, 'meshd_tcp_idle_timeouts_total', { direction: 'inbound' }) >= 1);
    assert.equal(total(m, 'meshd_tcp_idle_timeouts_total', { direction: 'inbound' }), 1);
  });

  test('http idle timeout: web2 closes a keep-alive connection 500 ms after its last request', async () => {
    const [host, port] = (web2.fields['upstream.api'] as string).split(':') as [string, string];
    const s = net.connect({ host, port: Number(port) });
    s.on('error', () => undefined);
    await new Promise<void>((resolve) => s.once('connect', () => resolve()));
    s.write('GET /x HTTP/1.1\r\nHost: api\r\n\r\n');
    await new Promise<void>((resolve) => s.once('data', () => resolve()));
    const ms = await closedAfter(s, performance.now(), 5000);
    s.destroy();
    assert.ok(ms >= 350 && ms < 2500, `closed after ${ms.toFixed(0)} ms`);
  });

  test('limit flags: 0 or garbage is a usage error (exit 2)', async () => {
    for (const [flag, value] of [
      ['-max-connections', '0'],
      ['-max-requests-per-source', 'many'],
      ['-http-idle-timeout', '0'],
      ['-upstream-idle-timeout', 'soon'],
    ] as const) {
      const r = await meshd(['connect', 'proxy', '-service', 'x', '-upstream', 'a:0', flag, value, '-http-addr', http]);
      assert.equal(r.code, 2, `${flag} ${value}: ${r.stderr}`);
      assert.match(r.stderr, new RegExp(flag.slice(1)));
    }
  });
});
