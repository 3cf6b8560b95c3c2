import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import {
  L7_REASONS,
  compileL7Sources,
  normalizeRequestPath,
  rawHeaderValue,
} from '../../src/authz/l7.ts';
import type { L7CompileOptions, L7Decision, L7Request } from '../../src/authz/l7.ts';
import type {
  HeaderMatch,
  HeaderMatcher,
  HttpMethod,
  IntentionPermission,
  JwtRequirement,
  L4SourceIntention,
  L7SourceIntention,
  PathMatch,
  SourceIntention,
} from '../../src/config/service-intentions.ts';

// ---------------------------------------------------------------------------------------
// Builders

function req(method: string, path: string, headers: Record<string, string> = {}): L7Request {
  const m = new Map(Object.entries(headers).map(([k, v]) => [k.toLowerCase(), v]));
  return { method, path, header: (name) => m.get(name) };
}

function perm(
  action: 'allow' | 'deny',
  http: { path?: PathMatch; methods?: HttpMethod[]; headers?: HeaderMatch[] },
  jwt: JwtRequirement | null = null,
): IntentionPermission {
  return { action, http: { path: http.path ?? null, methods: http.methods ?? [], headers: http.headers ?? [] }, jwt };
}

function hdr(name: string, matcher: HeaderMatcher, opts: { invert?: boolean; ignoreCase?: boolean } = {}): HeaderMatch {
  return { name, matcher, invert: opts.invert ?? false, ignoreCase: opts.ignoreCase ?? false };
}

function l7(name: string, permissions: IntentionPermission[]): L7SourceIntention {
  return { name, type: 'consul', description: '', precedence: name === '*' ? 8 : 9, layer: 'l7', permissions };
}

function l4(name: string, action: 'allow' | 'deny'): L4SourceIntention {
  return { name, type: 'consul', description: '', precedence: name === '*' ? 8 : 9, layer: 'l4', action };
}

const JWT: JwtRequirement = { providers: [{ name: 'okta', verifyClaims: [] }] };

/** Decision of a single-source program over `permissions`. */
function decide(permissions: IntentionPermission[], r: L7Request, options: L7CompileOptions & { defaultAllow?: boolean } = {}): L7Decision {
  return compileL7Sources([l7('web', permissions)], options).evaluate('web', r, options.defaultAllow ?? false);
}

/** Whether permission 0 matched (it is an allow; the default is deny). */
function matches(p: Omit<IntentionPermission, 'action'>, r: L7Request): boolean {
  const d = decide([{ ...p, action: 'allow' }], r);
  return d.permissionIndex === 0;
}

// ---------------------------------------------------------------------------------------
// Path normalisation

const NORMALIZED: [input: string, path: string, query: string][] = [
  ['/', '/', ''],
  ['/a/b', '/a/b', ''],
  ['/a/b/../c', '/a/c', ''],
  ['/a/./b', '/a/b', ''],
  ['/../../a', '/a', ''],
  ['/..', '/', ''],
  ['/.', '/', ''],
  ['/a/b/..', '/a/', ''],
  ['/a/.', '/a/', ''],
  ['/a/%2e%2E/b', '/b', ''],
  ['/a/.%2e/b', '/b', ''],
  ['/a/%2E/b', '/a/b', ''],
  ['/a%2Fb', '/a/b', ''],
  ['/a%2fb', '/a/b', ''],
  ['/x%2F..%2Fadmin', '/admin', ''],
  ['/a%5Cb', '/a/b', ''],
  ['/a%5c..%5cb', '/b', ''],
  ['/a\\b', '/a/b', ''],
  ['/a\\..\\b', '/b', ''],
  ['//a///b/', '/a/b/', ''],
  ['//', '/', ''],
  ['/a//../b', '/a/b', ''],
  ['/%41%7e%2D%5f%30', '/A~-_0', ''],
  ['/a%3f', '/a%3F', ''],
  ['/a%2a', '/a%2A', ''],
  ['/a%25', '/a%25', ''],
  ['/a%252F', '/a%252F', ''],
  ['/a%C3%a9', '/a%C3%A9', ''],
  ['/a|b', '/a%7Cb', ''],
  ['/a{b}', '/a%7Bb%7D', ''],
  ['/a"b<c>', '/a%22b%3Cc%3E', ''],
  ['/a;p=1/b', '/a;p=1/b', ''],
  ['/a;p=1/../b', '/b', ''],
  ['/Admin/API', '/Admin/API', ''],
  ['/.hidden/...', '/.hidden/...', ''],
  ['/a?x=%2F..&y', '/a', 'x=%2F..&y'],
  ['/a/../b?q=/../', '/b', 'q=/../'],
  ['/a?', '/a', ''],
  ['/a?b?c', '/a', 'b?c'],
  ['/a%2F..%2F?', '/', ''],
];

const REJECTED: [input: string, why: string][] = [
  ['/a/..;p/b', 'dot segment with parameters'],
  ['/a/.;p', 'dot segment with parameters'],
  ['/..%3Bx', 'dot segment with parameters (escaped ;)'],
  ['/%2e%2e;x/admin', 'escaped dot segment with parameters'],
  ['/a%00', 'escaped NUL'],
  ['/a%0A', 'escaped LF'],
  ['/a%1f', 'escaped control'],
  ['/a%7F', 'escaped DEL'],
  ['/a\u0000b', 'raw NUL'],
  ['/a\tb', 'raw TAB'],
  ['/a b', 'raw space'],
  ['/a\u007fb', 'raw DEL'],
  ['/aé', 'non-ASCII in path'],
  ['/a?é', 'non-ASCII in query'],
  ['/a?x\ny', 'control in query'],
  ['/a#frag', 'fragment'],
  ['/a?q#f', 'fragment after query'],
  ['/a%zz', 'malformed escape'],
  ['/a%4', 'truncated escape'],
  ['/a%', 'truncated escape'],
  ['/a%4?x', 'escape cut by the query'],
  ['http://h/a', 'absolute-form'],
  ['*', 'asterisk-form'],
  ['h:443', 'authority-form'],
  ['a/b', 'relative'],
  ['', 'empty'],
];

test('normalizeRequestPath: policy table', () => {
  for (const [input, path, query] of NORMALIZED) {
    assert.deepEqual(normalizeRequestPath(input), { ok: true, path, query }, input);
  }
});

test('normalizeRequestPath: rejected targets say bad_path', () => {
  for (const [input, why] of REJECTED) {
    const r = normalizeRequestPath(input);
    assert.equal(r.ok, false, `${JSON.stringify(input)} (${why})`);
    assert.ok(!r.ok && r.reason === 'bad_path' && r.detail.length > 0);
  }
});

const TOKENS = [
  '/', '//', '.', '..', '%2e', '%2E', '.%2e', '%2F', '%2f', '%5C', '%5c', '\\', 'a', 'B', ';', ';p=1', '%41', '%7e',
  '%3f', '%3B', '%25', '%252F', '|', '{', '~', '%C3%A9', '..;', '%00', '%zz', '%', '#', '?', '?x=..%2F', ' ',
];
const target = fc.array(fc.constantFrom(...TOKENS), { maxLength: 14 }).map((ts) => '/' + ts.join(''));

function assertNormalForm(input: string): void {
  const r = normalizeRequestPath(input);
  if (!r.ok) return;
  const { path } = r;
  assert.ok(path.startsWith('/'), path);
  for (const bad of ['//', '/./', '/../', '\\', '%2F', '%5C', '%2E', '%2e']) assert.ok(!path.includes(bad), `${path} holds ${bad}`);
  assert.ok(!path.endsWith('/.') && !path.endsWith('/..'), path);
  assert.equal(input.endsWith(r.query), true);
  assert.deepEqual(normalizeRequestPath(r.query === '' ? path : `${path}?${r.query}`), r, `not idempotent: ${JSON.stringify(input)}`);
}

test('normalizeRequestPath: idempotent, and never leaves //, dot segments or a missing leading /', () => {
  fc.assert(fc.property(target, assertNormalForm), { numRuns: 5000 });
  fc.assert(fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (s) => assertNormalForm('/' + s)), { numRuns: 3000 });
});

test('normalizeRequestPath: dot removal agrees with the WHATWG URL parser (then slashes merged)', () => {
  const tokens = ['/', 'a', 'B', '.', '..', '%2e', '%2E', '.%2e', '\\', 'x;p', '%41'];
  fc.assert(
    fc.property(fc.array(fc.constantFrom(...tokens), { maxLength: 12 }), (ts) => {
      const input = '/' + ts.join('');
      const r = normalizeRequestPath(input);
      fc.pre(r.ok);
      const whatwg = new URL('http://h' + input).pathname
        .replace(/%2e/gi, '.')
        .replace(/%41/g, 'A')
        .replace(/\/{2,}/g, '/');
      assert.equal(r.ok && r.path, whatwg, input);
    }),
    { numRuns: 3000 },
  );
});

// ---------------------------------------------------------------------------------------
// Headers

test('rawHeaderValue: case-insensitive name, repeated values joined with "," in order', () => {
  const raw = ['Host', 'h', 'X-Tenant', 'a', 'x-other', 'o', 'x-TENANT', 'b', 'Authorization', 't1', 'authorization', 't2'];
  assert.equal(rawHeaderValue(raw, 'x-tenant'), 'a,b');
  assert.equal(rawHeaderValue(raw, 'authorization'), 't1,t2');
  assert.equal(rawHeaderValue(raw, 'host'), 'h');
  assert.equal(rawHeaderValue(raw, 'x-missing'), undefined);
  assert.equal(rawHeaderValue(['X-Empty', ''], 'x-empty'), '');
});

// ---------------------------------------------------------------------------------------
// Matchers

test('path: exact, prefix (plain string prefix), regex (RE2, whole path)', () => {
  const exact = { http: { path: { kind: 'exact', value: '/api' }, methods: [], headers: [] }, jwt: null } as const;
  assert.equal(matches(exact, req('GET', '/api')), true);
  assert.equal(matches(exact, req('GET', '/api/')), false);
  assert.equal(matches(exact, req('GET', '/API')), false);

  const prefix = { http: { path: { kind: 'prefix', value: '/api' }, methods: [], headers: [] }, jwt: null } as const;
  assert.equal(matches(prefix, req('GET', '/api')), true);
  assert.equal(matches(prefix, req('GET', '/api/v1')), true);
  assert.equal(matches(prefix, req('GET', '/apiary')), true);
  assert.equal(matches(prefix, req('GET', '/ap')), false);

  const regex = { http: { path: { kind: 'regex', value: '/api/[0-9]+|/health' }, methods: [], headers: [] }, jwt: null } as const;
  assert.equal(matches(regex, req('GET', '/api/42')), true);
  assert.equal(matches(regex, req('GET', '/health')), true);
  assert.equal(matches(regex, req('GET', '/api/42/x')), false, 'must match the whole path');
  assert.equal(matches(regex, req('GET', '/x/api/42')), false, 'must match the whole path');
  const dot = { http: { path: { kind: 'regex', value: '/a/.*' }, methods: [], headers: [] }, jwt: null } as const;
  assert.equal(matches(dot, req('GET', '/a/b\nc')), false, 'RE2: . does not match newline');
});

test('methods: any of, case-sensitive', () => {
  const p = { http: { path: null, methods: ['GET', 'PUT'] as HttpMethod[], headers: [] }, jwt: null };
  assert.equal(matches(p, req('GET', '/')), true);
  assert.equal(matches(p, req('PUT', '/')), true);
  assert.equal(matches(p, req('POST', '/')), false);
  assert.equal(matches(p, req('get', '/')), false);
});

function headerOnly(...headers: HeaderMatch[]): Omit<IntentionPermission, 'action'> {
  return { http: { path: null, methods: [], headers }, jwt: null };
}

test('header: present, exact, prefix, suffix, contains, regex', () => {
  const cases: [HeaderMatcher, string | undefined, boolean][] = [
    [{ kind: 'present' }, 'v', true],
    [{ kind: 'present' }, '', true],
    [{ kind: 'present' }, undefined, false],
    [{ kind: 'exact', value: 'abc' }, 'abc', true],
    [{ kind: 'exact', value: 'abc' }, 'abcd', false],
    [{ kind: 'exact', value: 'abc' }, 'ABC', false],
    [{ kind: 'exact', value: 'abc' }, undefined, false],
    [{ kind: 'prefix', value: 'ab' }, 'abc', true],
    [{ kind: 'prefix', value: 'ab' }, 'xab', false],
    [{ kind: 'suffix', value: 'bc' }, 'abc', true],
    [{ kind: 'suffix', value: 'bc' }, 'bcx', false],
    [{ kind: 'contains', value: 'b' }, 'abc', true],
    [{ kind: 'contains', value: 'x' }, 'abc', false],
    [{ kind: 'regex', value: '[a-c]+' }, 'abc', true],
    [{ kind: 'regex', value: '[a-c]+' }, 'abcd', false],
    [{ kind: 'regex', value: 'b' }, 'abc', false],
  ];
  for (const [matcher, value, want] of cases) {
    const r = req('GET', '/', value === undefined ? {} : { 'x-h': value });
    assert.equal(matches(headerOnly(hdr('X-H', matcher)), r), want, `${JSON.stringify(matcher)} on ${JSON.stringify(value)}`);
  }
});

test('header: Invert flips a match; on an absent header only inverted Present matches (Envoy)', () => {
  const absent = req('GET', '/');
  const other = req('GET', '/', { 'x-h': 'zzz' });
  const same = req('GET', '/', { 'x-h': 'abc' });
  assert.equal(matches(headerOnly(hdr('x-h', { kind: 'present' }, { invert: true })), absent), true);
  assert.equal(matches(headerOnly(hdr('x-h', { kind: 'present' }, { invert: true })), same), false);
  for (const kind of ['exact', 'prefix', 'suffix', 'contains', 'regex'] as const) {
    const h = hdr('x-h', { kind, value: 'abc' }, { invert: true });
    assert.equal(matches(headerOnly(h), same), false, kind);
    assert.equal(matches(headerOnly(h), other), true, kind);
    assert.equal(matches(headerOnly(h), absent), false, `${kind}: absent header never matches a value matcher`);
  }
});

test('header: IgnoreCase (ASCII) applies to exact/prefix/suffix/contains, not regex', () => {
  const r = req('GET', '/', { 'x-h': 'AbC-dÉ' });
  const ic = { ignoreCase: true };
  assert.equal(matches(headerOnly(hdr('x-h', { kind: 'exact', value: 'aBc-dÉ' }, ic)), r), true);
  assert.equal(matches(headerOnly(hdr('x-h', { kind: 'exact', value: 'abc-dé' }, ic)), r), false, 'non-ASCII is not folded');
  assert.equal(matches(headerOnly(hdr('x-h', { kind: 'prefix', value: 'ABC' }, ic)), r), true);
  assert.equal(matches(headerOnly(hdr('x-h', { kind: 'suffix', value: 'C-DÉ' }, ic)), r), true);
  assert.equal(matches(headerOnly(hdr('x-h', { kind: 'contains', value: 'BC-D' }, ic)), r), true);
  assert.equal(matches(headerOnly(hdr('x-h', { kind: 'prefix', value: 'ABC' })), r), false);
  assert.equal(matches(headerOnly(hdr('x-h', { kind: 'regex', value: 'abc-dÉ' }, ic)), r), false, 'regex ignores IgnoreCase');
  assert.equal(matches(headerOnly(hdr('x-h', { kind: 'regex', value: '(?i)abc-dÉ' }, ic)), r), true);
  assert.equal(matches(headerOnly(hdr('x-h', { kind: 'exact', value: 'ABC' }, { ignoreCase: true, invert: true })), req('GET', '/', { 'x-h': 'abc' })), false);
});

test('header names are looked up lower-cased; several header matchers are ANDed; criteria are ANDed', () => {
  const p = {
    http: {
      path: { kind: 'prefix', value: '/v2' } as const,
      methods: ['GET'] as HttpMethod[],
      headers: [hdr('X-Tenant', { kind: 'exact', value: 'a' }), hdr('X-Env', { kind: 'present' })],
    },
    jwt: null,
  };
  assert.equal(matches(p, req('GET', '/v2/x', { 'X-Tenant': 'a', 'x-env': '' })), true);
  assert.equal(matches(p, req('GET', '/v2/x', { 'x-tenant': 'a' })), false);
  assert.equal(matches(p, req('GET', '/v1/x', { 'x-tenant': 'a', 'x-env': '1' })), false);
  assert.equal(matches(p, req('PUT', '/v2/x', { 'x-tenant': 'a', 'x-env': '1' })), false);
  // Several values arrive joined with ',' (rawHeaderValue): an exact match sees the joined value.
  const raw = ['X-Tenant', 'a', 'x-tenant', 'b', 'X-Env', '1'];
  const joined: L7Request = { method: 'GET', path: '/v2', header: (n) => rawHeaderValue(raw, n) };
  assert.equal(matches(p, joined), false);
  assert.equal(matches(headerOnly(hdr('x-tenant', { kind: 'exact', value: 'a,b' })), joined), true);
});

test('first matching permission decides; none matching gives the default policy', () => {
  const perms = [
    perm('deny', { path: { kind: 'prefix', value: '/v2/admin' } }),
    perm('allow', { path: { kind: 'prefix', value: '/v2' } }),
    perm('deny', { methods: ['DELETE'] }),
  ];
  assert.deepEqual(decide(perms, req('GET', '/v2/admin/x')), { allow: false, permissionIndex: 0, reason: 'l7_permission_deny' });
  assert.deepEqual(decide(perms, req('DELETE', '/v2/x')), { allow: true, permissionIndex: 1, reason: 'l7_permission_allow' });
  assert.deepEqual(decide(perms, req('DELETE', '/v1')), { allow: false, permissionIndex: 2, reason: 'l7_permission_deny' });
  assert.deepEqual(decide(perms, req('GET', '/v1')), { allow: false, permissionIndex: -1, reason: 'l7_default_deny' });
  assert.deepEqual(decide(perms, req('GET', '/v1'), { defaultAllow: true }), { allow: true, permissionIndex: -1, reason: 'l7_default_allow' });
  assert.deepEqual(decide([], req('GET', '/')), { allow: false, permissionIndex: -1, reason: 'l7_default_deny' });
  for (const r of ['l7_permission_allow', 'l7_permission_deny', 'l7_default_allow', 'l7_default_deny'] as const) assert.ok(L7_REASONS.includes(r));
});

test('JWT: unsupported by default (the permission never matches); the hook decides when given', () => {
  const perms = [perm('allow', { path: { kind: 'prefix', value: '/' } }, JWT), perm('deny', { path: { kind: 'prefix', value: '/' } })];
  assert.equal(decide(perms, req('GET', '/x')).permissionIndex, 1);
  const seen: JwtRequirement[] = [];
  const ok: L7CompileOptions = { jwtCheck: (j) => (seen.push(j), true) };
  assert.equal(decide(perms, req('GET', '/x'), ok).permissionIndex, 0);
  assert.equal(seen[0], JWT);
  // A permission whose HTTP match fails never consults the JWT hook.
  seen.length = 0;
  decide([perm('allow', { path: { kind: 'exact', value: '/a' } }, JWT)], req('GET', '/b'), ok);
  assert.equal(seen.length, 0);
  // An entry-level requirement is ANDed into every permission.
  const entry: JwtRequirement = { providers: [{ name: 'entry', verifyClaims: [] }] };
  const only = (j: JwtRequirement): boolean => j !== entry;
  assert.equal(decide(perms, req('GET', '/x'), { defaultAllow: true, entryJwt: entry, jwtCheck: only }).reason, 'l7_default_allow');
  assert.equal(decide(perms, req('GET', '/x'), { entryJwt: entry }).reason, 'l7_default_deny');
  assert.equal(decide(perms, req('GET', '/x'), { entryJwt: entry, jwtCheck: () => true }).permissionIndex, 0);
});

test('programFor: exact source beats *, an exact L4 source shadows * (null), unknown → *', () => {
  const star = l7('*', [perm('deny', { methods: ['GET'] })]);
  const web = l7('web', [perm('allow', { methods: ['GET'] })]);
  const sources: SourceIntention[] = [web, l4('api', 'allow'), star];
  const c = compileL7Sources(sources);
  assert.equal(c.programFor('web')?.source, 'web');
  assert.equal(c.programFor('web')?.precedence, 9);
  assert.equal(c.programFor('other')?.source, '*');
  assert.equal(c.programFor('other')?.permissionCount, 1);
  assert.equal(c.programFor('api'), null);
  assert.deepEqual(c.evaluate('web', req('GET', '/'), false), { allow: true, permissionIndex: 0, reason: 'l7_permission_allow' });
  assert.deepEqual(c.evaluate('other', req('GET', '/'), true), { allow: false, permissionIndex: 0, reason: 'l7_permission_deny' });
  // No fall-through: web's program has no match for POST, so the default applies, not *.
  assert.equal(c.evaluate('web', req('POST', '/'), false).reason, 'l7_default_deny');
  assert.equal(c.evaluate('web', req('POST', '/'), true).reason, 'l7_default_allow');
  assert.equal(c.programFor('web')?.evaluate(req('POST', '/'), true).allow, true);
  assert.deepEqual(c.evaluate('api', req('GET', '/'), true), { allow: false, permissionIndex: -1, reason: 'l7_no_program' });
  const noStar = compileL7Sources([web]);
  assert.equal(noStar.programFor('db'), null);
  assert.equal(noStar.evaluate('db', req('GET', '/'), true).reason, 'l7_no_program');
  assert.throws(() => compileL7Sources([web, web]), TypeError);
});

test('evaluate returns shared decision objects (no allocation per request)', () => {
  const c = compileL7Sources([l7('web', [perm('allow', { methods: ['GET'] })])]);
  assert.equal(c.evaluate('web', req('GET', '/'), false), c.evaluate('web', req('GET', '/x'), true));
  assert.equal(c.evaluate('web', req('PUT', '/'), false), c.evaluate('web', req('POST', '/'), false));
  assert.ok(Object.isFrozen(c.evaluate('web', req('GET', '/'), false)));
});

// ---------------------------------------------------------------------------------------
// Property: evaluate() against a naive evaluator

type NaiveReq = { method: string; path: string; headers: Record<string, string> };

function naiveHeader(h: HeaderMatch, headers: Record<string, string>): boolean {
  const v = headers[h.name.toLowerCase()];
  const m = h.matcher;
  if (v === undefined) return m.kind === 'present' && h.invert;
  let hit: boolean;
  if (m.kind === 'present') hit = true;
  else if (m.kind === 'regex') hit = v === m.value; // patterns are literals here
  else {
    const a = h.ignoreCase ? v.toLowerCase() : v;
    const b = h.ignoreCase ? m.value.toLowerCase() : m.value;
    if (m.kind === 'exact') hit = a === b;
    else if (m.kind === 'prefix') hit = a.startsWith(b);
    else if (m.kind === 'suffix') hit = a.endsWith(b);
    else hit = a.includes(b);
  }
  return h.invert ? !hit : hit;
}

function naivePermission(p: IntentionPermission, r: NaiveReq, jwtOk: boolean): boolean {
  if (p.http.methods.length > 0 && !p.http.methods.some((m) => m === r.method)) return false;
  const path = p.http.path;
  if (path !== null) {
    if (path.kind === 'exact' && r.path !== path.value) return false;
    if (path.kind === 'prefix' && !r.path.startsWith(path.value)) return false;
    if (path.kind === 'regex' && r.path !== path.value) return false;
  }
  for (const h of p.http.headers) if (!naiveHeader(h, r.headers)) return false;
  if (p.jwt !== null && !jwtOk) return false;
  return true;
}

function naiveEvaluate(perms: readonly IntentionPermission[], r: NaiveReq, defaultAllow: boolean, jwtOk: boolean, entryJwt: boolean): L7Decision {
  if (!entryJwt || jwtOk) {
    for (let i = 0; i < perms.length; i++) {
      const p = perms[i] as IntentionPermission;
      if (naivePermission(p, r, jwtOk)) return { allow: p.action === 'allow', permissionIndex: i, reason: p.action === 'allow' ? 'l7_permission_allow' : 'l7_permission_deny' };
    }
  }
  return { allow: defaultAllow, permissionIndex: -1, reason: defaultAllow ? 'l7_default_allow' : 'l7_default_deny' };
}

const segment = fc.constantFrom('a', 'b', 'A', 'ab', 'v1');
const pathArb = fc.array(segment, { maxLength: 3 }).map((s) => '/' + s.join('/'));
const word = (min: number): fc.Arbitrary<string> => fc.array(fc.constantFrom('a', 'A', 'b', 'B', 'ab', '-', '1'), { minLength: min, maxLength: 3 }).map((s) => s.join(''));
const headerNames = ['x-a', 'X-B', 'x-c'];

const pathMatchArb: fc.Arbitrary<PathMatch | null> = fc.oneof(
  fc.constant(null),
  fc.record({ kind: fc.constantFrom('exact' as const, 'prefix' as const, 'regex' as const), value: pathArb }),
  fc.record({ kind: fc.constant('prefix' as const), value: fc.constantFrom('/a', '/A', '/v') }),
);
const matcherArb: fc.Arbitrary<HeaderMatcher> = fc.oneof(
  fc.constant({ kind: 'present' as const }),
  fc.record({ kind: fc.constantFrom('exact' as const, 'prefix' as const, 'suffix' as const, 'contains' as const, 'regex' as const), value: word(1) }),
);
const headerMatchArb: fc.Arbitrary<HeaderMatch> = fc.record({
  name: fc.constantFrom(...headerNames),
  matcher: matcherArb,
  invert: fc.boolean(),
  ignoreCase: fc.boolean(),
});
const permissionArb: fc.Arbitrary<IntentionPermission> = fc.record({
  action: fc.constantFrom('allow' as const, 'deny' as const),
  http: fc.record({
    path: pathMatchArb,
    methods: fc.subarray(['GET', 'POST', 'PUT', 'DELETE'] as HttpMethod[]),
    headers: fc.array(headerMatchArb, { maxLength: 3 }),
  }),
  jwt: fc.option(fc.constant(JWT), { freq: 4 }),
});
const requestArb: fc.Arbitrary<NaiveReq> = fc.record({
  method: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'get'),
  path: pathArb,
  headers: fc.dictionary(fc.constantFrom('x-a', 'x-b', 'x-c'), word(0), { maxKeys: 3 }),
});

test('property: evaluate() agrees with a naive evaluator', () => {
  fc.assert(
    fc.property(
      fc.array(permissionArb, { maxLength: 8 }),
      fc.array(requestArb, { minLength: 1, maxLength: 20 }),
      fc.boolean(),
      fc.boolean(),
      fc.boolean(),
      (perms, reqs, defaultAllow, jwtOk, entryJwt) => {
        const program = compileL7Sources([l7('web', perms)], { jwtCheck: () => jwtOk, entryJwt: entryJwt ? JWT : null });
        for (const r of reqs) {
          const got = program.evaluate('web', req(r.method, r.path, r.headers), defaultAllow);
          assert.deepEqual({ ...got }, naiveEvaluate(perms, r, defaultAllow, jwtOk, entryJwt));
        }
      },
    ),
    { numRuns: 1500 },
  );
});

test('property: programFor picks exact over *, with L4 sources shadowing', () => {
  const names = ['web', 'api', 'db'];
  const sourceArb = fc.record({ layer: fc.constantFrom('l4' as const, 'l7' as const) });
  fc.assert(
    fc.property(
      fc.dictionary(fc.constantFrom('web', 'api', '*'), sourceArb),
      (spec) => {
        const sources: SourceIntention[] = Object.entries(spec).map(([name, s]) => (s.layer === 'l4' ? l4(name, 'allow') : l7(name, [perm('allow', { methods: ['GET'] })])));
        const c = compileL7Sources(sources);
        for (const n of names) {
          const ruling = spec[n] !== undefined ? n : spec['*'] !== undefined ? '*' : null;
          const want = ruling !== null && spec[ruling]?.layer === 'l7' ? ruling : null;
          assert.equal(c.programFor(n)?.source ?? null, want, n);
          assert.equal(c.evaluate(n, req('GET', '/'), false).reason, want === null ? 'l7_no_program' : 'l7_permission_allow');
        }
      },
    ),
    { numRuns: 300 },
  );
});
