// End to end, with real processes started from the CLI, real mTLS over loopback sockets
// and real third-party tools (openssl): an agent, an `api` echo app behind its sidecar,
// and a `web` sidecar with an upstream to api.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { createLeafCsr, generateRoot, signLeafCsr } from '../../src/ca/authority.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import { meshd } from '../helpers/cli.ts';
import { echoOnce, scrape, scrapeUntil, startEchoApp, total, waitUntilEchoes, waitUntilRefused, type EchoApp, type Samples } from '../helpers/net.ts';

interface Roots {
  ActiveRootID: string;
  TrustDomain: string;
  Roots: { ID: string; RootCert: string; Active: boolean }[];
}

describe('a two-sidecar mesh', () => {
  let dir: string;
  let agent: MeshdProcess;
  let api: MeshdProcess;
  let web: MeshdProcess;
  let app: EchoApp;
  let http: string;
  let trustDomain: string;
  let upstreamPort: number;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-e2e-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    http = agent.fields.http as string;
    trustDomain = agent.fields['trust-domain'] as string;
    app = await startEchoApp();
    api = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '2', '-metrics-addr', '127.0.0.1:0', '-http-addr', http]);
    web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', '2', '-metrics-addr', '127.0.0.1:0', '--http-addr', `http://${http}`]);
    upstreamPort = Number((web.fields['upstream.api'] as string).split(':')[1]);
  });

  after(async () => {
    await Promise.all([web?.stop(), api?.stop()]);
    await agent?.stop();
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the root is an EC P-256 SPIFFE CA, served as JSON and PEM', async () => {
    const roots = (await (await fetch(`http://${http}/v1/connect/ca/roots`)).json()) as Roots;
    assert.equal(roots.TrustDomain, trustDomain);
    assert.match(roots.TrustDomain, /^[0-9a-f-]{36}\.consul$/);
    assert.equal(roots.Roots.length, 1);
    assert.equal(roots.Roots[0]?.ID, roots.ActiveRootID);
    const pem = await (await fetch(`http://${http}/v1/connect/ca/roots?pem=true`)).text();
    const text = execFileSync('openssl', ['x509', '-noout', '-text'], { input: pem }).toString();
    assert.match(text, /ASN1 OID: prime256v1/);
    assert.match(text, new RegExp(`URI:spiffe://${trustDomain}\\s`));
    assert.match(text, /CA:TRUE/);
  });

  test('default deny: no intention, the connection is closed and the app sees nothing', async () => {
    const before = app.connections();
    assert.equal(await echoOnce(upstreamPort, 'hello'), '');
    assert.equal(app.connections(), before);
    const m = await scrape(api.fields.metrics as string);
    assert.ok(total(m, 'meshd_connections_denied_total', { reason: 'intention' }) >= 1);
    const check = await meshd(['intention', 'check', '-http-addr', http, 'web', 'api']);
    assert.equal(check.stdout.trim(), 'Denied');
    assert.equal(check.code, 1);
  });

  test('an allow intention takes effect within a second, with nothing restarted', async () => {
    const created = await meshd(['intention', 'create', '-allow', '-http-addr', http, 'web', 'api']);
    assert.equal(created.code, 0, created.stderr);
    const elapsed = await waitUntilEchoes(upstreamPort, 5000);
    assert.ok(elapsed >= 0, 'never allowed');
    assert.ok(elapsed < 1000, `took ${elapsed} ms`);
    assert.equal(await echoOnce(upstreamPort, 'through the mesh'), 'through the mesh');
    const check = await meshd(['intention', 'check', '-http-addr', http, 'web', 'api']);
    assert.equal(check.stdout.trim(), 'Allowed');
    assert.equal(check.code, 0);
    const list = await meshd(['intention', 'list', '-http-addr', http]);
    assert.match(list.stdout, /web\s+allow\s+api\s+9/);
  });

  test('the sidecars present leaves openssl verifies against the roots PEM', async () => {
    const pem = await (await fetch(`http://${http}/v1/connect/ca/roots?pem=true`)).text();
    const inbound = api.fields.inbound as string;
    // s_client prints the server's certificate even though it has no client certificate.
    const out = execFileSync('sh', ['-c', `openssl s_client -connect ${inbound} -showcerts </dev/null 2>/dev/null || true`]).toString();
    const leaf = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/.exec(out)?.[0];
    assert.ok(leaf !== undefined, 'no certificate from s_client');
    const d = mkdtempSync(join(tmpdir(), 'meshd-verify-'));
    try {
      writeFileSync(join(d, 'roots.pem'), pem);
      writeFileSync(join(d, 'leaf.pem'), `${leaf}\n`);
      const verify = execFileSync('openssl', ['verify', '-purpose', 'sslserver', '-CAfile', join(d, 'roots.pem'), join(d, 'leaf.pem')]).toString();
      assert.match(verify, /leaf\.pem: OK/);
      const text = execFileSync('openssl', ['x509', '-noout', '-text', '-in', join(d, 'leaf.pem')]).toString();
      assert.match(text, new RegExp(`URI:spiffe://${trustDomain}/ns/default/dc/dc1/svc/api\\s`));
      assert.match(text, /TLS Web Client Authentication/);
      assert.match(text, /TLS Web Server Authentication/);
      assert.match(text, /CA:FALSE/);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  test('a client certificate from a foreign CA claiming our trust domain is refused at the handshake', async () => {
    const root = await generateRoot({ clusterId: trustDomain.replace(/\.consul$/, ''), now: new Date() });
    const { csrPem, keyPem } = await createLeafCsr(serviceSpiffeId(trustDomain, 'default', 'dc1', 'web'));
    const leaf = await signLeafCsr({ csrPem, root, trustDomain, datacenter: 'dc1', now: new Date() });
    const roots = (await (await fetch(`http://${http}/v1/connect/ca/roots`)).json()) as Roots;
    const before = app.connections();
    const beforeMetrics = await scrape(api.fields.metrics as string);
    const [host, port] = (api.fields.inbound as string).split(':');
    const result = await new Promise<string>((resolve) => {
      const s = tls.connect({ host, port: Number(port), key: keyPem, cert: leaf.CertPEM, ca: roots.Roots.map((r) => r.RootCert), checkServerIdentity: () => undefined });
      let got = '';
      s.on('secureConnect', () => s.write('let me in'));
      s.on('data', (d: Buffer) => (got += d.toString()));
      s.on('error', () => undefined);
      s.on('close', () => resolve(got));
      setTimeout(() => s.destroy(), 2000);
    });
    assert.equal(result, '');
    assert.equal(app.connections(), before);
    const failures = (s: Samples): number => total(s, 'meshd_tls_handshake_failures_total') - total(beforeMetrics, 'meshd_tls_handshake_failures_total');
    const m = await scrapeUntil(api.fields.metrics as string, (s) => failures(s) >= 1);
    assert.equal(failures(m), 1);
  });

  test('outbound: a valid chain carrying another service identity is refused', async () => {
    // An impostor registered as an instance of "payments", holding a genuine mesh leaf for "evil".
    const { csrPem, keyPem } = await createLeafCsr(serviceSpiffeId(trustDomain, 'default', 'dc1', 'evil'));
    const signed = (await (await fetch(`http://${http}/v1/connect/ca/sign`, { method: 'POST', body: JSON.stringify({ CSR: csrPem }) })).json()) as { CertPEM: string };
    const roots = (await (await fetch(`http://${http}/v1/connect/ca/roots`)).json()) as Roots;
    let impostorSawData = false;
    const impostor = tls.createServer({ key: keyPem, cert: signed.CertPEM, ca: roots.Roots.map((r) => r.RootCert), requestCert: true }, (s) => {
      s.on('data', () => (impostorSawData = true));
      s.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => impostor.listen({ host: '127.0.0.1', port: 0 }, resolve));
    const impostorPort = (impostor.address() as { port: number }).port;
    const reg = await fetch(`http://${http}/v1/agent/service/register`, {
      method: 'PUT',
      body: JSON.stringify({ Name: 'payments-proxy', ID: 'payments-impostor', Kind: 'connect-proxy', Address: '127.0.0.1', Port: impostorPort, Proxy: { DestinationServiceName: 'payments' } }),
    });
    assert.equal(reg.status, 200);
    await meshd(['intention', 'create', '-allow', '-http-addr', http, 'web', 'payments']);
    const client = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'payments:0', '-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http]);
    try {
      const port = Number((client.fields['upstream.payments'] as string).split(':')[1]);
      assert.equal(await echoOnce(port, 'secret'), '');
      const m = await scrape(client.fields.metrics as string);
      assert.equal(total(m, 'meshd_connections_denied_total', { reason: 'upstream_identity_mismatch' }), 1);
      assert.equal(impostorSawData, false);
    } finally {
      await client.stop();
      impostor.close();
    }
  });

  test('connections spread over both workers, and metrics sum them', async () => {
    const before = await scrape(web.fields.metrics as string);
    const results = await Promise.all(Array.from({ length: 40 }, (_v, i) => echoOnce(upstreamPort, `m${i}`)));
    assert.deepEqual(results, Array.from({ length: 40 }, (_v, i) => `m${i}`));
    // Bytes are added when a connection closes; wait until the proxy has closed them all.
    let m = await scrape(web.fields.metrics as string);
    for (let i = 0; i < 100 && total(m, 'meshd_connections_active', { direction: 'outbound' }) !== 0; i++) {
      await new Promise((r) => setTimeout(r, 20));
      m = await scrape(web.fields.metrics as string);
    }
    const perWorker = [0, 1].map((w) => total(m, 'meshd_worker_connections_accepted_total', { worker: String(w) }) - total(before, 'meshd_worker_connections_accepted_total', { worker: String(w) }));
    assert.equal(perWorker[0]! + perWorker[1]!, 40);
    assert.ok(perWorker[0]! > 0 && perWorker[1]! > 0, `all on one worker: ${perWorker.join('/')}`);
    // Bytes: "m0".."m39" is 2*10 + 3*30 = 110 bytes each way.
    const rx = total(m, 'meshd_bytes_received_total', { direction: 'outbound' }) - total(before, 'meshd_bytes_received_total', { direction: 'outbound' });
    assert.equal(rx, 110);
  });

  test('live enforcement: an open connection that a new intention denies is closed within a second', async () => {
    const s = net.connect({ host: '127.0.0.1', port: upstreamPort });
    s.setEncoding('utf8');
    const echoed = await new Promise<string>((resolve) => {
      s.once('data', (d: string) => resolve(d));
      s.write('still here?');
    });
    assert.equal(echoed, 'still here?');
    const closed = new Promise<number>((resolve) => s.once('close', () => resolve(performance.now())));
    s.on('error', () => undefined);
    const before = await scrape(api.fields.metrics as string);
    const denied = await meshd(['intention', 'create', '-deny', '-replace', '-http-addr', http, 'web', 'api']);
    assert.equal(denied.code, 0, denied.stderr);
    const deniedAt = performance.now();
    const closedAt = await Promise.race([closed, new Promise<number>((r) => setTimeout(() => r(-1), 3000))]);
    assert.ok(closedAt > 0, 'the open connection was not closed');
    assert.ok(closedAt - deniedAt < 1000, `closed ${Math.round(closedAt - deniedAt)} ms after the CLI returned`);
    const m = await scrape(api.fields.metrics as string);
    assert.equal(total(m, 'meshd_connections_denied_total', { reason: 'late_rejection' }) - total(before, 'meshd_connections_denied_total', { reason: 'late_rejection' }), 1);
    await meshd(['intention', 'create', '-allow', '-replace', '-http-addr', http, 'web', 'api']);
    assert.ok((await waitUntilEchoes(upstreamPort, 5000)) >= 0);
  });

  test('deny, then delete: new connections stop', async () => {
    const denied = await meshd(['intention', 'create', '-deny', '-replace', '-http-addr', http, 'web', 'api']);
    assert.equal(denied.code, 0, denied.stderr);
    assert.ok((await waitUntilRefused(upstreamPort, 5000)) >= 0);
    await meshd(['intention', 'create', '-allow', '-replace', '-http-addr', http, 'web', 'api']);
    assert.ok((await waitUntilEchoes(upstreamPort, 5000)) >= 0);
    const del = await meshd(['intention', 'delete', '-http-addr', http, 'web', 'api']);
    assert.equal(del.code, 0, del.stderr);
    assert.ok((await waitUntilRefused(upstreamPort, 5000)) >= 0);
  });

  test('an agent restart on the same data dir keeps the root', async () => {
    const roots = (await (await fetch(`http://${http}/v1/connect/ca/roots`)).json()) as Roots;
    const second = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent2')]);
    const otherRoots = (await (await fetch(`http://${second.fields.http}/v1/connect/ca/roots`)).json()) as Roots;
    await second.stop();
    assert.notEqual(otherRoots.ActiveRootID, roots.ActiveRootID, 'two fresh agents must not share a root');
    const again = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent2')]);
    try {
      const after = (await (await fetch(`http://${again.fields.http}/v1/connect/ca/roots`)).json()) as Roots;
      assert.equal(after.ActiveRootID, otherRoots.ActiveRootID);
      assert.equal(after.TrustDomain, otherRoots.TrustDomain);
    } finally {
      await again.stop();
    }
  });
});
