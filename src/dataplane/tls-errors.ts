// Maps OpenSSL/Node handshake errors to the small, stable reason set used as a metric label.
//
// A server-side chain verification failure does not arrive as its own error: Node finishes
// the handshake, finds the verify result on the socket (`authorizationError`, an OpenSSL
// X509_V_ERR_* name such as CERT_HAS_EXPIRED), destroys the socket and then reports a plain
// ECONNRESET "socket hang up" through `tlsClientError`. So the verify code, when there is
// one, decides; the error itself only for everything else.

import type { HandshakeReason } from '../metrics/counters.ts';

/** X509_V_ERR_* names (without the prefix, as Node spells them) for a chain we cannot anchor. */
const UNTRUSTED_CHAIN: ReadonlySet<string> = new Set([
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'CERT_SIGNATURE_FAILURE',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'INVALID_CA',
  'PATH_LENGTH_EXCEEDED',
  'CERT_CHAIN_TOO_LONG',
  'UNABLE_TO_DECRYPT_CERT_SIGNATURE',
  'UNABLE_TO_DECODE_ISSUER_PUBLIC_KEY',
]);

/** The reason for a chain-verification code (`tlsSocket.authorizationError`). */
export function verifyErrorReason(code: string): HandshakeReason {
  if (code === 'CERT_HAS_EXPIRED') return 'expired';
  if (code === 'CERT_NOT_YET_VALID') return 'not_yet_valid';
  if (code === 'INVALID_PURPOSE') return 'bad_key_usage';
  if (UNTRUSTED_CHAIN.has(code)) return 'unknown_ca';
  return 'other';
}

/**
 * The reason for one `tlsClientError`. `verifyError` is the socket's authorizationError
 * (null or undefined when the chain was not verified or verified fine).
 */
export function handshakeReason(err: Error & { code?: string }, verifyError?: unknown): HandshakeReason {
  if (typeof verifyError === 'string' && verifyError !== '') return verifyErrorReason(verifyError);
  if (verifyError instanceof Error) return verifyErrorReason((verifyError as Error & { code?: string }).code ?? verifyError.message);
  const code = err.code ?? '';
  if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'timeout';
  const text = `${code} ${err.message}`.toUpperCase();
  if (text.includes('PEER_DID_NOT_RETURN_A_CERTIFICATE') || text.includes('CERTIFICATE_REQUIRED')) return 'no_certificate';
  // Every other OpenSSL handshake error (ERR_SSL_*: no common version, cipher or group, an
  // alert the client sent, an inappropriate fallback, a malformed record or message, plain
  // HTTP) and a client that went away mid-handshake.
  if (code.startsWith('ERR_SSL_') || code === 'ECONNRESET' || code === 'EPIPE') return 'protocol';
  if (text.includes('WRONG_VERSION') || text.includes('UNSUPPORTED_PROTOCOL') || text.includes('HTTP_REQUEST') || text.includes('NO_SHARED_CIPHER') || text.includes('ALERT')) return 'protocol';
  return 'other';
}
