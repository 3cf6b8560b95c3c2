// Root rotation under load: fixed-rate requests (a new connection each) plus long-lived
// connections pass through two sidecars while the root rotates EC P-256 → EC P-384 and then
// EC → RSA 2048. Zero requests may fail, and afterwards every leaf in use chains to the new
// root alone.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { meshd } from '../helpers/cli.ts';
import { echoOnce, startEchoApp, waitUntilEchoes, type EchoApp } from '../helpers/net.ts';

interface Roots {
  ActiveRootID: string;
  Roots: { ID: string; RootCert: string; Active: boolean; PrivateKeyType: string; PrivateKeyBits: number; IntermediateCerts: string[] | null }[];
}

let dir: string;
let agent: MeshdProcess;
let api: MeshdProcess;
let web: MeshdProcess;
let app: EchoApp;
let http: string;
let upstreamPort: number;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshd-rotation-'));
  agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
  http = agent.fields.http as string;
  app = await startEchoApp();
  const common = ['-workers', '1', '-http-addr', http, '-ca-change-jitter', '1s'];
  api = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', ...common]);
  web = await startMeshd(['connect', 'proxy', '-service', 'web', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-upstream', 'api:0', ...common]);
  upstreamPort = Number((web.fields['upstream.api'] as string).split(':')[1]);
  assert.equal((await meshd(['intention', 'create', '-allow', '-http-addr', http, 'web', 'api'])).code, 0);
  assert.ok((await waitUntilEchoes(upstreamPort, 5000)) >= 0);
});

after(async () => {
  await Promise.all([web?.stop(), api?.stop()]);
  await agent?.stop();
  await app?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function roots(): Promise<Roots> {
  return (await (await fetch(`http://${http}/v1/connect/ca/roots`)).json()) as Roots;
}

/**
 * A persistent connection doing ping-pong (next message once the echo is back, 20 ms apart)
 * until stopped. A failure is the connection breaking or an echo missing for 5 s: latency
 * under a loaded CI machine is not what this test is about.
 */
function longLived(): { stop: () => Promise<{ ok: number; failed: number }> } {
  let ok = 0;
  let failed = 0;
  let running = true;
  let pending = '';
  let buf = '';
  let sentAt = 0;
  const s = net.connect({ host: '127.0.0.1', port: upstreamPort });
  s.setEncoding('utf8');
  const send = (): void => {
    if (!running) return;
    pending = `#${ok}#`;
    sentAt = performance.now();
    s.write(pending);
  };
  s.on('connect', send);
  s.on('data', (d: string) => {
    buf += d;
    if (pending !== '' && buf.includes(pending)) {
      ok++;
      buf = '';
      pending = '';
      setTimeout(send, 20);
    }
  });
  s.on('error', () => undefined);
  s.on('close', () => {
    if (running) failed++;
  });
  const watchdog = setInterval(() => {
    if (pending !== '' && performance.now() - sentAt > 5000) {
      failed++;
      pending = '';
    }
  }, 250);
  return {
    stop: async () => {
      // Let an echo in flight come back before judging.
      for (let i = 0; i < 100 && pending !== ''; i++) await new Promise((r) => setTimeout(r, 50));
      running = false;
      clearInterval(watchdog);
      if (pending !== '') failed++;
      s.destroy();
      return { ok, failed };
    },
  };
}

/** New connection per request at a fixed rate; returns counts when stopped. */
function fixedRate(perSecond: number): { stop: () => Promise<{ ok: number; failed: number }> } {
  let ok = 0;
  let failed = 0;
  const inflight = new Set<Promise<void>>();
  let i = 0;
  const timer = setInterval(() => {
    const msg = `r${i++}`;
    const p = echoOnce(upstreamPort, msg, 3000).then((got) => {
      if (got === msg) ok++;
      else failed++;
    });
    inflight.add(p);
    void p.finally(() => inflight.delete(p));
  }, 1000 / perSecond);
  return {
    stop: async () => {
      clearInterval(timer);
      await Promise.all(inflight);
      return { ok, failed };
    },
  };
}

async function rotate(config: Record<string, unknown>): Promise<string> {
  const before = await roots();
  const r = await fetch(`http://${http}/v1/connect/ca/configuration`, { method: 'PUT', body: JSON.stringify({ Provider: 'consul', Config: config }) });
  assert.equal(r.status, 200, await r.text());
  const after = await roots();
  assert.notEqual(after.ActiveRootID, before.ActiveRootID, 'the root did not rotate');
  const active = after.Roots.find((x) => x.Active);
  assert.equal(active?.IntermediateCerts?.length, 1, 'the new root carries the cross-signed certificate');
  // Jitter is 1 s and the renewal check runs every second; give every proxy time to re-issue.
  await new Promise((res) => setTimeout(res, 3500));
  return after.ActiveRootID;
}

function presentedLeaf(addr: string): string {
  const out = execFileSync('sh', ['-c', `openssl s_client -connect ${addr} -showcerts </dev/null 2>/dev/null || true`]).toString();
  const leaf = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(out)?.[0];
  assert.ok(leaf !== undefined, `no certificate from ${addr}`);
  return `${leaf}\n`;
}

test('rotating EC→EC and EC→RSA under load fails no request, and leaves end on the new root', async () => {
  const load = fixedRate(50);
  const conns = Array.from({ length: 3 }, () => longLived());
  await new Promise((r) => setTimeout(r, 500));

  await rotate({ PrivateKeyType: 'ec', PrivateKeyBits: 384 });
  const finalId = await rotate({ PrivateKeyType: 'rsa', PrivateKeyBits: 2048 });

  const results = await Promise.all([load.stop(), ...conns.map((c) => c.stop())]);
  const [rate, ...lived] = results;
  assert.equal(rate?.failed, 0, `fixed-rate requests failed: ${JSON.stringify(rate)}`);
  assert.ok((rate?.ok ?? 0) > 200, `too few requests: ${JSON.stringify(rate)}`);
  for (const l of lived) {
    assert.equal(l.failed, 0, `long-lived connection lost echoes: ${JSON.stringify(l)}`);
    assert.ok(l.ok > 20);
  }

  const state = await roots();
  assert.equal(state.ActiveRootID, finalId);
  assert.equal(state.Roots.length, 3, 'rotated-out roots stay trusted until pruned');
  const active = state.Roots.find((x) => x.Active);
  assert.equal(active?.PrivateKeyType, 'rsa');
  const d = mkdtempSync(join(tmpdir(), 'meshd-rot-verify-'));
  try {
    writeFileSync(join(d, 'new-root.pem'), active?.RootCert ?? '');
    for (const p of [api, web]) {
      writeFileSync(join(d, 'leaf.pem'), presentedLeaf(p.fields.inbound as string));
      const v = execFileSync('openssl', ['verify', '-CAfile', join(d, 'new-root.pem'), join(d, 'leaf.pem')]).toString();
      assert.match(v, /leaf\.pem: OK/);
    }
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});
