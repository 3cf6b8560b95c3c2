// The `jwt-provider` config entry (consul-mesh.md §2.6): who issues tokens, for which
// audiences, where a request carries them, and the keys that verify them. Validation follows
// Consul's (agent/structs/config_entry_jwt_provider.go) with two differences:
// - `JSONWebKeySet.Remote` is refused: meshd's agent does not fetch keys over the network.
//   Use `Local` with `JWKS` (inline, base64) or `Filename`.
// - An inline JWKS is decoded here, so a write fails on a key set that could never verify
//   anything (not JSON, no `keys` list, a key without `kty`) instead of at request time.
//   Key material itself (curve points, moduli) is checked when the verifier imports it.
// Normalisation: ClockSkewSeconds 0 becomes 30, as in Consul.

import type { JsonWebKey } from 'node:crypto';
import { FieldError, parseJson, type JsonObject } from '../control/decode.ts';
import { SERVICE_NAME_RE } from '../control/catalog.ts';
import {
  ENTRY_COMMON_KEYS,
  expectKind,
  WireObject,
  decodeMeta,
  encodeMeta,
  ignoreReadOnlyIndexes,
  isPlainObject,
  rejectEnterpriseTenancy,
  validateHeaderName,
} from './wire.ts';

export const DEFAULT_CLOCK_SKEW_SECONDS = 30;

export type JwtLocation =
  | {
      readonly kind: 'header';
      readonly name: string;
      /** Text before the token, e.g. "Bearer " (Envoy strips it, then any spaces). */
      readonly valuePrefix: string;
      /** false: the header is removed once the token is verified. */
      readonly forward: boolean;
    }
  | { readonly kind: 'query-param'; readonly name: string }
  | { readonly kind: 'cookie'; readonly name: string };

/** A key of the set; `kty` is always a string. */
export type JwksKey = JsonWebKey & { readonly kty: string };

export type LocalJwks =
  /** `Local.JWKS`: the base64 text as written, and the keys it holds. */
  | { readonly kind: 'inline'; readonly jwks: string; readonly keys: readonly JwksKey[] }
  /** `Local.Filename`: a path that must exist on every proxy host. */
  | { readonly kind: 'file'; readonly filename: string };

export type JwtForwarding = {
  /** Receives the verified payload, base64url. */
  readonly headerName: string;
  readonly padForwardPayloadHeader: boolean;
};

export type JwtProviderEntry = {
  readonly kind: 'jwt-provider';
  readonly name: string;
  readonly meta: Readonly<Record<string, string>>;
  /** Must equal the token's `iss`; "" checks no issuer. */
  readonly issuer: string;
  /** The token must name at least one; empty: no audience check. */
  readonly audiences: readonly string[];
  readonly jsonWebKeySet: LocalJwks;
  /** Empty: `Authorization: Bearer <t>`, then the `access_token` query parameter. */
  readonly locations: readonly JwtLocation[];
  readonly forwarding: JwtForwarding | null;
  /** Leeway on exp and nbf; never 0 after decoding (0 means the default, 30). */
  readonly clockSkewSeconds: number;
  /** null or size 0: the proxy's default cache size. */
  readonly cacheConfig: { readonly size: number } | null;
};

const KEYS = [...ENTRY_COMMON_KEYS, 'Issuer', 'Audiences', 'JSONWebKeySet', 'Locations', 'Forwarding', 'ClockSkewSeconds', 'CacheConfig'];
const MAX_INT32 = 2 ** 31 - 1;

// Go's base64.StdEncoding: standard alphabet, padded; it skips CR and LF.
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Decodes an inline JWKS (base64 of a JSON Web Key Set) into its keys. */
export function decodeInlineJwks(text: string, field: string): JwksKey[] {
  const compact = text.replace(/[\r\n]/g, '');
  if (!BASE64_RE.test(compact)) throw new FieldError(field, 'JWKS must be valid base64 encoded string');
  let doc: unknown;
  try {
    doc = parseJson(Buffer.from(compact, 'base64').toString('utf8'));
  } catch (err) {
    throw new FieldError(field, `does not decode to JSON: ${(err as Error).message}`);
  }
  if (!isPlainObject(doc) || !Array.isArray(doc.keys)) throw new FieldError(field, 'must decode to a JSON Web Key Set: an object with a "keys" list');
  return doc.keys.map((k: unknown, i): JwksKey => {
    if (!isPlainObject(k)) throw new FieldError(field, `keys[${i}] must be an object`);
    if (typeof k.kty !== 'string' || k.kty === '') throw new FieldError(field, `keys[${i}] has no "kty"`);
    return k as JwksKey;
  });
}

function decodeKeySet(e: WireObject): LocalJwks {
  const set = e.object('JSONWebKeySet', ['Local', 'Remote']);
  if (set === null) throw new FieldError('JSONWebKeySet', 'is required');
  if (set.has('Remote')) {
    throw new FieldError(set.field('Remote'), 'is not supported: meshd does not fetch keys over the network; use JSONWebKeySet.Local with JWKS (base64) or Filename');
  }
  const local = set.object('Local', ['JWKS', 'Filename']);
  if (local === null) throw new FieldError(set.path, 'must specify exactly one of Local or Remote JSON Web key set');
  const jwks = local.string('JWKS');
  const filename = local.string('Filename');
  if ((jwks === '') === (filename === '')) throw new FieldError(local.path, 'must specify exactly one of JWKS or Filename for local keyset');
  if (filename !== '') return { kind: 'file', filename };
  return { kind: 'inline', jwks, keys: decodeInlineJwks(jwks, local.field('JWKS')) };
}

function decodeLocation(l: WireObject): JwtLocation {
  const header = l.object('Header', ['Name', 'ValuePrefix', 'Forward']);
  const query = l.object('QueryParam', ['Name']);
  const cookie = l.object('Cookie', ['Name']);
  if ([header, query, cookie].filter((x) => x !== null).length !== 1) {
    throw new FieldError(l.path, 'must set exactly one of: JWT location header, query param or cookie');
  }
  if (header !== null) {
    const name = header.string('Name');
    if (name === '') throw new FieldError(header.field('Name'), 'JWT location header name must be specified');
    validateHeaderName(name, header.field('Name'));
    return { kind: 'header', name, valuePrefix: header.string('ValuePrefix'), forward: header.bool('Forward') };
  }
  if (query !== null) {
    const name = query.string('Name');
    if (name === '') throw new FieldError(query.field('Name'), 'JWT location query param name must be specified');
    return { kind: 'query-param', name };
  }
  const c = cookie as WireObject;
  const name = c.string('Name');
  if (name === '') throw new FieldError(c.field('Name'), 'JWT location cookie name must be specified');
  return { kind: 'cookie', name };
}

export function decodeJwtProvider(raw: unknown): JwtProviderEntry {
  const e = new WireObject(raw, '', KEYS);
  expectKind(e, 'jwt-provider');
  ignoreReadOnlyIndexes(e);
  const name = e.string('Name');
  if (name === '') throw new FieldError('Name', 'is required');
  if (!SERVICE_NAME_RE.test(name)) throw new FieldError('Name', `${JSON.stringify(name)} is not a valid provider name (1-128 letters, digits, ".", "_" or "-", starting with a letter or digit)`);
  const meta = decodeMeta(e);
  rejectEnterpriseTenancy(e);
  const jsonWebKeySet = decodeKeySet(e);
  const locations = e.objects('Locations', ['Header', 'QueryParam', 'Cookie']).map(decodeLocation);
  const fwd = e.object('Forwarding', ['HeaderName', 'PadForwardPayloadHeader']);
  let forwarding: JwtForwarding | null = null;
  if (fwd !== null) {
    const headerName = fwd.string('HeaderName');
    if (headerName === '') throw new FieldError(fwd.field('HeaderName'), 'Header name required for forwarding config');
    validateHeaderName(headerName, fwd.field('HeaderName'));
    forwarding = { headerName, padForwardPayloadHeader: fwd.bool('PadForwardPayloadHeader') };
  }
  const audiences = e.strings('Audiences');
  audiences.forEach((a, i) => {
    if (a === '') throw new FieldError(`Audiences[${i}]`, 'must not be empty');
  });
  const cache = e.object('CacheConfig', ['Size']);
  return {
    kind: 'jwt-provider',
    name,
    meta,
    issuer: e.string('Issuer'),
    audiences,
    jsonWebKeySet,
    locations,
    forwarding,
    clockSkewSeconds: e.int('ClockSkewSeconds', 0, MAX_INT32) || DEFAULT_CLOCK_SKEW_SECONDS,
    cacheConfig: cache === null ? null : { size: cache.int('Size', 0, MAX_INT32) },
  };
}

/** Consul's JSON after Kind and Name, with its omitempty rules. */
export function encodeJwtProviderBody(e: JwtProviderEntry): JsonObject {
  const out: JsonObject = {
    JSONWebKeySet: { Local: e.jsonWebKeySet.kind === 'inline' ? { JWKS: e.jsonWebKeySet.jwks } : { Filename: e.jsonWebKeySet.filename } },
  };
  if (e.issuer !== '') out.Issuer = e.issuer;
  if (e.audiences.length > 0) out.Audiences = [...e.audiences];
  if (e.locations.length > 0) {
    out.Locations = e.locations.map((l) => {
      if (l.kind === 'query-param') return { QueryParam: { Name: l.name } };
      if (l.kind === 'cookie') return { Cookie: { Name: l.name } };
      const h: JsonObject = { Name: l.name };
      if (l.valuePrefix !== '') h.ValuePrefix = l.valuePrefix;
      if (l.forward) h.Forward = true;
      return { Header: h };
    });
  }
  if (e.forwarding !== null) out.Forwarding = { HeaderName: e.forwarding.headerName, PadForwardPayloadHeader: e.forwarding.padForwardPayloadHeader };
  out.ClockSkewSeconds = e.clockSkewSeconds;
  if (e.cacheConfig !== null) out.CacheConfig = e.cacheConfig.size === 0 ? {} : { Size: e.cacheConfig.size };
  const meta = encodeMeta(e.meta);
  if (meta !== undefined) out.Meta = meta;
  return out;
}
