// Leaf renewal on an injected clock, in seconds of real time: an in-process agent and
// sidecar share a clock the test moves. Before 60 % of the leaf's life nothing happens; past
// it the sidecar re-issues, the new certificate goes into the live listener, and a TLS
// connection opened before the renewal keeps working (no listener restart, nothing dropped).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tls from 'node:tls';
import { Agent } from '../../src/control/agent.ts';
import { AgentClient } from '../../src/control/client.ts';
import { SidecarProxy } from '../../src/control/proxy.ts';
import { createLeafCsr } from '../../src/ca/authority.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import { startEchoApp, type EchoApp } from '../helpers/net.ts';

const LEAF_TTL_MS = 72 * 3_600_000;
let t = Date.now();
const now = (): number => t;

let agent: Agent;
let proxy: SidecarProxy;
let app: EchoApp;
let inbound: { host: string; port: number };
let http: string;

before(async () => {
  agent = new Agent({ host: '127.0.0.1', port: 0, dataDir: null, datacenter: 'dc1', defaultAllow: false, dev: true, now });
  await agent.start();
  http = `127.0.0.1:${agent.address.port}`;
  const allow = await fetch(`http://${http}/v1/connect/intentions/exact?source=web&destination=api`, { method: 'PUT', body: '{"Action":"allow"}' });
  assert.equal(allow.status, 200);
  app = await startEchoApp();
  proxy = new SidecarProxy({
    service: 'api',
    serviceAddr: { host: '127.0.0.1', port: app.port },
    listen: { host: '127.0.0.1', port: 0 },
    upstreams: [],
    client: new AgentClient(new URL(`http://${http}`)),
    workers: 1,
    metricsAddr: null,
    register: false,
    log: () => undefined,
    now,
    random: () => 0, // renew at exactly 60 % of the lifetime
    renewCheckMs: 25,
  });
  const addrs = await proxy.start();
  inbound = addrs.inbound as { host: string; port: number };
});

after(async () => {
  await proxy?.stop();
  await agent?.stop();
  await app?.close();
});

/** The serial of the certificate the sidecar presents right now. */
function presentedSerial(): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: inbound.host, port: inbound.port, rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().serialNumber);
      s.destroy();
    });
    s.on('error', reject);
  });
}

async function until(cond: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = performance.now() + ms;
  while (performance.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 25));
  }
  return false;
}

test('the sidecar renews at 60 % of the leaf life into its live listener, keeping open connections', async () => {
  const { csrPem, keyPem } = await createLeafCsr(serviceSpiffeId(agent.trustDomain, 'default', 'dc1', 'web'));
  const webLeaf = (await (await fetch(`http://${http}/v1/connect/ca/sign`, { method: 'POST', body: JSON.stringify({ CSR: csrPem }) })).json()) as { CertPEM: string };
  const roots = (await (await fetch(`http://${http}/v1/connect/ca/roots`)).json()) as { Roots: { RootCert: string }[] };
  const conn = tls.connect({ host: inbound.host, port: inbound.port, key: keyPem, cert: webLeaf.CertPEM, ca: roots.Roots.map((r) => r.RootCert), checkServerIdentity: () => undefined });
  const echo = (msg: string): Promise<string> =>
    new Promise((resolve) => {
      conn.once('data', (d: Buffer) => resolve(d.toString()));
      conn.write(msg);
    });
  await new Promise<void>((resolve) => conn.once('secureConnect', () => resolve()));
  assert.equal(await echo('before'), 'before');

  const first = await presentedSerial();
  t += 0.59 * LEAF_TTL_MS;
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(await presentedSerial(), first, 'renewed before 60 % of the lifetime');

  t += 0.02 * LEAF_TTL_MS;
  assert.ok(await until(async () => (await presentedSerial()) !== first, 5000), 'not renewed after 60 % of the lifetime');
  assert.match(proxy.metricsText(), /meshd_leaf_expiry_seconds\{service="api"\} 25\d{4}/, 'expiry measured on the injected clock, from the new leaf');

  assert.equal(await echo('after'), 'after', 'the connection opened before the renewal still works');
  conn.destroy();
});
