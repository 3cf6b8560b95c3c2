// X.509 pieces the CA builds and reads with its own DER code (asn1.ts): the field split of
// a certificate, the extensions meshd issues, CA key description and certificate signing
// with node:crypto.
//
// Runs on: the control thread and the signing worker. node:crypto only, so the signing
// worker does not load @peculiar/x509 (~50 ms of start-up per thread, measured).

import { createHash, sign as cryptoSign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import {
  DerError,
  type Element,
  TAG_BIT_STRING,
  TAG_BOOLEAN,
  TAG_CTX0_CONSTRUCTED,
  TAG_CTX3_CONSTRUCTED,
  TAG_INTEGER,
  TAG_OCTET_STRING,
  TAG_SEQUENCE,
  bitString,
  childrenOf,
  contentOf,
  expectElement,
  extension,
  oid,
  rawOf,
  readBoolean,
  readElement,
  readOid,
  readTime,
  sequence,
  tlv,
} from './asn1.ts';
import type { CaKeyType } from './types.ts';

// ---------------------------------------------------------------------------------------
// Object identifiers (dotted text for comparisons with readOid, elements for writing).

export const OID_SUBJECT_KEY_ID = '2.5.29.14';
export const OID_KEY_USAGE = '2.5.29.15';
export const OID_SUBJECT_ALT_NAME = '2.5.29.17';
export const OID_BASIC_CONSTRAINTS = '2.5.29.19';
export const OID_AUTHORITY_KEY_ID = '2.5.29.35';
export const OID_EXT_KEY_USAGE = '2.5.29.37';

export const OID_EC_PUBLIC_KEY = '1.2.840.10045.2.1';
export const OID_RSA_ENCRYPTION = '1.2.840.113549.1.1.1';

/** `ecdsa-with-SHA256` (RFC 5758 §3.2): parameters absent. */
const ECDSA_WITH_SHA256 = sequence(oid('1.2.840.10045.4.3.2'));
/** `sha256WithRSAEncryption` (RFC 4055 §5): parameters NULL. */
const SHA256_WITH_RSA = sequence(oid('1.2.840.113549.1.1.11'), Uint8Array.of(0x05, 0x00));

/**
 * The signature AlgorithmIdentifier for a CA key (§1.3): ECDSA with SHA-256 for any EC
 * curve (Consul does not use SHA-384 for P-384), PKCS#1 v1.5 with SHA-256 for RSA.
 */
export function signatureAlgorithmFor(type: CaKeyType): Uint8Array {
  return type === 'ec' ? ECDSA_WITH_SHA256 : SHA256_WITH_RSA;
}

// ---------------------------------------------------------------------------------------
// CA keys.

/** EC curves a CA key may use, by node's name, with Consul's `PrivateKeyBits` (§1.3). */
const EC_CURVE_BITS: ReadonlyMap<string, number> = new Map([
  ['prime256v1', 256],
  ['secp384r1', 384],
  ['secp521r1', 521],
]);

/**
 * RSA moduli a CA key may have. Consul generates 2048 or 4096; a supplied root may come
 * from an enterprise PKI, which often uses 3072, so any size in between (and up to 8192)
 * is accepted. Below 2048 is refused as too weak (NIST SP 800-131A).
 */
export const RSA_MIN_BITS = 2048;
export const RSA_MAX_BITS = 8192;

/** `PrivateKeyType`/`PrivateKeyBits` of a CA key, or null when meshd cannot sign with it. */
export function describeCaKey(key: KeyObject): { type: CaKeyType; bits: number } | null {
  const details = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'ec') {
    const bits = EC_CURVE_BITS.get(details?.namedCurve ?? '');
    return bits === undefined ? null : { type: 'ec', bits };
  }
  if (key.asymmetricKeyType === 'rsa') {
    const bits = details?.modulusLength ?? 0;
    return bits >= RSA_MIN_BITS && bits <= RSA_MAX_BITS ? { type: 'rsa', bits } : null;
  }
  return null;
}

export const SUPPORTED_CA_KEYS = `EC P-256, P-384 or P-521, or RSA of ${RSA_MIN_BITS} to ${RSA_MAX_BITS} bits`;

/**
 * Signs a TBSCertificate and wraps it into a Certificate. node:crypto's sign() gives a
 * DER ECDSA signature for EC keys and a PKCS#1 v1.5 one for RSA keys, which is what the
 * AlgorithmIdentifier from signatureAlgorithmFor() says.
 */
export function signCertificate(tbs: Uint8Array, key: KeyObject, type: CaKeyType): Uint8Array {
  const signature = cryptoSign('sha256', tbs, key);
  return sequence(tbs, signatureAlgorithmFor(type), bitString(signature));
}

// ---------------------------------------------------------------------------------------
// Reading certificates.

export type ParsedExtension = {
  readonly oid: string;
  readonly critical: boolean;
  /** extnValue's content: the DER of the extension's own structure. */
  readonly value: Uint8Array;
  /** The whole Extension element, for copying it unchanged. */
  readonly raw: Uint8Array;
};

/** A certificate split into the fields the CA copies or checks; views into `der`. */
export type ParsedCertificate = {
  readonly der: Uint8Array;
  /** INTEGER content bytes of the serial. */
  readonly serial: Uint8Array;
  readonly issuer: Uint8Array;
  readonly subject: Uint8Array;
  readonly notBeforeMs: number;
  readonly notAfterMs: number;
  /** The whole SubjectPublicKeyInfo element. */
  readonly spki: Uint8Array;
  readonly extensions: readonly ParsedExtension[];
};

/**
 * Splits a DER certificate into its fields (RFC 5280 §4.1). Checks structure, not
 * meaning: the caller decides what it needs. Throws DerError.
 */
export function parseCertificate(der: Uint8Array): ParsedCertificate {
  const cert = expectElement(der, 0, der.length, TAG_SEQUENCE, 'Certificate');
  if (cert.end !== der.length) throw new DerError('trailing bytes after Certificate');
  const [tbs, sigAlg, sig, ...extra] = childrenOf(der, cert);
  if (tbs?.tag !== TAG_SEQUENCE || sigAlg?.tag !== TAG_SEQUENCE || sig?.tag !== TAG_BIT_STRING || extra.length > 0) {
    throw new DerError('Certificate is not SEQUENCE { tbsCertificate, signatureAlgorithm, signatureValue }');
  }
  const fields = childrenOf(der, tbs);
  let i = 0;
  if (fields[0]?.tag === TAG_CTX0_CONSTRUCTED) i = 1;
  const [serial, , issuer, validity, subject, spki] = fields.slice(i, i + 6);
  if (
    serial?.tag !== TAG_INTEGER ||
    issuer?.tag !== TAG_SEQUENCE ||
    validity?.tag !== TAG_SEQUENCE ||
    subject?.tag !== TAG_SEQUENCE ||
    spki?.tag !== TAG_SEQUENCE
  ) {
    throw new DerError('tbsCertificate fields are out of shape');
  }
  const times = childrenOf(der, validity);
  if (times.length !== 2) throw new DerError('Validity must hold two times');

  const extensions: ParsedExtension[] = [];
  for (const f of fields.slice(i + 6)) {
    if (f.tag !== TAG_CTX3_CONSTRUCTED) continue; // issuer/subjectUniqueID: not used by us
    const list = childrenOf(der, f);
    if (list.length !== 1 || list[0]!.tag !== TAG_SEQUENCE) throw new DerError('extensions must be one SEQUENCE');
    for (const e of childrenOf(der, list[0]!)) extensions.push(readExtension(der, e));
  }
  return {
    der,
    serial: contentOf(der, serial),
    issuer: rawOf(der, issuer),
    subject: rawOf(der, subject),
    notBeforeMs: readTime(der, times[0]!),
    notAfterMs: readTime(der, times[1]!),
    spki: rawOf(der, spki),
    extensions,
  };
}

/** Reads one Extension ::= SEQUENCE { extnID, critical BOOLEAN DEFAULT FALSE, extnValue }. */
export function readExtension(b: Uint8Array, e: Element): ParsedExtension {
  if (e.tag !== TAG_SEQUENCE) throw new DerError('Extension is not a SEQUENCE');
  const parts = childrenOf(b, e);
  const id = parts[0];
  if (id === undefined) throw new DerError('empty Extension');
  let critical = false;
  let k = 1;
  if (parts[k]?.tag === TAG_BOOLEAN) {
    critical = readBoolean(b, parts[k]!);
    k++;
  }
  const value = parts[k];
  if (value?.tag !== TAG_OCTET_STRING || k + 1 !== parts.length) throw new DerError('Extension has no extnValue');
  return { oid: readOid(b, id), critical, value: contentOf(b, value), raw: rawOf(b, e) };
}

/** The keyIdentifier of a SubjectKeyIdentifier extension value (an OCTET STRING). */
export function readSubjectKeyId(value: Uint8Array): Uint8Array {
  const el = expectElement(value, 0, value.length, TAG_OCTET_STRING, 'SubjectKeyIdentifier');
  if (el.end !== value.length || el.end === el.start) throw new DerError('malformed SubjectKeyIdentifier');
  return contentOf(value, el);
}

/** The certificate's SKI if it has one, else Consul's KeyId of its public key (§1.4). */
export function signingKeyIdOf(cert: ParsedCertificate): Uint8Array {
  const ext = cert.extensions.find((e) => e.oid === OID_SUBJECT_KEY_ID);
  return ext ? readSubjectKeyId(ext.value) : keyIdOf(cert.spki);
}

/** KeyUsage bits as one number, bit 0 = digitalSignature (RFC 5280 §4.2.1.3), or null. */
export function keyUsageOf(cert: ParsedCertificate): number | null {
  const ext = cert.extensions.find((e) => e.oid === OID_KEY_USAGE);
  if (ext === undefined) return null;
  const el = readElement(ext.value, 0, ext.value.length);
  if (el.tag !== TAG_BIT_STRING || el.end !== ext.value.length || el.end === el.start) throw new DerError('malformed KeyUsage');
  // Bit n of the named bit string is bit (7 - n % 8) of octet n / 8.
  let bits = 0;
  for (let o = el.start + 1; o < el.end && o < el.start + 3; o++) {
    const byte = ext.value[o]!;
    for (let j = 0; j < 8; j++) if (byte & (0x80 >> j)) bits |= 1 << ((o - el.start - 1) * 8 + j);
  }
  return bits;
}

export const KEY_USAGE_CERT_SIGN = 1 << 5;

function keyIdOf(spki: Uint8Array): Uint8Array {
  return createHash('sha256').update(spki).digest();
}

// ---------------------------------------------------------------------------------------
// Writing the extensions meshd issues (§1.5, §1.7).

const OID_EL_SUBJECT_KEY_ID = oid(OID_SUBJECT_KEY_ID);
const OID_EL_AUTHORITY_KEY_ID = oid(OID_AUTHORITY_KEY_ID);
const OID_EL_SUBJECT_ALT_NAME = oid(OID_SUBJECT_ALT_NAME);

/** SubjectKeyIdentifier ::= KeyIdentifier (OCTET STRING). Not critical (RFC 5280 §4.2.1.2). */
export function subjectKeyIdExtension(keyId: Uint8Array): Uint8Array {
  return extension(OID_EL_SUBJECT_KEY_ID, false, tlv(TAG_OCTET_STRING, keyId));
}

/** AuthorityKeyIdentifier ::= SEQUENCE { keyIdentifier [0] IMPLICIT OCTET STRING }. */
export function authorityKeyIdExtension(keyId: Uint8Array): Uint8Array {
  return extension(OID_EL_AUTHORITY_KEY_ID, false, sequence(tlv(0x80, keyId)));
}

/** SubjectAltName with exactly one uniformResourceIdentifier [6] (IA5String, ASCII). */
export function uriSanExtension(uri: string, critical: boolean): Uint8Array {
  return extension(OID_EL_SUBJECT_ALT_NAME, critical, sequence(tlv(0x86, Buffer.from(uri, 'latin1'))));
}

/**
 * The three extensions every leaf carries, in the order the reference path writes them:
 * critical BasicConstraints CA:FALSE (DER omits the default, leaving an empty SEQUENCE);
 * critical KeyUsage digitalSignature|keyEncipherment|dataEncipherment|keyAgreement
 * (bits 0, 2, 3, 4: 0xB8 with 3 unused bits, §1.7's `0x03b8`); ExtendedKeyUsage
 * clientAuth then serverAuth, not critical.
 */
export const LEAF_FIXED_EXTENSIONS: Uint8Array = Buffer.concat([
  extension(oid(OID_BASIC_CONSTRAINTS), true, sequence()),
  extension(oid(OID_KEY_USAGE), true, Uint8Array.of(TAG_BIT_STRING, 2, 3, 0xb8)),
  extension(oid(OID_EXT_KEY_USAGE), false, sequence(oid('1.3.6.1.5.5.7.3.2'), oid('1.3.6.1.5.5.7.3.1'))),
]);

/** `version [0] EXPLICIT INTEGER 2` (v3). */
export const VERSION_V3 = Uint8Array.of(TAG_CTX0_CONSTRUCTED, 3, TAG_INTEGER, 1, 2);

/** `extensions [3] EXPLICIT SEQUENCE OF Extension` around already-encoded extensions. */
export function extensionsField(...exts: Uint8Array[]): Uint8Array {
  return tlv(TAG_CTX3_CONSTRUCTED, sequence(...exts));
}
