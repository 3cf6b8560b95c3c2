// The data plane's verdict on a peer leaf (serviceIdentity: leaf profile, then SPIFFE ID)
// and the reason label of a failed handshake (handshakeReason). The end-to-end versions, with
// a real sidecar and real handshakes, are in test/e2e/tls-peers.test.ts.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { expectServer, IDENTITY_MISMATCH, serviceIdentity } from '../../src/dataplane/identity.ts';
import { handshakeReason } from '../../src/dataplane/tls-errors.ts';
import { makeCert, x509 } from '../ca/helpers.ts';

const TD = 'a.consul';
const WEB = `spiffe://${TD}/ns/default/dc/dc1/svc/web`;
const KU = x509.KeyUsageFlags;
const OURS_KU = KU.digitalSignature | KU.keyEncipherment | KU.dataEncipherment | KU.keyAgreement;
const BOTH = [x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth];

async function leaf(o: { uris?: string[]; ca?: boolean | null; ku?: number | null; eku?: string[] | null } = {}): Promise<Buffer> {
  const exts: x509.Extension[] = [];
  if (o.ca !== null) exts.push(new x509.BasicConstraintsExtension(o.ca ?? false, undefined, true));
  if (o.ku !== null) exts.push(new x509.KeyUsagesExtension(o.ku ?? OURS_KU, true));
  if (o.eku !== null) exts.push(new x509.ExtendedKeyUsageExtension(o.eku ?? BOTH));
  const uris = o.uris ?? [WEB];
  if (uris.length > 0) exts.push(new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: 'url' as const, value })), true));
  return Buffer.from(await makeCert(exts));
}

test('a leaf shaped like ours is web, as a client and as a server; basicConstraints may be absent', async () => {
  for (const role of ['client', 'server'] as const) {
    const r = serviceIdentity(await leaf(), TD, role);
    assert.ok(r.ok);
    assert.equal(r.id.service, 'web');
  }
  assert.ok(serviceIdentity(await leaf({ ca: null }), TD).ok);
});

test('leaf profile: CA, KeyUsage and ExtendedKeyUsage failures are bad_key_usage, whatever the SAN', async () => {
  const cases: [string, Parameters<typeof leaf>[0], 'client' | 'server'][] = [
    ['CA:TRUE', { ca: true }, 'client'],
    ['no KeyUsage', { ku: null }, 'client'],
    ['no digitalSignature', { ku: KU.keyAgreement | KU.keyEncipherment }, 'client'],
    ['keyCertSign', { ku: OURS_KU | KU.keyCertSign }, 'client'],
    ['cRLSign', { ku: OURS_KU | KU.cRLSign }, 'client'],
    ['no EKU', { eku: null }, 'client'],
    ['anyExtendedKeyUsage only', { eku: ['2.5.29.37.0'] }, 'client'],
    ['serverAuth only, as a client', { eku: [x509.ExtendedKeyUsage.serverAuth] }, 'client'],
    ['clientAuth only, as a server', { eku: [x509.ExtendedKeyUsage.clientAuth] }, 'server'],
    ['CA:TRUE with no URI SAN at all', { ca: true, uris: [] }, 'client'],
  ];
  for (const [name, o, role] of cases) assert.deepEqual(serviceIdentity(await leaf(o), TD, role), { ok: false, reason: 'bad_key_usage' }, name);
  assert.ok(serviceIdentity(await leaf({ eku: [x509.ExtendedKeyUsage.clientAuth] }), TD, 'client').ok);
  assert.ok(serviceIdentity(await leaf({ eku: [x509.ExtendedKeyUsage.serverAuth] }), TD, 'server').ok);
});

test('identity: one canonical service ID in our trust domain', async () => {
  const bad = [[], [WEB, `spiffe://${TD}/ns/default/dc/dc1/svc/admin`], [`SPIFFE://${TD}/ns/default/dc/dc1/svc/web`], [`spiffe://A.CONSUL/ns/default/dc/dc1/svc/web`], [`${WEB}/`], [`spiffe://${TD}/ns/%64efault/dc/dc1/svc/web`], [`spiffe://${TD}/ns/./dc/dc1/svc/web`], [`spiffe://${TD}`]];
  for (const uris of bad) assert.deepEqual(serviceIdentity(await leaf({ uris }), TD), { ok: false, reason: 'bad_identity' }, uris.join(' '));
  assert.deepEqual(serviceIdentity(await leaf({ uris: ['spiffe://b.consul/ns/default/dc/dc1/svc/web'] }), TD), { ok: false, reason: 'foreign_trust_domain' });
  assert.deepEqual(serviceIdentity(undefined, TD), { ok: false, reason: 'bad_identity' });
  assert.deepEqual(serviceIdentity(Buffer.from([0x30, 0x00]), TD), { ok: false, reason: 'bad_identity' });
});

test('expectServer: the expected service with a server EKU, or an IDENTITY_MISMATCH error', async () => {
  const check = expectServer('web', TD);
  assert.equal(check('127.0.0.1', { raw: await leaf() }), undefined);
  for (const raw of [await leaf({ uris: [`spiffe://${TD}/ns/default/dc/dc1/svc/api`] }), await leaf({ eku: [x509.ExtendedKeyUsage.clientAuth] }), await leaf({ eku: null })]) {
    const err = check('127.0.0.1', { raw }) as Error & { code?: string };
    assert.ok(err instanceof Error);
    assert.equal(err.code, IDENTITY_MISMATCH);
  }
});

test('handshakeReason: the verify code decides; otherwise the OpenSSL error', () => {
  const reset = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' });
  const cases: [string | null, Error & { code?: string }, string][] = [
    ['CERT_HAS_EXPIRED', reset, 'expired'],
    ['CERT_NOT_YET_VALID', reset, 'not_yet_valid'],
    ['INVALID_PURPOSE', reset, 'bad_key_usage'],
    ['UNABLE_TO_VERIFY_LEAF_SIGNATURE', reset, 'unknown_ca'],
    ['DEPTH_ZERO_SELF_SIGNED_CERT', reset, 'unknown_ca'],
    ['SELF_SIGNED_CERT_IN_CHAIN', reset, 'unknown_ca'],
    ['SOMETHING_NEW', reset, 'other'],
    [null, reset, 'protocol'],
    [null, Object.assign(new Error('peer did not return a certificate'), { code: 'ERR_SSL_PEER_DID_NOT_RETURN_A_CERTIFICATE' }), 'no_certificate'],
    [null, Object.assign(new Error('TLS handshake timeout'), { code: 'ERR_TLS_HANDSHAKE_TIMEOUT' }), 'timeout'],
    [null, Object.assign(new Error('no shared cipher'), { code: 'ERR_SSL_NO_SHARED_CIPHER' }), 'protocol'],
    [null, Object.assign(new Error('unsupported protocol'), { code: 'ERR_SSL_UNSUPPORTED_PROTOCOL' }), 'protocol'],
    [null, Object.assign(new Error('inappropriate fallback'), { code: 'ERR_SSL_INAPPROPRIATE_FALLBACK' }), 'protocol'],
    // An alert the client sent about OUR certificate is not a verdict on its own.
    [null, Object.assign(new Error('tlsv1 alert unknown ca'), { code: 'ERR_SSL_TLSV1_ALERT_UNKNOWN_CA' }), 'protocol'],
    [null, Object.assign(new Error('sslv3 alert certificate expired'), { code: 'ERR_SSL_SSLV3_ALERT_CERTIFICATE_EXPIRED' }), 'protocol'],
    [null, new Error('something else'), 'other'],
  ];
  for (const [verify, err, want] of cases) assert.equal(handshakeReason(err, verify), want, `${verify ?? '-'} ${err.code ?? err.message}`);
});
