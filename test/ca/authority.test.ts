import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash, createPrivateKey, generateKeyPairSync, webcrypto } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import {
  CaError,
  CsrError,
  DEFAULT_LEAF_TTL_MS,
  DEFAULT_ROOT_TTL_MS,
  createLeafCsr,
  generateRoot,
  loadRoot,
  signLeafCsr,
  type CaErrorCode,
  type CsrErrorCode,
  type RootMaterial,
} from '../../src/ca/authority.ts';
import { colonHex, pemDecode, pemDecodeAll, pemEncode } from '../../src/ca/certs.ts';
import { readCertIdentity } from '../../src/ca/der.ts';
import {
  CLUSTER_ID,
  DC,
  NOW,
  TD,
  WEB_URI,
  makeCsr,
  opensslSection,
  opensslText,
  opensslVerify,
  tempDir,
  writeFile,
  x509,
} from './helpers.ts';

const HOUR = 3_600_000;
/** `openssl verify -attime` value an hour after NOW, inside every test cert's validity. */
const AT_TIME = String(Math.floor(NOW.getTime() / 1000) + 3600);

let root: RootMaterial;
let tmp: ReturnType<typeof tempDir>;

before(async () => {
  root = await generateRoot({ clusterId: CLUSTER_ID, now: NOW });
  tmp = tempDir();
});
after(() => tmp.cleanup());

function spkiSha256ColonUpper(pem: string): string {
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return colonHex(createHash('sha256').update(spki).digest()).toUpperCase();
}

async function sign(csrPem: string, over: Partial<Parameters<typeof signLeafCsr>[0]> = {}) {
  return signLeafCsr({ csrPem, root, trustDomain: TD, datacenter: DC, now: NOW, ...over });
}

// ---------------------------------------------------------------------------------------
// Root.

test('generateRoot: the fields of consul-mesh.md §1.5, checked with openssl', () => {
  const text = opensslText(root.certPem);

  assert.match(new X509Certificate(root.certPem).subject, /^CN=pri-[0-9a-z]{8}\.consul\.ca\.11111111\.consul$/);

  const bc = opensslSection(text, 'X509v3 Basic Constraints');
  assert.match(bc, /Basic Constraints: critical/);
  assert.match(bc, /CA:TRUE/);

  const ku = opensslSection(text, 'X509v3 Key Usage');
  assert.match(ku, /Key Usage: critical/);
  assert.match(ku, /^\s*Digital Signature, Certificate Sign, CRL Sign\s*$/m);

  const sanText = opensslSection(text, 'X509v3 Subject Alternative Name');
  assert.match(sanText, new RegExp(`^\\s*URI:spiffe://${TD.replaceAll('.', '\\.')}\\s*$`, 'm'));

  // SKI = AKI = SHA-256 of the SPKI (Consul's KeyId), not the SHA-1 that openssl or
  // @peculiar would compute by default.
  const want = spkiSha256ColonUpper(root.certPem);
  assert.match(opensslSection(text, 'X509v3 Subject Key Identifier'), new RegExp(want));
  assert.match(opensslSection(text, 'X509v3 Authority Key Identifier'), new RegExp(want));
  assert.equal(root.signingKeyId, want.toLowerCase());
  assert.equal(root.signingKeyId.split(':').length, 32);

  // ID = SHA-1 fingerprint, colon-hex lower-case.
  assert.equal(root.id, new X509Certificate(root.certPem).fingerprint.toLowerCase());
  assert.equal(root.serialNumber, colonHex(Buffer.from(new X509Certificate(root.certPem).serialNumber, 'hex')));

  // NotBefore = now (no back-dating), NotAfter = now + 87600h.
  assert.equal(root.notBefore.getTime(), NOW.getTime());
  assert.equal(root.notAfter.getTime(), NOW.getTime() + DEFAULT_ROOT_TTL_MS);
  assert.equal(new Date(new X509Certificate(root.certPem).validFrom).getTime(), NOW.getTime());
  assert.equal(root.trustDomain, TD);
  assert.match(root.keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  assert.ok(new X509Certificate(root.certPem).checkPrivateKey(createPrivateKey(root.keyPem)));

  // Self-signed and acceptable to OpenSSL as a trust anchor.
  const rootPath = writeFile(tmp.dir, 'root-self.pem', root.certPem);
  const v = opensslVerify(['-attime', AT_TIME, '-CAfile', rootPath, rootPath]);
  assert.equal(v.status, 0, v.out);
  assert.deepEqual(readCertIdentity(pemDecode(root.certPem, 'CERTIFICATE')), { uris: [`spiffe://${TD}`], isCA: true });
});

test('generateRoot: custom TTL, whole-second truncation, bad inputs', async () => {
  const r = await generateRoot({ clusterId: 'ABC-1', now: new Date(NOW.getTime() + 999), ttlMs: 24 * HOUR });
  assert.equal(r.trustDomain, 'abc-1.consul');
  assert.equal(r.notBefore.getTime(), NOW.getTime());
  assert.equal(r.notAfter.getTime(), NOW.getTime() + 24 * HOUR);
  await assert.rejects(generateRoot({ clusterId: 'x', now: new Date(NaN) }), RangeError);
  await assert.rejects(generateRoot({ clusterId: 'x', now: NOW, ttlMs: 0 }), RangeError);
  await assert.rejects(generateRoot({ clusterId: 'bad/id', now: NOW }), RangeError);
});

test('loadRoot round-trips: same ID, SigningKeyID, serial, dates, trust domain', () => {
  const loaded = loadRoot(root.certPem, root.keyPem);
  assert.deepEqual(loaded, root);
  // SEC1 (`EC PRIVATE KEY`, what Consul writes) is accepted and normalised to PKCS#8.
  const sec1 = createPrivateKey(root.keyPem).export({ type: 'sec1', format: 'pem' }) as string;
  assert.match(sec1, /BEGIN EC PRIVATE KEY/);
  assert.deepEqual(loadRoot(root.certPem, sec1), root);
});

/** A self-signed certificate with chosen CA flag and URIs, plus its PKCS#8 key PEM. */
async function customRoot(isCA: boolean, uris: string[]): Promise<{ certPem: string; keyPem: string }> {
  const keys = await webcrypto.subtle.generateKey({ name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign', 'verify']);
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01',
    name: 'CN=custom',
    notBefore: NOW,
    notAfter: new Date(NOW.getTime() + HOUR),
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(isCA, undefined, true),
      ...(uris.length ? [new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: 'url' as const, value })))] : []),
    ],
  });
  const pkcs8 = new Uint8Array(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey));
  return { certPem: pemEncode('CERTIFICATE', new Uint8Array(cert.rawData)), keyPem: pemEncode('PRIVATE KEY', pkcs8) };
}

test('loadRoot refuses unusable roots with coded CaErrors', async () => {
  const expectCode = (fn: () => unknown, code: CaErrorCode) =>
    assert.throws(fn, (e: unknown) => e instanceof CaError && e.code === code, code);

  expectCode(() => loadRoot('not pem', root.keyPem), 'CA_ROOT_MALFORMED');
  expectCode(() => loadRoot(root.certPem, 'not a key'), 'CA_ROOT_MALFORMED');
  const other = await generateRoot({ clusterId: CLUSTER_ID, now: NOW });
  expectCode(() => loadRoot(root.certPem, other.keyPem), 'CA_ROOT_KEY_MISMATCH');
  // P-384 is a supported CA key now, so a P-384 key is simply the wrong key for this cert.
  const p384 = generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  expectCode(() => loadRoot(root.certPem, p384), 'CA_ROOT_KEY_MISMATCH');
  for (const [type, opts] of [
    ['ed25519', {}],
    ['ec', { namedCurve: 'secp224r1' }],
    ['ec', { namedCurve: 'secp256k1' }],
    ['rsa', { modulusLength: 1024 }],
  ] as const) {
    const key = generateKeyPairSync(type as 'ec', opts as { namedCurve: string }).privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
    expectCode(() => loadRoot(root.certPem, key), 'CA_ROOT_UNSUPPORTED_KEY');
  }

  const notCa = await customRoot(false, [`spiffe://${TD}`]);
  expectCode(() => loadRoot(notCa.certPem, notCa.keyPem), 'CA_ROOT_NOT_CA');
  const serviceUri = await customRoot(true, [WEB_URI]);
  expectCode(() => loadRoot(serviceUri.certPem, serviceUri.keyPem), 'CA_ROOT_BAD_URI');
  const twoUris = await customRoot(true, [`spiffe://${TD}`, `spiffe://other.consul`]);
  expectCode(() => loadRoot(twoUris.certPem, twoUris.keyPem), 'CA_ROOT_BAD_URI');
  const noUri = await customRoot(true, []);
  expectCode(() => loadRoot(noUri.certPem, noUri.keyPem), 'CA_ROOT_BAD_URI');

  // A well-formed supplied root without SKI still loads; SigningKeyID falls back to KeyId.
  const ok = await customRoot(true, [`spiffe://${TD}`]);
  const loaded = loadRoot(ok.certPem, ok.keyPem);
  assert.equal(loaded.signingKeyId, spkiSha256ColonUpper(ok.certPem).toLowerCase());
});

// ---------------------------------------------------------------------------------------
// Leaf CSR (proxy side).

test('createLeafCsr: empty subject, exactly one URI SAN, P-256 key kept by the caller', async () => {
  const { csrPem, keyPem } = await createLeafCsr(WEB_URI);
  const csr = new x509.Pkcs10CertificateRequest(pemDecode(csrPem, 'CERTIFICATE REQUEST'));
  assert.equal(csr.subject, '');
  assert.ok(await csr.verify());
  const sanExts = csr.extensions.filter((e) => e.type === '2.5.29.17');
  assert.equal(sanExts.length, 1);
  const sanExt = sanExts[0];
  assert.ok(sanExt instanceof x509.SubjectAlternativeNameExtension);
  assert.deepEqual(
    sanExt.names.items.map((n) => [n.type, n.value]),
    [['url', WEB_URI]],
  );
  const key = createPrivateKey(keyPem);
  assert.equal(key.asymmetricKeyDetails?.namedCurve, 'prime256v1');
  assert.match(keyPem, /^-----BEGIN PRIVATE KEY-----\n/);
  // OpenSSL agrees the request is self-consistent.
  execFileSync('openssl', ['req', '-verify', '-noout'], { input: csrPem, stdio: ['pipe', 'ignore', 'ignore'] });
  await assert.rejects(createLeafCsr('https://example.com'), RangeError);
});

// ---------------------------------------------------------------------------------------
// Leaf signing (CA side).

test('signLeafCsr: leaf of §1.7 verifies with openssl and has every required field', async () => {
  const { csrPem, keyPem } = await createLeafCsr(WEB_URI);
  const issued = await sign(csrPem);

  // Exactly one PEM block, newline-terminated (no intermediates yet).
  assert.equal(pemDecodeAll(issued.CertPEM, 'CERTIFICATE').length, 1);
  assert.ok(issued.CertPEM.endsWith('-----END CERTIFICATE-----\n'));

  const rootPath = writeFile(tmp.dir, 'root.pem', root.certPem);
  const leafPath = writeFile(tmp.dir, 'leaf.pem', issued.CertPEM);
  for (const purpose of ['sslserver', 'sslclient']) {
    const v = opensslVerify(['-attime', AT_TIME, '-purpose', purpose, '-CAfile', rootPath, leafPath]);
    assert.equal(v.status, 0, `${purpose}: ${v.out}`);
    assert.match(v.out, /: OK/);
  }

  const text = opensslText(issued.CertPEM);
  assert.match(opensslSection(text, 'X509v3 Basic Constraints'), /critical[\s\S]*CA:FALSE/);
  const ku = opensslSection(text, 'X509v3 Key Usage');
  assert.match(ku, /critical/);
  assert.match(ku, /^\s*Digital Signature, Key Encipherment, Data Encipherment, Key Agreement\s*$/m);
  assert.match(
    opensslSection(text, 'X509v3 Extended Key Usage'),
    /^\s*TLS Web Client Authentication, TLS Web Server Authentication\s*$/m,
  );
  const sanText = opensslSection(text, 'X509v3 Subject Alternative Name');
  assert.match(sanText, /Subject Alternative Name: critical/);
  assert.match(sanText, new RegExp(`^\\s*URI:${WEB_URI.replaceAll('.', '\\.')}\\s*$`, 'm'));

  const cert = new X509Certificate(issued.CertPEM);
  assert.match(text, /^\s*Subject: *$/m, 'empty subject');
  assert.ok(cert.checkIssued(new X509Certificate(root.certPem)));
  assert.ok(cert.checkPrivateKey(createPrivateKey(keyPem)), 'leaf carries the CSR key');

  // NotBefore = now - 60 s exactly; NotAfter = NotBefore + 72h.
  const nb = NOW.getTime() - 60_000;
  assert.equal(new Date(cert.validFrom).getTime(), nb);
  assert.equal(new Date(cert.validTo).getTime(), nb + DEFAULT_LEAF_TTL_MS);

  // Serial: random, >= 64 bits, and what IssuedCert reports.
  assert.ok(BigInt(`0x${cert.serialNumber}`) >= 1n << 64n);
  assert.equal(issued.SerialNumber, colonHex(Buffer.from(cert.serialNumber, 'hex')));

  // SKI = KeyId(leaf SPKI); AKI = root SKI (what agents compare with SigningKeyID).
  const p = new x509.X509Certificate(pemDecode(issued.CertPEM, 'CERTIFICATE'));
  const skiHex = p.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId ?? '';
  const akiHex = p.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId ?? '';
  assert.equal(colonHex(Buffer.from(skiHex, 'hex')), spkiSha256ColonUpper(issued.CertPEM).toLowerCase());
  assert.equal(colonHex(Buffer.from(akiHex, 'hex')), root.signingKeyId);

  assert.deepEqual(readCertIdentity(pemDecode(issued.CertPEM, 'CERTIFICATE')), { uris: [WEB_URI], isCA: false });

  assert.deepEqual(
    { ...issued, CertPEM: '', SerialNumber: '' },
    {
      SerialNumber: '',
      CertPEM: '',
      Service: 'web',
      ServiceURI: WEB_URI,
      ValidAfter: '2026-03-01T11:59:00Z',
      ValidBefore: '2026-03-04T11:59:00Z',
      Namespace: 'default',
      Datacenter: DC,
    },
  );
});

test('signLeafCsr: custom TTL; trust domain compared case-insensitively (Consul CanSign)', async () => {
  const { csrPem } = await createLeafCsr(WEB_URI);
  const issued = await sign(csrPem, { ttlMs: 2 * HOUR, trustDomain: TD.toUpperCase() });
  assert.equal(issued.ValidBefore, '2026-03-01T13:59:00Z');
  await assert.rejects(sign(csrPem, { ttlMs: -1 }), RangeError);
});

test('signLeafCsr: each refusal has its CsrError code, in Consul order (§1.11)', async () => {
  const svc = (td: string, dc: string) => `spiffe://${td}/ns/default/dc/${dc}/svc/web`;
  const cases: [string, Promise<string>, CsrErrorCode, RegExp][] = [
    ['garbage', Promise.resolve('hello'), 'CSR_MALFORMED', /could not be parsed/],
    ['no SAN at all', makeCsr([]), 'CSR_INVALID_URI_COUNT', /^CSR SAN contains an invalid number of URIs: 0$/],
    ['DNS SAN only', makeCsr([{ type: 'dns', value: 'web' }]), 'CSR_INVALID_URI_COUNT', /invalid number of URIs: 0/],
    [
      'two URIs',
      makeCsr([
        { type: 'url', value: WEB_URI },
        { type: 'url', value: svc(TD, 'dc1').replace('web', 'api') },
      ]),
      'CSR_INVALID_URI_COUNT',
      /invalid number of URIs: 2/,
    ],
    [
      'email SAN',
      makeCsr([
        { type: 'url', value: WEB_URI },
        { type: 'email', value: 'a@b.c' },
      ]),
      'CSR_EMAIL_SAN',
      /^CSR SAN does not allow specifying email addresses$/,
    ],
    ['not a SPIFFE ID', makeCsr([{ type: 'url', value: 'https://web.example/' }]), 'CSR_INVALID_SPIFFE_ID', /expected format/],
    ['percent-encoded ID', makeCsr([{ type: 'url', value: `${WEB_URI}%20` }]), 'CSR_INVALID_SPIFFE_ID', /expected format/],
    [
      'signing ID',
      makeCsr([{ type: 'url', value: `spiffe://${TD}` }]),
      'CSR_INVALID_ID_KIND',
      /^SPIFFE ID in CSR must be a service, mesh-gateway, or agent ID$/,
    ],
    ['server ID', makeCsr([{ type: 'url', value: `spiffe://${TD}/agent/server/dc/dc1` }]), 'CSR_INVALID_ID_KIND', /must be a service/],
    ['agent ID', makeCsr([{ type: 'url', value: `spiffe://${TD}/agent/client/dc/dc1/id/n1` }]), 'CSR_UNSUPPORTED_ID_KIND', /not implemented yet/],
    ['mesh gateway ID', makeCsr([{ type: 'url', value: `spiffe://${TD}/gateway/mesh/dc/dc1` }]), 'CSR_UNSUPPORTED_ID_KIND', /not implemented yet/],
    [
      'other datacenter',
      makeCsr([{ type: 'url', value: svc(TD, 'dc2') }]),
      'CSR_WRONG_DATACENTER',
      /^SPIFFE ID in CSR from a different datacenter: dc2, we are dc1$/,
    ],
    [
      'other trust domain',
      makeCsr([{ type: 'url', value: svc('other.consul', 'dc1') }]),
      'CSR_WRONG_TRUST_DOMAIN',
      new RegExp(`^SPIFFE ID in CSR from a different trust domain: other\\.consul, we are ${TD.replaceAll('.', '\\.')}$`),
    ],
    // Consul checks the datacenter (authorization step) before the trust domain.
    ['other dc and trust domain', makeCsr([{ type: 'url', value: svc('other.consul', 'dc2') }]), 'CSR_WRONG_DATACENTER', /datacenter/],
    [
      'URI plus DNS SAN',
      makeCsr([
        { type: 'url', value: WEB_URI },
        { type: 'dns', value: 'web.example' },
      ]),
      'CSR_UNSUPPORTED_SAN',
      /DNS\/IP SANs are not supported yet/,
    ],
    ['P-384 key', makeCsr([{ type: 'url', value: WEB_URI }], 'P-384'), 'CSR_UNSUPPORTED_KEY', /EC P-256/],
  ];
  for (const [name, csrP, code, message] of cases) {
    const csrPem = await csrP;
    await assert.rejects(
      sign(csrPem),
      (e: unknown) => {
        assert.ok(e instanceof CsrError, `${name}: ${String(e)}`);
        assert.equal(e.code, code, name);
        assert.match(e.message, message, name);
        return true;
      },
      name,
    );
  }
});

test('signLeafCsr: a CSR whose signature does not verify is CSR_BAD_SIGNATURE', async () => {
  const { csrPem } = await createLeafCsr(WEB_URI);
  const der = pemDecode(csrPem, 'CERTIFICATE REQUEST');
  // Change one character of the signed URI ("svc/web" -> "svc/wfb"): still valid DER.
  const at = Buffer.from(der).indexOf('svc/web');
  assert.ok(at > 0);
  const tampered = Uint8Array.from(der);
  tampered[at + 5] = 'f'.charCodeAt(0);
  await assert.rejects(sign(pemEncode('CERTIFICATE REQUEST', tampered)), (e: unknown) => e instanceof CsrError && e.code === 'CSR_BAD_SIGNATURE');
});

test('signLeafCsr: refuses to sign with an expired root (§1.11 step 6)', async () => {
  const { csrPem } = await createLeafCsr(WEB_URI);
  const later = new Date(root.notAfter.getTime() + 1000);
  await assert.rejects(sign(csrPem, { now: later }), (e: unknown) => e instanceof CaError && e.code === 'CA_ROOT_EXPIRED');
});

/** A CSR made by the openssl CLI (not by our library), with one URI SAN and empty subject. */
function opensslCsr(newkey: string): string {
  return execFileSync(
    'openssl',
    ['req', '-new', '-newkey', newkey, '-nodes', '-keyout', '/dev/null', '-subj', '/', '-addext', `subjectAltName=critical,URI:${WEB_URI}`],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] },
  );
}

test('signLeafCsr: interoperates with OpenSSL-made CSRs; refuses non-P-256 keys', async () => {
  const p256Params = writeFile(tmp.dir, 'p256.param', execFileSync('openssl', ['ecparam', '-name', 'prime256v1'], { encoding: 'utf8' }));
  const issued = await sign(opensslCsr(`ec:${p256Params}`));
  assert.equal(issued.ServiceURI, WEB_URI);
  for (const k of ['ed25519', 'rsa:2048']) {
    await assert.rejects(sign(opensslCsr(k)), (e: unknown) => e instanceof CsrError && e.code === 'CSR_UNSUPPORTED_KEY', k);
  }
});

test('signLeafCsr: oversized input is refused before parsing', async () => {
  const { csrPem } = await createLeafCsr(WEB_URI);
  await assert.rejects(sign(csrPem + ' '.repeat(20_000)), (e: unknown) => e instanceof CsrError && e.code === 'CSR_MALFORMED');
});
