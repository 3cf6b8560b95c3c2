// L7 intention evaluation for the HTTP data plane: request-path normalisation, the
// underscore-header check, and compiled per-destination L7 programs. Pure: no I/O, no clock,
// no module state; regexes are compiled once (re2js, RE2 semantics) when a program is built.
//
// Semantics: shared/reference/consul-mesh.md §2.3 (first matching permission decides, else the
// default policy, never a lower-precedence intention), §2.5 (JWT), and the `mesh` entry's
// HTTP.Incoming.RequestNormalization with the secure settings Consul's guidance asks for
// (security.md §1.3): path normalisation on, MergeSlashes = true,
// PathWithEscapedSlashesAction = UNESCAPE_AND_FORWARD, HeadersWithUnderscoresAction =
// REJECT_REQUEST.
//
// ---------------------------------------------------------------------------------------
// Path normalisation policy (normalizeRequestPath). Applied ONCE per request, before
// authorisation and routing; the normalised path (+ the untouched query) is what is
// forwarded upstream, so what was authorised is exactly what the upstream sees.
//
// Steps, in Envoy's order: (1) split off the query at the first `?`; (2) validate and
// percent-normalise the path; (3) unescape %2F/%5C (UNESCAPE_AND_FORWARD: we forward the
// normalised path, we never answer with a redirect); (4) RFC 3986 §5.2.4 dot-segment removal,
// where empty segments count as segments (as in Envoy, which normalises before merging);
// (5) merge slashes.
//
//   input                         result                    why
//   ----------------------------  ------------------------  --------------------------------
//   /a/b/../c                     /a/c                      `..` pops one segment
//   /a/./b                        /a/b                      `.` removed
//   /../../a                      /a                        `..` never climbs above root
//   /a/b/..                       /a/                       trailing dot segment keeps the `/`
//   /a/%2e%2E/b, /a/.%2e/b        /b                        %2e/%2E decoded first: it is a dot
//   /a%2Fb, /a%2fb                /a/b                      escaped slash unescaped, then
//   /x%2F..%2Fadmin               /admin                      normalised like any `/`
//   /a%5Cb, /a\b                  /a/b                      backslash (escaped or not) is `/`
//   //a///b/                      /a/b/                     slashes merged; trailing `/` kept
//   /a//../b                      /a/b                      dots first, then merge (Envoy)
//   /%41%7e%2D                    /A~-                      escaped unreserved chars decoded
//   /a%3f, /a%2a, /a%25           /a%3F, /a%2A, /a%25       other escapes kept, hex upper-cased
//                                                           (never decoded: %252F stays)
//   /a|b, /a{b}, /a"b             /a%7Cb, /a%7Bb%7D, /a%22b  printable non-pchar ASCII escaped
//   /a;p=1/b                      /a;p=1/b                  `;params` kept literally: matched
//                                                           and forwarded as part of the segment
//   /a/..;p/b, /a/.;p, /..%3Bx    rejected (bad_path)       a dot segment carrying parameters
//                                                           (backends that strip `;params`
//                                                           would see `..`: CVE-2026-73551 class)
//   /Admin                        /Admin                    case preserved (paths are case-
//                                                           sensitive; only %xx hex is upper-cased)
//   /a?x=%2F..&y                  /a  + query "x=%2F..&y"   query split off at the first `?`,
//                                                           kept as is (forward path + '?' + query)
//   /a?                           /a  + query ""            an empty query is dropped
//   /a%00, /a%0A, /a%7F           rejected (bad_path)       escaped NUL / control characters
//   raw control/space/DEL/non-ASCII  rejected (bad_path)    (anywhere in the target)
//   /a#frag, /a?q#f               rejected (bad_path)       a fragment is never sent on the wire
//   /a%zz, /a%4                   rejected (bad_path)       malformed percent-escape
//   http://h/a (absolute-form),   rejected (bad_path)       only origin-form is accepted; the
//   *, h:443, ""                                            data plane handles CONNECT itself
//
// Known limit (documented, not a bug): `;params` are not stripped, so a PathExact deny of
// `/admin` does not match `/admin;x`, which a Java backend may serve as `/admin`. Use
// PathPrefix (or a regex) for deny rules on such backends.
// ---------------------------------------------------------------------------------------

import { RE2JS } from 're2js';
import type {
  HeaderMatch,
  IntentionPermission,
  JwtRequirement,
  SourceIntention,
} from '../config/service-intentions.ts';

// ---------------------------------------------------------------------------------------
// Reasons (metric labels: a small fixed set)

/** Why a request was rejected before authorisation. */
export type RequestRejectReason = 'bad_path' | 'header_underscore';
export const REQUEST_REJECT_REASONS: readonly RequestRejectReason[] = ['bad_path', 'header_underscore'];

/** Why an L7 decision came out the way it did. */
export type L7Reason =
  | 'l7_permission_allow'
  | 'l7_permission_deny'
  | 'l7_default_allow'
  | 'l7_default_deny'
  /** The caller asked for a source that has no L7 program here (fail closed). */
  | 'l7_no_program';
export const L7_REASONS: readonly L7Reason[] = [
  'l7_permission_allow', 'l7_permission_deny', 'l7_default_allow', 'l7_default_deny', 'l7_no_program',
];

// ---------------------------------------------------------------------------------------
// Path normalisation

export type NormalizedTarget =
  | { readonly ok: true; readonly path: string; readonly query: string }
  | { readonly ok: false; readonly reason: 'bad_path'; readonly detail: string };

const HEX = '0123456789ABCDEF';

/** 0: reject; 1: literal pchar; 2: escape it (printable ASCII that a path may not hold raw). */
const PATH_CHAR = new Uint8Array(128);
for (let c = 0x21; c < 0x7f; c++) PATH_CHAR[c] = 1;
for (const ch of '"<>[]^`{|}') PATH_CHAR[ch.charCodeAt(0)] = 2;
PATH_CHAR[0x23] = 0; // '#'

function isUnreserved(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x41 && c <= 0x5a) || (c >= 0x30 && c <= 0x39) || c === 0x2d || c === 0x2e || c === 0x5f || c === 0x7e;
}

function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  if (c >= 0x41 && c <= 0x46) return c - 0x37;
  if (c >= 0x61 && c <= 0x66) return c - 0x57;
  return -1;
}

function bad(detail: string): NormalizedTarget {
  return { ok: false, reason: 'bad_path', detail };
}

/** A segment that is `.` or `..` followed by parameters (`;` raw or `%3B`). */
function isDotSegmentWithParams(seg: string): boolean {
  if (seg.charCodeAt(0) !== 0x2e) return false;
  const rest = seg.charCodeAt(1) === 0x2e ? seg.slice(2) : seg.slice(1);
  return rest.startsWith(';') || rest.startsWith('%3B');
}

/**
 * Normalises an HTTP request target (Node's `req.url`) per the policy table above.
 * `path` always starts with `/` and never contains `//` or a `.`/`..` segment; `query` is what
 * follows the first `?`, unchanged ("" when none). Forward `path` + (query ? '?' + query : '').
 * On failure `reason` is the metric label and `detail` says what was wrong.
 */
export function normalizeRequestPath(rawTarget: string): NormalizedTarget {
  if (rawTarget.charCodeAt(0) !== 0x2f) return bad('request target is not in origin-form');
  let q = rawTarget.indexOf('?');
  if (q < 0) q = rawTarget.length;
  for (let i = q; i < rawTarget.length; i++) {
    const c = rawTarget.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f) return bad('control, space or non-ASCII character in query');
    if (c === 0x23) return bad("'#' in request target");
  }

  // (2)+(3): validate, decode unreserved and escaped slashes, upper-case the other escapes.
  // `changed` avoids rebuilding the common already-normal path.
  let out = '';
  let start = 0; // rawTarget[start, i) still to be copied to `out`
  for (let i = 0; i < q; i++) {
    const c = rawTarget.charCodeAt(i);
    if (c >= 0x80) return bad('non-ASCII character in path');
    const kind = PATH_CHAR[c] ?? 0;
    if (c === 0x25) {
      const h = hexValue(rawTarget.charCodeAt(i + 1));
      const l = hexValue(rawTarget.charCodeAt(i + 2));
      if (i + 2 >= q || h < 0 || l < 0) return bad('malformed percent-escape in path');
      const v = h * 16 + l;
      if (v < 0x20 || v === 0x7f) return bad('escaped NUL or control character in path');
      let rep: string;
      if (isUnreserved(v)) rep = String.fromCharCode(v);
      else if (v === 0x2f || v === 0x5c) rep = '/';
      else rep = '%' + (HEX[h] as string) + (HEX[l] as string);
      if (rep !== rawTarget.slice(i, i + 3)) {
        out += rawTarget.slice(start, i) + rep;
        start = i + 3;
      }
      i += 2;
    } else if (c === 0x5c) {
      out += rawTarget.slice(start, i) + '/';
      start = i + 1;
    } else if (kind === 2) {
      out += rawTarget.slice(start, i) + '%' + (HEX[c >> 4] as string) + (HEX[c & 15] as string);
      start = i + 1;
    } else if (kind === 0) {
      return bad(c === 0x23 ? "'#' in request target" : 'control or space character in path');
    }
  }
  const decoded = start === 0 ? rawTarget.slice(0, q) : out + rawTarget.slice(start, q);
  const query = rawTarget.slice(q + 1);

  // Fast path: nothing to remove or merge.
  if (!decoded.includes('//') && !decoded.includes('/.')) return { ok: true, path: decoded, query };

  // (4) RFC 3986 §5.2.4 over segments; empty segments are kept for now.
  const parts = decoded.split('/');
  const stack: string[] = [];
  const last = parts.length - 1;
  for (let i = 1; i <= last; i++) {
    const seg = parts[i] as string;
    if (seg === '.' || seg === '..') {
      if (seg === '..') stack.pop();
      if (i === last) stack.push('');
      continue;
    }
    if (isDotSegmentWithParams(seg)) return bad('dot segment with parameters in path');
    stack.push(seg);
  }
  // (5) Merge slashes: drop empty segments, keeping one trailing slash.
  const trailing = stack.length > 0 && stack[stack.length - 1] === '';
  const segs = stack.filter((s) => s !== '');
  const path = segs.length === 0 ? '/' : '/' + segs.join('/') + (trailing ? '/' : '');
  return { ok: true, path, query };
}

// ---------------------------------------------------------------------------------------
// Header lookup (header checks: src/dataplane/http-guard.ts)

/** True when `name` (ASCII) equals the lower-case `lower` ignoring ASCII case. */
function nameEquals(name: string, lower: string): boolean {
  if (name.length !== lower.length) return false;
  for (let i = 0; i < name.length; i++) {
    let c = name.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) c += 0x20;
    if (c !== lower.charCodeAt(i)) return false;
  }
  return true;
}

/**
 * Envoy's view of one header for matching: every value of `lowerName` in `rawHeaders`
 * (Node's `req.rawHeaders`), in order, joined with "," (no space; Node's `req.headers` joins
 * with ", " and drops duplicates of some headers, so it must not be used). Allocates only
 * when the header repeats.
 */
export function rawHeaderValue(rawHeaders: readonly string[], lowerName: string): string | undefined {
  let value: string | undefined;
  for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
    if (!nameEquals(rawHeaders[i] as string, lowerName)) continue;
    const v = rawHeaders[i + 1] as string;
    value = value === undefined ? v : value + ',' + v;
  }
  return value;
}

// ---------------------------------------------------------------------------------------
// Compiled L7 programs

/** What a program reads from a request. Build one per request; evaluate() allocates nothing. */
export type L7Request = {
  /** As received (`req.method`); compared case-sensitively, as Envoy's `:method` regex does. */
  readonly method: string;
  /** normalizeRequestPath(...).path: normalised, no query. */
  readonly path: string;
  /**
   * The header's value(s) by lower-case name, several values joined with "," (see
   * rawHeaderValue); undefined when absent.
   */
  header(name: string): string | undefined;
  /**
   * Payloads of the tokens the data plane verified, by jwt-provider name (./jwt-verify.ts);
   * absent or empty: no verified token, so every JWT requirement fails.
   */
  readonly jwt?: ReadonlyMap<string, Readonly<Record<string, unknown>>>;
};

export type L7Decision = {
  readonly allow: boolean;
  /** Index into the intention's Permissions of the deciding one; -1: default policy. */
  readonly permissionIndex: number;
  readonly reason: L7Reason;
};

/**
 * Decides whether one JWT requirement holds for a request. The data plane passes
 * jwt-verify.ts's verifiedJwtCheck (reads `req.jwt`); without a check the default says "no",
 * so a permission with a JWT requirement never matches (and an entry-level requirement makes
 * every permission miss, giving the default policy).
 */
export type JwtCheck = (requirement: JwtRequirement, req: L7Request) => boolean;

export const JWT_UNSUPPORTED: JwtCheck = () => false;

export type L7CompileOptions = {
  /** The entry-level `JWT` of the destination's service-intentions entry (ANDed into every permission). */
  readonly entryJwt?: JwtRequirement | null;
  readonly jwtCheck?: JwtCheck;
};

export type L7Program = {
  /** The intention's source: an exact service name or "*". */
  readonly source: string;
  readonly precedence: number;
  readonly permissionCount: number;
  /**
   * Every jwt-provider named by the entry-level JWT and by this source's permissions, in first
   * appearance order (no duplicates): the providers whose tokens apply to its requests.
   */
  readonly jwtProviders: readonly string[];
  /** `defaultAllow`: the default intention policy (consul-mesh.md §2.4), used when no permission matches. */
  evaluate(req: L7Request, defaultAllow: boolean): L7Decision;
};

export type L7Programs = {
  /**
   * The program that controls `sourceName` (the caller's exact service name): the exact
   * source's if there is one (precedence 9), else `*`'s (8); null when the controlling
   * intention is L4 or there is none.
   */
  programFor(sourceName: string): L7Program | null;
  /** programFor(sourceName)?.evaluate(req, defaultAllow), or a deny ('l7_no_program') when there is none. */
  evaluate(sourceName: string, req: L7Request, defaultAllow: boolean): L7Decision;
};

const PATH_ANY = 0;
const PATH_EXACT = 1;
const PATH_PREFIX = 2;
const PATH_REGEX = 3;

const H_PRESENT = 0;
const H_EXACT = 1;
const H_PREFIX = 2;
const H_SUFFIX = 3;
const H_CONTAINS = 4;
const H_REGEX = 5;

type CompiledHeader = {
  readonly name: string;
  readonly kind: number;
  /** Lower-cased (ASCII) when ignoreCase applies. */
  readonly value: string;
  readonly re: RE2JS | null;
  readonly invert: boolean;
  readonly ignoreCase: boolean;
};

type CompiledPermission = {
  readonly methods: readonly string[];
  readonly pathKind: number;
  readonly pathValue: string;
  readonly pathRe: RE2JS | null;
  /** Non-regex header matchers first, then regex ones (the AND is order-free). */
  readonly headers: readonly CompiledHeader[];
  readonly jwt: JwtRequirement | null;
  readonly decision: L7Decision;
};

function decision(allow: boolean, permissionIndex: number, reason: L7Reason): L7Decision {
  return Object.freeze({ allow, permissionIndex, reason });
}

const NO_PROGRAM = decision(false, -1, 'l7_no_program');
const DEFAULT_ALLOW = decision(true, -1, 'l7_default_allow');
const DEFAULT_DENY = decision(false, -1, 'l7_default_deny');

function asciiLower(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
  }
  return s;
}

/** value[at, at + lower.length) equals `lower` ignoring ASCII case (absl::EqualsIgnoreCase). */
function regionEqualsIgnoreCase(value: string, at: number, lower: string): boolean {
  for (let j = 0; j < lower.length; j++) {
    let c = value.charCodeAt(at + j);
    if (c >= 0x41 && c <= 0x5a) c += 0x20;
    if (c !== lower.charCodeAt(j)) return false;
  }
  return true;
}

function compileHeader(h: HeaderMatch): CompiledHeader {
  const m = h.matcher;
  const name = asciiLower(h.name);
  if (m.kind === 'present') return { name, kind: H_PRESENT, value: '', re: null, invert: h.invert, ignoreCase: false };
  // Envoy's StringMatcher.ignore_case has no effect on safe_regex.
  const kind = { exact: H_EXACT, prefix: H_PREFIX, suffix: H_SUFFIX, contains: H_CONTAINS, regex: H_REGEX }[m.kind];
  const ignoreCase = h.ignoreCase && kind !== H_REGEX;
  return {
    name,
    kind,
    value: ignoreCase ? asciiLower(m.value) : m.value,
    re: kind === H_REGEX ? RE2JS.compile(m.value) : null,
    invert: h.invert,
    ignoreCase,
  };
}

function compilePermission(p: IntentionPermission, index: number): CompiledPermission {
  const path = p.http.path;
  const headers = p.http.headers.map(compileHeader);
  return {
    methods: p.http.methods,
    pathKind: path === null ? PATH_ANY : path.kind === 'exact' ? PATH_EXACT : path.kind === 'prefix' ? PATH_PREFIX : PATH_REGEX,
    pathValue: path?.value ?? '',
    pathRe: path?.kind === 'regex' ? RE2JS.compile(path.value) : null,
    headers: [...headers.filter((h) => h.kind !== H_REGEX), ...headers.filter((h) => h.kind === H_REGEX)],
    jwt: p.jwt,
    decision: decision(p.action === 'allow', index, p.action === 'allow' ? 'l7_permission_allow' : 'l7_permission_deny'),
  };
}

/** Envoy's HeaderUtility::matchHeaders for one matcher (treat_missing_header_as_empty off). */
function headerMatches(h: CompiledHeader, req: L7Request): boolean {
  const v = req.header(h.name);
  // Absent: only an inverted present-match matches; value matchers fail even when inverted.
  if (v === undefined) return h.kind === H_PRESENT && h.invert;
  let m: boolean;
  const p = h.value;
  switch (h.kind) {
    case H_PRESENT:
      m = true;
      break;
    case H_EXACT:
      m = h.ignoreCase ? v.length === p.length && regionEqualsIgnoreCase(v, 0, p) : v === p;
      break;
    case H_PREFIX:
      m = h.ignoreCase ? v.length >= p.length && regionEqualsIgnoreCase(v, 0, p) : v.startsWith(p);
      break;
    case H_SUFFIX:
      m = h.ignoreCase ? v.length >= p.length && regionEqualsIgnoreCase(v, v.length - p.length, p) : v.endsWith(p);
      break;
    case H_CONTAINS:
      m = (h.ignoreCase ? asciiLower(v) : v).includes(p);
      break;
    default:
      m = (h.re as RE2JS).testExact(v);
  }
  return m !== h.invert;
}

function permissionMatches(p: CompiledPermission, req: L7Request, jwtCheck: JwtCheck): boolean {
  const methods = p.methods;
  if (methods.length > 0) {
    let found = false;
    for (let i = 0; i < methods.length; i++) {
      if (methods[i] === req.method) {
        found = true;
        break;
      }
    }
    if (!found) return false;
  }
  switch (p.pathKind) {
    case PATH_EXACT:
      if (req.path !== p.pathValue) return false;
      break;
    case PATH_PREFIX:
      if (!req.path.startsWith(p.pathValue)) return false;
      break;
  }
  const headers = p.headers;
  for (let i = 0; i < headers.length; i++) {
    if (!headerMatches(headers[i] as CompiledHeader, req)) return false;
  }
  if (p.pathKind === PATH_REGEX && !(p.pathRe as RE2JS).testExact(req.path)) return false;
  return p.jwt === null || jwtCheck(p.jwt, req);
}

class Program implements L7Program {
  readonly source: string;
  readonly precedence: number;
  readonly permissionCount: number;
  readonly jwtProviders: readonly string[];
  readonly #permissions: readonly CompiledPermission[];
  readonly #entryJwt: JwtRequirement | null;
  readonly #jwtCheck: JwtCheck;

  constructor(source: string, precedence: number, permissions: readonly IntentionPermission[], options: L7CompileOptions) {
    this.source = source;
    this.precedence = precedence;
    this.permissionCount = permissions.length;
    this.#permissions = permissions.map(compilePermission);
    this.#entryJwt = options.entryJwt ?? null;
    this.#jwtCheck = options.jwtCheck ?? JWT_UNSUPPORTED;
    const names = new Set<string>();
    for (const j of [this.#entryJwt, ...permissions.map((p) => p.jwt)]) for (const p of j?.providers ?? []) names.add(p.name);
    this.jwtProviders = [...names];
  }

  evaluate(req: L7Request, defaultAllow: boolean): L7Decision {
    const fallback = defaultAllow ? DEFAULT_ALLOW : DEFAULT_DENY;
    // An entry-level requirement is ANDed into every permission: failing it, none can match.
    if (this.#entryJwt !== null && !this.#jwtCheck(this.#entryJwt, req)) return fallback;
    const perms = this.#permissions;
    for (let i = 0; i < perms.length; i++) {
      const p = perms[i] as CompiledPermission;
      if (permissionMatches(p, req, this.#jwtCheck)) return p.decision;
    }
    return fallback;
  }
}

class Sources implements L7Programs {
  /** Exact source name → its program, or null for an L4 source (which shadows `*`). */
  readonly #exact = new Map<string, Program | null>();
  readonly #wildcard: Program | null;

  constructor(sources: readonly SourceIntention[], options: L7CompileOptions) {
    let wildcard: Program | null = null;
    let sawWildcard = false;
    for (const s of sources) {
      if (s.name === '*' ? sawWildcard : this.#exact.has(s.name)) throw new TypeError(`source ${JSON.stringify(s.name)} appears more than once`);
      const program = s.layer === 'l7' ? new Program(s.name, s.precedence, s.permissions, options) : null;
      if (s.name === '*') {
        sawWildcard = true;
        wildcard = program;
      } else this.#exact.set(s.name, program);
    }
    this.#wildcard = wildcard;
  }

  programFor(sourceName: string): L7Program | null {
    const exact = this.#exact.get(sourceName);
    return exact !== undefined ? exact : this.#wildcard;
  }

  evaluate(sourceName: string, req: L7Request, defaultAllow: boolean): L7Decision {
    const exact = this.#exact.get(sourceName);
    const program = exact !== undefined ? exact : this.#wildcard;
    return program === null ? NO_PROGRAM : program.evaluate(req, defaultAllow);
  }
}

/**
 * Compiles one destination's sources (a service-intentions entry's `sources`; L4 ones are
 * kept only to shadow `*`). Regexes are compiled here, once. Throws if a source name repeats
 * (the decoder never yields that).
 */
export function compileL7Sources(sources: readonly SourceIntention[], options: L7CompileOptions = {}): L7Programs {
  return new Sources(sources, options);
}
