// readPeerCertificate: the KeyUsage and ExtendedKeyUsage a data-plane worker checks on every
// peer leaf (src/dataplane/identity.ts), read by the same strict DER walker as the URI SANs.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  EKU_ANY,
  EKU_CLIENT_AUTH,
  EKU_OTHER,
  EKU_SERVER_AUTH,
  KU_CRL_SIGN,
  KU_DIGITAL_SIGNATURE,
  KU_KEY_CERT_SIGN,
  readCertIdentity,
  readPeerCertificate,
} from '../../src/ca/der.ts';
import { makeCert, x509 } from './helpers.ts';

const U = 'spiffe://a.consul/ns/default/dc/dc1/svc/web';
const san = new x509.SubjectAlternativeNameExtension([{ type: 'url', value: U }], true);
const KU = x509.KeyUsageFlags;
const raw = (oid: string, value: number[]): x509.Extension => new x509.Extension(oid, true, Uint8Array.from(value));

test('KeyUsage bits are numbered as in RFC 5280 (bit 0 = digitalSignature)', async () => {
  const ours = await makeCert([san, new x509.KeyUsagesExtension(KU.digitalSignature | KU.keyEncipherment | KU.dataEncipherment | KU.keyAgreement, true)]);
  const r = readPeerCertificate(ours);
  assert.ok(r !== null);
  assert.equal(r.keyUsage, 0b11101);
  assert.equal(r.keyUsage & KU_DIGITAL_SIGNATURE, KU_DIGITAL_SIGNATURE);
  const signer = readPeerCertificate(await makeCert([san, new x509.KeyUsagesExtension(KU.keyCertSign | KU.cRLSign, true)]));
  assert.equal(signer?.keyUsage, KU_KEY_CERT_SIGN | KU_CRL_SIGN);
  // decipherOnly is bit 8, in the second octet.
  assert.equal(readPeerCertificate(await makeCert([san, new x509.KeyUsagesExtension(KU.keyAgreement | KU.decipherOnly, true)]))?.keyUsage, (1 << 4) | (1 << 8));
});

test('ExtendedKeyUsage purposes: serverAuth, clientAuth, anyExtendedKeyUsage, anything else', async () => {
  const eku = async (usages: string[]): Promise<number | undefined> => readPeerCertificate(await makeCert([san, new x509.ExtendedKeyUsageExtension(usages)]))?.extKeyUsage;
  assert.equal(await eku([x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth]), EKU_CLIENT_AUTH | EKU_SERVER_AUTH);
  assert.equal(await eku([x509.ExtendedKeyUsage.codeSigning]), EKU_OTHER);
  assert.equal(await eku(['2.5.29.37.0']), EKU_ANY);
  assert.equal(await eku(['1.3.6.1.5.5.7.3.21', x509.ExtendedKeyUsage.serverAuth]), EKU_OTHER | EKU_SERVER_AUTH);
  // A longer OID that starts like id-kp-clientAuth is not clientAuth.
  assert.equal(await eku(['1.3.6.1.5.5.7.3.2.1']), EKU_OTHER);
});

test('absent extensions read as -1; readCertIdentity keeps its shape', async () => {
  const der = await makeCert([san]);
  assert.deepEqual(readPeerCertificate(der), { uris: [U], isCA: false, keyUsage: -1, extKeyUsage: -1 });
  assert.deepEqual(readCertIdentity(der), { uris: [U], isCA: false });
});

test('malformed or repeated usage extensions make the whole certificate unreadable', async () => {
  const ku = new x509.KeyUsagesExtension(KU.digitalSignature, true);
  const eku = new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth]);
  const bad: [string, x509.Extension[]][] = [
    ['two KeyUsage extensions', [san, ku, new x509.KeyUsagesExtension(KU.keyCertSign, true)]],
    ['two ExtendedKeyUsage extensions', [san, eku, new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth])]],
    ['KeyUsage longer than its nine bits', [san, raw('2.5.29.15', [0x03, 0x04, 0x00, 0x80, 0x00, 0x01])]],
    ['KeyUsage with 8 unused bits', [san, raw('2.5.29.15', [0x03, 0x02, 0x08, 0x80])]],
    ['KeyUsage that is not a BIT STRING', [san, raw('2.5.29.15', [0x04, 0x01, 0x80])]],
    ['empty ExtendedKeyUsage list', [san, raw('2.5.29.37', [0x30, 0x00])]],
    ['ExtendedKeyUsage with a non-OID member', [san, raw('2.5.29.37', [0x30, 0x03, 0x02, 0x01, 0x01])]],
    ['ExtendedKeyUsage with trailing bytes', [san, raw('2.5.29.37', [0x30, 0x05, 0x06, 0x03, 0x55, 0x1d, 0x25, 0x00])]],
  ];
  for (const [name, exts] of bad) {
    const der = await makeCert(exts);
    assert.equal(readPeerCertificate(der), null, name);
    assert.equal(readCertIdentity(der), null, name);
  }
});
