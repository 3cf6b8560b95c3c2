// The built-in CA: root generation, loading and validation (including a root the user
// brings), cross-signing for root rotation, leaf CSR creation (proxy side) and leaf CSR
// signing (CA side), following Consul's "consul" provider (consul-mesh.md §1).
//
// Runs on: the control thread (generateRoot, loadRoot, validateProvidedRoot,
// crossSignRoot), the signing worker (signLeafCsr's fast path, via sign-task.ts, which
// imports leaf.ts directly), and proxies (createLeafCsr).
//
// Everything here is a function of its arguments: the clock comes in as `now`, keys and
// certificates come in as PEM. Roots and CSRs are built with @peculiar/x509 on WebCrypto
// (rare operations; the library is a second encoder independent of ours). Leaves and
// cross-signed certificates are assembled from DER pieces by our own code (leaf.ts,
// x509.ts) and signed with node:crypto; the @peculiar leaf path lives on in reference.ts
// as the specification the fast path is tested against.

import 'reflect-metadata'; // must precede @peculiar/x509 (tsyringe needs the polyfill)
import * as x509 from '@peculiar/x509';
import { X509Certificate, createPrivateKey, createPublicKey, randomInt, webcrypto } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { extension as asn1Extension, oid as asn1Oid, sequence, time, unsignedInteger } from './asn1.ts';
import { colonHex, hex, keyId, pemDecode, pemEncode, randomSerial, sha1Fingerprint } from './certs.ts';
import { readCertIdentity } from './der.ts';
import { CaError } from './errors.ts';
import { checkTtl, floorToSecond, signLeafFast, wholeSeconds } from './leaf.ts';
import { parseSpiffeId, signingSpiffeId, trustDomainFor } from './spiffe.ts';
import { DEFAULT_EC_KEY_BITS, GENERATED_KEY_BITS } from './types.ts';
import type { CaKeyType, IssuedCert, RootMaterial, SignLeafRequest } from './types.ts';
import {
  KEY_USAGE_CERT_SIGN,
  OID_AUTHORITY_KEY_ID,
  OID_SUBJECT_KEY_ID,
  SUPPORTED_CA_KEYS,
  VERSION_V3,
  authorityKeyIdExtension,
  describeCaKey,
  extensionsField,
  keyUsageOf,
  parseCertificate,
  signCertificate,
  signatureAlgorithmFor,
  signingKeyIdOf,
  subjectKeyIdExtension,
  uriSanExtension,
} from './x509.ts';
import type { ParsedCertificate } from './x509.ts';

export { CA_ERROR_CODES, CSR_ERROR_CODES, CaError, CsrError } from './errors.ts';
export type { CaErrorCode, CsrErrorCode } from './errors.ts';
export type { CaKeyType, IssuedCert, RootMaterial, SignLeafRequest } from './types.ts';
export { DEFAULT_EC_KEY_BITS, GENERATED_KEY_BITS } from './types.ts';
export { CLOCK_SKEW_BUFFER_MS, DEFAULT_LEAF_TTL_MS, MAX_CSR_PEM_LENGTH } from './leaf.ts';

x509.cryptoProvider.set(webcrypto);

const subtle = webcrypto.subtle;

const HOUR_MS = 3_600_000;

/** RootCertTTL default `87600h` (§1.8). */
export const DEFAULT_ROOT_TTL_MS = 87_600 * HOUR_MS;

/** Cross-signed certificates are back-dated like leaves: NotBefore = now − 1 min (§1.12 step 3). */
export const CROSS_SIGN_BACKDATE_MS = 60_000;

/** Leaf keys are always EC P-256 (§1.3). */
const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const;

// ---------------------------------------------------------------------------------------
// Small pure helpers.

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

/**
 * Resolves `privateKeyType`/`privateKeyBits` for a key meshd generates (§1.3): EC 256
 * (default), 384 or 521; RSA 2048 or 4096, bits required. RangeError otherwise: the
 * config decoder (src/control/ca-config.ts) refuses bad values at the edge, so one that
 * gets here is a caller bug.
 */
export function generatedKeyParams(type: CaKeyType = 'ec', bits?: number): { type: CaKeyType; bits: number } {
  if (type !== 'ec' && type !== 'rsa') throw new RangeError(`privateKeyType must be "ec" or "rsa", got ${JSON.stringify(type)}`);
  const b = bits ?? (type === 'ec' ? DEFAULT_EC_KEY_BITS : undefined);
  if (b === undefined) throw new RangeError('privateKeyBits is required when privateKeyType is "rsa" (2048 or 4096)');
  if (!GENERATED_KEY_BITS[type].includes(b)) {
    throw new RangeError(`privateKeyBits for ${type} must be one of ${GENERATED_KEY_BITS[type].join(', ')}, got ${b}`);
  }
  return { type, bits: b };
}

/** WebCrypto parameters for a CA key: import, and signing (SHA-256 whatever the curve, §1.3). */
export function webCryptoCaAlgorithms(
  type: CaKeyType,
  bits: number,
): { key: webcrypto.EcKeyImportParams | webcrypto.RsaHashedImportParams; signing: webcrypto.EcdsaParams | webcrypto.Algorithm } {
  if (type === 'rsa') {
    return {
      key: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
      signing: { name: 'RSASSA-PKCS1-v1_5', hash: 'SHA-256' },
    };
  }
  const namedCurve = bits === 384 ? 'P-384' : bits === 521 ? 'P-521' : 'P-256';
  return { key: { name: 'ECDSA', namedCurve }, signing: { name: 'ECDSA', hash: 'SHA-256' } };
}

// ---------------------------------------------------------------------------------------
// Roots.

/** A CA key pair (a root's or an intermediate's) of the configured type, with its WebCrypto algorithms. */
async function generateCaKeys(privateKeyType: CaKeyType | undefined, privateKeyBits: number | undefined): Promise<{ algs: ReturnType<typeof webCryptoCaAlgorithms>; keys: webcrypto.CryptoKeyPair }> {
  const { type, bits } = generatedKeyParams(privateKeyType, privateKeyBits);
  const algs = webCryptoCaAlgorithms(type, bits);
  const keyParams: webcrypto.RsaHashedKeyGenParams | webcrypto.EcKeyGenParams =
    type === 'rsa'
      ? { name: 'RSASSA-PKCS1-v1_5', modulusLength: bits, publicExponent: new Uint8Array([1, 0, 1]), hash: 'SHA-256' }
      : (algs.key as webcrypto.EcKeyGenParams);
  return { algs, keys: await subtle.generateKey(keyParams, true, ['sign', 'verify']) };
}

/**
 * Generates a self-signed root CA (§1.5): key of the given type (EC P-256 by default),
 * CN `pri-….consul.ca.<td8>.consul`, one URI SAN `spiffe://<td>`, critical
 * BasicConstraints CA:true, critical KeyUsage keyCertSign|cRLSign|digitalSignature,
 * SKI = AKI = KeyId (SHA-256 of SPKI), NotBefore = now (roots are not back-dated),
 * NotAfter = now + ttl. Signed with SHA-256 (ECDSA for any curve, PKCS#1 v1.5 for RSA).
 * An RSA-4096 key takes seconds to generate.
 */
export async function generateRoot(opts: {
  clusterId: string;
  now: Date;
  ttlMs?: number;
  privateKeyType?: CaKeyType;
  privateKeyBits?: number;
}): Promise<RootMaterial> {
  const trustDomain = trustDomainFor(opts.clusterId);
  const rootUri = signingSpiffeId(trustDomain); // throws RangeError on a bad cluster ID
  const notBefore = wholeSeconds(opts.now, 'now');
  const notAfter = floorToSecond(notBefore + checkTtl(opts.ttlMs ?? DEFAULT_ROOT_TTL_MS, 'ttlMs'));
  const { algs, keys } = await generateCaKeys(opts.privateKeyType, opts.privateKeyBits);
  const spki = new Uint8Array(await subtle.exportKey('spki', keys.publicKey));
  const ski = hex(keyId(spki));

  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: hex(randomSerial()),
    name: `CN=${rootCommonName(trustDomain)}`,
    notBefore: new Date(notBefore),
    notAfter: new Date(notAfter),
    signingAlgorithm: algs.signing,
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
  return loadRoot(pemEncode('CERTIFICATE', new Uint8Array(cert.rawData)), pemEncode('PRIVATE KEY', pkcs8));
}

/** How a root's two PEMs are named in errors: by role (loadRoot) or by config field. */
type Names = { cert: string; key: string };
const STORED_NAMES: Names = { cert: 'root certificate', key: 'root private key' };
const CONFIG_NAMES: Names = { cert: 'RootCert', key: 'PrivateKey' };

/** Colon-hex of an INTEGER's content without leading zero octets (Go's big.Int.Bytes()). */
function serialColonHex(content: Uint8Array): string {
  let i = 0;
  while (i < content.length - 1 && content[i] === 0) i++;
  return colonHex(content.subarray(i));
}

function keyTypeName(key: KeyObject): string {
  const d = key.asymmetricKeyDetails;
  if (key.asymmetricKeyType === 'ec') return `EC ${d?.namedCurve ?? 'unknown curve'}`;
  if (key.asymmetricKeyType === 'rsa') return `RSA ${d?.modulusLength ?? '?'} bits`;
  return String(key.asymmetricKeyType);
}

/**
 * The structural checks every root must pass, whether it comes from our data directory or
 * from a user, each a coded CaError whose message names the rule:
 * PEMs parse (CA_ROOT_MALFORMED); key type is one meshd signs with
 * (CA_ROOT_UNSUPPORTED_KEY); key matches the certificate (CA_ROOT_KEY_MISMATCH);
 * BasicConstraints CA:TRUE and, when KeyUsage is present, keyCertSign (CA_ROOT_NOT_CA);
 * exactly one URI SAN, a signing ID `spiffe://<td>` (CA_ROOT_BAD_URI).
 */
function inspectRoot(certPem: string, keyPem: string, names: Names): { material: RootMaterial; cert: ParsedCertificate } {
  let der: Uint8Array;
  let cert: ParsedCertificate;
  try {
    der = pemDecode(certPem, 'CERTIFICATE');
    cert = parseCertificate(der);
  } catch (err) {
    throw new CaError('CA_ROOT_MALFORMED', `${names.cert} is not a PEM X.509 certificate: ${String(err)}`);
  }
  const ident = readCertIdentity(der);
  if (ident === null) {
    throw new CaError('CA_ROOT_MALFORMED', `${names.cert} is not strict DER, or repeats an extension (RFC 5280 §4.2 allows each once)`);
  }

  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey(keyPem);
  } catch (err) {
    throw new CaError(
      'CA_ROOT_MALFORMED',
      `${names.key} could not be parsed (PKCS#8, SEC1 "EC PRIVATE KEY" or PKCS#1 "RSA PRIVATE KEY" PEM, unencrypted): ${String(err)}`,
    );
  }
  const kind = describeCaKey(privateKey);
  if (kind === null) {
    throw new CaError('CA_ROOT_UNSUPPORTED_KEY', `${names.key} is ${keyTypeName(privateKey)}; supported key types are ${SUPPORTED_CA_KEYS}`);
  }
  let certKey: KeyObject;
  try {
    certKey = createPublicKey({ key: Buffer.from(cert.spki), format: 'der', type: 'spki' });
  } catch (err) {
    throw new CaError('CA_ROOT_MALFORMED', `${names.cert} public key could not be parsed: ${String(err)}`);
  }
  // Types first: on Node 24.21, KeyObject.equals() between keys of different types returns
  // false but leaves "different key types" on OpenSSL's error queue, and the next
  // createPrivateKey() in this thread then fails with it (test/ca/byo-root.test.ts).
  const publicKey = createPublicKey(privateKey);
  if (certKey.asymmetricKeyType !== publicKey.asymmetricKeyType || !certKey.equals(publicKey)) {
    throw new CaError('CA_ROOT_KEY_MISMATCH', `${names.key} does not match the public key of ${names.cert}`);
  }

  if (!ident.isCA) {
    throw new CaError('CA_ROOT_NOT_CA', `${names.cert} is not a CA: a basicConstraints extension with CA:TRUE is required`);
  }
  let keyUsage: number | null;
  try {
    keyUsage = keyUsageOf(cert);
  } catch (err) {
    throw new CaError('CA_ROOT_MALFORMED', `${names.cert} keyUsage could not be parsed: ${String(err)}`);
  }
  if (keyUsage !== null && (keyUsage & KEY_USAGE_CERT_SIGN) === 0) {
    throw new CaError('CA_ROOT_NOT_CA', `${names.cert} keyUsage does not include keyCertSign, so it cannot sign leaf certificates`);
  }
  const uri = ident.uris.length === 1 ? ident.uris[0] : undefined;
  const id = uri === undefined ? null : parseSpiffeId(uri);
  if (id === null || id.kind !== 'signing') {
    throw new CaError(
      'CA_ROOT_BAD_URI',
      `${names.cert} must carry exactly one URI SAN, of the form spiffe://<cluster-id>.consul; found ${JSON.stringify(ident.uris)}`,
    );
  }

  let signingKeyId: Uint8Array;
  try {
    signingKeyId = signingKeyIdOf(cert);
  } catch (err) {
    throw new CaError('CA_ROOT_MALFORMED', `${names.cert} subjectKeyIdentifier could not be parsed: ${String(err)}`);
  }
  const material: RootMaterial = {
    certPem: pemEncode('CERTIFICATE', der),
    keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }) as string,
    id: sha1Fingerprint(der),
    // A supplied root without an SKI still gets a SigningKeyID: Consul's KeyId of its key.
    signingKeyId: colonHex(signingKeyId),
    serialNumber: serialColonHex(cert.serial),
    notBefore: new Date(cert.notBeforeMs),
    notAfter: new Date(cert.notAfterMs),
    trustDomain: id.trustDomain,
    privateKeyType: kind.type,
    privateKeyBits: kind.bits,
  };
  return { material, cert };
}

/**
 * Loads a root from its PEMs (agent restart from the data dir). The key may be PKCS#8,
 * SEC1 (`EC PRIVATE KEY`, what Consul writes) or PKCS#1 (`RSA PRIVATE KEY`); it is
 * normalised to PKCS#8. Runs the structural checks of inspectRoot; does not look at the
 * clock (an expired stored root must still load so the agent can report and replace it).
 */
export function loadRoot(certPem: string, keyPem: string): RootMaterial {
  return inspectRoot(certPem, keyPem, STORED_NAMES).material;
}

/**
 * Validates a root the user brings in a CA config PUT (`RootCert` + `PrivateKey`, §1.5)
 * and returns it as RootMaterial. Rules, each a CaError whose message names it:
 * the structural ones of loadRoot (CA:TRUE, key matches, exactly one URI SAN, supported
 * key type), plus: the URI SAN is `spiffe://<clusterId>.consul` of this cluster
 * (CA_ROOT_WRONG_TRUST_DOMAIN) and the certificate is valid at `now`
 * (CA_ROOT_NOT_YET_VALID, CA_ROOT_EXPIRED).
 */
export function validateProvidedRoot(opts: { certPem: string; keyPem: string; clusterId: string; now: Date }): RootMaterial {
  const nowMs = wholeSeconds(opts.now, 'now');
  const want = signingSpiffeId(trustDomainFor(opts.clusterId));
  const { material } = inspectRoot(opts.certPem, opts.keyPem, CONFIG_NAMES);
  const got = signingSpiffeId(material.trustDomain);
  if (got !== want) {
    throw new CaError('CA_ROOT_WRONG_TRUST_DOMAIN', `RootCert URI SAN must be ${want} (this cluster's trust domain), found ${got}`);
  }
  if (nowMs < material.notBefore.getTime()) {
    throw new CaError('CA_ROOT_NOT_YET_VALID', `RootCert is not valid until ${material.notBefore.toISOString()}`);
  }
  if (nowMs > material.notAfter.getTime()) {
    throw new CaError('CA_ROOT_EXPIRED', `RootCert expired at ${material.notAfter.toISOString()}`);
  }
  return material;
}

/**
 * Cross-signs `newRoot` with `oldRoot` for a rotation (§1.12 step 3): a certificate with
 * the new root's subject, public key and extensions (SKI, URI SAN, CA:TRUE, key usages,
 * copied byte for byte), issued by the old root: issuer = old subject, AKI = old SKI,
 * signed by the old key with the old key's algorithm (so an EC root can cross-sign an RSA
 * one and back: Consul issue #10070). NotBefore = now − 1 min, NotAfter = NotBefore +
 * ttlMs (the caller passes max(7 days, 2 × LeafCertTTL)), fresh random serial.
 *
 * A peer that trusts only the old root accepts a leaf of the new root when the chain
 * leaf → this certificate → old root is presented, which is why it goes first in the
 * new root's IntermediateCerts. Refuses (CA_ROOT_EXPIRED) when the old root has expired:
 * nothing still trusts it, and the result would be a certificate from an expired issuer.
 */
export async function crossSignRoot(opts: { newRoot: RootMaterial; oldRoot: RootMaterial; now: Date; ttlMs: number }): Promise<string> {
  await Promise.resolve(); // keep every failure a rejection, like the rest of the async API
  const nowMs = wholeSeconds(opts.now, 'now');
  const ttlMs = checkTtl(opts.ttlMs, 'ttlMs');
  const { newRoot, oldRoot } = opts;
  if (nowMs > oldRoot.notAfter.getTime()) {
    throw new CaError('CA_ROOT_EXPIRED', `cannot cross-sign with root ${oldRoot.id}: it expired at ${oldRoot.notAfter.toISOString()}`);
  }

  let newCert: ParsedCertificate;
  let oldCert: ParsedCertificate;
  let oldKey: KeyObject;
  try {
    newCert = parseCertificate(pemDecode(newRoot.certPem, 'CERTIFICATE'));
    oldCert = parseCertificate(pemDecode(oldRoot.certPem, 'CERTIFICATE'));
    oldKey = createPrivateKey(oldRoot.keyPem);
  } catch (err) {
    throw new CaError('CA_ROOT_MALFORMED', `cross-signing: a root could not be parsed: ${String(err)}`);
  }
  const oldKind = describeCaKey(oldKey);
  if (oldKind === null) throw new CaError('CA_ROOT_UNSUPPORTED_KEY', `root ${oldRoot.id} has a key meshd cannot sign with`);

  // The new root's extensions in their order, with the AKI pointing at the old root.
  const aki = authorityKeyIdExtension(signingKeyIdOf(oldCert));
  const exts: Uint8Array[] = [];
  let sawAki = false;
  let sawSki = false;
  for (const e of newCert.extensions) {
    if (e.oid === OID_AUTHORITY_KEY_ID) {
      exts.push(aki);
      sawAki = true;
    } else {
      exts.push(e.raw);
      if (e.oid === OID_SUBJECT_KEY_ID) sawSki = true;
    }
  }
  // Chain builders match the leaves' AKI (the new root's SigningKeyID) with an SKI.
  if (!sawSki) exts.push(subjectKeyIdExtension(signingKeyIdOf(newCert)));
  if (!sawAki) exts.push(aki);

  const notBefore = nowMs - CROSS_SIGN_BACKDATE_MS;
  const tbs = sequence(
    VERSION_V3,
    unsignedInteger(randomSerial()),
    signatureAlgorithmFor(oldKind.type),
    oldCert.subject,
    sequence(time(notBefore), time(floorToSecond(notBefore + ttlMs))),
    newCert.subject,
    newCert.spki,
    extensionsField(...exts),
  );
  return pemEncode('CERTIFICATE', signCertificate(tbs, oldKey, oldKind.type));
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
    signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'url', value: serviceUri }], true)],
  });
  const pkcs8 = new Uint8Array(await subtle.exportKey('pkcs8', keys.privateKey));
  return {
    csrPem: pemEncode('CERTIFICATE REQUEST', new Uint8Array(csr.rawData)),
    keyPem: pemEncode('PRIVATE KEY', pkcs8),
  };
}

/**
 * CA side: validates a leaf CSR and signs it with the root (leaf.ts's fast path; see
 * signLeafFast for the checks, their order and the leaf's fields). Rejects with CsrError
 * for a bad CSR, CaError for an unusable root, RangeError for a bad `now` or `ttlMs`.
 * `CertPEM` is the leaf followed by `intermediatePems`.
 */
export async function signLeafCsr(req: SignLeafRequest): Promise<IssuedCert> {
  await Promise.resolve(); // every failure a rejection, never a synchronous throw
  return signLeafFast(req);
}

// ---------------------------------------------------------------------------------------
// Intermediates (federation: a secondary datacenter signs with one, §1.6).

/** Intermediates are back-dated like leaves and cross-signs: NotBefore = now − 1 min. */
export const INTERMEDIATE_BACKDATE_MS = 60_000;

/**
 * A refused intermediate: a CSR the primary will not sign, or a certificate the secondary
 * will not use. Separate from CaError (whose codes describe roots) so the API can answer a
 * bad CSR with a 400 and a failed check with a clear log line.
 */
export class IntermediateError extends Error {
  override readonly name = 'IntermediateError';
  readonly code: 'INTERMEDIATE_CSR_INVALID' | 'INTERMEDIATE_NOT_ISSUED';
  constructor(code: IntermediateError['code'], message: string) {
    super(message);
    this.code = code;
  }
}

const OID_EL_BASIC_CONSTRAINTS = asn1Oid('2.5.29.19');
const OID_EL_KEY_USAGE = asn1Oid('2.5.29.15');

/** Critical BasicConstraints CA:TRUE, pathLenConstraint 0: an intermediate signs leaves only. */
const INTERMEDIATE_BASIC_CONSTRAINTS = asn1Extension(OID_EL_BASIC_CONSTRAINTS, true, sequence(Uint8Array.of(0x01, 0x01, 0xff), Uint8Array.of(0x02, 0x01, 0x00)));
/** Critical KeyUsage digitalSignature (bit 0) | keyCertSign (5) | cRLSign (6): 0x86, one unused bit. */
const INTERMEDIATE_KEY_USAGE = asn1Extension(OID_EL_KEY_USAGE, true, Uint8Array.of(0x03, 0x02, 0x01, 0x86));

/**
 * Secondary side: generates the intermediate's key (the primary's PrivateKeyType/Bits) and
 * a CA CSR for it: subject CN `sec-<uid8>.consul.ca.<td8>.consul`, one URI SAN
 * `spiffe://<td>`, BasicConstraints CA:TRUE pathlen 0 requested. The key stays with the
 * caller (it never leaves the secondary's agent).
 */
export async function createIntermediateCsr(opts: { trustDomain: string; privateKeyType?: CaKeyType; privateKeyBits?: number }): Promise<{ csrPem: string; keyPem: string }> {
  const uri = signingSpiffeId(opts.trustDomain);
  const { algs, keys } = await generateCaKeys(opts.privateKeyType, opts.privateKeyBits);
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: `CN=${rootCommonName(opts.trustDomain).replace(/^pri-/, 'sec-')}`,
    keys,
    signingAlgorithm: algs.signing,
    extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.SubjectAlternativeNameExtension([{ type: 'url', value: uri }])],
  });
  const pkcs8 = new Uint8Array(await subtle.exportKey('pkcs8', keys.privateKey));
  return { csrPem: pemEncode('CERTIFICATE REQUEST', new Uint8Array(csr.rawData)), keyPem: pemEncode('PRIVATE KEY', pkcs8) };
}

/**
 * Primary side (Consul's ConnectCA.SignIntermediate, §1.6, §1.11): signs a secondary's CA
 * CSR with the active root. Checks, each a CaError naming the rule: the CSR parses and its
 * self-signature verifies; its key is one meshd signs with; URI SANs, when present, are
 * exactly one, our signing ID `spiffe://<td>` (each IntermediateError
 * INTERMEDIATE_CSR_INVALID); the root has not expired (CaError CA_ROOT_EXPIRED).
 *
 * The certificate: the CSR's subject and key; issuer = the root's subject, byte for byte;
 * critical BasicConstraints CA:TRUE pathlen 0; critical KeyUsage
 * digitalSignature|keyCertSign|cRLSign; URI SAN `spiffe://<td>`; SKI = KeyId(CSR key);
 * AKI = the root's SKI; NotBefore = now − 1 min; NotAfter = NotBefore + ttl, capped at the
 * root's NotAfter (an intermediate outliving its root would be a chain that stops
 * verifying before its own end); random serial.
 */
export async function signIntermediateCsr(opts: { csrPem: string; root: RootMaterial; trustDomain: string; now: Date; ttlMs: number }): Promise<string> {
  const nowMs = wholeSeconds(opts.now, 'now');
  const ttlMs = checkTtl(opts.ttlMs, 'ttlMs');
  const invalid = (why: string): never => {
    throw new IntermediateError('INTERMEDIATE_CSR_INVALID', `intermediate CSR refused: ${why}`);
  };
  if (nowMs > opts.root.notAfter.getTime()) throw new CaError('CA_ROOT_EXPIRED', `root ${opts.root.id} expired at ${opts.root.notAfter.toISOString()}`);
  let csr: x509.Pkcs10CertificateRequest;
  try {
    csr = new x509.Pkcs10CertificateRequest(opts.csrPem);
  } catch (err) {
    return invalid(`not a PEM PKCS#10 request: ${String(err)}`);
  }
  let verified = false;
  try {
    verified = await csr.verify();
  } catch {
    verified = false;
  }
  if (!verified) invalid('its signature does not verify against its public key');
  const spki = new Uint8Array(csr.publicKey.rawData);
  let kind: { type: CaKeyType; bits: number } | null = null;
  try {
    kind = describeCaKey(createPublicKey({ key: Buffer.from(spki), format: 'der', type: 'spki' }));
  } catch {
    kind = null;
  }
  if (kind === null) invalid(`its public key is not one meshd signs with (${SUPPORTED_CA_KEYS})`);
  const want = signingSpiffeId(opts.trustDomain);
  const sanExt = csr.getExtension('2.5.29.17');
  const san = sanExt === null ? null : new x509.SubjectAlternativeNameExtension(sanExt.rawData);
  const uris = (san?.names.items ?? []).filter((n) => n.type === 'url').map((n) => n.value);
  if (uris.length > 1 || (uris.length === 1 && uris[0] !== want)) invalid(`URI SANs must be exactly ${want} (this cluster's signing ID), found ${JSON.stringify(uris)}`);

  let rootCert: ParsedCertificate;
  let rootKey: KeyObject;
  try {
    rootCert = parseCertificate(pemDecode(opts.root.certPem, 'CERTIFICATE'));
    rootKey = createPrivateKey(opts.root.keyPem);
  } catch (err) {
    throw new CaError('CA_ROOT_MALFORMED', `root ${opts.root.id} could not be parsed for signing: ${String(err)}`);
  }
  const rootKind = describeCaKey(rootKey);
  if (rootKind === null) throw new CaError('CA_ROOT_UNSUPPORTED_KEY', `root ${opts.root.id} has a key meshd cannot sign with`);
  const notBefore = nowMs - INTERMEDIATE_BACKDATE_MS;
  const notAfter = Math.min(floorToSecond(notBefore + ttlMs), opts.root.notAfter.getTime());
  const tbs = sequence(
    VERSION_V3,
    unsignedInteger(randomSerial()),
    signatureAlgorithmFor(rootKind.type),
    rootCert.subject,
    sequence(time(notBefore), time(notAfter)),
    new Uint8Array(csr.subjectName.toArrayBuffer()),
    spki,
    extensionsField(
      INTERMEDIATE_BASIC_CONSTRAINTS,
      INTERMEDIATE_KEY_USAGE,
      uriSanExtension(want, false),
      subjectKeyIdExtension(keyId(spki)),
      authorityKeyIdExtension(signingKeyIdOf(rootCert)),
    ),
  );
  return pemEncode('CERTIFICATE', signCertificate(tbs, rootKey, rootKind.type));
}

/**
 * Secondary side: checks the certificate the primary returned before it is used (Consul
 * does the same): it loads with our key as a signing CA (CA:TRUE, keyCertSign, one URI SAN
 * `spiffe://<td>`, key matches), its trust domain is the primary's, and it was issued by
 * `root` (issuer name and signature). Returns it as signing material (RootMaterial: what
 * the signing pool signs leaves with).
 */
export function checkIntermediate(opts: { certPem: string; keyPem: string; root: { certPem: string; id: string }; trustDomain: string }): RootMaterial {
  const material = inspectRoot(opts.certPem, opts.keyPem, { cert: 'intermediate certificate', key: 'intermediate private key' }).material;
  if (material.trustDomain !== opts.trustDomain.toLowerCase()) {
    throw new CaError('CA_ROOT_WRONG_TRUST_DOMAIN', `intermediate certificate is for trust domain ${material.trustDomain}, the primary's is ${opts.trustDomain}`);
  }
  let issued = false;
  try {
    const cert = new X509Certificate(opts.certPem);
    const root = new X509Certificate(opts.root.certPem);
    issued = cert.checkIssued(root) && cert.verify(root.publicKey);
  } catch {
    issued = false;
  }
  if (!issued) throw new IntermediateError('INTERMEDIATE_NOT_ISSUED', `intermediate certificate was not issued by the primary's root ${opts.root.id}`);
  return material;
}
