// The bench's load generator, run in a worker thread (./load.ts starts it) so its event loop
// is not shared with the app or the orchestration. Raw sockets and a pre-built request: it
// costs less CPU per request than an HTTP client library, which matters when the generator,
// the app and both sidecars share two cores.
//
// Kinds of load:
//   closed   C keep-alive connections, each sending the next request when the last answer
//            is complete (throughput).
//   connect  C loops, each opening a new connection per request (`Connection: close`) and
//            closing it after the answer: through the sidecars in tcp mode every request is a
//            full or resumed mTLS handshake between them.
//   bulk     C keep-alive connections downloading a large body again and again; counts the
//            bytes received within the window (MB/s).
//   open     a fixed request rate spread over C keep-alive connections, each on its own
//            schedule (wrk2's model). Coordinated omission is corrected: when a request's
//            intended send time passes while its connection is still busy with the previous
//            one, its latency is measured from the intended time, not from when it could go.
//            When the connection was idle, latency is measured from the actual send (so the
//            generator's own ~1 ms timer granularity is not charged to the system).

import * as net from 'node:net';
import * as tls from 'node:tls';
import { parentPort, workerData } from 'node:worker_threads';
import { ResponseReader } from './http-reader.ts';

export type LoadKind = 'closed' | 'connect' | 'bulk' | 'open';

export interface LoadJob {
  readonly kind: LoadKind;
  readonly port: number;
  readonly connections: number;
  readonly ms: number;
  /** Request path (default /api/items). */
  readonly path?: string;
  /** open: requests per second over all connections. */
  readonly rate?: number;
  /**
   * Speak mTLS to `port` (the load is then a mesh client itself, as in bench/gateway.ts):
   * every new connection a full handshake (no session is offered back), the server's chain
   * checked against `ca`. Absent: plain TCP, as always.
   */
  readonly tls?: TlsClient;
}

export interface TlsClient {
  /** SNI sent in the ClientHello (what a mesh gateway routes on). */
  readonly servername: string;
  readonly ca: readonly string[];
  readonly cert: string;
  readonly key: string;
}

export interface LoadResult {
  /** Complete responses (downloads for bulk; handshakes for connect). */
  readonly requests: number;
  readonly errors: number;
  readonly seconds: number;
  /** Response body bytes received within the window. */
  readonly bytes: number;
  /** Sorted latencies in µs (a sample of at most 200k). */
  readonly latUs: number[];
  /** open: requests sent late because their connection was still busy (corrected ones). */
  readonly late?: number;
  /** First error message seen, for the progress line. */
  readonly firstError?: string;
}

const MAX_SAMPLES = 200_000;

function request(path: string, close: boolean): Buffer {
  return Buffer.from(`GET ${path} HTTP/1.1\r\nHost: api\r\nUser-Agent: meshd-bench\r\n${close ? 'Connection: close\r\n' : ''}\r\n`);
}

class Stats {
  requests = 0;
  errors = 0;
  late = 0;
  firstError: string | undefined;
  readonly lat: number[] = [];

  error(msg: string): void {
    this.errors++;
    this.firstError ??= msg;
  }

  sample(us: number): void {
    if (this.lat.length < MAX_SAMPLES) this.lat.push(us);
  }
}

/** A new connection to the job's port; `ready` runs once requests may be written (after the handshake with `tls`). */
function connect(job: LoadJob, ready: () => void): net.Socket {
  if (job.tls === undefined) {
    const s = net.connect({ host: '127.0.0.1', port: job.port, noDelay: true });
    s.once('connect', ready);
    return s;
  }
  const t = job.tls;
  const s = tls.connect({
    host: '127.0.0.1',
    port: job.port,
    servername: t.servername,
    ca: [...t.ca],
    cert: t.cert,
    key: t.key,
    // A mesh leaf names its SPIFFE ID in a URI SAN only, no DNS name to check; the chain is still verified.
    checkServerIdentity: () => undefined,
  });
  s.setNoDelay(true);
  s.once('secureConnect', ready);
  return s;
}

const PRIME = request('/api/items', false);

/**
 * A keep-alive connection that has carried one unmeasured request, so the measured ones do
 * not include the TCP connect or, through the sidecars, the mTLS handshake.
 */
function primed(job: LoadJob): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(job, () => s.write(PRIME));
    const reader = new ResponseReader();
    const onData = (d: Buffer): void => {
      try {
        reader.feed(d, (status) => {
          s.off('data', onData);
          s.off('error', reject);
          if (status === 200) resolve(s);
          else reject(new Error('non-200 answer to the priming request'));
        });
      } catch (e) {
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    };
    s.on('data', onData);
    s.once('error', reject);
    s.once('close', () => reject(new Error('closed during the priming request')));
  });
}

/**
 * The answer side of every load loop: each complete response is counted and sampled from
 * `startedAt()`, then `next()` runs; a malformed response, a socket error or a close counts as
 * an error (unless `done()` says the loop has ended) and `end()` runs.
 */
function onAnswers(
  s: net.Socket,
  reader: ResponseReader,
  st: Stats,
  loop: { readonly startedAt: () => number; readonly next: () => void; readonly end: () => void; readonly done: () => boolean; readonly closed: string },
): void {
  s.on('data', (d: Buffer) => {
    try {
      reader.feed(d, (status) => {
        if (status !== 200) st.error(`HTTP ${status} response`);
        st.requests++;
        st.sample((performance.now() - loop.startedAt()) * 1000);
        loop.next();
      });
    } catch (e) {
      st.error((e as Error).message);
      loop.end();
    }
  });
  s.on('error', (e) => {
    if (!loop.done()) st.error(e.message);
    loop.end();
  });
  s.on('close', () => {
    if (!loop.done()) st.error(loop.closed);
    loop.end();
  });
}

/** closed and bulk: keep-alive connections, next request when the answer is complete. */
function closedLoop(s: net.Socket, job: LoadJob, until: number, st: Stats, readers: ResponseReader[]): Promise<void> {
  const req = request(job.path ?? '/api/items', false);
  return new Promise((resolve) => {
    const reader = new ResponseReader();
    readers.push(reader);
    let start = 0;
    let finished = false;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      s.destroy();
      resolve();
    };
    const send = (): void => {
      if (performance.now() >= until) return finish();
      start = performance.now();
      s.write(req);
    };
    const timer = setTimeout(finish, Math.max(0, until - performance.now()));
    onAnswers(s, reader, st, { startedAt: () => start, next: send, end: finish, done: () => finished, closed: 'connection closed by peer' });
    send();
  });
}

/** connect: a new connection per request. */
async function connectLoop(job: LoadJob, until: number, st: Stats): Promise<void> {
  const req = request(job.path ?? '/api/items', true);
  while (performance.now() < until) {
    await new Promise<void>((resolve) => {
      const start = performance.now();
      const s = connect(job, () => s.write(req));
      const reader = new ResponseReader();
      let answered = false;
      const end = (): void => {
        s.destroy();
        resolve();
      };
      onAnswers(s, reader, st, {
        startedAt: () => start,
        next: () => {
          answered = true;
          end();
        },
        end,
        done: () => answered,
        closed: 'closed before the answer',
      });
    });
  }
}

/** open: one connection's share of a fixed rate (see the header comment). */
function openLoop(s: net.Socket, job: LoadJob, index: number, t0: number, until: number, st: Stats): Promise<void> {
  const req = request(job.path ?? '/api/items', false);
  const interval = (1000 * job.connections) / (job.rate ?? 1000);
  const phase = (index * interval) / job.connections;
  return new Promise((resolve) => {
    const reader = new ResponseReader();
    let n = 0;
    let start = 0;
    let busy = false;
    let finished = false;
    let timer: NodeJS.Timeout | undefined;
    const finish = (): void => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      clearTimeout(stop);
      s.destroy();
      resolve();
    };
    const fire = (): void => {
      timer = undefined;
      start = performance.now();
      busy = true;
      s.write(req);
    };
    /** Schedules the next request, or sends it now if its time has passed (the connection was busy). */
    const next = (): void => {
      const intended = t0 + phase + n * interval;
      n++;
      if (intended >= until) return finish();
      const now = performance.now();
      if (intended <= now) {
        // Late because the previous request held the connection: charge the wait.
        if (n > 1) st.late++;
        start = intended;
        busy = true;
        s.write(req);
        return;
      }
      timer = setTimeout(fire, Math.max(0, Math.floor(intended - now)));
    };
    onAnswers(s, reader, st, {
      startedAt: () => start,
      next: () => {
        busy = false;
        next();
      },
      end: finish,
      done: () => finished,
      closed: 'connection closed by peer',
    });
    // In-flight requests at the end get a grace second, then count as errors.
    const stop = setTimeout(() => {
      if (busy) st.error('no answer within 1 s after the window');
      finish();
    }, until - performance.now() + 1000);
    next();
  });
}

export async function runJob(job: LoadJob): Promise<LoadResult> {
  const st = new Stats();
  const readers: ResponseReader[] = [];
  let sockets: (net.Socket | null)[] = [];
  if (job.kind !== 'connect') {
    sockets = await Promise.all(
      Array.from({ length: job.connections }, () =>
        primed(job).catch((e: unknown) => {
          st.error((e as Error).message);
          return null;
        }),
      ),
    );
  }
  const t0 = performance.now();
  const until = t0 + job.ms;
  const loops = Array.from({ length: job.connections }, (_x, i) => {
    const s = sockets[i] ?? null;
    if (job.kind === 'connect') return connectLoop(job, until, st);
    if (s === null) return Promise.resolve();
    return job.kind === 'open' ? openLoop(s, job, i, t0, until, st) : closedLoop(s, job, until, st, readers);
  });
  await Promise.all(loops);
  const seconds = (Math.min(performance.now(), until) - t0) / 1000;
  return {
    requests: st.requests,
    errors: st.errors,
    seconds: job.kind === 'open' ? job.ms / 1000 : seconds,
    bytes: readers.reduce((a, r) => a + r.bodyBytes, 0),
    latUs: st.lat.sort((a, b) => a - b),
    ...(job.kind === 'open' ? { late: st.late } : {}),
    ...(st.firstError === undefined ? {} : { firstError: st.firstError }),
  };
}

if (parentPort !== null && workerData !== null && typeof workerData === 'object') {
  parentPort.postMessage(await runJob(workerData as LoadJob));
}
