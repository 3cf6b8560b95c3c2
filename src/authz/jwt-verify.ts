// JWT verification for L7 intentions (consul-mesh.md §2.5, §2.6): `jwt-provider` entries are
// compiled into verifiers, and the data plane uses them to decide the `JWT` requirements of an
// intention (entry level, and per permission) before its permissions are evaluated.
// Runs on: every data-plane worker (one set of verifiers per public listener).
//
// ---------------------------------------------------------------------------------------
// Data-plane semantics (Envoy's jwt_authn filter in Consul's "allow missing" mode, then RBAC):
//
// - The providers that apply to a request are those named by the intention that controls it:
//   the destination's entry-level `JWT` and the `JWT` of every permission of the source's L7
//   intention. A request decided by an L4 intention (or the table) never has its token looked
//   at. Providers named but not configured (no such jwt-provider entry) are skipped: a
//   requirement naming only those never holds (Consul refuses to build such a proxy config).
// - Tokens are looked for in each applying provider's Locations (none configured:
//   `Authorization: Bearer <t>`, then the `access_token` query parameter).
// - No token anywhere: nothing is verified, every JWT requirement fails, so a permission that
//   needs one does not match and the normal L7 flow decides (usually 403, or the default policy).
// - A token is present but no applying provider verifies it (bad signature, expired, wrong
//   issuer or audience, too large, ...): the request is answered `401 Jwt verification fails`
//   and counted (`meshd_http_requests_denied_total{layer="JWT",reason="jwt_invalid"}`); no
//   permission is evaluated. Same as Envoy, where the filter runs before RBAC.
// - A token verified by provider P satisfies a requirement when P is among the requirement's
//   Providers (ORed) and every VerifyClaims entry holds on the payload (ANDed). A claim holds
//   when the Path leads to a string equal to Value, or to a list holding the string Value;
//   numbers and booleans never match (Envoy's metadata matcher compares strings).
// - After a successful verification: a header location with Forward = false (the default
//   Authorization location included) is removed before the request reaches the app, and
//   `Forwarding.HeaderName` receives the payload segment (base64url; padded when
//   PadForwardPayloadHeader). Any incoming copy of a forwarding header is always removed, so the
//   app can trust it.
//
// Token rules: at most 8 KiB; compact JWS only (three base64url parts, no padding, canonical
// encoding); the header `alg` must be one the provider's keys can check (RS256/384/512,
// PS256/384/512 for RSA keys of 2048 bits or more, ES256/384/512 by curve, EdDSA for Ed25519 and
// Ed448). `none` and HS* are never accepted: the keys are public JWKS keys, so no
// HMAC-with-the-public-key confusion is possible. A `kid` must name a key of the set; without
// one, every key that can check the `alg` is tried. `crit` headers are refused (none are
// understood). `exp`/`nbf` (numbers when present) allow ClockSkewSeconds of leeway; `iss` must
// equal Issuer when set; `aud` (string or list) must hold one of Audiences when set.
//
// Verified tokens are cached per provider (bounded LRU, CacheConfig.Size, default 100): a
// repeated token costs one map lookup plus the `exp` check, which is re-done on every hit.
// A `Filename` key set is read when the verifiers are compiled (routing change); an unreadable
// file leaves the provider without keys, so every token fails (bad_alg).

import { createPublicKey, constants, verify as cryptoVerifyRaw, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { decodeInlineJwks, type JwksKey, type JwtLocation, type JwtProviderEntry } from '../config/jwt.ts';
import type { JwtClaimCheck, JwtRequirement } from '../config/service-intentions.ts';
import type { JwtCheck } from './l7.ts';
import { parseJson } from '../control/decode.ts';

/** Tokens longer than this (characters) are refused unread. */
export const MAX_TOKEN_BYTES = 8 * 1024;
/** Verified tokens kept per provider when CacheConfig.Size is 0 or absent (Consul's docs). */
export const DEFAULT_CACHE_SIZE = 100;

export type JwtFailureReason =
  | 'missing'
  | 'malformed'
  | 'too_large'
  | 'bad_alg'
  | 'unknown_kid'
  | 'bad_signature'
  | 'expired'
  | 'not_yet_valid'
  | 'bad_issuer'
  | 'bad_audience'
  | 'claims_mismatch';

export type JwtPayload = Readonly<Record<string, unknown>>;

export type JwtVerifyResult =
  | { readonly ok: true; readonly payload: JwtPayload; /** The token's payload segment (base64url). */ readonly payloadSegment: string }
  | { readonly ok: false; readonly reason: JwtFailureReason; readonly detail: string };

export const JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA'] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

/** Checks one signature; `key` is a public key that can do `alg`. Injectable for tests. */
export type SignatureVerify = (alg: JwtAlgorithm, key: KeyObject, data: Buffer, signature: Buffer) => boolean;

const RSA_ALGS: readonly JwtAlgorithm[] = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
const EC_ALG_BY_CURVE: Readonly<Record<string, JwtAlgorithm>> = { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' };
/** ES* signatures are r || s, each the curve's size (JWA §3.4). */
const EC_SIG_BYTES: Readonly<Record<string, number>> = { ES256: 64, ES384: 96, ES512: 132 };
const HASH: Readonly<Record<JwtAlgorithm, string | null>> = {
  RS256: 'sha256', RS384: 'sha384', RS512: 'sha512',
  PS256: 'sha256', PS384: 'sha384', PS512: 'sha512',
  ES256: 'sha256', ES384: 'sha384', ES512: 'sha512',
  EdDSA: null,
};
const MIN_RSA_BITS = 2048;

/** node:crypto's check for each algorithm (the default SignatureVerify). */
export const cryptoVerify: SignatureVerify = (alg, key, data, signature) => {
  const hash = HASH[alg];
  try {
    if (alg.startsWith('RS')) return cryptoVerifyRaw(hash, data, { key, padding: constants.RSA_PKCS1_PADDING }, signature);
    if (alg.startsWith('PS')) return cryptoVerifyRaw(hash, data, { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }, signature);
    if (alg.startsWith('ES')) return signature.length === EC_SIG_BYTES[alg] && cryptoVerifyRaw(hash, data, { key, dsaEncoding: 'ieee-p1363' }, signature);
    return cryptoVerifyRaw(null, data, key, signature);
  } catch {
    return false;
  }
};

type ImportedKey = {
  readonly kid: string | undefined;
  readonly key: KeyObject;
  readonly algs: ReadonlySet<JwtAlgorithm>;
};

function isAlgorithm(s: string): s is JwtAlgorithm {
  return (JWT_ALGORITHMS as readonly string[]).includes(s);
}

/**
 * The algorithms a JWK can check, or [] when it cannot be used for JWS verification (symmetric
 * `oct` keys, `use: enc`, no `verify` in key_ops, RSA under 2048 bits, unknown curves, bad
 * key material).
 */
export function importJwk(jwk: JwksKey): { key: KeyObject; algs: JwtAlgorithm[] } | null {
  if (jwk.use !== undefined && jwk.use !== 'sig') return null;
  if (Array.isArray(jwk.key_ops) && !jwk.key_ops.includes('verify')) return null;
  let candidates: JwtAlgorithm[];
  if (jwk.kty === 'RSA') candidates = [...RSA_ALGS];
  else if (jwk.kty === 'EC') {
    const a = EC_ALG_BY_CURVE[jwk.crv ?? ''];
    candidates = a === undefined ? [] : [a];
  } else if (jwk.kty === 'OKP') candidates = jwk.crv === 'Ed25519' || jwk.crv === 'Ed448' ? ['EdDSA'] : [];
  else candidates = [];
  if (typeof jwk.alg === 'string') candidates = candidates.filter((a) => a === jwk.alg);
  if (candidates.length === 0) return null;
  let key: KeyObject;
  try {
    key = createPublicKey({ key: jwk, format: 'jwk' });
  } catch {
    return null;
  }
  if (jwk.kty === 'RSA' && (key.asymmetricKeyDetails?.modulusLength ?? 0) < MIN_RSA_BITS) return null;
  return { key, algs: candidates };
}

// ---------------------------------------------------------------------------------------
// Strict base64url

const B64URL_RE = /^[A-Za-z0-9_-]*$/;

/** Decodes unpadded, canonical base64url; null otherwise (so one token has one spelling). */
export function decodeBase64Url(s: string): Buffer | null {
  if (s.length % 4 === 1 || !B64URL_RE.test(s)) return null;
  const buf = Buffer.from(s, 'base64url');
  // Non-zero unused bits in the last character would give a second spelling of the same bytes.
  if (buf.toString('base64url') !== s) return null;
  return buf;
}

function parseJsonObject(buf: Buffer): Record<string, unknown> | null {
  let v: unknown;
  try {
    v = parseJson(buf.toString('utf8'));
  } catch {
    return null;
  }
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
}

function fail(reason: JwtFailureReason, detail: string): JwtVerifyResult {
  return { ok: false, reason, detail };
}

// ---------------------------------------------------------------------------------------
// Claims

/** Walks `path` into nested claim objects; undefined when a step is missing or not an object. */
export function claimAt(payload: JwtPayload, path: readonly string[]): unknown {
  let v: unknown = payload;
  for (const seg of path) {
    if (typeof v !== 'object' || v === null || Array.isArray(v) || !Object.hasOwn(v, seg)) return undefined;
    v = (v as Record<string, unknown>)[seg];
  }
  return v;
}

/** One VerifyClaims entry: a string claim equal to `value`, or a list claim holding it. */
export function claimHolds(payload: JwtPayload, check: JwtClaimCheck): boolean {
  const v = claimAt(payload, check.path);
  if (typeof v === 'string') return v === check.value;
  return Array.isArray(v) && v.includes(check.value);
}

export function claimsHold(payload: JwtPayload, checks: readonly JwtClaimCheck[]): boolean {
  for (const c of checks) if (!claimHolds(payload, c)) return false;
  return true;
}

/**
 * True when a token verified by one of the requirement's providers (`verified`: payload by
 * provider name) satisfies that provider's VerifyClaims. Providers are ORed.
 */
export function requirementHolds(requirement: JwtRequirement, verified: ReadonlyMap<string, JwtPayload> | undefined): boolean {
  if (verified === undefined || verified.size === 0) return false;
  for (const p of requirement.providers) {
    const payload = verified.get(p.name);
    if (payload !== undefined && claimsHold(payload, p.verifyClaims)) return true;
  }
  return false;
}

/** The JwtCheck for compileL7Sources: reads the payloads the data plane verified (`req.jwt`). */
export const verifiedJwtCheck: JwtCheck = (requirement, req) => requirementHolds(requirement, req.jwt);

// ---------------------------------------------------------------------------------------
// Verifier (one provider)

export interface JwtVerifierOptions {
  /** Milliseconds since the epoch; default Date.now. */
  readonly now?: () => number;
  readonly verify?: SignatureVerify;
  /** Reads a `Filename` key set; default fs.readFileSync(path, 'utf8'). */
  readonly readFile?: (path: string) => string;
}

type CacheEntry = {
  readonly payload: JwtPayload;
  readonly payloadSegment: string;
  readonly exp: number | undefined;
};

/** Keys of a provider's set that can verify JWS, and the union of their algorithms. */
function providerKeys(entry: JwtProviderEntry, readFile: (path: string) => string): ImportedKey[] {
  let jwks: readonly JwksKey[];
  const set = entry.jsonWebKeySet;
  if (set.kind === 'inline') jwks = set.keys;
  else {
    try {
      const text = readFile(set.filename);
      // The file holds the JWKS JSON itself; reuse the inline decoder's checks.
      jwks = decodeInlineJwks(Buffer.from(text, 'utf8').toString('base64'), 'JSONWebKeySet.Local.Filename');
    } catch {
      jwks = [];
    }
  }
  const out: ImportedKey[] = [];
  for (const jwk of jwks) {
    const imported = importJwk(jwk);
    if (imported !== null) out.push({ kid: typeof jwk.kid === 'string' ? jwk.kid : undefined, key: imported.key, algs: new Set(imported.algs) });
  }
  return out;
}

export class JwtVerifier {
  readonly provider: JwtProviderEntry;
  /** The algorithms this provider accepts: those its keys can check. */
  readonly algorithms: ReadonlySet<JwtAlgorithm>;
  readonly #keys: readonly ImportedKey[];
  readonly #now: () => number;
  readonly #verify: SignatureVerify;
  readonly #cacheSize: number;
  /** LRU: a Map iterates in insertion order; a hit is moved to the end. */
  readonly #cache = new Map<string, CacheEntry>();

  constructor(provider: JwtProviderEntry, options: JwtVerifierOptions = {}) {
    this.provider = provider;
    this.#keys = providerKeys(provider, options.readFile ?? ((p) => readFileSync(p, 'utf8')));
    const algs = new Set<JwtAlgorithm>();
    for (const k of this.#keys) for (const a of k.algs) algs.add(a);
    this.algorithms = algs;
    this.#now = options.now ?? Date.now;
    this.#verify = options.verify ?? cryptoVerify;
    const size = provider.cacheConfig?.size ?? 0;
    this.#cacheSize = size > 0 ? size : DEFAULT_CACHE_SIZE;
  }

  get cacheSize(): number {
    return this.#cache.size;
  }

  /** Verifies one token (without its location prefix); with `claims`, checks them too. */
  verify(token: string, claims: readonly JwtClaimCheck[] = []): JwtVerifyResult {
    const r = this.#verifyToken(token);
    if (r.ok && !claimsHold(r.payload, claims)) return fail('claims_mismatch', 'a VerifyClaims entry does not hold');
    return r;
  }

  #expired(exp: number | undefined, nowSeconds: number): boolean {
    return exp !== undefined && nowSeconds > exp + this.provider.clockSkewSeconds;
  }

  #verifyToken(token: string): JwtVerifyResult {
    if (token === '') return fail('missing', 'no token');
    if (token.length > MAX_TOKEN_BYTES) return fail('too_large', `token is longer than ${MAX_TOKEN_BYTES} bytes`);
    const nowSeconds = this.#now() / 1000;
    const hit = this.#cache.get(token);
    if (hit !== undefined) {
      this.#cache.delete(token);
      if (this.#expired(hit.exp, nowSeconds)) return fail('expired', 'token has expired');
      this.#cache.set(token, hit);
      return { ok: true, payload: hit.payload, payloadSegment: hit.payloadSegment };
    }

    const dot1 = token.indexOf('.');
    const dot2 = dot1 < 0 ? -1 : token.indexOf('.', dot1 + 1);
    if (dot2 < 0 || token.indexOf('.', dot2 + 1) >= 0) return fail('malformed', 'not a compact JWS (header.payload.signature)');
    const headerSeg = token.slice(0, dot1);
    const payloadSeg = token.slice(dot1 + 1, dot2);
    const sigSeg = token.slice(dot2 + 1);
    const headerBytes = decodeBase64Url(headerSeg);
    if (headerSeg === '' || headerBytes === null) return fail('malformed', 'JOSE header is not canonical unpadded base64url');
    const header = parseJsonObject(headerBytes);
    if (header === null) return fail('malformed', 'JOSE header is not a JSON object');
    if (header.crit !== undefined) return fail('malformed', 'crit header parameters are not supported');
    const alg = header.alg;
    if (typeof alg !== 'string') return fail('malformed', 'JOSE header has no alg');
    // Before the other parts: an `alg: none` token has an empty signature, and is refused for its alg.
    if (!isAlgorithm(alg) || !this.algorithms.has(alg)) return fail('bad_alg', `alg ${JSON.stringify(alg).slice(0, 40)} is not accepted by provider ${this.provider.name}`);
    const payloadBytes = decodeBase64Url(payloadSeg);
    const sig = decodeBase64Url(sigSeg);
    if (payloadSeg === '' || sigSeg === '' || payloadBytes === null || sig === null) return fail('malformed', 'payload or signature is empty or not canonical unpadded base64url');
    const kid = header.kid;
    if (kid !== undefined && typeof kid !== 'string') return fail('malformed', 'kid is not a string');
    let candidates = this.#keys;
    if (kid !== undefined) {
      candidates = candidates.filter((k) => k.kid === kid);
      if (candidates.length === 0) return fail('unknown_kid', `no key with kid ${JSON.stringify(kid).slice(0, 80)}`);
    }
    candidates = candidates.filter((k) => k.algs.has(alg));
    if (candidates.length === 0) return fail('bad_alg', `no key for alg ${alg}`);
    const data = Buffer.from(token.slice(0, dot2), 'ascii');
    let verified = false;
    for (const k of candidates) {
      if (this.#verify(alg, k.key, data, sig)) {
        verified = true;
        break;
      }
    }
    if (!verified) return fail('bad_signature', 'signature does not verify');

    const payload = parseJsonObject(payloadBytes);
    if (payload === null) return fail('malformed', 'payload is not a JSON object');
    const { exp, nbf } = payload;
    if (exp !== undefined && (typeof exp !== 'number' || !Number.isFinite(exp))) return fail('malformed', 'exp is not a number');
    if (nbf !== undefined && (typeof nbf !== 'number' || !Number.isFinite(nbf))) return fail('malformed', 'nbf is not a number');
    if (this.#expired(exp, nowSeconds)) return fail('expired', 'token has expired');
    if (nbf !== undefined && nowSeconds + this.provider.clockSkewSeconds < nbf) return fail('not_yet_valid', 'token is not valid yet (nbf)');
    if (this.provider.issuer !== '' && payload.iss !== this.provider.issuer) return fail('bad_issuer', 'iss does not match the provider Issuer');
    if (this.provider.audiences.length > 0) {
      const aud = payload.aud;
      const auds = typeof aud === 'string' ? [aud] : Array.isArray(aud) ? aud : [];
      if (!auds.some((a) => typeof a === 'string' && this.provider.audiences.includes(a))) return fail('bad_audience', 'aud names none of the provider Audiences');
    }

    if (this.#cache.size >= this.#cacheSize) {
      const oldest = this.#cache.keys().next();
      if (oldest.done !== true) this.#cache.delete(oldest.value);
    }
    this.#cache.set(token, { payload, payloadSegment: payloadSeg, exp });
    return { ok: true, payload, payloadSegment: payloadSeg };
  }
}

// ---------------------------------------------------------------------------------------
// Token extraction

/** What extraction reads from a request. */
export interface JwtRequestInput {
  /** Lower-case name; every value joined with ",". */
  header(name: string): string | undefined;
  /** The raw query (after `?`), "" when none. */
  readonly query?: string;
}

const DEFAULT_LOCATIONS: readonly JwtLocation[] = [
  { kind: 'header', name: 'Authorization', valuePrefix: 'Bearer ', forward: false },
  { kind: 'query-param', name: 'access_token' },
];

function startsWithIgnoreCase(s: string, prefix: string): boolean {
  return s.length >= prefix.length && s.slice(0, prefix.length).toLowerCase() === prefix.toLowerCase();
}

/**
 * The token at one location, or null. A header value must start with ValuePrefix (ASCII case
 * ignored, as HTTP auth schemes are); the prefix and any spaces after it are dropped.
 */
export function tokenAt(location: JwtLocation, req: JwtRequestInput): string | null {
  if (location.kind === 'header') {
    const v = req.header(location.name.toLowerCase());
    if (v === undefined) return null;
    if (location.valuePrefix !== '' && !startsWithIgnoreCase(v, location.valuePrefix)) return null;
    const t = v.slice(location.valuePrefix.length).trim();
    return t === '' ? null : t;
  }
  if (location.kind === 'query-param') {
    const q = req.query ?? '';
    if (q === '') return null;
    const t = new URLSearchParams(q).get(location.name);
    return t === null || t === '' ? null : t;
  }
  const cookies = req.header('cookie');
  if (cookies === undefined) return null;
  for (const part of cookies.split(/[;,]/)) {
    const eq = part.indexOf('=');
    if (eq < 0 || part.slice(0, eq).trim() !== location.name) continue;
    const t = part.slice(eq + 1).trim().replace(/^"(.*)"$/, '$1');
    return t === '' ? null : t;
  }
  return null;
}

/** Envoy's default when a provider names no Locations. */
export function locationsOf(provider: JwtProviderEntry): readonly JwtLocation[] {
  return provider.locations.length === 0 ? DEFAULT_LOCATIONS : provider.locations;
}

// ---------------------------------------------------------------------------------------
// Authentication of a request against a set of providers

export type JwtAuthnResult =
  /** No token at any location of the applying providers. */
  | { readonly kind: 'missing' }
  /** A token was found, and no applying provider verified any token (→ 401). */
  | { readonly kind: 'invalid'; readonly provider: string; readonly reason: JwtFailureReason; readonly detail: string }
  | {
      readonly kind: 'verified';
      /** Payload by the name of each provider that verified a token. */
      readonly payloads: ReadonlyMap<string, JwtPayload>;
      /** Lower-case header names to remove before forwarding (Forward = false locations). */
      readonly removeHeaders: readonly string[];
      /** Flat [name, value, ...] headers to add (Forwarding.HeaderName). */
      readonly addHeaders: readonly string[];
    };

const MISSING: JwtAuthnResult = Object.freeze({ kind: 'missing' });

function padBase64(s: string): string {
  const r = s.length % 4;
  return r === 0 ? s : s + '='.repeat(4 - r);
}

/** The verifiers of one listener: every configured jwt-provider, by name. */
export class JwtProviders {
  readonly #byName = new Map<string, JwtVerifier>();
  /** Lower-case Forwarding header names: always removed from incoming requests. */
  readonly forwardingHeaders: readonly string[];

  constructor(entries: readonly JwtProviderEntry[], options: JwtVerifierOptions = {}) {
    for (const e of entries) this.#byName.set(e.name, new JwtVerifier(e, options));
    this.forwardingHeaders = [...new Set(entries.flatMap((e) => (e.forwarding === null ? [] : [e.forwarding.headerName.toLowerCase()])))];
  }

  get(name: string): JwtVerifier | undefined {
    return this.#byName.get(name);
  }

  get size(): number {
    return this.#byName.size;
  }

  /**
   * Looks for tokens at the locations of the named providers and verifies each with its
   * provider. See the header for what each outcome means to the data plane.
   */
  authenticate(providerNames: readonly string[], req: JwtRequestInput): JwtAuthnResult {
    let firstFailure: { provider: string; reason: JwtFailureReason; detail: string } | null = null;
    let payloads: Map<string, JwtPayload> | null = null;
    const remove: string[] = [];
    const add: string[] = [];
    for (const name of providerNames) {
      const v = this.#byName.get(name);
      if (v === undefined) continue;
      for (const loc of locationsOf(v.provider)) {
        const token = tokenAt(loc, req);
        if (token === null) continue;
        const r = v.verify(token);
        if (!r.ok) {
          firstFailure ??= { provider: name, reason: r.reason, detail: r.detail };
          continue;
        }
        (payloads ??= new Map()).set(name, r.payload);
        if (loc.kind === 'header' && !loc.forward) remove.push(loc.name.toLowerCase());
        const fwd = v.provider.forwarding;
        if (fwd !== null) add.push(fwd.headerName, fwd.padForwardPayloadHeader ? padBase64(r.payloadSegment) : r.payloadSegment);
        break;
      }
    }
    if (payloads !== null) return { kind: 'verified', payloads, removeHeaders: remove, addHeaders: add };
    if (firstFailure !== null) return { kind: 'invalid', ...firstFailure };
    return MISSING;
  }
}
