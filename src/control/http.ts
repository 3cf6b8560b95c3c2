// Small HTTP helpers for the agent API: a method+path router, bounded body reads, JSON and
// error replies in Consul's style (errors are plain text with a status code), and the
// blocking-query parameters (`?index=N&wait=D`).

import type { IncomingMessage, ServerResponse } from 'node:http';
import { FieldError, parseDuration } from './decode.ts';

export interface RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly url: URL;
  readonly params: Record<string, string>;
  /** Aborted when the client goes away (used to end blocking queries early). */
  readonly signal: AbortSignal;
}

export type Handler = (ctx: RequestContext) => Promise<void> | void;

interface Route {
  readonly method: string;
  readonly pattern: RegExp;
  readonly keys: string[];
  readonly handler: Handler;
}

export class HttpError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/** Request bodies of the control API are small; 1 MiB is far above any config entry. */
export const MAX_BODY_BYTES = 1 << 20;

/**
 * Runs before the routes: answers a request itself (resolves true) or lets the routes have
 * it (false). The agent forwards `?dc=` requests and a secondary's writes with it.
 */
export type Intercept = (req: IncomingMessage, res: ServerResponse, url: URL) => Promise<boolean> | boolean;

export class Router {
  readonly #routes: Route[] = [];
  #intercept: Intercept | null = null;

  /** Sets the one intercept (see Intercept); its errors are answered like a route's. */
  intercept(fn: Intercept): this {
    this.#intercept = fn;
    return this;
  }

  on(methods: string | readonly string[], path: string, handler: Handler): this {
    const keys: string[] = [];
    const source = path.replace(/:([A-Za-z]+)/g, (_m, key: string) => {
      keys.push(key);
      return '([^/]+)';
    });
    const pattern = new RegExp(`^${source}$`);
    for (const method of typeof methods === 'string' ? [methods] : methods) this.#routes.push({ method, pattern, keys, handler });
    return this;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://agent');
    let pathMatched = false;
    try {
      if (this.#intercept !== null) {
        // Most requests are not intercepted and say so synchronously: no extra await for them.
        const taken = this.#intercept(req, res, url);
        if (taken === true || (taken !== false && (await taken))) return;
      }
      for (const route of this.#routes) {
        const m = route.pattern.exec(url.pathname);
        if (m === null) continue;
        pathMatched = true;
        if (route.method !== req.method) continue;
        const params: Record<string, string> = {};
        route.keys.forEach((k, i) => {
          try {
            params[k] = decodeURIComponent(m[i + 1] as string);
          } catch {
            throw new HttpError(400, `malformed percent-encoding in path parameter ${k}`);
          }
        });
        await route.handler(new Context(req, res, url, params));
        return;
      }
      if (pathMatched) throw new HttpError(405, `method ${req.method ?? ''} not allowed on ${url.pathname}`);
      throw new HttpError(404, `no such endpoint: ${url.pathname}`);
    } catch (err) {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      // A body left unread (413, or a handler that failed before reading it) must not be
      // parsed as the next request: say the connection closes, and close it.
      if (!req.complete) res.shouldKeepAlive = false;
      if (err instanceof HttpError) sendText(res, err.status, err.message);
      else if (err instanceof FieldError) sendText(res, 400, `Request decode failed: ${err.message}`);
      else sendText(res, 500, `internal error: ${(err as Error).message}`);
    }
  }
}

/**
 * The signal is made on first use: only blocking queries ask for it, and an AbortController
 * aborted on every response close costs a DOMException per request (measured: ~14 µs of
 * control-thread time per CSR in `npm run bench:csr-burst`).
 */
class Context implements RequestContext {
  readonly req: IncomingMessage;
  readonly res: ServerResponse;
  readonly url: URL;
  readonly params: Record<string, string>;
  #controller: AbortController | undefined;

  constructor(req: IncomingMessage, res: ServerResponse, url: URL, params: Record<string, string>) {
    this.req = req;
    this.res = res;
    this.url = url;
    this.params = params;
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      const controller = new AbortController();
      this.#controller = controller;
      // A response already closed (client gone before the handler asked) is aborted at once.
      if (this.res.closed) controller.abort();
      else this.res.once('close', () => controller.abort());
    }
    return this.#controller.signal;
  }
}

export function sendText(res: ServerResponse, status: number, text: string): void {
  const body = text.endsWith('\n') ? text : `${text}\n`;
  res.writeHead(status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': Buffer.byteLength(body) });
  res.end(body);
}

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string | number> = {}): void {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers });
  res.end(body);
}

/**
 * Reads a whole request body (at most `limit` bytes, else 413). Event listeners rather than
 * `for await`: the async iterator costs a promise per chunk and shows in the CSR-burst profile.
 */
export function readBody(req: IncomingMessage, limit = MAX_BODY_BYTES): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= limit) {
        chunks.push(chunk);
        return;
      }
      cleanup();
      // Stop reading; the reply (413) goes out and the connection is closed after it.
      req.pause();
      reject(new HttpError(413, `request body larger than ${limit} bytes`));
    };
    const onEnd = (): void => {
      cleanup();
      resolve(chunks.length === 1 ? (chunks[0] as Buffer).toString('utf8') : Buffer.concat(chunks).toString('utf8'));
    };
    const onError = (err: Error): void => {
      cleanup();
      reject(err);
    };
    const onClose = (): void => {
      cleanup();
      reject(new Error('request closed before its body was read'));
    };
    const cleanup = (): void => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      req.off('close', onClose);
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
    req.on('close', onClose);
  });
}

/** Consul caps `wait` at 10 minutes and defaults it to 5 minutes. */
const MAX_WAIT_MS = 600_000;
const DEFAULT_WAIT_MS = 300_000;

export function blockingParams(url: URL): { index: number; waitMs: number } | null {
  const raw = url.searchParams.get('index');
  if (raw === null) return null;
  const index = Number(raw);
  if (!Number.isInteger(index) || index < 0) throw new HttpError(400, `invalid index ${JSON.stringify(raw)}`);
  const w = url.searchParams.get('wait');
  const waitMs = w === null ? DEFAULT_WAIT_MS : Math.min(MAX_WAIT_MS, parseDuration(w, 'wait'));
  return { index, waitMs };
}

/** `?passing`, `?pem=true`: Consul treats a bare flag or any value but false/0 as true. */
export function flagParam(url: URL, name: string): boolean {
  const v = url.searchParams.get(name);
  return v !== null && v !== 'false' && v !== '0';
}
