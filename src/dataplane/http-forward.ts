// Sends one request through an undici dispatcher and streams the response into a node:http
// ServerResponse, with backpressure both ways. Both HTTP hops of a sidecar use it: the
// upstream listener towards the destination's sidecar (mTLS pools), and the public listener
// towards the local app (plaintext pool).
//
// Why undici rather than http.request: on this 2-core machine a node:http proxy hop costs
// ~316 µs of CPU per request on the client side (ClientRequest, Agent bookkeeping, the JS
// HTTP parser glue), undici's dispatch ~142 µs (measured with the same server and load,
// docs/BENCHMARKS.md). undici also keeps a connection alive whatever identity check its TLS
// connector runs, which node's https.Agent refuses for a per-request checkServerIdentity.
//
// Runs on: data-plane workers.

import type { ServerResponse } from 'node:http';
import { markFlag } from '../metrics/access-log.ts';
import { countFlag, recordRequest, type ResponseFlag } from '../metrics/l7.ts';
import type { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';

export interface ForwardRequest {
  readonly method: string;
  readonly path: string;
  /** Flat [name, value, ...]; hop-by-hop headers already removed. */
  readonly headers: readonly string[];
  /** null when the request has no body. */
  readonly body: Readable | null;
  /**
   * The route's IdleTimeout: the exchange is aborted (code MESHD_IDLE_TIMEOUT) when nothing
   * arrives from the upstream for this long, before or during the response. 0: none.
   */
  readonly idleTimeoutMs?: number;
}

export interface ForwardEvents {
  /** The request has a connection and is about to be written. */
  onStart?(): void;
  /**
   * The response status and headers arrived: return the headers to send downstream, or null
   * to discard this response (the caller will retry) — its body is then drained, not sent.
   */
  onResponse(status: number, rawHeaders: string[]): string[] | null;
  /** The response was sent whole (or discarded and drained). */
  onEnd(discarded: boolean): void;
  /** The exchange failed; `responded` says whether the downstream response had begun. */
  onError(err: Error & { code?: string }, responded: boolean): void;
}

/** Undici's handler (the callback form), typed for what is used here. */
interface LegacyHandler {
  onConnect(abort: (err?: Error) => void): void;
  onHeaders(status: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean;
  onData(chunk: Buffer): boolean;
  onComplete(trailers: Buffer[] | null): void;
  onError(err: Error & { code?: string }): void;
  onUpgrade?(): void;
}

/** Starts the exchange; returns a function that aborts it. */
export function forward(dispatcher: Dispatcher, req: ForwardRequest, res: ServerResponse, ev: ForwardEvents): (err?: Error) => void {
  let abortFn: ((err?: Error) => void) | null = null;
  let aborted: Error | null = null;
  let responded = false;
  let discard = false;
  let finished = false;
  const idleMs = req.idleTimeoutMs ?? 0;
  let idleTimer: NodeJS.Timeout | undefined;
  const idle = (): void => {
    if (idleMs <= 0 || finished) return;
    clearTimeout(idleTimer);
    idleTimer = setTimeout(() => {
      const err = Object.assign(new Error(`no data from the upstream for ${idleMs} ms (IdleTimeout)`), { code: 'MESHD_IDLE_TIMEOUT' });
      aborted = err;
      if (abortFn !== null) abortFn(err);
    }, idleMs);
  };
  idle();
  // Activity from the downstream side counts too (Envoy's stream idle timeout): request body
  // chunks going up, and the downstream taking response data (drain).
  if (idleMs > 0) {
    req.body?.on('data', idle);
    res.on('drain', idle);
  }
  // The downstream went away (a client hanging up mid-download): end the upstream exchange
  // too, so its connection and any circuit-breaker slot are released.
  res.once('close', () => {
    if (finished) return;
    const err = Object.assign(new Error('the downstream closed the response'), { code: 'MESHD_DOWNSTREAM_CLOSED' });
    aborted = err;
    if (abortFn !== null) abortFn(err);
  });
  const handler: LegacyHandler = {
    onConnect(abort) {
      abortFn = abort;
      if (aborted !== null) abort(aborted);
      else ev.onStart?.();
    },
    onHeaders(status, raw, resume, statusText) {
      idle();
      // 1xx: informational; node's server already answered Expect: 100-continue downstream.
      if (status < 200) return true;
      const names: string[] = new Array<string>(raw.length);
      for (let i = 0; i < raw.length; i++) names[i] = (raw[i] as Buffer).toString('latin1');
      const headers = ev.onResponse(status, names);
      if (headers === null) {
        discard = true;
        return true;
      }
      responded = true;
      res.writeHead(status, statusText, headers);
      res.on('drain', resume);
      return true;
    },
    onData(chunk) {
      idle();
      if (discard) return true;
      return res.write(chunk);
    },
    onComplete() {
      finished = true;
      clearTimeout(idleTimer);
      if (!discard) res.end();
      ev.onEnd(discard);
    },
    onError(err) {
      clearTimeout(idleTimer);
      if (finished) return;
      finished = true;
      ev.onError(err, responded);
    },
  };
  dispatcher.dispatch(
    {
      method: req.method,
      path: req.path,
      headers: req.headers as string[],
      body: req.body,
      // The caller owns the timeouts (route timeout, local request timeout).
      headersTimeout: 0,
      bodyTimeout: 0,
    },
    handler as unknown as Dispatcher.DispatchHandler,
  );
  return (err?: Error) => {
    const e = err ?? new Error('aborted');
    aborted = e;
    if (abortFn !== null && !finished) abortFn(e);
  };
}

/**
 * The proxy answers a request itself (a denial, a timeout, no healthy instance, ...): counts
 * the cause unless the caller already has (`counted`), writes a short text body — or cuts the
 * response if it had already begun — and records the request in the L7 counters.
 */
export function answerLocally(
  res: ServerResponse,
  metrics: Float64Array,
  start: number,
  status: number,
  flag: ResponseFlag | null,
  body: string,
  opts: { readonly headers?: Readonly<Record<string, string>>; readonly counted?: boolean } = {},
): void {
  if (flag !== null) {
    if (opts.counted !== true) countFlag(metrics, flag);
    markFlag(res, flag);
  }
  if (!res.headersSent) {
    const text = body.endsWith('\n') ? body : `${body}\n`;
    res.writeHead(status, { ...opts.headers, 'content-type': 'text/plain', 'content-length': Buffer.byteLength(text) });
    res.end(text);
  } else {
    res.destroy();
  }
  recordRequest(metrics, status, (performance.now() - start) / 1000);
}
