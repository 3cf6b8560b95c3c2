// Leaf signing, fast path: the CSR is parsed and verified with our own DER code and
// node:crypto (csr.ts), and the leaf's TBSCertificate is assembled from DER pieces (serial,
// validity, the root's subject bytes as issuer, an empty subject, the CSR's public key
// bytes, the extensions) and signed with node:crypto.sign.
//
// Runs on: the signing worker (sign-task.ts), and the control thread when signLeafCsr is
// called in-thread. Imports node:crypto and our own modules only, so a signing thread
// starts without loading @peculiar/x509.
//
// Why: the @peculiar path (reference.ts) costs ~6 ms a leaf on the 2-core dev box, nearly
// all of it building and parsing ASN.1 object trees; here a P-256 leaf costs what its two
// ECDSA operations cost (~40 µs sign, ~90 µs verify) plus a few µs of byte copying. The
// reference path stays as the specification: a property test (test/ca/leaf-fast.test.ts)
// asserts both produce byte-identical TBSCertificates for the same inputs.
//
// State: one module-level cache of parsed roots per thread (see rootSigner), because every
// pool task carries the root as PEM and parsing the key each time would cost more than
// the signature.

import { createPrivateKey, createPublicKey } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { colonHex, keyId, pemDecode, pemEncode, randomSerial } from './certs.ts';
import { isP256Key, parseCsr, verifyCsr } from './csr.ts';
import type { CsrSans } from './csr.ts';
import { CaError, CsrError } from './errors.ts';
import { parseSpiffeId } from './spiffe.ts';
import type { ServiceId } from './spiffe.ts';
import { sequence, time, unsignedInteger } from './asn1.ts';
import type { CaKeyType, IssuedCert, RootMaterial, SignLeafRequest } from './types.ts';
import {
  LEAF_FIXED_EXTENSIONS,
  VERSION_V3,
  authorityKeyIdExtension,
  describeCaKey,
  extensionsField,
  parseCertificate,
  signCertificate,
  signatureAlgorithmFor,
  signingKeyIdOf,
  subjectKeyIdExtension,
  uriSanExtension,
} from './x509.ts';

const HOUR_MS = 3_600_000;

/** LeafCertTTL default `72h` (§1.8). */
export const DEFAULT_LEAF_TTL_MS = 72 * HOUR_MS;

/** Leaf NotBefore back-dating, Consul's `CertificateTimeDriftBuffer` = 1 minute (§1.7). */
export const CLOCK_SKEW_BUFFER_MS = 60_000;

/**
 * Largest CSR PEM we parse. A P-256 CSR with one URI SAN is ~0.5 KiB; 16 KiB leaves room
 * for long IDs and future DNS SANs while keeping the ASN.1 parser away from huge input.
 */
export const MAX_CSR_PEM_LENGTH = 16 * 1024;

// ---------------------------------------------------------------------------------------
// Helpers shared with the reference path and the root code.

/**
 * X.509 times have one-second resolution (RFC 5280 §4.1.2.5). Truncating `now` up front
 * keeps the certificate's fields, RootMaterial and IssuedCert in exact agreement.
 */
export function wholeSeconds(d: Date, what: string): number {
  const t = d instanceof Date ? d.getTime() : NaN;
  if (!Number.isFinite(t)) throw new RangeError(`${what} must be a valid Date`);
  return Math.floor(t / 1000) * 1000;
}

/** Epoch ms rounded down to a whole second: X.509 times cannot carry a fraction. */
export function floorToSecond(ms: number): number {
  return Math.floor(ms / 1000) * 1000;
}

export function checkTtl(ttlMs: number, what: string): number {
  if (!Number.isSafeInteger(ttlMs) || ttlMs < 1000) {
    throw new RangeError(`${what} must be a whole number of milliseconds >= 1000, got ${ttlMs}`);
  }
  return ttlMs;
}

/** Go's RFC3339 output for UTC whole seconds: `2018-05-21T16:33:28Z` (no fraction). */
export function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** `CertPEM` (§1.7): the leaf, then every intermediate, each newline-terminated. */
export function certChainPem(leafDer: Uint8Array, intermediatePems: readonly string[] | undefined): string {
  let out = pemEncode('CERTIFICATE', leafDer);
  for (const pem of intermediatePems ?? []) {
    if (typeof pem !== 'string') throw new TypeError('intermediatePems must be PEM strings');
    out += pem.endsWith('\n') ? pem : `${pem}\n`;
  }
  return out;
}

/**
 * Validates a parsed CSR's identity for this request, in the order Consul's
 * `AuthorizeAndSignCertificate` + `SignCertificate` run the checks (§1.11), after the CSR
 * parsed and its signature verified:
 *   2. exactly one URI SAN;  3. no email SAN;  4. the URI parses as a SPIFFE ID;
 *   5. it is a service ID, the requester may act for its service (allowedServices),
 *      and its datacenter is ours (Consul checks these in the authorization step,
 *      before the trust domain);
 *   6. its trust domain is ours (case-insensitive, Consul's CanSign).
 * Then our own additions: no DNS/IP SANs yet, EC P-256 public key, root not expired.
 * Both signing paths call this, so they refuse with the same codes and messages.
 */
export function checkCsrIdentity(
  sans: CsrSans,
  keyIsP256: boolean,
  req: SignLeafRequest,
  nowMs: number,
): { uri: string; id: ServiceId } {
  if (sans.uris.length !== 1) {
    throw new CsrError('CSR_INVALID_URI_COUNT', `CSR SAN contains an invalid number of URIs: ${sans.uris.length}`);
  }
  if (sans.emails > 0) throw new CsrError('CSR_EMAIL_SAN', 'CSR SAN does not allow specifying email addresses');

  const uri = sans.uris[0] as string;
  const id = parseSpiffeId(uri);
  if (id === null) {
    throw new CsrError('CSR_INVALID_SPIFFE_ID', `SPIFFE ID is not in the expected format: ${JSON.stringify(uri)}`);
  }

  if (id.kind === 'agent' || id.kind === 'mesh-gateway') {
    throw new CsrError('CSR_UNSUPPORTED_ID_KIND', `signing ${id.kind} certificates is not implemented yet; only service IDs are`);
  }
  if (id.kind !== 'service') {
    throw new CsrError('CSR_INVALID_ID_KIND', 'SPIFFE ID in CSR must be a service, mesh-gateway, or agent ID');
  }
  // Consul authorizes (service:write on the ID's service) before it compares datacenters.
  if (req.allowedServices !== undefined && !req.allowedServices.includes(id.service)) {
    throw new CsrError(
      'CSR_PERMISSION_DENIED',
      `Permission denied: the requester may not obtain a certificate for service ${JSON.stringify(id.service)}`,
    );
  }
  if (id.datacenter !== req.datacenter) {
    throw new CsrError(
      'CSR_WRONG_DATACENTER',
      `SPIFFE ID in CSR from a different datacenter: ${id.datacenter}, we are ${req.datacenter}`,
    );
  }

  // parseSpiffeId only admits lower-case hosts, so lower-casing our configured value makes
  // the comparison Consul's case-insensitive one.
  const ourTd = req.trustDomain.toLowerCase();
  if (id.trustDomain !== ourTd) {
    throw new CsrError(
      'CSR_WRONG_TRUST_DOMAIN',
      `SPIFFE ID in CSR from a different trust domain: ${id.trustDomain}, we are ${ourTd}`,
    );
  }

  // Consul copies DNS/IP SANs from the CSR (for gateways); until that is built we refuse
  // rather than silently issue a certificate without them.
  if (sans.others > 0) {
    throw new CsrError('CSR_UNSUPPORTED_SAN', 'CSR SAN may only contain the one URI: DNS/IP SANs are not supported yet');
  }
  if (!keyIsP256) {
    throw new CsrError('CSR_UNSUPPORTED_KEY', 'CSR public key must be EC P-256 (Consul leaf keys are always P-256)');
  }
  // §1.11 step 6: never sign with an expired root.
  if (nowMs > req.root.notAfter.getTime()) {
    throw new CaError('CA_ROOT_EXPIRED', `root ${req.root.id} expired at ${req.root.notAfter.toISOString()}`);
  }
  return { uri, id };
}

// ---------------------------------------------------------------------------------------
// Parsed-root cache.

/** What signing needs from a root, parsed once per thread. */
type RootSigner = {
  readonly certPem: string;
  readonly keyPem: string;
  readonly key: KeyObject;
  readonly keyType: CaKeyType;
  /** The signature AlgorithmIdentifier (it appears in the TBS and again after it). */
  readonly signatureAlgorithm: Uint8Array;
  /** The root's encoded subject Name: the leaf's issuer, byte for byte. */
  readonly issuer: Uint8Array;
  /** AuthorityKeyIdentifier extension naming the root's SKI. */
  readonly authorityKeyId: Uint8Array;
};

/**
 * Roots kept parsed per thread. A cluster signs with one active root; after a rotation
 * the old one may still sign for a moment (requests already queued), so a handful covers
 * every realistic case while bounding what a misbehaving caller can pin in memory.
 */
export const ROOT_CACHE_MAX = 8;
const rootCache = new Map<string, RootSigner>();

/** Entries in this thread's root cache (for tests). */
export function rootCacheSize(): number {
  return rootCache.size;
}

/**
 * The parsed form of `root`, from this thread's cache when the same root (same id, and
 * byte-identical PEMs, so a caller that mislabels a root cannot get another root's key)
 * was seen before. Evicts the oldest entry beyond ROOT_CACHE_MAX.
 */
function rootSigner(root: RootMaterial): RootSigner {
  const hit = rootCache.get(root.id);
  if (hit !== undefined && hit.certPem === root.certPem && hit.keyPem === root.keyPem) return hit;

  let cert;
  let key: KeyObject;
  let certPub: KeyObject;
  try {
    cert = parseCertificate(pemDecode(root.certPem, 'CERTIFICATE'));
    key = createPrivateKey(root.keyPem);
    certPub = createPublicKey(pemEncode('PUBLIC KEY', cert.spki));
  } catch (err) {
    throw new CaError('CA_ROOT_MALFORMED', `root ${root.id} could not be parsed for signing: ${String(err)}`);
  }
  const kind = describeCaKey(key);
  if (kind === null) throw new CaError('CA_ROOT_UNSUPPORTED_KEY', `root ${root.id} has a key meshd cannot sign with`);
  // Once per root and thread (~0.1 ms): a key that is not the certificate's would issue
  // leaves nobody can verify. loadRoot checks this too, but RootMaterial is plain data.
  const pub = createPublicKey(key);
  // Types first (see inspectRoot in authority.ts: equals() across types poisons OpenSSL's error queue).
  if (pub.asymmetricKeyType !== certPub.asymmetricKeyType || !pub.equals(certPub)) {
    throw new CaError('CA_ROOT_KEY_MISMATCH', `root ${root.id}: the private key does not match the certificate`);
  }
  const signer: RootSigner = {
    certPem: root.certPem,
    keyPem: root.keyPem,
    key,
    keyType: kind.type,
    signatureAlgorithm: signatureAlgorithmFor(kind.type),
    issuer: cert.subject.slice(),
    authorityKeyId: authorityKeyIdExtension(signingKeyIdOf(cert)),
  };
  rootCache.delete(root.id);
  if (rootCache.size >= ROOT_CACHE_MAX) rootCache.delete(rootCache.keys().next().value as string);
  rootCache.set(root.id, signer);
  return signer;
}

// ---------------------------------------------------------------------------------------
// The fast path.

/** An empty RDNSequence: the leaf's subject. */
const EMPTY_NAME = sequence();

/**
 * Validates a leaf CSR and signs it (§1.7, §1.11); see checkCsrIdentity for the checks and
 * their order. Leaf: empty subject; critical SAN with exactly the one URI; EKU clientAuth +
 * serverAuth; KeyUsage digitalSignature|keyEncipherment|dataEncipherment|keyAgreement;
 * BasicConstraints CA:false; SKI = KeyId(leaf SPKI); AKI = root SKI;
 * NotBefore = now − 1 min; NotAfter = NotBefore + ttl; random serial.
 *
 * `serial` is for tests that compare with the reference path; production callers leave
 * it out and get randomSerial().
 */
export function signLeafFast(req: SignLeafRequest, serial: Uint8Array = randomSerial()): IssuedCert {
  const nowMs = wholeSeconds(req.now, 'now');
  const ttlMs = checkTtl(req.ttlMs ?? DEFAULT_LEAF_TTL_MS, 'ttlMs');

  // 1. Parse and verify the CSR's own signature.
  if (typeof req.csrPem !== 'string' || req.csrPem.length > MAX_CSR_PEM_LENGTH) {
    throw new CsrError('CSR_MALFORMED', `CSR must be a PEM string of at most ${MAX_CSR_PEM_LENGTH} characters`);
  }
  let der: Uint8Array;
  try {
    der = pemDecode(req.csrPem, 'CERTIFICATE REQUEST');
  } catch (err) {
    throw new CsrError('CSR_MALFORMED', `CSR could not be parsed: ${err instanceof Error ? err.message : String(err)}`);
  }
  const csr = parseCsr(der);
  if (verifyCsr(csr) === null) throw new CsrError('CSR_BAD_SIGNATURE', 'CSR signature does not verify against its public key');

  // 2-6 and our additions.
  const { uri, id } = checkCsrIdentity(csr.sans, isP256Key(csr), req, nowMs);

  const root = rootSigner(req.root);
  const notBefore = nowMs - CLOCK_SKEW_BUFFER_MS;
  const notAfter = floorToSecond(notBefore + ttlMs);

  const tbs = sequence(
    VERSION_V3,
    unsignedInteger(serial),
    root.signatureAlgorithm,
    root.issuer,
    sequence(time(notBefore), time(notAfter)),
    EMPTY_NAME, // empty since Consul PR #10424; the SAN carries the identity
    csr.spki,
    extensionsField(
      LEAF_FIXED_EXTENSIONS,
      // Critical because the subject is empty (RFC 5280 §4.2.1.6).
      uriSanExtension(uri, true),
      subjectKeyIdExtension(keyId(csr.spki)),
      root.authorityKeyId,
    ),
  );
  const leaf = signCertificate(tbs, root.key, root.keyType);

  return {
    SerialNumber: colonHex(serial),
    CertPEM: certChainPem(leaf, req.intermediatePems),
    Service: id.service,
    ServiceURI: uri,
    ValidAfter: rfc3339(notBefore),
    ValidBefore: rfc3339(notAfter),
    Namespace: id.namespace,
    Datacenter: id.datacenter,
  };
}
