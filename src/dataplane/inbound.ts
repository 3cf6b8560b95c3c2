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
import type { PolicyTableReader } from '../authz/table.ts';
import { isAllowed } from '../authz/table.ts';
import { S, deniedSlot, handshakeSlot, type DenyReason } from '../metrics/counters.ts';
import type { InboundSpec, TlsMaterial } from '../workers/messages.ts';
import { serviceIdentity } from './identity.ts';
import { splice } from './pipe.ts';
import { handshakeReason } from './tls-errors.ts';

export interface InboundDeps {
  readonly spec: InboundSpec;
  readonly service: string;
  readonly policy: PolicyTableReader;
  readonly counters: Float64Array;
  readonly connectTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
}

export function tlsServerOptions(t: TlsMaterial): tls.SecureContextOptions {
  return { key: t.keyPem, cert: t.certPem, ca: [...t.caPems], minVersion: 'TLSv1.2' };
}

export class InboundListener {
  readonly #deps: InboundDeps;
  readonly #server: tls.Server;
  #trustDomain: string;

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
    return new Promise((resolve) => this.#server.close(() => resolve()));
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
      splice(socket, app, () => {
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
