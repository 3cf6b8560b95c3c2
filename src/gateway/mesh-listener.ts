// A mesh gateway listener: reads the SNI of each connection's ClientHello (./sni.ts) and
// forwards the connection, bytes untouched, to the destination that name routes to
// (./mesh-route.ts): a local service's sidecars or another datacenter's mesh gateways. It never
// terminates TLS and holds no key: the mTLS session runs end to end between the two sidecars,
// so the gateway cannot read or alter the traffic, and the destination sidecar alone decides
// (intentions) whether the caller may connect.
//
// Per connection: bytes are buffered until the ClientHello parses (at most the SNI timeout,
// 10 s); then an instance is picked round robin and dialled (connect timeout; on an error the
// next instance is tried, up to MAX_ATTEMPTS), the buffered bytes are written, and both
// directions are piped with backpressure and half-close (../dataplane/pipe.ts). Connection
// limits and the idle timeout are the sidecar's (../dataplane/limits.ts).
// Runs on: every data-plane worker, each binding the same port with reusePort.

import * as net from 'node:net';
import { S } from '../metrics/counters.ts';
import { D, G, destSlot, refusedSlot, type MeshRefuseReason } from '../metrics/mesh-gateway.ts';
import { listenReusePort } from '../dataplane/inbound.ts';
import { splice } from '../dataplane/pipe.ts';
import { ADMITTED, OPEN_GATE, OVER_LISTENER, type ConnectionGate } from '../dataplane/limits.ts';
import type { MeshDestination, MeshGatewayRouting, UpstreamSpec } from '../workers/messages.ts';
import { compileMeshRoutes, selectMeshRoute, type MeshRouteTable } from './mesh-route.ts';
import { MAX_CLIENT_HELLO, MAX_RECORDS, parseClientHello } from './sni.ts';

/** Instances tried per connection before it is refused (upstream_connect_failed). */
export const MAX_ATTEMPTS = 3;
/** Most bytes buffered while waiting for the ClientHello: the cap plus every record header. */
const MAX_BUFFERED = MAX_CLIENT_HELLO + 5 * MAX_RECORDS;

export interface MeshListenerDeps {
  readonly spec: UpstreamSpec;
  /** The worker's ordinary counter block (accepted/closed/bytes, direction inbound). */
  readonly counters: Float64Array;
  /** The worker's mesh gateway region (../metrics/mesh-gateway.ts). */
  readonly mesh: Float64Array;
  readonly connectTimeoutMs: number;
  readonly sniTimeoutMs: number;
  /** A forwarded connection with no byte either way for this long is closed; 0: never. */
  readonly tcpIdleTimeoutMs: number;
  readonly connections?: ConnectionGate;
}

export class MeshGatewayListener {
  readonly #deps: MeshListenerDeps;
  readonly #server: net.Server;
  readonly #gate: ConnectionGate;
  #routes: MeshRouteTable;
  /** Round-robin position per destination key. */
  readonly #next = new Map<string, number>();

  constructor(deps: MeshListenerDeps, routing: MeshGatewayRouting) {
    this.#deps = deps;
    this.#gate = deps.connections ?? OPEN_GATE;
    this.#routes = compileMeshRoutes(routing);
    this.#server = net.createServer({ allowHalfOpen: true }, (s) => this.#onConnection(s));
  }

  listen(port: number): Promise<number> {
    return listenReusePort(this.#server, this.#deps.spec.host, port);
  }

  /** New routes apply to connections whose ClientHello completes from now on. */
  updateRouting(routing: MeshGatewayRouting): void {
    this.#routes = compileMeshRoutes(routing);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  /** Stops accepting; resolves when every connection has ended (the caller bounds the wait). */
  drain(): Promise<void> {
    return this.close();
  }

  #count(slot: number, n = 1): void {
    const m = this.#deps.mesh;
    m[slot] = (m[slot] as number) + n;
  }

  #onConnection(client: net.Socket): void {
    client.on('error', noop);
    const admitted = this.#gate.tryOpen();
    if (admitted !== ADMITTED) {
      this.#count(refusedSlot(admitted === OVER_LISTENER ? 'listener_connection_limit' : 'proxy_connection_limit'));
      client.destroy();
      return;
    }
    const c = this.#deps.counters;
    c[S.ACCEPTED_IN] = (c[S.ACCEPTED_IN] as number) + 1;
    this.#count(G.OPENED);
    /** Refused or forwarding: nothing more to decide. */
    let done = false;
    client.once('close', () => {
      this.#gate.close();
      c[S.CLOSED_IN] = (c[S.CLOSED_IN] as number) + 1;
      c[S.RX_IN] = (c[S.RX_IN] as number) + client.bytesRead;
      c[S.TX_IN] = (c[S.TX_IN] as number) + client.bytesWritten;
      this.#count(G.RX, client.bytesRead);
      this.#count(G.TX, client.bytesWritten);
      this.#count(G.CLOSED);
    });

    let buffered: Buffer = Buffer.alloc(0);
    let need = 1;
    const refuse = (reason: MeshRefuseReason): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.#count(refusedSlot(reason));
      client.destroy();
    };
    const timer = setTimeout(() => refuse('sni_timeout'), this.#deps.sniTimeoutMs);
    const onEnd = (): void => refuse('incomplete');
    const onData = (d: Buffer): void => {
      buffered = buffered.length === 0 ? d : Buffer.concat([buffered, d]);
      if (buffered.length < need) return;
      const r = parseClientHello(buffered);
      if (r.kind === 'more') {
        need = r.need;
        if (buffered.length > MAX_BUFFERED) refuse('too_large');
        return;
      }
      if (r.kind === 'error') {
        refuse(r.reason);
        return;
      }
      // The ClientHello is complete: no more reading until the destination is connected.
      clearTimeout(timer);
      client.off('data', onData);
      client.off('end', onEnd);
      client.pause();
      const route = selectMeshRoute(this.#routes, r.name);
      if (route.kind === 'refuse') {
        refuse(route.reason);
        return;
      }
      const connected = (): void => {
        done = true;
        this.#count(G.ROUTED);
      };
      this.#forward(client, route.key, route.destination, buffered, connected, refuse);
    };
    client.on('data', onData);
    client.once('end', onEnd);
  }

  /** Dials the destination (next instance on failure), writes the ClientHello, then pipes. */
  #forward(client: net.Socket, key: string, dest: MeshDestination, hello: Buffer, onForwarded: () => void, refuse: (reason: MeshRefuseReason) => void): void {
    const eps = dest.endpoints;
    if (eps.length === 0) {
      refuse('no_healthy_upstream');
      return;
    }
    const first = this.#next.get(key) ?? 0;
    this.#next.set(key, (first + 1) % eps.length);
    const attempts = Math.min(MAX_ATTEMPTS, eps.length);
    let attempt = 0;
    const dial = (): void => {
      const ep = eps[(first + attempt) % eps.length] as { host: string; port: number };
      const upstream = net.connect({ host: ep.host, port: ep.port, allowHalfOpen: true });
      upstream.setTimeout(this.#deps.connectTimeoutMs);
      const abandoned = (): void => void upstream.destroy();
      client.once('close', abandoned);
      const onFail = (): void => {
        upstream.destroy();
        client.off('close', abandoned);
        this.#count(G.CONNECT_FAILURES);
        this.#count(destSlot(dest.block, D.CONNECT_FAILURES));
        if (client.destroyed) return;
        if (++attempt < attempts) dial();
        else refuse('upstream_connect_failed');
      };
      upstream.once('timeout', onFail);
      upstream.once('error', onFail);
      upstream.once('connect', () => {
        upstream.setTimeout(0);
        upstream.off('timeout', onFail);
        upstream.off('error', onFail);
        client.off('close', abandoned);
        onForwarded();
        this.#count(destSlot(dest.block, D.FORWARDED));
        const idle = this.#deps.tcpIdleTimeoutMs;
        if (idle > 0) {
          client.setTimeout(idle);
          client.once('timeout', () => {
            const c = this.#deps.counters;
            c[S.IDLE_IN] = (c[S.IDLE_IN] as number) + 1;
            upstream.destroy();
            client.destroy();
          });
        }
        upstream.write(hello);
        splice(client, upstream, () => {
          this.#count(destSlot(dest.block, D.CLOSED));
          this.#count(destSlot(dest.block, D.RX), client.bytesRead);
          this.#count(destSlot(dest.block, D.TX), client.bytesWritten);
        });
        client.resume();
      });
    };
    dial();
  }
}

function noop(): void {}
