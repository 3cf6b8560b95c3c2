// Shared fixtures for the CA tests: a fixed clock, hand-made CSRs and certificates (built
// directly with @peculiar/x509 so tests can create shapes our own code refuses to), and
// thin wrappers around the openssl CLI.

import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { webcrypto } from 'node:crypto';
import tls from 'node:tls';
import { once } from 'node:events';
import { pemEncode } from '../../src/ca/certs.ts';
import { readCertIdentity } from '../../src/ca/der.ts';

x509.cryptoProvider.set(webcrypto);

/** A fixed, whole-second instant for hermetic tests. */
export const NOW = new Date('2026-03-01T12:00:00Z');
export const CLUSTER_ID = '11111111-2222-3333-4444-555555555555';
export const TD = `${CLUSTER_ID}.consul`;
export const DC = 'dc1';
export const WEB_URI = `spiffe://${TD}/ns/default/dc/${DC}/svc/web`;

type SanEntry = { type: 'url' | 'dns' | 'email' | 'ip'; value: string };

/**
 * Builds a CSR with exactly the SANs given (none: no SAN extension at all), signed by a
 * fresh key on the given curve.
 */
export async function makeCsr(sans: SanEntry[], curve: 'P-256' | 'P-384' = 'P-256'): Promise<string> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: curve }, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: '',
    keys,
    signingAlgorithm: { name: 'ECDSA', hash: curve === 'P-256' ? 'SHA-256' : 'SHA-384' },
    extensions: sans.length === 0 ? [] : [new x509.SubjectAlternativeNameExtension(sans, true)],
  });
  return pemEncode('CERTIFICATE REQUEST', new Uint8Array(csr.rawData));
}

/** Builds a throwaway self-signed certificate with arbitrary extensions; returns its DER. */
export async function makeCert(extensions: x509.Extension[]): Promise<Uint8Array> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=test',
    notBefore: NOW,
    notAfter: new Date(NOW.getTime() + 3_600_000),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    keys,
    extensions,
  });
  return new Uint8Array(cert.rawData);
}

export { x509 };

/** A temporary directory removed by the returned cleanup. */
export function tempDir(): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-ca-test-'));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

export function writeFile(dir: string, name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

/** `openssl x509 -text -noout` of a PEM certificate. */
export function opensslText(pem: string): string {
  return execFileSync('openssl', ['x509', '-text', '-noout'], { input: pem, encoding: 'utf8' });
}

/** Runs `openssl verify`, returning its exit status and combined output (never throws). */
export function opensslVerify(args: string[]): { status: number; out: string } {
  try {
    const out = execFileSync('openssl', ['verify', ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    return { status: 0, out };
  } catch (err) {
    const e = err as { status?: number; stdout?: string; stderr?: string };
    return { status: e.status ?? -1, out: `${e.stdout ?? ''}${e.stderr ?? ''}` };
  }
}

/** The text following `label` in openssl -text output, up to the next extension header. */
export function opensslSection(text: string, label: string): string {
  const i = text.indexOf(label);
  if (i < 0) return '';
  const rest = text.slice(i);
  const lines = rest.split('\n');
  const out = [lines[0] ?? ''];
  for (const line of lines.slice(1)) {
    if (/^\s*X509v3 |^\s*Signature Algorithm|^\s*Signature Value/.test(line)) break;
    out.push(line);
  }
  return out.join('\n');
}

/** `openssl verify -attime` value an hour after NOW, inside every NOW-based cert's validity. */
export const AT_TIME = String(Math.floor(NOW.getTime() / 1000) + 3600);

/** The PEM certificate blocks of a bundle, each newline-terminated. */
export function pemBlocks(text: string): string[] {
  return text.match(/-----BEGIN CERTIFICATE-----\n[\s\S]*?-----END CERTIFICATE-----\n/g) ?? [];
}

/** Runs the openssl CLI with `args` and returns stdout (throws on failure). */
export function openssl(args: string[], input?: string): string {
  return execFileSync('openssl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

export type TlsSide = { key: string; cert: string; ca: string[] };
export type HandshakeResult = {
  /** True when both sides finished the handshake with each other's chain verified. */
  ok: boolean;
  /** Why the server refused the client chain (OpenSSL's code), or null. */
  serverError: string | null;
  /** Why the client refused the server chain, or null. */
  clientError: string | null;
  /** URI SANs of the peer leaf as each side saw it. */
  serverSawClient: string[];
  clientSawServer: string[];
};

/**
 * One real mTLS handshake over 127.0.0.1 (port 0) with node:tls: both sides present
 * their `cert` (a leaf, optionally followed by a chain) and verify the other against `ca`
 * only. Hostname checks are off: identity is the URI SAN, read with readCertIdentity.
 */
export async function mtlsHandshake(server: TlsSide, client: TlsSide): Promise<HandshakeResult> {
  const uris = (raw: Buffer | undefined): string[] => (raw ? (readCertIdentity(raw)?.uris ?? []) : []);
  let serverError: string | null = null;
  let serverSawClient: string[] = [];
  const srv = tls.createServer({ key: server.key, cert: server.cert, ca: server.ca, requestCert: true, rejectUnauthorized: true }, (s) => {
    serverSawClient = uris(s.getPeerX509Certificate()?.raw);
    s.end('hello');
  });
  srv.on('tlsClientError', (err, s) => {
    serverError = String(s.authorizationError ?? err.message);
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  try {
    let clientError: string | null = null;
    let clientSawServer: string[] = [];
    let data = '';
    const sock = tls.connect({
      host: '127.0.0.1',
      port,
      key: client.key,
      cert: client.cert,
      ca: client.ca,
      checkServerIdentity: (_h, cert) => {
        clientSawServer = uris(cert.raw);
        return undefined;
      },
    });
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => (data += d));
    sock.on('error', (e: NodeJS.ErrnoException) => {
      clientError = e.code ?? e.message;
    });
    await once(sock, 'close');
    return { ok: data === 'hello' && serverError === null && clientError === null, serverError, clientError, serverSawClient, clientSawServer };
  } finally {
    srv.close();
  }
}
