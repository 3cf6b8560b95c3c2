// Hostile TLS peers against a real sidecar started from the CLI (issue 7, "Identity and TLS").
//
// Every class of bad client certificate is offered to the public listener with node:tls and
// must be refused at or right after the handshake, counted on the server side with its
// reason, and never reach the app: the echo app behind the sidecar sees no connection and no
// byte. In TLS 1.3 a client without (or with a refused) certificate finishes its side of the
// handshake before the server has decided, so nothing is asserted on the client's view
// except that nothing came back.
//
// The certificates are generated here with @peculiar/x509, signed by a root whose key the
// test holds: it is installed as the mesh CA through the Consul-compatible CA configuration
// API (bring-your-own root), so "a valid chain with a bad leaf" really is a valid chain.
//
// Also: TLS 1.3 only by default and TLS 1.2 with ECDHE+AEAD only by option, the handshake
// timeout and the per-worker cap on handshakes in progress, and, on the outbound side,
// upstream servers whose chain is valid but whose leaf is not the expected identity or not a
// TLS server certificate.

import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createPrivateKey, webcrypto } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { generateRoot, type RootMaterial } from '../../src/ca/authority.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { meshd } from '../helpers/cli.ts';
import { echoOnce, scrape, scrapeUntil, startEchoApp, total, type EchoApp, type Samples } from '../helpers/net.ts';

x509.cryptoProvider.set(webcrypto);

const HOUR = 3_600_000;
const HANDSHAKE_TIMEOUT_MS = 1000;
const MAX_HANDSHAKES = 4;

type Creds = { readonly cert: string; readonly key: string };
type Signer = { readonly key: webcrypto.CryptoKey; readonly name: x509.Name };

interface LeafSpec {
  /** Who signs: the mesh root (default), another root for the same trust domain, or the leaf itself. */
  readonly by?: 'mesh' | 'foreign' | 'self';
  readonly uris?: readonly string[];
  readonly dns?: readonly string[];
  readonly notBefore?: Date;
  readonly notAfter?: Date;
  readonly ca?: boolean;
  /** KeyUsage bits (x509.KeyUsageFlags); null: no KeyUsage extension. */
  readonly keyUsage?: number | null;
  /** EKU OIDs; null: no ExtendedKeyUsage extension. */
  readonly eku?: readonly string[] | null;
}

/** Our CA's leaf KeyUsage (src/ca/x509.ts): digitalSignature, keyEncipherment, dataEncipherment, keyAgreement. */
const LEAF_KU = x509.KeyUsageFlags.digitalSignature | x509.KeyUsageFlags.keyEncipherment | x509.KeyUsageFlags.dataEncipherment | x509.KeyUsageFlags.keyAgreement;
const BOTH_EKU = [x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth];

async function signerOf(root: RootMaterial): Promise<Signer> {
  const der = createPrivateKey(root.keyPem).export({ type: 'pkcs8', format: 'der' });
  const key = await webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, false, ['sign']);
  return { key, name: new x509.X509Certificate(root.certPem).subjectName };
}

let meshSigner: Signer;
let foreignSigner: Signer;

/** A P-256 leaf with exactly the given shape (defaults: what our CA issues, for web). */
async function makeLeaf(spec: LeafSpec, defaultUri: string): Promise<Creds> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const exts: x509.Extension[] = [new x509.BasicConstraintsExtension(spec.ca ?? false, undefined, true)];
  const ku = spec.keyUsage === undefined ? LEAF_KU : spec.keyUsage;
  if (ku !== null) exts.push(new x509.KeyUsagesExtension(ku, true));
  const eku = spec.eku === undefined ? BOTH_EKU : spec.eku;
  if (eku !== null) exts.push(new x509.ExtendedKeyUsageExtension([...eku]));
  const names = [...(spec.uris ?? [defaultUri]).map((value) => ({ type: 'url' as const, value })), ...(spec.dns ?? []).map((value) => ({ type: 'dns' as const, value }))];
  if (names.length > 0) exts.push(new x509.SubjectAlternativeNameExtension(names, true));
  const now = Date.now();
  const self = spec.by === 'self';
  const by = self ? null : spec.by === 'foreign' ? foreignSigner : meshSigner;
  const cert = await x509.X509CertificateGenerator.create({
    subject: self ? 'CN=web' : '',
    issuer: by === null ? 'CN=web' : by.name,
    notBefore: spec.notBefore ?? new Date(now - 60_000),
    notAfter: spec.notAfter ?? new Date(now + HOUR),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    publicKey: keys.publicKey,
    signingKey: by === null ? keys.privateKey : by.key,
    extensions: exts,
  });
  const pkcs8 = Buffer.from(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return { cert: cert.toString('pem'), key: createPrivateKey({ key: pkcs8, format: 'der', type: 'pkcs8' }).export({ type: 'pkcs8', format: 'pem' }) as string };
}

interface Attempt {
  /** The client finished its side of the handshake (TLS 1.3 does even when refused). */
  readonly secure: boolean;
  readonly protocol: string | null;
  readonly cipher: string | null;
  /** What came back for 'let me in' (the echo app would echo it). */
  readonly got: string;
}

/** One mTLS connection: writes a message once secure, collects what comes back until close or 2 s. */
function attempt(hostPort: string, creds: Creds | null, ca: readonly string[], opts: tls.ConnectionOptions = {}): Promise<Attempt> {
  const [host, port] = hostPort.split(':');
  return new Promise((resolve) => {
    let secure = false;
    let protocol: string | null = null;
    let cipher: string | null = null;
    let got = '';
    const s = tls.connect({ host, port: Number(port), ...(creds ?? {}), ca: [...ca], checkServerIdentity: () => undefined, ...opts });
    const done = (): void => {
      clearTimeout(t);
      s.destroy();
      resolve({ secure, protocol, cipher, got });
    };
    const t = setTimeout(done, 2000);
    s.on('secureConnect', () => {
      secure = true;
      protocol = s.getProtocol();
      cipher = s.getCipher().name;
      s.write('let me in');
    });
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got === 'let me in') done();
    });
    s.on('error', () => undefined);
    s.on('close', done);
  });
}

const FAMILIES = { handshake: 'meshd_tls_handshake_failures_total', denied: 'meshd_connections_denied_total' } as const;
type Family = keyof typeof FAMILIES;

/** Per (family, reason): how much a counter moved between two scrapes. */
function moved(before: Samples, after: Samples): Map<string, number> {
  const out = new Map<string, number>();
  for (const [family, name] of Object.entries(FAMILIES)) {
    for (const key of after.keys()) {
      if (!key.startsWith(`${name}{`)) continue;
      const reason = /reason="([^"]*)"/.exec(key)?.[1] ?? '';
      const d = total(after, name, { reason }) - total(before, name, { reason });
      if (d !== 0) out.set(`${family}:${reason}`, d);
    }
  }
  return out;
}

interface Case {
  readonly name: string;
  /** The leaf's shape for our trust domain; null: no client certificate. */
  readonly leaf: ((trustDomain: string) => LeafSpec) | null;
  readonly family: Family;
  readonly reason: string;
}

describe('hostile TLS peers against a sidecar started from the CLI', () => {
  let dir: string;
  let agent: MeshdProcess;
  let api: MeshdProcess;
  let api12: MeshdProcess;
  let app: EchoApp;
  let http: string;
  let td: string;
  let roots: string[];
  let webId: string;
  const creds = new Map<string, Creds>();

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-tls-peers-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    http = agent.fields.http as string;
    td = agent.fields['trust-domain'] as string;
    webId = serviceSpiffeId(td, 'default', 'dc1', 'web');
    // Bring our own root, so the test can sign leaves of any shape under the mesh's trust.
    const root = await generateRoot({ clusterId: td.replace(/\.consul$/, ''), now: new Date() });
    const put = await fetch(`http://${http}/v1/connect/ca/configuration`, { method: 'PUT', body: JSON.stringify({ Provider: 'consul', Config: { PrivateKey: root.keyPem, RootCert: root.certPem } }) });
    assert.equal(put.status, 200, await put.text());
    meshSigner = await signerOf(root);
    // Same cluster ID, so the same trust domain: only the key differs.
    foreignSigner = await signerOf(await generateRoot({ clusterId: td.replace(/\.consul$/, ''), now: new Date() }));
    const body = (await (await fetch(`http://${http}/v1/connect/ca/roots`)).json()) as { ActiveRootID: string; Roots: { RootCert: string; Active: boolean }[] };
    assert.ok(body.Roots.some((r) => r.Active && r.RootCert.trim() === root.certPem.trim()), 'our root is not the active root');
    roots = body.Roots.map((r) => r.RootCert);
    app = await startEchoApp();
    const common = ['-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http];
    [api, api12] = await Promise.all([
      startMeshd(['connect', 'proxy', ...common, '-handshake-timeout', `${HANDSHAKE_TIMEOUT_MS}ms`, '-max-concurrent-handshakes', String(MAX_HANDSHAKES)]),
      startMeshd(['connect', 'proxy', ...common, '-tls-min-version', 'TLSv1_2']),
    ]);
    const created = await meshd(['intention', 'create', '-allow', '-http-addr', http, 'web', 'api']);
    assert.equal(created.code, 0, created.stderr);
    creds.set('good', await makeLeaf({}, webId));
    // The intention reaches both sidecars: a good web leaf gets through.
    for (const p of [api, api12]) {
      const end = performance.now() + 5000;
      while ((await attempt(p.fields.inbound as string, creds.get('good') as Creds, roots)).got !== 'let me in') {
        assert.ok(performance.now() < end, 'a valid web leaf never got through');
        await new Promise((r) => setTimeout(r, 50));
      }
    }
  });

  after(async () => {
    await Promise.all([api?.stop(), api12?.stop()]);
    await agent?.stop();
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  // One case per class of bad client certificate. Chain and validity problems are found by
  // OpenSSL during the handshake (meshd_tls_handshake_failures_total); the leaf profile and the
  // SPIFFE ID are checked right after it, before the app is dialled
  // (meshd_connections_denied_total). `leaf` gets our trust domain; null: no certificate.
  const now = Date.now();
  const web = (t: string): string => serviceSpiffeId(t, 'default', 'dc1', 'web');
  const withUris = (f: (t: string) => string[]): ((t: string) => LeafSpec) => (t) => ({ uris: f(t) });
  const fixed = (spec: LeafSpec): ((t: string) => LeafSpec) => () => spec;
  const cases: readonly Case[] = [
    { name: 'no client certificate', leaf: null, family: 'handshake', reason: 'no_certificate' },
    { name: 'foreign CA claiming our trust domain', leaf: fixed({ by: 'foreign' }), family: 'handshake', reason: 'unknown_ca' },
    { name: 'self-signed leaf with our SPIFFE ID', leaf: fixed({ by: 'self' }), family: 'handshake', reason: 'unknown_ca' },
    { name: 'expired', leaf: fixed({ notBefore: new Date(now - 3 * HOUR), notAfter: new Date(now - HOUR) }), family: 'handshake', reason: 'expired' },
    { name: 'not yet valid', leaf: fixed({ notBefore: new Date(now + HOUR), notAfter: new Date(now + 3 * HOUR) }), family: 'handshake', reason: 'not_yet_valid' },
    { name: 'EKU codeSigning only', leaf: fixed({ eku: [x509.ExtendedKeyUsage.codeSigning] }), family: 'handshake', reason: 'bad_key_usage' },
    { name: 'EKU serverAuth only (no clientAuth)', leaf: fixed({ eku: [x509.ExtendedKeyUsage.serverAuth] }), family: 'handshake', reason: 'bad_key_usage' },
    { name: 'EKU anyExtendedKeyUsage only', leaf: fixed({ eku: ['2.5.29.37.0'] }), family: 'handshake', reason: 'bad_key_usage' },
    { name: 'KeyUsage keyEncipherment only', leaf: fixed({ keyUsage: x509.KeyUsageFlags.keyEncipherment }), family: 'handshake', reason: 'bad_key_usage' },
    { name: 'no ExtendedKeyUsage', leaf: fixed({ eku: null }), family: 'denied', reason: 'bad_key_usage' },
    { name: 'no KeyUsage', leaf: fixed({ keyUsage: null }), family: 'denied', reason: 'bad_key_usage' },
    { name: 'KeyUsage without digitalSignature (keyAgreement)', leaf: fixed({ keyUsage: x509.KeyUsageFlags.keyAgreement | x509.KeyUsageFlags.keyEncipherment }), family: 'denied', reason: 'bad_key_usage' },
    { name: 'KeyUsage with keyCertSign', leaf: fixed({ keyUsage: LEAF_KU | x509.KeyUsageFlags.keyCertSign }), family: 'denied', reason: 'bad_key_usage' },
    { name: 'CA:TRUE leaf', leaf: fixed({ ca: true }), family: 'denied', reason: 'bad_key_usage' },
    { name: 'more than one URI SAN', leaf: withUris((t) => [web(t), serviceSpiffeId(t, 'default', 'dc1', 'admin')]), family: 'denied', reason: 'bad_identity' },
    { name: 'no URI SAN (a DNS SAN only)', leaf: fixed({ uris: [], dns: ['web.service.consul'] }), family: 'denied', reason: 'bad_identity' },
    { name: 'no SAN at all', leaf: fixed({ uris: [] }), family: 'denied', reason: 'bad_identity' },
    { name: 'upper-case scheme', leaf: withUris((t) => [web(t).replace('spiffe:', 'SPIFFE:')]), family: 'denied', reason: 'bad_identity' },
    { name: 'upper-case trust domain', leaf: withUris((t) => [`spiffe://${t.toUpperCase()}/ns/default/dc/dc1/svc/web`]), family: 'denied', reason: 'bad_identity' },
    { name: 'empty path segment', leaf: withUris((t) => [`spiffe://${t}/ns//dc/dc1/svc/web`]), family: 'denied', reason: 'bad_identity' },
    { name: 'dot segment', leaf: withUris((t) => [`spiffe://${t}/ns/./dc/dc1/svc/web`]), family: 'denied', reason: 'bad_identity' },
    { name: 'dot-dot segment', leaf: withUris((t) => [`spiffe://${t}/ns/default/dc/dc1/svc/..`]), family: 'denied', reason: 'bad_identity' },
    { name: 'percent-encoded character', leaf: withUris((t) => [`spiffe://${t}/ns/default/dc/dc1/svc/w%65b`]), family: 'denied', reason: 'bad_identity' },
    { name: 'trailing slash', leaf: withUris((t) => [`${web(t)}/`]), family: 'denied', reason: 'bad_identity' },
    { name: 'not a service ID (the signing ID)', leaf: withUris((t) => [`spiffe://${t}`]), family: 'denied', reason: 'bad_identity' },
    { name: 'another trust domain', leaf: withUris(() => [web('11111111-2222-3333-4444-555555555555.consul')]), family: 'denied', reason: 'foreign_trust_domain' },
  ];

  const leafFor = async (c: Case): Promise<Creds | null> => {
    if (c.leaf === null) return null;
    const cached = creds.get(c.name);
    if (cached !== undefined) return cached;
    const made = await makeLeaf(c.leaf(td), webId);
    creds.set(c.name, made);
    return made;
  };

  for (const variant of [
    { label: 'TLS 1.3', proxy: (): MeshdProcess => api, opts: {} },
    { label: 'TLS 1.2 (-tls-min-version TLSv1_2)', proxy: (): MeshdProcess => api12, opts: { maxVersion: 'TLSv1.2' as const } },
  ]) {
    describe(`bad client certificates, ${variant.label}: refused, counted with the reason, the app sees nothing`, () => {
      for (const c of cases) {
        test(`${c.name} -> ${FAMILIES[c.family]}{reason="${c.reason}"}`, async () => {
          const p = variant.proxy();
          const metrics = p.fields.metrics as string;
          const leaf = await leafFor(c);
          const before = await scrape(metrics);
          const appConns = app.connections();
          const appBytes = app.bytes();
          const r = await attempt(p.fields.inbound as string, leaf, roots, variant.opts);
          assert.equal(r.got, '', 'something came back through the sidecar');
          const key = `${c.family}:${c.reason}`;
          const after = await scrapeUntil(metrics, (s) => (moved(before, s).get(key) ?? 0) >= 1);
          assert.deepEqual(Object.fromEntries(moved(before, after)), { [key]: 1 });
          assert.equal(total(after, 'meshd_connections_accepted_total', { direction: 'inbound' }), total(before, 'meshd_connections_accepted_total', { direction: 'inbound' }));
          assert.equal(app.connections(), appConns, 'the app got a connection');
          assert.equal(app.bytes(), appBytes, 'the app got bytes');
        });
      }
    });
  }

  describe('TLS versions and cipher suites', () => {
    test('default: TLS 1.3 is negotiated, and a TLS 1.2-only client is refused (protocol)', async () => {
      const ok = await attempt(api.fields.inbound as string, creds.get('good') as Creds, roots);
      assert.equal(ok.protocol, 'TLSv1.3');
      assert.equal(ok.got, 'let me in');
      const before = await scrape(api.fields.metrics as string);
      const appConns = app.connections();
      const r = await attempt(api.fields.inbound as string, creds.get('good') as Creds, roots, { maxVersion: 'TLSv1.2' });
      assert.equal(r.secure, false);
      const after = await scrapeUntil(api.fields.metrics as string, (s) => (moved(before, s).get('handshake:protocol') ?? 0) >= 1);
      assert.deepEqual(Object.fromEntries(moved(before, after)), { 'handshake:protocol': 1 });
      assert.equal(app.connections(), appConns);
    });

    test('-tls-min-version TLSv1_2: TLS 1.3 still preferred; TLS 1.2 only with ECDHE and an AEAD cipher', async () => {
      const inbound = api12.fields.inbound as string;
      const good = creds.get('good') as Creds;
      assert.equal((await attempt(inbound, good, roots)).protocol, 'TLSv1.3');
      const v12 = await attempt(inbound, good, roots, { maxVersion: 'TLSv1.2' });
      assert.equal(v12.protocol, 'TLSv1.2');
      assert.equal(v12.got, 'let me in');
      assert.match(v12.cipher ?? '', /^ECDHE-ECDSA-(AES128-GCM-SHA256|AES256-GCM-SHA384|CHACHA20-POLY1305)$/);
      for (const ciphers of ['ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA', 'ECDHE-ECDSA-AES128-CCM8:ECDHE-ECDSA-AES128-CCM', 'AES128-GCM-SHA256:AES256-GCM-SHA384', 'DHE-RSA-AES128-GCM-SHA256']) {
        const r = await attempt(inbound, good, roots, { maxVersion: 'TLSv1.2', ciphers });
        assert.equal(r.secure, false, `TLS 1.2 with ${ciphers} was accepted (${r.cipher})`);
      }
    });

    test('-tls-min-version rejects values other than TLSv1_2 and TLSv1_3', async () => {
      for (const v of ['TLSv1_1', 'TLSv1_0', 'TLS_AUTO', '1.2']) {
        const r = await meshd(['connect', 'proxy', '-service', 'api', '-listen', '127.0.0.1:0', '-service-addr', '127.0.0.1:1', '-http-addr', http, '-tls-min-version', v]);
        assert.equal(r.code, 2, r.stderr);
        assert.match(r.stderr, /-tls-min-version must be TLSv1_3 or TLSv1_2/);
      }
    });
  });

  describe('handshake limits (-handshake-timeout, -max-concurrent-handshakes)', () => {
    test(`a client that opens TCP and sends nothing is closed after the handshake timeout (${HANDSHAKE_TIMEOUT_MS} ms) and counted`, async () => {
      const metrics = api.fields.metrics as string;
      const before = await scrape(metrics);
      const [host, port] = (api.fields.inbound as string).split(':');
      const s = net.connect({ host, port: Number(port) });
      s.on('error', () => undefined);
      const opened = await new Promise<number>((resolve) => s.once('connect', () => resolve(performance.now())));
      const closedAt = await new Promise<number>((resolve) => {
        s.once('close', () => resolve(performance.now()));
        setTimeout(() => resolve(-1), HANDSHAKE_TIMEOUT_MS + 3000);
      });
      s.destroy();
      assert.ok(closedAt > 0, 'the idle connection was never closed');
      const elapsed = closedAt - opened;
      assert.ok(elapsed >= HANDSHAKE_TIMEOUT_MS - 50 && elapsed < HANDSHAKE_TIMEOUT_MS + 1500, `closed after ${Math.round(elapsed)} ms`);
      const after = await scrapeUntil(metrics, (m) => (moved(before, m).get('handshake:timeout') ?? 0) >= 1);
      assert.deepEqual(Object.fromEntries(moved(before, after)), { 'handshake:timeout': 1 });
    });

    test(`over ${MAX_HANDSHAKES} handshakes in progress on a worker, a new connection is closed at once (overloaded); then service resumes`, async () => {
      // Every handshake of the cases above has settled: if one had leaked, fewer than
      // MAX_HANDSHAKES idle connections would fit before the cap.
      const metrics = api.fields.metrics as string;
      const before = await scrape(metrics);
      const [host, port] = (api.fields.inbound as string).split(':');
      const open = async (): Promise<{ s: net.Socket; closed: Promise<number> }> => {
        const s = net.connect({ host, port: Number(port) });
        s.on('error', () => undefined);
        const closed = new Promise<number>((resolve) => s.once('close', () => resolve(performance.now())));
        await new Promise<void>((resolve) => s.once('connect', () => resolve()));
        return { s, closed };
      };
      const idle = [];
      for (let i = 0; i < MAX_HANDSHAKES; i++) idle.push(await open());
      await new Promise((r) => setTimeout(r, 200));
      const extra = await open();
      const extraOpened = performance.now();
      const extraClosed = await Promise.race([extra.closed, new Promise<number>((r) => setTimeout(() => r(-1), HANDSHAKE_TIMEOUT_MS / 2))]);
      assert.ok(extraClosed > 0, 'the connection over the cap was not closed at once');
      assert.ok(extraClosed - extraOpened < HANDSHAKE_TIMEOUT_MS / 2);
      const m1 = await scrapeUntil(metrics, (m) => (moved(before, m).get('handshake:overloaded') ?? 0) >= 1);
      assert.deepEqual(Object.fromEntries(moved(before, m1)), { 'handshake:overloaded': 1 });
      // The idle ones time out; then a valid client is served again.
      await Promise.all(idle.map((c) => c.closed));
      const m2 = await scrapeUntil(metrics, (m) => (moved(before, m).get('handshake:timeout') ?? 0) >= MAX_HANDSHAKES);
      assert.deepEqual(Object.fromEntries(moved(before, m2)), { 'handshake:overloaded': 1, 'handshake:timeout': MAX_HANDSHAKES });
      assert.equal((await attempt(api.fields.inbound as string, creds.get('good') as Creds, roots)).got, 'let me in');
    });

    test('flag values are checked', async () => {
      const base = ['connect', 'proxy', '-service', 'api', '-listen', '127.0.0.1:0', '-service-addr', '127.0.0.1:1', '-http-addr', http];
      for (const [flag, v, msg] of [
        ['-handshake-timeout', '0s', /-handshake-timeout must be positive/],
        ['-handshake-timeout', 'soon', /-handshake-timeout must be a duration/],
        ['-max-concurrent-handshakes', '0', /-max-concurrent-handshakes must be a whole number/],
        ['-max-concurrent-handshakes', '-5', /-max-concurrent-handshakes must be a whole number/],
      ] as const) {
        const r = await meshd([...base, flag, v]);
        assert.equal(r.code, 2, `${flag} ${v}: ${r.stderr}`);
        assert.match(r.stderr, msg);
      }
    });
  });

  describe('outbound: an upstream with a valid chain but the wrong leaf is refused', () => {
    test('wrong service identity, no ExtendedKeyUsage, or no serverAuth: refused, and the impostor never sees a byte', async () => {
      const impostors: { name: string; spec: LeafSpec; reason: string; saw: () => boolean; server: tls.Server }[] = [];
      const plan = [
        { name: 'ledger', spec: { uris: [serviceSpiffeId(td, 'default', 'dc1', 'evil')] }, reason: 'upstream_identity_mismatch' },
        { name: 'vault', spec: { eku: null }, reason: 'upstream_identity_mismatch' },
        { name: 'billing', spec: { eku: [x509.ExtendedKeyUsage.clientAuth] }, reason: 'upstream_connect_failed' },
      ];
      for (const p of plan) {
        const leaf = await makeLeaf(p.spec, serviceSpiffeId(td, 'default', 'dc1', p.name));
        let saw = false;
        const server = tls.createServer({ ...leaf, ca: roots, requestCert: true }, (s) => {
          s.on('data', () => (saw = true));
          s.on('error', () => undefined);
        });
        server.on('tlsClientError', () => undefined);
        await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
        const port = (server.address() as net.AddressInfo).port;
        const reg = await fetch(`http://${http}/v1/agent/service/register`, {
          method: 'PUT',
          body: JSON.stringify({ Name: `${p.name}-proxy`, ID: `${p.name}-impostor`, Kind: 'connect-proxy', Address: '127.0.0.1', Port: port, Proxy: { DestinationServiceName: p.name } }),
        });
        assert.equal(reg.status, 200);
        impostors.push({ ...p, saw: () => saw, server });
      }
      const web = await startMeshd(['connect', 'proxy', '-service', 'web', ...plan.flatMap((p) => ['-upstream', `${p.name}:0`]), '-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http]);
      try {
        for (const imp of impostors) {
          const before = await scrape(web.fields.metrics as string);
          const port = Number((web.fields[`upstream.${imp.name}`] as string).split(':')[1]);
          assert.equal(await echoOnce(port, 'secret'), '', imp.name);
          const after = await scrapeUntil(web.fields.metrics as string, (s) => total(s, FAMILIES.denied, { reason: imp.reason }) > total(before, FAMILIES.denied, { reason: imp.reason }));
          assert.deepEqual(Object.fromEntries(moved(before, after)), { [`denied:${imp.reason}`]: 1 }, imp.name);
          assert.equal(imp.saw(), false, `${imp.name}: the impostor received data`);
        }
      } finally {
        await web.stop();
        for (const imp of impostors) imp.server.close();
      }
    });
  });
});
