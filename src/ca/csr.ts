// Leaf CSR reading for the fast signing path: a strict PKCS#10 parse (RFC 2986) with our
// own DER code, and the self-signature check with node:crypto.
//
// Runs on: the signing worker (and the control thread when signLeafCsr is called there).
//
// What the parse keeps: the signed bytes (certificationRequestInfo as sent), the public
// key element as sent (it is copied into the leaf unchanged), the signature, and a count
// of the SAN entries by kind. The subject is skipped: leaves get an empty subject.
//
// Differences from @peculiar/x509 (the reference path), all towards refusing more:
// BER (indefinite or non-minimal lengths) is CSR_MALFORMED here; so is a CSR with two
// extensionRequest attributes or an extensionRequest SET holding other than one value
// (the library reads the first and ignores the rest); version must be 0.

import { createPublicKey, verify as cryptoVerify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import {
  DerError,
  type Element,
  TAG_CTX0_CONSTRUCTED,
  TAG_INTEGER,
  TAG_OID,
  TAG_SEQUENCE,
  TAG_SET,
  childrenOf,
  contentOf,
  expectElement,
  rawOf,
  readElement,
  readOctetAlignedBits,
  readOid,
} from './asn1.ts';
import { pemEncode } from './certs.ts';
import { CsrError } from './errors.ts';
import { OID_SUBJECT_ALT_NAME, readExtension } from './x509.ts';

/** SAN entries of a CSR by kind: the URIs themselves, counts of the rest (§1.11). */
export type CsrSans = { uris: string[]; emails: number; others: number };

export type ParsedCsr = {
  /** certificationRequestInfo exactly as sent: the bytes the signature covers. */
  readonly info: Uint8Array;
  /** The SubjectPublicKeyInfo element exactly as sent. */
  readonly spki: Uint8Array;
  readonly signatureOid: string;
  readonly signature: Uint8Array;
  readonly sans: CsrSans;
};

const OID_EXTENSION_REQUEST = '1.2.840.113549.1.9.14';

/** GeneralName tags (RFC 5280 §4.2.1.6): rfc822Name [1] and uniformResourceIdentifier [6]. */
const GN_EMAIL = 0x81;
const GN_URI = 0x86;

/**
 * The AlgorithmIdentifier of an EC P-256 SubjectPublicKeyInfo: id-ecPublicKey with the
 * named curve prime256v1 (RFC 5480 §2.1.1). The only key type leaves may have (§1.3).
 */
const P256_SPKI_ALGORITHM = Buffer.from('301306072a8648ce3d020106082a8648ce3d030107', 'hex');

/**
 * Parses a DER CSR. Throws CsrError CSR_MALFORMED with the same messages as the
 * reference path for SAN problems, and "CSR could not be parsed: ..." for the rest.
 */
export function parseCsr(der: Uint8Array): ParsedCsr {
  let info: Element;
  let spki: Element;
  let attributes: Element | undefined;
  let signatureOid: string;
  let signature: Uint8Array;
  try {
    const req = expectElement(der, 0, der.length, TAG_SEQUENCE, 'CertificationRequest');
    if (req.end !== der.length) throw new DerError('trailing bytes after CertificationRequest');
    const [i, sigAlg, sigBits, ...more] = childrenOf(der, req);
    if (i?.tag !== TAG_SEQUENCE || sigAlg?.tag !== TAG_SEQUENCE || sigBits === undefined || more.length > 0) {
      throw new DerError('not SEQUENCE { certificationRequestInfo, signatureAlgorithm, signature }');
    }
    const [version, subject, key, attrs, ...extra] = childrenOf(der, i);
    if (version?.tag !== TAG_INTEGER || version.end - version.start !== 1 || der[version.start] !== 0) {
      throw new DerError('version must be 0 (v1)');
    }
    if (subject?.tag !== TAG_SEQUENCE || key?.tag !== TAG_SEQUENCE) throw new DerError('subject or public key out of shape');
    // attributes [0] IMPLICIT SET OF Attribute is required by RFC 2986, but some tools
    // leave it out when empty; either way there is nothing in it then.
    if (attrs !== undefined && attrs.tag !== TAG_CTX0_CONSTRUCTED) throw new DerError('attributes out of shape');
    if (extra.length > 0) throw new DerError('unexpected fields after attributes');
    info = i;
    spki = key;
    attributes = attrs;
    signatureOid = readOid(der, expectElement(der, sigAlg.start, sigAlg.end, TAG_OID, 'signatureAlgorithm'));
    signature = readOctetAlignedBits(der, sigBits);
  } catch (err) {
    throw malformed(err);
  }
  const sans = attributes === undefined ? { uris: [], emails: 0, others: 0 } : readSans(der, attributes);
  return { info: rawOf(der, info), spki: rawOf(der, spki), signatureOid, signature, sans };
}

function malformed(err: unknown): CsrError {
  return new CsrError('CSR_MALFORMED', `CSR could not be parsed: ${err instanceof Error ? err.message : String(err)}`);
}

/** Finds the extensionRequest attribute and counts the SAN entries in it. */
function readSans(der: Uint8Array, attrs: Element): CsrSans {
  const out: CsrSans = { uris: [], emails: 0, others: 0 };
  let san: Uint8Array | null = null;
  try {
    let seenRequest = false;
    for (const attr of childrenOf(der, attrs)) {
      if (attr.tag !== TAG_SEQUENCE) throw new DerError('Attribute is not a SEQUENCE');
      const [type, values, ...extra] = childrenOf(der, attr);
      if (type === undefined || values?.tag !== TAG_SET || extra.length > 0) throw new DerError('Attribute out of shape');
      if (readOid(der, type) !== OID_EXTENSION_REQUEST) continue;
      if (seenRequest) throw new DerError('more than one extensionRequest attribute');
      seenRequest = true;
      const vals = childrenOf(der, values);
      if (vals.length !== 1 || vals[0]!.tag !== TAG_SEQUENCE) throw new DerError('extensionRequest must hold one Extensions');
      for (const e of childrenOf(der, vals[0]!)) {
        const ext = readExtension(der, e);
        if (ext.oid !== OID_SUBJECT_ALT_NAME) continue;
        if (san !== null) throw new CsrError('CSR_MALFORMED', 'CSR carries more than one subjectAltName extension');
        san = ext.value;
      }
    }
  } catch (err) {
    if (err instanceof CsrError) throw err;
    throw malformed(err);
  }
  if (san === null) return out;

  try {
    const names = expectElement(san, 0, san.length, TAG_SEQUENCE, 'GeneralNames');
    // An empty list breaks SIZE (1..MAX) but is read as "no URIs", as the reference
    // path reads it, so it gets CSR_INVALID_URI_COUNT like a CSR with no SAN at all.
    if (names.end !== san.length) throw new DerError('trailing bytes after GeneralNames');
    for (const gn of childrenOf(san, names)) {
      // Every GeneralName is context-specific [0]..[8] (RFC 5280 §4.2.1.6).
      if ((gn.tag & 0xc0) !== 0x80 || (gn.tag & 0x1f) > 8) throw new DerError('not a GeneralName');
      if (gn.tag === GN_URI) out.uris.push(Buffer.from(contentOf(san, gn)).toString('latin1'));
      else if (gn.tag === GN_EMAIL) out.emails++;
      else if ((gn.tag & 0x1f) === 6 || (gn.tag & 0x1f) === 1) throw new DerError('constructed IA5String GeneralName');
      else out.others++;
    }
  } catch {
    throw new CsrError('CSR_MALFORMED', 'CSR subjectAltName extension could not be decoded');
  }
  return out;
}

/**
 * Signature algorithms a CSR may be signed with, by OID, with the digest node:crypto
 * needs (null: the algorithm names its own, as Ed25519 does) and the key type it needs.
 */
const CSR_SIGNATURE_ALGORITHMS: ReadonlyMap<string, { digest: string | null; keyType: string }> = new Map([
  ['1.2.840.10045.4.3.2', { digest: 'sha256', keyType: 'ec' }],
  ['1.2.840.10045.4.3.3', { digest: 'sha384', keyType: 'ec' }],
  ['1.2.840.10045.4.3.4', { digest: 'sha512', keyType: 'ec' }],
  ['1.2.840.113549.1.1.11', { digest: 'sha256', keyType: 'rsa' }],
  ['1.2.840.113549.1.1.12', { digest: 'sha384', keyType: 'rsa' }],
  ['1.2.840.113549.1.1.13', { digest: 'sha512', keyType: 'rsa' }],
  ['1.3.101.112', { digest: null, keyType: 'ed25519' }],
]);

/**
 * Checks the CSR's self-signature (Consul's ParseCSR does the same). Returns the public
 * key on success and null when the signature, the key or their pairing is bad. Never throws.
 */
export function verifyCsr(csr: ParsedCsr): KeyObject | null {
  const alg = CSR_SIGNATURE_ALGORITHMS.get(csr.signatureOid);
  if (alg === undefined) return null;
  try {
    // A PEM string, not `{ format: 'der', type: 'spki' }`: on Node 24 / OpenSSL 3.0 the
    // string form imports a P-256 key in ~25 µs and the DER object form in ~52 µs (the
    // object form tries more decoders), which is a fifth of a leaf's whole cost.
    const key = createPublicKey(pemEncode('PUBLIC KEY', csr.spki));
    if (key.asymmetricKeyType !== alg.keyType) return null;
    return cryptoVerify(alg.digest, csr.info, key, csr.signature) ? key : null;
  } catch {
    return null;
  }
}

/** True when the CSR's key is EC P-256 (checked on the algorithm; the point was checked by verifyCsr). */
export function isP256Key(csr: ParsedCsr): boolean {
  try {
    const spki = expectElement(csr.spki, 0, csr.spki.length, TAG_SEQUENCE, 'SubjectPublicKeyInfo');
    const alg = readElement(csr.spki, spki.start, spki.end);
    return P256_SPKI_ALGORITHM.equals(rawOf(csr.spki, alg));
  } catch {
    return false;
  }
}
