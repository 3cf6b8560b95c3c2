// Connection and request limits of a proxy's listeners, and their defaults. Every limit has a
// safe default and a `meshd connect proxy` flag (src/cli/main.ts).
// Runs on: data-plane workers (the gates); the control thread only passes the numbers.
//
// Connections (a file descriptor, kernel buffers and, inbound, a TLS session each) are a
// process-wide resource, so their limits hold for the proxy as a whole, over all workers:
// each worker counts its own open connections per listener in a shared Int32Array
// (src/metrics/counters.ts, one writer per slot) and, on accept, sums the slot over every
// worker. Two workers accepting at the same instant can both see room for one, so a limit can
// be passed by at most workers − 1 for that instant. A connection over a limit is closed at
// once, before any TLS or HTTP work, and counted in meshd_connections_denied_total with reason
// `listener_connection_limit` or `proxy_connection_limit`.
//
// Requests in progress are a per-thread resource (each worker's event loop is its own queue),
// and counting them across threads would cost a shared write per request; so each worker
// admits its share of a request limit, ceil(N / workers). A request over a limit is answered at
// once: 503 `overflow` (-max-concurrent-requests, per listener), 429 `source_limit`
// (-max-requests-per-source, the public listener, per calling service's SPIFFE name).

import { connectionStride, type DenyReason } from '../metrics/counters.ts';
import { NO_PRESSURE, type LoadPressure } from './pressure.ts';

export interface ProxyLimits {
  /** Connections open at once over all listeners of the proxy (-max-connections). */
  readonly maxConnections: number;
  /** Connections open at once on the public listener (-max-inbound-connections). */
  readonly maxInboundConnections: number;
  /** Connections open at once on each upstream listener (-max-upstream-connections). */
  readonly maxUpstreamConnections: number;
  /** HTTP requests in progress per listener, over all workers (-max-concurrent-requests). */
  readonly maxConcurrentRequests: number;
  /** HTTP requests in progress per calling service on the public listener (-max-requests-per-source). */
  readonly maxRequestsPerSource: number;
  /** An HTTP connection with no request in progress is closed after this (-http-idle-timeout). */
  readonly httpIdleTimeoutMs: number;
  /** A tcp connection with no byte either way is closed after this; 0: never (-tcp-idle-timeout). */
  readonly tcpIdleTimeoutMs: number;
  /** Pooled connections to upstream sidecars and to the local app idle this long are closed (-upstream-idle-timeout). */
  readonly upstreamIdleTimeoutMs: number;
  /** A worker whose event loop runs this late sheds new requests and connections; 0: never (-max-event-loop-delay, ./pressure.ts). */
  readonly maxEventLoopDelayMs: number;
}

export const DEFAULT_LIMITS: ProxyLimits = {
  maxConnections: 8192,
  maxInboundConnections: 4096,
  maxUpstreamConnections: 4096,
  maxConcurrentRequests: 1024,
  maxRequestsPerSource: 512,
  // Longer than the peers' pool idle time (upstreamIdleTimeoutMs), so the client side closes
  // first; undici also honours the `Keep-Alive: timeout=` hint node's server sends.
  httpIdleTimeoutMs: 120_000,
  // Envoy's tcp_proxy idle_timeout default.
  tcpIdleTimeoutMs: 3_600_000,
  upstreamIdleTimeoutMs: 60_000,
  maxEventLoopDelayMs: 0,
};

/** The limits a worker was given, completed with the defaults. */
export function withDefaults(l: Partial<ProxyLimits> | undefined): ProxyLimits {
  return { ...DEFAULT_LIMITS, ...l };
}

/** A worker's share of a limit on requests: ceil(limit / workers), at least 1. */
export function perWorker(limit: number, workers: number): number {
  return Math.max(1, Math.ceil(limit / Math.max(1, workers)));
}

export const ADMITTED = 0;
export const OVER_LISTENER = 1;
export const OVER_PROXY = 2;
export const OVER_SOURCE = 3;
/** The worker is under pressure (./pressure.ts): its event loop runs late. */
export const OVER_PRESSURE = 4;
export type Admission = typeof ADMITTED | typeof OVER_LISTENER | typeof OVER_PROXY | typeof OVER_SOURCE | typeof OVER_PRESSURE;

/** The body of a 503 shed under pressure. */
export const PRESSURE_MESSAGE = 'overloaded: this proxy is running behind (event-loop delay over -max-event-loop-delay)';

/** Why a connection refused at accept is counted (meshd_connections_denied_total). */
export function connectionRefusal(a: typeof OVER_LISTENER | typeof OVER_PROXY | typeof OVER_SOURCE | typeof OVER_PRESSURE): DenyReason {
  return a === OVER_LISTENER ? 'listener_connection_limit' : a === OVER_PRESSURE ? 'overload' : 'proxy_connection_limit';
}

/** One listener's connection limit in one worker. */
export interface ConnectionGate {
  /** Counts a new connection in, or says which limit refuses it (nothing counted then). */
  tryOpen(): Admission;
  /** Call once per admitted connection, when it has closed. */
  close(): void;
}

/** One worker's view of the shared connection counts. */
export class ConnectionCounts {
  readonly #a: Int32Array;
  readonly #workers: number;
  readonly #stride: number;
  readonly #base: number;
  readonly #maxTotal: number;

  /**
   * `buffer`: allocateConnectionCounts(workers, listeners); null gives this worker a private
   * one (the limits then hold per worker). Zeroes this worker's block.
   */
  constructor(buffer: SharedArrayBuffer | null, worker: number, workers: number, listeners: number, maxTotal: number) {
    this.#stride = connectionStride(listeners);
    const shared = buffer !== null;
    this.#workers = shared ? workers : 1;
    this.#a = new Int32Array(buffer ?? new SharedArrayBuffer(this.#stride * Int32Array.BYTES_PER_ELEMENT));
    this.#base = shared ? worker * this.#stride : 0;
    this.#maxTotal = maxTotal;
    this.#a.fill(0, this.#base, this.#base + this.#stride);
  }

  /** The gate of listener `listener` (0 public, 1..n upstreams), with its own limit; under `pressure` it refuses every new connection. */
  gate(listener: number, max: number, pressure: LoadPressure = NO_PRESSURE): ConnectionGate {
    const a = this.#a;
    const mine = this.#base + 1 + listener;
    const total = this.#base;
    const workers = this.#workers;
    const stride = this.#stride;
    const maxTotal = this.#maxTotal;
    return {
      tryOpen: () => {
        if (pressure.underPressure) return OVER_PRESSURE;
        let onListener = 0;
        let all = 0;
        for (let w = 0, o = 0; w < workers; w++, o += stride) {
          all += Atomics.load(a, o);
          onListener += Atomics.load(a, o + 1 + listener);
        }
        if (onListener >= max) return OVER_LISTENER;
        if (all >= maxTotal) return OVER_PROXY;
        Atomics.store(a, mine, (a[mine] as number) + 1);
        Atomics.store(a, total, (a[total] as number) + 1);
        return ADMITTED;
      },
      close: () => {
        Atomics.store(a, mine, Math.max(0, (a[mine] as number) - 1));
        Atomics.store(a, total, Math.max(0, (a[total] as number) - 1));
      },
    };
  }
}

/** A gate that never refuses (listeners built without limits, e.g. in unit tests). */
export const OPEN_GATE: ConnectionGate = { tryOpen: () => ADMITTED, close: () => undefined };

/**
 * Requests in progress on one listener in one worker: the listener's share of
 * -max-concurrent-requests and, on the public listener, each source's share of
 * -max-requests-per-source. admit() and release() pair up; release on the response's 'close'.
 */
export class RequestLimiter {
  readonly #max: number;
  readonly #maxPerSource: number;
  readonly #pressure: LoadPressure;
  #inFlight = 0;
  readonly #bySource = new Map<string, number>();

  constructor(maxInFlight: number, maxPerSource = Infinity, pressure: LoadPressure = NO_PRESSURE) {
    this.#max = maxInFlight;
    this.#maxPerSource = maxPerSource;
    this.#pressure = pressure;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** ADMITTED (counted), OVER_LISTENER, OVER_SOURCE or OVER_PRESSURE; nothing is counted when refused. */
  admit(source: string | null): Admission {
    if (this.#inFlight >= this.#max) return OVER_LISTENER;
    if (this.#pressure.underPressure) return OVER_PRESSURE;
    if (source !== null) {
      const n = this.#bySource.get(source) ?? 0;
      if (n >= this.#maxPerSource) return OVER_SOURCE;
      this.#bySource.set(source, n + 1);
    }
    this.#inFlight++;
    return ADMITTED;
  }

  release(source: string | null): void {
    if (this.#inFlight > 0) this.#inFlight--;
    if (source === null) return;
    const n = this.#bySource.get(source) ?? 0;
    if (n <= 1) this.#bySource.delete(source);
    else this.#bySource.set(source, n - 1);
  }
}
