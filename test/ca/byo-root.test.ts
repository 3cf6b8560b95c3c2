// Bring your own root (consul-mesh.md §1.5, issue: "reject with a clear error a cert that is
// not a CA, whose key does not match, whose single URI SAN is not spiffe://<td> of this
// cluster, or that is expired"). Certificates are made by the openssl CLI, as a user would
// make them, in every key flavour we accept (PKCS#8, SEC1 "EC PRIVATE KEY", PKCS#1
// "RSA PRIVATE KEY"), and by our own generator.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CaError,
  createLeafCsr,
  generateRoot,
  loadRoot,
  signLeafCsr,
  validateProvidedRoot,
  type CaErrorCode,
} from '../../src/ca/authority.ts';
import { CLUSTER_ID, DC, TD, WEB_URI, openssl, opensslVerify, tempDir, writeFile } from './helpers.ts';

let tmp: ReturnType<typeof tempDir>;
let minimalConfig: string;
let n = 0;

before(() => {
  tmp = tempDir();
  // A config with no default extensions, so each certificate has exactly the -addext ones
  // (plus the subjectKeyIdentifier OpenSSL 3 adds by itself).
  minimalConfig = writeFile(tmp.dir, 'min.cnf', '[req]\ndistinguished_name = dn\n[dn]\n');
});
after(() => tmp.cleanup());

const CA_EXTS = [
  'basicConstraints=critical,CA:TRUE',
  'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
  `subjectAltName=URI:spiffe://${TD}`,
];

/** A key file made by openssl: `genpkey` algorithms, or the traditional SEC1/PKCS#1 forms. */
function opensslKey(kind: 'ec-p256' | 'ec-p384' | 'ec-p256-sec1' | 'rsa-2048-pkcs1' | 'rsa-2048' | 'ed25519' | 'rsa-1024'): string {
  const path = join(tmp.dir, `key-${n++}.pem`);
  const args: Record<typeof kind, string[]> = {
    'ec-p256': ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'],
    'ec-p384': ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384'],
    'ec-p256-sec1': ['ecparam', '-genkey', '-name', 'prime256v1', '-noout'],
    'rsa-2048-pkcs1': ['genrsa', '-traditional'],
    'rsa-2048': ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'],
    'rsa-1024': ['genpkey', '-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:1024'],
    ed25519: ['genpkey', '-algorithm', 'ED25519'],
  };
  // genrsa takes the key size after its options.
  openssl([...args[kind], '-out', path, ...(kind === 'rsa-2048-pkcs1' ? ['2048'] : [])]);
  return path;
}

/** A self-signed certificate made by `openssl req -x509` with exactly `exts`. */
function opensslRoot(keyPath: string, exts: string[], days = 3650): { certPem: string; keyPem: string } {
  const out = join(tmp.dir, `cert-${n++}.pem`);
  openssl(['req', '-x509', '-config', minimalConfig, '-key', keyPath, '-subj', '/CN=My Corp Mesh Root', '-days', String(days), '-sha256', ...exts.flatMap((e) => ['-addext', e]), '-out', out]);
  return { certPem: readFileSync(out, 'utf8'), keyPem: readFileSync(keyPath, 'utf8') };
}

/** An instant an hour into the certificate's validity. */
function inside(certPem: string): Date {
  return new Date(new X509Certificate(certPem).validFromDate.getTime() + 3_600_000);
}

test('accepted: openssl-made roots in PKCS#8, SEC1 and PKCS#1 keys; leaves under them verify', async () => {
  const cases: [string, Parameters<typeof opensslKey>[0], string, number, RegExp][] = [
    ['EC P-256, PKCS#8', 'ec-p256', 'ec', 256, /BEGIN PRIVATE KEY/],
    ['EC P-256, SEC1', 'ec-p256-sec1', 'ec', 256, /BEGIN EC PRIVATE KEY/],
    ['EC P-384, PKCS#8', 'ec-p384', 'ec', 384, /BEGIN PRIVATE KEY/],
    ['RSA-2048, PKCS#1', 'rsa-2048-pkcs1', 'rsa', 2048, /BEGIN RSA PRIVATE KEY/],
  ];
  for (const [name, kind, type, bits, keyLabel] of cases) {
    const made = opensslRoot(opensslKey(kind), CA_EXTS);
    assert.match(made.keyPem, keyLabel, name);
    const now = inside(made.certPem);
    const root = validateProvidedRoot({ certPem: made.certPem, keyPem: made.keyPem, clusterId: CLUSTER_ID, now });
    assert.equal(root.privateKeyType, type, name);
    assert.equal(root.privateKeyBits, bits, name);
    assert.equal(root.trustDomain, TD);
    assert.match(root.keyPem, /^-----BEGIN PRIVATE KEY-----\n/, `${name}: normalised to PKCS#8`);
    assert.equal(root.id, new X509Certificate(made.certPem).fingerprint.toLowerCase());
    // OpenSSL wrote an RFC 5280 (SHA-1) SKI; SigningKeyID is whatever the root carries.
    const ski = openssl(['x509', '-noout', '-ext', 'subjectKeyIdentifier'], made.certPem).split('\n')[1]!.trim();
    assert.equal(root.signingKeyId, ski.toLowerCase(), name);
    assert.deepEqual(loadRoot(made.certPem, made.keyPem), root);

    const { csrPem } = await createLeafCsr(WEB_URI);
    const issued = await signLeafCsr({ csrPem, root, trustDomain: TD, datacenter: DC, now });
    const rootPath = writeFile(tmp.dir, `byo-root-${n++}.pem`, made.certPem);
    const leafPath = writeFile(tmp.dir, `byo-leaf-${n++}.pem`, issued.CertPEM);
    const at = String(Math.floor(now.getTime() / 1000) + 60);
    const v = opensslVerify(['-attime', at, '-purpose', 'sslclient', '-CAfile', rootPath, leafPath]);
    assert.equal(v.status, 0, `${name}: ${v.out}`);
  }
});

test('accepted: a root from our own generator, for its own cluster only', async () => {
  const now = new Date('2026-03-01T12:00:00Z');
  const ours = await generateRoot({ clusterId: CLUSTER_ID, now, privateKeyType: 'rsa', privateKeyBits: 2048 });
  assert.deepEqual(validateProvidedRoot({ certPem: ours.certPem, keyPem: ours.keyPem, clusterId: CLUSTER_ID, now }), ours);
  // Cluster IDs compare case-insensitively, as trust domains do (§1.1).
  assert.equal(validateProvidedRoot({ certPem: ours.certPem, keyPem: ours.keyPem, clusterId: CLUSTER_ID.toUpperCase(), now }).id, ours.id);
  assert.throws(
    () => validateProvidedRoot({ certPem: ours.certPem, keyPem: ours.keyPem, clusterId: 'another-cluster', now }),
    (e: unknown) => e instanceof CaError && e.code === 'CA_ROOT_WRONG_TRUST_DOMAIN',
  );
});

test('refused, each rule with its code and a message that names it', () => {
  const p256 = opensslKey('ec-p256');
  const good = opensslRoot(p256, CA_EXTS);
  const now = inside(good.certPem);
  const notAfter = new X509Certificate(good.certPem).validToDate.getTime();
  const notBefore = new X509Certificate(good.certPem).validFromDate.getTime();
  const without = (prefix: string) => CA_EXTS.filter((e) => !e.startsWith(prefix));

  const cases: [string, { certPem: string; keyPem: string }, Date, string, CaErrorCode, RegExp][] = [
    ['CA:FALSE', opensslRoot(p256, [...without('basicConstraints'), 'basicConstraints=critical,CA:FALSE']), now, CLUSTER_ID, 'CA_ROOT_NOT_CA', /not a CA: a basicConstraints extension with CA:TRUE is required/],
    ['no basicConstraints', opensslRoot(p256, without('basicConstraints')), now, CLUSTER_ID, 'CA_ROOT_NOT_CA', /CA:TRUE is required/],
    ['keyUsage without keyCertSign', opensslRoot(p256, [...without('keyUsage'), 'keyUsage=critical,digitalSignature']), now, CLUSTER_ID, 'CA_ROOT_NOT_CA', /keyCertSign/],
    ['key of another certificate', { certPem: good.certPem, keyPem: readFileSync(opensslKey('ec-p256'), 'utf8') }, now, CLUSTER_ID, 'CA_ROOT_KEY_MISMATCH', /PrivateKey does not match the public key of RootCert/],
    ['RSA key for an EC certificate', { certPem: good.certPem, keyPem: readFileSync(opensslKey('rsa-2048'), 'utf8') }, now, CLUSTER_ID, 'CA_ROOT_KEY_MISMATCH', /does not match/],
    ['no URI SAN', opensslRoot(p256, without('subjectAltName')), now, CLUSTER_ID, 'CA_ROOT_BAD_URI', /exactly one URI SAN/],
    ['DNS SAN only', opensslRoot(p256, [...without('subjectAltName'), 'subjectAltName=DNS:ca.example']), now, CLUSTER_ID, 'CA_ROOT_BAD_URI', /exactly one URI SAN/],
    ['two URI SANs', opensslRoot(p256, [...without('subjectAltName'), `subjectAltName=URI:spiffe://${TD},URI:spiffe://other.consul`]), now, CLUSTER_ID, 'CA_ROOT_BAD_URI', /exactly one URI SAN.*found \["spiffe/],
    ['service ID, not a signing ID', opensslRoot(p256, [...without('subjectAltName'), `subjectAltName=URI:${WEB_URI}`]), now, CLUSTER_ID, 'CA_ROOT_BAD_URI', /spiffe:\/\/<cluster-id>\.consul/],
    ['another cluster', good, now, '99999999-2222-3333-4444-555555555555', 'CA_ROOT_WRONG_TRUST_DOMAIN', /must be spiffe:\/\/99999999-2222-3333-4444-555555555555\.consul \(this cluster's trust domain\), found spiffe:\/\/11111111/],
    ['expired', good, new Date(notAfter + 1000), CLUSTER_ID, 'CA_ROOT_EXPIRED', /RootCert expired at/],
    ['not yet valid', good, new Date(notBefore - 1000), CLUSTER_ID, 'CA_ROOT_NOT_YET_VALID', /RootCert is not valid until/],
    ['Ed25519 key', opensslRoot(opensslKey('ed25519'), CA_EXTS), now, CLUSTER_ID, 'CA_ROOT_UNSUPPORTED_KEY', /PrivateKey is ed25519; supported key types are EC P-256, P-384 or P-521, or RSA of 2048 to 8192 bits/],
    ['RSA-1024 key', opensslRoot(opensslKey('rsa-1024'), CA_EXTS), now, CLUSTER_ID, 'CA_ROOT_UNSUPPORTED_KEY', /RSA 1024 bits/],
    ['certificate is not PEM', { certPem: 'hello', keyPem: good.keyPem }, now, CLUSTER_ID, 'CA_ROOT_MALFORMED', /RootCert is not a PEM X\.509 certificate/],
    ['key is not PEM', { certPem: good.certPem, keyPem: 'hello' }, now, CLUSTER_ID, 'CA_ROOT_MALFORMED', /PrivateKey could not be parsed/],
    ['key is a public key', { certPem: good.certPem, keyPem: openssl(['pkey', '-pubout', '-in', p256]) }, now, CLUSTER_ID, 'CA_ROOT_MALFORMED', /PrivateKey could not be parsed/],
    ['key is encrypted', { certPem: good.certPem, keyPem: openssl(['pkey', '-in', p256, '-aes256', '-passout', 'pass:secret']) }, now, CLUSTER_ID, 'CA_ROOT_MALFORMED', /unencrypted/],
  ];
  for (const [name, material, at, clusterId, code, message] of cases) {
    assert.throws(
      () => validateProvidedRoot({ certPem: material.certPem, keyPem: material.keyPem, clusterId, now: at }),
      (e: unknown) => {
        assert.ok(e instanceof CaError, `${name}: ${String(e)}`);
        assert.equal(e.code, code, `${name}: ${e.message}`);
        assert.match(e.message, message, name);
        return true;
      },
    );
  }
  // The good one passes at `now`.
  assert.equal(validateProvidedRoot({ ...good, clusterId: CLUSTER_ID, now }).trustDomain, TD);
});
