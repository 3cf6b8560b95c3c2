// The `service-intentions` config entry (consul-mesh.md §2.1–2.3): one entry per destination
// holding every source rule for it. Decoding applies Consul's normalisation and validation
// (agent/structs/config_entry_intentions.go) in one pass and yields a domain value the rest
// of meshd can trust; encoding gives back Consul's API JSON.
//
// Normalisation: Type defaults to "consul"; Precedence is computed (a given one is ignored);
// methods are upper-cased; Sources are ordered by descending precedence, then by name (Consul
// only promises a stable sort by precedence; within one precedence CE sources are distinct
// exact names, so the order there carries no meaning and sorting by name makes it
// deterministic).
//
// Validation follows Consul's order and wording, as `FIELD: rule` with the field's canonical
// path. Where meshd is stricter than Consul it says so below:
// - PathRegex and header Regex must compile as RE2 here (Consul leaves that to Envoy, which
//   then rejects the whole listener). They are compiled with re2js, never `new RegExp`.
// - Legacy* fields are refused on writes; Consul silently clears LegacyID and the two times
//   and refuses only LegacyMeta.
// - Header names must be HTTP tokens; a JWT claim check needs a non-empty Path.
// - CE only: Namespace/Partition must be empty or "default"; Peer and SamenessGroup are refused.
// A JWT requirement with no providers is no requirement (null), as in Consul's RBAC output.
//
// Cross-entry rules are not here (this module sees one entry): that a referenced
// jwt-provider exists, and that L7 sources only target an http-like destination (Consul's
// docs; evaluation treats an L7 intention on a tcp destination as deny anyway).

import { RE2JS } from 're2js';
import { FieldError, type JsonObject } from '../control/decode.ts';
import { SERVICE_NAME_RE } from '../control/catalog.ts';
import { precedence } from '../control/intentions.ts';
import {
  ENTRY_COMMON_KEYS,
  expectKind,
  WireObject,
  byteLength,
  decodeMeta,
  encodeMeta,
  ignoreReadOnlyIndexes,
  rejectEnterpriseTenancy,
  validateHeaderName,
} from './wire.ts';

export type IntentionAction = 'allow' | 'deny';

export const HTTP_METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'CONNECT', 'OPTIONS', 'TRACE'] as const;
export type HttpMethod = (typeof HTTP_METHODS)[number];

/** One `VerifyClaims` check: the claim at `path` equals `value`, or is a list containing it. */
export type JwtClaimCheck = {
  readonly path: readonly string[];
  readonly value: string;
};

/** One provider of a requirement: its token verifies AND every claim check holds. */
export type JwtProviderRequirement = {
  readonly name: string;
  readonly verifyClaims: readonly JwtClaimCheck[];
};

/** `JWT` on an entry or a permission: the providers are ORed. Never empty. */
export type JwtRequirement = {
  readonly providers: readonly JwtProviderRequirement[];
};

export type PathMatch = { readonly kind: 'exact' | 'prefix' | 'regex'; readonly value: string };

export type HeaderMatcher =
  | { readonly kind: 'present' }
  | { readonly kind: 'exact' | 'prefix' | 'suffix' | 'contains' | 'regex'; readonly value: string };

export type HeaderMatch = {
  readonly name: string;
  readonly matcher: HeaderMatcher;
  readonly invert: boolean;
  readonly ignoreCase: boolean;
};

/** An HTTP permission's criteria, all ANDed. At least one criterion is present. */
export type HttpMatch = {
  /** null: any path. */
  readonly path: PathMatch | null;
  /** Upper-cased, no duplicates; empty: any method. */
  readonly methods: readonly HttpMethod[];
  /** Each must match (after its invert). */
  readonly headers: readonly HeaderMatch[];
};

export type IntentionPermission = {
  readonly action: IntentionAction;
  readonly http: HttpMatch;
  /** ANDed with the entry-level requirement. */
  readonly jwt: JwtRequirement | null;
};

type SourceCommon = {
  /** A service name or "*". */
  readonly name: string;
  readonly type: 'consul';
  /** At most 512 bytes. */
  readonly description: string;
  /** §2.2, CE: 9 exact→exact, 8 *→exact, 6 exact→*, 5 *→*. */
  readonly precedence: number;
  /**
   * Only for an intention created through the legacy ID API (`POST /v1/connect/intentions`,
   * `meshd intention create -meta`): its ID, per-intention Meta and times. Read-only on the
   * config-entry API (a write carrying them is refused, as Consul refuses LegacyMeta).
   */
  readonly legacy?: LegacyIntentionInfo;
};

export type LegacyIntentionInfo = {
  readonly id: string;
  readonly meta: Readonly<Record<string, string>>;
  /** RFC 3339 times. */
  readonly createTime: string;
  readonly updateTime: string;
};

/** An L4 source: the action decides the whole connection. */
export type L4SourceIntention = SourceCommon & { readonly layer: 'l4'; readonly action: IntentionAction };

/** An L7 source: the first matching permission decides; none matching gives the default policy. */
export type L7SourceIntention = SourceCommon & { readonly layer: 'l7'; readonly permissions: readonly IntentionPermission[] };

export type SourceIntention = L4SourceIntention | L7SourceIntention;

export type ServiceIntentionsEntry = {
  readonly kind: 'service-intentions';
  /** The destination: a service name or "*". */
  readonly name: string;
  readonly meta: Readonly<Record<string, string>>;
  /** Applies to every source of this destination (ANDed with permission-level JWT). */
  readonly jwt: JwtRequirement | null;
  /** Never empty; precedence descending, then name. */
  readonly sources: readonly SourceIntention[];
};

// ---------------------------------------------------------------------------------------
// Decoding

const ENTRY_KEYS = [...ENTRY_COMMON_KEYS, 'Sources', 'JWT'];
const SOURCE_KEYS = [
  'Name', 'Action', 'Permissions', 'Precedence', 'Type', 'Description',
  'Namespace', 'Partition', 'Peer', 'SamenessGroup',
  'LegacyID', 'LegacyMeta', 'LegacyCreateTime', 'LegacyUpdateTime',
];
const PERMISSION_KEYS = ['Action', 'HTTP', 'JWT'];

/** The read-only legacy fields of an encoded source: stripped before an encoded entry is decoded again. */
export const LEGACY_SOURCE_FIELDS = ['LegacyID', 'LegacyMeta', 'LegacyCreateTime', 'LegacyUpdateTime'] as const;
const HTTP_KEYS = ['PathExact', 'PathPrefix', 'PathRegex', 'Header', 'Methods'];
const HEADER_KEYS = ['Name', 'Present', 'Exact', 'Prefix', 'Suffix', 'Contains', 'Regex', 'Invert', 'IgnoreCase'];
const JWT_KEYS = ['Providers'];
const JWT_PROVIDER_KEYS = ['Name', 'VerifyClaims'];
const CLAIM_KEYS = ['Path', 'Value'];

export const MAX_DESCRIPTION_BYTES = 512;

/** Consul's rule for an intention name: "*" or an exact name, never a partial wildcard. */
export function validateIntentionTarget(name: string, field: string): void {
  if (name === '*') return;
  if (name.includes('*')) throw new FieldError(field, "wildcard character '*' cannot be used with partial values");
  if (!SERVICE_NAME_RE.test(name)) {
    throw new FieldError(field, `${JSON.stringify(name)} is not a valid service name (1-128 letters, digits, ".", "_" or "-", starting with a letter or digit)`);
  }
}

/**
 * Longest PathRegex/header Regex accepted. Matching is linear in the input whatever the
 * pattern, but every worker compiles every pattern once per table generation, and a 100 kB
 * pattern costs ~200 ms to compile. (Envoy bounds RE2 program size instead, at 100 by
 * default, which is stricter than this for most patterns.)
 */
export const MAX_REGEX_LENGTH = 1024;

/** Compiles `pattern` as RE2 (re2js: linear time, no backreferences or lookaround). */
export function validateRe2(pattern: string, field: string): void {
  if (pattern.length > MAX_REGEX_LENGTH) throw new FieldError(field, `is longer than ${MAX_REGEX_LENGTH} characters`);
  try {
    RE2JS.compile(pattern);
  } catch (err) {
    throw new FieldError(field, `is not a valid RE2 regular expression: ${(err as Error).message}`);
  }
}

function decodeAction(obj: WireObject, key: string): IntentionAction {
  const v = obj.string(key);
  if (v !== 'allow' && v !== 'deny') throw new FieldError(obj.field(key), "must be set to 'allow' or 'deny'");
  return v;
}

export function decodeJwtRequirement(obj: WireObject | null): JwtRequirement | null {
  if (obj === null) return null;
  const providers = obj.objects('Providers', JWT_PROVIDER_KEYS).map((p): JwtProviderRequirement => {
    const name = p.string('Name');
    if (name === '') throw new FieldError(p.field('Name'), 'JWT provider name is required');
    const verifyClaims = p.objects('VerifyClaims', CLAIM_KEYS).map((c): JwtClaimCheck => {
      const path = c.strings('Path');
      if (path.length === 0) throw new FieldError(c.field('Path'), 'must name at least one claim');
      path.forEach((seg, i) => {
        if (seg === '') throw new FieldError(`${c.field('Path')}[${i}]`, 'must not be empty');
      });
      return { path, value: c.string('Value') };
    });
    return { name, verifyClaims };
  });
  return providers.length === 0 ? null : { providers };
}

function decodeHeader(h: WireObject): HeaderMatch {
  const name = h.string('Name');
  if (name === '') throw new FieldError(h.field('Name'), 'missing required Name field');
  validateHeaderName(name, h.field('Name'));
  const matchers: HeaderMatcher[] = [];
  if (h.bool('Present')) matchers.push({ kind: 'present' });
  for (const [key, kind] of [['Exact', 'exact'], ['Prefix', 'prefix'], ['Suffix', 'suffix'], ['Contains', 'contains'], ['Regex', 'regex']] as const) {
    // An empty string is Go's zero value: "not set", as in Consul.
    const value = h.string(key);
    if (value !== '') matchers.push({ kind, value });
  }
  const matcher = matchers[0];
  if (matchers.length !== 1 || matcher === undefined) throw new FieldError(h.path, 'should only contain one of Present, Exact, Prefix, Suffix, Contains, or Regex');
  if (matcher.kind === 'regex') validateRe2(matcher.value, h.field('Regex'));
  return { name, matcher, invert: h.bool('Invert'), ignoreCase: h.bool('IgnoreCase') };
}

/**
 * The one path field of an HTTP match (PathExact, PathPrefix or PathRegex; at most one; exact
 * and prefix start with '/'; the regex compiles as RE2), as intentions and routers share it.
 */
export function decodePathMatch(http: WireObject): PathMatch | null {
  const paths: PathMatch[] = [];
  for (const [key, kind] of [['PathExact', 'exact'], ['PathPrefix', 'prefix'], ['PathRegex', 'regex']] as const) {
    const value = http.string(key);
    if (value === '') continue;
    if (kind !== 'regex' && !value.startsWith('/')) throw new FieldError(http.field(key), `doesn't start with '/': ${JSON.stringify(value)}`);
    paths.push({ kind, value });
  }
  if (paths.length > 1) throw new FieldError(http.path, 'should only contain at most one of PathExact, PathPrefix, or PathRegex');
  const path = paths[0] ?? null;
  if (path?.kind === 'regex') validateRe2(path.value, http.field('PathRegex'));
  return path;
}

/** `Methods`: valid HTTP methods, upper-cased, each at most once. */
export function decodeMethods(http: WireObject): HttpMethod[] {
  const methods: HttpMethod[] = [];
  for (const raw of http.strings('Methods')) {
    const m = raw.toUpperCase();
    if (!(HTTP_METHODS as readonly string[]).includes(m)) throw new FieldError(http.field('Methods'), `contains an invalid method ${JSON.stringify(m)}`);
    if (methods.includes(m as HttpMethod)) throw new FieldError(http.field('Methods'), `contains ${JSON.stringify(m)} more than once`);
    methods.push(m as HttpMethod);
  }
  return methods;
}

function decodeHttp(http: WireObject): HttpMatch {
  const path = decodePathMatch(http);
  const headers = http.objects('Header', HEADER_KEYS).map(decodeHeader);
  const methods = decodeMethods(http);

  if (path === null && headers.length === 0 && methods.length === 0) throw new FieldError(http.path, 'should not be empty');
  return { path, methods, headers };
}

function decodePermission(p: WireObject): IntentionPermission {
  const action = decodeAction(p, 'Action');
  const http = p.object('HTTP', HTTP_KEYS);
  if (http === null) throw new FieldError(p.field('HTTP'), 'is required');
  return { action, http: decodeHttp(http), jwt: decodeJwtRequirement(p.object('JWT', JWT_KEYS)) };
}

/** True when a legacy read-only field carries a value (Go: non-empty string, map or time). */
function hasLegacyValue(v: unknown): boolean {
  if (v === undefined || v === '') return false;
  if (v !== null && typeof v === 'object' && !Array.isArray(v)) return Object.keys(v).length > 0;
  return true;
}

function decodeSource(s: WireObject, destination: string): SourceIntention {
  const name = s.string('Name');
  if (name === '') throw new FieldError(s.field('Name'), 'is required');
  validateIntentionTarget(name, s.field('Name'));
  rejectEnterpriseTenancy(s);
  if (s.string('SamenessGroup') !== '') throw new FieldError(s.field('SamenessGroup'), 'sameness groups are a Consul Enterprise feature that meshd does not have');
  if (s.string('Peer') !== '') throw new FieldError(s.field('Peer'), 'cluster peering is not supported by meshd');

  const description = s.string('Description');
  if (byteLength(description) > MAX_DESCRIPTION_BYTES) throw new FieldError(s.field('Description'), `exceeds maximum length ${MAX_DESCRIPTION_BYTES}`);

  for (const key of LEGACY_SOURCE_FIELDS) {
    if (hasLegacyValue(s.one(key))) throw new FieldError(s.field(key), 'must be omitted');
  }

  const permissionObjs = s.objects('Permissions', PERMISSION_KEYS);
  const actionGiven = s.string('Action') !== '';
  if (permissionObjs.length > 0 && actionGiven) throw new FieldError(s.field('Action'), 'must be omitted if Permissions are specified');
  const action = permissionObjs.length === 0 ? decodeAction(s, 'Action') : null;
  if (destination === '*' && permissionObjs.length > 0) throw new FieldError(s.field('Permissions'), 'cannot be specified on intentions with wildcarded destinations');

  const type = s.string('Type') || 'consul';
  if (type !== 'consul') throw new FieldError(s.field('Type'), "must be set to 'consul'");

  // Precedence is read-only: accepted (clients echo what they read) and recomputed.
  if (s.has('Precedence') && typeof s.one('Precedence') !== 'number') throw new FieldError(s.field('Precedence'), 'must be a number (it is computed; omit it)');

  const common = { name, type, description, precedence: precedence(name, destination) } as const;
  if (action !== null) return { ...common, layer: 'l4', action };
  return { ...common, layer: 'l7', permissions: permissionObjs.map(decodePermission) };
}

export function compareSources(a: SourceIntention, b: SourceIntention): number {
  return b.precedence - a.precedence || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
}

/** Decodes a `service-intentions` document (its Kind, if given, must say so). */
export function decodeServiceIntentions(raw: unknown): ServiceIntentionsEntry {
  const e = new WireObject(raw, '', ENTRY_KEYS);
  expectKind(e, 'service-intentions');
  ignoreReadOnlyIndexes(e);
  const name = e.string('Name');
  if (name === '') throw new FieldError('Name', 'is required');
  validateIntentionTarget(name, 'Name');
  rejectEnterpriseTenancy(e);
  const jwt = decodeJwtRequirement(e.object('JWT', JWT_KEYS));
  const meta = decodeMeta(e);

  const sourceObjs = e.objects('Sources', SOURCE_KEYS);
  if (sourceObjs.length === 0) throw new FieldError('Sources', 'at least one source is required');
  const seen = new Set<string>();
  const sources = sourceObjs.map((s) => {
    const src = decodeSource(s, name);
    if (seen.has(src.name)) throw new FieldError(s.field('Name'), `defines ${JSON.stringify(src.name)} more than once`);
    seen.add(src.name);
    return src;
  });
  sources.sort(compareSources);
  return { kind: 'service-intentions', name, meta, jwt, sources };
}

// ---------------------------------------------------------------------------------------
// Encoding: Consul's JSON field names and omitempty rules.

export function encodeJwtRequirement(jwt: JwtRequirement): JsonObject {
  return {
    Providers: jwt.providers.map((p) => {
      const out: JsonObject = { Name: p.name };
      if (p.verifyClaims.length > 0) out.VerifyClaims = p.verifyClaims.map((c) => ({ Path: [...c.path], Value: c.value }));
      return out;
    }),
  };
}

const HEADER_FIELD: Record<HeaderMatcher['kind'], string> = {
  present: 'Present', exact: 'Exact', prefix: 'Prefix', suffix: 'Suffix', contains: 'Contains', regex: 'Regex',
};
const PATH_FIELD: Record<PathMatch['kind'], string> = { exact: 'PathExact', prefix: 'PathPrefix', regex: 'PathRegex' };

function encodeHttp(http: HttpMatch): JsonObject {
  const out: JsonObject = {};
  if (http.path !== null) out[PATH_FIELD[http.path.kind]] = http.path.value;
  if (http.headers.length > 0) {
    out.Header = http.headers.map((h) => {
      const o: JsonObject = { Name: h.name };
      o[HEADER_FIELD[h.matcher.kind]] = h.matcher.kind === 'present' ? true : h.matcher.value;
      if (h.invert) o.Invert = true;
      if (h.ignoreCase) o.IgnoreCase = true;
      return o;
    });
  }
  if (http.methods.length > 0) out.Methods = [...http.methods];
  return out;
}

function encodeSource(s: SourceIntention): JsonObject {
  const out: JsonObject = { Name: s.name };
  if (s.layer === 'l4') out.Action = s.action;
  else {
    out.Permissions = s.permissions.map((p) => {
      const o: JsonObject = { Action: p.action, HTTP: encodeHttp(p.http) };
      if (p.jwt !== null) o.JWT = encodeJwtRequirement(p.jwt);
      return o;
    });
  }
  out.Precedence = s.precedence;
  out.Type = s.type;
  if (s.description !== '') out.Description = s.description;
  if (s.legacy !== undefined) {
    out.LegacyID = s.legacy.id;
    const meta = encodeMeta(s.legacy.meta);
    if (meta !== undefined) out.LegacyMeta = meta;
    out.LegacyCreateTime = s.legacy.createTime;
    out.LegacyUpdateTime = s.legacy.updateTime;
  }
  return out;
}

/** The body fields of Consul's JSON after Kind and Name (the caller adds the indexes). */
export function encodeServiceIntentionsBody(e: ServiceIntentionsEntry): JsonObject {
  const out: JsonObject = { Sources: e.sources.map(encodeSource) };
  if (e.jwt !== null) out.JWT = encodeJwtRequirement(e.jwt);
  const meta = encodeMeta(e.meta);
  if (meta !== undefined) out.Meta = meta;
  return out;
}

/** Every jwt-provider name the entry references (entry level and permission level), sorted. */
export function referencedJwtProviders(e: ServiceIntentionsEntry): string[] {
  const names = new Set<string>();
  const add = (jwt: JwtRequirement | null): void => jwt?.providers.forEach((p) => names.add(p.name));
  add(e.jwt);
  for (const s of e.sources) if (s.layer === 'l7') s.permissions.forEach((p) => add(p.jwt));
  return [...names].sort();
}
