// The `proxy-defaults` config entry: mesh-wide proxy settings, one entry named "global". meshd
// takes its `MeshGateway.Mode`, the lowest-precedence source of an upstream's mesh-gateway mode
// (src/chain/compile.ts, meshGatewayModeFor). Consul's other fields configure Envoy (`Config`
// is Envoy's opaque map; AccessLogs, EnvoyExtensions, Expose, TransparentProxy...): they are
// refused when they carry anything, rather than stored and silently ignored; empty values are
// accepted because Consul's own GET output carries `"Expose": {}`.

import { FieldError, type JsonObject } from '../control/decode.ts';
import { MESH_GATEWAY_MODES } from './service-defaults.ts';
import { ENTRY_COMMON_KEYS, WireObject, decodeMeta, encodeMeta, expectKind, ignoreReadOnlyIndexes, rejectEnterpriseTenancy } from './wire.ts';

/** The only name Consul accepts for a proxy-defaults entry. */
export const PROXY_DEFAULTS_NAME = 'global';

export type ProxyDefaultsEntry = {
  readonly kind: 'proxy-defaults';
  readonly name: typeof PROXY_DEFAULTS_NAME;
  readonly meta: Readonly<Record<string, string>>;
  /** '' = not set (an upstream then goes to its destination directly: mode none). */
  readonly meshGatewayMode: (typeof MESH_GATEWAY_MODES)[number];
};

const UNSUPPORTED = ['Config', 'Mode', 'TransparentProxy', 'MutualTLSMode', 'Expose', 'AccessLogs', 'EnvoyExtensions', 'FailoverPolicy', 'PrioritizeByLocality'] as const;
const KEYS = [...ENTRY_COMMON_KEYS, 'MeshGateway', ...UNSUPPORTED];

function isEmptyValue(v: unknown): boolean {
  if (v === undefined || v === null) return true;
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === 'object') return Object.values(v).every(isEmptyValue);
  return v === '' || v === false || v === 0;
}

export function decodeProxyDefaults(raw: unknown): ProxyDefaultsEntry {
  const e = new WireObject(raw, '', KEYS);
  expectKind(e, 'proxy-defaults');
  ignoreReadOnlyIndexes(e);
  const name = e.string('Name');
  if (name !== PROXY_DEFAULTS_NAME) throw new FieldError('Name', `must be ${JSON.stringify(PROXY_DEFAULTS_NAME)} (there is one proxy-defaults entry), got ${JSON.stringify(name)}`);
  rejectEnterpriseTenancy(e);
  const meta = decodeMeta(e);
  for (const key of UNSUPPORTED) {
    if (!isEmptyValue(e.raw(key))) throw new FieldError(e.field(key), 'is a Consul feature meshd does not implement in proxy-defaults; remove it');
  }
  const mg = e.object('MeshGateway', ['Mode']);
  const mode = mg === null ? '' : mg.string('Mode');
  if (mg !== null && !(MESH_GATEWAY_MODES as readonly string[]).includes(mode)) {
    throw new FieldError(mg.field('Mode'), `must be one of "none", "local", "remote", got ${JSON.stringify(mode)}`);
  }
  return { kind: 'proxy-defaults', name: PROXY_DEFAULTS_NAME, meta, meshGatewayMode: mode as ProxyDefaultsEntry['meshGatewayMode'] };
}

/** Consul's JSON after Kind and Name (MeshGateway and Expose are structs, always present). */
export function encodeProxyDefaultsBody(e: ProxyDefaultsEntry): JsonObject {
  const out: JsonObject = { MeshGateway: e.meshGatewayMode === '' ? {} : { Mode: e.meshGatewayMode }, Expose: {} };
  const meta = encodeMeta(e.meta);
  if (meta !== undefined) out.Meta = meta;
  return out;
}
