// The discovery chain as the data plane consumes it: plain, structured-cloneable data that a
// proxy's control thread receives from the agent and hands to its workers in a snapshot.
// Durations are milliseconds; weights are integer basis points (1/10000). The Consul-shaped
// chain that `GET /v1/discovery-chain/:service` returns is a view of the same compilation
// (src/chain/compile.ts).

/** Consul's MeshGateway.Mode: dial the destination directly, through a local mesh gateway, or through one of the destination's datacenter. */
export type MeshGatewayMode = 'none' | 'local' | 'remote';

export type ChainProtocol = 'tcp' | 'http' | 'http2' | 'grpc';

export type LoadBalancerPolicy = 'round_robin' | 'random' | 'least_request' | 'ring_hash' | 'maglev';

export interface HashPolicy {
  /** '' when the policy hashes the source IP. */
  readonly field: '' | 'header' | 'cookie' | 'query_parameter';
  readonly fieldValue: string;
  readonly sourceIp: boolean;
  readonly terminal: boolean;
  /** Cookie policies only; null otherwise. */
  readonly cookie: { readonly session: boolean; readonly ttlMs: number; readonly path: string } | null;
}

export interface LoadBalancerSpec {
  readonly policy: LoadBalancerPolicy;
  /** least_request: hosts sampled per pick (Envoy's default 2). */
  readonly choiceCount: number;
  /** ring_hash only (Envoy defaults 1024 / 8M). */
  readonly minimumRingSize: number;
  readonly maximumRingSize: number;
  readonly hashPolicies: readonly HashPolicy[];
}

export interface HeaderModifiers {
  readonly add: Readonly<Record<string, string>>;
  readonly set: Readonly<Record<string, string>>;
  readonly remove: readonly string[];
}

export const NO_HEADER_MODIFIERS: HeaderModifiers = Object.freeze({ add: Object.freeze({}), set: Object.freeze({}), remove: Object.freeze([]) });

export function isEmptyHeaderModifiers(m: HeaderModifiers): boolean {
  return m.remove.length === 0 && Object.keys(m.add).length === 0 && Object.keys(m.set).length === 0;
}

/** One target: instances of `service` (optionally a subset), as Consul names it. */
export interface ChainTarget {
  /** Consul's target ID: `[<subset>.]<service>.<namespace>.<partition>.<datacenter>`. */
  readonly id: string;
  readonly service: string;
  /** '' for the unnamed subset (all instances). */
  readonly subset: string;
  /** bexpr over the health entry (`Service.Meta.k == v`, `Service.Tags contains t`); '' = all. */
  readonly filter: string;
  /** true: passing only; false: passing and warning. */
  readonly onlyPassing: boolean;
  readonly connectTimeoutMs: number;
  /** The resolver's RequestTimeout, used when no route sets one; 0 = none (15 s applies). */
  readonly requestTimeoutMs: number;
  readonly loadBalancer: LoadBalancerSpec;
  /** Target IDs tried in order when this target has no healthy instance. */
  readonly failover: readonly string[];
  /** The datacenter its instances are in. */
  readonly datacenter: string;
  /** The TLS SNI a connection to it sends (`[<subset>.]<service>.default.<dc>.internal.<td>`); '' without a trust domain. */
  readonly sni: string;
  /** How a connection reaches another datacenter (ignored for the local one). */
  readonly meshGatewayMode: MeshGatewayMode;
}

export interface RouteHeaderMatch {
  readonly name: string;
  readonly kind: 'present' | 'exact' | 'prefix' | 'suffix' | 'regex';
  /** '' for present. */
  readonly value: string;
  readonly invert: boolean;
}

export interface RouteQueryMatch {
  readonly name: string;
  readonly kind: 'present' | 'exact' | 'regex';
  readonly value: string;
}

export interface RouteMatch {
  readonly path: { readonly kind: 'exact' | 'prefix' | 'regex'; readonly value: string } | null;
  readonly headers: readonly RouteHeaderMatch[];
  readonly queryParams: readonly RouteQueryMatch[];
  /** Upper-case; empty = any method. */
  readonly methods: readonly string[];
}

export interface ChainSplit {
  /** 0..10000; the splits of one route sum to exactly 10000. */
  readonly weightBp: number;
  readonly targetId: string;
  readonly requestHeaders: HeaderModifiers;
  readonly responseHeaders: HeaderModifiers;
}

export interface RouteAction {
  /** Flattened splitters; a route straight to a resolver has one split of 10000. */
  readonly splits: readonly ChainSplit[];
  /** '' = none. Only with an exact or prefix path match. */
  readonly prefixRewrite: string;
  /** 0 = the target's RequestTimeout, else 15 s. Covers retries. */
  readonly requestTimeoutMs: number;
  /** 0 = none. */
  readonly idleTimeoutMs: number;
  readonly numRetries: number;
  readonly retryOnConnectFailure: boolean;
  readonly retryOn: readonly string[];
  readonly retryOnStatusCodes: readonly number[];
  readonly requestHeaders: HeaderModifiers;
  readonly responseHeaders: HeaderModifiers;
}

export interface ChainRoute {
  /** null = matches every request (the implicit catch-all, always last). */
  readonly match: RouteMatch | null;
  readonly action: RouteAction;
}

export interface UpstreamLimits {
  /** 0 = Envoy's default 1024. */
  readonly maxConnections: number;
  readonly maxPendingRequests: number;
  readonly maxConcurrentRequests: number;
}

export interface PassiveHealthCheck {
  readonly intervalMs: number;
  readonly maxFailures: number;
  readonly enforcingConsecutive5xx: number;
  readonly maxEjectionPercent: number;
  readonly baseEjectionTimeMs: number;
}

/** Envoy's outlier-detection defaults, which Consul leaves in place for unset fields. */
export const DEFAULT_PASSIVE_HEALTH_CHECK: PassiveHealthCheck = Object.freeze({
  intervalMs: 10_000,
  maxFailures: 5,
  enforcingConsecutive5xx: 100,
  maxEjectionPercent: 10,
  baseEjectionTimeMs: 30_000,
});

export interface DataPlaneChain {
  readonly serviceName: string;
  readonly protocol: ChainProtocol;
  /** For tcp: one catch-all route with one split (resolver only). */
  readonly routes: readonly ChainRoute[];
  readonly targets: Readonly<Record<string, ChainTarget>>;
  /** From the downstream's service-defaults UpstreamConfig (Overrides, then Defaults). */
  readonly limits: UpstreamLimits;
  readonly passiveHealthCheck: PassiveHealthCheck;
}
