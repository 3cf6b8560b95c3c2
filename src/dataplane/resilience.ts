// Per-upstream resilience, Envoy's semantics behind Consul's UpstreamConfig and service-router
// retry fields: circuit breaking (Limits), outlier detection (PassiveHealthCheck), retry
// backoff, and which outcomes are retried.

import { DEFAULT_PASSIVE_HEALTH_CHECK, type PassiveHealthCheck, type UpstreamLimits } from '../chain/types.ts';
import type { Endpoint } from '../workers/messages.ts';

// ---------------------------------------------------------------------------------------------
// Circuit breaker (Envoy's cluster circuit_breakers, one threshold set, default priority)

/** Envoy's default for max_connections, max_pending_requests and max_requests. */
export const DEFAULT_LIMIT = 1024;
/** Envoy's default max_retries: concurrent retries outstanding to the cluster. */
export const DEFAULT_MAX_RETRIES = 3;

export type BreakerKind = 'connections' | 'pending' | 'requests' | 'retries';

function limitOrDefault(v: number): number {
  return Number.isFinite(v) && v > 0 ? Math.floor(v) : DEFAULT_LIMIT;
}

/**
 * Counters with thresholds; a tryAcquire* that would go over its threshold is refused and counted
 * in `overflows` (Envoy's upstream_cx_overflow, upstream_rq_pending_overflow,
 * upstream_rq_retry_overflow; a refused request gets a 503 with x-envoy-overflow semantics, a
 * refused retry means the failed response is returned as is). Every successful acquire must be
 * paired with one release; releases never take a counter below zero.
 *
 *   connections: open upstream connections (max_connections; mostly HTTP/1.1 and TCP)
 *   pending:     requests waiting for a connection (max_pending_requests)
 *   requests:    requests in flight (max_requests; mostly HTTP/2)
 *   retries:     retries in flight (max_retries, Envoy's default 3; Consul's Limits cannot set it)
 */
export class CircuitBreaker {
  maxConnections: number;
  maxPendingRequests: number;
  maxRequests: number;
  maxRetries: number;
  connections = 0;
  pending = 0;
  requests = 0;
  retries = 0;
  readonly overflows = { connections: 0, pending: 0, requests: 0, retries: 0 };

  constructor(limits: UpstreamLimits, maxRetries = DEFAULT_MAX_RETRIES) {
    this.maxConnections = limitOrDefault(limits.maxConnections);
    this.maxPendingRequests = limitOrDefault(limits.maxPendingRequests);
    this.maxRequests = limitOrDefault(limits.maxConcurrentRequests);
    this.maxRetries = maxRetries >= 0 ? Math.floor(maxRetries) : DEFAULT_MAX_RETRIES;
  }

  /** New thresholds (config change); current counts are kept, as Envoy keeps them. */
  setLimits(limits: UpstreamLimits): void {
    this.maxConnections = limitOrDefault(limits.maxConnections);
    this.maxPendingRequests = limitOrDefault(limits.maxPendingRequests);
    this.maxRequests = limitOrDefault(limits.maxConcurrentRequests);
  }

  tryAcquireConnection(): boolean {
    if (this.connections >= this.maxConnections) {
      this.overflows.connections++;
      return false;
    }
    this.connections++;
    return true;
  }

  releaseConnection(): void {
    if (this.connections > 0) this.connections--;
  }

  tryAcquirePending(): boolean {
    if (this.pending >= this.maxPendingRequests) {
      this.overflows.pending++;
      return false;
    }
    this.pending++;
    return true;
  }

  releasePending(): void {
    if (this.pending > 0) this.pending--;
  }

  tryAcquireRequest(): boolean {
    if (this.requests >= this.maxRequests) {
      this.overflows.requests++;
      return false;
    }
    this.requests++;
    return true;
  }

  releaseRequest(): void {
    if (this.requests > 0) this.requests--;
  }

  tryAcquireRetry(): boolean {
    if (this.retries >= this.maxRetries) {
      this.overflows.retries++;
      return false;
    }
    this.retries++;
    return true;
  }

  releaseRetry(): void {
    if (this.retries > 0) this.retries--;
  }

  /** Envoy's cx_open / rq_pending_open / rq_open / rq_retry_open gauge: at the threshold, admitting no more. */
  isOpen(kind: BreakerKind): boolean {
    switch (kind) {
      case 'connections':
        return this.connections >= this.maxConnections;
      case 'pending':
        return this.pending >= this.maxPendingRequests;
      case 'requests':
        return this.requests >= this.maxRequests;
      case 'retries':
        return this.retries >= this.maxRetries;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Outlier detection (Envoy's consecutive_5xx detector)

/** Envoy's max_ejection_time default; the cap is max(this, base ejection time). */
export const MAX_EJECTION_TIME_MS = 300_000;
/** Envoy's healthy_panic_threshold default, applied by healthyEndpoints(). */
export const PANIC_THRESHOLD_PERCENT = 50;

interface HostState {
  consecutive: number;
  ejected: boolean;
  until: number;
  /** Envoy's ejection-time backoff multiplier: +1 per ejection, −1 per healthy interval. */
  times: number;
  lastUneject: number;
}

export interface OutlierDetectorOptions {
  readonly now: () => number;
  readonly random?: () => number;
}

/**
 * Passive health checking for one upstream target's endpoints (keyed `${host}:${port}`).
 *
 * - record() each response: a 5xx, or a connect failure (Envoy counts locally-originated errors as
 *   5xx unless split_external_local_origin_errors is on, and Consul never turns it on), adds to
 *   the host's consecutive count; anything else resets it.
 * - When the count reaches maxFailures the host is an outlier; the count resets, and it is ejected
 *   if the ejection cap allows and a roll of enforcingConsecutive5xx % succeeds.
 * - Cap: ejecting must keep ejected hosts ≤ maxEjectionPercent of the set, except that one host may
 *   always be ejected when none is (and maxEjectionPercent > 0). The set is what setHosts() was
 *   last given (call it with every endpoint update), else the hosts seen so far.
 * - Ejection lasts baseEjectionTime × (times ejected), capped at max(300 s, base). A host is back
 *   as soon as the time has passed: isEjected() and the counters check lazily, sweep() (run it
 *   every intervalMs) checks all. Each sweep in which a host has been back for a full interval
 *   takes one off its multiplier, as Envoy does.
 * - Results recorded for an ejected host (requests begun before the ejection) are ignored.
 *
 * Counters: `ejections` (enforced, total), `detected` (outliers found, enforced or not),
 * `ejectedNow`. `version` changes whenever the ejected set does: a caller that filters endpoints
 * with healthyEndpoints() can rebuild its balancer only then.
 */
export class OutlierDetector {
  readonly intervalMs: number;
  readonly maxFailures: number;
  readonly enforcingPercent: number;
  readonly maxEjectionPercent: number;
  readonly baseEjectionTimeMs: number;
  ejections = 0;
  detected = 0;
  private readonly now: () => number;
  private readonly random: () => number;
  private readonly hosts = new Map<string, HostState>();
  private hostCount = -1;
  private ejectedCount = 0;
  private nextExpiry = Infinity;
  private versionNo = 0;

  constructor(cfg: PassiveHealthCheck, opts: OutlierDetectorOptions) {
    const d = DEFAULT_PASSIVE_HEALTH_CHECK;
    this.intervalMs = cfg.intervalMs > 0 ? cfg.intervalMs : d.intervalMs;
    this.maxFailures = cfg.maxFailures > 0 ? Math.floor(cfg.maxFailures) : d.maxFailures;
    this.enforcingPercent = Math.min(100, Math.max(0, cfg.enforcingConsecutive5xx));
    this.maxEjectionPercent = Math.min(100, Math.max(0, cfg.maxEjectionPercent));
    this.baseEjectionTimeMs = cfg.baseEjectionTimeMs >= 0 ? cfg.baseEjectionTimeMs : d.baseEjectionTimeMs;
    this.now = opts.now;
    this.random = opts.random ?? Math.random;
  }

  /** The current endpoint set: hosts not in it are forgotten (their state with them). */
  setHosts(keys: Iterable<string>): void {
    const keep = new Set(keys);
    for (const [k, st] of this.hosts) {
      if (!keep.has(k)) {
        if (st.ejected) {
          this.ejectedCount--;
          this.versionNo++;
        }
        this.hosts.delete(k);
      }
    }
    for (const k of keep) if (!this.hosts.has(k)) this.hosts.set(k, newState());
    this.hostCount = keep.size;
  }

  /** One response from `epKey`: true for a 5xx, 'connect-failure' for a failed connect, false otherwise. */
  record(epKey: string, result: boolean | 'connect-failure'): void {
    let st = this.hosts.get(epKey);
    if (st === undefined) {
      st = newState();
      this.hosts.set(epKey, st);
    }
    if (st.ejected) {
      if (this.now() < st.until) return;
      this.uneject(st, this.now());
    }
    if (result === false) {
      st.consecutive = 0;
      return;
    }
    if (++st.consecutive < this.maxFailures) return;
    st.consecutive = 0;
    this.detected++;
    const now = this.now();
    this.expire(now);
    if (!this.mayEject()) return;
    if (this.random() * 100 >= this.enforcingPercent) return;
    st.times++;
    st.ejected = true;
    st.until = now + Math.min(this.baseEjectionTimeMs * st.times, Math.max(MAX_EJECTION_TIME_MS, this.baseEjectionTimeMs));
    if (st.until < this.nextExpiry) this.nextExpiry = st.until;
    this.ejectedCount++;
    this.ejections++;
    this.versionNo++;
  }

  isEjected(epKey: string): boolean {
    const st = this.hosts.get(epKey);
    if (st === undefined || !st.ejected) return false;
    const now = this.now();
    if (now < st.until) return true;
    this.uneject(st, now);
    return false;
  }

  get ejectedNow(): number {
    this.expire(this.now());
    return this.ejectedCount;
  }

  /** Changes whenever the set of ejected hosts does (expired ejections are applied first). */
  get version(): number {
    this.expire(this.now());
    return this.versionNo;
  }

  /**
   * `all` less the ejected hosts: `all` itself when none is ejected. Envoy's panic rule: when
   * fewer than 50 % of the hosts would remain, all of them are returned (ejection ignored).
   */
  healthyEndpoints(all: readonly Endpoint[]): readonly Endpoint[] {
    if (this.ejectedNow === 0) return all;
    const out: Endpoint[] = [];
    for (const ep of all) if (!this.isEjected(`${ep.host}:${ep.port}`)) out.push(ep);
    if (out.length * 100 < all.length * PANIC_THRESHOLD_PERCENT) return all;
    return out;
  }

  /** The interval sweep: returns expired ejections and decays ejection multipliers. */
  sweep(): void {
    const now = this.now();
    this.expire(now);
    for (const st of this.hosts.values()) {
      if (!st.ejected && st.times > 0 && now - st.lastUneject >= this.intervalMs) st.times--;
    }
  }

  private mayEject(): boolean {
    if (this.maxEjectionPercent <= 0) return false;
    if (this.ejectedCount === 0) return true;
    const total = this.hostCount >= 0 ? this.hostCount : this.hosts.size;
    return (this.ejectedCount + 1) * 100 <= this.maxEjectionPercent * total;
  }

  private uneject(st: HostState, now: number): void {
    st.ejected = false;
    st.consecutive = 0;
    st.lastUneject = now;
    this.ejectedCount--;
    this.versionNo++;
  }

  private expire(now: number): void {
    if (this.ejectedCount === 0 || now < this.nextExpiry) return;
    let next = Infinity;
    for (const st of this.hosts.values()) {
      if (!st.ejected) continue;
      if (now >= st.until) this.uneject(st, now);
      else if (st.until < next) next = st.until;
    }
    this.nextExpiry = next;
  }
}

function newState(): HostState {
  return { consecutive: 0, ejected: false, until: 0, times: 0, lastUneject: -Infinity };
}

// ---------------------------------------------------------------------------------------------
// Retries

export const RETRY_BASE_MS = 25;
export const RETRY_MAX_MS = 250;

/**
 * Envoy's default retry back-off: fully jittered exponential. Before retry `attempt` (1 = the
 * first retry) wait a uniform time in [0, min((2^attempt − 1) × 25 ms, 250 ms)): 0–24 ms, 0–74 ms,
 * 0–174 ms, then 0–249 ms.
 */
export function retryBackoffMs(attempt: number, random: () => number): number {
  const a = attempt >= 1 ? Math.min(Math.floor(attempt), 30) : 1;
  const upper = Math.min((2 ** a - 1) * RETRY_BASE_MS, RETRY_MAX_MS);
  const ms = Math.floor(random() * upper);
  return ms >= upper ? upper - 1 : ms < 0 ? 0 : ms;
}

export interface RetryPolicy {
  /** Envoy retry_on conditions: 5xx, gateway-error, reset, connect-failure, retriable-4xx, refused-stream, retriable-status-codes. */
  readonly retryOn: readonly string[];
  readonly retryOnStatusCodes: readonly number[];
  readonly retryOnConnectFailure: boolean;
}

/**
 * What happened to one attempt. `reset`: the connection or stream failed after the request was
 * sent (disconnect, reset); `timeout`: the upstream did not answer within the per-try time (the
 * overall route timeout ends the request instead and is never retried); `refused-stream`: an
 * HTTP/2 REFUSED_STREAM (the upstream did not process the request).
 */
export type AttemptOutcome =
  | { readonly kind: 'status'; readonly status: number }
  | { readonly kind: 'connect-failure' }
  | { readonly kind: 'reset' }
  | { readonly kind: 'timeout' }
  | { readonly kind: 'refused-stream' };

const ON_5XX = 1;
const ON_GATEWAY = 2;
const ON_RESET = 4;
const ON_CONNECT = 8;
const ON_4XX = 16;
const ON_CODES = 32;
const ON_REFUSED = 64;

const compiled = new WeakMap<RetryPolicy, number>();

function retryMask(policy: RetryPolicy): number {
  let m = compiled.get(policy);
  if (m !== undefined) return m;
  m = policy.retryOnConnectFailure ? ON_CONNECT : 0;
  if (policy.retryOnStatusCodes.length > 0) m |= ON_CODES;
  for (const c of policy.retryOn) {
    switch (c.trim().toLowerCase()) {
      case '5xx':
        m |= ON_5XX;
        break;
      case 'gateway-error':
        m |= ON_GATEWAY;
        break;
      case 'reset':
        m |= ON_RESET;
        break;
      case 'connect-failure':
        m |= ON_CONNECT;
        break;
      case 'retriable-4xx':
        m |= ON_4XX;
        break;
      case 'retriable-status-codes':
        m |= ON_CODES;
        break;
      case 'refused-stream':
        m |= ON_REFUSED;
        break;
      default:
        // Conditions meshd does not evaluate (retriable-headers, envoy-ratelimited, gRPC
        // status conditions, ...) never trigger a retry.
        break;
    }
  }
  compiled.set(policy, m);
  return m;
}

/** RFC 9110 §9.2.2 idempotent methods (CONNECT and PATCH are not). */
export function isIdempotentMethod(method: string): boolean {
  switch (method) {
    case 'GET':
    case 'HEAD':
    case 'OPTIONS':
    case 'PUT':
    case 'DELETE':
    case 'TRACE':
      return true;
    default: {
      const u = method.toUpperCase();
      return u !== method && isIdempotentMethod(u);
    }
  }
}

/**
 * Whether this outcome of an attempt should be retried under `policy` (the caller checks the
 * retry count, the retry circuit breaker and the route timeout).
 *
 * Conditions as Envoy's retry_on:
 *   5xx             any 5xx status, connect failure, reset, per-try timeout, refused stream
 *   gateway-error   502/503/504, connect failure, reset, per-try timeout, refused stream
 *   reset           connect failure, reset, per-try timeout, refused stream
 *   connect-failure connect failure (also Consul's RetryOnConnectFailure)
 *   retriable-4xx   409
 *   retriable-status-codes  a status in retryOnStatusCodes (a non-empty list enables it, as
 *                   Consul adds the condition whenever it sends codes)
 *   refused-stream  HTTP/2 REFUSED_STREAM
 *
 * meshd's method rule (idempotentOnly, on by default): a request may be replayed only if the
 * upstream cannot have acted on it, or if acting twice is harmless. So a connect failure and a
 * refused stream (the upstream never received or never processed the request) are retried for
 * every method; any other outcome only for idempotent methods (GET, HEAD, OPTIONS, PUT, DELETE,
 * TRACE). `{ idempotentOnly: false }` gives Envoy's behaviour, which ignores the method.
 */
export function shouldRetry(policy: RetryPolicy, outcome: AttemptOutcome, method: string, opts?: { idempotentOnly: boolean }): boolean {
  const m = retryMask(policy);
  if (m === 0) return false;
  let eligible: boolean;
  let safe = false;
  switch (outcome.kind) {
    case 'connect-failure':
      eligible = (m & (ON_CONNECT | ON_5XX | ON_GATEWAY | ON_RESET)) !== 0;
      safe = true;
      break;
    case 'refused-stream':
      eligible = (m & (ON_REFUSED | ON_5XX | ON_GATEWAY | ON_RESET)) !== 0;
      safe = true;
      break;
    case 'reset':
    case 'timeout':
      eligible = (m & (ON_5XX | ON_GATEWAY | ON_RESET)) !== 0;
      break;
    case 'status': {
      const s = outcome.status;
      eligible =
        ((m & ON_5XX) !== 0 && s >= 500 && s <= 599) ||
        ((m & ON_GATEWAY) !== 0 && (s === 502 || s === 503 || s === 504)) ||
        ((m & ON_4XX) !== 0 && s === 409) ||
        ((m & ON_CODES) !== 0 && policy.retryOnStatusCodes.includes(s));
      break;
    }
  }
  if (!eligible) return false;
  if (safe || opts?.idempotentOnly === false) return true;
  return isIdempotentMethod(method);
}
