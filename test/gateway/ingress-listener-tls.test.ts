// IngressHttpListener with TLS, in process: the handshake timeout closes a silent client and
// counts it (`timeout`), plain HTTP on the TLS port counts as `protocol`, and
// updateCertificate() changes what the next handshake presents. Certificates: openssl CLI.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { IngressHttpListener } from '../../src/gateway/ingress-listener.ts';
import { allocateCounters, counterBlock, handshakeSlot } from '../../src/metrics/counters.ts';
import { allocateL7, l7Block } from '../../src/metrics/l7.ts';
import type { IngressCertificate, TlsMaterial } from '../../src/workers/messages.ts';

function makeCert(dir: string, stem: string): IngressCertificate {
  const cert = join(dir, `${stem}.crt`);
  const key = join(dir, `${stem}.key`);
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=api.example.com', '-addext', 'subjectAltName=DNS:api.example.com'], { stdio: 'pipe' });
  return { certPem: readFileSync(cert, 'utf8'), keyPem: readFileSync(key, 'utf8') };
}

function peerFingerprint(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port, servername: 'api.example.com', rejectUnauthorized: false }, () => {
      resolve(s.getPeerCertificate().fingerprint256);
      s.destroy();
    });
    s.once('error', reject);
  });
}

async function until(check: () => boolean, limitMs = 3000): Promise<void> {
  const deadline = Date.now() + limitMs;
  while (!check()) {
    assert.ok(Date.now() < deadline, 'not within the limit');
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('a TLS ingress listener: handshake timeout and plain HTTP counted by reason; a new certificate for new connections', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-ingress-listener-'));
  const first = makeCert(dir, 'first');
  const second = makeCert(dir, 'second');
  // The mesh side (leaf and roots) only matters for requests that reach a service.
  const mesh: TlsMaterial = { keyPem: first.keyPem, certPem: first.certPem, caPems: [first.certPem], trustDomain: 'example.consul', uri: 'spiffe://example.consul/ns/default/dc/dc1/svc/ingress' };
  const counters = counterBlock(allocateCounters(1), 0);
  const l7 = allocateL7(1, 4);
  const l = new IngressHttpListener(
    { spec: { name: 'listener.0', host: '127.0.0.1', port: 0 }, counters, l7: l7Block(l7, 0, 4, 1), block: (b) => l7Block(l7, 0, 4, b), tls: { minVersion: 'TLSv1.3', certificate: first, handshakeTimeoutMs: 300 } },
    mesh,
    { services: [] },
  );
  const port = await l.listen(0);
  try {
    // A client that connects and says nothing is cut at the handshake timeout.
    const silent = net.connect(port, '127.0.0.1');
    silent.on('error', () => undefined);
    const started = Date.now();
    await new Promise<void>((resolve) => silent.once('close', () => resolve()));
    const waited = Date.now() - started;
    assert.ok(waited >= 250 && waited < 2500, `closed after ${waited} ms`);
    await until(() => (counters[handshakeSlot('timeout')] as number) === 1);

    // Plain HTTP: no HTTP answer, counted as a protocol failure.
    const plain = net.connect(port, '127.0.0.1', () => plain.write('GET / HTTP/1.1\r\nHost: api.example.com\r\n\r\n'));
    let answer = '';
    plain.on('data', (d: Buffer) => (answer += d.toString('latin1')));
    plain.on('error', () => undefined);
    await new Promise<void>((resolve) => plain.once('close', () => resolve()));
    assert.doesNotMatch(answer, /^HTTP\//);
    await until(() => (counters[handshakeSlot('protocol')] as number) === 1);

    // The next handshake after updateCertificate() presents the new certificate.
    assert.equal(await peerFingerprint(port), new X509Certificate(first.certPem).fingerprint256);
    l.updateCertificate(second);
    assert.equal(await peerFingerprint(port), new X509Certificate(second.certPem).fingerprint256);
  } finally {
    await l.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
