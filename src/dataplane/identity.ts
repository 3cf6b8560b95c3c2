// Peer identity on the data plane: the SPIFFE ID inside a verified certificate.
// Node's hostname check (tls.checkServerIdentity) is not a SPIFFE check: with only a URI
// SAN present it falls back to the subject CN. So the chain is verified by OpenSSL against
// the mesh roots, and the identity is read here, structurally, from the leaf's DER:
// exactly one URI SAN, a canonical `spiffe://<our trust domain>/ns/<ns>/dc/<dc>/svc/<name>`.
// Runs on: data-plane workers, once per handshake.

import { readCertIdentity } from '../ca/der.ts';
import { parseSpiffeId, type ServiceId } from '../ca/spiffe.ts';
import type { DenyReason } from '../metrics/counters.ts';

export type IdentityResult =
  | { readonly ok: true; readonly id: ServiceId }
  | { readonly ok: false; readonly reason: Extract<DenyReason, 'bad_identity' | 'foreign_trust_domain'> };

const BAD: IdentityResult = { ok: false, reason: 'bad_identity' };
const FOREIGN: IdentityResult = { ok: false, reason: 'foreign_trust_domain' };

export function serviceIdentity(der: Uint8Array | undefined, trustDomain: string): IdentityResult {
  if (der === undefined || der.length === 0) return BAD;
  const info = readCertIdentity(der);
  // A leaf that is a CA, or carries zero or several URI SANs, is not a workload identity.
  if (info === null || info.isCA || info.uris.length !== 1) return BAD;
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
    const r = serviceIdentity(cert.raw, trustDomain);
    if (r.ok && r.id.service === expectedService && r.id.namespace === 'default') return undefined;
    const got = r.ok ? r.id.service : r.reason;
    const err = new Error(`upstream presented identity ${JSON.stringify(got)}, expected service ${JSON.stringify(expectedService)}`);
    (err as Error & { code: string }).code = IDENTITY_MISMATCH;
    return err;
  };
}
