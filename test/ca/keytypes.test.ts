// CA key types (consul-mesh.md §1.3): EC P-256/384/521 and RSA 2048/4096 roots, the
// signature algorithm following the CA key (ECDSA-SHA256 for every curve, PKCS#1 v1.5
// SHA-256 for RSA), leaves always EC P-256. Every certificate is checked with the openssl
// CLI; RSA and P-384 roots also carry a real node:tls mTLS handshake.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash, createPrivateKey } from 'node:crypto';
import {
  createLeafCsr,
  generateRoot,
  loadRoot,
  signLeafCsr,
  type CaKeyType,
  type RootMaterial,
} from '../../src/ca/authority.ts';
import { colonHex } from '../../src/ca/certs.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import {
  AT_TIME,
  CLUSTER_ID,
  DC,
  NOW,
  TD,
  WEB_URI,
  mtlsHandshake,
  opensslSection,
  opensslText,
  opensslVerify,
  tempDir,
  writeFile,
} from './helpers.ts';

type Kind = { type: CaKeyType; bits: number; keyLine: RegExp; sigAlg: string };

const KINDS: Kind[] = [
  { type: 'ec', bits: 256, keyLine: /NIST CURVE: P-256/, sigAlg: 'ecdsa-with-SHA256' },
  { type: 'ec', bits: 384, keyLine: /NIST CURVE: P-384/, sigAlg: 'ecdsa-with-SHA256' },
  { type: 'ec', bits: 521, keyLine: /NIST CURVE: P-521/, sigAlg: 'ecdsa-with-SHA256' },
  { type: 'rsa', bits: 2048, keyLine: /Public-Key: \(2048 bit\)/, sigAlg: 'sha256WithRSAEncryption' },
];

const roots = new Map<string, RootMaterial>();
let tmp: ReturnType<typeof tempDir>;

const label = (k: { type: string; bits: number }): string => `${k.type}-${k.bits}`;

before(async () => {
  tmp = tempDir();
  for (const k of KINDS) roots.set(label(k), await generateRoot({ clusterId: CLUSTER_ID, now: NOW, privateKeyType: k.type, privateKeyBits: k.bits }));
});
after(() => tmp.cleanup());

function spkiKeyIdColon(pem: string): string {
  const spki = new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
  return colonHex(createHash('sha256').update(spki).digest());
}

/** Checks a root and a leaf under it with openssl; shared by the table and the RSA-4096 test. */
async function checkRootAndLeaf(root: RootMaterial, k: Kind): Promise<void> {
  const name = label(k);
  assert.equal(root.privateKeyType, k.type, name);
  assert.equal(root.privateKeyBits, k.bits, name);
  assert.match(root.keyPem, /^-----BEGIN PRIVATE KEY-----\n/, `${name}: PKCS#8`);

  const text = opensslText(root.certPem);
  assert.match(text, new RegExp(`Signature Algorithm: ${k.sigAlg}`), `${name}: root signature algorithm`);
  assert.match(text, k.keyLine, `${name}: root key`);
  assert.match(opensslSection(text, 'X509v3 Basic Constraints'), /critical[\s\S]*CA:TRUE/);
  assert.match(opensslSection(text, 'X509v3 Key Usage'), /critical[\s\S]*Digital Signature, Certificate Sign, CRL Sign/);
  assert.match(opensslSection(text, 'X509v3 Subject Alternative Name'), new RegExp(`URI:spiffe://${TD.replaceAll('.', '\\.')}\\s*$`, 'm'));
  assert.equal(root.signingKeyId, spkiKeyIdColon(root.certPem), `${name}: SKI is Consul's KeyId`);
  const rootPath = writeFile(tmp.dir, `${name}-root.pem`, root.certPem);
  const self = opensslVerify(['-attime', AT_TIME, '-CAfile', rootPath, rootPath]);
  assert.equal(self.status, 0, `${name}: ${self.out}`);

  // loadRoot derives type and bits from the key, whatever its PEM flavour.
  assert.deepEqual(loadRoot(root.certPem, root.keyPem), root);
  const traditional = createPrivateKey(root.keyPem).export({ type: k.type === 'ec' ? 'sec1' : 'pkcs1', format: 'pem' }) as string;
  assert.match(traditional, k.type === 'ec' ? /BEGIN EC PRIVATE KEY/ : /BEGIN RSA PRIVATE KEY/);
  assert.deepEqual(loadRoot(root.certPem, traditional), root);

  // A leaf under it: EC P-256 key, signed with the root's algorithm, verifies for both purposes.
  const { csrPem } = await createLeafCsr(WEB_URI);
  const issued = await signLeafCsr({ csrPem, root, trustDomain: TD, datacenter: DC, now: NOW });
  const leafText = opensslText(issued.CertPEM);
  assert.match(leafText, new RegExp(`Signature Algorithm: ${k.sigAlg}`), `${name}: leaf signature algorithm`);
  assert.match(leafText, /NIST CURVE: P-256/, `${name}: leaf key is always P-256`);
  assert.match(opensslSection(leafText, 'X509v3 Authority Key Identifier'), new RegExp(root.signingKeyId.toUpperCase()));
  const leafPath = writeFile(tmp.dir, `${name}-leaf.pem`, issued.CertPEM);
  for (const purpose of ['sslserver', 'sslclient']) {
    const v = opensslVerify(['-attime', AT_TIME, '-purpose', purpose, '-CAfile', rootPath, leafPath]);
    assert.equal(v.status, 0, `${name} ${purpose}: ${v.out}`);
  }
}

for (const k of KINDS) {
  test(`${label(k)} root and a leaf under it, checked with openssl`, async () => {
    await checkRootAndLeaf(roots.get(label(k))!, k);
  });
}

test('rsa-4096 root and a leaf under it (one test: the key takes seconds to generate)', async () => {
  const root = await generateRoot({ clusterId: CLUSTER_ID, now: NOW, privateKeyType: 'rsa', privateKeyBits: 4096 });
  await checkRootAndLeaf(root, { type: 'rsa', bits: 4096, keyLine: /Public-Key: \(4096 bit\)/, sigAlg: 'sha256WithRSAEncryption' });
});

test('generateRoot refuses key parameters Consul does not generate (§1.3)', async () => {
  const bad: [string, number | undefined, RegExp][] = [
    ['rsa', undefined, /required when privateKeyType is "rsa"/],
    ['rsa', 3072, /2048, 4096/],
    ['rsa', 1024, /2048, 4096/],
    ['ec', 224, /256, 384, 521/],
    ['ec', 2048, /256, 384, 521/],
    ['dsa', 2048, /"ec" or "rsa"/],
  ];
  for (const [type, bits, msg] of bad) {
    await assert.rejects(
      generateRoot({ clusterId: CLUSTER_ID, now: NOW, privateKeyType: type as CaKeyType, ...(bits === undefined ? {} : { privateKeyBits: bits }) }),
      (e: unknown) => e instanceof RangeError && msg.test(e.message),
      `${type}/${bits}`,
    );
  }
  // Defaults: EC P-256.
  const d = await generateRoot({ clusterId: CLUSTER_ID, now: NOW });
  assert.deepEqual([d.privateKeyType, d.privateKeyBits], ['ec', 256]);
});

test('mTLS over node:tls with leaves of RSA-2048 and EC P-384 roots', async () => {
  const now = new Date(); // OpenSSL checks validity against the real clock in a handshake
  for (const k of [KINDS[3]!, KINDS[1]!]) {
    const root = await generateRoot({ clusterId: CLUSTER_ID, now, privateKeyType: k.type, privateKeyBits: k.bits });
    const leaf = async (svc: string) => {
      const { csrPem, keyPem } = await createLeafCsr(serviceSpiffeId(TD, 'default', DC, svc));
      return { key: keyPem, cert: (await signLeafCsr({ csrPem, root, trustDomain: TD, datacenter: DC, now })).CertPEM, ca: [root.certPem] };
    };
    const r = await mtlsHandshake(await leaf('web'), await leaf('api'));
    assert.ok(r.ok, `${label(k)}: ${JSON.stringify(r)}`);
    assert.deepEqual(r.serverSawClient, [serviceSpiffeId(TD, 'default', DC, 'api')]);
    assert.deepEqual(r.clientSawServer, [serviceSpiffeId(TD, 'default', DC, 'web')]);
  }
});
