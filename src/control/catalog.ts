// The service catalog: Consul service definitions (`PUT /v1/agent/service/register`, with
// `Connect.SidecarService` expanded the way Consul's agent expands it), their health checks
// (TTL, HTTP, TCP, alias), and Consul's JSON shapes for /v1/agent/service(s), /v1/agent/checks
// and /v1/health/{service,connect}.
// Runs on: the agent's control thread. Decoding happens here, at the edge; the store only
// ever holds validated registrations. The probes of HTTP and TCP checks run in checks.ts and
// report back through setCheckResult.

import { createHash } from 'node:crypto';
import type { Store } from './store.ts';
import {
  DATACENTER_RE,
  FieldError,
  type JsonObject,
  optNumber,
  optObject,
  optString,
  optStringMap,
  parseDuration,
  pick,
  reqString,
} from './decode.ts';
import { splitHostPort } from './checks.ts';

export const SERVICES = 'catalog/services';
export const CHECKS = 'catalog/checks';

/** Service names become SPIFFE path segments, so they use the segment alphabet. */
export const SERVICE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** Consul's naming: the sidecar of service ID `web-1` is `web-1-sidecar-proxy`. */
export const SIDECAR_SUFFIX = '-sidecar-proxy';
/**
 * Consul's `sidecar_min_port`/`sidecar_max_port` defaults: a `sidecar_service` without a Port
 * gets the lowest port of this range that no other registration on this agent uses (the agent
 * does not probe the OS; a port taken by another program makes the proxy fail to listen).
 */
export const SIDECAR_MIN_PORT = 21000;
export const SIDECAR_MAX_PORT = 21255;
/** Consul's checks.MinInterval: a shorter Interval is raised to it, as Consul does. */
export const MIN_CHECK_INTERVAL_MS = 1000;
/** Consul's default Timeout of HTTP and TCP checks. */
export const DEFAULT_CHECK_TIMEOUT_MS = 10_000;
/** Interval of the default "Connect Sidecar Listening" TCP check (Consul: 10s). */
export const SIDECAR_CHECK_INTERVAL_MS = 10_000;
/** Consul reaps services critical for DeregisterCriticalServiceAfter, but never sooner than 1m. */
export const MIN_DEREGISTER_AFTER_MS = 60_000;
/**
 * Consul's check_update_interval: a probe whose status did not change but whose output did
 * (a body with a timestamp) is written at most this often, so blocking queries are not woken
 * on every run.
 */
export const OUTPUT_UPDATE_INTERVAL_MS = 5 * 60_000;

/**
 * '' a typical service; 'ingress-gateway' and 'mesh-gateway' as `meshd connect gateway -ingress
 * -register` and `-mesh -register` register them.
 */
export type ServiceKind = '' | 'connect-proxy' | 'ingress-gateway' | 'mesh-gateway';

/** One of a service's TaggedAddresses (Consul's api.ServiceAddress). */
export interface ServiceAddress {
  readonly Address: string;
  readonly Port: number;
}
export type CheckStatus = 'passing' | 'warning' | 'critical';

export interface UpstreamConfig {
  readonly DestinationType: 'service';
  readonly DestinationName: string;
  /** As registered; "" means the proxy's default, 127.0.0.1. */
  readonly LocalBindAddress: string;
  readonly LocalBindPort: number;
  /** Another (federated) datacenter the upstream is in; absent: the local one. */
  readonly Datacenter?: string;
  /** Consul's upstream MeshGateway: how to reach another datacenter; absent: not set. */
  readonly MeshGateway?: { readonly Mode: 'none' | 'local' | 'remote' };
}

export interface ProxyConfig {
  readonly DestinationServiceName: string;
  readonly DestinationServiceID: string;
  readonly LocalServiceAddress: string;
  readonly LocalServicePort: number;
  /** Absent when there are none (Consul's omitempty). */
  readonly Upstreams?: readonly UpstreamConfig[];
  /** The proxy's own MeshGateway mode, for upstreams that set none; absent: not set. */
  readonly MeshGateway?: { readonly Mode: 'none' | 'local' | 'remote' };
}

export interface ServiceRecord {
  readonly ID: string;
  readonly Service: string;
  readonly Kind: ServiceKind;
  readonly Address: string;
  readonly Port: number;
  readonly Tags: string[];
  readonly Meta: Record<string, string>;
  readonly Proxy: ProxyConfig | null;
  /**
   * Consul's TaggedAddresses (`lan`, `wan`, ...): a mesh gateway's LAN and WAN listeners; the
   * federation state of a datacenter lists its gateways' `wan` ones. Absent when none.
   */
  readonly TaggedAddresses?: Record<string, ServiceAddress>;
  /** Registered by its parent's Connect.SidecarService: deregistered with the parent. */
  readonly LocallyRegisteredAsSidecar?: true;
}

interface CheckCommon {
  readonly CheckID: string;
  readonly Name: string;
  readonly ServiceID: string;
  readonly ServiceName: string;
  readonly Status: CheckStatus;
  readonly Output: string;
  /** Present only when set. */
  readonly Notes?: string;
  readonly DeregisterCriticalServiceAfterMs?: number;
}

/** Lets `check.TTLMs` be read on any check (undefined unless it is a TTL check). */
interface NotTtl extends CheckCommon {
  readonly TTLMs?: never;
}

export interface TtlCheck extends CheckCommon {
  readonly Type: 'ttl';
  readonly TTLMs: number;
}

export interface HttpCheck extends NotTtl {
  readonly Type: 'http';
  readonly HTTP: string;
  readonly Method: string;
  readonly Header: Readonly<Record<string, readonly string[]>>;
  readonly Body: string;
  readonly DisableRedirects: boolean;
  readonly TLSSkipVerify: boolean;
  readonly TLSServerName: string;
  readonly IntervalMs: number;
  readonly TimeoutMs: number;
}

export interface TcpCheck extends NotTtl {
  readonly Type: 'tcp';
  readonly TCP: string;
  readonly IntervalMs: number;
  readonly TimeoutMs: number;
}

/** Mirrors the worst status of another service's checks on this agent (Consul's AliasService). */
export interface AliasCheck extends NotTtl {
  readonly Type: 'alias';
  readonly AliasService: string;
}

export type CheckDefinition = TtlCheck | HttpCheck | TcpCheck | AliasCheck;
/** The checks the agent probes itself (checks.ts). */
export type ProbeCheck = HttpCheck | TcpCheck;

export type CheckRecord = CheckDefinition & {
  /** Epoch ms after which a TTL check that was not refreshed turns critical (0 for other types). */
  readonly ExpiresAt: number;
  /** Epoch ms when the check last turned critical; 0 while it is not. */
  readonly CriticalSince?: number;
};

export interface NodeInfo {
  readonly Node: string;
  readonly Address: string;
  readonly Datacenter: string;
}

export interface SidecarRegistration {
  /** Consul's defaults applied; Port 0 means "assign one from the sidecar range" at registration. */
  readonly service: ServiceRecord;
  /**
   * The sidecar's own Check/Checks; null means Consul's defaults, made once the port is known:
   * a TCP check on the listener and an alias check of the parent.
   */
  readonly checks: readonly CheckDefinition[] | null;
}

export interface Registration {
  readonly service: ServiceRecord;
  /** The first check (Check, else Checks[0]); null without checks. */
  readonly check: CheckDefinition | null;
  /** The checks after the first, in order; absent when there are none. */
  readonly moreChecks?: readonly CheckDefinition[];
  /** From Connect.SidecarService; absent without one. */
  readonly sidecar?: SidecarRegistration;
}

/** Every check of a registration (not its sidecar's), in registration order. */
export function registrationChecks(reg: Registration): CheckDefinition[] {
  return reg.check === null ? [] : [reg.check, ...(reg.moreChecks ?? [])];
}

const STATUSES: readonly CheckStatus[] = ['passing', 'warning', 'critical'];

// ------------------------------------------------------------------------------- decoding

function norm(key: string): string {
  return key.replaceAll('_', '').toLowerCase();
}

/**
 * Rejects keys outside `allowed`; keys in `unsupported` get the reason meshd refuses them,
 * every other unknown key is "unknown field". Either way the error names the field.
 */
function checkKeys(obj: JsonObject, allowed: readonly string[], unsupported: Readonly<Record<string, string>>, path: string): void {
  const ok = new Set(allowed.map(norm));
  const why = new Map(Object.entries(unsupported).map(([k, v]) => [norm(k), v]));
  for (const k of Object.keys(obj)) {
    const n = norm(k);
    if (ok.has(n)) continue;
    const field = path === '' ? k : `${path}.${k}`;
    const reason = why.get(n);
    throw new FieldError(field, reason === undefined ? 'unknown field' : `is not supported by meshd: ${reason}`);
  }
}

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

function optBool(obj: JsonObject, key: string, path: string): boolean | undefined {
  const v = pick(obj, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw new FieldError(path, 'must be true or false');
  return v;
}

function optPort(obj: JsonObject, key: string, path: string): number | undefined {
  const v = optNumber(obj, key, path);
  if (v === undefined) return undefined;
  if (!Number.isInteger(v) || v < 0 || v > 65535) throw new FieldError(path, 'must be an integer 0..65535');
  return v;
}

function optTags(obj: JsonObject, path: string): string[] | undefined {
  const raw = pick(obj, 'Tags');
  if (raw === undefined || raw === null) return undefined;
  if (!Array.isArray(raw) || raw.some((t) => typeof t !== 'string')) throw new FieldError(path, 'must be a list of strings');
  return [...(raw as string[])];
}

/** Only the default namespace and partition exist here (Consul Enterprise's are refused). */
function defaultOnly(obj: JsonObject, key: string, path: string): void {
  const v = optString(obj, key, path);
  if (v !== undefined && v !== '' && v !== 'default') throw new FieldError(path, `must be "default" (meshd has no ${key.toLowerCase()}s), got ${JSON.stringify(v)}`);
}

/** A list of objects; one object is accepted as a one-element list (an HCL block). */
function objectList(obj: JsonObject, key: string, path: string): JsonObject[] {
  const raw = pick(obj, key);
  if (raw === undefined || raw === null) return [];
  const list = Array.isArray(raw) ? (raw as unknown[]) : [raw];
  return list.map((item, i) => {
    if (item === null || typeof item !== 'object' || Array.isArray(item)) throw new FieldError(`${path}[${i}]`, 'must be an object');
    return item as JsonObject;
  });
}

const SERVICE_KEYS = ['ID', 'Name', 'Kind', 'Tags', 'Port', 'Address', 'TaggedAddresses', 'Meta', 'Check', 'Checks', 'Proxy', 'Connect', 'EnableTagOverride', 'Namespace', 'Partition'];
const SERVICE_UNSUPPORTED: Record<string, string> = {
  Weights: 'meshd does not serve DNS, so there is nothing to weight',
  SocketPath: 'Unix sockets are not supported; use Address and Port',
  Locality: 'locality-aware routing is not implemented',
  Token: 'pass the token with -token or X-Consul-Token',
};
/** A sidecar has one address (TaggedAddresses are for gateways and typical services). */
const SIDECAR_UNSUPPORTED: Record<string, string> = { ...SERVICE_UNSUPPORTED, TaggedAddresses: 'a sidecar is reached at its Address and Port' };
const SIDECAR_KEYS = ['Name', 'Kind', 'Tags', 'Port', 'Address', 'Meta', 'Check', 'Checks', 'Proxy', 'EnableTagOverride', 'Namespace', 'Partition'];
const CHECK_KEYS = [
  'CheckID',
  'ID',
  'Name',
  'Notes',
  'Status',
  'TTL',
  'HTTP',
  'Method',
  'Header',
  'Body',
  'DisableRedirects',
  'TLSSkipVerify',
  'TLSServerName',
  'TCP',
  'Interval',
  'Timeout',
  'AliasService',
  'DeregisterCriticalServiceAfter',
];
const CHECK_UNSUPPORTED: Record<string, string> = {
  Args: 'script checks are not run by meshd; use HTTP, TCP or TTL',
  ScriptArgs: 'script checks are not run by meshd; use HTTP, TCP or TTL',
  Shell: 'script checks are not run by meshd; use HTTP, TCP or TTL',
  DockerContainerID: 'Docker checks are not run by meshd; use HTTP, TCP or TTL',
  GRPC: 'gRPC checks are not run by meshd; use HTTP, TCP or TTL',
  GRPCUseTLS: 'gRPC checks are not run by meshd; use HTTP, TCP or TTL',
  H2PING: 'H2PING checks are not run by meshd; use HTTP, TCP or TTL',
  H2PingUseTLS: 'H2PING checks are not run by meshd; use HTTP, TCP or TTL',
  UDP: 'UDP checks are not run by meshd; use HTTP, TCP or TTL',
  OSService: 'OS service checks are not run by meshd; use HTTP, TCP or TTL',
  AliasNode: 'there is one node; use AliasService',
  SuccessBeforePassing: 'status changes take effect on the first result',
  FailuresBeforeWarning: 'status changes take effect on the first result',
  FailuresBeforeCritical: 'status changes take effect on the first result',
  OutputMaxSize: 'output is capped at 4 KiB',
  ServiceID: 'a check in a service definition belongs to that service',
};
const PROXY_KEYS = ['DestinationServiceName', 'DestinationServiceID', 'LocalServiceAddress', 'LocalServicePort', 'Upstreams', 'MeshGateway'];
const PROXY_UNSUPPORTED: Record<string, string> = {
  Config: 'set the protocol and timeouts with a service-defaults config entry',
  Mode: 'transparent proxying is not implemented',
  TransparentProxy: 'transparent proxying is not implemented',
  Expose: 'expose paths are not implemented',
  LocalServiceSocketPath: 'Unix sockets are not supported; use LocalServiceAddress and LocalServicePort',
  AccessLogs: 'access logs are not implemented',
  EnvoyExtensions: 'there is no Envoy here',
};
const UPSTREAM_KEYS = ['DestinationName', 'DestinationType', 'DestinationNamespace', 'DestinationPartition', 'Datacenter', 'LocalBindAddress', 'LocalBindPort', 'MeshGateway'];
const UPSTREAM_UNSUPPORTED: Record<string, string> = {
  Config: 'set upstream settings with a service-defaults config entry (UpstreamConfig)',
  LocalBindSocketPath: 'Unix sockets are not supported; use LocalBindPort',
  LocalBindSocketMode: 'Unix sockets are not supported; use LocalBindPort',
  DestinationPeer: 'cluster peering is not implemented',
  CentrallyConfigured: 'upstreams come from the registration',
};

interface Owner {
  readonly id: string;
  readonly name: string;
}

function decodeCheck(c: JsonObject, path: string, owner: Owner, defaultId: string): CheckDefinition {
  checkKeys(c, CHECK_KEYS, CHECK_UNSUPPORTED, path);
  const ttl = optString(c, 'TTL', join(path, 'TTL')) || undefined;
  const http = optString(c, 'HTTP', join(path, 'HTTP')) || undefined;
  const tcp = optString(c, 'TCP', join(path, 'TCP')) || undefined;
  const alias = optString(c, 'AliasService', join(path, 'AliasService')) || undefined;
  const kinds = [ttl, http, tcp, alias].filter((x) => x !== undefined).length;
  if (kinds === 0) throw new FieldError(join(path, 'TTL'), 'is required: a check needs one of TTL, HTTP, TCP or AliasService');
  if (kinds > 1) throw new FieldError(path, 'set only one of TTL, HTTP, TCP and AliasService');

  const status = (optString(c, 'Status', join(path, 'Status')) || 'critical') as CheckStatus;
  if (!STATUSES.includes(status)) throw new FieldError(join(path, 'Status'), 'must be passing, warning or critical');
  const checkId = optString(c, 'CheckID', join(path, 'CheckID')) || optString(c, 'ID', join(path, 'ID')) || defaultId;
  const notes = optString(c, 'Notes', join(path, 'Notes'));
  const deregRaw = optString(c, 'DeregisterCriticalServiceAfter', join(path, 'DeregisterCriticalServiceAfter'));
  let deregMs: number | undefined;
  if (deregRaw !== undefined && deregRaw !== '') {
    deregMs = parseDuration(deregRaw, join(path, 'DeregisterCriticalServiceAfter'));
    if (deregMs <= 0) throw new FieldError(join(path, 'DeregisterCriticalServiceAfter'), 'must be greater than 0');
  }
  const common = {
    CheckID: checkId,
    Name: optString(c, 'Name', join(path, 'Name')) || `Service '${owner.name}' check`,
    ServiceID: owner.id,
    ServiceName: owner.name,
    Status: status,
    Output: '',
    ...(notes === undefined || notes === '' ? {} : { Notes: notes }),
    ...(deregMs === undefined ? {} : { DeregisterCriticalServiceAfterMs: deregMs }),
  };

  // Settings that belong to another check type are refused, not ignored.
  const onlyWith = (keys: readonly string[], allowedHere: boolean, what: string): void => {
    if (allowedHere) return;
    for (const k of keys) if (pick(c, k) !== undefined) throw new FieldError(join(path, k), `is only valid with ${what}`);
  };
  onlyWith(['Method', 'Header', 'Body', 'DisableRedirects', 'TLSSkipVerify', 'TLSServerName'], http !== undefined, 'an HTTP check');
  onlyWith(['Interval', 'Timeout'], http !== undefined || tcp !== undefined, 'an HTTP or TCP check');

  if (ttl !== undefined) {
    const ttlMs = parseDuration(ttl, join(path, 'TTL'));
    if (ttlMs < 1000) throw new FieldError(join(path, 'TTL'), 'must be at least 1s');
    return { ...common, Type: 'ttl', TTLMs: ttlMs };
  }
  if (alias !== undefined) {
    if (alias === owner.id) throw new FieldError(join(path, 'AliasService'), 'cannot alias the service the check belongs to');
    return { ...common, Type: 'alias', AliasService: alias };
  }
  const intervalRaw = optString(c, 'Interval', join(path, 'Interval'));
  if (intervalRaw === undefined || intervalRaw === '') throw new FieldError(join(path, 'Interval'), 'is required for HTTP and TCP checks');
  const interval = parseDuration(intervalRaw, join(path, 'Interval'));
  if (interval <= 0) throw new FieldError(join(path, 'Interval'), 'must be greater than 0');
  const timeoutRaw = optString(c, 'Timeout', join(path, 'Timeout'));
  const timeout = timeoutRaw === undefined || timeoutRaw === '' ? 0 : parseDuration(timeoutRaw, join(path, 'Timeout'));
  const timing = { IntervalMs: Math.max(MIN_CHECK_INTERVAL_MS, interval), TimeoutMs: timeout > 0 ? timeout : DEFAULT_CHECK_TIMEOUT_MS };

  if (tcp !== undefined) {
    if (splitHostPort(tcp) === null) throw new FieldError(join(path, 'TCP'), `must be HOST:PORT (for example 127.0.0.1:8080), got ${JSON.stringify(tcp)}`);
    return { ...common, Type: 'tcp', TCP: tcp, ...timing };
  }
  const target = http as string;
  let url: URL;
  try {
    url = new URL(target);
  } catch {
    throw new FieldError(join(path, 'HTTP'), `must be an http:// or https:// URL, got ${JSON.stringify(target)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new FieldError(join(path, 'HTTP'), `must be an http:// or https:// URL, got ${JSON.stringify(target)}`);
  const method = optString(c, 'Method', join(path, 'Method')) || 'GET';
  if (!/^[A-Za-z]{1,16}$/.test(method)) throw new FieldError(join(path, 'Method'), `must be an HTTP method such as GET or HEAD, got ${JSON.stringify(method)}`);
  const header: Record<string, string[]> = {};
  const h = optObject(c, 'Header', join(path, 'Header'));
  for (const [k, v] of Object.entries(h ?? {})) {
    if (!/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(k)) throw new FieldError(`${join(path, 'Header')}.${k}`, 'is not a valid header name');
    const values = typeof v === 'string' ? [v] : v;
    if (!Array.isArray(values) || values.some((x) => typeof x !== 'string' || /[\r\n]/.test(x))) {
      throw new FieldError(`${join(path, 'Header')}.${k}`, 'must be a list of strings (one line each)');
    }
    header[k] = [...(values as string[])];
  }
  return {
    ...common,
    Type: 'http',
    HTTP: target,
    Method: method.toUpperCase(),
    Header: header,
    Body: optString(c, 'Body', join(path, 'Body')) ?? '',
    DisableRedirects: optBool(c, 'DisableRedirects', join(path, 'DisableRedirects')) ?? false,
    TLSSkipVerify: optBool(c, 'TLSSkipVerify', join(path, 'TLSSkipVerify')) ?? false,
    TLSServerName: optString(c, 'TLSServerName', join(path, 'TLSServerName')) ?? '',
    ...timing,
  };
}

/** `Check` then `Checks`, as Consul combines them; CheckIDs default to service:<id>[:<n>]. */
function decodeChecks(body: JsonObject, path: string, owner: Owner): CheckDefinition[] | null {
  const raws: [JsonObject, string][] = [];
  const one = optObject(body, 'Check', join(path, 'Check'));
  if (one !== undefined) raws.push([one, join(path, 'Check')]);
  objectList(body, 'Checks', join(path, 'Checks')).forEach((c, i) => raws.push([c, `${join(path, 'Checks')}[${i}]`]));
  if (one === undefined && pick(body, 'Checks') === undefined) return null;
  const checks = raws.map(([c, p], i) => decodeCheck(c, p, owner, raws.length > 1 ? `service:${owner.id}:${i + 1}` : `service:${owner.id}`));
  const seen = new Set<string>();
  checks.forEach((c, i) => {
    if (seen.has(c.CheckID)) throw new FieldError(raws[i]?.[1] ?? path, `CheckID ${JSON.stringify(c.CheckID)} is used twice`);
    seen.add(c.CheckID);
  });
  return checks;
}

function decodeUpstreams(p: JsonObject, path: string): UpstreamConfig[] {
  const out: UpstreamConfig[] = [];
  objectList(p, 'Upstreams', join(path, 'Upstreams')).forEach((u, i) => {
    const at = `${join(path, 'Upstreams')}[${i}]`;
    checkKeys(u, UPSTREAM_KEYS, UPSTREAM_UNSUPPORTED, at);
    const name = reqString(u, 'DestinationName', join(at, 'DestinationName'));
    if (!SERVICE_NAME_RE.test(name)) throw new FieldError(join(at, 'DestinationName'), 'is not a valid service name');
    const type = optString(u, 'DestinationType', join(at, 'DestinationType')) || 'service';
    if (type !== 'service') throw new FieldError(join(at, 'DestinationType'), `must be "service" (prepared queries are not supported), got ${JSON.stringify(type)}`);
    defaultOnly(u, 'DestinationNamespace', join(at, 'DestinationNamespace'));
    defaultOnly(u, 'DestinationPartition', join(at, 'DestinationPartition'));
    const dc = optString(u, 'Datacenter', join(at, 'Datacenter')) ?? '';
    if (dc !== '' && !DATACENTER_RE.test(dc)) throw new FieldError(join(at, 'Datacenter'), `${JSON.stringify(dc)} is not a valid datacenter name`);
    const mode = decodeMeshGateway(u, join(at, 'MeshGateway'));
    const port = optPort(u, 'LocalBindPort', join(at, 'LocalBindPort')) ?? 0;
    if (port === 0) throw new FieldError(join(at, 'LocalBindPort'), 'is required (1..65535)');
    const addr = optString(u, 'LocalBindAddress', join(at, 'LocalBindAddress')) ?? '';
    for (const prev of out) {
      if (prev.DestinationName === name && (prev.Datacenter ?? '') === dc) throw new FieldError(join(at, 'DestinationName'), `${JSON.stringify(name)}${dc === '' ? '' : ` in ${dc}`} is listed twice`);
      if (prev.LocalBindPort === port && (prev.LocalBindAddress || '127.0.0.1') === (addr || '127.0.0.1')) throw new FieldError(join(at, 'LocalBindPort'), `${port} is already bound by upstream ${prev.DestinationName}`);
    }
    out.push({ DestinationType: 'service', DestinationName: name, LocalBindAddress: addr, LocalBindPort: port, ...(dc === '' ? {} : { Datacenter: dc }), ...(mode === undefined ? {} : { MeshGateway: { Mode: mode } }) });
  });
  return out;
}

/** `MeshGateway { Mode }` of an upstream or a proxy: absent or an empty Mode is "not set". */
function decodeMeshGateway(o: JsonObject, path: string): 'none' | 'local' | 'remote' | undefined {
  const mg = optObject(o, 'MeshGateway', path);
  if (mg === undefined) return undefined;
  checkKeys(mg, ['Mode'], {}, path);
  const mode = optString(mg, 'Mode', join(path, 'Mode')) ?? '';
  if (mode === '') return undefined;
  if (mode !== 'none' && mode !== 'local' && mode !== 'remote') throw new FieldError(join(path, 'Mode'), `must be "none", "local" or "remote", got ${JSON.stringify(mode)}`);
  return mode;
}

interface ProxyFields {
  readonly DestinationServiceName?: string;
  readonly DestinationServiceID?: string;
  readonly LocalServiceAddress?: string;
  readonly LocalServicePort?: number;
  readonly Upstreams: UpstreamConfig[];
  readonly MeshGateway?: { readonly Mode: 'none' | 'local' | 'remote' };
}

function decodeProxyFields(p: JsonObject, path: string): ProxyFields {
  checkKeys(p, PROXY_KEYS, PROXY_UNSUPPORTED, path);
  const dest = optString(p, 'DestinationServiceName', join(path, 'DestinationServiceName')) || undefined;
  if (dest !== undefined && !SERVICE_NAME_RE.test(dest)) throw new FieldError(join(path, 'DestinationServiceName'), 'is not a valid service name');
  const destId = optString(p, 'DestinationServiceID', join(path, 'DestinationServiceID')) || undefined;
  const lsa = optString(p, 'LocalServiceAddress', join(path, 'LocalServiceAddress')) || undefined;
  const lsp = optPort(p, 'LocalServicePort', join(path, 'LocalServicePort')) || undefined;
  const mode = decodeMeshGateway(p, join(path, 'MeshGateway'));
  return {
    ...(dest === undefined ? {} : { DestinationServiceName: dest }),
    ...(destId === undefined ? {} : { DestinationServiceID: destId }),
    ...(lsa === undefined ? {} : { LocalServiceAddress: lsa }),
    ...(lsp === undefined ? {} : { LocalServicePort: lsp }),
    Upstreams: decodeUpstreams(p, path),
    ...(mode === undefined ? {} : { MeshGateway: { Mode: mode } }),
  };
}

function withUpstreams(base: Omit<ProxyConfig, 'Upstreams'>, upstreams: readonly UpstreamConfig[]): ProxyConfig {
  return upstreams.length === 0 ? base : { ...base, Upstreams: upstreams };
}

function decodeSidecar(s: JsonObject, path: string, parent: ServiceRecord): SidecarRegistration {
  if (pick(s, 'ID') !== undefined) throw new FieldError(join(path, 'ID'), `cannot be set: a sidecar's ID is always <service ID>${SIDECAR_SUFFIX}`);
  if (pick(s, 'Connect') !== undefined) throw new FieldError(join(path, 'Connect'), 'a sidecar cannot have a sidecar');
  checkKeys(s, SIDECAR_KEYS, SIDECAR_UNSUPPORTED, path);
  const kind = optString(s, 'Kind', join(path, 'Kind')) ?? '';
  if (kind !== '' && kind !== 'connect-proxy') throw new FieldError(join(path, 'Kind'), 'is always "connect-proxy"');
  optBool(s, 'EnableTagOverride', join(path, 'EnableTagOverride'));
  defaultOnly(s, 'Namespace', join(path, 'Namespace'));
  defaultOnly(s, 'Partition', join(path, 'Partition'));
  const id = `${parent.ID}${SIDECAR_SUFFIX}`;
  const name = optString(s, 'Name', join(path, 'Name')) || `${parent.Service}${SIDECAR_SUFFIX}`;
  if (!SERVICE_NAME_RE.test(name)) throw new FieldError(join(path, 'Name'), 'must be 1-128 characters of letters, digits, ".", "_" or "-", starting with a letter or digit');
  const tags = optTags(s, join(path, 'Tags')) ?? [];
  const meta = optStringMap(s, 'Meta', join(path, 'Meta')) ?? {};
  const address = optString(s, 'Address', join(path, 'Address')) || parent.Address;
  const p = optObject(s, 'Proxy', join(path, 'Proxy'));
  const pf = p === undefined ? { Upstreams: [] } : decodeProxyFields(p, join(path, 'Proxy'));
  const service: ServiceRecord = {
    ID: id,
    Service: name,
    Kind: 'connect-proxy',
    Address: address,
    Port: optPort(s, 'Port', join(path, 'Port')) ?? 0,
    // Consul: the parent's tags and meta unless the sidecar sets its own.
    Tags: tags.length > 0 ? tags : [...parent.Tags],
    Meta: Object.keys(meta).length > 0 ? meta : { ...parent.Meta },
    Proxy: withUpstreams(
      {
        DestinationServiceName: pf.DestinationServiceName ?? parent.Service,
        DestinationServiceID: pf.DestinationServiceID ?? parent.ID,
        // Consul: the app is on 127.0.0.1 at the parent's port unless the proxy says otherwise.
        LocalServiceAddress: pf.LocalServiceAddress ?? '127.0.0.1',
        LocalServicePort: pf.LocalServicePort ?? parent.Port,
        ...(pf.MeshGateway === undefined ? {} : { MeshGateway: pf.MeshGateway }),
      },
      pf.Upstreams,
    ),
    LocallyRegisteredAsSidecar: true,
  };
  // Consul: an empty check list means the default checks too.
  const checks = decodeChecks(s, path, { id, name });
  return { service, checks: checks === null || checks.length === 0 ? null : checks };
}

/**
 * Consul's default sidecar checks (agent/sidecar_service.go): "Connect Sidecar Listening", a
 * TCP check every 10s on the sidecar's address (else its LocalServiceAddress) and port, and
 * "Connect Sidecar Aliasing <parent>", which mirrors the parent service's checks.
 */
export function defaultSidecarChecks(sidecar: ServiceRecord): CheckDefinition[] {
  const parentId = sidecar.Proxy?.DestinationServiceID ?? sidecar.ID.slice(0, -SIDECAR_SUFFIX.length);
  const host = sidecar.Address || sidecar.Proxy?.LocalServiceAddress || '127.0.0.1';
  const common = { ServiceID: sidecar.ID, ServiceName: sidecar.Service, Status: 'critical' as const, Output: '' };
  return [
    {
      ...common,
      CheckID: `service:${sidecar.ID}:1`,
      Name: 'Connect Sidecar Listening',
      Type: 'tcp',
      TCP: host.includes(':') ? `[${host}]:${sidecar.Port}` : `${host}:${sidecar.Port}`,
      IntervalMs: SIDECAR_CHECK_INTERVAL_MS,
      TimeoutMs: DEFAULT_CHECK_TIMEOUT_MS,
    },
    { ...common, CheckID: `service:${sidecar.ID}:2`, Name: `Connect Sidecar Aliasing ${parentId}`, Type: 'alias', AliasService: parentId },
  ];
}

/** Consul's tag names are free-form; meshd keeps them to a safe alphabet (`lan`, `wan`, `lan_ipv4`...). */
const TAGGED_ADDRESS_KEY_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/**
 * `TaggedAddresses`: `{ "<tag>": { "Address": "...", "Port": n } }` (Consul's map of
 * api.ServiceAddress). Every entry needs an Address (a host name or IP, no port, no spaces) and
 * a Port 1..65535: the federation computes where other datacenters dial from these.
 */
function decodeTaggedAddresses(body: JsonObject): Record<string, ServiceAddress> | undefined {
  const raw = optObject(body, 'TaggedAddresses', 'TaggedAddresses');
  if (raw === undefined) return undefined;
  const out: Record<string, ServiceAddress> = {};
  for (const [tag, v] of Object.entries(raw)) {
    const at = `TaggedAddresses.${tag}`;
    if (!TAGGED_ADDRESS_KEY_RE.test(tag)) throw new FieldError(at, 'the tag must be 1-64 letters, digits, ".", "_" or "-" (for example "lan" or "wan")');
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new FieldError(at, 'must be an object with Address and Port');
    const entry = v as JsonObject;
    checkKeys(entry, ['Address', 'Port'], {}, at);
    const address = reqString(entry, 'Address', `${at}.Address`);
    if (address === '' || /[\s/]/.test(address) || /^[^:]+:\d+$/.test(address)) throw new FieldError(`${at}.Address`, `must be a host name or IP address without a port, got ${JSON.stringify(address)}`);
    const port = optPort(entry, 'Port', `${at}.Port`) ?? 0;
    if (port === 0) throw new FieldError(`${at}.Port`, 'is required (1..65535)');
    Object.defineProperty(out, tag, { value: { Address: address, Port: port }, enumerable: true, writable: true, configurable: true });
  }
  return Object.keys(out).length === 0 ? undefined : out;
}

/** Decodes a Consul `AgentServiceRegistration` body (keys case-insensitive, snake_case too). */
export function decodeRegistration(body: JsonObject): Registration {
  const name = reqString(body, 'Name');
  if (!SERVICE_NAME_RE.test(name)) throw new FieldError('Name', 'must be 1-128 characters of letters, digits, ".", "_" or "-", starting with a letter or digit');
  checkKeys(body, SERVICE_KEYS, SERVICE_UNSUPPORTED, '');
  // Consul: an empty ID means the service name.
  const id = optString(body, 'ID') || name;
  if (id.includes('/')) throw new FieldError('ID', 'must not contain "/" (it is a path segment of the agent API)');
  const kindRaw = optString(body, 'Kind') ?? '';
  if (kindRaw !== '' && kindRaw !== 'connect-proxy' && kindRaw !== 'ingress-gateway' && kindRaw !== 'mesh-gateway') {
    throw new FieldError('Kind', `unsupported kind ${JSON.stringify(kindRaw)} (use "connect-proxy", "ingress-gateway", "mesh-gateway" or omit it)`);
  }
  const kind: ServiceKind = kindRaw;
  const port = optPort(body, 'Port', 'Port') ?? 0;
  // Consul: a mesh gateway is dialled at its Port, so it needs one.
  if (kind === 'mesh-gateway' && port === 0) throw new FieldError('Port', 'is required (1..65535) when Kind is "mesh-gateway"');
  const tagged = decodeTaggedAddresses(body);
  const tags = optTags(body, 'Tags') ?? [];
  optBool(body, 'EnableTagOverride', 'EnableTagOverride');
  defaultOnly(body, 'Namespace', 'Namespace');
  defaultOnly(body, 'Partition', 'Partition');
  let proxy: ProxyConfig | null = null;
  const p = optObject(body, 'Proxy');
  if (kind === 'connect-proxy') {
    if (p === undefined) throw new FieldError('Proxy', 'is required when Kind is "connect-proxy"');
    const pf = decodeProxyFields(p, 'Proxy');
    if (pf.DestinationServiceName === undefined) throw new FieldError('Proxy.DestinationServiceName', 'is required');
    proxy = withUpstreams(
      {
        DestinationServiceName: pf.DestinationServiceName,
        DestinationServiceID: pf.DestinationServiceID ?? pf.DestinationServiceName,
        LocalServiceAddress: pf.LocalServiceAddress ?? '',
        LocalServicePort: pf.LocalServicePort ?? 0,
        ...(pf.MeshGateway === undefined ? {} : { MeshGateway: pf.MeshGateway }),
      },
      pf.Upstreams,
    );
  } else if (p !== undefined) {
    throw new FieldError('Proxy', 'is only valid with Kind "connect-proxy"');
  }
  const service: ServiceRecord = {
    ID: id,
    Service: name,
    Kind: kind,
    Address: optString(body, 'Address') ?? '',
    Port: port,
    Tags: tags,
    Meta: optStringMap(body, 'Meta') ?? {},
    Proxy: proxy,
    ...(tagged === undefined ? {} : { TaggedAddresses: tagged }),
  };
  const checks = decodeChecks(body, '', { id, name }) ?? [];

  let sidecar: SidecarRegistration | undefined;
  const connect = optObject(body, 'Connect');
  if (connect !== undefined) {
    checkKeys(connect, ['SidecarService', 'Native'], {}, 'Connect');
    if (optBool(connect, 'Native', 'Connect.Native') === true) throw new FieldError('Connect.Native', 'Connect-native services are not supported: run a sidecar (Connect.SidecarService)');
    const s = optObject(connect, 'SidecarService', 'Connect.SidecarService');
    if (s !== undefined) {
      if (kind !== '') throw new FieldError('Connect.SidecarService', `a ${kind} cannot have a sidecar`);
      sidecar = decodeSidecar(s, 'Connect.SidecarService', service);
    }
  }
  return {
    service,
    check: checks[0] ?? null,
    ...(checks.length > 1 ? { moreChecks: checks.slice(1) } : {}),
    ...(sidecar === undefined ? {} : { sidecar }),
  };
}

/**
 * Keys whose HCL blocks (`check { … }`, `connect { sidecar_service { … } }`) the parser turns
 * into one-element lists; collapse them before decoding (hcl.ts collapseBlocks). `checks`,
 * `upstreams` and `services` stay lists.
 */
export const SERVICE_OBJECT_KEYS: ReadonlySet<string> = new Set(['service', 'check', 'connect', 'sidecarservice', 'proxy', 'meta', 'header']);

// ------------------------------------------------------------------------------- JSON shapes

/** Go's time.Duration.String() for whole milliseconds: 10s, 1m30s, 1.5s, 500ms. */
export function formatDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms < 1000) return `${ms}ms`;
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  const s = (ms % 60_000) / 1000;
  if (h > 0) return `${h}h${m}m${s}s`;
  if (m > 0) return `${m}m${s}s`;
  return `${s}s`;
}

/** Consul's api.AgentService (omitempty fields left out), for /v1/agent/service(s). */
export function agentServiceJson(s: ServiceRecord, datacenter: string): Record<string, unknown> {
  const body: Record<string, unknown> = {
    ...(s.Kind === '' ? {} : { Kind: s.Kind }),
    ID: s.ID,
    Service: s.Service,
    Tags: s.Tags,
    Meta: s.Meta,
    Port: s.Port,
    Address: s.Address,
    Weights: { Passing: 1, Warning: 1 },
    EnableTagOverride: false,
    ...(s.Proxy === null ? {} : { Proxy: s.Proxy }),
    ...(s.TaggedAddresses === undefined ? {} : { TaggedAddresses: s.TaggedAddresses }),
  };
  // What Consul's hash-based blocking compares: the service as registered.
  const hash = createHash('sha256').update(JSON.stringify(body)).digest('hex').slice(0, 16);
  return { ...body, ContentHash: hash, Datacenter: datacenter, Namespace: 'default' };
}

/** Consul's api.AgentCheck, for /v1/agent/checks. */
export function agentCheckJson(c: CheckRecord, node: string, tags: readonly string[]): Record<string, unknown> {
  return {
    Node: node,
    CheckID: c.CheckID,
    Name: c.Name,
    Status: c.Status,
    Notes: c.Notes ?? '',
    Output: c.Output,
    ServiceID: c.ServiceID,
    ServiceName: c.ServiceName,
    ServiceTags: tags,
    Type: c.Type,
    Interval: c.Type === 'http' || c.Type === 'tcp' ? formatDuration(c.IntervalMs) : '',
    Timeout: c.Type === 'http' || c.Type === 'tcp' ? formatDuration(c.TimeoutMs) : '',
    Definition: {
      ...(c.Type === 'http' ? { HTTP: c.HTTP, Method: c.Method, Header: c.Header, TLSSkipVerify: c.TLSSkipVerify } : {}),
      ...(c.Type === 'tcp' ? { TCP: c.TCP } : {}),
      ...(c.Type === 'ttl' ? { TTL: formatDuration(c.TTLMs) } : {}),
      ...(c.Type === 'alias' ? { AliasService: c.AliasService } : {}),
      ...(c.DeregisterCriticalServiceAfterMs === undefined ? {} : { DeregisterCriticalServiceAfter: formatDuration(c.DeregisterCriticalServiceAfterMs) }),
    },
  };
}

/** The fields that define what a probe does; a re-registration with the same ones keeps the status. */
function probeSignature(c: CheckDefinition): string {
  switch (c.Type) {
    case 'http':
      return JSON.stringify([c.Type, c.HTTP, c.Method, c.Header, c.Body, c.DisableRedirects, c.TLSSkipVerify, c.TLSServerName, c.IntervalMs, c.TimeoutMs]);
    case 'tcp':
      return JSON.stringify([c.Type, c.TCP, c.IntervalMs, c.TimeoutMs]);
    case 'alias':
      return JSON.stringify([c.Type, c.AliasService]);
    case 'ttl':
      return JSON.stringify([c.Type, c.TTLMs]);
  }
}

const RANK: Readonly<Record<CheckStatus, number>> = { passing: 0, warning: 1, critical: 2 };

export class Catalog {
  readonly #store: Store;
  readonly #node: NodeInfo;
  readonly #now: () => number;
  /** When each check's output was last written (for OUTPUT_UPDATE_INTERVAL_MS). */
  readonly #outputAt = new Map<string, number>();

  constructor(store: Store, node: NodeInfo, now: () => number) {
    this.#store = store;
    this.#node = node;
    this.#now = now;
  }

  get node(): NodeInfo {
    return this.#node;
  }

  /**
   * Registers a service with its checks, and its Connect sidecar when it has one (assigning
   * the sidecar a port from 21000-21255 when it names none). Re-registration replaces the
   * service's checks, as Consul's agent does; a re-registered HTTP, TCP or alias check with an
   * unchanged definition keeps its status. Returns the IDs registered.
   */
  register(reg: Registration): string[] {
    let sidecar: { service: ServiceRecord; checks: CheckDefinition[] } | null = null;
    const previousSidecar = this.#store.get<ServiceRecord>(SERVICES, `${reg.service.ID}${SIDECAR_SUFFIX}`)?.value;
    if (reg.sidecar !== undefined) {
      const s = reg.sidecar.service;
      const service = s.Port === 0 ? { ...s, Port: this.#sidecarPort(s.ID) } : s;
      sidecar = { service, checks: reg.sidecar.checks === null ? defaultSidecarChecks(service) : [...reg.sidecar.checks] };
    }
    this.#put(reg.service, registrationChecks(reg));
    const ids = [reg.service.ID];
    if (sidecar !== null) {
      this.#put(sidecar.service, sidecar.checks);
      ids.push(sidecar.service.ID);
    } else if (previousSidecar?.LocallyRegisteredAsSidecar === true) {
      // The definition no longer has a sidecar_service: the one it made goes away.
      this.#remove(previousSidecar.ID);
    }
    this.#refreshAliases();
    return ids;
  }

  /** Deregisters a service and its checks, and the sidecar its definition registered. */
  deregister(serviceId: string): boolean {
    if (this.#store.get(SERVICES, serviceId) === undefined) return false;
    this.#remove(serviceId);
    const sidecar = this.#store.get<ServiceRecord>(SERVICES, `${serviceId}${SIDECAR_SUFFIX}`)?.value;
    if (sidecar?.LocallyRegisteredAsSidecar === true && sidecar.Proxy?.DestinationServiceID === serviceId) this.#remove(sidecar.ID);
    this.#refreshAliases();
    return true;
  }

  service(serviceId: string): ServiceRecord | undefined {
    return this.#store.get<ServiceRecord>(SERVICES, serviceId)?.value;
  }

  check(checkId: string): CheckRecord | undefined {
    return this.#store.get<CheckRecord>(CHECKS, checkId)?.value;
  }

  checks(): CheckRecord[] {
    return this.#store.list<CheckRecord>(CHECKS).map((e) => e.value);
  }

  /** The HTTP and TCP checks the agent must probe (checks.ts). */
  probeChecks(): ProbeCheck[] {
    return this.checks().filter((c): c is CheckRecord & ProbeCheck => c.Type === 'http' || c.Type === 'tcp');
  }

  /** `PUT /v1/agent/check/{pass,warn,fail}/:id`: sets a check's status and refreshes its TTL. */
  updateCheck(checkId: string, status: CheckStatus, output: string): boolean {
    const c = this.#store.get<CheckRecord>(CHECKS, checkId);
    if (c === undefined) return false;
    this.#write(c.value, status, output, { ExpiresAt: c.value.Type === 'ttl' ? this.#now() + c.value.TTLMs : 0 });
    this.#refreshAliases();
    return true;
  }

  /**
   * A probe's result. Written when the status changes; an output-only change is written at most
   * every OUTPUT_UPDATE_INTERVAL_MS. Returns false when the check no longer exists.
   */
  setCheckResult(checkId: string, status: CheckStatus, output: string): boolean {
    const c = this.#store.get<CheckRecord>(CHECKS, checkId)?.value;
    if (c === undefined || (c.Type !== 'http' && c.Type !== 'tcp')) return false;
    if (c.Status === status) {
      if (c.Output === output) return true;
      const last = this.#outputAt.get(checkId);
      if (last !== undefined && this.#now() - last < OUTPUT_UPDATE_INTERVAL_MS) return true;
    }
    this.#write(c, status, output, {});
    this.#refreshAliases();
    return true;
  }

  /** Turns expired TTL checks critical; called by the agent's sweep timer. */
  expireChecks(): number {
    const now = this.#now();
    let changed = 0;
    for (const c of this.checks()) {
      if (c.Type === 'ttl' && c.Status !== 'critical' && c.ExpiresAt <= now) {
        this.#write(c, 'critical', 'TTL expired', {});
        changed++;
      }
    }
    if (changed > 0) this.#refreshAliases();
    return changed;
  }

  /**
   * Deregisters services with a check critical for longer than its
   * DeregisterCriticalServiceAfter (at least 1m, as Consul's reaper); returns their IDs.
   */
  reapCritical(): string[] {
    const now = this.#now();
    const doomed = new Set<string>();
    for (const c of this.checks()) {
      const after = c.DeregisterCriticalServiceAfterMs;
      if (after === undefined || c.Status !== 'critical' || c.CriticalSince === undefined || c.CriticalSince === 0) continue;
      if (now - c.CriticalSince >= Math.max(after, MIN_DEREGISTER_AFTER_MS)) doomed.add(c.ServiceID);
    }
    return [...doomed].filter((id) => this.deregister(id));
  }

  services(): ServiceRecord[] {
    return this.#store.list<ServiceRecord>(SERVICES).map((e) => e.value);
  }

  /**
   * Consul's `/v1/health/connect/:service` (sidecars of a service) or
   * `/v1/health/service/:service` shapes: [{Node, Service, Checks}].
   */
  health(name: string, connect: boolean, passingOnly: boolean): object[] {
    const checks = this.checks();
    const out: object[] = [];
    for (const e of this.#store.list<ServiceRecord>(SERVICES)) {
      const s = e.value;
      const match = connect ? s.Kind === 'connect-proxy' && s.Proxy?.DestinationServiceName === name : s.Service === name;
      if (!match) continue;
      const own = checks.filter((c) => c.ServiceID === s.ID);
      if (passingOnly && own.some((c) => c.Status !== 'passing')) continue;
      out.push({
        Node: { ID: '', Node: this.#node.Node, Address: this.#node.Address, Datacenter: this.#node.Datacenter, TaggedAddresses: null, Meta: {} },
        Service: {
          ID: s.ID,
          Service: s.Service,
          Kind: s.Kind,
          Tags: s.Tags,
          Address: s.Address,
          Port: s.Port,
          Meta: s.Meta,
          Proxy: s.Proxy,
          ...(s.TaggedAddresses === undefined ? {} : { TaggedAddresses: s.TaggedAddresses }),
          Namespace: 'default',
          Datacenter: this.#node.Datacenter,
          CreateIndex: e.createIndex,
          ModifyIndex: e.modifyIndex,
        },
        Checks: [
          { Node: this.#node.Node, CheckID: 'serfHealth', Name: 'Serf Health Status', Status: 'passing', ServiceID: '', ServiceName: '', Output: 'Agent alive and reachable', Type: '' },
          ...own.map((c) => ({ Node: this.#node.Node, CheckID: c.CheckID, Name: c.Name, Status: c.Status, ServiceID: c.ServiceID, ServiceName: c.ServiceName, Output: c.Output, Type: c.Type })),
        ],
      });
    }
    return out;
  }

  /** Lowest free port of the sidecar range; a sidecar being re-registered keeps its port. */
  #sidecarPort(sidecarId: string): number {
    const used = new Set<number>();
    for (const s of this.services()) {
      if (s.Port < SIDECAR_MIN_PORT || s.Port > SIDECAR_MAX_PORT) continue;
      if (s.ID === sidecarId) return s.Port;
      used.add(s.Port);
    }
    for (let p = SIDECAR_MIN_PORT; p <= SIDECAR_MAX_PORT; p++) if (!used.has(p)) return p;
    throw new FieldError('Connect.SidecarService.Port', `is not set and no port is left in the sidecar range ${SIDECAR_MIN_PORT}-${SIDECAR_MAX_PORT}`);
  }

  #put(service: ServiceRecord, checks: readonly CheckDefinition[]): void {
    const keep = new Set(checks.map((c) => c.CheckID));
    for (const c of this.checks()) {
      if (c.ServiceID === service.ID && !keep.has(c.CheckID)) this.#deleteCheck(c.CheckID);
    }
    this.#store.put(SERVICES, service.ID, service);
    const now = this.#now();
    for (const def of checks) {
      const prev = this.check(def.CheckID);
      if (prev !== undefined && def.Type !== 'ttl' && prev.ServiceID === def.ServiceID && probeSignature(prev) === probeSignature(def)) {
        const next: CheckRecord = { ...def, Status: prev.Status, Output: prev.Output, ExpiresAt: 0, CriticalSince: prev.CriticalSince ?? 0 };
        if (JSON.stringify(next) !== JSON.stringify(prev)) this.#store.put(CHECKS, def.CheckID, next);
        continue;
      }
      this.#outputAt.delete(def.CheckID);
      const record: CheckRecord = { ...def, ExpiresAt: def.Type === 'ttl' ? now + def.TTLMs : 0, CriticalSince: def.Status === 'critical' ? now : 0 };
      this.#store.put(CHECKS, def.CheckID, record);
    }
  }

  #remove(serviceId: string): void {
    for (const c of this.checks()) if (c.ServiceID === serviceId) this.#deleteCheck(c.CheckID);
    this.#store.delete(SERVICES, serviceId);
  }

  #deleteCheck(checkId: string): void {
    this.#outputAt.delete(checkId);
    this.#store.delete(CHECKS, checkId);
  }

  #write(c: CheckRecord, status: CheckStatus, output: string, extra: { ExpiresAt?: number }): void {
    const now = this.#now();
    const criticalSince = status !== 'critical' ? 0 : c.Status === 'critical' && (c.CriticalSince ?? 0) > 0 ? (c.CriticalSince as number) : now;
    this.#outputAt.set(c.CheckID, now);
    this.#store.put(CHECKS, c.CheckID, { ...c, ...extra, Status: status, Output: output, CriticalSince: criticalSince });
  }

  /**
   * Alias checks take the worst status of the aliased service's checks (passing when it has
   * none; critical when it is not registered). Repeated until stable, for aliases of aliases.
   */
  #refreshAliases(): void {
    for (let round = 0; round < 8; round++) {
      let changed = false;
      const all = this.checks();
      for (const a of all) {
        if (a.Type !== 'alias') continue;
        let status: CheckStatus;
        let output: string;
        if (this.#store.get(SERVICES, a.AliasService) === undefined) {
          status = 'critical';
          output = `Aliased service "${a.AliasService}" is not registered on this agent`;
        } else {
          const target = all.filter((c) => c.ServiceID === a.AliasService);
          status = target.reduce<CheckStatus>((worst, c) => (RANK[c.Status] > RANK[worst] ? c.Status : worst), 'passing');
          const bad = target.filter((c) => c.Status !== 'passing').map((c) => `${c.Name} (${c.Status})`);
          output = target.length === 0 ? 'No checks found; the aliased service counts as passing' : bad.length === 0 ? 'All checks passing' : `Not passing: ${bad.join(', ')}`;
        }
        if (status !== a.Status || output !== a.Output) {
          this.#write(a, status, output, {});
          changed = true;
        }
      }
      if (!changed) return;
    }
  }
}
