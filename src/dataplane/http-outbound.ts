// An upstream listener in HTTP mode: the local app speaks plain HTTP/1.1 to 127.0.0.1:<port>;
// each request goes through the upstream's discovery chain — route (service-router), split
// (service-splitter), target and failover (service-resolver) — to one instance picked by the
// target's load-balancing policy, over a pooled keep-alive mTLS connection whose server must
// present the target service's SPIFFE ID.
// Runs on: every data-plane worker; connections come from the listener in ./outbound.ts.
//
// Local answers, as Envoy gives them: no healthy instance 503, circuit-breaker overflow 503,
// connect failure 503, reset before the response 502, route timeout 504; each is counted by
// cause (src/metrics/l7.ts). Retries follow the route's policy (NumRetries, RetryOn,
// RetryOnStatusCodes, RetryOnConnectFailure) with jittered backoff, to a different instance
// when there is one, and only for requests without a body (a streamed body cannot be
// replayed; Envoy buffers it instead, up to a limit). The route timeout covers every attempt
// and ends when the response begins: a long download is not cut.
// Before routing, a request is admitted only while this worker's share of the listener's
// -max-concurrent-requests is not in progress (./limits.ts); else 503 `overflow` at once.

import type * as http from 'node:http';
import type * as net from 'node:net';
import * as tls from 'node:tls';
import { Pool } from 'undici';
import { checkRequestHead, drainHttp, guardedServer, isPoisoned, poison } from './http-guard.ts';
import { normalizeRequestPath } from '../authz/l7.ts';
import { NO_HEADER_MODIFIERS, type ChainTarget, type DataPlaneChain, type HeaderModifiers, type RouteAction } from '../chain/types.ts';
import { accessLogOn, logWhenDone } from '../metrics/access-log.ts';
import { L, bump, countFlag, countOverflow, recordRequest, type ResponseFlag } from '../metrics/l7.ts';
import type { Endpoint, UpstreamRouting } from '../workers/messages.ts';
import { XFCC, afterRequestBody, applyModifiers, forwardHeaders, hasBody } from './http-headers.ts';
import { answerLocally, forward } from './http-forward.ts';
import { expectServer } from './identity.ts';
import { createBalancer, endpointKey, requestHashKey, type Balancer } from './lb.ts';
import { CircuitBreaker, OutlierDetector, retryBackoffMs, shouldRetry, type AttemptOutcome } from './resilience.ts';
import { ADMITTED, OVER_PRESSURE, PRESSURE_MESSAGE, type RequestLimiter } from './limits.ts';
import { RouteTable, rewritePath, type RoutableRequest } from './route-match.ts';
import { SplitPicker } from './split.ts';

/** Envoy's default route timeout when neither the router nor the resolver sets one. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 15_000;
/** Pooled upstream connections idle longer than this are closed (the server side keeps 120 s). */
export const UPSTREAM_POOL_IDLE_MS = 60_000;

export interface HttpUpstreamDeps {
  readonly name: string;
  readonly metrics: Float64Array;
  readonly tls: () => { readonly context: tls.SecureContext; readonly trustDomain: string };
  readonly random?: () => number;
  readonly now?: () => number;
  /** Idle keep-alive of the app's connections to this listener; absent: 60 s. */
  readonly keepAliveMs?: number;
  /** Idle time of pooled connections to upstream instances; absent: UPSTREAM_POOL_IDLE_MS. */
  readonly poolIdleMs?: number;
  /** Requests in progress on this listener; absent: no limit. */
  readonly limiter?: RequestLimiter;
}

interface TargetState {
  readonly target: ChainTarget;
  readonly all: readonly Endpoint[];
  balancer: Balancer;
  /** outlier.version the balancer was built at; a different one means rebuild before picking. */
  balancerVersion: number;
  readonly outlier: OutlierDetector;
  readonly breaker: CircuitBreaker;
  readonly sweep: NodeJS.Timeout;
}

class RequestView implements RoutableRequest {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly sourceIp: string;
  readonly #headers: http.IncomingHttpHeaders;
  #cookies: Map<string, string> | undefined;
  #params: URLSearchParams | undefined;

  constructor(method: string, path: string, query: string, headers: http.IncomingHttpHeaders, sourceIp: string) {
    this.method = method;
    this.path = path;
    this.query = query;
    this.#headers = headers;
    this.sourceIp = sourceIp;
  }

  header(name: string): string | undefined {
    const v = this.#headers[name.toLowerCase()];
    return Array.isArray(v) ? v.join(',') : v;
  }

  cookie(name: string): string | undefined {
    if (this.#cookies === undefined) {
      this.#cookies = new Map();
      for (const part of (this.#headers.cookie ?? '').split(';')) {
        const eq = part.indexOf('=');
        if (eq > 0) this.#cookies.set(part.slice(0, eq).trim(), part.slice(eq + 1).trim());
      }
    }
    return this.#cookies.get(name);
  }

  queryParam(name: string): string | undefined {
    this.#params ??= new URLSearchParams(this.query);
    return this.#params.get(name) ?? undefined;
  }
}

/** The app cannot pose as the caller: its own XFCC is dropped before the request leaves. */
const DROP_OUTBOUND: ReadonlySet<string> = new Set([XFCC]);

/** Errors that mean the request never reached the upstream application. */
const CONNECT_CODES: ReadonlySet<string> = new Set(['ECONNREFUSED', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'MESHD_CONNECT_TIMEOUT', 'MESHD_UPSTREAM_IDENTITY_MISMATCH']);

/**
 * A connection pool per instance and what its connections present: one mesh gateway address
 * serves many targets, each with its own SNI and expected identity.
 */
function poolKey(ep: Endpoint): string {
  return `${ep.service}@${endpointKey(ep)}${ep.sni === undefined ? '' : `/${ep.sni}`}`;
}

export class HttpUpstream {
  readonly #deps: HttpUpstreamDeps;
  readonly #server: http.Server;
  /**
   * One undici pool per instance (host:port), keep-alive, LIFO-free FIFO reuse, idle 60 s
   * (the server side keeps 120 s, so the client closes first). The TLS connector is ours:
   * the secure context of the moment, the instance's service as the required SPIFFE ID, the
   * target's connect timeout, and TLS session resumption from the last session per instance.
   */
  readonly #pools = new Map<string, Pool>();
  readonly #sessions = new Map<string, Buffer>();
  #maxConnections = 0;
  #chain: DataPlaneChain | null = null;
  #routes: RouteTable | null = null;
  #pickers: SplitPicker[] = [];
  #targets = new Map<string, TargetState>();
  readonly #random: () => number;
  readonly #now: () => number;
  #lastEjections = 0;
  /** An ingress gateway's per-service (virtual host) modifiers, applied after the route's and the split's. */
  #hostRequestHeaders: HeaderModifiers = NO_HEADER_MODIFIERS;
  #hostResponseHeaders: HeaderModifiers = NO_HEADER_MODIFIERS;

  constructor(deps: HttpUpstreamDeps) {
    this.#deps = deps;
    this.#random = deps.random ?? Math.random;
    this.#now = deps.now ?? Date.now;
    this.#server = guardedServer(deps.keepAliveMs ?? 60_000, (req, res) => this.#onRequest(req, res), () => countFlag(this.#deps.metrics, 'bad_request'));
  }

  /** The pool for one instance, made on first use. */
  poolFor(ep: Endpoint, connectTimeoutMs: number): Pool {
    const key = poolKey(ep);
    let pool = this.#pools.get(key);
    if (pool === undefined) {
      pool = new Pool(`https://${endpointKey(ep)}`, {
        connections: this.#maxConnections > 0 ? this.#maxConnections : 1024,
        pipelining: 1,
        keepAliveTimeout: this.#deps.poolIdleMs ?? UPSTREAM_POOL_IDLE_MS,
        keepAliveMaxTimeout: this.#deps.poolIdleMs ?? UPSTREAM_POOL_IDLE_MS,
        connect: (_opts, cb) => this.#connect(ep, key, connectTimeoutMs, cb as (err: Error | null, socket: tls.TLSSocket | null) => void),
      });
      this.#pools.set(key, pool);
    }
    return pool;
  }

  #connect(ep: Endpoint, key: string, timeoutMs: number, cb: (err: Error | null, socket: tls.TLSSocket | null) => void): void {
    const { context, trustDomain } = this.#deps.tls();
    const session = this.#sessions.get(key);
    const socket = tls.connect({
      host: ep.host,
      port: ep.port,
      ...(ep.sni === undefined ? {} : { servername: ep.sni }),
      secureContext: context,
      checkServerIdentity: expectServer(ep.service, trustDomain),
      ...(session === undefined ? {} : { session }),
    });
    socket.setNoDelay(true);
    let settled = false;
    const timer = setTimeout(() => socket.destroy(Object.assign(new Error(`connect timeout after ${timeoutMs} ms`), { code: 'MESHD_CONNECT_TIMEOUT' })), timeoutMs);
    socket.on('session', (s: Buffer) => this.#sessions.set(key, s));
    socket.once('secureConnect', () => {
      clearTimeout(timer);
      if (settled) return;
      settled = true;
      cb(null, socket);
    });
    socket.once('error', (err: Error) => {
      clearTimeout(timer);
      if (settled) return;
      settled = true;
      cb(err, null);
    });
  }

  /** Closes the pools of instances no longer in any target (requests in flight finish). */
  #prunePools(keep: ReadonlySet<string>): void {
    for (const [key, pool] of this.#pools) {
      if (keep.has(key)) continue;
      this.#pools.delete(key);
      this.#sessions.delete(key);
      void pool.close().catch(() => undefined);
    }
  }

  #dropPools(): void {
    for (const pool of this.#pools.values()) void pool.destroy().catch(() => undefined);
    this.#pools.clear();
    this.#sessions.clear();
  }

  /**
   * Serves one request that another server parsed: an ingress gateway's listener, which picks
   * the upstream by Host header (src/gateway/ingress-listener.ts).
   */
  handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    this.#onRequest(req, res);
  }

  /**
   * Header modifiers of the virtual host this upstream serves (an ingress service's
   * RequestHeaders / ResponseHeaders), applied last, so they win over the route's and the
   * split's as Envoy's virtual-host modifiers do.
   */
  setHostHeaders(request: HeaderModifiers, response: HeaderModifiers): void {
    this.#hostRequestHeaders = request;
    this.#hostResponseHeaders = response;
  }

  accept(socket: net.Socket): void {
    this.#server.emit('connection', socket);
    socket.resume();
  }

  close(): void {
    this.#server.closeAllConnections();
    this.#dropPools();
    for (const t of this.#targets.values()) clearInterval(t.sweep);
  }

  /**
   * Graceful end (SIGTERM): idle connections from the app close now, requests in flight finish
   * and get `Connection: close` (./http-guard.ts drainHttp); then the pools are released.
   */
  async drain(): Promise<void> {
    await drainHttp(this.#server);
    this.close();
  }

  /** A new chain or new endpoints: routes and pickers are rebuilt; outlier state is kept per target and instance. */
  update(u: UpstreamRouting): void {
    const chain = u.chain;
    this.#routes = new RouteTable(chain.routes);
    if (chain.limits.maxConnections !== this.#maxConnections) {
      // New pools with the new MaxConnections; the old ones finish what they carry, then close.
      this.#maxConnections = chain.limits.maxConnections;
      this.#prunePools(new Set());
    }
    this.#chain = chain;
    const next = new Map<string, TargetState>();
    for (const [id, target] of Object.entries(chain.targets)) {
      const all = u.endpoints[id] ?? [];
      const prev = this.#targets.get(id);
      const outlier = prev?.outlier ?? new OutlierDetector(chain.passiveHealthCheck, { now: this.#now, random: this.#random });
      outlier.setHosts(all.map(endpointKey));
      const breaker = prev?.breaker ?? new CircuitBreaker(chain.limits);
      breaker.setLimits(chain.limits);
      const sweep =
        prev?.sweep ??
        setInterval(() => {
          outlier.sweep();
          this.#syncGauges();
        }, outlier.intervalMs).unref();
      next.set(id, {
        target,
        all,
        balancer: createBalancer(target.loadBalancer, outlier.healthyEndpoints(all), { random: this.#random }),
        balancerVersion: outlier.version,
        outlier,
        breaker,
        sweep,
      });
    }
    for (const [id, t] of this.#targets) if (!next.has(id)) clearInterval(t.sweep);
    this.#targets = next;
    const live = new Set<string>();
    for (const t of next.values()) for (const ep of t.all) live.add(poolKey(ep));
    this.#prunePools(live);
    // Health-aware splits: a split whose target (and its failovers) has no instance gives
    // its share to the others (src/dataplane/split.ts).
    this.#pickers = chain.routes.map((r) => new SplitPicker(r.action.splits, { random: this.#random }).withHealthy((id) => this.#resolve(id) !== null));
  }

  /** The target that serves `id` now: itself if it has a healthy instance, else its first failover that has. */
  #resolve(id: string): TargetState | null {
    const t = this.#targets.get(id);
    if (t === undefined) return null;
    if (this.#healthy(t)) return t;
    for (const f of t.target.failover) {
      const ft = this.#targets.get(f);
      if (ft !== undefined && this.#healthy(ft)) return ft;
    }
    return null;
  }

  #healthy(t: TargetState): boolean {
    if (t.outlier.version !== t.balancerVersion) {
      t.balancer = createBalancer(t.target.loadBalancer, t.outlier.healthyEndpoints(t.all), { random: this.#random });
      t.balancerVersion = t.outlier.version;
      this.#syncGauges();
    }
    return t.balancer.endpoints.length > 0;
  }

  #local(res: http.ServerResponse, start: number, status: number, flag: ResponseFlag | null, body: string): void {
    answerLocally(res, this.#deps.metrics, start, status, flag, body, { headers: { 'x-meshd-response-flag': flag ?? '' } });
  }


  #syncGauges(): void {
    const m = this.#deps.metrics;
    let ejections = 0;
    let ejectedNow = 0;
    let open = 0;
    for (const s of this.#targets.values()) {
      ejections += s.outlier.ejections;
      ejectedNow += s.outlier.ejectedNow;
      if (s.breaker.requests >= s.breaker.maxRequests || s.breaker.pending >= s.breaker.maxPendingRequests) open = 1;
    }
    if (ejections !== this.#lastEjections) {
      bump(m, L.EJECTIONS, ejections - this.#lastEjections);
      this.#lastEjections = ejections;
    }
    m[L.EJECTED_NOW] = ejectedNow;
    m[L.BREAKER_OPEN] = open;
  }

  #onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const start = performance.now();
    if (isPoisoned(req)) {
      res.destroy();
      return;
    }
    const chain = this.#chain;
    const routes = this.#routes;
    if (chain === null || routes === null) {
      req.resume();
      this.#local(res, start, 503, 'no_healthy_upstream', `no route to ${this.#deps.name} yet`);
      return;
    }
    const norm = normalizeRequestPath(req.url ?? '');
    if (accessLogOn()) logWhenDone(res, start, { dir: 'outbound', upstream: this.#deps.name, method: req.method ?? '', path: norm.ok ? norm.path : '-' });
    // An ambiguous or unreadable request ends the connection (http-guard.ts).
    const head = checkRequestHead(req.rawHeaders);
    if (head !== null || !norm.ok) {
      poison(req, res);
      this.#local(res, start, head?.status ?? 400, 'bad_request', head !== null ? head.detail : `bad request path: ${norm.ok ? '' : norm.detail}`);
      return;
    }
    const limiter = this.#deps.limiter;
    if (limiter !== undefined) {
      const admitted = limiter.admit(null);
      if (admitted !== ADMITTED) {
        req.resume();
        answerLocally(res, this.#deps.metrics, start, 503, 'overflow', admitted === OVER_PRESSURE ? PRESSURE_MESSAGE : 'overloaded: too many requests in progress on this listener', { headers: { 'x-meshd-response-flag': 'overflow', 'retry-after': '1' } });
        return;
      }
      res.once('close', () => limiter.release(null));
    }
    const method = req.method ?? 'GET';
    const view = new RequestView(method, norm.path, norm.query, req.headers, req.socket.remoteAddress ?? '');
    const ri = routes.match(view);
    const route = chain.routes[ri];
    const picker = this.#pickers[ri];
    if (route === undefined || picker === undefined) {
      req.resume();
      this.#local(res, start, 503, 'no_healthy_upstream', 'no route');
      return;
    }
    const action = route.action;
    const split = action.splits[picker.pick()];
    const ts = split === undefined ? null : this.#resolve(split.targetId);
    if (split === undefined || ts === null) {
      req.resume();
      this.#local(res, start, 503, 'no_healthy_upstream', 'no healthy upstream');
      return;
    }
    if (!ts.breaker.tryAcquireRequest()) {
      req.resume();
      countOverflow(this.#deps.metrics, 'requests');
      this.#syncGauges();
      this.#local(res, start, 503, 'overflow', 'upstream overflow: too many concurrent requests (circuit breaker)');
      return;
    }
    let headers = forwardHeaders(req.rawHeaders, DROP_OUTBOUND);
    headers = applyModifiers(applyModifiers(applyModifiers(headers, action.requestHeaders), split.requestHeaders), this.#hostRequestHeaders);
    const rewritten = rewritePath(norm.path, route.match, action.prefixRewrite);
    const path = norm.query === '' ? rewritten : `${rewritten}?${norm.query}`;
    const hashKey = ts.target.loadBalancer.hashPolicies.length === 0 ? null : requestHashKey(ts.target.loadBalancer.hashPolicies, { header: (n) => view.header(n), cookie: (n) => view.cookie(n), query: (n) => view.queryParam(n), sourceIp: view.sourceIp });
    const timeoutMs = action.requestTimeoutMs > 0 ? action.requestTimeoutMs : ts.target.requestTimeoutMs > 0 ? ts.target.requestTimeoutMs : DEFAULT_REQUEST_TIMEOUT_MS;
    const replayable = !hasBody(req.headers);
    const maxRetries = retriesFor(action);
    new Exchange(this, { req, res, start, method, path, headers, ts, hashKey, action, responseModifiers: [action.responseHeaders, split.responseHeaders, this.#hostResponseHeaders], replayable, maxRetries, timeoutMs }).begin();
  }

  /** For Exchange: the pieces it needs from the listener. */
  get deps(): HttpUpstreamDeps {
    return this.#deps;
  }
  get random(): () => number {
    return this.#random;
  }
  finish(res: http.ServerResponse, start: number, status: number, flag: ResponseFlag | null, body: string): void {
    this.#local(res, start, status, flag, body);
  }
  /**
   * Refreshes the ejection and breaker gauges. Called only when they can have changed (an
   * ejection came or went, a breaker left or reached a limit), not per request: the loop
   * visits every target.
   */
  sync(): void {
    this.#syncGauges();
  }

  /** Records an outcome for passive health checking; refreshes the gauges if it ejected. */
  record(ts: TargetState, key: string, result: boolean | 'connect-failure'): void {
    const before = ts.outlier.version;
    ts.outlier.record(key, result);
    if (ts.outlier.version !== before) this.#syncGauges();
  }
  healthy(ts: TargetState): boolean {
    return this.#healthy(ts);
  }
}

/** Envoy: a retry policy without a count retries once. */
function retriesFor(a: RouteAction): number {
  if (a.numRetries > 0) return a.numRetries;
  return a.retryOnConnectFailure || a.retryOn.length > 0 || a.retryOnStatusCodes.length > 0 ? 1 : 0;
}

interface ExchangeSpec {
  readonly req: http.IncomingMessage;
  readonly res: http.ServerResponse;
  readonly start: number;
  readonly method: string;
  readonly path: string;
  readonly headers: string[];
  readonly ts: TargetState;
  readonly hashKey: number | null;
  readonly action: RouteAction;
  /** Applied in order: the route's, the split's, the virtual host's. */
  readonly responseModifiers: readonly HeaderModifiers[];
  readonly replayable: boolean;
  readonly maxRetries: number;
  readonly timeoutMs: number;
}

/** One downstream request and its attempts. */
class Exchange {
  readonly #u: HttpUpstream;
  readonly #s: ExchangeSpec;
  #done = false;
  #retries = 0;
  #abort: ((err?: Error) => void) | null = null;
  #timer: NodeJS.Timeout | undefined;
  #released = false;

  constructor(u: HttpUpstream, s: ExchangeSpec) {
    this.#u = u;
    this.#s = s;
  }

  begin(): void {
    const s = this.#s;
    // As Envoy: the route timeout runs from the end of the downstream request, so a long
    // upload is not cut by it.
    afterRequestBody(s.req, () => {
      if (this.#done) return;
      this.#timer = setTimeout(() => {
        if (this.#done) return;
        this.#done = true;
        this.#abort?.();
        this.#release();
        this.#u.finish(s.res, s.start, 504, 'request_timeout', `upstream request timeout (${s.timeoutMs} ms)`);
      }, s.timeoutMs);
    });
    s.res.once('close', () => {
      if (this.#done) return;
      // The app gave up before the response began.
      this.#done = true;
      clearTimeout(this.#timer);
      this.#abort?.();
      this.#release();
    });
    if (s.replayable) s.req.resume();
    this.#attempt(null);
  }

  #release(): void {
    if (this.#released) return;
    this.#released = true;
    const b = this.#s.ts.breaker;
    const wasFull = b.requests >= b.maxRequests || b.pending >= b.maxPendingRequests;
    b.releaseRequest();
    // The open gauge may also have been raised by a pending overflow that has drained since.
    if (wasFull || this.#u.deps.metrics[L.BREAKER_OPEN] !== 0) this.#u.sync();
  }

  #fail(status: number, flag: ResponseFlag, body: string): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    this.#release();
    this.#u.finish(this.#s.res, this.#s.start, status, flag, body);
  }

  #retry(exclude: Endpoint, outcome: AttemptOutcome): boolean {
    const s = this.#s;
    if (!s.replayable || this.#retries >= s.maxRetries || !shouldRetry(s.action, outcome, s.method)) return false;
    this.#retries++;
    bump(this.#u.deps.metrics, L.RETRIES);
    setTimeout(() => {
      if (!this.#done) this.#attempt(exclude);
    }, retryBackoffMs(this.#retries, this.#u.random));
    return true;
  }

  #attempt(exclude: Endpoint | null): void {
    const s = this.#s;
    const ts = s.ts;
    if (!this.#u.healthy(ts)) {
      this.#fail(503, 'no_healthy_upstream', 'no healthy upstream');
      return;
    }
    const ep = ts.balancer.pick(s.hashKey, exclude);
    if (ep === null) {
      this.#fail(503, 'no_healthy_upstream', 'no healthy upstream');
      return;
    }
    if (!ts.breaker.tryAcquirePending()) {
      countOverflow(this.#u.deps.metrics, 'pending');
      this.#u.sync();
      this.#fail(503, 'overflow', 'upstream overflow: too many requests waiting for a connection (circuit breaker)');
      return;
    }
    const key = endpointKey(ep);
    ts.balancer.onRequestStart(ep);
    let pending = true;
    const releasePending = (): void => {
      if (!pending) return;
      pending = false;
      ts.breaker.releasePending();
    };
    let started = false;
    let ended = false;
    const end = (): void => {
      releasePending();
      if (ended) return;
      ended = true;
      ts.balancer.onRequestEnd(ep);
    };
    const m = this.#u.deps.metrics;
    this.#abort = forward(
      this.#u.poolFor(ep, ts.target.connectTimeoutMs),
      { method: s.method, path: s.path, headers: s.headers, body: s.replayable ? null : s.req, idleTimeoutMs: s.action.idleTimeoutMs },
      s.res,
      {
        onStart: () => {
          started = true;
          releasePending();
        },
        onResponse: (status, raw) => {
          this.#u.record(ts, key, status >= 500);
          if (this.#done) return null;
          if (status >= 400 && this.#retry(ep, { kind: 'status', status })) return null;
          this.#done = true;
          clearTimeout(this.#timer);
          s.res.once('close', () => recordRequest(m, status, (performance.now() - s.start) / 1000));
          return s.responseModifiers.reduce(applyModifiers, forwardHeaders(raw));
        },
        onEnd: (discarded) => {
          end();
          if (!discarded) this.#release();
        },
        onError: (err, responded) => {
          end();
          if (responded) {
            // The response had begun: all that can be done is to cut the downstream too.
            s.res.destroy();
            this.#release();
            return;
          }
          if (this.#done) return;
          if (err.code === 'MESHD_IDLE_TIMEOUT') {
            this.#fail(504, 'request_timeout', `upstream stream idle timeout (${s.action.idleTimeoutMs} ms)`);
            return;
          }
          const connectFailure = !started || CONNECT_CODES.has(err.code ?? '');
          this.#u.record(ts, key, connectFailure ? 'connect-failure' : true);
          if (connectFailure) countFlag(m, 'connect_failure');
          const outcome: AttemptOutcome = connectFailure ? { kind: 'connect-failure' } : { kind: 'reset' };
          if (this.#retry(ep, outcome)) return;
          if (connectFailure) {
            // Counted above per attempt; the local answer carries the same cause.
            this.#done = true;
            clearTimeout(this.#timer);
            this.#release();
            answerLocally(s.res, m, s.start, 503, 'connect_failure', `upstream connect error: ${err.code ?? err.message} (${this.#u.deps.name})`, {
              headers: { 'x-meshd-response-flag': 'connect_failure' },
              counted: true,
            });
            return;
          }
          this.#fail(502, 'reset', `upstream reset before the response: ${err.code ?? err.message}`);
        },
      },
    );
  }
}
