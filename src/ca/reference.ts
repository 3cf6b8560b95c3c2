// Leaf signing, reference path: the original implementation on @peculiar/x509 and
// WebCrypto. It is the specification the fast path (leaf.ts) is held to: the property test
// in test/ca/leaf-fast.test.ts signs the same CSR with both, with the same serial and
// clock, and requires byte-identical TBSCertificates. The benchmark (bench/ca.ts)
// measures both. Production code signs with the fast path.
//
// Runs on: the control thread (tests and the benchmark). Not loaded by the signing worker.

import 'reflect-metadata'; // must precede @peculiar/x509 (tsyringe needs the polyfill)
import * as x509 from '@peculiar/x509';
import { webcrypto } from 'node:crypto';
import { colonHex, hex, keyId, pemDecode, randomSerial } from './certs.ts';
import type { CsrSans } from './csr.ts';
import { CsrError } from './errors.ts';
import {
  CLOCK_SKEW_BUFFER_MS,
  DEFAULT_LEAF_TTL_MS,
  MAX_CSR_PEM_LENGTH,
  certChainPem,
  checkCsrIdentity,
  checkTtl,
  floorToSecond,
  rfc3339,
  wholeSeconds,
} from './leaf.ts';
import { webCryptoCaAlgorithms } from './authority.ts';
import type { IssuedCert, SignLeafRequest } from './types.ts';
import { OID_SUBJECT_ALT_NAME } from './x509.ts';

x509.cryptoProvider.set(webcrypto);

function csrSans(csr: x509.Pkcs10CertificateRequest): CsrSans {
  const exts = csr.extensions.filter((e) => e.type === OID_SUBJECT_ALT_NAME);
  if (exts.length > 1) throw new CsrError('CSR_MALFORMED', 'CSR carries more than one subjectAltName extension');
  const out: CsrSans = { uris: [], emails: 0, others: 0 };
  const ext = exts[0];
  if (ext === undefined) return out;
  if (!(ext instanceof x509.SubjectAlternativeNameExtension)) {
    throw new CsrError('CSR_MALFORMED', 'CSR subjectAltName extension could not be decoded');
  }
  for (const name of ext.names.items) {
    if (name.type === 'url') out.uris.push(name.value);
    else if (name.type === 'email') out.emails++;
    else out.others++;
  }
  return out;
}

/** The reference leaf signer: same contract as signLeafFast, on @peculiar/x509. */
export async function signLeafCsrReference(req: SignLeafRequest, serial: Uint8Array = randomSerial()): Promise<IssuedCert> {
  const nowMs = wholeSeconds(req.now, 'now');
  const ttlMs = checkTtl(req.ttlMs ?? DEFAULT_LEAF_TTL_MS, 'ttlMs');

  // 1. Parse and verify the CSR's own signature.
  if (typeof req.csrPem !== 'string' || req.csrPem.length > MAX_CSR_PEM_LENGTH) {
    throw new CsrError('CSR_MALFORMED', `CSR must be a PEM string of at most ${MAX_CSR_PEM_LENGTH} characters`);
  }
  let csr: x509.Pkcs10CertificateRequest;
  let sans: CsrSans;
  try {
    csr = new x509.Pkcs10CertificateRequest(pemDecode(req.csrPem, 'CERTIFICATE REQUEST'));
    sans = csrSans(csr);
  } catch (err) {
    if (err instanceof CsrError) throw err;
    throw new CsrError('CSR_MALFORMED', `CSR could not be parsed: ${err instanceof Error ? err.message : String(err)}`);
  }
  let signatureOk = false;
  try {
    signatureOk = await csr.verify();
  } catch {
    signatureOk = false;
  }
  if (!signatureOk) throw new CsrError('CSR_BAD_SIGNATURE', 'CSR signature does not verify against its public key');

  let keyAlg: webcrypto.EcKeyAlgorithm | null = null;
  try {
    keyAlg = csr.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
  } catch {
    // A key type the library cannot describe (say Ed448) is simply not P-256.
  }
  const keyIsP256 = keyAlg?.name === 'ECDSA' && keyAlg.namedCurve === 'P-256';
  const { uri, id } = checkCsrIdentity(sans, keyIsP256, req, nowMs);

  const rootCert = new x509.X509Certificate(pemDecode(req.root.certPem, 'CERTIFICATE'));
  const algs = webCryptoCaAlgorithms(req.root.privateKeyType, req.root.privateKeyBits);
  const signingKey = await webcrypto.subtle.importKey('pkcs8', pemDecode(req.root.keyPem, 'PRIVATE KEY'), algs.key, false, ['sign']);

  const notBefore = nowMs - CLOCK_SKEW_BUFFER_MS;
  const notAfter = floorToSecond(notBefore + ttlMs);
  const leafSki = hex(keyId(new Uint8Array(csr.publicKey.rawData)));
  const rootSki = req.root.signingKeyId.replaceAll(':', '');

  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: hex(serial),
    subject: '', // empty since Consul PR #10424; the SAN carries the identity
    issuer: rootCert.subjectName, // the exact encoded Name, so issuer == root subject byte-for-byte
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
    signingAlgorithm: algs.signing,
    publicKey: csr.publicKey,
    signingKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.digitalSignature |
          x509.KeyUsageFlags.keyEncipherment |
          x509.KeyUsageFlags.dataEncipherment |
          x509.KeyUsageFlags.keyAgreement,
        true,
      ),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.clientAuth, x509.ExtendedKeyUsage.serverAuth]),
      // Critical because the subject is empty (RFC 5280 §4.2.1.6).
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: uri }], true),
      new x509.SubjectKeyIdentifierExtension(leafSki),
      new x509.AuthorityKeyIdentifierExtension(rootSki),
    ],
  });

  return {
    SerialNumber: colonHex(serial),
    CertPEM: certChainPem(new Uint8Array(leaf.rawData), req.intermediatePems),
    Service: id.service,
    ServiceURI: uri,
    ValidAfter: rfc3339(notBefore),
    ValidBefore: rfc3339(notAfter),
    Namespace: id.namespace,
    Datacenter: id.datacenter,
  };
}
