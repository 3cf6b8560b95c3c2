// The `service-defaults` config entry (consul-mesh.md §3.5): per-service settings, of which
// meshd's intentions need `Protocol` (an L7 intention only applies to an http-like
// destination; on tcp it is a deny), and the discovery chain needs `Protocol` and the
// downstream's `UpstreamConfig` (connect timeout, protocol override, circuit-breaker limits,
// passive health checks). The simple scalar fields Consul has are decoded and typed so that
// a Consul file loads unchanged; the nested features meshd does not implement (Destination,
// Expose paths, EnvoyExtensions, RateLimits, and within UpstreamConfig: EnvoyListenerJSON,
// EnvoyClusterJSON, MeshGateway, BalanceOutboundConnections, Peer) are refused when they
// carry anything, rather than stored and silently ignored. An empty value (`{}`, `[]`, null)
// is accepted, because Consul's own GET output carries `"Expose": {}`.
//
// Normalisation: Protocol (also an UpstreamConfig item's) is lower-cased (as Consul does) and
// the entry's defaults to "tcp". PassiveHealthCheck durations are read from a Go duration
// string or a number of nanoseconds (Consul's API JSON writes them as nanoseconds, since
// those fields have no string marshalling there) and written back as nanoseconds.
//
// Stricter than Consul: a negative ConnectTimeoutMs is refused (Consul clamps it to 0); an
// override naming the same upstream twice is refused.

import { FieldError, parseDuration, type JsonObject } from '../control/decode.ts';
import { SERVICE_NAME_RE } from '../control/catalog.ts';
import { MAX_DURATION_MS } from './service-router.ts';
import { ENTRY_COMMON_KEYS, expectKind, WireObject, decodeMeta, encodeMeta, ignoreReadOnlyIndexes, rejectEnterpriseTenancy } from './wire.ts';

/**
 * `tcp` and `http` are what meshd's data plane speaks. `http2` and `grpc` are valid Consul
 * values and are accepted; for intentions they count as http-like (L7 permissions apply),
 * the listener itself is the HTTP/1.1 one until meshd has HTTP/2.
 */
export const SERVICE_PROTOCOLS = ['tcp', 'http', 'http2', 'grpc'] as const;
export type ServiceProtocol = (typeof SERVICE_PROTOCOLS)[number];

export const PROXY_MODES = ['', 'direct', 'transparent'] as const;
export const MUTUAL_TLS_MODES = ['', 'strict', 'permissive'] as const;
export const MESH_GATEWAY_MODES = ['', 'none', 'local', 'remote'] as const;
export const BALANCE_MODES = ['', 'exact_balance'] as const;

export type ServiceDefaultsEntry = {
  readonly kind: 'service-defaults';
  readonly name: string;
  readonly meta: Readonly<Record<string, string>>;
  readonly protocol: ServiceProtocol;
  /** "" inherits proxy-defaults. */
  readonly mode: (typeof PROXY_MODES)[number];
  readonly transparentProxy: { readonly outboundListenerPort: number; readonly dialedDirectly: boolean } | null;
  readonly mutualTlsMode: (typeof MUTUAL_TLS_MODES)[number];
  readonly meshGatewayMode: (typeof MESH_GATEWAY_MODES)[number];
  readonly externalSni: string;
  /** 0: unlimited. */
  readonly maxInboundConnections: number;
  /** 0: the default (5000 ms). */
  readonly localConnectTimeoutMs: number;
  /** 0: the default (15000 ms). */
  readonly localRequestTimeoutMs: number;
  readonly balanceInboundConnections: (typeof BALANCE_MODES)[number];
  /** Per-upstream settings from this service's (the downstream's) point of view; null when absent. */
  readonly upstreamConfig: UpstreamConfig | null;
};

/** Circuit-breaker thresholds; null = not set (Envoy's default, 1024). */
export type UpstreamLimitsConfig = {
  readonly maxConnections: number | null;
  readonly maxPendingRequests: number | null;
  readonly maxConcurrentRequests: number | null;
};

/** Outlier detection; 0 / null = not set (Envoy's defaults: 10 s, 5, 100 %, 10 %, 30 s). */
export type PassiveHealthCheckConfig = {
  readonly intervalMs: number;
  readonly maxFailures: number;
  readonly enforcingConsecutive5xx: number | null;
  readonly maxEjectionPercent: number | null;
  readonly baseEjectionTimeMs: number | null;
};

export type UpstreamConfigItem = {
  /** '' = not set (the upstream's own protocol). */
  readonly protocol: ServiceProtocol | '';
  /** 0 = not set (the resolver's ConnectTimeout, else 5000). */
  readonly connectTimeoutMs: number;
  readonly limits: UpstreamLimitsConfig | null;
  readonly passiveHealthCheck: PassiveHealthCheckConfig | null;
};

export type UpstreamConfigOverride = UpstreamConfigItem & {
  /** The upstream service, an exact name. */
  readonly name: string;
};

export type UpstreamConfig = {
  readonly defaults: UpstreamConfigItem | null;
  readonly overrides: readonly UpstreamConfigOverride[];
};

/** True for the protocols on which L7 intentions apply. */
export function isHttpLike(protocol: ServiceProtocol): boolean {
  return protocol !== 'tcp';
}

const UNSUPPORTED = ['Destination', 'Expose', 'EnvoyExtensions', 'RateLimits'] as const;
const KEYS = [
  ...ENTRY_COMMON_KEYS, 'Protocol', 'Mode', 'TransparentProxy', 'MutualTLSMode', 'MeshGateway', 'ExternalSNI',
  'MaxInboundConnections', 'LocalConnectTimeoutMs', 'LocalRequestTimeoutMs', 'BalanceInboundConnections', 'UpstreamConfig', ...UNSUPPORTED,
];
const MAX_INT32 = 2 ** 31 - 1;
const MAX_UINT32 = 2 ** 32 - 1;
const UPSTREAM_UNSUPPORTED = ['EnvoyListenerJSON', 'EnvoyClusterJSON', 'MeshGateway', 'BalanceOutboundConnections', 'Peer'] as const;
const UPSTREAM_ITEM_KEYS = ['Name', 'Namespace', 'Partition', 'Protocol', 'ConnectTimeoutMs', 'Limits', 'PassiveHealthCheck', ...UPSTREAM_UNSUPPORTED];
const LIMITS_KEYS = ['MaxConnections', 'MaxPendingRequests', 'MaxConcurrentRequests'] as const;
const PHC_KEYS = ['Interval', 'MaxFailures', 'EnforcingConsecutive5xx', 'MaxEjectionPercent', 'BaseEjectionTime'];

function oneOf<T extends string>(obj: WireObject, key: string, allowed: readonly T[], normalise = (s: string) => s): T {
  const v = normalise(obj.string(key));
  if (!(allowed as readonly string[]).includes(v)) {
    throw new FieldError(obj.field(key), `must be one of ${allowed.filter((a) => a !== '').map((a) => JSON.stringify(a)).join(', ')}, got ${JSON.stringify(v)}`);
  }
  return v as T;
}

function isEmptyValue(v: unknown): boolean {
  if (v === undefined) return true;
  if (Array.isArray(v)) return v.length === 0;
  if (v !== null && typeof v === 'object') return Object.values(v).every(isEmptyValue);
  return v === '' || v === false || v === 0;
}

/** A duration given as a Go duration string or a number of nanoseconds, in milliseconds; null when absent. */
function nsOrStringDuration(obj: WireObject, key: string): number | null {
  const v = obj.one(key);
  if (v === undefined) return null;
  let ms: number;
  if (typeof v === 'number') {
    if (!Number.isInteger(v) || v < 0) throw new FieldError(obj.field(key), `must be a duration such as "10s" (or a whole, non-negative number of nanoseconds), got ${v}`);
    ms = v / 1e6;
  } else if (typeof v === 'string') {
    ms = v === '' ? 0 : parseDuration(v, obj.field(key));
  } else {
    throw new FieldError(obj.field(key), `must be a duration such as "10s", got ${JSON.stringify(v)}`);
  }
  ms = Math.round(ms * 1e6) / 1e6;
  if (ms > MAX_DURATION_MS) throw new FieldError(obj.field(key), `must be at most ${MAX_DURATION_MS}ms (about 24.8 days)`);
  return ms;
}

function nullableInt(obj: WireObject, key: string, max: number): number | null {
  return obj.has(key) ? obj.int(key, 0, max) : null;
}

function decodeUpstreamItem(u: WireObject, named: boolean): UpstreamConfigOverride {
  for (const key of UPSTREAM_UNSUPPORTED) {
    if (!isEmptyValue(u.raw(key))) {
      throw new FieldError(u.field(key), key === 'Peer' ? 'cluster peering is not supported by meshd' : 'is a Consul feature meshd does not implement; remove it');
    }
  }
  rejectEnterpriseTenancy(u);
  const name = u.string('Name');
  if (named) {
    if (name === '') throw new FieldError(u.field('Name'), 'is required');
    if (name === '*') throw new FieldError(u.field('Name'), 'Wildcard name is not supported');
    if (!SERVICE_NAME_RE.test(name)) throw new FieldError(u.field('Name'), `${JSON.stringify(name)} is not a valid service name`);
  } else if (name !== '') {
    throw new FieldError(u.field('Name'), 'must be empty');
  }
  const protocol = u.string('Protocol') === '' ? '' : oneOf(u, 'Protocol', SERVICE_PROTOCOLS, (s) => s.toLowerCase());
  const l = u.object('Limits', LIMITS_KEYS);
  const limits: UpstreamLimitsConfig | null =
    l === null
      ? null
      : {
          maxConnections: nullableInt(l, 'MaxConnections', MAX_INT32),
          maxPendingRequests: nullableInt(l, 'MaxPendingRequests', MAX_INT32),
          maxConcurrentRequests: nullableInt(l, 'MaxConcurrentRequests', MAX_INT32),
        };
  const p = u.object('PassiveHealthCheck', PHC_KEYS);
  const passiveHealthCheck: PassiveHealthCheckConfig | null =
    p === null
      ? null
      : {
          intervalMs: nsOrStringDuration(p, 'Interval') ?? 0,
          maxFailures: p.int('MaxFailures', 0, MAX_UINT32),
          enforcingConsecutive5xx: nullableInt(p, 'EnforcingConsecutive5xx', 100),
          maxEjectionPercent: nullableInt(p, 'MaxEjectionPercent', 100),
          baseEjectionTimeMs: nsOrStringDuration(p, 'BaseEjectionTime'),
        };
  return { name, protocol, connectTimeoutMs: u.int('ConnectTimeoutMs', 0, MAX_INT32), limits, passiveHealthCheck };
}

function decodeUpstreamConfig(e: WireObject): UpstreamConfig | null {
  const uc = e.object('UpstreamConfig', ['Defaults', 'Overrides']);
  if (uc === null) return null;
  const d = uc.object('Defaults', UPSTREAM_ITEM_KEYS);
  let defaults: UpstreamConfigItem | null = null;
  if (d !== null) {
    const { protocol, connectTimeoutMs, limits, passiveHealthCheck } = decodeUpstreamItem(d, false);
    defaults = { protocol, connectTimeoutMs, limits, passiveHealthCheck };
  }
  const seen = new Set<string>();
  const overrides = uc.objects('Overrides', UPSTREAM_ITEM_KEYS).map((o) => {
    const item = decodeUpstreamItem(o, true);
    if (seen.has(item.name)) throw new FieldError(o.field('Name'), `overrides ${JSON.stringify(item.name)} more than once`);
    seen.add(item.name);
    return item;
  });
  if (defaults === null && overrides.length === 0) return null;
  return { defaults, overrides };
}

/**
 * The settings a downstream's service-defaults give its upstream `upstream`: Defaults, then
 * the Override naming it laid over them field by field (as Consul merges them: a set
 * Protocol, ConnectTimeoutMs, Limits or PassiveHealthCheck replaces the default one whole).
 * Null when neither applies.
 */
export function resolveUpstreamConfig(config: UpstreamConfig | null, upstream: string): UpstreamConfigItem | null {
  if (config === null) return null;
  const o = config.overrides.find((x) => x.name === upstream);
  const d = config.defaults;
  if (o === undefined) return d;
  if (d === null) return { protocol: o.protocol, connectTimeoutMs: o.connectTimeoutMs, limits: o.limits, passiveHealthCheck: o.passiveHealthCheck };
  return {
    protocol: o.protocol !== '' ? o.protocol : d.protocol,
    connectTimeoutMs: o.connectTimeoutMs !== 0 ? o.connectTimeoutMs : d.connectTimeoutMs,
    limits: o.limits ?? d.limits,
    passiveHealthCheck: o.passiveHealthCheck ?? d.passiveHealthCheck,
  };
}

export function decodeServiceDefaults(raw: unknown): ServiceDefaultsEntry {
  const e = new WireObject(raw, '', KEYS);
  expectKind(e, 'service-defaults');
  ignoreReadOnlyIndexes(e);
  const name = e.string('Name');
  if (name === '') throw new FieldError('Name', 'is required');
  if (!SERVICE_NAME_RE.test(name)) throw new FieldError('Name', `${JSON.stringify(name)} is not a valid service name (service-defaults take an exact name, no wildcard)`);
  rejectEnterpriseTenancy(e);
  const meta = decodeMeta(e);
  for (const key of UNSUPPORTED) {
    if (!isEmptyValue(e.raw(key))) throw new FieldError(e.field(key), `is a Consul feature meshd does not implement; remove it`);
  }
  const protocol = e.string('Protocol') === '' ? 'tcp' : oneOf(e, 'Protocol', SERVICE_PROTOCOLS, (s) => s.toLowerCase());
  const tp = e.object('TransparentProxy', ['OutboundListenerPort', 'DialedDirectly']);
  const mg = e.object('MeshGateway', ['Mode']);
  return {
    kind: 'service-defaults',
    name,
    meta,
    protocol,
    mode: oneOf(e, 'Mode', PROXY_MODES),
    transparentProxy: tp === null ? null : { outboundListenerPort: tp.int('OutboundListenerPort', 0, 65535), dialedDirectly: tp.bool('DialedDirectly') },
    mutualTlsMode: oneOf(e, 'MutualTLSMode', MUTUAL_TLS_MODES),
    meshGatewayMode: mg === null ? '' : oneOf(mg, 'Mode', MESH_GATEWAY_MODES),
    externalSni: e.string('ExternalSNI'),
    maxInboundConnections: e.int('MaxInboundConnections', 0, MAX_INT32),
    localConnectTimeoutMs: e.int('LocalConnectTimeoutMs', 0, MAX_INT32),
    localRequestTimeoutMs: e.int('LocalRequestTimeoutMs', 0, MAX_INT32),
    balanceInboundConnections: oneOf(e, 'BalanceInboundConnections', BALANCE_MODES),
    upstreamConfig: decodeUpstreamConfig(e),
  };
}

function encodeUpstreamItem(u: UpstreamConfigItem, name: string): JsonObject {
  const out: JsonObject = {};
  if (name !== '') out.Name = name;
  if (u.protocol !== '') out.Protocol = u.protocol;
  if (u.connectTimeoutMs !== 0) out.ConnectTimeoutMs = u.connectTimeoutMs;
  if (u.limits !== null) {
    const l: JsonObject = {};
    if (u.limits.maxConnections !== null) l.MaxConnections = u.limits.maxConnections;
    if (u.limits.maxPendingRequests !== null) l.MaxPendingRequests = u.limits.maxPendingRequests;
    if (u.limits.maxConcurrentRequests !== null) l.MaxConcurrentRequests = u.limits.maxConcurrentRequests;
    out.Limits = l;
  }
  if (u.passiveHealthCheck !== null) {
    const p = u.passiveHealthCheck;
    const o: JsonObject = {};
    if (p.intervalMs !== 0) o.Interval = Math.round(p.intervalMs * 1e6);
    o.MaxFailures = p.maxFailures;
    if (p.enforcingConsecutive5xx !== null) o.EnforcingConsecutive5xx = p.enforcingConsecutive5xx;
    if (p.maxEjectionPercent !== null) o.MaxEjectionPercent = p.maxEjectionPercent;
    if (p.baseEjectionTimeMs !== null) o.BaseEjectionTime = Math.round(p.baseEjectionTimeMs * 1e6);
    out.PassiveHealthCheck = o;
  }
  return out;
}

/** Consul's JSON after Kind and Name, with its omitempty rules (MeshGateway and Expose are structs, always present). */
export function encodeServiceDefaultsBody(e: ServiceDefaultsEntry): JsonObject {
  const out: JsonObject = { Protocol: e.protocol };
  if (e.mode !== '') out.Mode = e.mode;
  if (e.transparentProxy !== null) {
    out.TransparentProxy = { OutboundListenerPort: e.transparentProxy.outboundListenerPort, DialedDirectly: e.transparentProxy.dialedDirectly };
  }
  if (e.mutualTlsMode !== '') out.MutualTLSMode = e.mutualTlsMode;
  out.MeshGateway = e.meshGatewayMode === '' ? {} : { Mode: e.meshGatewayMode };
  out.Expose = {};
  if (e.externalSni !== '') out.ExternalSNI = e.externalSni;
  if (e.maxInboundConnections !== 0) out.MaxInboundConnections = e.maxInboundConnections;
  if (e.localConnectTimeoutMs !== 0) out.LocalConnectTimeoutMs = e.localConnectTimeoutMs;
  if (e.localRequestTimeoutMs !== 0) out.LocalRequestTimeoutMs = e.localRequestTimeoutMs;
  if (e.balanceInboundConnections !== '') out.BalanceInboundConnections = e.balanceInboundConnections;
  if (e.upstreamConfig !== null) {
    const uc: JsonObject = {};
    if (e.upstreamConfig.defaults !== null) uc.Defaults = encodeUpstreamItem(e.upstreamConfig.defaults, '');
    if (e.upstreamConfig.overrides.length > 0) uc.Overrides = e.upstreamConfig.overrides.map((o) => encodeUpstreamItem(o, o.name));
    out.UpstreamConfig = uc;
  }
  const meta = encodeMeta(e.meta);
  if (meta !== undefined) out.Meta = meta;
  return out;
}
