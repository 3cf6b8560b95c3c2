// service-router matching on the data plane: each matcher kind, AND-ing, first-match order,
// the catch-all, Envoy prefix_rewrite, and a property against a naive reference matcher.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { RouteTable, rewritePath, type RoutableRequest } from '../../src/dataplane/route-match.ts';
import type { ChainRoute, RouteAction, RouteHeaderMatch, RouteMatch, RouteQueryMatch } from '../../src/chain/types.ts';

const NO_HEADERS = { add: {}, set: {}, remove: [] };

const ACTION: RouteAction = {
  splits: [{ weightBp: 10000, targetId: 'web.default.default.dc1', requestHeaders: NO_HEADERS, responseHeaders: NO_HEADERS }],
  prefixRewrite: '',
  requestTimeoutMs: 0,
  idleTimeoutMs: 0,
  numRetries: 0,
  retryOnConnectFailure: false,
  retryOn: [],
  retryOnStatusCodes: [],
  requestHeaders: NO_HEADERS,
  responseHeaders: NO_HEADERS,
};

function m(partial: Partial<RouteMatch>): RouteMatch {
  return { path: null, headers: [], queryParams: [], methods: [], ...partial };
}

function route(match: RouteMatch | null): ChainRoute {
  return { match, action: ACTION };
}

interface ReqInit {
  readonly method?: string;
  readonly path?: string;
  readonly query?: string;
  /** Lower-case names, as node:http gives them. */
  readonly headers?: Readonly<Record<string, string>>;
}

function req(init: ReqInit = {}): RoutableRequest {
  const headers = init.headers ?? {};
  return {
    method: init.method ?? 'GET',
    path: init.path ?? '/',
    query: init.query ?? '',
    header: (name) => (Object.hasOwn(headers, name) ? headers[name] : undefined),
  };
}

/** True if a table of [match, catch-all] routes the request to the first route. */
function matches(match: RouteMatch, r: RoutableRequest): boolean {
  return new RouteTable([route(match), route(null)]).match(r) === 0;
}

function hdr(name: string, kind: RouteHeaderMatch['kind'], value = '', invert = false): RouteHeaderMatch {
  return { name, kind, value, invert };
}

function qp(name: string, kind: RouteQueryMatch['kind'], value = ''): RouteQueryMatch {
  return { name, kind, value };
}

test('a table without routes is rejected', () => {
  assert.throws(() => new RouteTable([]), /catch-all/);
});

test('path exact matches only the identical path (case-sensitive, no trailing-slash folding)', () => {
  const mt = m({ path: { kind: 'exact', value: '/api/users' } });
  assert.equal(matches(mt, req({ path: '/api/users' })), true);
  for (const p of ['/api/users/', '/api/user', '/api/users/1', '/API/users', '/', '']) {
    assert.equal(matches(mt, req({ path: p })), false, p);
  }
});

test('path exact ignores the query string', () => {
  const mt = m({ path: { kind: 'exact', value: '/a' } });
  assert.equal(matches(mt, req({ path: '/a', query: 'x=1' })), true);
});

test('path prefix is a plain string prefix (not segment-aware), case-sensitive', () => {
  const mt = m({ path: { kind: 'prefix', value: '/api' } });
  for (const p of ['/api', '/api/', '/api/users', '/apiv2']) assert.equal(matches(mt, req({ path: p })), true, p);
  for (const p of ['/ap', '/API', '/v1/api', '/']) assert.equal(matches(mt, req({ path: p })), false, p);
  assert.equal(matches(m({ path: { kind: 'prefix', value: '/' } }), req({ path: '/anything/at/all' })), true);
});

test('path regex is RE2 and must match the whole path', () => {
  const mt = m({ path: { kind: 'regex', value: '/api/v[0-9]+/.*' } });
  assert.equal(matches(mt, req({ path: '/api/v1/users' })), true);
  assert.equal(matches(mt, req({ path: '/api/v12/' })), true);
  assert.equal(matches(mt, req({ path: '/x/api/v1/users' })), false, 'not anchored at the start would match');
  assert.equal(matches(mt, req({ path: '/api/vx/users' })), false);
  // Anchored at the end too: a partial match is not a match.
  const short = m({ path: { kind: 'regex', value: '/api' } });
  assert.equal(matches(short, req({ path: '/api' })), true);
  assert.equal(matches(short, req({ path: '/api/users' })), false);
  // Alternation is anchored as a whole, not per branch.
  const alt = m({ path: { kind: 'regex', value: '/a|/b/c' } });
  assert.equal(matches(alt, req({ path: '/b/c' })), true);
  assert.equal(matches(alt, req({ path: '/a/c' })), false);
});

test('an invalid RE2 regex (e.g. a backreference or lookahead) fails at compile time', () => {
  assert.throws(() => new RouteTable([route(m({ path: { kind: 'regex', value: '(a)\\1' } })), route(null)]));
  assert.throws(() => new RouteTable([route(m({ headers: [hdr('x', 'regex', '(?=a)a')] })), route(null)]));
  assert.throws(() => new RouteTable([route(m({ queryParams: [qp('x', 'regex', '[')] })), route(null)]));
});

test('methods: any listed method matches; an empty list matches every method', () => {
  const mt = m({ methods: ['GET', 'HEAD'] });
  assert.equal(matches(mt, req({ method: 'GET' })), true);
  assert.equal(matches(mt, req({ method: 'HEAD' })), true);
  assert.equal(matches(mt, req({ method: 'POST' })), false);
  assert.equal(matches(mt, req({ method: 'get' })), false, 'methods are compared as given (upper-case)');
  for (const method of ['GET', 'POST', 'DELETE', 'PATCH']) assert.equal(matches(m({}), req({ method })), true, method);
});

test('header matchers: each kind, on present and missing headers', () => {
  // [matcher kind, value, header value (undefined = missing), expected]
  const cases: [RouteHeaderMatch['kind'], string, string | undefined, boolean][] = [
    ['present', '', 'anything', true],
    ['present', '', '', true],
    ['present', '', undefined, false],
    ['exact', 'abc', 'abc', true],
    ['exact', 'abc', 'ABC', false],
    ['exact', 'abc', 'abcd', false],
    ['exact', 'abc', undefined, false],
    ['exact', '', '', true],
    ['prefix', 'ab', 'abc', true],
    ['prefix', 'ab', 'ab', true],
    ['prefix', 'ab', 'xab', false],
    ['prefix', 'ab', undefined, false],
    ['prefix', '', undefined, false],
    ['suffix', 'bc', 'abc', true],
    ['suffix', 'bc', 'bcx', false],
    ['suffix', 'bc', undefined, false],
    ['suffix', '', undefined, false],
    ['regex', 'v[0-9]+', 'v12', true],
    ['regex', 'v[0-9]+', 'v12x', false],
    ['regex', 'v[0-9]+', 'xv12', false],
    ['regex', '.*', undefined, false],
    ['regex', '.*', '', true],
  ];
  for (const [kind, value, hv, expected] of cases) {
    const r = req({ headers: hv === undefined ? {} : { 'x-h': hv } });
    assert.equal(matches(m({ headers: [hdr('x-h', kind, value)] }), r), expected, `${kind} ${value} on ${String(hv)}`);
    assert.equal(matches(m({ headers: [hdr('x-h', kind, value, true)] }), r), !expected, `inverted ${kind} ${value} on ${String(hv)}`);
  }
});

test('an inverted header matcher matches a missing header, whatever its kind', () => {
  for (const kind of ['present', 'exact', 'prefix', 'suffix', 'regex'] as const) {
    assert.equal(matches(m({ headers: [hdr('x-missing', kind, 'v', true)] }), req()), true, kind);
  }
});

test('header names are matched case-insensitively (the matcher lower-cases the configured name)', () => {
  const seen: string[] = [];
  const r: RoutableRequest = { method: 'GET', path: '/', query: '', header: (n) => (seen.push(n), n === 'x-tenant' ? 'blue' : undefined) };
  assert.equal(matches(m({ headers: [hdr('X-Tenant', 'exact', 'blue')] }), r), true);
  assert.deepEqual(seen, ['x-tenant']);
});

test('query matchers: present, exact, regex (first value, decoded)', () => {
  const cases: [RouteQueryMatch, string, boolean][] = [
    [qp('a', 'present'), 'a=1', true],
    [qp('a', 'present'), 'a', true],
    [qp('a', 'present'), 'a=', true],
    [qp('a', 'present'), 'b=1', false],
    [qp('a', 'present'), '', false],
    [qp('a', 'present'), 'aa=1&ba=2', false],
    [qp('a', 'exact', '1'), 'a=1', true],
    [qp('a', 'exact', '1'), 'b=2&a=1', true],
    [qp('a', 'exact', '1'), 'a=12', false],
    [qp('a', 'exact', '1'), 'a=2&a=1', false],
    [qp('a', 'exact', '1'), 'a=1&a=2', true],
    [qp('a', 'exact', ''), 'a', true],
    [qp('a', 'exact', ''), 'b', false],
    [qp('a', 'exact', 'x y'), 'a=x%20y', true],
    [qp('a', 'exact', 'x y'), 'a=x+y', true],
    [qp('a b', 'exact', '1'), 'a%20b=1', true],
    [qp('a', 'regex', '[0-9]+'), 'a=123', true],
    [qp('a', 'regex', '[0-9]+'), 'a=123x', false],
    [qp('a', 'regex', '[0-9]*'), 'a', true],
    [qp('a', 'regex', '.*'), 'b=1', false],
    [qp('a', 'regex', '/x/.*'), 'a=%2Fx%2Fy', true],
  ];
  for (const [q, query, expected] of cases) {
    assert.equal(matches(m({ queryParams: [q] }), req({ query })), expected, `${q.kind} ${q.name}=${q.value} on ?${query}`);
  }
});

test('every condition of one match is AND-ed', () => {
  const mt = m({
    path: { kind: 'prefix', value: '/api' },
    methods: ['POST'],
    headers: [hdr('x-a', 'exact', '1'), hdr('x-b', 'present', '', true)],
    queryParams: [qp('v', 'exact', '2')],
  });
  const ok: ReqInit = { method: 'POST', path: '/api/x', query: 'v=2', headers: { 'x-a': '1' } };
  assert.equal(matches(mt, req(ok)), true);
  assert.equal(matches(mt, req({ ...ok, path: '/other' })), false, 'path');
  assert.equal(matches(mt, req({ ...ok, method: 'GET' })), false, 'method');
  assert.equal(matches(mt, req({ ...ok, headers: {} })), false, 'header x-a');
  assert.equal(matches(mt, req({ ...ok, headers: { 'x-a': '1', 'x-b': 'y' } })), false, 'inverted header x-b');
  assert.equal(matches(mt, req({ ...ok, query: 'v=3' })), false, 'query');
  // Two matchers on the same header must both hold.
  const both = m({ headers: [hdr('x-v', 'prefix', 'ab'), hdr('x-v', 'suffix', 'yz')] });
  assert.equal(matches(both, req({ headers: { 'x-v': 'abcxyz' } })), true);
  assert.equal(matches(both, req({ headers: { 'x-v': 'abc' } })), false);
});

test('a match with no conditions matches everything (like the catch-all)', () => {
  assert.equal(matches(m({}), req({ method: 'DELETE', path: '/x', query: 'a=1', headers: { h: 'v' } })), true);
});

test('routes are tried in order and the first match wins; the catch-all takes the rest', () => {
  const table = new RouteTable([
    route(m({ path: { kind: 'exact', value: '/api/special' } })),
    route(m({ path: { kind: 'prefix', value: '/api' } })),
    route(m({ path: { kind: 'exact', value: '/api/other' } })), // shadowed by the prefix route
    route(m({ headers: [hdr('x-canary', 'exact', 'true')] })),
    route(null),
  ]);
  assert.equal(table.match(req({ path: '/api/special' })), 0);
  assert.equal(table.match(req({ path: '/api/other' })), 1);
  assert.equal(table.match(req({ path: '/api' })), 1);
  assert.equal(table.match(req({ path: '/web', headers: { 'x-canary': 'true' } })), 3);
  assert.equal(table.match(req({ path: '/api/x', headers: { 'x-canary': 'true' } })), 1);
  assert.equal(table.match(req({ path: '/web' })), 4);
  assert.equal(table.routes.length, 5);
});

test('the catch-all alone matches every request; a null match in the middle shadows later routes', () => {
  assert.equal(new RouteTable([route(null)]).match(req({ method: 'PATCH', path: '/z' })), 0);
  const t = new RouteTable([route(m({ methods: ['PUT'] })), route(null), route(m({ path: { kind: 'prefix', value: '/' } }))]);
  assert.equal(t.match(req({ method: 'PUT' })), 0);
  assert.equal(t.match(req({ method: 'GET' })), 1);
});

test('a table without a catch-all sends an unmatched request to its last route', () => {
  const t = new RouteTable([route(m({ path: { kind: 'exact', value: '/a' } })), route(m({ path: { kind: 'exact', value: '/b' } }))]);
  assert.equal(t.match(req({ path: '/a' })), 0);
  assert.equal(t.match(req({ path: '/b' })), 1);
  assert.equal(t.match(req({ path: '/c' })), 1);
});

test('rewritePath: Envoy prefix_rewrite semantics', () => {
  const prefix = (value: string): RouteMatch => m({ path: { kind: 'prefix', value } });
  const exact = (value: string): RouteMatch => m({ path: { kind: 'exact', value } });
  const cases: [string, RouteMatch | null, string, string][] = [
    // [path, match, rewrite, expected]
    ['/api/users', prefix('/api'), '/v2', '/v2/users'],
    ['/api/users', prefix('/api/'), '/', '/users'],
    ['/api/users', prefix('/api/'), '/v2/', '/v2/users'],
    ['/api/users', prefix('/api'), '/', '/users'], // no "//users"
    ['/api/users', prefix('/api'), '/v2/', '/v2/users'], // no "/v2//users"
    ['/api', prefix('/api'), '/', '/'],
    ['/api', prefix('/api'), '/v2', '/v2'],
    ['/api', prefix('/api'), '/v2/', '/v2/'],
    ['/apiv2', prefix('/api'), '/x', '/xv2'], // a plain string prefix, as Envoy
    ['/foo', prefix('/'), '/v2', '/v2foo'], // Envoy's documented trailing-slash pitfall
    ['/foo', prefix('/'), '/v2/', '/v2/foo'],
    ['/api//x', prefix('/api'), '/v2/', '/v2//x'], // only one '/' is folded
    ['/old', exact('/old'), '/new', '/new'],
    ['/old', exact('/old'), '/new/', '/new/'],
    ['/a/b', m({ path: { kind: 'regex', value: '/a/.*' } }), '/x', '/a/b'],
    ['/a/b', m({ headers: [hdr('x', 'present')] }), '/x', '/a/b'],
    ['/a/b', null, '/x', '/a/b'],
    ['/api/users', prefix('/api'), '', '/api/users'],
  ];
  for (const [path, match, rewrite, expected] of cases) {
    assert.equal(rewritePath(path, match, rewrite), expected, `${path} ${JSON.stringify(match?.path ?? null)} -> ${rewrite}`);
  }
});

// ---- properties ----

const seg = fc.string({ unit: fc.constantFrom('/', 'a', 'b'), maxLength: 6 });
const slashPath = seg.map((s) => `/${s}`);

test('rewritePath: the result starts with the rewrite and keeps the rest after the prefix', () => {
  fc.assert(
    fc.property(slashPath, seg, slashPath, (prefix, rest, rewrite) => {
      const out = rewritePath(prefix + rest, m({ path: { kind: 'prefix', value: prefix } }), rewrite);
      assert.ok(out.startsWith(rewrite));
      const tail = out.slice(rewrite.length);
      assert.ok(tail === rest || (rewrite.endsWith('/') && rest.startsWith('/') && tail === rest.slice(1)));
      // Rewriting a prefix to itself is the identity when no slash is folded.
      if (!(prefix.endsWith('/') && rest.startsWith('/'))) {
        assert.equal(rewritePath(prefix + rest, m({ path: { kind: 'prefix', value: prefix } }), prefix), prefix + rest);
      }
    }),
    { numRuns: 500 },
  );
});

// Regexes from a tiny grammar that RE2 and JS RegExp read identically (inputs have no newline).
const REGEX_ATOMS = ['a', 'b', '/', '.', '.*', '[ab]', '[^/]+', '(a|b/)', 'a?', '(ab)*'];
const arbRegex = fc.array(fc.constantFrom(...REGEX_ATOMS), { maxLength: 4 }).map((a) => a.join(''));

const arbPathMatch = fc.oneof(
  fc.constant(null),
  fc.record({ kind: fc.constantFrom('exact' as const, 'prefix' as const), value: slashPath }),
  fc.record({ kind: fc.constant('regex' as const), value: arbRegex.map((r) => `/${r}`) }),
);

const HEADER_NAMES = ['x-a', 'X-A', 'x-b', 'X-B'];
const hval = fc.string({ unit: fc.constantFrom('a', 'b', ' '), maxLength: 3 });

const arbHeaderMatch: fc.Arbitrary<RouteHeaderMatch> = fc.oneof(
  fc.record({ name: fc.constantFrom(...HEADER_NAMES), kind: fc.constant('present' as const), value: fc.constant(''), invert: fc.boolean() }),
  fc.record({ name: fc.constantFrom(...HEADER_NAMES), kind: fc.constantFrom('exact' as const, 'prefix' as const, 'suffix' as const), value: hval, invert: fc.boolean() }),
  fc.record({ name: fc.constantFrom(...HEADER_NAMES), kind: fc.constant('regex' as const), value: arbRegex, invert: fc.boolean() }),
);

const QUERY_NAMES = ['a', 'b'];
const qval = fc.string({ unit: fc.constantFrom('a', 'b', ' '), maxLength: 2 });
const arbQueryMatch: fc.Arbitrary<RouteQueryMatch> = fc.oneof(
  fc.record({ name: fc.constantFrom(...QUERY_NAMES), kind: fc.constant('present' as const), value: fc.constant('') }),
  fc.record({ name: fc.constantFrom(...QUERY_NAMES), kind: fc.constant('exact' as const), value: qval }),
  fc.record({ name: fc.constantFrom(...QUERY_NAMES), kind: fc.constant('regex' as const), value: fc.constantFrom('a*', '[ab ]+', '.*', 'a b', 'b?') }),
);

const METHODS = ['GET', 'POST', 'PUT', 'DELETE'];
const arbMatch: fc.Arbitrary<RouteMatch> = fc.record({
  path: arbPathMatch,
  headers: fc.array(arbHeaderMatch, { maxLength: 2 }),
  queryParams: fc.array(arbQueryMatch, { maxLength: 2 }),
  methods: fc.subarray(['GET', 'POST', 'PUT']),
});

const arbRoutes = fc
  .tuple(fc.array(fc.option(arbMatch, { freq: 8, nil: null }), { maxLength: 5 }), fc.boolean())
  .map(([ms, catchAll]) => {
    const all = catchAll || ms.length === 0 ? [...ms, null] : ms;
    return all.map(route);
  });

interface PlainReq {
  readonly method: string;
  readonly path: string;
  readonly query: string;
  readonly headers: Record<string, string>;
}

const arbReq: fc.Arbitrary<PlainReq> = fc.record({
  method: fc.constantFrom(...METHODS),
  path: slashPath,
  // '+' is a space, as in forms; no '%' so the naive decoder below cannot throw.
  query: fc.string({ unit: fc.constantFrom('a', 'b', '=', '&', '+'), maxLength: 8 }),
  headers: fc.record({ 'x-a': hval, 'x-b': hval }, { requiredKeys: [] }),
});

/** Naive query parsing: first value per name, '+' as space. */
function naiveQuery(query: string, name: string): string | null {
  for (const part of query.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const n = decodeURIComponent((eq < 0 ? part : part.slice(0, eq)).replaceAll('+', ' '));
    const v = eq < 0 ? '' : decodeURIComponent(part.slice(eq + 1).replaceAll('+', ' '));
    if (n === name) return v;
  }
  return null;
}

const fullMatch = (re: string, s: string): boolean => new RegExp(`^(?:${re})$`).test(s);

function naiveHeader(h: RouteHeaderMatch, r: PlainReq): boolean {
  const name = h.name.toLowerCase();
  const v = Object.hasOwn(r.headers, name) ? r.headers[name] : undefined;
  let ok: boolean;
  if (v === undefined) ok = false;
  else if (h.kind === 'present') ok = true;
  else if (h.kind === 'exact') ok = v === h.value;
  else if (h.kind === 'prefix') ok = v.slice(0, h.value.length) === h.value;
  else if (h.kind === 'suffix') ok = v.length >= h.value.length && v.slice(v.length - h.value.length) === h.value;
  else ok = fullMatch(h.value, v);
  return h.invert ? !ok : ok;
}

function naiveQueryMatch(q: RouteQueryMatch, r: PlainReq): boolean {
  const v = naiveQuery(r.query, q.name);
  if (v === null) return false;
  if (q.kind === 'present') return true;
  if (q.kind === 'exact') return v === q.value;
  return fullMatch(q.value, v);
}

function naiveMatch(mt: RouteMatch, r: PlainReq): boolean {
  if (mt.path !== null) {
    const { kind, value } = mt.path;
    if (kind === 'exact' && r.path !== value) return false;
    if (kind === 'prefix' && r.path.slice(0, value.length) !== value) return false;
    if (kind === 'regex' && !fullMatch(value, r.path)) return false;
  }
  if (mt.methods.length > 0 && !mt.methods.includes(r.method)) return false;
  return mt.headers.every((h) => naiveHeader(h, r)) && mt.queryParams.every((q) => naiveQueryMatch(q, r));
}

function naiveRoute(routes: readonly ChainRoute[], r: PlainReq): number {
  const i = routes.findIndex((rt) => rt.match === null || naiveMatch(rt.match, r));
  return i < 0 ? routes.length - 1 : i;
}

test('RouteTable.match agrees with a naive first-match reference', () => {
  fc.assert(
    fc.property(arbRoutes, fc.array(arbReq, { minLength: 1, maxLength: 8 }), (routes, reqs) => {
      const table = new RouteTable(routes);
      for (const r of reqs) {
        assert.equal(table.match(req(r)), naiveRoute(routes, r));
      }
    }),
    { numRuns: 1000 },
  );
});

test('property: a single route matches iff the reference says so, and the index is stable across calls', () => {
  fc.assert(
    fc.property(arbMatch, arbReq, (mt, r) => {
      const table = new RouteTable([route(mt), route(null)]);
      const want = naiveMatch(mt, r) ? 0 : 1;
      assert.equal(table.match(req(r)), want);
      assert.equal(table.match(req(r)), want);
    }),
    { numRuns: 2000 },
  );
});
