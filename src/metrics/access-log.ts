// The access log: one JSON line per HTTP request and per L4 connection, written by pino from
// each data-plane worker. Off by default (`meshd connect proxy -access-log stdout|stderr|PATH`);
// when off, a request pays one boolean test. When on, lines go into pino's asynchronous
// destination (SonicBoom, `sync: false`): the request path formats a small object and appends
// it to a buffer, and the write system call happens later, off the request's critical section;
// lines that arrive while a write is in flight are written together with the next one. Several workers appending to one file open it with O_APPEND, so
// each buffered write lands whole.
//
// Fields: `log` (always "access"), `time` (epoch ms), `dir` (inbound|outbound), `upstream` (outbound), `proto`
// (http|tcp), and for HTTP `method`, `path` (normalised, without the query: paths can carry
// identifiers, but the query carries far more), `status`, `flag` (why the proxy answered
// itself, when it did), `src` (the caller's service, inbound), `ms`; for TCP `src`, `rx`, `tx`
// (payload bytes from and to the downstream), `ms`.
//
// Runs on: data-plane workers (one logger per worker thread).

import pino from 'pino';

export interface HttpAccess {
  readonly dir: 'inbound' | 'outbound';
  readonly upstream?: string;
  readonly src?: string;
  readonly method: string;
  readonly path: string;
  readonly status: number;
  readonly flag?: string | null;
  readonly ms: number;
}

export interface TcpAccess {
  readonly dir: 'inbound' | 'outbound';
  readonly upstream?: string;
  readonly src?: string;
  readonly rx: number;
  readonly tx: number;
  readonly ms: number;
}

let logger: pino.Logger | null = null;
/** The response flag of a response the proxy answered itself (set where it answers). */
const flags = new WeakMap<object, string>();

export function markFlag(res: object, flag: string): void {
  if (logger !== null) flags.set(res, flag);
}

/** Logs `res` once it closes, with its final status (call only when accessLogOn()). */
export function logWhenDone(res: { once(ev: 'close', fn: () => void): unknown; readonly statusCode: number }, start: number, a: Omit<HttpAccess, 'status' | 'ms' | 'flag'>): void {
  res.once('close', () => logHttp({ ...a, status: res.statusCode, flag: flags.get(res) ?? null, ms: performance.now() - start }));
}
let destination: ReturnType<typeof pino.destination> | null = null;

/** True while an access log is open in this thread. */
export function accessLogOn(): boolean {
  return logger !== null;
}

/** Opens this thread's access log: 'stdout', 'stderr' or a file path (appended to). */
export function openAccessLog(target: string): void {
  closeAccessLog();
  const dest = target === 'stdout' ? 1 : target === 'stderr' ? 2 : target;
  destination = pino.destination({ dest, sync: false, minLength: 0, append: true, mkdir: true });
  logger = pino({ base: null, messageKey: 'msg', timestamp: pino.stdTimeFunctions.epochTime, formatters: { level: () => ({ log: 'access' }) } }, destination);
}

/** Flushes what is buffered and stops logging (worker drain or exit). */
export function closeAccessLog(): void {
  if (destination !== null) {
    try {
      destination.flushSync();
    } catch {
      // Nothing was buffered, or the file went away: nothing more to do.
    }
    destination.end();
  }
  logger = null;
  destination = null;
}

export function logHttp(a: HttpAccess): void {
  if (logger === null) return;
  logger.info({ dir: a.dir, ...(a.upstream === undefined ? {} : { upstream: a.upstream }), ...(a.src === undefined ? {} : { src: a.src }), proto: 'http', method: a.method, path: a.path, status: a.status, ...(a.flag === null || a.flag === undefined ? {} : { flag: a.flag }), ms: Math.round(a.ms * 1000) / 1000 });
}

export function logTcp(a: TcpAccess): void {
  if (logger === null) return;
  logger.info({ dir: a.dir, ...(a.upstream === undefined ? {} : { upstream: a.upstream }), ...(a.src === undefined ? {} : { src: a.src }), proto: 'tcp', rx: a.rx, tx: a.tx, ms: Math.round(a.ms * 1000) / 1000 });
}
