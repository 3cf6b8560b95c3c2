// Agent-run health checks (Consul's HTTP and TCP checks). Each check probes its target every
// Interval and reports the result, which the agent stores as the check's Status and Output
// (catalog.ts setCheckResult): an instance whose app dies leaves `?passing` health answers
// within about one interval. Consul's rules: HTTP is passing on 2xx, warning on 429 and
// critical otherwise (including a timeout or a refused connection); TCP is passing when the
// connection opens. The first probe runs at once; the next starts Interval after the previous
// one started, or when it ends if it took longer (probes of one check never overlap).
// Scheduling goes through injected timers, so tests step a fake clock instead of waiting.
// Runs on: the agent's control thread; probes are plain non-blocking sockets.

import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import type { CheckStatus, HttpCheck, ProbeCheck, TcpCheck } from './catalog.ts';

export interface ProbeResult {
  readonly status: CheckStatus;
  readonly output: string;
}

export interface CheckTimers {
  now(): number;
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

/** Real timers, unref'd: a pending probe never keeps the agent process alive. */
export const REAL_TIMERS: CheckTimers = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms).unref(),
  clearTimeout: (handle) => clearTimeout(handle as NodeJS.Timeout),
};

export type Probe = (check: ProbeCheck, signal: AbortSignal) => Promise<ProbeResult>;

/** Consul keeps the first 4 KiB of a check's output. */
export const MAX_OUTPUT_BYTES = 4096;
const MAX_REDIRECTS = 10;

/** `HOST:PORT` or `[IPv6]:PORT`; null when it is neither. */
export function splitHostPort(value: string): { host: string; port: number } | null {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(value);
  if (m === null) return null;
  const port = Number(m[3]);
  if (port < 1 || port > 65535) return null;
  return { host: (m[1] ?? m[2]) as string, port };
}

function describe(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e.code !== undefined && e.message !== undefined && !e.message.includes(e.code) ? `${e.code}: ${e.message}` : (e.message ?? String(err));
}

/** Consul's HTTP rule: 2xx passing, 429 warning, anything else critical. */
export function httpStatusToCheck(code: number): CheckStatus {
  if (code >= 200 && code <= 299) return 'passing';
  if (code === 429) return 'warning';
  return 'critical';
}

interface HttpReply {
  readonly code: number;
  readonly reason: string;
  readonly location: string | undefined;
  readonly body: string;
}

function httpOnce(check: HttpCheck, url: URL, method: string, body: string, signal: AbortSignal): Promise<HttpReply> {
  return new Promise((resolve, reject) => {
    const headers: Record<string, string | string[]> = { 'user-agent': 'meshd Health Check', accept: 'text/plain, text/*, */*' };
    for (const [k, v] of Object.entries(check.Header)) headers[k.toLowerCase()] = [...v];
    if (body !== '') headers['content-length'] = String(Buffer.byteLength(body));
    const opts = { method, headers, signal, agent: false as const };
    const onResponse = (res: IncomingMessage): void => {
      const chunks: Buffer[] = [];
      let size = 0;
      const done = (): void => {
        resolve({ code: res.statusCode ?? 0, reason: res.statusMessage ?? '', location: res.headers.location, body: Buffer.concat(chunks).subarray(0, MAX_OUTPUT_BYTES).toString('utf8') });
        res.destroy();
      };
      res.on('data', (d: Buffer) => {
        if (size >= MAX_OUTPUT_BYTES) return;
        chunks.push(d);
        size += d.length;
        if (size >= MAX_OUTPUT_BYTES) done();
      });
      res.once('end', done);
      res.once('error', reject);
      // After done() this is a no-op; before it, the server hung up mid-body.
      res.once('close', () => reject(new Error('the connection closed before the response ended')));
    };
    const req =
      url.protocol === 'https:'
        ? httpsRequest(url, { ...opts, rejectUnauthorized: !check.TLSSkipVerify, ...(check.TLSServerName === '' ? {} : { servername: check.TLSServerName }) }, onResponse)
        : httpRequest(url, opts, onResponse);
    req.once('error', reject);
    req.end(body === '' ? undefined : body);
  });
}

/** One run of an HTTP check; never rejects. */
export async function probeHttp(check: HttpCheck, signal?: AbortSignal): Promise<ProbeResult> {
  const deadline = AbortSignal.timeout(check.TimeoutMs);
  const combined = signal === undefined ? deadline : AbortSignal.any([signal, deadline]);
  let url = new URL(check.HTTP);
  let method = check.Method;
  let body = check.Body;
  const label = (): string => `HTTP ${method} ${url.href}`;
  try {
    for (let hop = 0; ; hop++) {
      const r = await httpOnce(check, url, method, body, combined);
      const location = [301, 302, 303, 307, 308].includes(r.code) ? r.location : undefined;
      if (location !== undefined && !check.DisableRedirects && hop < MAX_REDIRECTS) {
        url = new URL(location, url);
        if (r.code === 303 || ((r.code === 301 || r.code === 302) && method === 'POST')) {
          method = 'GET';
          body = '';
        }
        continue;
      }
      return { status: httpStatusToCheck(r.code), output: `${label()}: ${r.code} ${r.reason} Output: ${r.body}` };
    }
  } catch (err) {
    if (deadline.aborted) return { status: 'critical', output: `${label()}: timed out after ${check.TimeoutMs} ms` };
    return { status: 'critical', output: `${label()}: ${describe(err)}` };
  }
}

/** One run of a TCP check: passing when a connection opens within the timeout; never rejects. */
export function probeTcp(check: TcpCheck, signal?: AbortSignal): Promise<ProbeResult> {
  const target = splitHostPort(check.TCP);
  if (target === null) return Promise.resolve({ status: 'critical', output: `TCP connect ${check.TCP}: not HOST:PORT` });
  return new Promise((resolve) => {
    const socket = connect({ host: target.host, port: target.port });
    let settled = false;
    const finish = (result: ProbeResult): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      socket.destroy();
      resolve(result);
    };
    const onAbort = (): void => finish({ status: 'critical', output: `TCP connect ${check.TCP}: cancelled` });
    const timer = setTimeout(() => finish({ status: 'critical', output: `TCP connect ${check.TCP}: timed out after ${check.TimeoutMs} ms` }), check.TimeoutMs);
    timer.unref();
    signal?.addEventListener('abort', onAbort, { once: true });
    socket.once('connect', () => finish({ status: 'passing', output: `TCP connect ${check.TCP}: Success` }));
    socket.once('error', (err) => finish({ status: 'critical', output: `TCP connect ${check.TCP}: ${describe(err)}` }));
  });
}

export const defaultProbe: Probe = (check, signal) => (check.Type === 'http' ? probeHttp(check, signal) : probeTcp(check, signal));

export interface CheckRunnerOptions {
  /** Called with every result; the agent writes it to the catalog. */
  readonly report: (checkId: string, result: ProbeResult) => void;
  readonly timers?: CheckTimers;
  readonly probe?: Probe;
  readonly log?: (line: string) => void;
}

interface Running {
  readonly def: ProbeCheck;
  readonly signature: string;
  readonly abort: AbortController;
  timer: unknown;
}

function signature(c: ProbeCheck): string {
  return c.Type === 'http'
    ? JSON.stringify([c.Type, c.HTTP, c.Method, c.Header, c.Body, c.DisableRedirects, c.TLSSkipVerify, c.TLSServerName, c.IntervalMs, c.TimeoutMs])
    : JSON.stringify([c.Type, c.TCP, c.IntervalMs, c.TimeoutMs]);
}

/** Runs the probes of a set of checks; `sync` makes the running set match the catalog's. */
export class CheckRunner {
  readonly #o: CheckRunnerOptions;
  readonly #timers: CheckTimers;
  readonly #probe: Probe;
  readonly #running = new Map<string, Running>();

  constructor(opts: CheckRunnerOptions) {
    this.#o = opts;
    this.#timers = opts.timers ?? REAL_TIMERS;
    this.#probe = opts.probe ?? defaultProbe;
  }

  /** IDs of the checks being run. */
  ids(): string[] {
    return [...this.#running.keys()].sort();
  }

  /**
   * Starts checks that are new or whose probe changed, and stops those no longer listed.
   * A check whose definition is unchanged keeps its schedule.
   */
  sync(defs: readonly ProbeCheck[]): void {
    const wanted = new Map(defs.map((d) => [d.CheckID, d]));
    for (const id of [...this.#running.keys()]) {
      const r = this.#running.get(id) as Running;
      const d = wanted.get(id);
      if (d === undefined || signature(d) !== r.signature) this.stop(id);
    }
    for (const d of defs) if (!this.#running.has(d.CheckID)) this.#start(d);
  }

  stop(checkId: string): void {
    const r = this.#running.get(checkId);
    if (r === undefined) return;
    this.#running.delete(checkId);
    r.abort.abort();
    if (r.timer !== undefined) this.#timers.clearTimeout(r.timer);
  }

  stopAll(): void {
    for (const id of [...this.#running.keys()]) this.stop(id);
  }

  #start(def: ProbeCheck): void {
    const r: Running = { def, signature: signature(def), abort: new AbortController(), timer: undefined };
    this.#running.set(def.CheckID, r);
    this.#schedule(r, 0);
  }

  #schedule(r: Running, delayMs: number): void {
    r.timer = this.#timers.setTimeout(() => {
      r.timer = undefined;
      void this.#run(r);
    }, delayMs);
  }

  async #run(r: Running): Promise<void> {
    if (r.abort.signal.aborted) return;
    const started = this.#timers.now();
    let result: ProbeResult;
    try {
      result = await this.#probe(r.def, r.abort.signal);
    } catch (err) {
      result = { status: 'critical', output: `probe failed: ${describe(err)}` };
    }
    // A check stopped or replaced meanwhile must not write a stale result.
    if (r.abort.signal.aborted || this.#running.get(r.def.CheckID) !== r) return;
    try {
      this.#o.report(r.def.CheckID, result);
    } catch (err) {
      this.#o.log?.(`[ERROR] agent: could not store the result of check ${r.def.CheckID}: ${describe(err)}`);
    }
    this.#schedule(r, Math.max(0, started + r.def.IntervalMs - this.#timers.now()));
  }
}
