// JWT verification (src/authz/jwt-verify.ts): every refusal reason, the accepted algorithms,
// VerifyClaims, the verified-token cache, token locations, and a property: changing any one
// character of a valid token's payload or signature gets it refused.
// Keys are generated here (node:crypto); the clock is injected.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { constants, createHmac, generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import fc from 'fast-check';
import { decodeJwtProvider, type JwtProviderEntry } from '../../src/config/jwt.ts';
import {
  JwtProviders,
  JwtVerifier,
  MAX_TOKEN_BYTES,
  cryptoVerify,
  decodeBase64Url,
  requirementHolds,
  tokenAt,
  verifiedJwtCheck,
  type JwtPayload,
  type JwtRequestInput,
  type JwtVerifierOptions,
  type SignatureVerify,
} from '../../src/authz/jwt-verify.ts';
import { compileL7Sources } from '../../src/authz/l7.ts';

const NOW = 1_700_000_000; // seconds
const clock = { ms: NOW * 1000 };
const now = (): number => clock.ms;

const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const rsa2 = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const ec384 = generateKeyPairSync('ec', { namedCurve: 'P-384' });
const ed = generateKeyPairSync('ed25519');

function b64u(x: string | Buffer): string {
  return Buffer.from(x).toString('base64url');
}

function jwk(key: KeyObject, kid?: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return { ...key.export({ format: 'jwk' }), ...(kid === undefined ? {} : { kid }), ...extra };
}

/** A signed compact JWS; `alg` picks how. */
function signJwt(alg: string, key: KeyObject, payload: object, header: Record<string, unknown> = {}): string {
  const data = `${b64u(JSON.stringify({ alg, typ: 'JWT', ...header }))}.${b64u(JSON.stringify(payload))}`;
  const hash = alg === 'EdDSA' ? null : `sha${alg.slice(2)}`;
  let sig: Buffer;
  if (alg.startsWith('RS')) sig = sign(hash, Buffer.from(data), key);
  else if (alg.startsWith('PS')) sig = sign(hash, Buffer.from(data), { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST });
  else if (alg.startsWith('ES')) sig = sign(hash, Buffer.from(data), { key, dsaEncoding: 'ieee-p1363' });
  else sig = sign(null, Buffer.from(data), key);
  return `${data}.${b64u(sig)}`;
}

function provider(fields: Record<string, unknown> = {}, keys: object[] = [jwk(rsa.publicKey, 'rsa1'), jwk(ec.publicKey, 'ec1'), jwk(ed.publicKey, 'ed1')]): JwtProviderEntry {
  return decodeJwtProvider({
    Kind: 'jwt-provider',
    Name: 'okta',
    Issuer: 'https://issuer.example',
    Audiences: ['api'],
    JSONWebKeySet: { Local: { JWKS: Buffer.from(JSON.stringify({ keys })).toString('base64') } },
    ...fields,
  });
}

function verifier(fields: Record<string, unknown> = {}, keys?: object[], options: JwtVerifierOptions = {}): JwtVerifier {
  return new JwtVerifier(provider(fields, keys), { now, ...options });
}

const claims = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ iss: 'https://issuer.example', aud: 'api', sub: 'alice', exp: NOW + 3600, ...extra });

function reason(v: JwtVerifier, token: string): string {
  const r = v.verify(token);
  return r.ok ? 'ok' : r.reason;
}

test('RS256, PS256, ES256, ES384 and EdDSA tokens from the key set are accepted', () => {
  const v = verifier({}, [jwk(rsa.publicKey, 'rsa1'), jwk(ec.publicKey, 'ec1'), jwk(ec384.publicKey, 'ec2'), jwk(ed.publicKey, 'ed1')]);
  assert.deepEqual([...v.algorithms].sort(), ['ES256', 'ES384', 'EdDSA', 'PS256', 'PS384', 'PS512', 'RS256', 'RS384', 'RS512']);
  for (const [alg, key, kid] of [['RS256', rsa.privateKey, 'rsa1'], ['RS512', rsa.privateKey, 'rsa1'], ['PS256', rsa.privateKey, 'rsa1'], ['ES256', ec.privateKey, 'ec1'], ['ES384', ec384.privateKey, 'ec2'], ['EdDSA', ed.privateKey, 'ed1']] as const) {
    const r = v.verify(signJwt(alg, key, claims(), { kid }));
    assert.ok(r.ok, `${alg}: ${r.ok ? '' : r.detail}`);
    assert.equal(r.payload.sub, 'alice');
  }
  // Without a kid, every key that can check the alg is tried.
  assert.equal(reason(v, signJwt('ES256', ec.privateKey, claims())), 'ok');
  assert.equal(reason(v, signJwt('RS256', rsa.privateKey, claims())), 'ok');
});

test('alg none and HS256 (even "signed" with the RSA public key) are refused as bad_alg', () => {
  const v = verifier();
  const none = `${b64u(JSON.stringify({ alg: 'none' }))}.${b64u(JSON.stringify(claims()))}.`;
  assert.equal(reason(v, none), 'bad_alg');
  const noneKid = `${b64u(JSON.stringify({ alg: 'none', kid: 'rsa1' }))}.${b64u(JSON.stringify(claims()))}.${b64u('x')}`;
  assert.equal(reason(v, noneKid), 'bad_alg');
  // The classic confusion: an HMAC keyed with the RSA public key's PEM.
  const data = `${b64u(JSON.stringify({ alg: 'HS256', kid: 'rsa1' }))}.${b64u(JSON.stringify(claims()))}`;
  const pem = rsa.publicKey.export({ type: 'spki', format: 'pem' });
  const hs = `${data}.${b64u(createHmac('sha256', pem).update(data).digest())}`;
  assert.equal(reason(v, hs), 'bad_alg');
  // A symmetric key in the set never enables HS*: oct keys are ignored.
  const octOnly = verifier({}, [{ kty: 'oct', k: b64u('secret'), kid: 'h' }]);
  assert.equal(octOnly.algorithms.size, 0);
  assert.equal(reason(octOnly, `${b64u(JSON.stringify({ alg: 'HS256', kid: 'h' }))}.${b64u('{}')}.${b64u(createHmac('sha256', 'secret').update('x').digest())}`), 'bad_alg');
  // An alg the keys cannot do: ES384 against a set with only a P-256 EC key.
  assert.equal(reason(verifier({}, [jwk(ec.publicKey, 'ec1')]), signJwt('ES384', ec384.privateKey, claims())), 'bad_alg');
  // The key pinned by kid cannot do this alg.
  assert.equal(reason(v, signJwt('RS256', rsa.privateKey, claims(), { kid: 'ec1' })), 'bad_alg');
});

test('keys that cannot verify JWS are left out: RSA under 2048 bits, use=enc, an alg pin, unknown curves', () => {
  const small = generateKeyPairSync('rsa', { modulusLength: 1024 });
  assert.equal(verifier({}, [jwk(small.publicKey)]).algorithms.size, 0);
  assert.equal(reason(verifier({}, [jwk(small.publicKey), jwk(ec.publicKey)]), signJwt('RS256', small.privateKey, claims())), 'bad_alg');
  assert.equal(verifier({}, [jwk(rsa.publicKey, 'a', { use: 'enc' })]).algorithms.size, 0);
  assert.deepEqual([...verifier({}, [jwk(rsa.publicKey, 'a', { alg: 'PS384' })]).algorithms], ['PS384']);
  const k1 = generateKeyPairSync('ec', { namedCurve: 'secp256k1' });
  assert.equal(verifier({}, [jwk(k1.publicKey)]).algorithms.size, 0);
  const x = generateKeyPairSync('x25519');
  assert.equal(verifier({}, [jwk(x.publicKey)]).algorithms.size, 0);
});

test('exp and nbf allow ClockSkewSeconds (default 30) of leeway', () => {
  const v = verifier();
  const t = (extra: Record<string, unknown>): string => signJwt('RS256', rsa.privateKey, claims(extra), { kid: 'rsa1' });
  assert.equal(reason(v, t({ exp: NOW - 10 })), 'ok');
  assert.equal(reason(v, t({ exp: NOW - 30 })), 'ok');
  assert.equal(reason(v, t({ exp: NOW - 31 })), 'expired');
  assert.equal(reason(v, t({ nbf: NOW + 10 })), 'ok');
  assert.equal(reason(v, t({ nbf: NOW + 31 })), 'not_yet_valid');
  assert.equal(reason(v, t({ exp: undefined })), 'ok', 'no exp: no expiry (Envoy without require_expiration)');
  assert.equal(reason(v, t({ exp: '2030' })), 'malformed');
  const strict = verifier({ ClockSkewSeconds: 5 });
  assert.equal(reason(strict, t({ exp: NOW - 10 })), 'expired');
  assert.equal(reason(strict, t({ nbf: NOW + 10 })), 'not_yet_valid');
  assert.equal(reason(strict, t({ nbf: NOW + 4 })), 'ok');
});

test('iss must equal Issuer and aud must hold one of Audiences, when set', () => {
  const v = verifier({ Audiences: ['api', 'api2'] });
  const t = (extra: Record<string, unknown>): string => signJwt('ES256', ec.privateKey, claims(extra), { kid: 'ec1' });
  assert.equal(reason(v, t({ iss: 'https://evil.example' })), 'bad_issuer');
  assert.equal(reason(v, t({ iss: undefined })), 'bad_issuer');
  assert.equal(reason(v, t({ aud: 'other' })), 'bad_audience');
  assert.equal(reason(v, t({ aud: undefined })), 'bad_audience');
  assert.equal(reason(v, t({ aud: ['other', 'api2'] })), 'ok');
  assert.equal(reason(v, t({ aud: [1, 'api'] })), 'ok');
  const open = verifier({ Issuer: '', Audiences: [] });
  assert.equal(reason(open, t({ iss: 'anyone', aud: undefined })), 'ok');
});

test('an unknown kid is refused; a kid whose key did not sign it is a bad signature', () => {
  const v = verifier();
  assert.equal(reason(v, signJwt('RS256', rsa.privateKey, claims(), { kid: 'nope' })), 'unknown_kid');
  assert.equal(reason(v, signJwt('RS256', rsa2.privateKey, claims(), { kid: 'rsa1' })), 'bad_signature');
  assert.equal(reason(v, signJwt('RS256', rsa2.privateKey, claims())), 'bad_signature');
  assert.equal(reason(v, signJwt('RS256', rsa.privateKey, claims(), { kid: 7 })), 'malformed');
});

test('tokens over 8 KiB are refused before parsing', () => {
  const v = verifier();
  const big = signJwt('RS256', rsa.privateKey, claims({ pad: 'x'.repeat(MAX_TOKEN_BYTES) }), { kid: 'rsa1' });
  assert.ok(big.length > MAX_TOKEN_BYTES);
  assert.equal(reason(v, big), 'too_large');
  assert.equal(reason(v, 'a'.repeat(MAX_TOKEN_BYTES + 1)), 'too_large');
});

test('malformed tokens: wrong part count, padding, non-canonical base64url, non-JSON, crit', () => {
  const v = verifier();
  const good = signJwt('RS256', rsa.privateKey, claims(), { kid: 'rsa1' });
  const [h, p, s] = good.split('.') as [string, string, string];
  for (const bad of [`${h}.${p}`, `${good}.x`, `${h}..${s}`, `${h}.${p}.`, `.${p}.${s}`, `${h}=.${p}.${s}`, `${h}.${p}.${s}=`, `${h}.${p}+.${s}`, `${b64u('not json')}.${p}.${s}`, `${b64u('[1]')}.${p}.${s}`, 'abc', '..']) {
    assert.equal(reason(v, bad), 'malformed', bad.slice(0, 60));
  }
  assert.equal(reason(v, signJwt('RS256', rsa.privateKey, claims(), { kid: 'rsa1', crit: ['exp'] })), 'malformed');
  assert.equal(reason(v, signJwt('RS256', rsa.privateKey, [1, 2], { kid: 'rsa1' })), 'malformed');
  // A different spelling of the same signature bytes (unused low bits set) is not accepted.
  const last = s.at(-1) as string;
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
  const sameBytes = [...alphabet].find((c) => c !== last && decodeBase64Url(s.slice(0, -1) + c) === null && Buffer.from(s.slice(0, -1) + c, 'base64url').equals(Buffer.from(s, 'base64url')));
  assert.ok(sameBytes !== undefined);
  assert.equal(reason(v, `${h}.${p}.${s.slice(0, -1)}${sameBytes}`), 'malformed');
  assert.equal(reason(v, ''), 'missing');
});

test('a tampered signature or payload is a bad signature; an ES256 signature in DER form is refused', () => {
  const v = verifier();
  const good = signJwt('RS256', rsa.privateKey, claims(), { kid: 'rsa1' });
  const [h, p, s] = good.split('.') as [string, string, string];
  const sig = Buffer.from(s, 'base64url');
  sig[10] = (sig[10] as number) ^ 1;
  assert.equal(reason(v, `${h}.${p}.${b64u(sig)}`), 'bad_signature');
  assert.equal(reason(v, `${h}.${b64u(JSON.stringify(claims({ sub: 'root' })))}.${s}`), 'bad_signature');
  const data = `${b64u(JSON.stringify({ alg: 'ES256', kid: 'ec1' }))}.${b64u(JSON.stringify(claims()))}`;
  const der = sign('sha256', Buffer.from(data), ec.privateKey);
  assert.equal(reason(v, `${data}.${b64u(der)}`), 'bad_signature');
});

test('VerifyClaims: nested paths, string equality, membership in a list claim', () => {
  const v = verifier();
  const t = signJwt('EdDSA', ed.privateKey, claims({ perms: { role: 'admin', groups: ['ops', 'dev'], level: 3 }, scope: ['read', 'write'] }), { kid: 'ed1' });
  const check = (path: string[], value: string): string => {
    const r = v.verify(t, [{ path, value }]);
    return r.ok ? 'ok' : r.reason;
  };
  assert.equal(check(['perms', 'role'], 'admin'), 'ok');
  assert.equal(check(['perms', 'role'], 'user'), 'claims_mismatch');
  assert.equal(check(['perms', 'groups'], 'dev'), 'ok');
  assert.equal(check(['perms', 'groups'], 'sales'), 'claims_mismatch');
  assert.equal(check(['scope'], 'write'), 'ok');
  assert.equal(check(['perms', 'level'], '3'), 'claims_mismatch', 'numbers never match a string value');
  assert.equal(check(['perms', 'role', 'x'], 'admin'), 'claims_mismatch');
  assert.equal(check(['missing', 'role'], 'admin'), 'claims_mismatch');
  assert.equal(check(['sub'], 'alice'), 'ok');
  const all = v.verify(t, [{ path: ['sub'], value: 'alice' }, { path: ['perms', 'role'], value: 'user' }]);
  assert.equal(all.ok ? 'ok' : all.reason, 'claims_mismatch', 'claims are ANDed');

  // A requirement's providers are ORed; each one's claims are ANDed on its own payload.
  const payloads = new Map<string, JwtPayload>([['b', { role: 'admin' }]]);
  assert.equal(requirementHolds({ providers: [{ name: 'a', verifyClaims: [] }, { name: 'b', verifyClaims: [{ path: ['role'], value: 'admin' }] }] }, payloads), true);
  assert.equal(requirementHolds({ providers: [{ name: 'b', verifyClaims: [{ path: ['role'], value: 'user' }] }] }, payloads), false);
  assert.equal(requirementHolds({ providers: [{ name: 'a', verifyClaims: [] }] }, payloads), false);
  assert.equal(requirementHolds({ providers: [{ name: 'b', verifyClaims: [] }] }, undefined), false);
});

function countingVerify(): { verify: SignatureVerify; calls: () => number } {
  let n = 0;
  return {
    verify: (alg, key, data, sig) => {
      n++;
      return cryptoVerify(alg, key, data, sig);
    },
    calls: () => n,
  };
}

test('a repeated token is served from the cache: one signature check for many verifications', () => {
  const spy = countingVerify();
  const v = verifier({}, undefined, { verify: spy.verify });
  const t = signJwt('RS256', rsa.privateKey, claims(), { kid: 'rsa1' });
  for (let i = 0; i < 50; i++) assert.equal(reason(v, t), 'ok');
  assert.equal(spy.calls(), 1);
  // Failures are not cached.
  const bad = signJwt('RS256', rsa2.privateKey, claims(), { kid: 'rsa1' });
  assert.equal(reason(v, bad), 'bad_signature');
  assert.equal(reason(v, bad), 'bad_signature');
  assert.equal(spy.calls(), 3);
});

test('the cache honours exp on every hit, and is a bounded LRU (CacheConfig.Size)', () => {
  const spy = countingVerify();
  const v = verifier({ CacheConfig: { Size: 2 } }, undefined, { verify: spy.verify });
  const short = signJwt('RS256', rsa.privateKey, claims({ exp: NOW + 60 }), { kid: 'rsa1' });
  assert.equal(reason(v, short), 'ok');
  clock.ms = (NOW + 60 + 30) * 1000;
  assert.equal(reason(v, short), 'ok', 'still within the skew');
  clock.ms = (NOW + 60 + 31) * 1000;
  try {
    assert.equal(reason(v, short), 'expired');
    assert.equal(spy.calls(), 1, 'expired from the cache, not re-verified');
  } finally {
    clock.ms = NOW * 1000;
  }
  const [a, b, c] = ['a', 'b', 'c'].map((sub) => signJwt('RS256', rsa.privateKey, claims({ sub }), { kid: 'rsa1' })) as [string, string, string];
  const before = spy.calls();
  reason(v, a);
  reason(v, b);
  reason(v, a); // a is now the most recent
  reason(v, c); // evicts b
  assert.equal(v.cacheSize, 2);
  assert.equal(spy.calls() - before, 3);
  reason(v, a);
  assert.equal(spy.calls() - before, 3, 'a stayed cached');
  reason(v, b);
  assert.equal(spy.calls() - before, 4, 'b was evicted');
});

test('property: changing any one character of the payload or signature gets the token refused', () => {
  const v = verifier();
  const tokens = [
    signJwt('RS256', rsa.privateKey, claims(), { kid: 'rsa1' }),
    signJwt('ES256', ec.privateKey, claims({ role: ['a', 'b'] }), { kid: 'ec1' }),
    signJwt('EdDSA', ed.privateKey, claims()),
  ];
  for (const t of tokens) assert.equal(reason(v, t), 'ok');
  fc.assert(
    fc.property(fc.constantFrom(...tokens), fc.nat(), fc.integer({ min: 0x21, max: 0x7e }), (token, at, code) => {
      const start = token.indexOf('.') + 1; // payload and signature: everything after the header
      const i = start + (at % (token.length - start));
      const ch = String.fromCharCode(code);
      fc.pre(token[i] !== ch);
      const changed = token.slice(0, i) + ch + token.slice(i + 1);
      const r = v.verify(changed);
      assert.equal(r.ok, false, `accepted a token changed at ${i} to ${ch}`);
    }),
    { numRuns: 2000 },
  );
});

function reqOf(headers: Record<string, string>, query = ''): JwtRequestInput {
  return { header: (n) => headers[n], query };
}

test('locations: default Authorization Bearer then access_token; configured header prefix, query param, cookie', () => {
  const def = provider();
  assert.equal(tokenAt({ kind: 'header', name: 'Authorization', valuePrefix: 'Bearer ', forward: false }, reqOf({ authorization: 'bearer  abc ' })), 'abc');
  assert.equal(tokenAt({ kind: 'header', name: 'Authorization', valuePrefix: 'Bearer ', forward: false }, reqOf({ authorization: 'Basic abc' })), null);
  assert.equal(tokenAt({ kind: 'header', name: 'X-Token', valuePrefix: '', forward: true }, reqOf({ 'x-token': 'abc' })), 'abc');
  assert.equal(tokenAt({ kind: 'query-param', name: 'tok' }, reqOf({}, 'a=1&tok=abc')), 'abc');
  assert.equal(tokenAt({ kind: 'cookie', name: 'session' }, reqOf({ cookie: 'a=1; session=abc; b=2' })), 'abc');
  assert.equal(tokenAt({ kind: 'cookie', name: 'session' }, reqOf({ cookie: 'a=1' })), null);

  const t = signJwt('RS256', rsa.privateKey, claims(), { kid: 'rsa1' });
  const ps = new JwtProviders([def], { now });
  assert.equal(ps.authenticate(['okta'], reqOf({}, `access_token=${t}`)).kind, 'verified');
  const custom = new JwtProviders([provider({ Name: 'c', Locations: [{ Cookie: { Name: 'jwt' } }, { Header: { Name: 'X-Jwt', ValuePrefix: 'Token', Forward: true } }] })], { now });
  assert.equal(custom.authenticate(['c'], reqOf({ authorization: `Bearer ${t}` })).kind, 'missing', 'only the configured locations are read');
  assert.equal(custom.authenticate(['c'], reqOf({ cookie: `jwt=${t}` })).kind, 'verified');
  const viaHeader = custom.authenticate(['c'], reqOf({ 'x-jwt': `Token ${t}` }));
  assert.equal(viaHeader.kind, 'verified');
  assert.deepEqual(viaHeader.kind === 'verified' ? viaHeader.removeHeaders : null, [], 'Forward = true keeps the header');
});

test('authenticate: missing, invalid for every provider, verified by one (ORed), header removal and Forwarding', () => {
  const a = provider({ Name: 'a', Forwarding: { HeaderName: 'X-Jwt-Payload' } });
  const b = provider({ Name: 'b', Issuer: 'https://other.example', Forwarding: { HeaderName: 'X-B', PadForwardPayloadHeader: true } });
  const ps = new JwtProviders([a, b], { now });
  assert.deepEqual(ps.forwardingHeaders, ['x-jwt-payload', 'x-b']);
  assert.equal(ps.authenticate(['a', 'b'], reqOf({})).kind, 'missing');
  assert.equal(ps.authenticate(['a'], reqOf({ authorization: 'Basic xyz' })).kind, 'missing');
  const expired = signJwt('RS256', rsa.privateKey, claims({ exp: NOW - 100 }), { kid: 'rsa1' });
  const bad = ps.authenticate(['a', 'b'], reqOf({ authorization: `Bearer ${expired}` }));
  assert.deepEqual(bad.kind === 'invalid' ? [bad.provider, bad.reason] : bad.kind, ['a', 'expired']);
  // Only b's issuer: a refuses it, b verifies it, so the request is not invalid.
  const forB = signJwt('RS256', rsa.privateKey, { ...claims(), iss: 'https://other.example', sub: 'x1' }, { kid: 'rsa1' });
  const r = ps.authenticate(['a', 'b'], reqOf({ authorization: `Bearer ${forB}` }));
  assert.equal(r.kind, 'verified');
  if (r.kind !== 'verified') return;
  assert.deepEqual([...r.payloads.keys()], ['b']);
  assert.deepEqual(r.removeHeaders, ['authorization']);
  const seg = forB.split('.')[1] as string;
  assert.deepEqual(r.addHeaders, ['X-B', seg + '='.repeat((4 - (seg.length % 4)) % 4)]);
  // A provider not configured is skipped: the token is not looked at for it.
  assert.equal(ps.authenticate(['zzz'], reqOf({ authorization: `Bearer ${expired}` })).kind, 'missing');
  // Not among the applying providers: b's token is invalid for a alone.
  assert.equal(ps.authenticate(['a'], reqOf({ authorization: `Bearer ${forB}` })).kind, 'invalid');
});

test('with the L7 program: jwtProviders lists the names, verifiedJwtCheck reads req.jwt', () => {
  const jwtA = { providers: [{ name: 'a', verifyClaims: [{ path: ['role'], value: 'admin' }] }] };
  const programs = compileL7Sources(
    [{ name: 'web', layer: 'l7', precedence: 9, type: 'consul', description: '', permissions: [{ action: 'allow', http: { path: { kind: 'prefix', value: '/secure' }, methods: [], headers: [] }, jwt: jwtA }] }],
    { entryJwt: { providers: [{ name: 'b', verifyClaims: [] }, { name: 'a', verifyClaims: [] }] }, jwtCheck: verifiedJwtCheck },
  );
  const program = programs.programFor('web');
  assert.ok(program !== null);
  assert.deepEqual(program.jwtProviders, ['b', 'a']);
  const req = (jwt?: Map<string, JwtPayload>): Parameters<typeof program.evaluate>[0] => ({ method: 'GET', path: '/secure/x', header: () => undefined, ...(jwt === undefined ? {} : { jwt }) });
  assert.equal(program.evaluate(req(), false).reason, 'l7_default_deny');
  assert.equal(program.evaluate(req(new Map([['a', { role: 'admin' }]])), false).reason, 'l7_permission_allow');
  assert.equal(program.evaluate(req(new Map([['a', { role: 'user' }]])), false).reason, 'l7_default_deny');
  assert.equal(program.evaluate(req(new Map([['b', { role: 'admin' }]])), false).reason, 'l7_default_deny', 'entry JWT holds, the permission needs a');
});

test('a Filename key set is read when compiled; an unreadable one leaves the provider without keys', () => {
  const jwks = JSON.stringify({ keys: [jwk(rsa.publicKey, 'rsa1')] });
  const entry = decodeJwtProvider({ Kind: 'jwt-provider', Name: 'f', JSONWebKeySet: { Local: { Filename: '/keys.json' } } });
  const ok = new JwtVerifier(entry, { now, readFile: (p) => (p === '/keys.json' ? jwks : '') });
  assert.equal(reason(ok, signJwt('RS256', rsa.privateKey, claims(), { kid: 'rsa1' })), 'ok');
  const missing = new JwtVerifier(entry, { now, readFile: () => { throw new Error('ENOENT'); } });
  assert.equal(reason(missing, signJwt('RS256', rsa.privateKey, claims(), { kid: 'rsa1' })), 'bad_alg');
});
