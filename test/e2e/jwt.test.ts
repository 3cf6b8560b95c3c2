// JWT requirements on L7 intentions end to end, with real processes from the CLI: an agent
// holding a jwt-provider (local JWKS, base64), an `api` app behind its sidecar, and a `web`
// sidecar whose upstream listener the test talks plain HTTP to. Tokens are signed here with
// generated keys.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPairSync, sign, type KeyObject } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { scrapeUntil, total } from '../helpers/net.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';

const ISSUER = 'https://issuer.example';
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const stranger = generateKeyPairSync('rsa', { modulusLength: 2048 });

function b64u(x: string | Buffer): string {
  return Buffer.from(x).toString('base64url');
}

function token(claims: Record<string, unknown>, key: KeyObject = rsa.privateKey, kid = 'k1'): string {
  const alg = key.asymmetricKeyType === 'ec' ? 'ES256' : 'RS256';
  const data = `${b64u(JSON.stringify({ alg, typ: 'JWT', kid }))}.${b64u(JSON.stringify(claims))}`;
  const sig = sign('sha256', Buffer.from(data), alg === 'ES256' ? { key, dsaEncoding: 'ieee-p1363' } : key);
  return `${data}.${b64u(sig)}`;
}

const nowS = (): number => Math.floor(Date.now() / 1000);
const claims = (extra: Record<string, unknown> = {}): Record<string, unknown> => ({ iss: ISSUER, aud: 'api', sub: 'alice', role: 'admin', exp: nowS() + 600, ...extra });

describe('JWT requirements on L7 intentions through two sidecars', () => {
  let dir: string;
  let agent: MeshdProcess;
  const procs: MeshdProcess[] = [];
  let app: HttpApp;
  let apiSidecar: MeshdProcess;
  let base: string;

  const get = async (path: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> => {
    const r = await fetch(`${base}${path}`, { headers });
    return { status: r.status, text: await r.text() };
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-jwt-'));
    agent = await startMeshd(['agent', '-dev', '-default-intention-policy', 'deny', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    const http = agent.fields.http as string;
    const jwks = { keys: [{ ...rsa.publicKey.export({ format: 'jwk' }), kid: 'k1' }, { ...ec.publicKey.export({ format: 'jwk' }), kid: 'k2' }] };
    await putConfig(http, {
      Kind: 'jwt-provider',
      Name: 'okta',
      Issuer: ISSUER,
      Audiences: ['api'],
      JSONWebKeySet: { Local: { JWKS: Buffer.from(JSON.stringify(jwks)).toString('base64') } },
      Forwarding: { HeaderName: 'x-jwt-payload' },
    });
    await putConfig(http, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(http, {
      Kind: 'service-intentions',
      Name: 'api',
      Sources: [
        {
          Name: 'web',
          Permissions: [
            { Action: 'allow', HTTP: { PathPrefix: '/secure' }, JWT: { Providers: [{ Name: 'okta', VerifyClaims: [{ Path: ['role'], Value: 'admin' }] }] } },
            { Action: 'allow', HTTP: { PathPrefix: '/public' } },
          ],
        },
      ],
    });
    app = await startApp('api');
    apiSidecar = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-register-id', 'a', '-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http]);
    procs.push(apiSidecar);
    const web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', '1', '-http-addr', http]);
    procs.push(web);
    base = `http://${web.fields['upstream.api'] as string}`;
    const deadline = Date.now() + 10_000;
    for (;;) {
      const r = await get('/public/ready');
      if (r.status === 200) break;
      assert.ok(Date.now() < deadline, `api not reachable through web: ${r.status} ${r.text}`);
      await new Promise((res) => setTimeout(res, 50));
    }
  });

  after(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await agent?.stop();
    await app?.close();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test('no token: the JWT permission does not match, so the default policy denies (403)', async () => {
    const hits = app.hits;
    const r = await get('/secure/data');
    assert.equal(r.status, 403);
    assert.equal(r.text, 'RBAC: access denied\n');
    assert.equal(app.hits, hits);
  });

  test('a valid token reaches the app: payload forwarded, Authorization removed, a forged payload header replaced', async () => {
    const t = token(claims());
    const r = await get('/secure/data', { authorization: `Bearer ${t}`, 'x-jwt-payload': b64u('{"role":"root"}') });
    assert.equal(r.status, 200, r.text);
    assert.equal(app.last?.url, '/secure/data');
    assert.equal(app.last?.headers['x-jwt-payload'], t.split('.')[1]);
    assert.equal(app.last?.headers.authorization, undefined);
    // ES256 from the same key set, and the access_token query parameter (Envoy's default locations).
    const q = await get(`/secure/q?access_token=${token(claims(), ec.privateKey, 'k2')}`);
    assert.equal(q.status, 200, q.text);
  });

  test('a valid token whose claims do not hold: the permission does not match (403)', async () => {
    const r = await get('/secure/data', { authorization: `Bearer ${token(claims({ role: 'user' }))}` });
    assert.equal(r.status, 403);
  });

  test('an expired, forged, wrong-audience or garbage token is refused with 401 before any permission, and counted', async () => {
    const hits = app.hits;
    const bad = [
      token(claims({ exp: nowS() - 120 })),
      token(claims(), stranger.privateKey),
      token(claims({ aud: 'other' })),
      token(claims(), rsa.privateKey, 'unknown'),
      'not.a.jwt',
    ];
    for (const t of bad) {
      const r = await get('/secure/data', { authorization: `Bearer ${t}` });
      assert.equal(r.status, 401, t.slice(0, 40));
      assert.equal(r.text, 'Jwt verification fails\n');
    }
    // As with Envoy's jwt_authn filter (before RBAC), an invalid token fails even where no permission needs one.
    const pub = await get('/public/x', { authorization: `Bearer ${bad[0] as string}` });
    assert.equal(pub.status, 401);
    assert.equal(app.hits, hits);
    const m = await scrapeUntil(apiSidecar.fields.metrics as string, (s) => total(s, 'meshd_http_requests_denied_total', { layer: 'JWT', reason: 'jwt_invalid' }) >= 6);
    assert.equal(total(m, 'meshd_http_requests_denied_total', { layer: 'JWT', reason: 'jwt_invalid' }), 6);
  });

  test('a rewritten jwt-provider reaches the sidecar: a key taken out of the set stops verifying', async () => {
    const es = token(claims(), ec.privateKey, 'k2');
    assert.equal((await get('/secure/data', { authorization: `Bearer ${es}` })).status, 200);
    const jwks = { keys: [{ ...rsa.publicKey.export({ format: 'jwk' }), kid: 'k1' }] };
    await putConfig(agent.fields.http as string, {
      Kind: 'jwt-provider',
      Name: 'okta',
      Issuer: ISSUER,
      Audiences: ['api'],
      JSONWebKeySet: { Local: { JWKS: Buffer.from(JSON.stringify(jwks)).toString('base64') } },
      Forwarding: { HeaderName: 'x-jwt-payload' },
    });
    const deadline = Date.now() + 5000;
    for (;;) {
      const r = await get('/secure/data', { authorization: `Bearer ${es}` });
      if (r.status === 401) break;
      assert.ok(Date.now() < deadline, `still ${r.status} 5 s after the key was removed`);
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal((await get('/secure/data', { authorization: `Bearer ${token(claims())}` })).status, 200);
  });
});
