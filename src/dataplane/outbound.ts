// An upstream listener: plaintext from the local app on 127.0.0.1:<port>, forwarded over
// mTLS to a healthy instance of the upstream service, whose SPIFFE ID must be that service.
// Runs on: every data-plane worker, each binding the same port with reusePort.

import * as net from 'node:net';
import * as tls from 'node:tls';
import { S, deniedSlot, type DenyReason } from '../metrics/counters.ts';
import type { Endpoint, TlsMaterial, UpstreamSpec } from '../workers/messages.ts';
import { expectServer, IDENTITY_MISMATCH } from './identity.ts';
import { listenReusePort, tlsServerOptions } from './inbound.ts';
import { splice } from './pipe.ts';

export interface OutboundDeps {
  readonly spec: UpstreamSpec;
  readonly counters: Float64Array;
  readonly connectTimeoutMs: number;
}

export class UpstreamListener {
  readonly #deps: OutboundDeps;
  readonly #server: net.Server;
  #endpoints: readonly Endpoint[] = [];
  /** Built once per certificate change, not per connection (context creation costs ~ms). */
  #context: tls.SecureContext;
  #checkServer: (host: string, cert: { raw?: Buffer }) => Error | undefined;
  #trustDomain: string;

  constructor(deps: OutboundDeps, material: TlsMaterial, endpoints: readonly Endpoint[]) {
    this.#deps = deps;
    this.#endpoints = endpoints;
    this.#context = tls.createSecureContext(tlsServerOptions(material));
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

  updateEndpoints(endpoints: readonly Endpoint[]): void {
    this.#endpoints = endpoints;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  #deny(socket: net.Socket, reason: DenyReason): void {
    const c = this.#deps.counters;
    const slot = deniedSlot(reason);
    c[slot] = (c[slot] as number) + 1;
    socket.destroy();
  }

  #onConnection(client: net.Socket): void {
    client.on('error', noop);
    const eps = this.#endpoints;
    if (eps.length === 0) {
      this.#deny(client, 'no_healthy_upstream');
      return;
    }
    // Uniform random pick, as Consul's built-in proxy does; the L7 issue brings balancing
    // policies and retries to other instances.
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
      });
      client.resume();
    });
  }
}

function noop(): void {}
