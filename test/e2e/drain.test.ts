// SIGTERM drains (hardening issue, "Faults and overload"), with real processes: an `api`
// sidecar (HTTP public listener, two workers, a tcp upstream to `db`) is sent SIGTERM while a
// slow request goes through it and an L4 connection is open through its upstream listener.
// It leaves the catalog first, refuses new connections at once on every listener, lets the
// slow request finish with 200, keeps the L4 connection working until the drain timeout and
// then cuts it, and exits 0. A sidecar with nothing in flight (an idle keep-alive connection
// only) exits at once, closing that connection.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';
import { startEchoApp, waitUntilEchoes, type EchoApp } from '../helpers/net.ts';
import { until } from '../helpers/until.ts';

const DRAIN_MS = 4000;

function port(p: MeshdProcess, field: string): number {
  return Number((p.fields[field] as string).split(':').at(-1));
}

/** GET through a keep-alive agent; resolves with the status, body and the socket used. */
function get(port: number, path: string, agent: http.Agent): Promise<{ status: number; body: string; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, socket: req.socket as net.Socket }));
    });
    req.on('error', reject);
  });
}

/** True when a TCP connection to the port is refused (nothing listens any more). */
function refused(p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port: p });
    s.once('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

/** An open L4 connection: write a line and read its echo. */
class Line {
  readonly socket: net.Socket;
  #got = '';
  closedAt: number | null = null;
  constructor(p: number) {
    this.socket = net.connect({ host: '127.0.0.1', port: p });
    this.socket.setEncoding('utf8');
    this.socket.on('data', (d: string) => (this.#got += d));
    this.socket.on('error', () => undefined);
    this.socket.once('close', () => (this.closedAt = performance.now()));
  }
  async echo(text: string, limitMs = 3000): Promise<boolean> {
    this.#got = '';
    this.socket.write(text);
    const end = performance.now() + limitMs;
    while (performance.now() < end && this.closedAt === null) {
      if (this.#got === text) return true;
      await new Promise((r) => setTimeout(r, 10));
    }
    return this.#got === text;
  }
}

describe('SIGTERM drains a sidecar', () => {
  let dir: string;
  let agent: MeshdProcess;
  let db: MeshdProcess;
  let api: MeshdProcess;
  let web: MeshdProcess;
  let app: HttpApp;
  let echo: EchoApp;
  let httpAddr: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-drain-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    httpAddr = agent.fields.http as string;
    await putConfig(httpAddr, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(httpAddr, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] });
    await putConfig(httpAddr, { Kind: 'service-intentions', Name: 'db', Sources: [{ Name: 'api', Action: 'allow' }] });
    app = await startApp('api');
    echo = await startEchoApp();
    const proxy = (args: string[]): Promise<MeshdProcess> => startMeshd(['connect', 'proxy', ...args, '-http-addr', httpAddr]);
    db = await proxy(['-service', 'db', '-service-addr', `127.0.0.1:${echo.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1']);
    api = await proxy(['-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '2', '-upstream', 'db:0', '-drain-timeout', `${DRAIN_MS}ms`]);
    web = await proxy(['-service', 'web', '-upstream', 'api:0', '-workers', '1']);
    assert.ok((await waitUntilEchoes(port(api, 'upstream.db'), 10_000)) >= 0, 'api -> db never echoed');
    const plain = new http.Agent({ keepAlive: false });
    await until('web -> api answers', () => get(port(web, 'upstream.api'), '/ok', plain).then((r) => r.status === 200, () => false), 10_000);
  });

  after(async () => {
    await Promise.all([web?.stop(), api?.stop(), db?.stop()]);
    await agent?.stop();
    await app?.close();
    await echo?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('deregisters, refuses new connections, finishes the request in flight, cuts L4 at the drain timeout, exits 0', async () => {
    const inbound = port(api, 'inbound');
    const upstreamDb = port(api, 'upstream.db');
    const line = new Line(upstreamDb);
    assert.ok(await line.echo('before\n'), 'the L4 connection does not echo');
    const exited = new Promise<{ code: number | null; at: number }>((resolve) => api.child.once('exit', (code) => resolve({ code, at: performance.now() })));

    const agentKA = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const slowStarted = performance.now();
    const slow = get(port(web, 'upstream.api'), '/slow', agentKA);
    await new Promise((r) => setTimeout(r, 300));
    const hits = app.hits;
    api.child.kill('SIGTERM');
    const t0 = performance.now();

    // Out of the catalog first, so peers stop picking it.
    await until('api leaves the catalog', async () => ((await (await fetch(`http://${httpAddr}/v1/health/connect/api`)).json()) as unknown[]).length === 0, 1500);
    // Every worker stopped accepting, on the public listener and the upstream listener.
    await until('public listener refuses', () => refused(inbound), 1500);
    await until('upstream listener refuses', () => refused(upstreamDb), 1500);
    // The open L4 connection keeps working while the process drains.
    assert.ok(await line.echo('during\n'), 'the L4 connection stopped working during the drain');

    const r = await slow;
    assert.equal(r.status, 200, r.body);
    assert.match(r.body, /"url":"\/slow"/);
    assert.ok(performance.now() - slowStarted >= 1900, 'the slow request was not slow');
    assert.equal(app.hits, hits, 'a request reached the app after SIGTERM');
    assert.equal(api.child.exitCode, null, 'api exited before its L4 connection ended or the drain timeout');

    // The L4 connection is cut at the drain timeout, and the process exits 0 right after.
    const { code, at } = await exited;
    assert.equal(code, 0, api.stderr());
    assert.ok(line.closedAt !== null, 'the L4 connection was never closed');
    const cutAfter = line.closedAt - t0;
    assert.ok(cutAfter >= DRAIN_MS - 300 && cutAfter <= DRAIN_MS + 2000, `L4 connection cut ${Math.round(cutAfter)} ms after SIGTERM (drain timeout ${DRAIN_MS} ms)`);
    assert.ok(at - t0 <= DRAIN_MS + 2000, `exited ${Math.round(at - t0)} ms after SIGTERM`);
    assert.match(api.stderr(), /caught SIGTERM, deregistering and draining for up to 4000 ms/);
    agentKA.destroy();
  });

  test('with nothing in flight, an idle keep-alive connection is closed and the sidecar exits at once', async () => {
    const agentKA = new http.Agent({ keepAlive: true, maxSockets: 1 });
    // api is gone by now: web answers 503 itself, on a keep-alive connection all the same.
    const first = await get(port(web, 'upstream.api'), '/ok', agentKA);
    assert.equal(first.status, 503);
    assert.equal(first.socket.destroyed, false, 'the connection was not kept alive');
    let idleClosed = false;
    first.socket.once('close', () => (idleClosed = true));
    const exited = new Promise<number | null>((resolve) => web.child.once('exit', (code) => resolve(code)));
    const t0 = performance.now();
    web.child.kill('SIGTERM');
    assert.equal(await exited, 0, web.stderr());
    const took = performance.now() - t0;
    // The default drain timeout is 10 s: nothing made it wait.
    assert.ok(took < 3000, `exit took ${Math.round(took)} ms`);
    await until('the idle keep-alive connection is closed', () => Promise.resolve(idleClosed), 1000);
    agentKA.destroy();
  });
});

describe('the ingress gateway reloads and drains as a sidecar does', () => {
  let dir: string;
  let agent: MeshdProcess;
  let api: MeshdProcess;
  let gateway: MeshdProcess;
  let app: HttpApp;
  let httpAddr: string;
  let listener: number;

  /** GET with a Host header through the gateway's listener. */
  const via = (path: string, agent: http.Agent): Promise<{ status: number; body: string; socket: net.Socket }> =>
    new Promise((resolve, reject) => {
      const req = http.get({ host: '127.0.0.1', port: listener, path, agent, headers: { host: 'api.ingress.example' } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body, socket: req.socket as net.Socket }));
      });
      req.on('error', reject);
    });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-drain-gw-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    httpAddr = agent.fields.http as string;
    await putConfig(httpAddr, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(httpAddr, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'ingress', Action: 'allow' }] });
    await putConfig(httpAddr, { Kind: 'ingress-gateway', Name: 'ingress', Listeners: [{ Port: 0, Protocol: 'http', Services: [{ Name: 'api' }] }] });
    app = await startApp('api');
    api = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1', '-http-addr', httpAddr]);
    gateway = await startMeshd(['connect', 'gateway', '-ingress', '-service', 'ingress', '-register', '-workers', '2', '-drain-timeout', '5s', '-worker-memory-limit', '256', '-http-addr', httpAddr]);
    listener = port(gateway, 'listener.0');
    const plain = new http.Agent({ keepAlive: false });
    await until('api through the gateway', () => via('/ok', plain).then((r) => r.status === 200, () => false), 10_000);
  });

  after(async () => {
    await Promise.all([gateway?.stop(), api?.stop()]);
    await agent?.stop();
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('SIGHUP keeps a keep-alive connection; SIGTERM lets the request in flight finish, refuses new ones, exits 0 without waiting out the timeout', async () => {
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const first = await via('/one', keepAlive);
    assert.equal(first.status, 200);
    gateway.child.kill('SIGHUP');
    await until('gateway reload logged', () => Promise.resolve(/gateway: reloaded: re-read all \d+ watches/.test(gateway.stderr())), 5000);
    const second = await via('/two', keepAlive);
    assert.equal(second.status, 200);
    assert.equal(second.socket, first.socket, 'the keep-alive connection did not survive the reload');

    const exited = new Promise<{ code: number | null; at: number }>((resolve) => gateway.child.once('exit', (code) => resolve({ code, at: performance.now() })));
    const slow = via('/slow', keepAlive);
    await new Promise((r) => setTimeout(r, 300));
    gateway.child.kill('SIGTERM');
    const t0 = performance.now();
    await until('the gateway leaves the catalog', async () => ((await (await fetch(`http://${httpAddr}/v1/catalog/services`)).json()) as Record<string, unknown>).ingress === undefined, 1500);
    await until('the listener refuses', () => refused(listener), 1500);
    const r = await slow;
    assert.equal(r.status, 200);
    const { code, at } = await exited;
    assert.equal(code, 0, gateway.stderr());
    // Done when the slow request was (about 2 s), not at the 5 s drain timeout.
    assert.ok(at - t0 < 4000, `exited ${Math.round(at - t0)} ms after SIGTERM`);
    keepAlive.destroy();
  });
});
