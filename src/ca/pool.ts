// A small piscina pool that runs leaf signing (leaf.ts) on a worker thread, so a burst of CSRs
// (every proxy renewing after a root rotation, §1.12) does not stall the control thread's
// HTTP API and blocking queries.
//
// Runs on: the control thread (the tasks run in src/ca/sign-task.ts on a worker).

import { Piscina } from 'piscina';
import { CA_ERROR_CODES, CSR_ERROR_CODES, CaError, CsrError } from './errors.ts';
import type { IssuedCert, SignLeafRequest } from './types.ts';
import type { SignTaskResult } from './sign-task.ts';

/**
 * One signing thread by default. The target machine has 2 cores: one runs the control
 * thread, the other is enough for signing (a P-256 leaf costs ~0.25 ms on the fast path, so
 * one thread signs thousands per second, far above Consul's default CSRMaxPerSecond of 50,
 * §1.8; bench/ca.ts measures it). More threads would only compete with the control thread
 * and data-plane workers for cores.
 */
export const DEFAULT_SIGNING_THREADS = 1;

/**
 * Keep an idle signing thread for 30 s. piscina's default of 0 would start a fresh worker
 * (and re-parse the root) for every isolated CSR; 30 s covers a renewal burst, and
 * with minThreads 0 the thread goes away when the CA is quiet (most of the time: leaves
 * live 72 h).
 */
export const SIGNING_IDLE_TIMEOUT_MS = 30_000;

/**
 * CSRs handed to a signing thread ahead of time. Each task is synchronous (~0.25 ms for a
 * P-256 root), so with one task per thread the thread sits idle for every round trip to
 * the control thread; with a few queued it goes straight on to the next. Measured on the
 * 2-core dev box, 1 thread, bursts of 2,000 (median of 5): 1 → 2.3k leaves/s,
 * 4 → 2.7k, 8 → 3.5k; in-thread signing does 3.9k. Queued tasks wait in the thread's
 * port, not in its event loop, so this adds no latency to a lone CSR.
 */
export const SIGNING_TASKS_PER_THREAD = 8;

const TASK_FILE = new URL('./sign-task.ts', import.meta.url).href;

const CSR_CODES: ReadonlySet<string> = new Set(CSR_ERROR_CODES);
const CA_CODES: ReadonlySet<string> = new Set(CA_ERROR_CODES);

export class SigningPool {
  readonly #pool: Piscina<SignLeafRequest, SignTaskResult>;
  #closed = false;

  constructor(opts: { maxThreads?: number } = {}) {
    this.#pool = new Piscina<SignLeafRequest, SignTaskResult>({
      filename: TASK_FILE,
      minThreads: 0,
      maxThreads: opts.maxThreads ?? DEFAULT_SIGNING_THREADS,
      idleTimeout: SIGNING_IDLE_TIMEOUT_MS,
      concurrentTasksPerWorker: SIGNING_TASKS_PER_THREAD,
    });
  }

  /**
   * Signs a leaf CSR on the worker. Rejects with CsrError / CaError carrying the same
   * `code` the in-thread signLeafCsr would have thrown.
   */
  async sign(req: SignLeafRequest): Promise<IssuedCert> {
    // piscina would quietly start a new worker after close(), keeping the process alive.
    if (this.#closed) throw new Error('SigningPool is closed');
    const r = await this.#pool.run(req);
    if (r.ok) return r.cert;
    // The codes come from our own worker; an unknown one means the two sides are out of
    // step, which is a bug, so say so instead of inventing a code.
    if (r.kind === 'csr' && CSR_CODES.has(r.code)) throw new CsrError(r.code, r.message);
    if (r.kind === 'ca' && CA_CODES.has(r.code)) throw new CaError(r.code, r.message);
    throw new Error(`signing worker returned an unknown error code ${JSON.stringify(r.code)}: ${r.message}`);
  }

  /** Waits for queued tasks, then stops the threads. */
  close(): Promise<void> {
    this.#closed = true;
    return this.#pool.close();
  }
}
