// Fuzzing of every parser and decoder that reads untrusted input (fast-check, fixed seeds).
// Each target has an oracle: it may refuse (its own error type or a null/bad result) but
// never throw anything else, and what it accepts must satisfy its contract (a SPIFFE ID is
// canonical, a normalised path has no dot segments or merged slashes and is a fixed point,
// forwarded headers carry no hop-by-hop header, a JWT that verifies is the one that was signed).
//
// `npm test` runs a short budget (MESHD_FUZZ_RUNS, default 300 per target); `npm run fuzz`
// runs 100× that. A failing case fast-check finds goes into REGRESSIONS below (the input
// itself, not the seed, so it stays a case when generators change).

import assert from 'node:assert/strict';
import { generateKeyPairSync, sign } from 'node:crypto';
import { test } from 'node:test';
import fc from 'fast-check';
import { formatSpiffeId, parseSpiffeId } from '../../src/ca/spiffe.ts';
import { normalizeRequestPath } from '../../src/authz/l7.ts';
import { checkRequestHead } from '../../src/dataplane/http-guard.ts';
import { JwtVerifier, decodeBase64Url } from '../../src/authz/jwt-verify.ts';
import { decodeJwtProvider } from '../../src/config/jwt.ts';
import { decodeConfigEntry } from '../../src/config/entries.ts';
import { ConfigSyntaxError, collapseBlocks, parseConfigText } from '../../src/config/hcl.ts';
import { ENTRY_OBJECT_KEYS } from '../../src/config/entries.ts';
import { FieldError, parseJsonObject } from '../../src/control/decode.ts';
import { FilterError, compileFilter, INTENTION_FILTER_FIELDS } from '../../src/control/filter.ts';
import { decodeRegistration } from '../../src/control/catalog.ts';
import { forwardHeaders } from '../../src/dataplane/http-headers.ts';

const RUNS = Number(process.env.MESHD_FUZZ_RUNS ?? 300);
const opts = (seed: number): fc.Parameters<unknown> => ({ seed, numRuns: RUNS });

/** Inputs fast-check once found, kept as cases for every run (target → inputs). */
const REGRESSIONS = {
  spiffe: ['spiffe://a/ns/default/dc/dc1/svc/web/', 'spiffe://A.consul/ns/default/dc/dc1/svc/web', 'spiffe://a.consul/ns/default/dc/dc1/svc/%77eb', 'spiffe://a.consul/ns//dc/dc1/svc/web', 'spiffe://a.consul/ns/./dc/dc1/svc/web'],
  path: ['/%2e%2e/%2E/a', '/a/..;/b', '/a/%2e%2e%3b/b', '//a//b/', '/a\\..\\b', '/%252e/', '/.', '/a/.'],
  hcl: ['a = <<EOF\n', 'a { b = [1, { c = "${"} ] }', '"\\', '/*', 'x = "\n"'],
} as const;

/** Only errors of these classes may escape a decoder. */
function refusesCleanly(fn: () => unknown, ...allowed: (abstract new (...a: never[]) => Error)[]): void {
  try {
    fn();
  } catch (e) {
    if (!allowed.some((c) => e instanceof c)) throw new Error(`unexpected ${String(e)}`, { cause: e });
  }
}

// ------------------------------------------------------------------------------- SPIFFE

const segment = fc.oneof(fc.constantFrom('', '.', '..', 'default', 'dc1', 'web', 'WEB', 'a%2fb', 'svc', 'ns', 'dc', 'x-y', 'a.b', '%41'), fc.string({ maxLength: 6 }));
const spiffeLike = fc.oneof(
  fc.array(segment, { maxLength: 8 }).map((s) => `spiffe://${s.join('/')}`),
  fc.tuple(fc.constantFrom('spiffe://', 'SPIFFE://', 'spiffe:/', 'https://'), fc.constantFrom('a.consul', 'A.consul', '11111111-2222-3333-4444-555555555555.consul', 'x..y', ''), fc.array(segment, { maxLength: 8 }))
    .map(([scheme, td, segs]) => `${scheme}${td}/${segs.join('/')}`),
  fc.constantFrom(...REGRESSIONS.spiffe),
);

test('fuzz: parseSpiffeId never throws, and what it accepts is canonical (formats back to the same text)', () => {
  fc.assert(
    fc.property(spiffeLike, (uri) => {
      const id = parseSpiffeId(uri);
      if (id !== null) assert.equal(formatSpiffeId(id), uri, 'a non-canonical SPIFFE ID was accepted');
    }),
    opts(701),
  );
});

// ------------------------------------------------------------------------- request paths

const pathChar = fc.constantFrom('/', '/', '.', '..', '%2e', '%2E', '%2f', '%2F', '%5c', '%5C', '\\', ';', '%3b', 'a', 'B', '%41', '%25', '%', '?', '#', ' ', '%00', '%7f', '~', 'é', '//');
const target = fc.oneof(
  fc.array(pathChar, { maxLength: 16 }).map((p) => '/' + p.join('')),
  fc.string({ maxLength: 24 }),
  fc.constantFrom(...REGRESSIONS.path),
);

test('fuzz: normalizeRequestPath never throws; an accepted path has no dot segment, no empty segment, no escaped slash, and is a fixed point', () => {
  fc.assert(
    fc.property(target, (raw) => {
      const r = normalizeRequestPath(raw);
      if (!r.ok) return;
      const p = r.path;
      assert.ok(p.startsWith('/'), p);
      assert.ok(!p.includes('//'), `merged slashes left: ${p}`);
      assert.ok(!/(^|\/)\.\.?(\/|$)/.test(p), `dot segment left: ${p}`);
      assert.ok(!/%2f|%5c|\\/i.test(p), `escaped or back slash left: ${p}`);
      assert.ok(![...p].some((ch) => ch.charCodeAt(0) <= 0x20 || ch.charCodeAt(0) >= 0x7f), `control, space or non-ASCII left: ${JSON.stringify(p)}`);
      const again = normalizeRequestPath(p + (r.query === '' ? '' : `?${r.query}`));
      assert.ok(again.ok && again.path === p, `not a fixed point: ${p} → ${again.ok ? again.path : again.detail}`);
    }),
    opts(702),
  );
});

// ------------------------------------------------------------------------------ headers

const headerName = fc.oneof(fc.constantFrom('Connection', 'connection', 'Keep-Alive', 'TE', 'Transfer-Encoding', 'Upgrade', 'Trailer', 'Proxy-Authorization', 'X-A', 'x_a', 'Host', 'Content-Length', 'X-Named'), fc.string({ minLength: 1, maxLength: 8 }));
const headerValue = fc.oneof(fc.constantFrom('close', 'keep-alive, X-Named', 'x-a,  ,X-NAMED', 'chunked', ''), fc.string({ maxLength: 12 }));

test('fuzz: forwardHeaders drops every hop-by-hop header and every header Connection names; the head check refuses any "_" in a name', () => {
  fc.assert(
    fc.property(fc.array(fc.tuple(headerName, headerValue), { maxLength: 10 }), (pairs) => {
      const raw = pairs.flat();
      const named = new Set(pairs.filter(([n]) => n.toLowerCase() === 'connection').flatMap(([, v]) => v.split(',').map((t) => t.trim().toLowerCase())));
      const out = forwardHeaders(raw);
      const hop = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', 'trailer', 'proxy-authenticate', 'proxy-authorization', 'expect']);
      for (let i = 0; i < out.length; i += 2) {
        const n = (out[i] as string).toLowerCase();
        assert.ok(!hop.has(n) && !named.has(n), `forwarded ${n}`);
      }
      assert.equal(out.length, raw.length - 2 * pairs.filter(([n]) => hop.has(n.toLowerCase()) || named.has(n.toLowerCase())).length);
      if (pairs.some(([n]) => n.includes('_'))) assert.notEqual(checkRequestHead(raw), null, 'an underscored name passed');
    }),
    opts(703),
  );
});

// ---------------------------------------------------------------------------------- JWT

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const NOW_S = 1_700_000_000;
const b64u = (x: string | Buffer): string => Buffer.from(x).toString('base64url');
const jwtProvider = decodeJwtProvider({
  Kind: 'jwt-provider',
  Name: 'fuzz',
  Issuer: 'https://issuer',
  JSONWebKeySet: { Local: { JWKS: Buffer.from(JSON.stringify({ keys: [{ ...rsa.publicKey.export({ format: 'jwk' }), kid: 'k1', alg: 'RS256' }] })).toString('base64') } },
});
const verifier = new JwtVerifier(jwtProvider, { now: () => NOW_S * 1000 });
const goodData = `${b64u(JSON.stringify({ alg: 'RS256', kid: 'k1', typ: 'JWT' }))}.${b64u(JSON.stringify({ iss: 'https://issuer', exp: NOW_S + 600, sub: 'x' }))}`;
const good = `${goodData}.${b64u(sign('sha256', Buffer.from(goodData), rsa.privateKey))}`;

test('fuzz: JWT verification never throws; an edited token, an alg:none token or garbage never verifies', () => {
  assert.ok(verifier.verify(good).ok, 'the unedited token verifies');
  const edited = fc.tuple(fc.nat(good.length - 1), fc.constantFrom(...'AbZz09-_.='.split(''))).filter(([at, ch]) => good[at] !== ch).map(([at, ch]) => good.slice(0, at) + ch + good.slice(at + 1));
  const none = fc.jsonValue().map((payload) => `${b64u('{"alg":"none","typ":"JWT"}')}.${b64u(JSON.stringify(payload) ?? 'null')}.`);
  const garbage = fc.oneof(fc.string({ maxLength: 40 }), fc.array(fc.base64String({ maxLength: 40 }), { minLength: 1, maxLength: 4 }).map((p) => p.join('.')));
  fc.assert(
    fc.property(fc.oneof(edited, none, garbage), (token) => {
      const r = verifier.verify(token);
      if (r.ok) {
        // The only accepted edits are ones that leave the decoded token unchanged (base64url
        // padding-free encodings have a few spare low bits in the last character).
        const [h, p, s] = token.split('.');
        const [gh, gp, gs] = good.split('.');
        assert.deepEqual([decodeBase64Url(h ?? ''), decodeBase64Url(p ?? ''), decodeBase64Url(s ?? '')], [decodeBase64Url(gh ?? ''), decodeBase64Url(gp ?? ''), decodeBase64Url(gs ?? '')], `edited token verified: ${token}`);
      }
    }),
    opts(704),
  );
});

// ------------------------------------------------------------------- config text and entries

const KEYS = ['Kind', 'Name', 'Protocol', 'Sources', 'Action', 'Permissions', 'HTTP', 'PathExact', 'PathPrefix', 'PathRegex', 'Methods', 'Header', 'Present', 'Exact', 'Regex', 'Invert', 'Meta', 'Routes', 'Match', 'Destination', 'Service', 'Splits', 'Weight', 'ServiceSubset', 'Subsets', 'Filter', 'DefaultSubset', 'Redirect', 'Failover', 'Targets', 'JWT', 'Providers', 'Issuer', 'JSONWebKeySet', 'Local', 'UpstreamConfig', 'Defaults', 'ConnectTimeoutMs', 'Description', 'Precedence', 'Type', 'LegacyMeta', '__proto__', 'protocol', 'name'];
const KINDS = ['service-intentions', 'service-defaults', 'service-router', 'service-splitter', 'service-resolver', 'jwt-provider', 'nope', ''];
const leaf = fc.oneof(fc.constantFrom(...KINDS, 'http', 'tcp', 'allow', 'deny', '*', 'web', '/a', 'GET', '[', '(a+)+$', '5s', 'v1'), fc.integer({ min: -2, max: 200 }), fc.double(), fc.boolean(), fc.constant(null));
const configValue = fc.letrec((tie) => ({
  value: fc.oneof({ depthSize: 'small' }, leaf, tie('object'), fc.array(tie('value'), { maxLength: 3 })),
  object: fc.dictionary(fc.constantFrom(...KEYS), tie('value'), { maxKeys: 5 }),
})).object.map((o) => ({ Kind: KINDS[Math.abs(JSON.stringify(o).length) % KINDS.length], Name: 'api', ...(o as object) }));

test('fuzz: decodeConfigEntry refuses any malformed entry with a FieldError and nothing else', () => {
  fc.assert(fc.property(configValue, (doc) => refusesCleanly(() => decodeConfigEntry(collapseBlocks(doc, ENTRY_OBJECT_KEYS)), FieldError)), opts(705));
});

const hclText = fc.array(fc.constantFrom('a', 'Name', ' = ', '"x"', '"', '{', '}', '[', ']', ',', '\n', '#', '//', '/*', '*/', '<<EOF\n', 'EOF\n', '${', '\\', '1', '-', 'true'), { maxLength: 30 }).map((t) => t.join(''));

test('fuzz: parseConfigText (HCL and JSON) returns a document or a ConfigSyntaxError, nothing else', async () => {
  for (const text of REGRESSIONS.hcl) {
    try {
      await parseConfigText(text, 'r.hcl');
    } catch (e) {
      assert.ok(e instanceof ConfigSyntaxError, `${JSON.stringify(text)}: ${String(e)}`);
    }
  }
  await fc.assert(
    fc.asyncProperty(fc.oneof(hclText, fc.json().map((j) => `{"a": ${j}`), fc.json()), async (text) => {
      try {
        await parseConfigText(text, 'f');
      } catch (e) {
        assert.ok(e instanceof ConfigSyntaxError, `${JSON.stringify(text)}: ${String(e)}`);
      }
    }),
    { ...opts(706), numRuns: Math.max(50, Math.floor(RUNS / 3)) },
  );
});

test('fuzz: API bodies — parseJsonObject and decodeRegistration refuse with a FieldError only', () => {
  fc.assert(
    fc.property(fc.oneof(fc.json(), fc.string({ maxLength: 30 }), configValue.map((v) => JSON.stringify(v))), (text) => {
      refusesCleanly(() => decodeRegistration(parseJsonObject(text)), FieldError);
    }),
    opts(707),
  );
});

test('fuzz: filter expressions compile or fail with a FilterError only', () => {
  const tok = fc.constantFrom('SourceName', 'Action', 'Meta.k', '==', '!=', 'and', 'or', 'not', '(', ')', '"web"', '"', 'in', 'contains', 'is', 'empty', 'matches', '"[a"', ' ', 'Precedence', '5');
  fc.assert(
    fc.property(fc.oneof(fc.array(tok, { maxLength: 10 }).map((t) => t.join(' ')), fc.string({ maxLength: 20 })), (expr) => {
      refusesCleanly(() => compileFilter(expr, INTENTION_FILTER_FIELDS)({ SourceName: 'web', Action: 'allow', Meta: { k: 'v' }, Precedence: 9 }), FilterError);
    }),
    opts(708),
  );
});
