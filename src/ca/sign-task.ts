// Piscina task: signs one leaf CSR off the control thread.
//
// Runs on: a piscina worker thread (loaded by src/ca/pool.ts by file URL; Node 24 runs this
// .ts file directly under type stripping, as it does the rest of the tree).
//
// The worker holds no state: every task carries the root PEMs it needs. Expected
// refusals (CsrError, CaError) are returned as data, not thrown, because an Error crossing
// the thread boundary is structured-cloned and loses its class and its `code`. Anything
// else (a bug) is thrown and reaches the caller as a plain Error.

import { CaError, CsrError, signLeafCsr } from './authority.ts';
import type { CaErrorCode, CsrErrorCode, IssuedCert, SignLeafRequest } from './authority.ts';

/** The one message the worker sends back per task. */
export type SignTaskResult =
  | { readonly ok: true; readonly cert: IssuedCert }
  | { readonly ok: false; readonly kind: 'csr'; readonly code: CsrErrorCode; readonly message: string }
  | { readonly ok: false; readonly kind: 'ca'; readonly code: CaErrorCode; readonly message: string };

export default async function signTask(req: SignLeafRequest): Promise<SignTaskResult> {
  try {
    return { ok: true, cert: await signLeafCsr(req) };
  } catch (err) {
    if (err instanceof CsrError) return { ok: false, kind: 'csr', code: err.code, message: err.message };
    if (err instanceof CaError) return { ok: false, kind: 'ca', code: err.code, message: err.message };
    throw err;
  }
}
