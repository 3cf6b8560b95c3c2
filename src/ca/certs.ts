// Small certificate helpers shared by the CA (authority.ts) and its callers: Consul's
// colon-hex encoding, key IDs, fingerprints, serial numbers and PEM framing.
//
// Runs on: control thread and the signing worker. Dependency-free (node:crypto only).

import { createHash, randomFillSync } from 'node:crypto';

/**
 * Consul's `HexString` (consul-mesh.md §1.4): lower-case hex pairs joined with `:`,
 * e.g. `2d:09:5d`. Empty input gives ''.
 */
export function colonHex(bytes: Uint8Array): string {
  const hex = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
  let out = '';
  for (let i = 0; i < hex.length; i += 2) {
    if (i > 0) out += ':';
    out += hex.slice(i, i + 2);
  }
  return out;
}

/** Plain lower-case hex, no separators. */
export function hex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/**
 * Consul's KeyId (§1.4): SHA-256 over the DER SubjectPublicKeyInfo, 32 bytes. Used for
 * SubjectKeyId and AuthorityKeyId. Deliberately not RFC 5280 §4.2.1.2's SHA-1 method,
 * so that our SKI/AKI values match what a Consul agent compares with `SigningKeyID`.
 */
export function keyId(spkiDer: Uint8Array): Uint8Array {
  return createHash('sha256').update(spkiDer).digest();
}

/** Root `ID` (§1.4): SHA-1 fingerprint of the certificate DER, colon-hex (20 pairs). */
export function sha1Fingerprint(certDer: Uint8Array): string {
  return colonHex(createHash('sha1').update(certDer).digest());
}

/** Bytes in a serial number from randomSerial(). RFC 5280 §4.1.2.2 allows up to 20. */
export const SERIAL_BYTES = 16;

/**
 * A random, positive serial number: 16 bytes, big-endian, first byte in 0x01..0x7F.
 *
 * Consul draws serials from a raft counter (§1.4); we have no raft, and small serials
 * are flagged by scanners (ecosystem.md §7.4: testssl rates a 1-byte serial "not enough
 * entropy"), so we use 120+ random bits. Clearing the top bit keeps the DER INTEGER
 * positive; forcing the first byte non-zero keeps it minimally encoded at exactly 16
 * bytes (so colon-hex of these bytes is Consul's EncodeSerialNumber form too).
 */
export function randomSerial(): Uint8Array {
  const b = randomFillSync(new Uint8Array(SERIAL_BYTES));
  b[0] = (b[0]! & 0x7f) || 0x01;
  return b;
}

/** PEM-encodes DER with 64-column base64 lines (RFC 7468 §2), newline-terminated. */
export function pemEncode(label: string, der: Uint8Array): string {
  const b64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString('base64');
  let body = '';
  for (let i = 0; i < b64.length; i += 64) body += b64.slice(i, i + 64) + '\n';
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

// Strict base64 body: Buffer.from(s, 'base64') silently skips junk, so check first.
const BASE64_BODY = /^[A-Za-z0-9+/]*={0,2}$/;
const WHITESPACE = /\s+/g;

/**
 * Decodes every PEM block with the given label, in order. Text outside blocks is
 * ignored (OpenSSL writes comments there); blocks with other labels are skipped. A
 * block with PEM headers or a corrupt body throws.
 */
export function pemDecodeAll(text: string, label: string): Uint8Array[] {
  const begin = `-----BEGIN ${label}-----`;
  const end = `-----END ${label}-----`;
  const out: Uint8Array[] = [];
  let pos = 0;
  for (;;) {
    const b = text.indexOf(begin, pos);
    if (b < 0) return out;
    const e = text.indexOf(end, b + begin.length);
    if (e < 0) throw new Error(`PEM ${label} block has no END line`);
    const body = text.slice(b + begin.length, e).replace(WHITESPACE, '');
    if (body.length === 0 || body.length % 4 !== 0 || !BASE64_BODY.test(body)) {
      throw new Error(`PEM ${label} block has a malformed base64 body`);
    }
    out.push(new Uint8Array(Buffer.from(body, 'base64')));
    pos = e + end.length;
  }
}

/** Decodes the first PEM block with the given label; throws if there is none. */
export function pemDecode(text: string, label: string): Uint8Array {
  const all = pemDecodeAll(text, label);
  const first = all[0];
  if (first === undefined) throw new Error(`no PEM ${label} block found`);
  return first;
}
