// Starts, feeds and restarts a proxy's data-plane worker threads.
// Runs on: the proxy's control thread.
//
// Port 0: every worker must bind the same port for SO_REUSEPORT to spread connections, so
// worker 0 binds first (possibly port 0), reports the ports the kernel gave it, and the
// other workers bind exactly those. A crashed worker is replaced on the same ports; the
// others keep serving (a thread's uncaught error or exit ends only that thread).
//
// Scrapes: collectLatency() posts one `latency` request to each running worker and waits for
// the answers, or for a timeout, whichever comes first (../metrics/latency.ts).

import { Worker } from 'node:worker_threads';
import type { LatencyDelta } from '../metrics/latency.ts';
import type { FromWorker, ListeningPorts, RoutingSnapshot, ToWorker, TlsMaterial, WorkerInit } from './messages.ts';

export type WorkerBase = Omit<WorkerInit, 'type' | 'index' | 'policySlot' | 'tls' | 'routing'>;

export interface SupervisorOptions {
  readonly count: number;
  readonly base: WorkerBase;
  readonly currentTls: () => TlsMaterial;
  readonly currentRouting: () => RoutingSnapshot;
  /** Called when a worker died, before its replacement starts (to free its table slot). */
  readonly onWorkerExit: (index: number, policySlot: number, code: number) => void;
  /** The worker script; tests wrap the real one to inject faults. */
  readonly workerUrl?: URL;
  /**
   * V8 old-generation limit per worker (MB). A worker that exceeds it dies alone
   * (ERR_WORKER_OUT_OF_MEMORY) and is replaced like any crashed worker; without a limit a
   * leak in one worker would grow until the whole process is killed.
   */
  readonly memoryLimitMb?: number;
  /**
   * A worker's latency answer, whenever it arrives (also after collectLatency stopped waiting
   * for it). An exception thrown here is reported on stderr and goes no further.
   */
  readonly onLatency?: (index: number, delta: LatencyDelta) => void;
}

const WORKER_URL = new URL('./dataplane-worker.ts', import.meta.url);
const MAX_BACKOFF_MS = 5000;
/** How long past its drain deadline a worker may take to answer `drained` before it is terminated. */
const DRAIN_GRACE_MS = 2000;

export class StartupError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

export class WorkerSupervisor {
  readonly #opts: SupervisorOptions;
  readonly #workers: (Worker | null)[];
  #ports: ListeningPorts | null = null;
  #stopping = false;
  #restarts = 0;
  readonly #failures: number[];
  #latencySeq = 0;
  /** Scrapes in progress: seq -> the workers not yet answered, and how to finish waiting. */
  readonly #latencyWaits = new Map<number, { readonly pending: Set<number>; readonly done: () => void }>();

  constructor(opts: SupervisorOptions) {
    this.#opts = opts;
    this.#workers = new Array<Worker | null>(opts.count).fill(null);
    this.#failures = new Array<number>(opts.count).fill(0);
  }

  get restarts(): number {
    return this.#restarts;
  }

  get count(): number {
    return this.#opts.count;
  }

  async start(): Promise<ListeningPorts> {
    const first = await this.#spawn(0, this.#opts.base.inbound?.port ?? 0, null);
    this.#ports = first;
    await Promise.all(Array.from({ length: this.#opts.count - 1 }, (_v, i) => this.#spawn(i + 1, first.inbound ?? 0, first)));
    return first;
  }

  broadcast(msg: ToWorker): void {
    for (const w of this.#workers) w?.postMessage(msg);
  }

  /** Sends to one worker (false when that worker is down or restarting). */
  post(index: number, msg: unknown): boolean {
    const w = this.#workers[index];
    if (w === null || w === undefined) return false;
    w.postMessage(msg);
    return true;
  }

  /**
   * Asks every running worker for its latency histograms (one message each) and resolves when
   * all have answered (onLatency has seen them), when the ones that have not are gone, or after
   * `timeoutMs`, whichever comes first: a stuck or busy worker cannot hold a scrape longer. Its
   * answer is still merged when it comes (late), so nothing it recorded is lost; the scrape
   * meanwhile shows what it reported in its previous answers.
   */
  collectLatency(timeoutMs: number): Promise<void> {
    const seq = ++this.#latencySeq;
    const pending = new Set<number>();
    this.#workers.forEach((w, i) => {
      if (w === null) return;
      w.postMessage({ type: 'latency', seq } satisfies ToWorker);
      pending.add(i);
    });
    if (pending.size === 0) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#latencyWaits.delete(seq);
        resolve();
      };
      const timer = setTimeout(done, timeoutMs);
      this.#latencyWaits.set(seq, { pending, done });
    });
  }

  /** Worker `index` answered scrape `seq` (or, with seq undefined, is gone: stop waiting for it). */
  #latencyAnswered(index: number, seq?: number): void {
    for (const [s, wait] of this.#latencyWaits) {
      if (seq !== undefined && s !== seq) continue;
      wait.pending.delete(index);
      if (wait.pending.size === 0) wait.done();
    }
  }

  /** Indexes of the workers that are running now. */
  running(): number[] {
    return this.#workers.flatMap((w, i) => (w === null ? [] : [i]));
  }

  /**
   * Stops every worker: each stops accepting at once and lets its open connections finish for
   * up to `drainTimeoutMs` (0: closes them now), then is terminated, which cuts whatever is
   * still open. A worker that does not answer within the drain time plus DRAIN_GRACE_MS (a
   * stuck event loop) is terminated all the same. Crashed workers are not replaced meanwhile.
   */
  async stop(drainTimeoutMs = 0): Promise<void> {
    this.#stopping = true;
    await Promise.all(
      this.#workers.map(async (w) => {
        if (w === null) return;
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, drainTimeoutMs + DRAIN_GRACE_MS);
          w.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
          w.on('message', (m: FromWorker) => {
            if (m.type === 'drained') {
              clearTimeout(t);
              resolve();
            }
          });
          w.postMessage({ type: 'drain', timeoutMs: drainTimeoutMs } satisfies ToWorker);
        });
        await w.terminate();
      }),
    );
  }

  #spawn(index: number, inboundPort: number, ports: ListeningPorts | null): Promise<ListeningPorts> {
    const base = this.#opts.base;
    const init: WorkerInit = {
      ...base,
      type: 'init',
      index,
      policySlot: index + 1,
      inbound: base.inbound === null ? null : { ...base.inbound, port: inboundPort },
      upstreams: base.upstreams.map((u) => ({ ...u, port: ports?.upstreams[u.name] ?? u.port })),
      tls: this.#opts.currentTls(),
      routing: this.#opts.currentRouting(),
    };
    const limit = this.#opts.memoryLimitMb;
    const worker = new Worker(this.#opts.workerUrl ?? WORKER_URL, {
      name: `meshd-dataplane-${index}`,
      ...(limit === undefined ? {} : { resourceLimits: { maxOldGenerationSizeMb: limit } }),
    });
    this.#workers[index] = worker;
    return new Promise<ListeningPorts>((resolve, reject) => {
      let ready = false;
      worker.on('message', (m: FromWorker) => {
        if (m.type === 'listening') {
          ready = true;
          this.#failures[index] = 0;
          resolve(m.ports);
        } else if (m.type === 'fatal') {
          reject(new StartupError(m.code, m.message));
          void worker.terminate();
        } else if (m.type === 'latency') {
          try {
            if (m.delta !== null) this.#opts.onLatency?.(index, m.delta);
          } catch (err) {
            process.stderr.write(`meshd: latency answer of data-plane worker ${index} not merged: ${(err as Error).message}\n`);
          }
          this.#latencyAnswered(index, m.seq);
        }
      });
      worker.on('error', (err: Error) => {
        if (!ready) reject(new StartupError('ERR_WORKER_CRASHED', err.message));
        else process.stderr.write(`meshd: data-plane worker ${index} crashed: ${err.message}\n`);
      });
      worker.on('exit', (code) => {
        if (this.#workers[index] === worker) {
          this.#workers[index] = null;
          // Its histograms died with it (what it recorded since its last answer is lost; its
          // earlier answers stay in the totals); a scrape waiting for it need not wait longer.
          this.#latencyAnswered(index);
        }
        this.#opts.onWorkerExit(index, index + 1, code);
        if (!ready) {
          reject(new StartupError('ERR_WORKER_EXIT', `data-plane worker ${index} exited with code ${code} during startup`));
          return;
        }
        if (this.#stopping) return;
        this.#restart(index);
      });
      worker.postMessage(init);
    });
  }

  #restart(index: number): void {
    this.#restarts++;
    const n = (this.#failures[index] ?? 0) + 1;
    this.#failures[index] = n;
    const delay = Math.min(MAX_BACKOFF_MS, 50 * 2 ** (n - 1));
    setTimeout(() => {
      if (this.#stopping || this.#ports === null) return;
      this.#spawn(index, this.#ports.inbound ?? 0, this.#ports).catch((err: Error) => {
        process.stderr.write(`meshd: could not restart data-plane worker ${index}: ${err.message}\n`);
        this.#restart(index);
      });
    }, delay).unref();
  }
}
