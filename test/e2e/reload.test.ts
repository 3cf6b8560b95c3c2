// Reload without dropping connections (hardening issue, "Faults and overload").
// - SIGHUP to a sidecar with an open L4 connection and a keep-alive HTTP connection through
//   it: both keep working (the HTTP one on the same socket), and the sidecar has re-read
//   everything from the agent (logged) and issued a new leaf (the agent signed one more).
// - In process: a sidecar whose watches back off after the agent went away catches up at
//   once on reload() when the agent is back, instead of at the end of its backoff.
// - The agent: SIGHUP and PUT /v1/agent/reload (management token only) read a rotated
//   management token file again; an unreadable one fails the reload and changes nothing.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, freePort, type MeshdProcess } from '../../src/demo/procs.ts';
import { Agent } from '../../src/control/agent.ts';
import { AgentClient } from '../../src/control/client.ts';
import { SidecarProxy } from '../../src/control/proxy.ts';
import { createLeafCsr } from '../../src/ca/authority.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';
import { parseMetrics, startEchoApp, waitUntilEchoes, type EchoApp } from '../helpers/net.ts';
import { until } from '../helpers/until.ts';

function port(p: MeshdProcess, field: string): number {
  return Number((p.fields[field] as string).split(':').at(-1));
}

function get(p: number, path: string, agent: http.Agent): Promise<{ status: number; socket: net.Socket; reused: boolean }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: p, path, agent }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, socket: req.socket as net.Socket, reused: req.reusedSocket }));
    });
    req.on('error', reject);
  });
}

/** Writes `text` on an open connection and waits for its echo. */
function echo(s: net.Socket, text: string, limitMs = 3000): Promise<boolean> {
  return new Promise((resolve) => {
    let got = '';
    const onData = (d: Buffer): void => {
      got += d.toString();
      if (got === text) done(true);
    };
    const done = (ok: boolean): void => {
      clearTimeout(t);
      s.off('data', onData);
      resolve(ok);
    };
    const t = setTimeout(() => done(false), limitMs);
    s.on('data', onData);
    s.write(text);
  });
}

async function leavesSigned(httpAddr: string, token?: string): Promise<number> {
  const r = await fetch(`http://${httpAddr}/v1/agent/metrics?format=prometheus`, token === undefined ? {} : { headers: { 'x-consul-token': token } });
  return parseMetrics(await r.text()).get('meshd_ca_leaf_signed_total') ?? NaN;
}

describe('SIGHUP reloads a sidecar without dropping connections', () => {
  let dir: string;
  let agent: MeshdProcess;
  const procs: MeshdProcess[] = [];
  let web: MeshdProcess;
  let app: HttpApp;
  let echoApp: EchoApp;
  let httpAddr: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-reload-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    httpAddr = agent.fields.http as string;
    await putConfig(httpAddr, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    for (const s of ['api', 'db']) await putConfig(httpAddr, { Kind: 'service-intentions', Name: s, Sources: [{ Name: 'web', Action: 'allow' }] });
    app = await startApp('api');
    echoApp = await startEchoApp();
    const proxy = (args: string[]): Promise<MeshdProcess> => startMeshd(['connect', 'proxy', ...args, '-http-addr', httpAddr]);
    procs.push(await proxy(['-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1']));
    procs.push(await proxy(['-service', 'db', '-service-addr', `127.0.0.1:${echoApp.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1']));
    web = await proxy(['-service', 'web', '-upstream', 'api:0', '-upstream', 'db:0', '-workers', '2']);
    procs.push(web);
    assert.ok((await waitUntilEchoes(port(web, 'upstream.db'), 10_000)) >= 0, 'web -> db never echoed');
  });

  after(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await agent?.stop();
    await app?.close();
    await echoApp?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('an open L4 connection and a keep-alive HTTP connection keep working; everything is re-read and a new leaf issued', async () => {
    const l4 = net.connect({ host: '127.0.0.1', port: port(web, 'upstream.db') });
    l4.on('error', () => undefined);
    let l4Closed = false;
    l4.once('close', () => (l4Closed = true));
    await new Promise<void>((resolve) => l4.once('connect', () => resolve()));
    assert.ok(await echo(l4, 'before\n'), 'the L4 connection does not echo');
    const keepAlive = new http.Agent({ keepAlive: true, maxSockets: 1 });
    let first: Awaited<ReturnType<typeof get>> | undefined;
    await until('web -> api answers', async () => (first = await get(port(web, 'upstream.api'), '/one', keepAlive).catch(() => undefined))?.status === 200, 10_000);
    const socket = (first as { socket: net.Socket }).socket;
    const signed = await leavesSigned(httpAddr);

    web.child.kill('SIGHUP');
    await until('reload logged', () => /proxy: reloaded: re-read all \d+ watches from the agent, issued a new leaf certificate/.test(web.stderr()), 5000);
    assert.match(web.stderr(), /caught SIGHUP, reloading/);
    assert.equal(await leavesSigned(httpAddr), signed + 1, 'no new leaf was signed');

    assert.ok(await echo(l4, 'after\n'), 'the L4 connection stopped working after the reload');
    assert.equal(l4Closed, false);
    const second = await get(port(web, 'upstream.api'), '/two', keepAlive);
    assert.equal(second.status, 200);
    assert.equal(second.socket, socket, 'the keep-alive connection was not reused');
    assert.ok(second.reused);
    assert.equal(web.child.exitCode, null);
    // New connections get the same service as before.
    assert.ok((await waitUntilEchoes(port(web, 'upstream.db'), 2000)) >= 0);
    l4.destroy();
    keepAlive.destroy();
  });
});

describe('reload() catches up at once after an agent outage, without waiting out the backoff', () => {
  let dir: string;
  let agent: Agent;
  let proxy: SidecarProxy;
  let app: EchoApp;
  let agentPort: number;
  const lines: string[] = [];

  const newAgent = (): Agent => new Agent({ host: '127.0.0.1', port: agentPort, dataDir: join(dir, 'agent'), datacenter: 'dc1', defaultAllow: false, dev: true, caTickIntervalMs: 3_600_000 });

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-resync-'));
    agentPort = await freePort();
    agent = newAgent();
    await agent.start();
    await putConfig(`127.0.0.1:${agentPort}`, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] });
    app = await startEchoApp();
    proxy = new SidecarProxy({
      service: 'api',
      serviceAddr: { host: '127.0.0.1', port: app.port },
      listen: { host: '127.0.0.1', port: 0 },
      upstreams: [],
      client: new AgentClient(new URL(`http://127.0.0.1:${agentPort}`)),
      workers: 1,
      metricsAddr: null,
      register: false,
      log: (line) => lines.push(line),
      // The longest backoff every time: 1 s, 2 s, 4 s, 8 s ...
      random: () => 0.999,
    });
  });

  after(async () => {
    await proxy?.stop();
    await agent?.stop();
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a deny written while the watches back off applies on reload(), seconds before the next retry', async () => {
    const inbound = (await proxy.start()).inbound as { host: string; port: number };
    const http = `127.0.0.1:${agentPort}`;
    const { csrPem, keyPem } = await createLeafCsr(serviceSpiffeId(agent.trustDomain, 'default', 'dc1', 'web'));
    const leaf = (await (await fetch(`http://${http}/v1/connect/ca/sign`, { method: 'POST', body: JSON.stringify({ CSR: csrPem }) })).json()) as { CertPEM: string };
    const roots = (await (await fetch(`http://${http}/v1/connect/ca/roots`)).json()) as { Roots: { RootCert: string }[] };
    /** One mTLS connection as web: true when the app's echo comes back. */
    const echoes = (): Promise<boolean> =>
      new Promise((resolve) => {
        const s = tls.connect({ host: inbound.host, port: inbound.port, key: keyPem, cert: leaf.CertPEM, ca: roots.Roots.map((r) => r.RootCert), checkServerIdentity: () => undefined });
        const done = (ok: boolean): void => {
          clearTimeout(t);
          s.destroy();
          resolve(ok);
        };
        const t = setTimeout(() => done(false), 1000);
        s.on('secureConnect', () => s.write('ping'));
        s.on('data', () => done(true));
        s.on('error', () => done(false));
        s.on('close', () => done(false));
      });
    await until('web -> api echoes', echoes, 5000);

    // The agent goes away: every watch fails and backs off (1 s, 2 s, then 4 s).
    await agent.stop();
    await until('third failure of the intentions watch', () => lines.some((l) => /watch intentions failed \(3 in a row\), retrying in 399\d ms/.test(l)), 8000);
    const backingOffSince = performance.now();
    agent = newAgent();
    await agent.start();
    const deny = await fetch(`http://${http}/v1/connect/intentions/exact?source=web&destination=api`, { method: 'PUT', body: JSON.stringify({ Action: 'deny' }) });
    assert.equal(deny.status, 200);

    const report = await proxy.reload();
    assert.equal(report.failedWatches, 0, lines.join('\n'));
    assert.ok(report.watches >= 3, `only ${report.watches} watches`);
    assert.equal(report.leaf, true);
    assert.equal(await echoes(), false, 'the deny was not applied by the reload');
    const elapsed = performance.now() - backingOffSince;
    assert.ok(elapsed < 3500, `caught up ${Math.round(elapsed)} ms into a 4 s backoff: not sooner than the retry would have`);
  });
});

describe('agent reload: SIGHUP and PUT /v1/agent/reload read a rotated management token file', () => {
  let dir: string;
  let agent: MeshdProcess;
  let httpAddr: string;
  let tokenPath: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-agent-reload-'));
    agent = await startMeshd(['agent', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    httpAddr = agent.fields.http as string;
    tokenPath = join(dir, 'agent', 'acl-management-token');
  });

  after(async () => {
    await agent?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const status = async (method: string, path: string, token?: string): Promise<number> =>
    (await fetch(`http://${httpAddr}${path}`, { method, headers: token === undefined ? {} : { 'x-consul-token': token } })).status;
  const operatorRead = (token?: string): Promise<number> => status('GET', '/v1/connect/ca/configuration', token);
  const rotate = (token: string): void => {
    writeFileSync(tokenPath, `${token}\n`);
    chmodSync(tokenPath, 0o600);
  };

  test('SIGHUP: the new token works at once, the old one is refused', async () => {
    const first = readFileSync(tokenPath, 'utf8').trim();
    assert.equal(await operatorRead(first), 200);
    rotate('11111111-2222-3333-4444-555555555555');
    assert.equal(await operatorRead(first), 200, 'rotated before any reload');
    agent.child.kill('SIGHUP');
    await until('agent reload logged', () => /agent: reloaded: management token read again/.test(agent.stderr()), 5000);
    assert.equal(await operatorRead('11111111-2222-3333-4444-555555555555'), 200);
    assert.equal(await operatorRead(first), 403);
    assert.equal(agent.child.exitCode, null);
  });

  test('PUT /v1/agent/reload: management token only; a bad token file fails it and changes nothing', async () => {
    const current = '11111111-2222-3333-4444-555555555555';
    const next = '66666666-7777-8888-9999-000000000000';
    rotate(next);
    assert.equal(await status('PUT', '/v1/agent/reload'), 403, 'reload without a token');
    assert.equal(await operatorRead(next), 403, 'the anonymous reload took effect');
    const token = (await (await fetch(`http://${httpAddr}/v1/acl/token`, { method: 'PUT', headers: { 'x-consul-token': current }, body: JSON.stringify({ ServiceIdentities: [{ ServiceName: 'web' }] }) })).json()) as { SecretID: string };
    assert.equal(await status('PUT', '/v1/agent/reload', token.SecretID), 403, 'reload with a service token');
    assert.equal(await status('GET', '/v1/agent/reload', current), 405);
    assert.equal(await status('PUT', '/v1/agent/reload', current), 200);
    assert.equal(await operatorRead(next), 200);
    assert.equal(await operatorRead(current), 403);

    writeFileSync(tokenPath, '\n');
    const r = await fetch(`http://${httpAddr}/v1/agent/reload`, { method: 'PUT', headers: { 'x-consul-token': next } });
    assert.equal(r.status, 500);
    assert.match(await r.text(), /reload failed: .*empty/);
    assert.equal(await operatorRead(next), 200, 'a failed reload changed the token');
  });
});
