// TLS on ingress listeners, end to end with real processes: an agent, an `api` HTTP app behind
// its sidecar, and `meshd connect gateway -ingress` with the operator's certificate for
// api.example.com (self-signed, made with the openssl CLI). The entry enables TLS gateway-wide
// with TLSMinVersion TLSv1_2, and one listener raises its own to TLSv1_3. Real clients: curl
// (trusting only that certificate, with --resolve so SNI and Host are api.example.com),
// `openssl s_client` limited to TLS 1.2, plain HTTP, and node:tls for fingerprints across a
// SIGHUP that swaps the certificate files.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request } from 'node:http';
import * as tls from 'node:tls';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { meshd } from '../helpers/cli.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';
import { scrapeUntil, total } from '../helpers/net.ts';
import { until } from '../helpers/until.ts';

/** A self-signed P-256 certificate for `cn` (also its DNS SAN), written as cert and key PEM. */
function makeCert(dir: string, stem: string, cn: string): { cert: string; key: string } {
  const cert = join(dir, `${stem}.crt`);
  const key = join(dir, `${stem}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', `/CN=${cn}`, '-addext', `subjectAltName=DNS:${cn}`], { stdio: 'pipe' });
  return { cert, key };
}

function fingerprint(certFile: string): string {
  return new X509Certificate(readFileSync(certFile)).fingerprint256;
}

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs a client program without blocking this process (the api app answers from it). */
function run(cmd: string, args: readonly string[]): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(cmd, args, { encoding: 'utf8', timeout: 15_000 }, (err, stdout, stderr) => {
      resolve({ code: err === null ? 0 : typeof err.code === 'number' ? err.code : 1, stdout, stderr });
    });
    child.stdin?.end();
  });
}

/** curl over HTTPS to host:port resolved to loopback, trusting only `ca` (null: -k). */
async function curl(port: number, ca: string | null, host = 'api.example.com', path = '/'): Promise<{ code: number; status: string; body: string; stderr: string }> {
  const trust = ca === null ? ['-k'] : ['--cacert', ca];
  const r = await run('curl', ['-sS', '--max-time', '10', ...trust, '--resolve', `${host}:${port}:127.0.0.1`, '-w', '\n%{http_code}', `https://${host}:${port}${path}`]);
  const out = r.stdout.split('\n');
  const status = out.pop() ?? '';
  return { code: r.code, status, body: out.join('\n'), stderr: r.stderr };
}

/** A TLS connection's certificate fingerprint, and the connection itself (for reuse). */
function connectTls(port: number): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'api.example.com', rejectUnauthorized: false }, () => resolve(s));
    s.once('error', reject);
  });
}

/** One HTTP/1.1 request over an open (TLS) socket; resolves with the status line. */
function requestOver(s: tls.TLSSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const onData = (d: Buffer): void => {
      got += d.toString('latin1');
      if (got.includes('\r\n\r\n')) {
        s.off('data', onData);
        resolve(got.split('\r\n')[0] ?? '');
      }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.write('GET /kept HTTP/1.1\r\nHost: api.example.com\r\n\r\n');
  });
}

describe('ingress gateway TLS listeners: the operator certificate, Host routing, min version, SIGHUP rotation', () => {
  let dir: string;
  let agent: MeshdProcess;
  let gateway: MeshdProcess;
  let sidecar: MeshdProcess;
  let api: HttpApp;
  let http: string;
  let certFile: string;
  let keyFile: string;
  let first: { cert: string; key: string };
  /** TLSMinVersion TLSv1_3 (the listener's own) and TLSv1_2 (the entry's). */
  let port13: number;
  let port12: number;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-ingress-tls-'));
    first = makeCert(dir, 'first', 'api.example.com');
    certFile = join(dir, 'tls.crt');
    keyFile = join(dir, 'tls.key');
    writeFileSync(certFile, readFileSync(first.cert));
    writeFileSync(keyFile, readFileSync(first.key));

    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0']);
    http = agent.fields.http as string;
    await putConfig(http, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(http, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'ingress', Action: 'allow' }] });
    api = await startApp('api');
    sidecar = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${api.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1', '-http-addr', http]);
    port12 = await freePort();
    const hcl = join(dir, 'ingress.hcl');
    writeFileSync(
      hcl,
      `Kind = "ingress-gateway"
Name = "ingress"
TLS {
  Enabled       = true
  TLSMinVersion = "TLSv1_2"
}
Listeners = [
  {
    Port     = 0
    Protocol = "http"
    TLS {
      TLSMinVersion = "TLSv1_3"
    }
    Services = [{ Name = "api", Hosts = ["api.example.com"] }]
  },
  {
    Port     = ${port12}
    Protocol = "http"
    Services = [{ Name = "api", Hosts = ["api.example.com"] }]
  },
]
`,
    );
    const w = await meshd(['config', 'write', '-http-addr', http, hcl]);
    assert.equal(w.code, 0, w.stderr);
    gateway = await startMeshd(['connect', 'gateway', '-ingress', '-service', 'ingress', '-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http, '-tls-cert-file', certFile, '-tls-key-file', keyFile]);
    port13 = Number((gateway.fields['listener.0'] as string).split(':')[1]);
    assert.equal(gateway.fields.tls, `listener.0,listener.${port12}`);
    let last = await curl(port13, first.cert);
    await until('api reachable over TLS', async () => (last = await curl(port13, first.cert)).status === '200').catch((e: Error) => {
      throw new Error(`${e.message}: last curl ${JSON.stringify(last)}; gateway stderr: ${gateway.stderr()}`);
    });
  });

  after(async () => {
    await gateway?.stop();
    await sidecar?.stop();
    await agent?.stop();
    await api?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('curl trusting only the operator certificate reaches api by SNI/Host; an unknown host is a 404 over TLS', async () => {
    const r = await curl(port13, first.cert, 'api.example.com', '/over-tls?x=1');
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.status, '200');
    const body = JSON.parse(r.body) as { instance: string; url: string; xfcc: string };
    assert.equal(body.instance, 'api');
    assert.equal(body.url, '/over-tls?x=1');
    // Still mTLS into the mesh as the gateway.
    assert.match(body.xfcc, /URI=spiffe:\/\/[^;]+\/svc\/ingress$/);
    // The certificate does not name other.example.com: curl refuses it (hostname check)...
    const bad = await curl(port13, first.cert, 'other.example.com');
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /no alternative certificate subject name matches|does not match/i);
    // ...and with verification off, no virtual host answers it.
    assert.equal((await curl(port13, null, 'other.example.com')).status, '404');
  });

  test('plain HTTP on the TLS port gets no HTTP answer, and the failed handshake is counted (protocol)', async () => {
    const outcome = await new Promise<string>((resolve) => {
      const req = request({ host: '127.0.0.1', port: port13, path: '/', headers: { host: 'api.example.com' }, timeout: 5000 }, (res) => resolve(`status ${String(res.statusCode)}`));
      req.on('error', (e) => resolve(`error ${e.message}`));
      req.on('timeout', () => req.destroy(new Error('timeout')));
      req.end();
    });
    assert.match(outcome, /^error /);
    assert.doesNotMatch(outcome, /timeout/, 'the connection is closed at once, not left hanging');
    const m = await scrapeUntil(gateway.fields.metrics as string, (s) => total(s, 'meshd_tls_handshake_failures_total', { reason: 'protocol' }) >= 1);
    assert.ok(total(m, 'meshd_tls_handshake_failures_total', { service: 'ingress', reason: 'protocol' }) >= 1);
    assert.ok(total(m, 'meshd_http_requests_total', { listener: '0', upstream: 'api', code_class: '2xx' }) >= 2);
  });

  test('TLSMinVersion TLSv1_3 refuses a TLS 1.2-only client; TLS 1.3 is served; the entry default TLSv1_2 elsewhere', async () => {
    const args = ['s_client', '-connect', `127.0.0.1:${port13}`, '-servername', 'api.example.com'];
    const v12 = await run('openssl', [...args, '-tls1_2']);
    assert.notEqual(v12.code, 0, `a TLS 1.2 handshake succeeded: ${v12.stdout}`);
    assert.match(v12.stdout + v12.stderr, /alert protocol version|no protocols available|wrong version|unsupported protocol/i);
    const v13 = await run('openssl', [...args, '-tls1_3']);
    assert.equal(v13.code, 0, v13.stderr);
    assert.match(v13.stdout, /^New, TLSv1\.3, Cipher is /m);
    // The other listener keeps the entry's TLSv1_2.
    const other12 = await run('openssl', ['s_client', '-connect', `127.0.0.1:${port12}`, '-servername', 'api.example.com', '-tls1_2']);
    assert.equal(other12.code, 0, other12.stderr);
    assert.match(other12.stdout, /^New, TLSv1\.2, Cipher is /m);
    assert.equal((await curl(port12, first.cert)).status, '200');
  });

  test('SIGHUP re-reads the files: new connections get the new certificate, an open one keeps its own; bad files keep the current one', async () => {
    const before = await connectTls(port13);
    assert.equal(before.getPeerCertificate().fingerprint256, fingerprint(first.cert));
    assert.match(await requestOver(before), /^HTTP\/1\.1 200/);

    const second = makeCert(dir, 'second', 'api.example.com');
    assert.notEqual(fingerprint(second.cert), fingerprint(first.cert));
    writeFileSync(certFile, readFileSync(second.cert));
    writeFileSync(keyFile, readFileSync(second.key));
    gateway.child.kill('SIGHUP');
    await until('reload logged', () => /TLS certificate read again from -tls-cert-file/.test(gateway.stderr()));
    const after = await connectTls(port13);
    assert.equal(after.getPeerCertificate().fingerprint256, fingerprint(second.cert));
    after.destroy();
    // The connection opened before the reload still serves, with the first certificate.
    assert.match(await requestOver(before), /^HTTP\/1\.1 200/);
    assert.equal(before.getPeerCertificate().fingerprint256, fingerprint(first.cert));
    before.destroy();
    // curl trusting the new certificate only.
    assert.equal((await curl(port13, second.cert)).status, '200');
    assert.notEqual((await curl(port13, first.cert)).code, 0, 'the old certificate is no longer presented');

    // A key that is not the certificate's: the reload keeps the second certificate, and says why.
    const third = makeCert(dir, 'third', 'api.example.com');
    writeFileSync(certFile, readFileSync(third.cert));
    writeFileSync(keyFile, readFileSync(first.key));
    gateway.child.kill('SIGHUP');
    await until('bad reload logged', () => /keeping the current TLS certificate: -tls-key-file \S+: the key does not match/.test(gateway.stderr()));
    const still = await connectTls(port13);
    assert.equal(still.getPeerCertificate().fingerprint256, fingerprint(second.cert));
    still.destroy();
    assert.doesNotMatch(gateway.stderr(), /PRIVATE KEY|BEGIN CERTIFICATE/, 'no PEM in the logs');
  });
});

describe('ingress gateway TLS: start-up refusals name the flags', () => {
  let dir: string;
  let agent: MeshdProcess;
  let http: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-ingress-tls-bad-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0']);
    http = agent.fields.http as string;
    await putConfig(http, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(http, { Kind: 'ingress-gateway', Name: 'edge', Listeners: [{ Port: 0, Protocol: 'http', TLS: { Enabled: true }, Services: [{ Name: 'api' }] }] });
  });

  after(async () => {
    await agent?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const start = (extra: string[]): ReturnType<typeof meshd> => meshd(['connect', 'gateway', '-ingress', '-service', 'edge', '-workers', '1', '-http-addr', http, ...extra]);

  test('a TLS listener without the files: the gateway does not start, and says which flags it needs', async () => {
    const r = await start([]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /enables TLS on the listener\(s\) on port 0: start the gateway with -tls-cert-file FILE and -tls-key-file FILE/);
    assert.equal(r.stdout, '', 'never ready');
  });

  test('one flag without the other, an unreadable file, a file that is not PEM, a key of another certificate', async () => {
    const good = makeCert(dir, 'good', 'api.example.com');
    const other = makeCert(dir, 'other', 'api.example.com');
    const junk = join(dir, 'junk.pem');
    writeFileSync(junk, 'not a certificate\n');
    let r = await start(['-tls-cert-file', good.cert]);
    assert.equal(r.code, 2, r.stderr);
    assert.match(r.stderr, /-tls-cert-file needs -tls-key-file: give both/);
    r = await start(['-tls-cert-file', join(dir, 'missing.crt'), '-tls-key-file', good.key]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /-tls-cert-file \S+missing\.crt: cannot read it: ENOENT/);
    r = await start(['-tls-cert-file', junk, '-tls-key-file', good.key]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /-tls-cert-file \S+junk\.pem: no PEM certificate in it/);
    r = await start(['-tls-cert-file', good.cert, '-tls-key-file', junk]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /-tls-key-file \S+junk\.pem: no PEM private key in it/);
    r = await start(['-tls-cert-file', good.cert, '-tls-key-file', other.key]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /-tls-key-file \S+other\.key: the key does not match the first certificate of -tls-cert-file/);
    assert.doesNotMatch(r.stderr, /BEGIN/, 'no PEM in the message');
  });
});
