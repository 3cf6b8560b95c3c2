// The public (inbound) listener: terminates mTLS, reads the peer's SPIFFE identity,
// asks the shared intention table, and pipes allowed connections to the local app.
// Runs on: every data-plane worker, each binding the same port with reusePort.
//
// Denied connections are closed before the local app is dialled, so the app never sees a
// byte from them. TLS 1.3 clients finish their side of the handshake before the server has
// checked their certificate, so a refused client may appear "connected" for a moment; the
// decision and the counting happen here, on the server side.

import * as net from 'node:net';
import * as tls from 'node:tls';
import { isAllowed } from '../authz/table.ts';
import { S, deniedSlot, handshakeSlot, type DenyReason } from '../metrics/counters.ts';
import type { InboundSpec, TlsMaterial } from '../workers/messages.ts';
import { serviceIdentity } from './identity.ts';
import { splice } from './pipe.ts';
import { handshakeReason } from './tls-errors.ts';

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
}

export function tlsServerOptions(t: TlsMaterial): tls.SecureContextOptions {
  return { key: t.keyPem, cert: t.certPem, ca: [...t.caPems], minVersion: 'TLSv1.2' };
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
  readonly app: net.Socket;
}

export class InboundListener {
  readonly #deps: InboundDeps;
  readonly #server: tls.Server;
  #trustDomain: string;
  readonly #live = new Set<LiveConnection>();
  #seenGeneration: number;
  readonly #recheck: NodeJS.Timeout;

  constructor(deps: InboundDeps, material: TlsMaterial) {
    this.#deps = deps;
    this.#trustDomain = material.trustDomain;
    this.#server = tls.createServer({
      ...tlsServerOptions(material),
      requestCert: true,
      rejectUnauthorized: true,
      allowHalfOpen: true,
      handshakeTimeout: deps.handshakeTimeoutMs,
    });
    this.#server.on('secureConnection', (socket) => this.#onSecure(socket));
    this.#seenGeneration = deps.policy.generation();
    this.#recheck = setInterval(() => this.recheck(), RECHECK_INTERVAL_MS);
    this.#recheck.unref();
    this.#server.on('tlsClientError', (err) => {
      const c = this.#deps.counters;
      const slot = handshakeSlot(handshakeReason(err));
      c[slot] = (c[slot] as number) + 1;
    });
  }

  listen(port: number): Promise<number> {
    return listenReusePort(this.#server, this.#deps.spec.host, port);
  }

  /** Swaps in a renewed leaf or trust bundle; live connections keep their session. */
  updateTls(material: TlsMaterial): void {
    this.#trustDomain = material.trustDomain;
    this.#server.setSecureContext(tlsServerOptions(material));
  }

  close(): Promise<void> {
    clearInterval(this.#recheck);
    return new Promise((resolve) => this.#server.close(() => resolve()));
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
      if (isAllowed(this.#deps.policy.decide(conn.source, this.#deps.service))) continue;
      this.#live.delete(conn);
      conn.app.destroy();
      this.#deny(conn.downstream, 'late_rejection');
      closed++;
    }
    return closed;
  }

  #deny(socket: net.Socket, reason: DenyReason): void {
    const c = this.#deps.counters;
    const slot = deniedSlot(reason);
    c[slot] = (c[slot] as number) + 1;
    socket.destroy();
  }

  #onSecure(socket: tls.TLSSocket): void {
    socket.on('error', noop);
    const cert = socket.getPeerCertificate(false) as { raw?: Buffer } | null;
    const who = serviceIdentity(cert?.raw, this.#trustDomain);
    if (!who.ok) {
      this.#deny(socket, who.reason);
      return;
    }
    const decision = this.#deps.policy.decide(who.id.service, this.#deps.service);
    const decidedUnder = this.#deps.policy.lastGeneration;
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
      splice(socket, app, () => {
        this.#live.delete(live);
        // Payload bytes: what the app received is what the peer sent, and vice versa.
        c[S.RX_IN] = (c[S.RX_IN] as number) + app.bytesWritten;
        c[S.TX_IN] = (c[S.TX_IN] as number) + app.bytesRead;
        c[S.CLOSED_IN] = (c[S.CLOSED_IN] as number) + 1;
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
