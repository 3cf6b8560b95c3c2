// The public (inbound) listener: terminates mTLS, reads the peer's SPIFFE identity,
// asks the shared intention table, and pipes allowed connections to the local app.
// Runs on: every data-plane worker, each binding the same port with reusePort.
//
// Denied connections are closed before the local app is dialled, so the app never sees a
// byte from them. TLS 1.3 clients finish their side of the handshake before the server has
// checked their certificate, so a refused client may appear "connected" for a moment; the
// decision and the counting happen here, on the server side.
//
// TLS policy (tlsServerOptions, also used by the upstream listeners for their client side):
// TLS 1.3 only by default; `-tls-min-version TLSv1_2` also allows TLS 1.2, and then only
// ECDHE key exchange with AEAD ciphers (AES-GCM, CHACHA20-POLY1305). No renegotiation.
// Handshakes: a plain TCP listener accepts and hands each socket to the TLS server, unless
// this worker already has `maxConcurrentHandshakes` handshakes in progress: then the socket
// is closed at once and counted as `overloaded`. A handshake still unfinished after
// `handshakeTimeoutMs` is closed by Node and counted as `timeout`.
// Before that, the connection limits (./limits.ts): a socket over -max-inbound-connections or
// the proxy's -max-connections is closed at accept and counted, with no handshake work done.
// A tcp connection with no byte either way for -tcp-idle-timeout is closed and counted.

import { constants as cryptoConstants, createHash } from 'node:crypto';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { compileL7Sources, type L7Programs, type L7Request } from '../authz/l7.ts';
import { JwtProviders, verifiedJwtCheck } from '../authz/jwt-verify.ts';
import { Decision, isAllowed } from '../authz/table.ts';
import { S, deniedSlot, handshakeSlot, type DenyReason, type HandshakeReason } from '../metrics/counters.ts';
import { accessLogOn, logTcp } from '../metrics/access-log.ts';
import type { InboundRouting, InboundSpec, TlsMaterial } from '../workers/messages.ts';
import { HttpInbound, type AuthzRequest, type AuthzResult, type Peer } from './http-inbound.ts';
import { serviceIdentity } from './identity.ts';
import { serviceSpiffeId, type ServiceId } from '../ca/spiffe.ts';
import { splice } from './pipe.ts';
import { handshakeReason } from './tls-errors.ts';
import type { LoadPressure } from './pressure.ts';
import { ADMITTED, DEFAULT_LIMITS, OPEN_GATE, RequestLimiter, connectionRefusal, perWorker, type ConnectionGate, type ProxyLimits } from './limits.ts';

/** What the data plane needs from a table reader: PolicyTableReader or its WASM twin. */
export interface PolicyProbe {
  decide(source: string, destination: string): number;
  generation(): number;
  readonly lastGeneration: number;
}

export interface InboundDeps {
  readonly spec: InboundSpec;
  readonly service: string;
  readonly policy: PolicyProbe;
  readonly counters: Float64Array;
  readonly connectTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
  /** Handshakes this worker runs at once on the public listener; absent: DEFAULT_MAX_CONCURRENT_HANDSHAKES. */
  readonly maxConcurrentHandshakes?: number;
  /** This listener's L7 counter block. */
  readonly l7: Float64Array;
  /** Connection and request limits, idle timeouts; absent: DEFAULT_LIMITS. */
  readonly limits?: ProxyLimits;
  /** This listener's connection gate (./limits.ts); absent: none. */
  readonly connections?: ConnectionGate;
  /** Workers sharing the request limits (each admits its share); absent: 1. */
  readonly workers?: number;
  /** The worker's load-shedding judge (./pressure.ts); absent: never sheds. */
  readonly pressure?: LoadPressure;
}

/** The lowest TLS version a mesh endpoint speaks: TLS 1.3 unless configured otherwise. */
export type MeshTlsVersion = 'TLSv1.2' | 'TLSv1.3';

export const DEFAULT_MAX_CONCURRENT_HANDSHAKES = 1024;

/**
 * TLS 1.3 suites (all AEAD; TLS_AES_128_CCM* are left out), then the TLS 1.2 suites allowed
 * with -tls-min-version TLSv1_2: ECDHE only (forward secrecy), AEAD only (no CBC, no SHA-1
 * MAC), the list Consul's Envoy config uses for TLS 1.2.
 */
export const MESH_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** Key-exchange groups offered and accepted, in order of preference. */
const MESH_GROUPS = 'X25519:P-256:P-384';

// One value per worker, set once by the worker at start (configureTls), before any listener.
let minVersion: MeshTlsVersion = 'TLSv1.3';

/** Sets this thread's lowest TLS version for every listener created afterwards. */
export function configureTls(opts: { readonly minVersion?: MeshTlsVersion }): void {
  minVersion = opts.minVersion ?? 'TLSv1.3';
}

export function tlsServerOptions(t: TlsMaterial): tls.SecureContextOptions {
  return {
    key: t.keyPem,
    cert: t.certPem,
    ca: [...t.caPems],
    minVersion,
    maxVersion: 'TLSv1.3',
    ciphers: MESH_CIPHERS,
    ecdhCurve: MESH_GROUPS,
    honorCipherOrder: true,
    secureOptions: cryptoConstants.SSL_OP_NO_RENEGOTIATION,
  };
}

/**
 * How often a worker looks for a new table generation to re-check its open connections
 * (one Atomics.load per tick; the re-check itself runs only when the generation moved).
 * 250 ms keeps "closed within one second of the change" with room to spare.
 */
export const RECHECK_INTERVAL_MS = 250;

interface LiveConnection {
  readonly source: string;
  readonly downstream: tls.TLSSocket;
  /** null for an HTTP connection (requests go through the pool to the app). */
  readonly app: net.Socket | null;
}

const ALLOW: AuthzResult = { allow: true };
const L4_DENY: AuthzResult = { allow: false, reason: 'l4_deny' };
const PERMISSION_DENY: AuthzResult = { allow: false, reason: 'permission_deny' };
const DEFAULT_DENY: AuthzResult = { allow: false, reason: 'default_deny' };
const L7_PENDING: AuthzResult = { allow: false, reason: 'default_deny', pending: true };
const JWT_DENY: AuthzResult = { allow: false, reason: 'jwt_invalid' };

/** The routing parts L7 programs and JWT verifiers are compiled from, for change detection. */
function l7Key(r: InboundRouting): string {
  return JSON.stringify([r.intentionSources, r.intentionJwt, r.jwtProviders ?? []]);
}

function decisionCode(d: number): number {
  return d & 7;
}

export class InboundListener {
  readonly #deps: InboundDeps;
  /** The TLS server never listens itself: #front accepts and hands sockets over. */
  readonly #server: tls.Server;
  readonly #front: net.Server;
  /** Handshakes handed to #server and not yet finished or failed. */
  #handshaking = 0;
  readonly #maxHandshakes: number;
  /** TLS sockets already settled (secureConnection or tlsClientError), so none counts twice. */
  readonly #settled = new WeakSet<tls.TLSSocket>();
  #trustDomain: string;
  readonly #live = new Set<LiveConnection>();
  #seenGeneration: number;
  readonly #recheck: NodeJS.Timeout;
  #routing: InboundRouting;
  #l7Key: string;
  #programs!: L7Programs;
  /** This service's jwt-provider verifiers (null: none configured). */
  #jwt: JwtProviders | null = null;
  /** The allow result: ALLOW, or one that strips incoming copies of JWT forwarding headers. */
  #allow: AuthzResult = ALLOW;
  #routingWaiters: (() => void)[] = [];
  #selfUri: string;
  readonly #http: HttpInbound;
  readonly #gate: ConnectionGate;
  readonly #tcpIdleMs: number;

  constructor(deps: InboundDeps, material: TlsMaterial, routing: InboundRouting) {
    this.#deps = deps;
    this.#trustDomain = material.trustDomain;
    this.#selfUri = material.uri;
    this.#routing = routing;
    this.#l7Key = l7Key(routing);
    this.#compileL7(routing);
    const limits = deps.limits ?? DEFAULT_LIMITS;
    const workers = deps.workers ?? 1;
    this.#gate = deps.connections ?? OPEN_GATE;
    this.#tcpIdleMs = limits.tcpIdleTimeoutMs;
    this.#http = new HttpInbound({
      appHost: deps.spec.appHost,
      appPort: deps.spec.appPort,
      selfUri: () => this.#selfUri,
      metrics: deps.l7,
      timeouts: () => this.#routing,
      authorize: (peer, req, final) => this.authorize(peer.service, req, final),
      routingChanged: (timeoutMs) => this.#routingChanged(timeoutMs),
      keepAliveMs: limits.httpIdleTimeoutMs,
      appPoolIdleMs: limits.upstreamIdleTimeoutMs,
      limiter: new RequestLimiter(perWorker(limits.maxConcurrentRequests, workers), perWorker(limits.maxRequestsPerSource, workers), deps.pressure),
    });
    this.#maxHandshakes = deps.maxConcurrentHandshakes ?? DEFAULT_MAX_CONCURRENT_HANDSHAKES;
    this.#server = tls.createServer({
      ...tlsServerOptions(material),
      requestCert: true,
      rejectUnauthorized: true,
      allowHalfOpen: true,
      handshakeTimeout: deps.handshakeTimeoutMs,
    });
    // allowHalfOpen here is what the TLS sockets inherit from the raw ones.
    this.#front = net.createServer({ allowHalfOpen: true }, (raw) => this.#onTcp(raw));
    this.#server.on('secureConnection', (socket) => {
      this.#settle(socket);
      this.#onSecure(socket);
    });
    this.#seenGeneration = deps.policy.generation();
    this.#recheck = setInterval(() => this.recheck(), RECHECK_INTERVAL_MS);
    this.#recheck.unref();
    this.#server.on('tlsClientError', (err, socket) => {
      this.#settle(socket);
      // A chain the server refused arrives as a plain reset; the verify code says why.
      this.#countHandshake(handshakeReason(err, socket.authorizationError));
      // Node reports a handshake timeout but leaves the socket open: close it (and any other).
      socket.destroy();
    });
  }

  listen(port: number): Promise<number> {
    return listenReusePort(this.#front, this.#deps.spec.host, port);
  }

  /** Handshakes in progress on this worker's public listener. */
  get handshaking(): number {
    return this.#handshaking;
  }

  #onTcp(raw: net.Socket): void {
    const admitted = this.#gate.tryOpen();
    if (admitted !== ADMITTED) {
      raw.on('error', noop);
      raw.destroy();
      this.#countDenied(connectionRefusal(admitted));
      return;
    }
    const gate = this.#gate;
    raw.once('close', () => gate.close());
    if (this.#handshaking >= this.#maxHandshakes) {
      raw.on('error', noop);
      raw.destroy();
      this.#countHandshake('overloaded');
      return;
    }
    this.#handshaking++;
    this.#server.emit('connection', raw);
  }

  /** Node ends every handed-over socket's handshake with exactly one of the two events. */
  #settle(socket: tls.TLSSocket): void {
    if (this.#settled.has(socket)) return;
    this.#settled.add(socket);
    this.#handshaking--;
  }

  #countHandshake(reason: HandshakeReason): void {
    const c = this.#deps.counters;
    const slot = handshakeSlot(reason);
    c[slot] = (c[slot] as number) + 1;
  }

  /** Swaps in a renewed leaf or trust bundle; live connections keep their session. */
  updateTls(material: TlsMaterial): void {
    this.#trustDomain = material.trustDomain;
    this.#selfUri = material.uri;
    this.#server.setSecureContext(tlsServerOptions(material));
  }

  /** New HTTP settings or L7 intentions: L7 programs are compiled here, once per change. */
  updateRouting(routing: InboundRouting): void {
    // Structured clone gives every snapshot fresh arrays, so compare by content.
    const key = l7Key(routing);
    if (key !== this.#l7Key) {
      this.#l7Key = key;
      this.#compileL7(routing);
    }
    this.#routing = routing;
    const waiters = this.#routingWaiters;
    this.#routingWaiters = [];
    for (const w of waiters) w();
  }

  /** Resolves at the next updateRouting(), or after `timeoutMs`. */
  #routingChanged(timeoutMs: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, timeoutMs);
      this.#routingWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  /** L7 programs and JWT verifiers (their token caches start empty). */
  #compileL7(routing: InboundRouting): void {
    const providers = routing.jwtProviders ?? [];
    const jwt = providers.length === 0 ? null : new JwtProviders(providers);
    this.#jwt = jwt;
    this.#allow = jwt === null || jwt.forwardingHeaders.length === 0 ? ALLOW : { allow: true, dropHeaders: jwt.forwardingHeaders };
    this.#programs = compileL7Sources(routing.intentionSources, { entryJwt: routing.intentionJwt, jwtCheck: verifiedJwtCheck });
  }

  close(): Promise<void> {
    clearInterval(this.#recheck);
    this.#http.close();
    return new Promise((resolve) => this.#front.close(() => resolve()));
  }

  /**
   * Graceful end (SIGTERM): stops accepting at once; HTTP connections finish the request in
   * flight (answered with `Connection: close`; idle ones close now); tcp connections run
   * until they end, still re-checked against new intention tables. Resolves when no
   * connection is left, then releases the rest. The caller bounds the wait: past
   * its deadline it calls close() and ends the thread, which cuts what is still open.
   */
  async drain(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#front.close(() => resolve()));
    await Promise.all([this.#http.drain(), closed]);
    clearInterval(this.#recheck);
    this.#http.close();
  }

  /**
   * One request's decision: the shared table first (an L4 allow or deny decides), then, when
   * the matching intention is an L7 one, its permissions top-down; no matching permission
   * gives the default policy. Evaluated per request, so a new table or new permissions apply
   * to the next request on an open connection.
   *
   * When the L7 intention names jwt-providers, tokens are verified first (src/authz/jwt-verify.ts):
   * a token none of them verifies is `jwt_invalid` (401); verified payloads feed the
   * permissions' JWT requirements; no token leaves every requirement unmet.
   *
   * `final` false: when the table names an L7 intention this worker has no permissions for
   * yet, the answer is `pending` (HttpInbound waits for the next routing snapshot and asks
   * again with `final`).
   */
  authorize(source: string, req: AuthzRequest, final = false): AuthzResult {
    const d = this.#deps.policy.decide(source, this.#deps.service);
    if (isAllowed(d)) return this.#allow;
    if (decisionCode(d) !== Decision.L7_DENY) return L4_DENY;
    const program = this.#programs.programFor(source);
    if (program === null) {
      // The table says an L7 intention decides but the permissions have not reached this
      // worker yet (they travel in the routing snapshot): wait for it once, then decide.
      if (!final) return L7_PENDING;
      return this.#routing.defaultAllow ? this.#allow : DEFAULT_DENY;
    }
    let view: L7Request = req;
    let allow = this.#allow;
    const jwt = this.#jwt;
    if (jwt !== null && program.jwtProviders.length > 0) {
      const a = jwt.authenticate(program.jwtProviders, req);
      if (a.kind === 'invalid') return JWT_DENY;
      if (a.kind === 'verified') {
        view = { method: req.method, path: req.path, header: (name) => req.header(name), jwt: a.payloads };
        if (a.removeHeaders.length > 0 || a.addHeaders.length > 0) {
          allow = { allow: true, dropHeaders: [...jwt.forwardingHeaders, ...a.removeHeaders], addHeaders: a.addHeaders };
        }
      }
    }
    const r = program.evaluate(view, this.#routing.defaultAllow);
    if (r.allow) return allow;
    return r.permissionIndex < 0 ? DEFAULT_DENY : PERMISSION_DENY;
  }

  /**
   * Live enforcement: when a new table generation has been published, every open connection
   * is decided again and those now denied are closed and counted as `late_rejection`.
   * Returns how many were closed.
   */
  recheck(): number {
    const g = this.#deps.policy.generation();
    if (g === this.#seenGeneration) return 0;
    this.#seenGeneration = g;
    let closed = 0;
    for (const conn of this.#live) {
      const d = this.#deps.policy.decide(conn.source, this.#deps.service);
      // An HTTP connection stays open: its requests are decided one by one (403 when denied).
      if (isAllowed(d) || conn.app === null) continue;
      this.#live.delete(conn);
      conn.app?.destroy();
      this.#deny(conn.downstream, 'late_rejection');
      closed++;
    }
    return closed;
  }

  #deny(socket: net.Socket, reason: DenyReason): void {
    this.#countDenied(reason);
    socket.destroy();
  }

  #countDenied(reason: DenyReason): void {
    const c = this.#deps.counters;
    const slot = deniedSlot(reason);
    c[slot] = (c[slot] as number) + 1;
  }

  #acceptHttp(socket: tls.TLSSocket, id: ServiceId, der: Buffer, decidedUnder: number): void {
    const source = id.service;
    const c = this.#deps.counters;
    c[S.ACCEPTED_IN] = (c[S.ACCEPTED_IN] as number) + 1;
    const live: LiveConnection = { source, downstream: socket, app: null };
    this.#live.add(live);
    if (decidedUnder !== this.#seenGeneration) this.#seenGeneration = -1;
    socket.once('close', () => {
      this.#live.delete(live);
      c[S.RX_IN] = (c[S.RX_IN] as number) + socket.bytesRead;
      c[S.TX_IN] = (c[S.TX_IN] as number) + socket.bytesWritten;
      c[S.CLOSED_IN] = (c[S.CLOSED_IN] as number) + 1;
    });
    const peer: Peer = { service: source, uri: serviceSpiffeId(id.trustDomain, id.namespace, id.datacenter, id.service, id.partition), certHash: createHash('sha256').update(der).digest('hex') };
    this.#http.accept(socket, peer);
  }

  #onSecure(socket: tls.TLSSocket): void {
    const opened = performance.now();
    socket.on('error', noop);
    // Only the DER is needed: getPeerX509Certificate().raw costs ~10 µs here against
    // getPeerCertificate()'s ~100 µs, which builds a whole JavaScript object of the certificate
    // (10 % of the server sidecar's time per handshake in the bench's profile).
    const raw = socket.getPeerX509Certificate()?.raw;
    const who = serviceIdentity(raw, this.#trustDomain);
    if (!who.ok) {
      this.#deny(socket, who.reason);
      return;
    }
    const decision = this.#deps.policy.decide(who.id.service, this.#deps.service);
    const decidedUnder = this.#deps.policy.lastGeneration;
    if (this.#routing.protocol !== 'tcp') {
      // HTTP: every request is decided alone (the table first, then the source's L7 program),
      // so a caller an intention denies gets Consul's `403 RBAC: access denied` per request, as
      // Envoy's HTTP RBAC filter answers, rather than a closed connection its proxy would report
      // as an upstream failure (502/503) and might retry elsewhere.
      this.#acceptHttp(socket, who.id, raw as Buffer, decidedUnder);
      return;
    }
    if (!isAllowed(decision)) {
      this.#deny(socket, 'intention');
      return;
    }
    const { appHost, appPort } = this.#deps.spec;
    const app = net.connect({ host: appHost, port: appPort, allowHalfOpen: true });
    app.setTimeout(this.#deps.connectTimeoutMs);
    const failed = (): void => {
      app.destroy();
      this.#deny(socket, 'local_app_unreachable');
    };
    app.once('timeout', failed);
    app.once('error', failed);
    app.once('connect', () => {
      app.setTimeout(0);
      app.off('timeout', failed);
      app.off('error', failed);
      const c = this.#deps.counters;
      c[S.ACCEPTED_IN] = (c[S.ACCEPTED_IN] as number) + 1;
      const live: LiveConnection = { source: who.id.service, downstream: socket, app };
      this.#live.add(live);
      // Decided under an older table than the last re-check saw: make the next tick re-scan.
      if (decidedUnder !== this.#seenGeneration) this.#seenGeneration = -1;
      // Every byte either way passes through the downstream socket, so its timer is the idle timer.
      if (this.#tcpIdleMs > 0) {
        socket.setTimeout(this.#tcpIdleMs);
        socket.once('timeout', () => {
          c[S.IDLE_IN] = (c[S.IDLE_IN] as number) + 1;
          app.destroy();
          socket.destroy();
        });
      }
      splice(socket, app, () => {
        this.#live.delete(live);
        // Payload bytes: what the app received is what the peer sent, and vice versa.
        c[S.RX_IN] = (c[S.RX_IN] as number) + app.bytesWritten;
        c[S.TX_IN] = (c[S.TX_IN] as number) + app.bytesRead;
        c[S.CLOSED_IN] = (c[S.CLOSED_IN] as number) + 1;
        if (accessLogOn()) logTcp({ dir: 'inbound', src: who.id.service, rx: app.bytesWritten, tx: app.bytesRead, ms: performance.now() - opened });
      });
    });
  }
}

/** Binds with SO_REUSEPORT so every worker accepts on the same port (Node >= 22.12). */
export function listenReusePort(server: net.Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port, reusePort: true }, () => {
      server.off('error', reject);
      resolve((server.address() as net.AddressInfo).port);
    });
  });
}

function noop(): void {}
