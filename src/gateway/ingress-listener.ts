// An ingress gateway's http listener: plain HTTP/1.1 from clients outside the mesh, each
// request dispatched by its Host header (./hosts.ts) to the exposed service's HttpUpstream —
// the very code of a sidecar's HTTP upstream listener (../dataplane/http-outbound.ts): the
// service's discovery chain (routes, splits, failover), load balancing, retries, timeouts,
// circuit breakers and outlier detection, and mTLS to the service's sidecars with the
// gateway's own identity, so intentions decide what the gateway may reach. One HttpUpstream
// per exposed service, each counting in its own L7 block (metrics labelled by listener and
// service). No virtual host matches: 404, as Envoy answers, counted on the listener's block.
// A tcp ingress listener needs none of this: it is an ordinary UpstreamListener
// (../dataplane/outbound.ts) on the one service's chain.
// TLS (the entry's `TLS { Enabled = true }`): the listener terminates TLS with the operator's
// certificate (-tls-cert-file, no client certificate asked for) and then serves the decrypted
// connection exactly as a plain one. The handshake is bounded by the worker's handshake
// timeout; failures count in meshd_tls_handshake_failures_total by reason, as a sidecar's
// public listener counts its own (a gateway has no public listener). A new certificate
// (SIGHUP) applies to the next handshake; open connections keep theirs.
// Runs on: every data-plane worker of a gateway, each binding the same port with reusePort.

import type * as http from 'node:http';
import * as net from 'node:net';
import * as tls from 'node:tls';
import { constants as cryptoConstants } from 'node:crypto';
import { S, handshakeSlot, type HandshakeReason } from '../metrics/counters.ts';
import { countFlag } from '../metrics/l7.ts';
import { answerLocally } from '../dataplane/http-forward.ts';
import { checkRequestHead, drainHttp, guardedServer, isPoisoned, poison } from '../dataplane/http-guard.ts';
import { HttpUpstream } from '../dataplane/http-outbound.ts';
import { listenReusePort, tlsServerOptions } from '../dataplane/inbound.ts';
import { handshakeReason } from '../dataplane/tls-errors.ts';
import type { IngressCertificate, IngressRouting, TlsMaterial, UpstreamSpec } from '../workers/messages.ts';
import { HostTable } from './hosts.ts';

export interface IngressListenerDeps {
  readonly spec: UpstreamSpec;
  readonly counters: Float64Array;
  /** The listener's own L7 block: requests no service takes (unknown host, unreadable head). */
  readonly l7: Float64Array;
  /** This worker's L7 block number `block` (a service's). */
  readonly block: (block: number) => Float64Array;
  /** Terminate TLS (the entry enables it on this listener); absent: plain HTTP. */
  readonly tls?: IngressTlsOptions;
}

export interface IngressTlsOptions {
  readonly minVersion: 'TLSv1.2' | 'TLSv1.3';
  readonly certificate: IngressCertificate;
  /** A handshake not finished by then is closed and counted as `timeout`. */
  readonly handshakeTimeoutMs: number;
}

/**
 * The server side towards clients outside the mesh: the operator's certificate, TLS 1.2 or 1.3
 * as the entry says, Node's default suites and groups (what browsers and curl speak), no
 * renegotiation, and no client certificate. ALPN offers http/1.1 only.
 */
function ingressServerOptions(t: IngressTlsOptions, cert: IngressCertificate): tls.SecureContextOptions {
  return { key: cert.keyPem, cert: cert.certPem, minVersion: t.minVersion, maxVersion: 'TLSv1.3', honorCipherOrder: true, secureOptions: cryptoConstants.SSL_OP_NO_RENEGOTIATION };
}

interface Exposed {
  readonly upstream: HttpUpstream;
  readonly block: number;
}

export class IngressHttpListener {
  readonly #deps: IngressListenerDeps;
  readonly #server: net.Server;
  readonly #http: http.Server;
  /** Built once per certificate change, shared by every service's connection pools. */
  #context: tls.SecureContext;
  #trustDomain: string;
  readonly #exposed = new Map<string, Exposed>();
  #hosts = new HostTable<HttpUpstream>([]);
  /** Terminates TLS before #http when the listener is a TLS one; it never listens itself. */
  readonly #tls: tls.Server | null = null;

  constructor(deps: IngressListenerDeps, material: TlsMaterial, routing: IngressRouting) {
    this.#deps = deps;
    this.#context = tls.createSecureContext(tlsServerOptions(material));
    this.#trustDomain = material.trustDomain;
    this.#http = guardedServer(60_000, (req, res) => this.#onRequest(req, res), () => countFlag(deps.l7, 'bad_request'));
    const t = deps.tls;
    if (t !== undefined) {
      const server = tls.createServer({ ...ingressServerOptions(t, t.certificate), ALPNProtocols: ['http/1.1'], requestCert: false, allowHalfOpen: true, handshakeTimeout: t.handshakeTimeoutMs });
      server.on('secureConnection', (s) => this.#http.emit('connection', s));
      server.on('tlsClientError', (err, s) => {
        this.#countHandshake(handshakeReason(err));
        // Node reports a handshake timeout but leaves the socket open.
        s.destroy();
      });
      this.#tls = server;
    }
    // The TLS server's sockets read at once; only plain connections wait for #http.
    this.#server = net.createServer({ allowHalfOpen: true, pauseOnConnect: t === undefined }, (s) => this.#onConnection(s));
    this.updateRouting(routing);
  }

  listen(port: number): Promise<number> {
    return listenReusePort(this.#server, this.#deps.spec.host, port);
  }

  updateTls(material: TlsMaterial): void {
    this.#context = tls.createSecureContext(tlsServerOptions(material));
    this.#trustDomain = material.trustDomain;
  }

  /** The operator's new certificate (SIGHUP): the next handshakes present it, open connections keep theirs. */
  updateCertificate(cert: IngressCertificate): void {
    const t = this.#deps.tls;
    if (this.#tls === null || t === undefined) return;
    this.#tls.setSecureContext(ingressServerOptions(t, cert));
  }

  /** New services, hosts, chains or instances; an upstream keeps its pools and outlier state. */
  updateRouting(r: IngressRouting): void {
    const keep = new Set<string>();
    const table: { domains: readonly string[]; value: HttpUpstream }[] = [];
    for (const s of r.services) {
      keep.add(s.service);
      let e = this.#exposed.get(s.service);
      if (e !== undefined && e.block !== s.block) {
        e.upstream.close();
        e = undefined;
      }
      if (e === undefined) {
        const upstream = new HttpUpstream({ name: s.service, metrics: this.#deps.block(s.block), tls: () => ({ context: this.#context, trustDomain: this.#trustDomain }) });
        e = { upstream, block: s.block };
        this.#exposed.set(s.service, e);
      }
      e.upstream.update(s.upstream);
      e.upstream.setHostHeaders(s.requestHeaders, s.responseHeaders);
      table.push({ domains: s.domains, value: e.upstream });
    }
    for (const [name, e] of this.#exposed) {
      if (keep.has(name)) continue;
      e.upstream.close();
      this.#exposed.delete(name);
    }
    this.#hosts = new HostTable(table);
  }

  close(): Promise<void> {
    this.#http.closeAllConnections();
    for (const e of this.#exposed.values()) e.upstream.close();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  /**
   * Graceful end (SIGTERM): stops accepting at once; requests in flight finish and are
   * answered with `Connection: close`, idle connections close now (drainHttp). Resolves when
   * no connection is left, then releases every service's pools. The caller bounds the wait.
   */
  async drain(): Promise<void> {
    const closed = new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await Promise.all([drainHttp(this.#http), closed]);
    for (const e of this.#exposed.values()) e.upstream.close();
  }

  #onConnection(client: net.Socket): void {
    client.on('error', noop);
    const c = this.#deps.counters;
    c[S.ACCEPTED_OUT] = (c[S.ACCEPTED_OUT] as number) + 1;
    client.once('close', () => {
      c[S.RX_OUT] = (c[S.RX_OUT] as number) + client.bytesRead;
      c[S.TX_OUT] = (c[S.TX_OUT] as number) + client.bytesWritten;
      c[S.CLOSED_OUT] = (c[S.CLOSED_OUT] as number) + 1;
    });
    if (this.#tls !== null) {
      this.#tls.emit('connection', client);
      return;
    }
    this.#http.emit('connection', client);
    client.resume();
  }

  #countHandshake(reason: HandshakeReason): void {
    const c = this.#deps.counters;
    const slot = handshakeSlot(reason);
    c[slot] = (c[slot] as number) + 1;
  }

  #onRequest(req: http.IncomingMessage, res: http.ServerResponse): void {
    const start = performance.now();
    if (isPoisoned(req)) {
      res.destroy();
      return;
    }
    // The head is checked before the Host header is trusted (one Host, no smuggling); the
    // upstream checks it again, which costs a loop over the headers.
    const head = checkRequestHead(req.rawHeaders);
    if (head !== null) {
      poison(req, res);
      answerLocally(res, this.#deps.l7, start, head.status, 'bad_request', head.detail);
      return;
    }
    const host = req.headers.host ?? '';
    const upstream = this.#hosts.match(host);
    if (upstream === undefined) {
      req.resume();
      answerLocally(res, this.#deps.l7, start, 404, null, `no service of this ingress listener answers host ${JSON.stringify(host)}`);
      return;
    }
    upstream.handle(req, res);
  }
}

function noop(): void {}
