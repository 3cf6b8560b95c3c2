// Every message between a proxy's control thread and its data-plane workers, in one place.
// Data flows one way: control -> workers (config, certificates, endpoints). Workers answer
// with lifecycle events and, once per scrape when asked, their latency histograms; counters
// travel through the shared counter blocks.

import type { ChainProtocol, DataPlaneChain, HeaderModifiers } from '../chain/types.ts';
import type { JwtProviderEntry } from '../config/jwt.ts';
import type { JwtRequirement, SourceIntention } from '../config/service-intentions.ts';
import type { LatencyDelta } from '../metrics/latency.ts';
import type { ProxyLimits } from '../dataplane/limits.ts';

export interface TlsMaterial {
  /** PKCS#8 PEM of the leaf key (generated in this process; never sent to the agent). */
  readonly keyPem: string;
  /** Leaf certificate PEM, followed by any intermediates. */
  readonly certPem: string;
  /** Every root in the trust bundle (active and rotated-out roots are all trusted). */
  readonly caPems: readonly string[];
  readonly trustDomain: string;
  /** The leaf's SPIFFE ID (XFCC's By). */
  readonly uri: string;
}

/**
 * An ingress gateway's TLS listeners' certificate (-tls-cert-file/-tls-key-file): the
 * operator's, not a mesh leaf. A secret: never logged.
 */
export interface IngressCertificate {
  /** The leaf, then any intermediates. */
  readonly certPem: string;
  readonly keyPem: string;
}

/** One healthy instance of an upstream: a sidecar's public listener. */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
  /** The service whose SPIFFE ID the server must present. */
  readonly service: string;
  /**
   * The TLS SNI to send: the chain target's name (`[<subset>.]<service>.default.<dc>.internal.<td>`).
   * A mesh gateway routes on it; a sidecar ignores it. Absent: none sent.
   */
  readonly sni?: string;
}

export interface InboundSpec {
  readonly host: string;
  readonly port: number;
  readonly appHost: string;
  readonly appPort: number;
}

export interface UpstreamSpec {
  /** The listener's key (metrics label, routing snapshot key): NAME, or NAME@DC. */
  readonly name: string;
  readonly host: string;
  readonly port: number;
  /** The destination service when it is not `name` (an upstream in another datacenter). */
  readonly service?: string;
  /** The datacenter the upstream's chain is evaluated in; absent: the local one. */
  readonly datacenter?: string;
  /** The upstream definition's MeshGateway.Mode (a registration's Proxy.Upstreams[]); absent: not set. */
  readonly meshGatewayMode?: 'none' | 'local' | 'remote';
}

/** The local service's HTTP settings (service-defaults) and L7 intentions, for the public listener. */
export interface InboundRouting {
  readonly protocol: ChainProtocol;
  readonly localConnectTimeoutMs: number;
  readonly localRequestTimeoutMs: number;
  /** Sources of this service's service-intentions entry (L4 and L7), and its entry-level JWT. */
  readonly intentionSources: readonly SourceIntention[];
  readonly intentionJwt: JwtRequirement | null;
  /**
   * The jwt-provider entries named by those intentions (entry level and permissions), decoded;
   * a name with no entry is left out. Absent: none.
   */
  readonly jwtProviders?: readonly JwtProviderEntry[];
  readonly defaultAllow: boolean;
}

/** One upstream's compiled discovery chain and the healthy instances of each of its targets. */
export interface UpstreamRouting {
  readonly chain: DataPlaneChain;
  readonly endpoints: Readonly<Record<string, readonly Endpoint[]>>;
}

/** One service an ingress gateway's http listener exposes (src/gateway/ingress-listener.ts). */
export interface IngressServiceRouting {
  readonly service: string;
  /** Virtual-host domains, lower-case (src/gateway/hosts.ts). */
  readonly domains: readonly string[];
  /** The worker's L7 counter block for this service (fixed per service for the process's life). */
  readonly block: number;
  readonly requestHeaders: HeaderModifiers;
  readonly responseHeaders: HeaderModifiers;
  readonly upstream: UpstreamRouting;
}

/** An ingress gateway's http listener: its services, dispatched by Host header. */
export interface IngressRouting {
  readonly services: readonly IngressServiceRouting[];
}

/**
 * Everything routing-related a worker needs, sent whole on every change (it is small) with
 * a version that only grows; a worker applies a snapshot only if it is newer than its own.
 */
export interface RoutingSnapshot {
  readonly version: number;
  readonly inbound: InboundRouting;
  readonly upstreams: Readonly<Record<string, UpstreamRouting>>;
  /** An ingress gateway's http listeners, by listener (upstream spec) name. Absent: none. */
  readonly ingress?: Readonly<Record<string, IngressRouting>>;
  /** A mesh gateway's SNI routes (every mesh listener shares them). Absent: not a mesh gateway. */
  readonly mesh?: MeshGatewayRouting;
}

export interface WorkerInit {
  readonly type: 'init';
  readonly index: number;
  /** Reader slot in the policy table (0 is the control thread's). */
  readonly policySlot: number;
  readonly policy: WebAssembly.Memory;
  readonly counters: SharedArrayBuffer;
  readonly service: string;
  readonly inbound: InboundSpec | null;
  readonly upstreams: readonly UpstreamSpec[];
  readonly tls: TlsMaterial;
  readonly routing: RoutingSnapshot;
  /** L7 counters: one block per (worker, listener); listener 0 is the public one. */
  readonly l7Metrics: SharedArrayBuffer;
  /**
   * Runtime gauges (event-loop lag, heap): one block per worker (../metrics/runtime.ts).
   * Absent: the worker measures nothing.
   */
  readonly workerGauges?: SharedArrayBuffer;
  readonly connectTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
  /** Lowest TLS version of every mesh TLS endpoint (-tls-min-version); absent: TLS 1.3. */
  readonly tlsMinVersion?: 'TLSv1.2' | 'TLSv1.3';
  /** Handshakes in progress per worker on the public listener (-max-concurrent-handshakes); absent: 1024. */
  readonly maxConcurrentHandshakes?: number;
  /** Access log target ('stdout', 'stderr' or a file path); absent: off. */
  readonly accessLog?: string;
  /** false: tcp upstreams do not resume TLS sessions (../dataplane/outbound.ts). Absent: on. */
  readonly tlsSessionResumption?: boolean;
  /**
   * An ingress gateway: the names of the `upstreams` that are http ingress listeners (routed
   * by Host header, ../gateway/ingress-listener.ts, with `routing.ingress`); the other
   * upstreams are ordinary upstream listeners (its tcp listeners). Absent: none.
   */
  readonly ingress?: readonly string[];
  /**
   * An ingress gateway: the `ingress` listeners that terminate TLS, with their lowest TLS
   * version (Node's names), and the certificate they present. Absent: none.
   */
  readonly ingressTls?: Readonly<Record<string, 'TLSv1.2' | 'TLSv1.3'>>;
  readonly ingressCertificate?: IngressCertificate;
  /** L7 counter blocks per worker (an ingress gateway has one per exposed service too). Absent: 1 + upstreams. */
  readonly l7Listeners?: number;
  /** Connection and request limits, idle timeouts (../dataplane/limits.ts); absent: the defaults. */
  readonly limits?: ProxyLimits;
  /** Open connections per worker and listener, shared (../metrics/counters.ts); absent: limits hold per worker. */
  readonly connectionCounts?: SharedArrayBuffer;
  /** Workers in the proxy (each admits its share of the request limits); absent: 1. */
  readonly workers?: number;
  /**
   * A mesh gateway: which `upstreams` are its SNI-routed listeners (../gateway/mesh-listener.ts,
   * routed by `routing.mesh`), its own counters (../metrics/mesh-gateway.ts) and how long a
   * connection may take to send its ClientHello. Absent: not a mesh gateway.
   */
  readonly meshGateway?: MeshGatewayWorkerInit;
}

export type ToWorker =
  | WorkerInit
  | { readonly type: 'tls'; readonly tls: TlsMaterial }
  /** An ingress gateway re-read its -tls-cert-file/-tls-key-file (SIGHUP): new connections get it. */
  | { readonly type: 'ingress-certificate'; readonly certificate: IngressCertificate }
  | { readonly type: 'routing'; readonly routing: RoutingSnapshot }
  /** A scrape: answer with a `latency` message carrying the same `seq`. */
  | { readonly type: 'latency'; readonly seq: number }
  /**
   * Shut down: stop accepting now, let open connections finish for up to `timeoutMs` (0: close
   * them now), then answer `drained`; the supervisor ends the thread, cutting what is left.
   */
  | { readonly type: 'drain'; readonly timeoutMs: number };

export interface ListeningPorts {
  readonly inbound: number | null;
  readonly upstreams: Readonly<Record<string, number>>;
}

export type FromWorker =
  | { readonly type: 'listening'; readonly ports: ListeningPorts }
  | { readonly type: 'fatal'; readonly code: string; readonly message: string }
  /** The durations recorded since the previous answer (../metrics/latency.ts); null: none kept. */
  | { readonly type: 'latency'; readonly seq: number; readonly delta: LatencyDelta | null }
  | { readonly type: 'drained' };

// ------------------------------------------------------------------------------ mesh gateway

/** One place a mesh gateway forwards to: a local service (or subset), or another datacenter. */
export interface MeshDestination {
  /** Sidecars' public listeners, or the other datacenter's mesh gateways. */
  readonly endpoints: readonly { readonly host: string; readonly port: number }[];
  /** Its block of per-destination counters (../metrics/mesh-gateway.ts; fixed for the process's life). */
  readonly block: number;
}

/** A mesh gateway's routing (../gateway/mesh-route.ts); names and keys lower-case. */
export interface MeshGatewayRouting {
  readonly datacenter: string;
  readonly trustDomain: string;
  /** By exact SNI (`[<subset>.]<service>.default.<dc>.internal.<td>`). */
  readonly services: Readonly<Record<string, MeshDestination>>;
  /** By datacenter name (never the local one). */
  readonly datacenters: Readonly<Record<string, MeshDestination>>;
}

export interface MeshGatewayWorkerInit {
  /** Names of the `upstreams` that are mesh gateway listeners. */
  readonly listeners: readonly string[];
  readonly metrics: SharedArrayBuffer;
  /** Destination blocks per worker in `metrics`. */
  readonly destinations: number;
  /** A connection that has not sent a whole ClientHello by then is closed (sni_timeout). */
  readonly sniTimeoutMs: number;
}
