// Every message between a proxy's control thread and its data-plane workers, in one place.
// Data flows one way: control -> workers (config, certificates, endpoints). Workers answer
// only with lifecycle events; traffic facts travel through the shared counter blocks.

export interface TlsMaterial {
  /** PKCS#8 PEM of the leaf key (generated in this process; never sent to the agent). */
  readonly keyPem: string;
  /** Leaf certificate PEM, followed by any intermediates. */
  readonly certPem: string;
  /** Every root in the trust bundle (active and rotated-out roots are all trusted). */
  readonly caPems: readonly string[];
  readonly trustDomain: string;
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
  readonly endpoints: Readonly<Record<string, readonly Endpoint[]>>;
  readonly connectTimeoutMs: number;
  readonly handshakeTimeoutMs: number;
}

export type ToWorker =
  | WorkerInit
  | { readonly type: 'tls'; readonly tls: TlsMaterial }
  | { readonly type: 'endpoints'; readonly upstream: string; readonly endpoints: readonly Endpoint[] }
  | { readonly type: 'drain' };

export interface ListeningPorts {
  readonly inbound: number | null;
  readonly upstreams: Readonly<Record<string, number>>;
}

export type FromWorker =
  | { readonly type: 'listening'; readonly ports: ListeningPorts }
  | { readonly type: 'fatal'; readonly code: string; readonly message: string }
  | { readonly type: 'drained' };
