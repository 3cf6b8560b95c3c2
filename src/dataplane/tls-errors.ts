// Maps OpenSSL/Node handshake errors to the small, stable reason set used as a metric label.

import type { HandshakeReason } from '../metrics/counters.ts';

export function handshakeReason(err: Error & { code?: string }): HandshakeReason {
  const text = `${err.code ?? ''} ${err.message}`.toUpperCase();
  if (text.includes('ERR_TLS_HANDSHAKE_TIMEOUT') || text.includes('TIMEOUT')) return 'timeout';
  if (text.includes('PEER_DID_NOT_RETURN_A_CERTIFICATE') || text.includes('NO_CERTIFICATE')) return 'no_certificate';
  if (text.includes('EXPIRED') || text.includes('NOT_YET_VALID') || text.includes('NOT YET VALID')) return 'expired';
  if (text.includes('UNKNOWN_CA') || text.includes('UNABLE_TO_GET_ISSUER') || text.includes('CERTIFICATE_VERIFY_FAILED') || text.includes('SELF_SIGNED') || text.includes('UNABLE TO GET')) return 'unknown_ca';
  if (text.includes('WRONG_VERSION') || text.includes('UNSUPPORTED_PROTOCOL') || text.includes('HTTP_REQUEST') || text.includes('NO_SHARED_CIPHER') || text.includes('ECONNRESET')) return 'protocol';
  return 'other';
}
