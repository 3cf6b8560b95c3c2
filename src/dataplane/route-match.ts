// service-router matching on the data plane: a chain's routes compiled once per chain
// change (regexes with re2js, per worker), then tried in order per request; the first match
// wins and the compiler's catch-all (match null) always matches last.
// Runs on: data-plane workers.

import { RE2JS } from 're2js';
import type { ChainRoute, RouteHeaderMatch, RouteMatch, RouteQueryMatch } from '../chain/types.ts';

/** What a matcher reads from a request; header names are lower-case. */
export interface RoutableRequest {
  readonly method: string;
  /** The normalised path, without the query. */
  readonly path: string;
  /** The raw query string without '?' ('' when none). */
  readonly query: string;
  header(name: string): string | undefined;
}

type Test = (req: RoutableRequest, q: () => URLSearchParams) => boolean;

function compileHeader(m: RouteHeaderMatch): Test {
  const name = m.name.toLowerCase();
  let test: (v: string | undefined) => boolean;
  switch (m.kind) {
    case 'present':
      test = (v) => v !== undefined;
      break;
    case 'exact':
      test = (v) => v === m.value;
      break;
    case 'prefix':
      test = (v) => v !== undefined && v.startsWith(m.value);
      break;
    case 'suffix':
      test = (v) => v !== undefined && v.endsWith(m.value);
      break;
    case 'regex': {
      const re = RE2JS.compile(m.value);
      test = (v) => v !== undefined && re.matches(v);
      break;
    }
  }
  // Envoy's invert_match: a missing header with Invert matches (the matcher did not).
  return m.invert ? (req) => !test(req.header(name)) : (req) => test(req.header(name));
}

function compileQuery(m: RouteQueryMatch): Test {
  switch (m.kind) {
    case 'present':
      return (_req, q) => q().has(m.name);
    case 'exact':
      return (_req, q) => q().get(m.name) === m.value;
    case 'regex': {
      const re = RE2JS.compile(m.value);
      return (_req, q) => {
        const v = q().get(m.name);
        return v !== null && re.matches(v);
      };
    }
  }
}

function compileMatch(m: RouteMatch): Test {
  const tests: Test[] = [];
  if (m.path !== null) {
    const { kind, value } = m.path;
    if (kind === 'exact') tests.push((r) => r.path === value);
    else if (kind === 'prefix') tests.push((r) => r.path.startsWith(value));
    else {
      const re = RE2JS.compile(value);
      tests.push((r) => re.matches(r.path));
    }
  }
  if (m.methods.length > 0) {
    const methods = new Set(m.methods);
    tests.push((r) => methods.has(r.method));
  }
  for (const h of m.headers) tests.push(compileHeader(h));
  for (const q of m.queryParams) tests.push(compileQuery(q));
  return (req, q) => {
    for (const t of tests) if (!t(req, q)) return false;
    return true;
  };
}

/** Compiled routes: `match(req)` is the index of the first route that matches. */
export class RouteTable {
  readonly routes: readonly ChainRoute[];
  readonly #tests: readonly (Test | null)[];

  constructor(routes: readonly ChainRoute[]) {
    if (routes.length === 0) throw new Error('a chain has at least its catch-all route');
    this.routes = routes;
    this.#tests = routes.map((r) => (r.match === null ? null : compileMatch(r.match)));
  }

  match(req: RoutableRequest): number {
    // Query parameters are parsed only if a route asks for one, and then once.
    let parsed: URLSearchParams | undefined;
    const q = (): URLSearchParams => (parsed ??= new URLSearchParams(req.query));
    for (let i = 0; i < this.#tests.length; i++) {
      const t = this.#tests[i];
      if (t === null || t === undefined || t(req, q)) return i;
    }
    // The compiler always appends a catch-all; a chain without one sends to the last route.
    return this.#tests.length - 1;
  }
}

/**
 * Envoy's prefix_rewrite: the matched prefix (or the whole path, for an exact match) is
 * replaced by `rewrite`.
 */
export function rewritePath(path: string, match: RouteMatch | null, rewrite: string): string {
  if (rewrite === '' || match === null || match.path === null || match.path.kind === 'regex') return path;
  const rest = path.slice(match.path.value.length);
  // Avoid "//x" when both the rewrite ends and the rest begins with '/'.
  return rewrite.endsWith('/') && rest.startsWith('/') ? rewrite + rest.slice(1) : rewrite + rest;
}
