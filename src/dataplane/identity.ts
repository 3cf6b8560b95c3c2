// Peer identity on the data plane: the SPIFFE ID inside a verified certificate.
// Node's hostname check (tls.checkServerIdentity) is not a SPIFFE check: with only a URI
// SAN present it falls back to the subject CN. So the chain is verified by OpenSSL against
// the mesh roots, and the identity is read here, structurally, from the leaf's DER:
// exactly one URI SAN, a canonical `spiffe://<our trust domain>/ns/<ns>/dc/<dc>/svc/<name>`.
// Runs on: data-plane workers, once per handshake.
//
// The leaf profile (X509-SVID §4.1-4.3, and what our CA issues: src/ca/x509.ts
// LEAF_FIXED_EXTENSIONS) is checked too, before the identity:
// * basicConstraints must not say CA:TRUE (absent is allowed: RFC 5280 end entity);
// * KeyUsage must be present, with digitalSignature, and without keyCertSign or cRLSign;
// * ExtendedKeyUsage must be present and name clientAuth when the peer is a client (the
//   public listener) or serverAuth when it is a server (an upstream). anyExtendedKeyUsage
//   does not count. OpenSSL already refuses a present EKU without the purpose during the
//   handshake (counted there as `bad_key_usage`); it accepts a certificate with no EKU or no
//   KeyUsage, and any CA:TRUE or keyCertSign leaf, which is why this check exists.
// A leaf failing the profile is `bad_key_usage`, whatever its SAN says.

import { EKU_CLIENT_AUTH, EKU_SERVER_AUTH, KU_CRL_SIGN, KU_DIGITAL_SIGNATURE, KU_KEY_CERT_SIGN, readPeerCertificate } from '../ca/der.ts';
import { parseSpiffeId, type ServiceId } from '../ca/spiffe.ts';
import type { DenyReason } from '../metrics/counters.ts';

export type IdentityResult =
  | { readonly ok: true; readonly id: ServiceId }
  | { readonly ok: false; readonly reason: Extract<DenyReason, 'bad_identity' | 'foreign_trust_domain' | 'bad_key_usage'> };

/** Which side of the handshake the peer was: decides the ExtendedKeyUsage it must carry. */
export type PeerRole = 'client' | 'server';

const BAD: IdentityResult = { ok: false, reason: 'bad_identity' };
const FOREIGN: IdentityResult = { ok: false, reason: 'foreign_trust_domain' };
const BAD_USAGE: IdentityResult = { ok: false, reason: 'bad_key_usage' };

export function serviceIdentity(der: Uint8Array | undefined, trustDomain: string, role: PeerRole = 'client'): IdentityResult {
  if (der === undefined || der.length === 0) return BAD;
  const info = readPeerCertificate(der);
  if (info === null) return BAD;
  // A CA, a certificate signer or a leaf without the purpose is not a workload identity.
  const ku = info.keyUsage;
  if (info.isCA || ku < 0 || (ku & KU_DIGITAL_SIGNATURE) === 0 || (ku & (KU_KEY_CERT_SIGN | KU_CRL_SIGN)) !== 0) return BAD_USAGE;
  const eku = info.extKeyUsage;
  if (eku < 0 || (eku & (role === 'client' ? EKU_CLIENT_AUTH : EKU_SERVER_AUTH)) === 0) return BAD_USAGE;
  // Zero or several URI SANs: no single identity.
  if (info.uris.length !== 1) return BAD;
  const id = parseSpiffeId(info.uris[0] as string);
  if (id === null || id.kind !== 'service') return BAD;
  if (id.trustDomain !== trustDomain) return FOREIGN;
  return { ok: true, id };
}

/** Stable error code for a server that presented a valid chain with the wrong identity. */
export const IDENTITY_MISMATCH = 'MESHD_UPSTREAM_IDENTITY_MISMATCH';

/**
 * Builds the `checkServerIdentity` callback for an outbound mTLS connection: the server
 * must be `expectedService` in our trust domain (namespace default). The datacenter is not
 * compared, as in Consul (§2.3: identity matching never checks the dc).
 */
export function expectServer(expectedService: string, trustDomain: string): (host: string, cert: { raw?: Buffer }) => Error | undefined {
  return (_host, cert) => {
    const r = serviceIdentity(cert.raw, trustDomain, 'server');
    if (r.ok && r.id.service === expectedService && r.id.namespace === 'default') return undefined;
    const got = r.ok ? r.id.service : r.reason;
    const err = new Error(`upstream presented identity ${JSON.stringify(got)}, expected service ${JSON.stringify(expectedService)}`);
    (err as Error & { code: string }).code = IDENTITY_MISMATCH;
    return err;
  };
}
