// Piscina task: signs one leaf CSR off the control thread.
//
// Runs on: a piscina worker thread (loaded by src/ca/pool.ts by file URL; Node 24 runs this
// .ts file directly under type stripping, as it does the rest of the tree).
//
// Imports the fast path (leaf.ts) and the errors only, never authority.ts, so a signing
// thread starts without loading @peculiar/x509. Every task carries the root PEMs it needs;
// the only state is leaf.ts's per-thread cache of parsed roots, keyed by root ID and
// checked against the PEMs. Expected refusals (CsrError, CaError) are returned as data,
// not thrown, because an Error crossing the thread boundary is structured-cloned and loses
// its class and its `code`. Anything else (a bug) is thrown and reaches the caller as a
// plain Error.

import { setPriority } from 'node:os';
import { CaError, CsrError } from './errors.ts';
import type { CaErrorCode, CsrErrorCode } from './errors.ts';
import { signLeafFast } from './leaf.ts';
import type { IssuedCert, SignLeafRequest } from './types.ts';

/** The one message the worker sends back per task. */
export type SignTaskResult =
  | { readonly ok: true; readonly cert: IssuedCert }
  | { readonly ok: false; readonly kind: 'csr'; readonly code: CsrErrorCode; readonly message: string }
  | { readonly ok: false; readonly kind: 'ca'; readonly code: CaErrorCode; readonly message: string };

/**
 * Signing is background work: the control thread's API (roots reads, blocking queries,
 * config writes) should win the core when a CSR burst and an API call compete for it, which
 * on a 2-core machine they do. On Linux setpriority(PRIO_PROCESS, 0) applies to the calling
 * thread only, so this lowers the signing thread and nothing else (the control thread keeps
 * the process's nice). Elsewhere it may apply to the whole process, so it is Linux-only; a
 * refusal (a container without the right) is harmless and ignored.
 */
export const SIGNING_THREAD_NICE = 10;
if (process.platform === 'linux') {
  try {
    setPriority(SIGNING_THREAD_NICE);
  } catch {
    // Not permitted here: the thread runs at the process's priority, as before.
  }
}

export default function signTask(req: SignLeafRequest): SignTaskResult {
  try {
    return { ok: true, cert: signLeafFast(req) };
  } catch (err) {
    if (err instanceof CsrError) return { ok: false, kind: 'csr', code: err.code, message: err.message };
    if (err instanceof CaError) return { ok: false, kind: 'ca', code: err.code, message: err.message };
    throw err;
  }
}
