// An upstream listener: plaintext from the local app on 127.0.0.1:<port>, forwarded over
// mTLS to a healthy instance of the upstream service, whose SPIFFE ID must be that service.
// Runs on: every data-plane worker, each binding the same port with reusePort.

import * as net from 'node:net';
import * as tls from 'node:tls';
import { S, deniedSlot, type DenyReason } from '../metrics/counters.ts';
import { accessLogOn, logTcp } from '../metrics/access-log.ts';
import type { Endpoint, TlsMaterial, UpstreamRouting, UpstreamSpec } from '../workers/messages.ts';
import { HttpUpstream } from './http-outbound.ts';
import { expectServer, IDENTITY_MISMATCH } from './identity.ts';
import { listenReusePort, tlsServerOptions } from './inbound.ts';
import { splice } from './pipe.ts';

export interface OutboundDeps {
  readonly spec: UpstreamSpec;
  readonly counters: Float64Array;
  readonly connectTimeoutMs: number;
  /** This listener's L7 counter block. */
  readonly l7: Float64Array;
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

  constructor(deps: OutboundDeps, material: TlsMaterial, routing: UpstreamRouting) {
    this.#deps = deps;
    this.#endpoints = l4Endpoints(routing);
    this.#protocol = routing.chain.protocol;
    this.#context = tls.createSecureContext(tlsServerOptions(material));
    this.#http = new HttpUpstream({ name: deps.spec.name, metrics: deps.l7, tls: () => ({ context: this.#context, trustDomain: this.#trustDomain }) });
    this.#http.update(routing);
    this.#trustDomain = material.trustDomain;
    this.#checkServer = expectServer(deps.spec.name, material.trustDomain);
    this.#server = net.createServer({ allowHalfOpen: true, pauseOnConnect: true }, (s) => this.#onConnection(s));
  }

  listen(port: number): Promise<number> {
    return listenReusePort(this.#server, this.#deps.spec.host, port);
  }

  updateTls(material: TlsMaterial): void {
    this.#context = tls.createSecureContext(tlsServerOptions(material));
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

  #deny(socket: net.Socket, reason: DenyReason): void {
    const c = this.#deps.counters;
    const slot = deniedSlot(reason);
    c[slot] = (c[slot] as number) + 1;
    socket.destroy();
  }

  #onConnection(client: net.Socket): void {
    const opened = performance.now();
    client.on('error', noop);
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
    const upstream = tls.connect({
      host: ep.host,
      port: ep.port,
      secureContext: this.#context,
      checkServerIdentity: checkServer,
    });
    upstream.setTimeout(this.#deps.connectTimeoutMs);
    const failed = (err?: Error & { code?: string }): void => {
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
