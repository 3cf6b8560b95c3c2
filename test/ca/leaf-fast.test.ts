// The fast leaf path (src/ca/leaf.ts: our DER + node:crypto) held to the reference path
// (src/ca/reference.ts: @peculiar/x509 + WebCrypto). Same CSR, clock, TTL and serial in,
// byte-identical TBSCertificate out (so identical under every parser; PKCS#1 v1.5 RSA
// signatures are deterministic, so RSA-signed leaves are identical whole), checked by
// fast-check over random identities, times (both sides of the UTCTime/GeneralizedTime
// switch in 2050), TTLs, serials and CA key types, with @peculiar and openssl reading the
// result. Every refusal comes out of both paths with the same code and message.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, generateKeyPairSync } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import fc from 'fast-check';
import {
  CaError,
  CsrError,
  createLeafCsr,
  generateRoot,
  type CaKeyType,
  type RootMaterial,
  type SignLeafRequest,
} from '../../src/ca/authority.ts';
import { pemDecode, pemEncode } from '../../src/ca/certs.ts';
import { childrenOf, expectElement, rawOf, TAG_SEQUENCE } from '../../src/ca/asn1.ts';
import { ROOT_CACHE_MAX, rootCacheSize, signLeafFast } from '../../src/ca/leaf.ts';
import { signLeafCsrReference } from '../../src/ca/reference.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import { CLUSTER_ID, DC, NOW, TD, WEB_URI, makeCsr, tempDir, writeFile, x509 } from './helpers.ts';

const HOUR = 3_600_000;
const YEAR = 8760 * HOUR;
/** Roots valid from 1980 to 2130, so leaves can be issued on both sides of 2050. */
const ROOT_START = new Date('1980-01-01T00:00:00Z');
const ROOT_TTL = 150 * YEAR;

const KINDS: { type: CaKeyType; bits: number }[] = [
  { type: 'ec', bits: 256 },
  { type: 'ec', bits: 384 },
  { type: 'ec', bits: 521 },
  { type: 'rsa', bits: 2048 },
];
const roots: RootMaterial[] = [];
let tmp: ReturnType<typeof tempDir>;

before(async () => {
  tmp = tempDir();
  for (const k of KINDS) {
    roots.push(await generateRoot({ clusterId: CLUSTER_ID, now: ROOT_START, ttlMs: ROOT_TTL, privateKeyType: k.type, privateKeyBits: k.bits }));
  }
});
after(() => tmp.cleanup());

function leafDer(issued: { CertPEM: string }): Uint8Array {
  return pemDecode(issued.CertPEM, 'CERTIFICATE');
}

/** The tbsCertificate element of a certificate, as bytes. */
function tbsOf(der: Uint8Array): Buffer {
  const cert = expectElement(der, 0, der.length, TAG_SEQUENCE, 'Certificate');
  return Buffer.from(rawOf(der, childrenOf(der, cert)[0]!));
}

/** What @peculiar/x509 reads from a certificate, signature aside. */
function peculiarView(der: Uint8Array): object {
  const c = new x509.X509Certificate(der);
  return {
    serial: c.serialNumber,
    subject: c.subject,
    issuer: c.issuer,
    notBefore: c.notBefore.getTime(),
    notAfter: c.notAfter.getTime(),
    publicKey: Buffer.from(c.publicKey.rawData).toString('hex'),
    signatureAlgorithm: c.signatureAlgorithm,
    extensions: c.extensions.map((e) => ({ type: e.type, critical: e.critical, value: Buffer.from(e.value).toString('hex') })),
  };
}

/**
 * `openssl -text` of many certificates in one process (a spawn costs ~50 ms here), each
 * without its signature value (ECDSA signatures are randomised).
 */
function opensslViews(ders: Uint8Array[]): string[] {
  const bundle = writeFile(tmp.dir, 'bundle.pem', ders.map((d) => pemEncode('CERTIFICATE', d)).join(''));
  const p7 = execFileSync('openssl', ['crl2pkcs7', '-nocrl', '-certfile', bundle]);
  const text = execFileSync('openssl', ['pkcs7', '-print_certs', '-text', '-noout'], { input: p7, encoding: 'utf8' });
  const views = text.split(/^Certificate:\n/m).slice(1).map((t) => t.slice(0, t.indexOf('    Signature Value:')));
  assert.equal(views.length, ders.length);
  return views;
}

const SEGMENT = fc.stringMatching(/^[A-Za-z0-9_-][A-Za-z0-9._-]{0,24}$/);
const SERIAL = fc.uint8Array({ minLength: 1, maxLength: 20 }).map((b) => {
  b[0] = b[0]! & 0x7f || 0x01; // positive and minimally encoded, as randomSerial() makes them
  return b;
});
/** Instants from 1980 to 2120, with the UTCTime/GeneralizedTime edge drawn often. */
const INSTANT = fc.oneof(
  fc.integer({ min: Date.UTC(1980, 0, 2), max: Date.UTC(2120, 0, 1) }),
  fc.integer({ min: Date.UTC(2049, 11, 31, 23) - 2 * YEAR, max: Date.UTC(2050, 0, 1, 1) - 1000 }),
);

test('property: fast path ≡ reference path (same TBS bytes; same view under @peculiar and openssl)', async () => {
  const fastLeaves: Uint8Array[] = [];
  const refLeaves: Uint8Array[] = [];
  await fc.assert(
    fc.asyncProperty(
      fc.integer({ min: 0, max: KINDS.length - 1 }),
      fc.record({ ns: SEGMENT, dc: SEGMENT, svc: SEGMENT, ap: fc.oneof(fc.constant('default'), SEGMENT) }),
      INSTANT,
      fc.integer({ min: 1000, max: YEAR }),
      SERIAL,
      fc.boolean(),
      async (k, id, nowMs, ttlMs, serial, withChain) => {
        const root = roots[k]!;
        const uri = serviceSpiffeId(TD, id.ns, id.dc, id.svc, id.ap);
        const { csrPem } = await createLeafCsr(uri);
        const req: SignLeafRequest = {
          csrPem,
          root,
          trustDomain: TD,
          datacenter: id.dc,
          now: new Date(nowMs),
          ttlMs,
          ...(withChain ? { intermediatePems: [roots[(k + 1) % roots.length]!.certPem] } : {}),
        };
        const fast = signLeafFast(req, serial);
        const ref = await signLeafCsrReference(req, serial);
        assert.deepEqual({ ...fast, CertPEM: '' }, { ...ref, CertPEM: '' });
        const fd = leafDer(fast);
        const rd = leafDer(ref);
        assert.deepEqual(tbsOf(fd), tbsOf(rd), 'TBSCertificate bytes');
        if (root.privateKeyType === 'rsa') assert.deepEqual(Buffer.from(fd), Buffer.from(rd), 'deterministic RSA: whole certificate');
        assert.ok(new X509Certificate(Buffer.from(fd)).verify(new X509Certificate(root.certPem).publicKey), 'signed by the root');
        assert.deepEqual(peculiarView(fd), peculiarView(rd));
        fastLeaves.push(fd);
        refLeaves.push(rd);
        assert.equal(fast.CertPEM.slice(fast.CertPEM.indexOf('-----END CERTIFICATE-----')), ref.CertPEM.slice(ref.CertPEM.indexOf('-----END CERTIFICATE-----')), 'same chain');
      },
    ),
    { numRuns: 100 },
  );
  // openssl reads every pair the same way, signature aside.
  const fastText = opensslViews(fastLeaves);
  const refText = opensslViews(refLeaves);
  for (let i = 0; i < fastText.length; i++) assert.equal(fastText[i], refText[i], `leaf ${i}`);
  assert.match(fastText[0]!, /X509v3 Subject Alternative Name: critical/);
});

test('both paths emit UTCTime before 2050 and GeneralizedTime from 2050 (RFC 5280 §4.1.2.5)', async () => {
  const { csrPem } = await createLeafCsr(WEB_URI);
  const root = roots[0]!;
  // NotBefore 2049-12-31T23:59:59Z (now is one minute later), NotAfter one second later in 2050.
  const now = new Date(Date.UTC(2050, 0, 1, 0, 0, 59));
  const req: SignLeafRequest = { csrPem, root, trustDomain: TD, datacenter: DC, now, ttlMs: 1000 };
  const serial = Uint8Array.of(1, 2, 3);
  for (const issued of [signLeafFast(req, serial), await signLeafCsrReference(req, serial)]) {
    const asn1 = execFileSync('openssl', ['asn1parse', '-inform', 'DER'], { input: Buffer.from(leafDer(issued)), encoding: 'utf8' });
    assert.match(asn1, /UTCTIME\s+:491231235959Z/);
    assert.match(asn1, /GENERALIZEDTIME\s+:20500101000000Z/);
  }
});

/** A CSR with every byte of `der` but one changed. */
function tamper(csrPem: string, at: number, value: number): string {
  const der = Uint8Array.from(pemDecode(csrPem, 'CERTIFICATE REQUEST'));
  der[at % der.length] = value;
  return pemEncode('CERTIFICATE REQUEST', der);
}

function opensslCsr(newkey: string, san: string): string {
  return execFileSync('openssl', ['req', '-new', '-newkey', newkey, '-nodes', '-keyout', '/dev/null', '-subj', '/', '-addext', `subjectAltName=critical,${san}`], {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'ignore'],
  });
}

test('every refusal: same code from both paths, same message (parse details aside)', async () => {
  const svc = (td: string, dc: string, name = 'web') => `spiffe://${td}/ns/default/dc/${dc}/svc/${name}`;
  const root = roots[0]!;
  const at = NOW;
  const good = (await createLeafCsr(WEB_URI)).csrPem;
  const p256Params = writeFile(tmp.dir, 'p256.param', execFileSync('openssl', ['ecparam', '-name', 'prime256v1'], { encoding: 'utf8' }));
  const twoSanExts = await (async () => {
    const keys = await crypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
    const csr = await x509.Pkcs10CertificateRequestGenerator.create({
      keys,
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: WEB_URI }], true), new x509.SubjectAlternativeNameExtension([{ type: 'url', value: WEB_URI }])],
    });
    return pemEncode('CERTIFICATE REQUEST', new Uint8Array(csr.rawData));
  })();

  const cases: [string, string, Partial<SignLeafRequest>, string][] = [
    ['garbage', 'hello', {}, 'CSR_MALFORMED'],
    ['oversized', good + ' '.repeat(20_000), {}, 'CSR_MALFORMED'],
    ['truncated', pemEncode('CERTIFICATE REQUEST', pemDecode(good, 'CERTIFICATE REQUEST').subarray(0, 100)), {}, 'CSR_MALFORMED'],
    ['a certificate, not a CSR', root.certPem.replaceAll('CERTIFICATE', 'CERTIFICATE REQUEST'), {}, 'CSR_MALFORMED'],
    ['two SAN extensions', twoSanExts, {}, 'CSR_MALFORMED'],
    ['bad signature', tamper(good, pemDecode(good, 'CERTIFICATE REQUEST').length - 10, 0x00), {}, 'CSR_BAD_SIGNATURE'],
    ['no SAN', await makeCsr([]), {}, 'CSR_INVALID_URI_COUNT'],
    ['DNS SAN only', await makeCsr([{ type: 'dns', value: 'web' }]), {}, 'CSR_INVALID_URI_COUNT'],
    ['two URIs', await makeCsr([{ type: 'url', value: WEB_URI }, { type: 'url', value: svc(TD, DC, 'api') }]), {}, 'CSR_INVALID_URI_COUNT'],
    ['email SAN', await makeCsr([{ type: 'url', value: WEB_URI }, { type: 'email', value: 'a@b.c' }]), {}, 'CSR_EMAIL_SAN'],
    ['not SPIFFE', await makeCsr([{ type: 'url', value: 'https://web.example/' }]), {}, 'CSR_INVALID_SPIFFE_ID'],
    ['percent-encoded', await makeCsr([{ type: 'url', value: `${WEB_URI}%20` }]), {}, 'CSR_INVALID_SPIFFE_ID'],
    ['signing ID', await makeCsr([{ type: 'url', value: `spiffe://${TD}` }]), {}, 'CSR_INVALID_ID_KIND'],
    ['server ID', await makeCsr([{ type: 'url', value: `spiffe://${TD}/agent/server/dc/dc1` }]), {}, 'CSR_INVALID_ID_KIND'],
    ['agent ID', await makeCsr([{ type: 'url', value: `spiffe://${TD}/agent/client/dc/dc1/id/n1` }]), {}, 'CSR_UNSUPPORTED_ID_KIND'],
    ['mesh gateway', await makeCsr([{ type: 'url', value: `spiffe://${TD}/gateway/mesh/dc/dc1` }]), {}, 'CSR_UNSUPPORTED_ID_KIND'],
    ['not allowed', good, { allowedServices: ['api', 'db'] }, 'CSR_PERMISSION_DENIED'],
    ['not allowed, other dc', await makeCsr([{ type: 'url', value: svc(TD, 'dc2') }]), { allowedServices: [] }, 'CSR_PERMISSION_DENIED'],
    ['other datacenter', await makeCsr([{ type: 'url', value: svc(TD, 'dc2') }]), {}, 'CSR_WRONG_DATACENTER'],
    ['other trust domain', await makeCsr([{ type: 'url', value: svc('other.consul', DC) }]), {}, 'CSR_WRONG_TRUST_DOMAIN'],
    ['URI plus DNS', await makeCsr([{ type: 'url', value: WEB_URI }, { type: 'dns', value: 'web.example' }]), {}, 'CSR_UNSUPPORTED_SAN'],
    ['P-384 key', await makeCsr([{ type: 'url', value: WEB_URI }], 'P-384'), {}, 'CSR_UNSUPPORTED_KEY'],
    ['Ed25519 key (openssl)', opensslCsr('ed25519', `URI:${WEB_URI}`), {}, 'CSR_UNSUPPORTED_KEY'],
    ['RSA key (openssl)', opensslCsr('rsa:2048', `URI:${WEB_URI}`), {}, 'CSR_UNSUPPORTED_KEY'],
    ['expired root', good, { now: new Date(root.notAfter.getTime() + 1000) }, 'CA_ROOT_EXPIRED'],
  ];
  for (const [name, csrPem, over, code] of cases) {
    const req: SignLeafRequest = { csrPem, root, trustDomain: TD, datacenter: DC, now: at, ...over };
    const outcome = async (f: () => Promise<unknown>): Promise<{ code: string; message: string }> => {
      try {
        await f();
      } catch (e) {
        if (e instanceof CsrError || e instanceof CaError) return { code: e.code, message: e.message };
        throw e;
      }
      throw new Error(`${name}: was signed`);
    };
    const fast = await outcome(() => Promise.resolve().then(() => signLeafFast(req)));
    const ref = await outcome(() => signLeafCsrReference(req));
    assert.equal(fast.code, code, `${name}: fast path (${fast.message})`);
    assert.equal(ref.code, code, `${name}: reference path (${ref.message})`);
    // Parse failures carry each parser's own detail after a common prefix.
    if (/could not be parsed: /.test(ref.message)) assert.match(fast.message, /^CSR could not be parsed: /, name);
    else assert.equal(fast.message, ref.message, name);
  }
  // And an openssl-made P-256 CSR is signed by both.
  const made = opensslCsr(`ec:${p256Params}`, `URI:${WEB_URI}`);
  for (const issued of [signLeafFast({ csrPem: made, root, trustDomain: TD, datacenter: DC, now: at }), await signLeafCsrReference({ csrPem: made, root, trustDomain: TD, datacenter: DC, now: at })]) {
    assert.equal(issued.ServiceURI, WEB_URI);
  }
  // allowedServices admits the listed service.
  assert.equal(signLeafFast({ csrPem: good, root, trustDomain: TD, datacenter: DC, now: at, allowedServices: ['api', 'web'] }).Service, 'web');
});

test('fast path is strict DER: BER lengths and trailing bytes are CSR_MALFORMED', async () => {
  const der = pemDecode((await createLeafCsr(WEB_URI)).csrPem, 'CERTIFICATE REQUEST');
  const root = roots[0]!;
  const attempt = (bytes: Uint8Array) => () => signLeafFast({ csrPem: pemEncode('CERTIFICATE REQUEST', bytes), root, trustDomain: TD, datacenter: DC, now: NOW });
  const isMalformed = (e: unknown) => e instanceof CsrError && e.code === 'CSR_MALFORMED';
  assert.throws(attempt(Uint8Array.from([...der, 0])), isMalformed, 'trailing byte');
  // Outer length in the non-minimal 3-octet form (0x82 00 xx would be caught too).
  assert.equal(der[1], 0x82);
  const nonMinimal = Uint8Array.from([0x30, 0x83, 0x00, der[2]!, der[3]!, ...der.subarray(4)]);
  assert.throws(attempt(nonMinimal), isMalformed, 'non-minimal length');
  const indefinite = Uint8Array.from([0x30, 0x80, ...der.subarray(4), 0, 0]);
  assert.throws(attempt(indefinite), isMalformed, 'indefinite length');
});

test('property: a mutated CSR is never signed with a changed identity, and never throws anything but CsrError', async () => {
  const { csrPem } = await createLeafCsr(WEB_URI);
  const len = pemDecode(csrPem, 'CERTIFICATE REQUEST').length;
  const root = roots[0]!;
  fc.assert(
    fc.property(fc.integer({ min: 0, max: len - 1 }), fc.integer({ min: 0, max: 255 }), (at, value) => {
      const mutated = tamper(csrPem, at, value);
      try {
        const issued = signLeafFast({ csrPem: mutated, root, trustDomain: TD, datacenter: DC, now: NOW });
        // Only a byte outside the signed part (or an unchanged one) can still be signed.
        assert.equal(issued.ServiceURI, WEB_URI);
      } catch (e) {
        assert.ok(e instanceof CsrError, String(e));
      }
    }),
    { numRuns: 400 },
  );
});

test('the per-thread root cache is bounded and never hands one root key to another root', async () => {
  const { csrPem } = await createLeafCsr(WEB_URI);
  const many: RootMaterial[] = [];
  for (let i = 0; i < ROOT_CACHE_MAX + 3; i++) many.push(await generateRoot({ clusterId: CLUSTER_ID, now: NOW }));
  for (const r of many) signLeafFast({ csrPem, root: r, trustDomain: TD, datacenter: DC, now: NOW });
  assert.ok(rootCacheSize() <= ROOT_CACHE_MAX, `cache holds ${rootCacheSize()}`);

  // Root B presented under root A's ID (a caller bug): signed by B, as B's PEMs say.
  const [a, b] = [many[0]!, many[1]!];
  signLeafFast({ csrPem, root: a, trustDomain: TD, datacenter: DC, now: NOW });
  const issued = signLeafFast({ csrPem, root: { ...b, id: a.id }, trustDomain: TD, datacenter: DC, now: NOW });
  const leaf = new X509Certificate(issued.CertPEM);
  assert.ok(leaf.verify(new X509Certificate(b.certPem).publicKey));
  assert.ok(!leaf.verify(new X509Certificate(a.certPem).publicKey));

  // A root whose key the worker cannot sign with is a CaError, not a crash.
  const ed = generateKeyPairSync('ed25519').privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  assert.throws(
    () => signLeafFast({ csrPem, root: { ...a, id: 'x', keyPem: ed }, trustDomain: TD, datacenter: DC, now: NOW }),
    (e: unknown) => e instanceof CaError && e.code === 'CA_ROOT_UNSUPPORTED_KEY',
  );
  assert.throws(
    () => signLeafFast({ csrPem, root: { ...a, id: 'y', certPem: 'junk' }, trustDomain: TD, datacenter: DC, now: NOW }),
    (e: unknown) => e instanceof CaError && e.code === 'CA_ROOT_MALFORMED',
  );
  // A key that is not the certificate's would issue unverifiable leaves: refused.
  assert.throws(
    () => signLeafFast({ csrPem, root: { ...a, id: 'z', keyPem: b.keyPem }, trustDomain: TD, datacenter: DC, now: NOW }),
    (e: unknown) => e instanceof CaError && e.code === 'CA_ROOT_KEY_MISMATCH',
  );
});
