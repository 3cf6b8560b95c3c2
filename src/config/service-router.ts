// The `service-router` config entry (consul-mesh.md §3.2): ordered L7 routes for one
// service, the top of its discovery chain. Decoding applies Consul's normalisation and
// validation (agent/structs/config_entry_discoverychain.go) and yields a domain value;
// encoding gives back Consul's API JSON. This module also holds what the three
// discovery-chain kinds share: HTTPHeaderModifiers (§3.6), Go duration strings, and
// references to other services.
//
// Normalisation: methods are upper-cased; an empty Match (or one whose HTTP criteria are
// all empty) is `match: null`, which matches every request; a route without a Destination
// gets the default one (the router's own service, no subset, nothing else set).
//
// Where meshd is stricter than Consul:
// - PathRegex and header/query Regex must compile as RE2 here (Consul leaves it to Envoy).
// - Header names (matches and modifiers) must be HTTP tokens; modifiers cannot touch
//   pseudo-headers. RetryOnStatusCodes must be HTTP status codes (100-599).
// - ServiceSubset must be a syntactically valid subset name (it could never exist otherwise).
// - Durations must fit a Node timer (at most 2^31-1 ms, about 24.8 days).
// - CE only: Namespace/Partition must be empty or "default".
// Cross-entry rules (the subset exists on the destination's resolver, protocols agree) are
// checked by the chain compiler (src/chain/compile.ts), which sees every entry.

import { FieldError, parseDuration, type JsonObject } from '../control/decode.ts';
import { SERVICE_NAME_RE } from '../control/catalog.ts';
import { isEmptyHeaderModifiers, type HeaderModifiers, type RouteHeaderMatch, type RouteMatch, type RouteQueryMatch } from '../chain/types.ts';
import { decodeMethods, decodePathMatch, validateRe2 } from './service-intentions.ts';
import {
  ENTRY_COMMON_KEYS,
  WireObject,
  decodeMeta,
  defineData,
  encodeMeta,
  expectKind,
  ignoreReadOnlyIndexes,
  isPlainObject,
  rejectEnterpriseTenancy,
  validateHeaderName,
} from './wire.ts';

// ---------------------------------------------------------------------------------------
// Shared by service-router, service-splitter and service-resolver

/** Longest duration accepted: what a Node timer can wait (2^31-1 ms). */
export const MAX_DURATION_MS = 2 ** 31 - 1;

/**
 * A Go duration string ("15s", "1m30s", "500ms") at `key`, in milliseconds (sub-millisecond
 * precision kept, to the nanosecond); 0 when absent or "".
 */
export function decodeDurationMs(obj: WireObject, key: string): number {
  const v = obj.one(key);
  if (v === undefined || v === '') return 0;
  if (typeof v !== 'string') throw new FieldError(obj.field(key), `must be a duration string such as "15s", got ${JSON.stringify(v)}`);
  const ms = Math.round(parseDuration(v, obj.field(key)) * 1e6) / 1e6;
  if (ms > MAX_DURATION_MS) throw new FieldError(obj.field(key), `must be at most ${MAX_DURATION_MS}ms (about 24.8 days), got ${JSON.stringify(v)}`);
  return ms;
}

function fraction(value: number, digits: number): string {
  const unit = 10 ** digits;
  const whole = Math.floor(value / unit);
  const rest = value % unit;
  if (rest === 0) return String(whole);
  return `${whole}.${String(rest).padStart(digits, '0').replace(/0+$/, '')}`;
}

/** Milliseconds as Go's time.Duration.String() writes them: "0s", "500ms", "1.5s", "1m30s", "1h0m0s". */
export function formatDuration(ms: number): string {
  const ns = Math.round(ms * 1e6);
  if (ns === 0) return '0s';
  if (ns < 1_000) return `${ns}ns`;
  if (ns < 1_000_000) return `${fraction(ns, 3)}µs`;
  if (ns < 1_000_000_000) return `${fraction(ns, 6)}ms`;
  const totalSeconds = Math.floor(ns / 1e9);
  const h = Math.floor(totalSeconds / 3600);
  const m = Math.floor((totalSeconds % 3600) / 60);
  const s = fraction((totalSeconds % 60) * 1e9 + (ns % 1e9), 9);
  return `${h > 0 ? `${h}h` : ''}${h > 0 || m > 0 ? `${m}m` : ''}${s}s`;
}

function validateModifiedHeader(name: string, field: string): void {
  validateHeaderName(name, field);
  if (name.startsWith(':')) throw new FieldError(field, `${JSON.stringify(name)} is a pseudo-header, which cannot be added, set or removed`);
}

/** `RequestHeaders` / `ResponseHeaders` (§3.6): `{Add, Set, Remove}`; absent is no change. */
export function decodeHeaderModifiers(obj: WireObject, key: string): HeaderModifiers {
  const m = obj.object(key, ['Add', 'Set', 'Remove']);
  if (m === null) return { add: {}, set: {}, remove: [] };
  const add = m.stringMap('Add');
  const set = m.stringMap('Set');
  for (const [k, map] of [['Add', add], ['Set', set]] as const) {
    for (const name of Object.keys(map)) validateModifiedHeader(name, `${m.field(k)}.${name}`);
  }
  const remove: string[] = [];
  m.strings('Remove').forEach((name, i) => {
    validateModifiedHeader(name, `${m.field('Remove')}[${i}]`);
    if (!remove.some((r) => r.toLowerCase() === name.toLowerCase())) remove.push(name);
  });
  return { add, set, remove };
}

/** Consul's JSON for header modifiers (omitempty), or undefined when there are none. */
export function encodeHeaderModifiers(m: HeaderModifiers): JsonObject | undefined {
  if (isEmptyHeaderModifiers(m)) return undefined;
  const out: JsonObject = {};
  const copy = (src: Readonly<Record<string, string>>): Record<string, unknown> => {
    const o: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(src)) defineData(o, k, v);
    return o;
  };
  if (Object.keys(m.add).length > 0) out.Add = copy(m.add);
  if (Object.keys(m.set).length > 0) out.Set = copy(m.set);
  if (m.remove.length > 0) out.Remove = [...m.remove];
  return out;
}

/** A reference to another service (a destination, split, redirect or failover): an exact name. */
export function validateServiceRef(name: string, field: string): void {
  if (!SERVICE_NAME_RE.test(name)) {
    throw new FieldError(field, `${JSON.stringify(name)} is not a valid service name (1-128 letters, digits, ".", "_" or "-", starting with a letter or digit; no wildcard)`);
  }
}

/** The config entry's own Name: an exact service name. */
export function decodeEntryName(obj: WireObject): string {
  const name = obj.string('Name');
  if (name === '') throw new FieldError('Name', 'is required');
  validateServiceRef(name, 'Name');
  return name;
}

const SUBSET_RE = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;
export const MAX_SUBSET_LENGTH = 63;

/** Consul's rule for a subset name (a DNS label, since it is part of the SNI). */
export function validateSubsetName(name: string, field: string): void {
  if (name === '' || name.length > MAX_SUBSET_LENGTH) throw new FieldError(field, `subset name ${JSON.stringify(name)} must be non-empty and 63 characters or fewer`);
  if (!SUBSET_RE.test(name)) {
    throw new FieldError(field, `subset name ${JSON.stringify(name)} must begin and end with a lower case letter or digit, and contain only lower case letters, digits or '-'`);
  }
}

/** Peer and SamenessGroup name clusters meshd cannot reach: refused rather than ignored. */
export function rejectPeerAndSamenessGroup(obj: WireObject): void {
  if (obj.string('Peer') !== '') throw new FieldError(obj.field('Peer'), 'cluster peering is not supported by meshd');
  if (obj.string('SamenessGroup') !== '') throw new FieldError(obj.field('SamenessGroup'), 'sameness groups are a Consul Enterprise feature that meshd does not have');
}

/** A map keyed by name (Subsets, Failover): its entries, each HCL one-block list unwrapped. */
export function decodeNamedMap(obj: WireObject, key: string, what: string): [string, unknown][] {
  const v = obj.one(key);
  if (v === undefined) return [];
  if (!isPlainObject(v)) throw new FieldError(obj.field(key), `must be an object keyed by ${what}`);
  return Object.entries(v).map(([k, val]) => [k, Array.isArray(val) && val.length === 1 ? (val[0] as unknown) : val]);
}

// ---------------------------------------------------------------------------------------
// service-router

export type RouteDestination = {
  /** '' = the router's own service. */
  readonly service: string;
  /** '' = the resolver's DefaultSubset. Set: the route goes straight to the resolver (no splitting). */
  readonly serviceSubset: string;
  /** '' = none; only with a PathExact or PathPrefix match. */
  readonly prefixRewrite: string;
  /** 0 = not set. */
  readonly requestTimeoutMs: number;
  readonly idleTimeoutMs: number;
  readonly numRetries: number;
  readonly retryOnConnectFailure: boolean;
  readonly retryOn: readonly string[];
  readonly retryOnStatusCodes: readonly number[];
  readonly requestHeaders: HeaderModifiers;
  readonly responseHeaders: HeaderModifiers;
};

export type ServiceRoute = {
  /** null: every request (no Match, or an empty one). */
  readonly match: RouteMatch | null;
  readonly destination: RouteDestination;
};

export type ServiceRouterEntry = {
  readonly kind: 'service-router';
  readonly name: string;
  readonly meta: Readonly<Record<string, string>>;
  /** In order; the first match wins. The compiler appends the catch-all. */
  readonly routes: readonly ServiceRoute[];
};

export const RETRY_CONDITIONS = [
  '5xx', 'gateway-error', 'reset', 'connect-failure', 'envoy-ratelimited', 'retriable-4xx',
  'refused-stream', 'cancelled', 'deadline-exceeded', 'internal', 'resource-exhausted', 'unavailable',
] as const;

const ENTRY_KEYS = [...ENTRY_COMMON_KEYS, 'Routes'];
const ROUTE_KEYS = ['Match', 'Destination'];
const MATCH_KEYS = ['HTTP'];
const HTTP_KEYS = ['PathExact', 'PathPrefix', 'PathRegex', 'Header', 'QueryParam', 'Methods'];
const HEADER_KEYS = ['Name', 'Present', 'Exact', 'Prefix', 'Suffix', 'Regex', 'Invert'];
const QUERY_KEYS = ['Name', 'Present', 'Exact', 'Regex'];
const DESTINATION_KEYS = [
  'Service', 'ServiceSubset', 'Namespace', 'Partition', 'PrefixRewrite', 'RequestTimeout', 'IdleTimeout',
  'NumRetries', 'RetryOnConnectFailure', 'RetryOn', 'RetryOnStatusCodes', 'RequestHeaders', 'ResponseHeaders',
];
const MAX_UINT32 = 2 ** 32 - 1;

function decodeHeaderMatch(h: WireObject): RouteHeaderMatch {
  const name = h.string('Name');
  if (name === '') throw new FieldError(h.field('Name'), 'missing required Name field');
  validateHeaderName(name, h.field('Name'));
  const found: { kind: RouteHeaderMatch['kind']; value: string }[] = [];
  if (h.bool('Present')) found.push({ kind: 'present', value: '' });
  for (const [key, kind] of [['Exact', 'exact'], ['Prefix', 'prefix'], ['Suffix', 'suffix'], ['Regex', 'regex']] as const) {
    const value = h.string(key);
    if (value !== '') found.push({ kind, value });
  }
  const m = found[0];
  if (found.length !== 1 || m === undefined) throw new FieldError(h.path, 'should only contain one of Present, Exact, Prefix, Suffix, or Regex');
  if (m.kind === 'regex') validateRe2(m.value, h.field('Regex'));
  return { name, kind: m.kind, value: m.value, invert: h.bool('Invert') };
}

function decodeQueryMatch(q: WireObject): RouteQueryMatch {
  const name = q.string('Name');
  if (name === '') throw new FieldError(q.field('Name'), 'missing required Name field');
  const found: { kind: RouteQueryMatch['kind']; value: string }[] = [];
  if (q.bool('Present')) found.push({ kind: 'present', value: '' });
  for (const [key, kind] of [['Exact', 'exact'], ['Regex', 'regex']] as const) {
    const value = q.string(key);
    if (value !== '') found.push({ kind, value });
  }
  const m = found[0];
  if (found.length !== 1 || m === undefined) throw new FieldError(q.path, 'should only contain one of Present, Exact, or Regex');
  if (m.kind === 'regex') validateRe2(m.value, q.field('Regex'));
  return { name, kind: m.kind, value: m.value };
}

function decodeMatch(route: WireObject): RouteMatch | null {
  const match = route.object('Match', MATCH_KEYS);
  const http = match?.object('HTTP', HTTP_KEYS) ?? null;
  if (http === null) return null;
  const path = decodePathMatch(http);
  const headers = http.objects('Header', HEADER_KEYS).map(decodeHeaderMatch);
  const queryParams = http.objects('QueryParam', QUERY_KEYS).map(decodeQueryMatch);
  const methods = decodeMethods(http);
  if (path === null && headers.length === 0 && queryParams.length === 0 && methods.length === 0) return null;
  return { path, headers, queryParams, methods };
}

function decodeDestination(route: WireObject, match: RouteMatch | null): RouteDestination {
  const d = route.object('Destination', DESTINATION_KEYS);
  const empty: RouteDestination = {
    service: '', serviceSubset: '', prefixRewrite: '', requestTimeoutMs: 0, idleTimeoutMs: 0, numRetries: 0,
    retryOnConnectFailure: false, retryOn: [], retryOnStatusCodes: [], requestHeaders: { add: {}, set: {}, remove: [] }, responseHeaders: { add: {}, set: {}, remove: [] },
  };
  if (d === null) return empty;
  rejectEnterpriseTenancy(d);
  const service = d.string('Service');
  if (service !== '') validateServiceRef(service, d.field('Service'));
  const serviceSubset = d.string('ServiceSubset');
  if (serviceSubset !== '') validateSubsetName(serviceSubset, d.field('ServiceSubset'));
  const prefixRewrite = d.string('PrefixRewrite');
  if (prefixRewrite !== '' && match?.path?.kind !== 'exact' && match?.path?.kind !== 'prefix') {
    throw new FieldError(d.field('PrefixRewrite'), 'cannot make use of PrefixRewrite without configuring either PathExact or PathPrefix');
  }
  const retryOn: string[] = [];
  d.strings('RetryOn').forEach((r, i) => {
    if (!(RETRY_CONDITIONS as readonly string[]).includes(r)) {
      throw new FieldError(`${d.field('RetryOn')}[${i}]`, `contains an invalid retry condition: ${JSON.stringify(r)} (use ${RETRY_CONDITIONS.join(', ')})`);
    }
    if (!retryOn.includes(r)) retryOn.push(r);
  });
  const retryOnStatusCodes: number[] = [];
  d.list('RetryOnStatusCodes').forEach((c, i) => {
    if (typeof c !== 'number' || !Number.isInteger(c) || c < 100 || c > 599) {
      throw new FieldError(`${d.field('RetryOnStatusCodes')}[${i}]`, `must be an HTTP status code (100-599), got ${JSON.stringify(c)}`);
    }
    if (!retryOnStatusCodes.includes(c)) retryOnStatusCodes.push(c);
  });
  return {
    service,
    serviceSubset,
    prefixRewrite,
    requestTimeoutMs: decodeDurationMs(d, 'RequestTimeout'),
    idleTimeoutMs: decodeDurationMs(d, 'IdleTimeout'),
    numRetries: d.int('NumRetries', 0, MAX_UINT32),
    retryOnConnectFailure: d.bool('RetryOnConnectFailure'),
    retryOn,
    retryOnStatusCodes,
    requestHeaders: decodeHeaderModifiers(d, 'RequestHeaders'),
    responseHeaders: decodeHeaderModifiers(d, 'ResponseHeaders'),
  };
}

/** Decodes a `service-router` document (its Kind, if given, must say so). */
export function decodeServiceRouter(raw: unknown): ServiceRouterEntry {
  const e = new WireObject(raw, '', ENTRY_KEYS);
  expectKind(e, 'service-router');
  ignoreReadOnlyIndexes(e);
  const name = decodeEntryName(e);
  rejectEnterpriseTenancy(e);
  const meta = decodeMeta(e);
  const routes = e.objects('Routes', ROUTE_KEYS).map((r): ServiceRoute => {
    const match = decodeMatch(r);
    return { match, destination: decodeDestination(r, match) };
  });
  return { kind: 'service-router', name, meta, routes };
}

// ---------------------------------------------------------------------------------------
// Encoding

const PATH_FIELD = { exact: 'PathExact', prefix: 'PathPrefix', regex: 'PathRegex' } as const;
const HEADER_FIELD = { present: 'Present', exact: 'Exact', prefix: 'Prefix', suffix: 'Suffix', regex: 'Regex' } as const;
const QUERY_FIELD = { present: 'Present', exact: 'Exact', regex: 'Regex' } as const;

/** `{HTTP: {…}}` as Consul writes a route match. */
export function encodeRouteMatch(m: RouteMatch): JsonObject {
  const http: JsonObject = {};
  if (m.path !== null) http[PATH_FIELD[m.path.kind]] = m.path.value;
  if (m.headers.length > 0) {
    http.Header = m.headers.map((h) => {
      const o: JsonObject = { Name: h.name };
      o[HEADER_FIELD[h.kind]] = h.kind === 'present' ? true : h.value;
      if (h.invert) o.Invert = true;
      return o;
    });
  }
  if (m.queryParams.length > 0) {
    http.QueryParam = m.queryParams.map((q) => {
      const o: JsonObject = { Name: q.name };
      o[QUERY_FIELD[q.kind]] = q.kind === 'present' ? true : q.value;
      return o;
    });
  }
  if (m.methods.length > 0) http.Methods = [...m.methods];
  return { HTTP: http };
}

/** Consul's JSON for a route destination (omitempty), or undefined when nothing is set. */
export function encodeRouteDestination(d: RouteDestination): JsonObject | undefined {
  const out: JsonObject = {};
  if (d.service !== '') out.Service = d.service;
  if (d.serviceSubset !== '') out.ServiceSubset = d.serviceSubset;
  if (d.prefixRewrite !== '') out.PrefixRewrite = d.prefixRewrite;
  if (d.requestTimeoutMs !== 0) out.RequestTimeout = formatDuration(d.requestTimeoutMs);
  if (d.idleTimeoutMs !== 0) out.IdleTimeout = formatDuration(d.idleTimeoutMs);
  if (d.numRetries !== 0) out.NumRetries = d.numRetries;
  if (d.retryOnConnectFailure) out.RetryOnConnectFailure = true;
  if (d.retryOn.length > 0) out.RetryOn = [...d.retryOn];
  if (d.retryOnStatusCodes.length > 0) out.RetryOnStatusCodes = [...d.retryOnStatusCodes];
  const req = encodeHeaderModifiers(d.requestHeaders);
  if (req !== undefined) out.RequestHeaders = req;
  const res = encodeHeaderModifiers(d.responseHeaders);
  if (res !== undefined) out.ResponseHeaders = res;
  return Object.keys(out).length === 0 ? undefined : out;
}

export function encodeServiceRoute(r: ServiceRoute): JsonObject {
  const out: JsonObject = {};
  if (r.match !== null) out.Match = encodeRouteMatch(r.match);
  const d = encodeRouteDestination(r.destination);
  if (d !== undefined) out.Destination = d;
  return out;
}

/** The body fields of Consul's JSON after Kind and Name (the caller adds the indexes). */
export function encodeServiceRouterBody(e: ServiceRouterEntry): JsonObject {
  const out: JsonObject = {};
  if (e.routes.length > 0) out.Routes = e.routes.map(encodeServiceRoute);
  const meta = encodeMeta(e.meta);
  if (meta !== undefined) out.Meta = meta;
  return out;
}
