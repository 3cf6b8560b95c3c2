// An upstream listener: plaintext from the local app on 127.0.0.1:<port>, forwarded over
// mTLS to a healthy instance of the upstream service, whose SPIFFE ID must be that service.
// Runs on: every data-plane worker, each binding the same port with reusePort.
// Limits (./limits.ts): a connection over -max-upstream-connections (this listener) or the
// proxy's -max-connections is closed at accept and counted; a tcp connection with no byte
// either way for -tcp-idle-timeout is closed and counted.

import * as net from 'node:net';
import * as tls from 'node:tls';
import { S, deniedSlot, type DenyReason } from '../metrics/counters.ts';
import { accessLogOn, logTcp } from '../metrics/access-log.ts';
import type { Endpoint, TlsMaterial, UpstreamRouting, UpstreamSpec } from '../workers/messages.ts';
import { HttpUpstream } from './http-outbound.ts';
import { expectServer, IDENTITY_MISMATCH } from './identity.ts';
import { listenReusePort, tlsServerOptions } from './inbound.ts';
import { splice } from './pipe.ts';
import type { LoadPressure } from './pressure.ts';
import { ADMITTED, DEFAULT_LIMITS, OPEN_GATE, RequestLimiter, connectionRefusal, perWorker, type ConnectionGate, type ProxyLimits } from './limits.ts';

export interface OutboundDeps {
  readonly spec: UpstreamSpec;
  readonly counters: Float64Array;
  readonly connectTimeoutMs: number;
  /** This listener's L7 counter block. */
  readonly l7: Float64Array;
  /**
   * Resume TLS sessions to the upstream's sidecars (tcp upstreams; default true). With it a
   * new connection to an instance seen recently costs an abbreviated handshake: no
   * certificate signature, no chain verification on either side.
   */
  readonly tlsSessionResumption?: boolean;
  /** Connection and request limits, idle timeouts; absent: DEFAULT_LIMITS. */
  readonly limits?: ProxyLimits;
  /** This listener's connection gate (./limits.ts); absent: none. */
  readonly connections?: ConnectionGate;
  /** Workers sharing the request limit (each admits its share); absent: 1. */
  readonly workers?: number;
  /** The worker's load-shedding judge (./pressure.ts); absent: never sheds. */
  readonly pressure?: LoadPressure;
}

/** How many sessions one upstream listener keeps (one per instance; LRU beyond that). */
export const TLS_SESSION_CACHE_SIZE = 256;

/**
 * A small LRU of TLS sessions by instance and expected identity, for `tls.connect({ session })`.
 * Keyed by the expected service too: Node skips `checkServerIdentity` on a resumed session,
 * so a session is only ever offered to the identity that was verified when it was made.
 */
export class TlsSessionCache {
  readonly #max: number;
  readonly #sessions = new Map<string, Buffer>();

  constructor(max = TLS_SESSION_CACHE_SIZE) {
    this.#max = max;
  }

  get size(): number {
    return this.#sessions.size;
  }

  get(key: string): Buffer | undefined {
    const s = this.#sessions.get(key);
    if (s !== undefined) {
      // Most recently used last: Map iteration order is insertion order.
      this.#sessions.delete(key);
      this.#sessions.set(key, s);
    }
    return s;
  }

  set(key: string, session: Buffer): void {
    this.#sessions.delete(key);
    this.#sessions.set(key, session);
    if (this.#sessions.size > this.#max) {
      const oldest = this.#sessions.keys().next();
      if (oldest.done !== true) this.#sessions.delete(oldest.value);
    }
  }

  delete(key: string): void {
    this.#sessions.delete(key);
  }

  clear(): void {
    this.#sessions.clear();
  }
}

/**
 * The instances a tcp upstream connects to: the chain's one target (resolver only), or its
 * first failover target that has instances.
 */
export function l4Endpoints(r: UpstreamRouting): readonly Endpoint[] {
  const id = r.chain.routes[0]?.action.splits[0]?.targetId;
  if (id === undefined) return [];
  const own = r.endpoints[id] ?? [];
  if (own.length > 0) return own;
  for (const f of r.chain.targets[id]?.failover ?? []) {
    const eps = r.endpoints[f] ?? [];
    if (eps.length > 0) return eps;
  }
  return [];
}

export class UpstreamListener {
  readonly #deps: OutboundDeps;
  readonly #server: net.Server;
  #endpoints: readonly Endpoint[];
  /** Built once per certificate change, not per connection (context creation costs ~ms). */
  #context: tls.SecureContext;
  #checkServer: (host: string, cert: { raw?: Buffer }) => Error | undefined;
  #trustDomain: string;
  #http: HttpUpstream;
  #protocol: string;
  /** null: resumption off (-tls-session-resumption=false). */
  readonly #sessions: TlsSessionCache | null;
  readonly #gate: ConnectionGate;
  readonly #tcpIdleMs: number;

  constructor(deps: OutboundDeps, material: TlsMaterial, routing: UpstreamRouting) {
    this.#deps = deps;
    this.#endpoints = l4Endpoints(routing);
    this.#protocol = routing.chain.protocol;
    this.#context = tls.createSecureContext(tlsServerOptions(material));
    const limits = deps.limits ?? DEFAULT_LIMITS;
    this.#gate = deps.connections ?? OPEN_GATE;
    this.#tcpIdleMs = limits.tcpIdleTimeoutMs;
    this.#http = new HttpUpstream({
      name: deps.spec.name,
      metrics: deps.l7,
      tls: () => ({ context: this.#context, trustDomain: this.#trustDomain }),
      keepAliveMs: limits.httpIdleTimeoutMs,
      poolIdleMs: limits.upstreamIdleTimeoutMs,
      limiter: new RequestLimiter(perWorker(limits.maxConcurrentRequests, deps.workers ?? 1), Infinity, deps.pressure),
    });
    this.#http.update(routing);
    this.#trustDomain = material.trustDomain;
    this.#checkServer = expectServer(deps.spec.name, material.trustDomain);
    this.#sessions = deps.tlsSessionResumption === false ? null : new TlsSessionCache();
    this.#server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => this.#onConnection(s));
  }

  listen(port: number): Promise<number> {
    return listenReusePort(this.#server, this.#deps.spec.host, port);
  }

  updateTls(material: TlsMaterial): void {
    this.#context = tls.createSecureContext(tlsServerOptions(material));
    // Sessions were verified against the old trust bundle and carry the old leaf: start over.
    this.#sessions?.clear();
    if (material.trustDomain !== this.#trustDomain) {
      this.#trustDomain = material.trustDomain;
      this.#checkServer = expectServer(this.#deps.spec.name, material.trustDomain);
    }
  }

  /** A new chain or new instances; the protocol applies to connections accepted from now on. */
  updateRouting(routing: UpstreamRouting): void {
    this.#endpoints = l4Endpoints(routing);
    this.#protocol = routing.chain.protocol;
    this.#http.update(routing);
  }

  close(): Promise<void> {
    this.#http.close();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  /**
   * Graceful end (SIGTERM): stops accepting at once; HTTP requests in flight finish (answered
   * with `Connection: close`; idle connections close now), tcp connections run until they
   * end. Resolves when no connection is left. The caller bounds the wait: past its deadline
   * it calls close() and ends the thread, which cuts what is still open.
   */
  async drain(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await Promise.all([this.#http.drain(), closed]);
  }

  #deny(socket: net.Socket, reason: DenyReason): void {
    const c = this.#deps.counters;
    const slot = deniedSlot(reason);
    c[slot] = (c[slot] as number) + 1;
    socket.destroy();
  }

  #onConnection(client: net.Socket): void {
    const opened = performance.now();
    client.on('error', noop);
    const admitted = this.#gate.tryOpen();
    if (admitted !== ADMITTED) {
      this.#deny(client, connectionRefusal(admitted));
      return;
    }
    const gate = this.#gate;
    client.once('close', () => gate.close());
    if (this.#protocol !== 'tcp') {
      const c = this.#deps.counters;
      c[S.ACCEPTED_OUT] = (c[S.ACCEPTED_OUT] as number) + 1;
      client.once('close', () => {
        c[S.RX_OUT] = (c[S.RX_OUT] as number) + client.bytesRead;
        c[S.TX_OUT] = (c[S.TX_OUT] as number) + client.bytesWritten;
        c[S.CLOSED_OUT] = (c[S.CLOSED_OUT] as number) + 1;
      });
      this.#http.accept(client);
      return;
    }
    const eps = this.#endpoints;
    if (eps.length === 0) {
      this.#deny(client, 'no_healthy_upstream');
      return;
    }
    // tcp upstreams: a uniform random pick per connection, as Consul's built-in proxy does;
    // HTTP upstreams use the resolver's LoadBalancer policy per request (./http-outbound.ts).
    const ep = eps[Math.floor(Math.random() * eps.length)] as Endpoint;
    const checkServer = ep.service === this.#deps.spec.name ? this.#checkServer : expectServer(ep.service, this.#trustDomain);
    const sessions = this.#sessions;
    const key = sessions === null ? '' : `${ep.service}@${ep.host}:${ep.port}${ep.sni === undefined ? '' : `/${ep.sni}`}`;
    const session = sessions?.get(key);
    const upstream = tls.connect({
      host: ep.host,
      port: ep.port,
      ...(ep.sni === undefined ? {} : { servername: ep.sni }),
      secureContext: this.#context,
      checkServerIdentity: checkServer,
      ...(session === undefined ? {} : { session }),
    });
    // TLS 1.3 tickets arrive after the handshake; keep the newest one for this instance,
    // unless the certificates changed meanwhile (updateTls cleared the cache).
    const context = this.#context;
    if (sessions !== null) {
      upstream.on('session', (s: Buffer) => {
        if (context === this.#context) sessions.set(key, s);
      });
    }
    upstream.setTimeout(this.#deps.connectTimeoutMs);
    const failed = (err?: Error & { code?: string }): void => {
      sessions?.delete(key);
      upstream.destroy();
      this.#deny(client, err?.code === IDENTITY_MISMATCH ? 'upstream_identity_mismatch' : 'upstream_connect_failed');
    };
    upstream.once('timeout', failed);
    upstream.once('error', failed);
    // The app may give up while the upstream handshake is still running.
    const abandoned = (): void => void upstream.destroy();
    client.once('close', abandoned);
    upstream.once('secureConnect', () => {
      upstream.setTimeout(0);
      upstream.off('timeout', failed);
      upstream.off('error', failed);
      client.off('close', abandoned);
      const c = this.#deps.counters;
      c[S.ACCEPTED_OUT] = (c[S.ACCEPTED_OUT] as number) + 1;
      // Every byte either way passes through the app's socket, so its timer is the idle timer.
      if (this.#tcpIdleMs > 0) {
        client.setTimeout(this.#tcpIdleMs);
        client.once('timeout', () => {
          c[S.IDLE_OUT] = (c[S.IDLE_OUT] as number) + 1;
          upstream.destroy();
          client.destroy();
        });
      }
      splice(client, upstream, () => {
        c[S.RX_OUT] = (c[S.RX_OUT] as number) + client.bytesRead;
        c[S.TX_OUT] = (c[S.TX_OUT] as number) + client.bytesWritten;
        c[S.CLOSED_OUT] = (c[S.CLOSED_OUT] as number) + 1;
        if (accessLogOn()) logTcp({ dir: 'outbound', upstream: this.#deps.spec.name, rx: client.bytesRead, tx: client.bytesWritten, ms: performance.now() - opened });
      });
      client.resume();
    });
  }
}

function noop(): void {}
