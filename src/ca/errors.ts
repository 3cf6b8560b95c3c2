// The CA's error taxonomy. Codes are stable: they are metric labels and API error
// identifiers, and they cross the signing worker's thread boundary as plain strings
// (sign-task.ts), so every code a thread can send is listed here.
//
// Runs on: any thread. No dependencies, so the signing worker can load it without
// loading @peculiar/x509.

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
  | 'CSR_PERMISSION_DENIED'
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
  'CSR_PERMISSION_DENIED',
  'CSR_WRONG_DATACENTER',
  'CSR_WRONG_TRUST_DOMAIN',
  'CSR_UNSUPPORTED_KEY',
];

/**
 * A CSR the caller sent is not acceptable (Consul's `InvalidCSRError`): a 400, not a 500;
 * CSR_PERMISSION_DENIED (the caller may not act for the CSR's service) is a 403.
 */
export class CsrError extends Error {
  readonly code: CsrErrorCode;
  constructor(code: CsrErrorCode, message: string) {
    super(message);
    this.name = 'CsrError';
    this.code = code;
  }
}

/**
 * The CA's own material is unusable: a bad root on load, a supplied root that breaks one
 * of the bring-your-own rules, or an expired root asked to sign.
 */
export type CaErrorCode =
  | 'CA_ROOT_MALFORMED'
  | 'CA_ROOT_UNSUPPORTED_KEY'
  | 'CA_ROOT_KEY_MISMATCH'
  | 'CA_ROOT_NOT_CA'
  | 'CA_ROOT_BAD_URI'
  | 'CA_ROOT_WRONG_TRUST_DOMAIN'
  | 'CA_ROOT_NOT_YET_VALID'
  | 'CA_ROOT_EXPIRED';

export const CA_ERROR_CODES: readonly CaErrorCode[] = [
  'CA_ROOT_MALFORMED',
  'CA_ROOT_UNSUPPORTED_KEY',
  'CA_ROOT_KEY_MISMATCH',
  'CA_ROOT_NOT_CA',
  'CA_ROOT_BAD_URI',
  'CA_ROOT_WRONG_TRUST_DOMAIN',
  'CA_ROOT_NOT_YET_VALID',
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
