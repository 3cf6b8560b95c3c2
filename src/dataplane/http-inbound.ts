// The public listener in HTTP mode: after the mTLS handshake and the identity check (in
// ./inbound.ts), each connection is handed to a node:http server that never listens itself.
// Per request: the path is normalised once, intentions are evaluated (L4 table, then the
// source's L7 permissions), and the request is re-serialised to the local app over a pooled
// keep-alive connection, with the caller's identity in `x-forwarded-client-cert`.
// A JWT that no applying jwt-provider verifies is answered 401 `Jwt verification fails`
// (semantics: src/authz/jwt-verify.ts).
// Runs on: every data-plane worker.
//
// Local-app timeouts (service-defaults): LocalConnectTimeoutMs bounds the TCP connect
// (503 naming the cause), LocalRequestTimeoutMs bounds the wait for the response headers
// (504). Once the response has begun it streams for as long as it takes: Envoy's route
// timeout also cuts long downloads, which Consul users trip over; meshd does not.
//
// Limits (./limits.ts): before authorization, a request is admitted only while this worker's
// share of -max-concurrent-requests is not in progress (else 503 `overflow`) and the calling
// service's share of -max-requests-per-source is not (else 429 `source_limit`): one busy
// caller cannot take every slot from the others. Both answers go out at once.

import type * as http from 'node:http';
import * as net from 'node:net';
import type { TLSSocket } from 'node:tls';
import { Pool } from 'undici';
import { normalizeRequestPath, rawHeaderValue } from '../authz/l7.ts';
import { accessLogOn, logWhenDone } from '../metrics/access-log.ts';
import { countFlag, countL7Denied, recordRequest, type L7DenyReason, type ResponseFlag } from '../metrics/l7.ts';
import { XFCC, afterRequestBody, forwardHeaders, hasBody } from './http-headers.ts';
import { answerLocally, forward } from './http-forward.ts';
import { checkRequestHead, drainHttp, guardedServer, isPoisoned, poison } from './http-guard.ts';
import { ADMITTED, OVER_PRESSURE, OVER_SOURCE, PRESSURE_MESSAGE, type RequestLimiter } from './limits.ts';

export interface Peer {
  /** The caller's service name (from its SPIFFE ID). */
  readonly service: string;
  readonly uri: string;
  /** Hex SHA-256 of the caller's leaf DER (XFCC's Hash). */
  readonly certHash: string;
}

export interface LocalAppTimeouts {
  readonly localConnectTimeoutMs: number;
  readonly localRequestTimeoutMs: number;
}

/** What a request asks of the authorizer; header names lower-case. */
export interface AuthzRequest {
  readonly method: string;
  readonly path: string;
  /** The raw query (after the first `?`), "" when none. */
  readonly query: string;
  header(name: string): string | undefined;
}

export type AuthzResult =
  | {
      readonly allow: true;
      /** Lower-case header names not to forward to the app (besides XFCC and hop-by-hop ones). */
      readonly dropHeaders?: readonly string[];
      /** Flat [name, value, ...] headers to add towards the app (e.g. a verified JWT payload). */
      readonly addHeaders?: readonly string[];
    }
  | {
      readonly allow: false;
      readonly reason: L7DenyReason;
      /**
       * The shared table says an L7 intention decides, but this worker's routing snapshot has
       * no permissions for the source yet (the two reach a worker by different paths, a few ms
       * apart, when an intention changes from L4 to L7). The request waits for the next
       * snapshot and is decided again; `reason` is the answer if none comes.
       */
      readonly pending?: true;
    };

export interface HttpInboundDeps {
  readonly appHost: string;
  readonly appPort: number;
  /** Our own SPIFFE ID (XFCC's By). */
  readonly selfUri: () => string;
  readonly metrics: Float64Array;
  readonly timeouts: () => LocalAppTimeouts;
  readonly authorize: (peer: Peer, req: AuthzRequest, final?: boolean) => AuthzResult;
  /** Resolves at the next routing snapshot, or after `timeoutMs`. */
  readonly routingChanged?: (timeoutMs: number) => Promise<void>;
  /** Idle keep-alive of downstream connections; absent: DOWNSTREAM_KEEPALIVE_MS. */
  readonly keepAliveMs?: number;
  /** Idle time of pooled connections to the app; absent: LOCAL_POOL_IDLE_MS. */
  readonly appPoolIdleMs?: number;
  /** Requests in progress, per listener and per source; absent: no limit. */
  readonly limiter?: RequestLimiter;
}

/** Keep-alive towards the downstream sidecar: longer than its pool's idle timeout (60 s). */
export const DOWNSTREAM_KEEPALIVE_MS = 120_000;
/** How long a request waits for L7 permissions the shared table already says exist (see AuthzResult.pending). */
const ROUTING_WAIT_MS = 1000;
/** Idle pooled connections to the local app are closed after this. */
export const LOCAL_POOL_IDLE_MS = 60_000;

/**
 * Header values come from rawHeaders, every occurrence joined with ',' as Envoy sees them:
 * node's `req.headers` keeps only the first of some duplicated headers, and a rule that reads
 * only the first of several is the CVE-2020-25017 bypass.
 */
class RequestView implements AuthzRequest {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly #raw: readonly string[];
  constructor(method: string, path: string, query: string, raw: readonly string[]) {
    this.method = method;
    this.path = path;
    this.query = query;
    this.#raw = raw;
  }
  header(name: string): string | undefined {
    return rawHeaderValue(this.#raw, name);
  }
}

const DROP_INBOUND: ReadonlySet<string> = new Set([XFCC]);

export class HttpInbound {
  readonly #deps: HttpInboundDeps;
  readonly #server: http.Server;
  /** Keep-alive pool to the local app; remade when LocalConnectTimeoutMs changes. */
  #appPool: Pool | null = null;
  #appPoolConnectMs = 0;
  readonly #peers = new WeakMap<object, Peer>();

  constructor(deps: HttpInboundDeps) {
    this.#deps = deps;
    this.#server = guardedServer(deps.keepAliveMs ?? DOWNSTREAM_KEEPALIVE_MS, (req, res) => this.#onRequest(req, res), () => countFlag(this.#deps.metrics, 'bad_request'));
  }

  #pool(connectTimeoutMs: number): Pool {
    if (this.#appPool === null || this.#appPoolConnectMs !== connectTimeoutMs) {
      const old = this.#appPool;
      void old?.close().catch(() => undefined);
      const { appHost, appPort } = this.#deps;
      this.#appPoolConnectMs = connectTimeoutMs;
      this.#appPool = new Pool(`http://${appHost.includes(':') ? `[${appHost}]` : appHost}:${appPort}`, {
        connections: 1024,
        pipelining: 1,
        keepAliveTimeout: this.#deps.appPoolIdleMs ?? LOCAL_POOL_IDLE_MS,
        keepAliveMaxTimeout: this.#deps.appPoolIdleMs ?? LOCAL_POOL_IDLE_MS,
        connect: (_opts, cb) => {
          const socket = net.connect({ host: appHost, port: appPort, noDelay: true });
          let settled = false;
          const done = (err: Error | null): void => {
            clearTimeout(timer);
            if (settled) return;
            settled = true;
            if (err === null) (cb as (e: null, s: net.Socket) => void)(null, socket);
            else (cb as (e: Error, s: null) => void)(err, null);
          };
          const timer = setTimeout(() => {
            const err = Object.assign(new Error(`connect timeout after ${connectTimeoutMs} ms`), { code: 'ETIMEDOUT' });
            socket.destroy(err);
            done(err);
          }, connectTimeoutMs);
          socket.once('connect', () => done(null));
          socket.once('error', (err: Error) => done(err));
        },
      });
    }
    return this.#appPool;
  }

  /** Serves HTTP on an authenticated connection. */
  accept(socket: TLSSocket, peer: Peer): void {
    this.#peers.set(socket, peer);
    this.#server.emit('connection', socket);
  }

  close(): void {
    this.#server.closeAllConnections();
    void this.#appPool?.destroy().catch(() => undefined);
  }

  /**
   * Graceful end (SIGTERM): idle connections close now, requests in flight finish and get
   * `Connection: close` (./http-guard.ts drainHttp). Resolves when no connection is left; the
   * pool to the app is released by close(), after.
   */
  drain(): Promise<void> {
    return drainHttp(this.#server);
  }

  #local(res: http.ServerResponse, start: number, status: number, flag: ResponseFlag | null, body: string, headers: Readonly<Record<string, string>> = {}): void {
    answerLocally(res, this.#deps.metrics, start, status, flag, body, { headers });
  }


  #onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const start = performance.now();
    const peer = this.#peers.get(req.socket);
    if (peer === undefined || isPoisoned(req)) {
      res.destroy();
      return;
    }
    const norm = normalizeRequestPath(req.url ?? '');
    if (accessLogOn()) logWhenDone(res, start, { dir: 'inbound', src: peer.service, method: req.method ?? '', path: norm.ok ? norm.path : '-' });
    // An ambiguous or unreadable request ends the connection (http-guard.ts).
    const head = checkRequestHead(req.rawHeaders);
    if (head !== null || !norm.ok) {
      poison(req, res);
      this.#local(res, start, head?.status ?? 400, 'bad_request', head !== null ? head.detail : `bad request path: ${norm.ok ? '' : norm.detail}`);
      return;
    }
    const limiter = this.#deps.limiter;
    if (limiter !== undefined) {
      const admitted = limiter.admit(peer.service);
      if (admitted !== ADMITTED) {
        req.resume();
        if (admitted === OVER_SOURCE) this.#local(res, start, 429, 'source_limit', `too many requests in progress from ${peer.service}`, { 'retry-after': '1' });
        else this.#local(res, start, 503, 'overflow', admitted === OVER_PRESSURE ? PRESSURE_MESSAGE : 'overloaded: too many requests in progress on this listener', { 'retry-after': '1' });
        return;
      }
      res.once('close', () => limiter.release(peer.service));
    }
    const method = req.method ?? 'GET';
    const view = new RequestView(method, norm.path, norm.query, req.rawHeaders);
    const verdict = this.#deps.authorize(peer, view);
    const wait = this.#deps.routingChanged;
    if (!verdict.allow && verdict.pending === true && wait !== undefined) {
      wait(ROUTING_WAIT_MS).then(
        () => this.#decided(req, res, start, peer, norm, view, this.#deps.authorize(peer, view, true)),
        () => this.#decided(req, res, start, peer, norm, view, this.#deps.authorize(peer, view, true)),
      );
      return;
    }
    this.#decided(req, res, start, peer, norm, view, verdict);
  }

  /** The rest of a request once its authorization is known: refuse, or forward to the app. */
  #decided(req: http.IncomingMessage, res: http.ServerResponse, start: number, peer: Peer, norm: { readonly path: string; readonly query: string }, view: RequestView, verdict: AuthzResult): void {
    const method = view.method;
    if (!verdict.allow) {
      req.resume();
      countL7Denied(this.#deps.metrics, verdict.reason);
      // Envoy's jwt_authn answer (401 with a Bearer challenge) for a token that fails verification.
      if (verdict.reason === 'jwt_invalid') this.#local(res, start, 401, null, 'Jwt verification fails', { 'www-authenticate': 'Bearer error="invalid_token"' });
      else this.#local(res, start, 403, 'rbac_denied', 'RBAC: access denied');
      return;
    }
    const drop = verdict.dropHeaders === undefined || verdict.dropHeaders.length === 0 ? DROP_INBOUND : new Set([XFCC, ...verdict.dropHeaders]);
    const headers = forwardHeaders(req.rawHeaders, drop);
    if (verdict.addHeaders !== undefined) headers.push(...verdict.addHeaders);
    headers.push(XFCC, `By=${this.#deps.selfUri()};Hash=${peer.certHash};URI=${peer.uri}`);
    const timeouts = this.#deps.timeouts();
    const path = norm.query === '' ? norm.path : `${norm.path}?${norm.query}`;
    const body = hasBody(req.headers) ? req : null;
    if (body === null) req.resume();
    let stage: 'connecting' | 'sent' | 'done' = 'connecting';
    let requestTimer: NodeJS.Timeout | undefined;
    // LocalRequestTimeoutMs runs from the end of the request body, as Envoy's route timeout.
    afterRequestBody(req, () => {
      if (stage === 'done') return;
      requestTimer = setTimeout(() => {
        if (stage === 'done') return;
        stage = 'done';
        abort(new Error('local request timeout'));
        this.#local(res, start, 504, 'request_timeout', `local app did not answer within ${timeouts.localRequestTimeoutMs} ms`);
      }, timeouts.localRequestTimeoutMs);
    });
    const abort = forward(this.#pool(timeouts.localConnectTimeoutMs), { method, path, headers, body }, res, {
      onStart: () => {
        if (stage === 'connecting') stage = 'sent';
      },
      onResponse: (status, raw) => {
        clearTimeout(requestTimer);
        if (stage === 'done') return null;
        stage = 'done';
        res.once('close', () => recordRequest(this.#deps.metrics, status, (performance.now() - start) / 1000));
        return forwardHeaders(raw);
      },
      onEnd: () => undefined,
      onError: (err, responded) => {
        clearTimeout(requestTimer);
        if (responded) {
          res.destroy();
          return;
        }
        if (stage === 'done') return;
        const wasConnecting = stage === 'connecting';
        stage = 'done';
        if (wasConnecting) this.#local(res, start, 503, 'local_app_unreachable', `local app unreachable: ${err.code ?? err.message} (${this.#deps.appHost}:${this.#deps.appPort})`);
        else this.#local(res, start, 502, 'reset', `local app reset the connection before responding: ${err.code ?? err.message}`);
      },
    });
    // The downstream gave up: stop the app's request too.
    res.once('close', () => {
      if (stage !== 'done') {
        stage = 'done';
        clearTimeout(requestTimer);
        abort(new Error('downstream closed'));
      }
    });
  }
}
