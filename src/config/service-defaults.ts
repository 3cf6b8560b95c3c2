// The `service-defaults` config entry (consul-mesh.md §3.5): per-service settings, of which
// meshd's intentions need `Protocol` (an L7 intention only applies to an http-like
// destination; on tcp it is a deny). The simple scalar fields Consul has are decoded and
// typed so that a Consul file loads unchanged; the nested features meshd does not implement
// (UpstreamConfig, Destination, Expose paths, EnvoyExtensions, RateLimits) are refused when
// they carry anything, rather than stored and silently ignored. An empty value (`{}`, `[]`,
// null) is accepted, because Consul's own GET output carries `"Expose": {}`.
//
// Normalisation: Protocol is lower-cased (as Consul does) and defaults to "tcp".

import { FieldError, type JsonObject } from '../control/decode.ts';
import { SERVICE_NAME_RE } from '../control/catalog.ts';
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
};

/** True for the protocols on which L7 intentions apply. */
export function isHttpLike(protocol: ServiceProtocol): boolean {
  return protocol !== 'tcp';
}

const UNSUPPORTED = ['UpstreamConfig', 'Destination', 'Expose', 'EnvoyExtensions', 'RateLimits'] as const;
const KEYS = [
  ...ENTRY_COMMON_KEYS, 'Protocol', 'Mode', 'TransparentProxy', 'MutualTLSMode', 'MeshGateway', 'ExternalSNI',
  'MaxInboundConnections', 'LocalConnectTimeoutMs', 'LocalRequestTimeoutMs', 'BalanceInboundConnections', ...UNSUPPORTED,
];
const MAX_INT32 = 2 ** 31 - 1;

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
  };
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
  const meta = encodeMeta(e.meta);
  if (meta !== undefined) out.Meta = meta;
  return out;
}
