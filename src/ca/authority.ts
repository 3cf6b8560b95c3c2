// The built-in CA: root generation and loading, leaf CSR creation (proxy side) and
// leaf CSR signing (CA side), following Consul's "consul" provider (consul-mesh.md §1).
//
// Runs on: the control thread (generateRoot, loadRoot), the signing worker
// (signLeafCsr, via sign-task.ts), and proxies (createLeafCsr).
//
// Everything here is a function of its arguments: the clock comes in as `now`, keys and
// certificates come in as PEM, and nothing is cached between calls. Certificates are
// built with @peculiar/x509 on WebCrypto; the extensions whose bytes Consul defines
// differently from the library's defaults (SKI/AKI) are built from our own bytes.

import 'reflect-metadata'; // must precede @peculiar/x509 (tsyringe needs the polyfill)
import * as x509 from '@peculiar/x509';
import { createPrivateKey, createPublicKey, randomInt, webcrypto } from 'node:crypto';
import { colonHex, hex, keyId, pemDecode, pemEncode, randomSerial, sha1Fingerprint } from './certs.ts';
import { readCertIdentity } from './der.ts';
import { parseSpiffeId, signingSpiffeId, trustDomainFor } from './spiffe.ts';

x509.cryptoProvider.set(webcrypto);

const subtle = webcrypto.subtle;

// ---------------------------------------------------------------------------------------
// Constants, each with where it comes from.

const HOUR_MS = 3_600_000;

/** RootCertTTL default `87600h` (§1.8). */
export const DEFAULT_ROOT_TTL_MS = 87_600 * HOUR_MS;

/** LeafCertTTL default `72h` (§1.8). */
export const DEFAULT_LEAF_TTL_MS = 72 * HOUR_MS;

/** Leaf NotBefore back-dating, Consul's `CertificateTimeDriftBuffer` = 1 minute (§1.7). */
export const CLOCK_SKEW_BUFFER_MS = 60_000;

/** Leaf and root keys are EC P-256 (§1.3: Consul's default `ec`/256; leaves always P-256). */
const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;

/** ECDSAWithSHA256 for any EC CA key (§1.3). */
const SIGNING_ALGORITHM = { name: 'ECDSA', hash: 'SHA-256' } as const;

const OID_SUBJECT_ALT_NAME = '2.5.29.17';

/**
 * Largest CSR PEM we parse. A P-256 CSR with one URI SAN is ~0.5 KiB; 16 KiB leaves room
 * for long IDs and future DNS SANs while keeping the ASN.1 parser away from huge input.
 */
export const MAX_CSR_PEM_LENGTH = 16 * 1024;

// ---------------------------------------------------------------------------------------
// Errors. Codes are stable: they are metric labels and API error identifiers.

/** Why a leaf CSR was refused. Messages for Consul's checks are Consul's own (§1.11). */
export type CsrErrorCode =
  | 'CSR_MALFORMED'
  | 'CSR_BAD_SIGNATURE'
  | 'CSR_INVALID_URI_COUNT'
  | 'CSR_EMAIL_SAN'
  | 'CSR_UNSUPPORTED_SAN'
  | 'CSR_INVALID_SPIFFE_ID'
  | 'CSR_INVALID_ID_KIND'
  | 'CSR_UNSUPPORTED_ID_KIND'
  | 'CSR_WRONG_DATACENTER'
  | 'CSR_WRONG_TRUST_DOMAIN'
  | 'CSR_UNSUPPORTED_KEY';

export const CSR_ERROR_CODES: readonly CsrErrorCode[] = [
  'CSR_MALFORMED',
  'CSR_BAD_SIGNATURE',
  'CSR_INVALID_URI_COUNT',
  'CSR_EMAIL_SAN',
  'CSR_UNSUPPORTED_SAN',
  'CSR_INVALID_SPIFFE_ID',
  'CSR_INVALID_ID_KIND',
  'CSR_UNSUPPORTED_ID_KIND',
  'CSR_WRONG_DATACENTER',
  'CSR_WRONG_TRUST_DOMAIN',
  'CSR_UNSUPPORTED_KEY',
];

/** A CSR the caller sent is not acceptable (Consul's `InvalidCSRError`): a 400, not a 500. */
export class CsrError extends Error {
  readonly code: CsrErrorCode;
  constructor(code: CsrErrorCode, message: string) {
    super(message);
    this.name = 'CsrError';
    this.code = code;
  }
}

/** The CA's own material is unusable (bad root on load, expired root when signing). */
export type CaErrorCode =
  | 'CA_ROOT_MALFORMED'
  | 'CA_ROOT_UNSUPPORTED_KEY'
  | 'CA_ROOT_KEY_MISMATCH'
  | 'CA_ROOT_NOT_CA'
  | 'CA_ROOT_BAD_URI'
  | 'CA_ROOT_EXPIRED';

export const CA_ERROR_CODES: readonly CaErrorCode[] = [
  'CA_ROOT_MALFORMED',
  'CA_ROOT_UNSUPPORTED_KEY',
  'CA_ROOT_KEY_MISMATCH',
  'CA_ROOT_NOT_CA',
  'CA_ROOT_BAD_URI',
  'CA_ROOT_EXPIRED',
];

export class CaError extends Error {
  readonly code: CaErrorCode;
  constructor(code: CaErrorCode, message: string) {
    super(message);
    this.name = 'CaError';
    this.code = code;
  }
}

// ---------------------------------------------------------------------------------------
// Types.

/** A root CA: the PEMs plus the derived values Consul publishes in `/connect/ca/roots`. */
export type RootMaterial = {
  /** Self-signed root certificate, PEM, newline-terminated (§1.9: RootCert ends in \n). */
  certPem: string;
  /** Root private key, PKCS#8 PEM. Never leaves the CA's process except to its own worker. */
  keyPem: string;
  /** Root `ID`: SHA-1 fingerprint of the cert DER, colon-hex (§1.4). */
  id: string;
  /** `SigningKeyID`: colon-hex of the root's SubjectKeyId (§1.4). */
  signingKeyId: string;
  /** Serial, colon-hex of the big-endian minimal bytes (Consul's EncodeSerialNumber form). */
  serialNumber: string;
  notBefore: Date;
  notAfter: Date;
  /** Lower-case `<cluster-id>.consul`, from the root's URI SAN. */
  trustDomain: string;
};

/** Consul's `structs.IssuedCert` JSON (§1.10), as the HTTP API returns it. */
export type IssuedCert = {
  SerialNumber: string;
  CertPEM: string;
  Service: string;
  ServiceURI: string;
  ValidAfter: string;
  ValidBefore: string;
  Namespace: string;
  Datacenter: string;
};

export type SignLeafRequest = {
  csrPem: string;
  root: RootMaterial;
  /** The cluster's current trust domain (Consul checks against config, not the root). */
  trustDomain: string;
  /** This server's datacenter. */
  datacenter: string;
  now: Date;
  ttlMs?: number;
};

// ---------------------------------------------------------------------------------------
// Small pure helpers.

/**
 * X.509 times have one-second resolution (RFC 5280 §4.1.2.5). Truncating `now` up front
 * keeps the certificate's fields, RootMaterial and IssuedCert in exact agreement.
 */
function wholeSeconds(d: Date, what: string): number {
  const t = d instanceof Date ? d.getTime() : NaN;
  if (!Number.isFinite(t)) throw new RangeError(`${what} must be a valid Date`);
  return Math.floor(t / 1000) * 1000;
}

function checkTtl(ttlMs: number, what: string): number {
  if (!Number.isSafeInteger(ttlMs) || ttlMs < 1000) {
    throw new RangeError(`${what} must be a whole number of milliseconds >= 1000, got ${ttlMs}`);
  }
  return ttlMs;
}

/** Go's RFC3339 output for UTC whole seconds: `2018-05-21T16:33:28Z` (no fraction). */
function rfc3339(ms: number): string {
  return new Date(ms).toISOString().replace(/\.\d{3}Z$/, 'Z');
}

/** Colon-hex of a hex serial with leading zero octets removed (Go's big.Int.Bytes()). */
function serialColonHex(serialHex: string): string {
  const bytes = Buffer.from(serialHex.length % 2 ? `0${serialHex}` : serialHex, 'hex');
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  return colonHex(bytes.subarray(i));
}

const BASE36 = '0123456789abcdefghijklmnopqrstuvwxyz';

/**
 * Root subject CN (§1.5): `pri-<uid8>.consul.ca.<td8>.consul`. `uid8` is 8 random base36
 * chars; `td8` the first 8 chars of the trust domain. Never depended on by verifiers.
 */
function rootCommonName(trustDomain: string): string {
  let uid = '';
  for (let i = 0; i < 8; i++) uid += BASE36[randomInt(36)];
  return `pri-${uid}.consul.ca.${trustDomain.slice(0, 8)}.consul`;
}

function derOf(cert: x509.X509Certificate): Uint8Array {
  return new Uint8Array(cert.rawData);
}

// ---------------------------------------------------------------------------------------
// Roots.

/**
 * Generates a self-signed root CA (§1.5): EC P-256, CN `pri-….consul.ca.<td8>.consul`,
 * one URI SAN `spiffe://<td>`, critical BasicConstraints CA:true, critical KeyUsage
 * keyCertSign|cRLSign|digitalSignature, SKI = AKI = KeyId (SHA-256 of SPKI),
 * NotBefore = now (roots are not back-dated), NotAfter = now + ttl.
 */
export async function generateRoot(opts: { clusterId: string; now: Date; ttlMs?: number }): Promise<RootMaterial> {
  const trustDomain = trustDomainFor(opts.clusterId);
  const rootUri = signingSpiffeId(trustDomain); // throws RangeError on a bad cluster ID
  const notBefore = wholeSeconds(opts.now, 'now');
  const notAfter = notBefore + checkTtl(opts.ttlMs ?? DEFAULT_ROOT_TTL_MS, 'ttlMs');

  const keys = await subtle.generateKey(EC_P256, true, ['sign', 'verify']);
  const spki = new Uint8Array(await subtle.exportKey('spki', keys.publicKey));
  const ski = hex(keyId(spki));

  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: hex(randomSerial()),
    name: `CN=${rootCommonName(trustDomain)}`,
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
    signingAlgorithm: SIGNING_ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign | x509.KeyUsageFlags.digitalSignature,
        true,
      ),
      new x509.SubjectAlternativeNameExtension([{ type: 'url', value: rootUri }]),
      // From our bytes: the library's create() helpers would use SHA-1 (RFC 5280's method).
      new x509.SubjectKeyIdentifierExtension(ski),
      new x509.AuthorityKeyIdentifierExtension(ski),
    ],
  });

  const pkcs8 = new Uint8Array(await subtle.exportKey('pkcs8', keys.privateKey));
  return describeRoot(cert, pemEncode('PRIVATE KEY', pkcs8), trustDomain);
}

/** Builds RootMaterial from a parsed root (already validated by the caller). */
function describeRoot(cert: x509.X509Certificate, keyPem: string, trustDomain: string): RootMaterial {
  const der = derOf(cert);
  const skiExt = cert.getExtension(x509.SubjectKeyIdentifierExtension);
  // A supplied root without an SKI still gets a SigningKeyID: Consul's KeyId of its key.
  const ski = skiExt ? Buffer.from(skiExt.keyId, 'hex') : keyId(new Uint8Array(cert.publicKey.rawData));
  return {
    certPem: pemEncode('CERTIFICATE', der),
    keyPem,
    id: sha1Fingerprint(der),
    signingKeyId: colonHex(ski),
    serialNumber: serialColonHex(cert.serialNumber),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    trustDomain,
  };
}

/**
 * Loads a root from its PEMs (agent restart from the data dir, or a user-supplied
 * `RootCert` + `PrivateKey`, §1.5). The key may be PKCS#8 or SEC1 (`EC PRIVATE KEY`, what
 * Consul writes); it is normalised to PKCS#8. Checks, each a CaError:
 * EC P-256 key; key matches the certificate; CA:TRUE; exactly one URI SAN and it is a
 * signing ID `spiffe://<td>` (the docs' requirement for a supplied root).
 */
export function loadRoot(certPem: string, keyPem: string): RootMaterial {
  let cert: x509.X509Certificate;
  let der: Uint8Array;
  try {
    der = pemDecode(certPem, 'CERTIFICATE');
    cert = new x509.X509Certificate(der);
  } catch (err) {
    throw new CaError('CA_ROOT_MALFORMED', `root certificate is not a PEM X.509 certificate: ${String(err)}`);
  }

  let privateKey;
  try {
    privateKey = createPrivateKey(keyPem);
  } catch (err) {
    throw new CaError('CA_ROOT_MALFORMED', `root private key could not be parsed: ${String(err)}`);
  }
  if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new CaError('CA_ROOT_UNSUPPORTED_KEY', 'root private key must be EC P-256 (RSA and other curves are not supported yet)');
  }
  const keySpki = createPublicKey(privateKey).export({ type: 'spki', format: 'der' });
  if (!keySpki.equals(new Uint8Array(cert.publicKey.rawData))) {
    throw new CaError('CA_ROOT_KEY_MISMATCH', 'root private key does not match the root certificate public key');
  }

  const ident = readCertIdentity(der);
  if (ident === null) throw new CaError('CA_ROOT_MALFORMED', 'root certificate is not strict DER');
  if (!ident.isCA) throw new CaError('CA_ROOT_NOT_CA', 'root certificate lacks basicConstraints CA:TRUE');
  const uri = ident.uris.length === 1 ? ident.uris[0] : undefined;
  const id = uri === undefined ? null : parseSpiffeId(uri);
  if (id === null || id.kind !== 'signing') {
    throw new CaError(
      'CA_ROOT_BAD_URI',
      `root certificate must carry exactly one URI SAN of the form spiffe://<cluster-id>.consul, found ${JSON.stringify(ident.uris)}`,
    );
  }

  const pkcs8Pem = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string;
  return describeRoot(cert, pkcs8Pem, id.trustDomain);
}

// ---------------------------------------------------------------------------------------
// Leaves.

/**
 * Proxy side: generates an EC P-256 key (always P-256 for leaves, §1.3) and a CSR with an
 * empty subject and exactly one URI SAN. The private key stays with the caller.
 */
export async function createLeafCsr(serviceUri: string): Promise<{ csrPem: string; keyPem: string }> {
  if (parseSpiffeId(serviceUri) === null) throw new RangeError(`not a valid SPIFFE ID: ${JSON.stringify(serviceUri)}`);
  const keys = await subtle.generateKey(EC_P256, true, ['sign', 'verify']);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: '',
    keys,
    signingAlgorithm: SIGNING_ALGORITHM,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: serviceUri }], true)],
  });
  const pkcs8 = new Uint8Array(await subtle.exportKey('pkcs8', keys.privateKey));
  return {
    csrPem: pemEncode('CERTIFICATE REQUEST', new Uint8Array(csr.rawData)),
    keyPem: pemEncode('PRIVATE KEY', pkcs8),
  };
}

type CsrSans = { uris: string[]; emails: number; others: number };

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

/**
 * CA side: validates a leaf CSR and signs it with the root.
 *
 * Checks run in the order Consul's `AuthorizeAndSignCertificate` + `SignCertificate` run
 * them (§1.11), so a CSR that is wrong in two ways gets Consul's error:
 *   1. CSR parses and its self-signature verifies (Consul's ParseCSR).
 *   2. exactly one URI SAN;  3. no email SAN;  4. the URI parses as a SPIFFE ID;
 *   5. it is a service ID, and its datacenter is ours (Consul checks DC in the
 *      authorization step, before trust domain);
 *   6. its trust domain is ours (case-insensitive, Consul's CanSign).
 * Then our own additions: no DNS/IP SANs yet, EC P-256 public key, root not expired.
 *
 * Leaf (§1.7): empty subject; critical SAN with exactly the one URI; EKU clientAuth +
 * serverAuth; KeyUsage digitalSignature|keyEncipherment|dataEncipherment|keyAgreement;
 * BasicConstraints CA:false; SKI = KeyId(leaf SPKI); AKI = root SKI;
 * NotBefore = now − 1 min; NotAfter = NotBefore + ttl; random serial.
 */
export async function signLeafCsr(req: SignLeafRequest): Promise<IssuedCert> {
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

  // 2-3. SAN shape.
  if (sans.uris.length !== 1) {
    throw new CsrError('CSR_INVALID_URI_COUNT', `CSR SAN contains an invalid number of URIs: ${sans.uris.length}`);
  }
  if (sans.emails > 0) throw new CsrError('CSR_EMAIL_SAN', 'CSR SAN does not allow specifying email addresses');

  // 4. SPIFFE ID.
  const uri = sans.uris[0] as string;
  const id = parseSpiffeId(uri);
  if (id === null) {
    throw new CsrError('CSR_INVALID_SPIFFE_ID', `SPIFFE ID is not in the expected format: ${JSON.stringify(uri)}`);
  }

  // 5. Kind, then datacenter.
  if (id.kind === 'agent' || id.kind === 'mesh-gateway') {
    throw new CsrError('CSR_UNSUPPORTED_ID_KIND', `signing ${id.kind} certificates is not implemented yet; only service IDs are`);
  }
  if (id.kind !== 'service') {
    throw new CsrError('CSR_INVALID_ID_KIND', 'SPIFFE ID in CSR must be a service, mesh-gateway, or agent ID');
  }
  if (id.datacenter !== req.datacenter) {
    throw new CsrError(
      'CSR_WRONG_DATACENTER',
      `SPIFFE ID in CSR from a different datacenter: ${id.datacenter}, we are ${req.datacenter}`,
    );
  }

  // 6. Trust domain. parseSpiffeId only admits lower-case hosts, so lower-casing our
  // configured value makes the comparison Consul's case-insensitive one.
  const ourTd = req.trustDomain.toLowerCase();
  if (id.trustDomain !== ourTd) {
    throw new CsrError(
      'CSR_WRONG_TRUST_DOMAIN',
      `SPIFFE ID in CSR from a different trust domain: ${id.trustDomain}, we are ${ourTd}`,
    );
  }

  // Our additions. Consul copies DNS/IP SANs from the CSR (for gateways); until that is
  // built we refuse rather than silently issue a certificate without them.
  if (sans.others > 0) {
    throw new CsrError('CSR_UNSUPPORTED_SAN', 'CSR SAN may only contain the one URI: DNS/IP SANs are not supported yet');
  }
  let keyAlg: webcrypto.EcKeyAlgorithm | null = null;
  try {
    keyAlg = csr.publicKey.algorithm as webcrypto.EcKeyAlgorithm;
  } catch {
    // A key type the library cannot describe (say Ed25519) is simply not P-256.
  }
  if (keyAlg?.name !== 'ECDSA' || keyAlg.namedCurve !== 'P-256') {
    throw new CsrError('CSR_UNSUPPORTED_KEY', 'CSR public key must be EC P-256 (Consul leaf keys are always P-256)');
  }

  // §1.11 step 6: never sign with an expired root.
  if (nowMs > req.root.notAfter.getTime()) {
    throw new CaError('CA_ROOT_EXPIRED', `root ${req.root.id} expired at ${req.root.notAfter.toISOString()}`);
  }

  const rootCert = new x509.X509Certificate(pemDecode(req.root.certPem, 'CERTIFICATE'));
  const signingKey = await subtle.importKey(
    'pkcs8',
    pemDecode(req.root.keyPem, 'PRIVATE KEY'),
    EC_P256,
    false,
    ['sign'],
  );

  const notBefore = nowMs - CLOCK_SKEW_BUFFER_MS;
  const notAfter = notBefore + ttlMs;
  const serial = randomSerial();
  const leafSki = hex(keyId(new Uint8Array(csr.publicKey.rawData)));
  const rootSki = req.root.signingKeyId.replaceAll(':', '');

  const leaf = await x509.X509CertificateGenerator.create({
    serialNumber: hex(serial),
    subject: '', // empty since Consul PR #10424; the SAN carries the identity
    issuer: rootCert.subjectName, // the exact encoded Name, so issuer == root subject byte-for-byte
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
    signingAlgorithm: SIGNING_ALGORITHM,
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
    CertPEM: pemEncode('CERTIFICATE', derOf(leaf)),
    Service: id.service,
    ServiceURI: uri,
    ValidAfter: rfc3339(notBefore),
    ValidBefore: rfc3339(notAfter),
    Namespace: id.namespace,
    Datacenter: id.datacenter,
  };
}
