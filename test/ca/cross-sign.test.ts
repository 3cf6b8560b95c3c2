// Root rotation's cross-signed certificate (consul-mesh.md §1.12 step 3): the new root's
// subject, key and extensions, issued by the old root. The property that matters: a peer
// holding only the OLD root accepts a leaf of the NEW root when the chain
// leaf → cross-signed → old root is presented, checked with `openssl verify` and with a
// real node:tls mTLS handshake, for EC → EC, EC → RSA and RSA → EC rotations.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import {
  CaError,
  crossSignRoot,
  createLeafCsr,
  generateRoot,
  signLeafCsr,
  type CaKeyType,
  type RootMaterial,
} from '../../src/ca/authority.ts';
import { pemDecode } from '../../src/ca/certs.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import { OID_AUTHORITY_KEY_ID, parseCertificate } from '../../src/ca/x509.ts';
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
  pemBlocks,
  tempDir,
  writeFile,
} from './helpers.ts';

const HOUR = 3_600_000;
const WEEK = 7 * 24 * HOUR;

type KeySpec = { type: CaKeyType; bits: number };
const EC256: KeySpec = { type: 'ec', bits: 256 };
const EC384: KeySpec = { type: 'ec', bits: 384 };
const RSA2048: KeySpec = { type: 'rsa', bits: 2048 };

const PAIRS: [string, KeySpec, KeySpec][] = [
  ['EC P-256 → EC P-384', EC256, EC384],
  ['EC P-256 → RSA-2048', EC256, RSA2048],
  ['RSA-2048 → EC P-256', RSA2048, EC256],
];

let tmp: ReturnType<typeof tempDir>;
const roots = new Map<string, RootMaterial>();

function root(spec: KeySpec, when: 'old' | 'new'): RootMaterial {
  return roots.get(`${when}-${spec.type}-${spec.bits}`)!;
}

before(async () => {
  tmp = tempDir();
  for (const spec of [EC256, EC384, RSA2048]) {
    for (const when of ['old', 'new'] as const) {
      roots.set(
        `${when}-${spec.type}-${spec.bits}`,
        await generateRoot({ clusterId: CLUSTER_ID, now: NOW, privateKeyType: spec.type, privateKeyBits: spec.bits }),
      );
    }
  }
});
after(() => tmp.cleanup());

function spki(pem: string): Buffer {
  return new X509Certificate(pem).publicKey.export({ type: 'spki', format: 'der' });
}

for (const [name, oldSpec, newSpec] of PAIRS) {
  test(`${name}: cross-signed certificate fields, checked with openssl`, async () => {
    const oldRoot = root(oldSpec, 'old');
    const newRoot = root(newSpec, 'new');
    const at = new Date(NOW.getTime() + 2 * HOUR + 500); // sub-second part is truncated
    const pem = await crossSignRoot({ newRoot, oldRoot, now: at, ttlMs: WEEK });
    assert.equal(pemBlocks(pem).length, 1);
    assert.ok(pem.endsWith('-----END CERTIFICATE-----\n'));

    const cross = new X509Certificate(pem);
    const oldX = new X509Certificate(oldRoot.certPem);
    const newX = new X509Certificate(newRoot.certPem);
    assert.equal(cross.subject, newX.subject, 'subject is the new root');
    assert.equal(cross.issuer, oldX.subject, 'issuer is the old root');
    assert.ok(spki(pem).equals(spki(newRoot.certPem)), 'public key is the new root');
    assert.ok(cross.checkIssued(oldX) && cross.verify(oldX.publicKey), 'signed by the old key');
    assert.notEqual(cross.serialNumber, newX.serialNumber);
    assert.ok(BigInt(`0x${cross.serialNumber}`) >= 1n << 64n, 'random serial >= 64 bits');
    const nb = NOW.getTime() + 2 * HOUR - 60_000;
    assert.equal(cross.validFromDate.getTime(), nb, 'NotBefore = now - 1 min');
    assert.equal(cross.validToDate.getTime(), nb + WEEK, 'NotAfter = NotBefore + ttl');

    const text = opensslText(pem);
    const wantAlg = oldSpec.type === 'ec' ? 'ecdsa-with-SHA256' : 'sha256WithRSAEncryption';
    assert.match(text, new RegExp(`Signature Algorithm: ${wantAlg}`), "the old key's algorithm");
    assert.match(opensslSection(text, 'X509v3 Basic Constraints'), /critical[\s\S]*CA:TRUE/);
    assert.match(opensslSection(text, 'X509v3 Key Usage'), /critical[\s\S]*Digital Signature, Certificate Sign, CRL Sign/);
    assert.match(opensslSection(text, 'X509v3 Subject Alternative Name'), new RegExp(`URI:spiffe://${TD.replaceAll('.', '\\.')}\\s*$`, 'm'));
    assert.match(opensslSection(text, 'X509v3 Subject Key Identifier'), new RegExp(newRoot.signingKeyId.toUpperCase()));
    assert.match(opensslSection(text, 'X509v3 Authority Key Identifier'), new RegExp(oldRoot.signingKeyId.toUpperCase()));

    // Every other extension is the new root's, byte for byte and in the same order.
    const a = parseCertificate(pemDecode(pem, 'CERTIFICATE')).extensions;
    const b = parseCertificate(pemDecode(newRoot.certPem, 'CERTIFICATE')).extensions;
    assert.deepEqual(a.map((e) => e.oid), b.map((e) => e.oid));
    for (let i = 0; i < a.length; i++) {
      if (a[i]!.oid !== OID_AUTHORITY_KEY_ID) assert.deepEqual(Buffer.from(a[i]!.raw), Buffer.from(b[i]!.raw), a[i]!.oid);
    }
  });

  test(`${name}: a verifier holding only the old root accepts a new leaf via the cross-signed cert (openssl)`, async () => {
    const oldRoot = root(oldSpec, 'old');
    const newRoot = root(newSpec, 'new');
    const cross = await crossSignRoot({ newRoot, oldRoot, now: NOW, ttlMs: WEEK });
    const { csrPem } = await createLeafCsr(WEB_URI);
    const issued = await signLeafCsr({ csrPem, root: newRoot, trustDomain: TD, datacenter: DC, now: NOW, intermediatePems: [cross] });
    const [leaf, chained] = pemBlocks(issued.CertPEM);
    assert.equal(chained, cross, 'CertPEM = leaf, then the cross-signed cert');

    const id = name.replace(/\W+/g, '-');
    const leafPath = writeFile(tmp.dir, `${id}-leaf.pem`, leaf!);
    const crossPath = writeFile(tmp.dir, `${id}-cross.pem`, cross);
    const oldPath = writeFile(tmp.dir, `${id}-old.pem`, oldRoot.certPem);
    const newPath = writeFile(tmp.dir, `${id}-new.pem`, newRoot.certPem);

    const viaCross = opensslVerify(['-attime', AT_TIME, '-purpose', 'sslclient', '-untrusted', crossPath, '-CAfile', oldPath, leafPath]);
    assert.equal(viaCross.status, 0, viaCross.out);
    // Without the cross-signed cert the old-root-only verifier cannot build a chain...
    const without = opensslVerify(['-attime', AT_TIME, '-CAfile', oldPath, leafPath]);
    assert.notEqual(without.status, 0, without.out);
    // ...and a verifier that already has the new root needs nothing else.
    const direct = opensslVerify(['-attime', AT_TIME, '-CAfile', newPath, leafPath]);
    assert.equal(direct.status, 0, direct.out);
    // The cross-signed cert stops helping once it expires (why its TTL is sized to leaves).
    const late = String(Math.floor((NOW.getTime() + WEEK) / 1000) + 3600);
    const expired = opensslVerify(['-attime', late, '-untrusted', crossPath, '-CAfile', oldPath, leafPath]);
    assert.notEqual(expired.status, 0, expired.out);
    assert.match(expired.out, /expired/);
  });
}

test('node:tls: a peer that trusts only the old root accepts new leaves sent with the cross-signed chain, both directions', async () => {
  const now = new Date(); // real clock: OpenSSL checks validity during the handshake
  for (const [name, oldSpec, newSpec] of PAIRS) {
    const oldRoot = await generateRoot({ clusterId: CLUSTER_ID, now, privateKeyType: oldSpec.type, privateKeyBits: oldSpec.bits });
    const newRoot = await generateRoot({ clusterId: CLUSTER_ID, now, privateKeyType: newSpec.type, privateKeyBits: newSpec.bits });
    const cross = await crossSignRoot({ newRoot, oldRoot, now, ttlMs: WEEK });
    const issue = async (svc: string, r: RootMaterial, chain: string[]) => {
      const { csrPem, keyPem } = await createLeafCsr(serviceSpiffeId(TD, 'default', DC, svc));
      const cert = (await signLeafCsr({ csrPem, root: r, trustDomain: TD, datacenter: DC, now, intermediatePems: chain })).CertPEM;
      return { key: keyPem, cert };
    };
    const oldWeb = await issue('web', oldRoot, []);
    const newApi = await issue('api', newRoot, [cross]);

    // Server not yet updated (old root only); client already on the new root, trusting both.
    const r1 = await mtlsHandshake({ ...oldWeb, ca: [oldRoot.certPem] }, { ...newApi, ca: [oldRoot.certPem, newRoot.certPem] });
    assert.ok(r1.ok, `${name} (server old-only): ${JSON.stringify(r1)}`);
    assert.deepEqual(r1.serverSawClient, [serviceSpiffeId(TD, 'default', DC, 'api')]);

    // Client not yet updated; server already on the new root.
    const newWeb = await issue('web', newRoot, [cross]);
    const oldApi = await issue('api', oldRoot, []);
    const r2 = await mtlsHandshake({ ...newWeb, ca: [oldRoot.certPem, newRoot.certPem] }, { ...oldApi, ca: [oldRoot.certPem] });
    assert.ok(r2.ok, `${name} (client old-only): ${JSON.stringify(r2)}`);
    assert.deepEqual(r2.clientSawServer, [serviceSpiffeId(TD, 'default', DC, 'web')]);

    // Control: without the cross-signed cert, the old-root-only server refuses the new leaf.
    const bare = await issue('api', newRoot, []);
    const r3 = await mtlsHandshake({ ...oldWeb, ca: [oldRoot.certPem] }, { ...bare, ca: [oldRoot.certPem, newRoot.certPem] });
    assert.equal(r3.ok, false, name);
    // (OpenSSL completes a bare leaf from the client's own trust store, so the server may
    // see the new root itself and name that instead.)
    assert.match(r3.serverError ?? '', /^(UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT|SELF_SIGNED_CERT_IN_CHAIN)/, name);
  }
});

test('crossSignRoot refuses an expired old root and bad arguments', async () => {
  const oldRoot = root(EC256, 'old');
  const newRoot = root(EC384, 'new');
  await assert.rejects(
    crossSignRoot({ newRoot, oldRoot, now: new Date(oldRoot.notAfter.getTime() + 1000), ttlMs: WEEK }),
    (e: unknown) => e instanceof CaError && e.code === 'CA_ROOT_EXPIRED' && /cannot cross-sign/.test(e.message),
  );
  await assert.rejects(crossSignRoot({ newRoot, oldRoot, now: NOW, ttlMs: 0 }), RangeError);
  await assert.rejects(crossSignRoot({ newRoot, oldRoot, now: new Date(NaN), ttlMs: WEEK }), RangeError);
  await assert.rejects(
    crossSignRoot({ newRoot, oldRoot: { ...oldRoot, keyPem: 'garbage' }, now: NOW, ttlMs: WEEK }),
    (e: unknown) => e instanceof CaError && e.code === 'CA_ROOT_MALFORMED',
  );
});

test('CertPEM: the leaf, then each intermediate in order, each newline-terminated (§1.7)', async () => {
  const newRoot = root(EC256, 'new');
  const a = await crossSignRoot({ newRoot, oldRoot: root(EC256, 'old'), now: NOW, ttlMs: WEEK });
  const b = await crossSignRoot({ newRoot, oldRoot: root(RSA2048, 'old'), now: NOW, ttlMs: WEEK });
  const { csrPem } = await createLeafCsr(WEB_URI);
  const issued = await signLeafCsr({
    csrPem,
    root: newRoot,
    trustDomain: TD,
    datacenter: DC,
    now: NOW,
    intermediatePems: [a, b.trimEnd()], // a missing final newline is added
  });
  const blocks = pemBlocks(issued.CertPEM);
  assert.equal(blocks.length, 3);
  assert.equal(blocks[1], a);
  assert.equal(blocks[2], b);
  assert.equal(issued.CertPEM, blocks.join(''));
  // No intermediates: exactly one block, as before.
  const single = await signLeafCsr({ csrPem, root: newRoot, trustDomain: TD, datacenter: DC, now: NOW, intermediatePems: [] });
  assert.equal(pemBlocks(single.CertPEM).length, 1);
});
