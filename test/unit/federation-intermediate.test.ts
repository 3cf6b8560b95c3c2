// The intermediate certificate a primary signs for a secondary datacenter (Consul's
// ConnectCA.SignIntermediate profile, consul-mesh.md §1.6), the secondary's checks of what
// comes back, and leaves signed with it chaining leaf → intermediate → root.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createPublicKey } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { checkIntermediate, createIntermediateCsr, createLeafCsr, generateRoot, IntermediateError, signIntermediateCsr, signLeafCsr } from '../../src/ca/authority.ts';
import { serviceSpiffeId, trustDomainFor } from '../../src/ca/spiffe.ts';
import { CLUSTER_ID, NOW, TD, makeCsr } from '../ca/helpers.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

const HOUR = 3_600_000;

test('the intermediate: CA:TRUE pathlen 0, keyCertSign|cRLSign|digitalSignature, URI spiffe://<td>, SKI/AKI, IntermediateCertTTL', async () => {
  const root = await generateRoot({ clusterId: CLUSTER_ID, now: NOW });
  const { csrPem, keyPem } = await createIntermediateCsr({ trustDomain: TD, privateKeyType: 'ec', privateKeyBits: 384 });
  const pem = await signIntermediateCsr({ csrPem, root, trustDomain: TD, now: NOW, ttlMs: 8760 * HOUR });
  const cert = new X509Certificate(pem);
  assert.equal(cert.ca, true);
  assert.ok(cert.checkIssued(new X509Certificate(root.certPem)));
  assert.ok(cert.verify(createPublicKey(root.certPem)));
  assert.equal(cert.subjectAltName, `URI:spiffe://${TD}`);
  assert.equal(Date.parse(cert.validFrom), NOW.getTime() - 60_000, 'back-dated one minute');
  assert.equal(Date.parse(cert.validTo), NOW.getTime() - 60_000 + 8760 * HOUR);
  // The key is the CSR's, and it stayed with the caller.
  assert.ok(cert.publicKey.equals(createPublicKey(keyPem)));
  assert.equal(cert.publicKey.asymmetricKeyDetails?.namedCurve, 'secp384r1');

  const dir = mkdtempSync(join(tmpdir(), 'meshd-int-'));
  try {
    writeFileSync(join(dir, 'int.pem'), pem);
    const text = execFileSync('openssl', ['x509', '-in', join(dir, 'int.pem'), '-noout', '-text'], { encoding: 'utf8' });
    assert.match(text, /X509v3 Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    assert.match(text, /X509v3 Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign\n/);
    const ski = /Subject Key Identifier:\s+([0-9A-F:]+)/.exec(text)?.[1];
    const aki = /Authority Key Identifier:\s+(?:keyid:)?([0-9A-F:]+)/.exec(text)?.[1];
    assert.equal(aki?.toLowerCase(), root.signingKeyId, 'AKI names the root');
    assert.notEqual(ski, aki);
    assert.match(text, /Subject: CN = sec-[0-9a-z]{8}\.consul\.ca\.11111111\.consul/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('the intermediate never outlives its root', async () => {
  const root = await generateRoot({ clusterId: CLUSTER_ID, now: NOW, ttlMs: 100 * HOUR });
  const { csrPem } = await createIntermediateCsr({ trustDomain: TD });
  const cert = new X509Certificate(await signIntermediateCsr({ csrPem, root, trustDomain: TD, now: NOW, ttlMs: 8760 * HOUR }));
  assert.equal(Date.parse(cert.validTo), root.notAfter.getTime());
});

test('an RSA primary signs an RSA intermediate (the primary config\'s PrivateKeyType/Bits)', async () => {
  const root = await generateRoot({ clusterId: CLUSTER_ID, now: NOW, privateKeyType: 'rsa', privateKeyBits: 2048 });
  const { csrPem, keyPem } = await createIntermediateCsr({ trustDomain: TD, privateKeyType: 'rsa', privateKeyBits: 2048 });
  const certPem = await signIntermediateCsr({ csrPem, root, trustDomain: TD, now: NOW, ttlMs: 8760 * HOUR });
  const m = checkIntermediate({ certPem, keyPem, root, trustDomain: TD });
  assert.equal(m.privateKeyType, 'rsa');
  assert.equal(m.privateKeyBits, 2048);
});

test('the primary refuses CSRs for another trust domain, with two URIs, or a leaf key', async () => {
  const root = await generateRoot({ clusterId: CLUSTER_ID, now: NOW });
  const other = await createIntermediateCsr({ trustDomain: trustDomainFor('99999999-2222-3333-4444-555555555555') });
  await assert.rejects(signIntermediateCsr({ csrPem: other.csrPem, root, trustDomain: TD, now: NOW, ttlMs: 8760 * HOUR }), (e: unknown) => e instanceof IntermediateError && /URI SANs must be exactly spiffe:\/\/11111111/.test(e.message));
  const two = await makeCsr([{ type: 'url', value: `spiffe://${TD}` }, { type: 'url', value: `spiffe://${TD}/x` }]);
  await assert.rejects(signIntermediateCsr({ csrPem: two, root, trustDomain: TD, now: NOW, ttlMs: 8760 * HOUR }), IntermediateError);
  await assert.rejects(signIntermediateCsr({ csrPem: 'garbage', root, trustDomain: TD, now: NOW, ttlMs: 8760 * HOUR }), /not a PEM PKCS#10/);
  // Past its root's life nothing is signed.
  const { csrPem } = await createIntermediateCsr({ trustDomain: TD });
  await assert.rejects(signIntermediateCsr({ csrPem, root, trustDomain: TD, now: new Date(root.notAfter.getTime() + 1000), ttlMs: 8760 * HOUR }), /expired/);
});

test('the secondary refuses an intermediate from another root or for another key', async () => {
  const root = await generateRoot({ clusterId: CLUSTER_ID, now: NOW });
  const stranger = await generateRoot({ clusterId: CLUSTER_ID, now: NOW });
  const mine = await createIntermediateCsr({ trustDomain: TD });
  const certPem = await signIntermediateCsr({ csrPem: mine.csrPem, root: stranger, trustDomain: TD, now: NOW, ttlMs: 8760 * HOUR });
  assert.throws(() => checkIntermediate({ certPem, keyPem: mine.keyPem, root, trustDomain: TD }), (e: unknown) => e instanceof IntermediateError && e.code === 'INTERMEDIATE_NOT_ISSUED');
  const good = await signIntermediateCsr({ csrPem: mine.csrPem, root, trustDomain: TD, now: NOW, ttlMs: 8760 * HOUR });
  const otherKey = await createIntermediateCsr({ trustDomain: TD });
  assert.throws(() => checkIntermediate({ certPem: good, keyPem: otherKey.keyPem, root, trustDomain: TD }), /does not match/);
  assert.equal(checkIntermediate({ certPem: good, keyPem: mine.keyPem, root, trustDomain: TD }).trustDomain, TD);
});

test('a leaf signed with the intermediate chains leaf → intermediate → root (openssl verify)', async () => {
  const root = await generateRoot({ clusterId: CLUSTER_ID, now: new Date() });
  const { csrPem, keyPem } = await createIntermediateCsr({ trustDomain: TD });
  const intPem = await signIntermediateCsr({ csrPem, root, trustDomain: TD, now: new Date(), ttlMs: 8760 * HOUR });
  const signer = checkIntermediate({ certPem: intPem, keyPem, root, trustDomain: TD });
  const leafCsr = await createLeafCsr(serviceSpiffeId(TD, 'default', 'dc2', 'api'));
  const leaf = await signLeafCsr({ csrPem: leafCsr.csrPem, root: signer, trustDomain: TD, datacenter: 'dc2', now: new Date(), intermediatePems: [intPem] });
  const pems = leaf.CertPEM.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n/g) ?? [];
  assert.equal(pems.length, 2, 'CertPEM carries the intermediate after the leaf');
  const dir = mkdtempSync(join(tmpdir(), 'meshd-int-'));
  try {
    writeFileSync(join(dir, 'root.pem'), root.certPem);
    writeFileSync(join(dir, 'int.pem'), pems[1] as string);
    writeFileSync(join(dir, 'leaf.pem'), pems[0]);
    assert.match(execFileSync('openssl', ['verify', '-CAfile', join(dir, 'root.pem'), '-untrusted', join(dir, 'int.pem'), join(dir, 'leaf.pem')], { encoding: 'utf8' }), /OK/);
    // Without the intermediate the leaf does not verify: it really is signed by it.
    assert.throws(() => execFileSync('openssl', ['verify', '-CAfile', join(dir, 'root.pem'), join(dir, 'leaf.pem')], { stdio: 'pipe' }));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
