// HTTP client for the agent API, used by proxies and by CLI commands. Connection failures
// become one-line AgentUnreachable errors that say what to do; non-2xx replies become
// ApiError with the agent's own message.

import { parseJson } from './decode.ts';

export class AgentUnreachable extends Error {
  override readonly name = 'AgentUnreachable';
}

export class ApiError extends Error {
  override readonly name = 'ApiError';
  readonly status: number;
  /** From Retry-After on a 429/503, in ms. */
  readonly retryAfterMs: number | null;
  constructor(status: number, message: string, retryAfterMs: number | null = null) {
    super(message);
    this.status = status;
    this.retryAfterMs = retryAfterMs;
  }
}

export interface ApiResponse {
  readonly status: number;
  readonly text: string;
  /** X-Consul-Index, or 0 when absent. */
  readonly index: number;
  readonly headers: Headers;
}

export interface RequestOptions {
  readonly body?: unknown;
  /** Blocking query: wait for a change past this index. */
  readonly index?: number;
  readonly wait?: string;
  readonly signal?: AbortSignal;
  readonly query?: Record<string, string | readonly string[]>;
}

export class AgentClient {
  readonly base: URL;

  #token: string | null;

  /** `token` is sent as X-Consul-Token (Consul's -token / CONSUL_HTTP_TOKEN). */
  constructor(base: URL, token: string | null = null) {
    this.base = base;
    this.#token = token;
  }

  /** Replaces the token for the requests sent from now on (a reload re-read its file). */
  setToken(token: string | null): void {
    this.#token = token;
  }

  async request(method: string, path: string, opts: RequestOptions = {}): Promise<ApiResponse> {
    const url = new URL(path, this.base);
    for (const [k, v] of Object.entries(opts.query ?? {})) {
      if (typeof v === 'string') url.searchParams.set(k, v);
      else for (const item of v) url.searchParams.append(k, item);
    }
    if (opts.index !== undefined && opts.index > 0) {
      url.searchParams.set('index', String(opts.index));
      url.searchParams.set('wait', opts.wait ?? '60s');
    }
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        ...(opts.signal === undefined ? {} : { signal: opts.signal }),
        headers: {
          ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }),
          ...(this.#token === null ? {} : { 'x-consul-token': this.#token }),
        },
        ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
      });
    } catch (err) {
      if (opts.signal?.aborted === true) throw err;
      const cause = (err as Error & { cause?: { code?: string; message?: string } }).cause;
      const why = cause?.code ?? cause?.message ?? (err as Error).message;
      throw new AgentUnreachable(
        `cannot reach the meshd agent at ${this.base.origin} (${why}): start one with \`meshd agent -dev\`, or point -http-addr or MESHD_HTTP_ADDR at a running agent`,
      );
    }
    const text = await res.text();
    if (res.status < 200 || res.status > 299) {
      const retry = Number(res.headers.get('retry-after') ?? NaN);
      throw new ApiError(res.status, text.trim() || `HTTP ${res.status}`, Number.isFinite(retry) ? retry * 1000 : null);
    }
    return { status: res.status, text, index: Number(res.headers.get('x-consul-index') ?? 0), headers: res.headers };
  }

  async json<T>(method: string, path: string, opts: RequestOptions = {}): Promise<{ value: T; index: number; headers: Headers }> {
    const r = await this.request(method, path, opts);
    return { value: parseJson(r.text) as T, index: r.index, headers: r.headers };
  }
}
