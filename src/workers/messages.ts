// Every message between a proxy's control thread and its data-plane workers, in one place.
// Data flows one way: control -> workers (config, certificates, endpoints). Workers answer
// only with lifecycle events; traffic facts travel through the shared counter blocks.

import type { ChainProtocol, DataPlaneChain } from '../chain/types.ts';
import type { JwtProviderEntry } from '../config/jwt.ts';
import type { JwtRequirement, SourceIntention } from '../config/service-intentions.ts';

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

/** One healthy instance of an upstream: a sidecar's public listener. */
export interface Endpoint {
  readonly host: string;
  readonly port: number;
  /** The service whose SPIFFE ID the server must present. */
  readonly service: string;
}

export interface InboundSpec {
  readonly host: string;
  readonly port: number;
  readonly appHost: string;
  readonly appPort: number;
}

export interface UpstreamSpec {
  readonly name: string;
  readonly host: string;
  readonly port: number;
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

/**
 * Everything routing-related a worker needs, sent whole on every change (it is small) with
 * a version that only grows; a worker applies a snapshot only if it is newer than its own.
 */
export interface RoutingSnapshot {
  readonly version: number;
  readonly inbound: InboundRouting;
  readonly upstreams: Readonly<Record<string, UpstreamRouting>>;
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
  /** Access log target ('stdout', 'stderr' or a file path); absent: off. */
  readonly accessLog?: string;
}

export type ToWorker =
  | WorkerInit
  | { readonly type: 'tls'; readonly tls: TlsMaterial }
  | { readonly type: 'routing'; readonly routing: RoutingSnapshot }
  | { readonly type: 'drain' };

export interface ListeningPorts {
  readonly inbound: number | null;
  readonly upstreams: Readonly<Record<string, number>>;
}

export type FromWorker =
  | { readonly type: 'listening'; readonly ports: ListeningPorts }
  | { readonly type: 'fatal'; readonly code: string; readonly message: string }
  | { readonly type: 'drained' };
