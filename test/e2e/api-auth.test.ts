// API authorization (issue 7, "Config and control plane"), with real CLI processes: a
// non-dev agent bootstraps its management token into the data directory (0600, printed once,
// reused on restart); without a valid token every write and every sensitive read is 403 and
// nothing changes; tokens come as X-Consul-Token, Authorization: Bearer or ?token=; a service
// token acts only for its own service; proxies work with service tokens; the CLI takes -token,
// -token-file, MESHD_HTTP_TOKEN and MESHD_HTTP_TOKEN_FILE; `agent -dev` runs open and says so.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { generateRoot } from '../../src/ca/authority.ts';
import { meshd } from '../helpers/cli.ts';
import { echoOnce, startEchoApp, waitUntilEchoes, type EchoApp } from '../helpers/net.ts';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

type Auth = { token?: string; bearer?: string; query?: string };

function call(http: string, method: string, path: string, auth: Auth = {}, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = {};
  if (auth.token !== undefined) headers['x-consul-token'] = auth.token;
  if (auth.bearer !== undefined) headers.authorization = `Bearer ${auth.bearer}`;
  const url = new URL(path, `http://${http}`);
  if (auth.query !== undefined) url.searchParams.set('token', auth.query);
  return fetch(url, { method, headers, ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }) });
}

async function status(http: string, method: string, path: string, auth: Auth = {}, body?: unknown): Promise<number> {
  const r = await call(http, method, path, auth, body);
  await r.arrayBuffer();
  return r.status;
}

describe('API authorization on an agent without -dev', () => {
  let dir: string;
  let agent: MeshdProcess;
  let http: string;
  let management: string;
  let tokenFile: string;
  let app: EchoApp | undefined;
  const procs: MeshdProcess[] = [];

  const serviceToken = async (service: string): Promise<{ SecretID: string; AccessorID: string }> => {
    const r = await call(http, 'PUT', '/v1/acl/token', { token: management }, { Description: `${service} sidecar`, ServiceIdentities: [{ ServiceName: service }] });
    assert.equal(r.status, 200);
    return (await r.json()) as { SecretID: string; AccessorID: string };
  };

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-api-auth-'));
    agent = await startMeshd(['agent', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    http = agent.fields.http as string;
    tokenFile = join(dir, 'agent', 'acl-management-token');
  });

  after(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await agent?.stop();
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test('first start bootstraps a management token: a 0600 file in the data directory, printed once, read again on restart', async () => {
    assert.equal(agent.fields.acl, 'enabled');
    assert.equal(statSync(tokenFile).mode & 0o777, 0o600);
    management = readFileSync(tokenFile, 'utf8').trim();
    assert.match(management, UUID_RE);
    const first = agent.stderr();
    assert.ok(first.includes(management), 'the new token is printed at first start');
    assert.ok(first.includes(tokenFile), 'with where it is saved');
    assert.doesNotMatch(first, /DEV MODE/);

    await agent.stop();
    agent = await startMeshd(['agent', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    http = agent.fields.http as string;
    assert.equal(readFileSync(tokenFile, 'utf8').trim(), management, 'the same token after a restart');
    assert.ok(!agent.stderr().includes(management), 'never printed again');
    assert.match(agent.stderr(), /management token read from/);
    const self = await call(http, 'GET', '/v1/acl/token/self', { token: management });
    assert.equal(self.status, 200);
    assert.deepEqual(((await self.json()) as { Policies: { Name: string }[] }).Policies.map((p) => p.Name), ['global-management']);
  });

  test('without a valid token: writes and sensitive reads are 403 and nothing changes; the public reads answer', async () => {
    // Something to delete or overwrite, made with the management token.
    assert.equal(await status(http, 'PUT', '/v1/connect/intentions/exact?source=a&destination=b', { token: management }, { Action: 'allow' }), 200);
    assert.equal(await status(http, 'PUT', '/v1/agent/service/register', { token: management }, { ID: 'db-1', Name: 'db', Port: 5432 }), 200);
    const snapshot = async (): Promise<string[]> =>
      Promise.all(
        ['/v1/connect/intentions', '/v1/catalog/services', '/v1/config/service-defaults', '/v1/connect/ca/configuration', '/v1/connect/ca/roots'].map(async (p) => {
          const r = await call(http, 'GET', p, { token: management });
          assert.equal(r.status, 200, p);
          return `${p} ${r.headers.get('x-consul-index') ?? ''} ${await r.text()}`;
        }),
      );
    const before = await snapshot();
    const csr = '-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n';
    const attempts: [string, string, unknown?][] = [
      ['PUT', '/v1/connect/intentions/exact?source=web&destination=api', { Action: 'allow' }],
      ['DELETE', '/v1/connect/intentions/exact?source=a&destination=b'],
      ['POST', '/v1/connect/intentions', { SourceName: 'x', DestinationName: 'y', Action: 'allow' }],
      ['PUT', '/v1/config', { Kind: 'service-defaults', Name: 'api', Protocol: 'http' }],
      ['DELETE', '/v1/config/service-intentions/b'],
      ['PUT', '/v1/agent/service/register', { Name: 'evil', Port: 1 }],
      ['PUT', '/v1/agent/service/deregister/db-1'],
      ['PUT', '/v1/connect/ca/configuration', { Provider: 'consul', Config: { PrivateKeyType: 'ec', PrivateKeyBits: 384 } }],
      ['PUT', '/v1/acl/token', { ServiceIdentities: [{ ServiceName: 'web' }] }],
      ['POST', '/v1/connect/ca/sign', { CSR: csr }],
      ['POST', '/v1/agent/connect/authorize', { Target: 'api', ClientCertURI: 'spiffe://x.consul/ns/default/dc/dc1/svc/web' }],
      ['GET', '/v1/agent/connect/ca/leaf/web'],
      ['GET', '/v1/connect/ca/configuration'],
      ['GET', '/v1/connect/intentions'],
      ['GET', '/v1/config/service-defaults'],
      ['GET', '/v1/agent/services'],
      ['GET', '/v1/health/connect/db'],
      ['GET', '/v1/agent/self'],
      ['GET', '/v1/acl/token/self'],
    ];
    for (const auth of [{}, { token: 'd0e0f0a0-0000-4000-8000-000000000000' }, { bearer: 'not-a-token' }]) {
      for (const [method, path, body] of attempts) {
        const r = await call(http, method, path, auth, body);
        const text = await r.text();
        assert.equal(r.status, 403, `${method} ${path} with ${JSON.stringify(auth)}: ${text}`);
        if ('token' in auth || 'bearer' in auth) assert.match(text, /ACL not found/);
        else assert.match(text, /Permission denied.*X-Consul-Token/);
      }
    }
    assert.deepEqual(await snapshot(), before, 'no index moved, nothing changed');
    // Public: the trust bundle (certificates only) and the leader.
    assert.equal(await status(http, 'GET', '/v1/connect/ca/roots'), 200);
    assert.equal(await status(http, 'GET', '/v1/agent/connect/ca/roots?pem=true'), 200);
    assert.equal(await status(http, 'GET', '/v1/status/leader'), 200);
  });

  test('the management token works as X-Consul-Token, Authorization: Bearer and ?token=; two different tokens are a 400', async () => {
    assert.equal(await status(http, 'PUT', '/v1/connect/intentions/exact?source=web&destination=api', { bearer: management }, { Action: 'allow' }), 200);
    assert.equal(await status(http, 'GET', '/v1/connect/intentions/exact?source=web&destination=api', { token: management }), 200);
    assert.equal(await status(http, 'GET', '/v1/connect/ca/configuration', { query: management }), 200);
    const lower = await fetch(`http://${http}/v1/agent/self`, { headers: { authorization: `bearer ${management}` } });
    assert.equal(lower.status, 200, 'the scheme is case-insensitive, as in Consul');
    assert.equal(await status(http, 'GET', '/v1/agent/self', { token: management, bearer: management }), 200, 'the same token twice is fine');
    const mixed = await call(http, 'DELETE', '/v1/connect/intentions/exact?source=web&destination=api', { token: management, bearer: 'other' });
    assert.equal(mixed.status, 400);
    assert.match(await mixed.text(), /conflicting tokens/);
    assert.equal(await status(http, 'GET', '/v1/connect/intentions/exact?source=web&destination=api', { token: management }), 200, 'still there');
  });

  test('a service token acts only for its own service', async () => {
    const web = await serviceToken('web');
    const t = { token: web.SecretID };
    // Its own leaf (with the agent-generated key), never another service's.
    const leaf = await call(http, 'GET', '/v1/agent/connect/ca/leaf/web', t);
    assert.equal(leaf.status, 200);
    assert.match(((await leaf.json()) as { PrivateKeyPEM: string }).PrivateKeyPEM, /PRIVATE KEY/);
    assert.equal(await status(http, 'GET', '/v1/agent/connect/ca/leaf/api', t), 403);
    // No intention, config entry, CA or token writes; no CA configuration or jwt-provider reads.
    assert.equal(await status(http, 'PUT', '/v1/connect/intentions/exact?source=web&destination=api', t, { Action: 'allow' }), 403);
    assert.equal(await status(http, 'PUT', '/v1/config', t, { Kind: 'service-defaults', Name: 'web', Protocol: 'http' }), 403);
    assert.equal(await status(http, 'PUT', '/v1/connect/ca/configuration', t, { Provider: 'consul', Config: {} }), 403);
    assert.equal(await status(http, 'GET', '/v1/connect/ca/configuration', t), 403);
    assert.equal(await status(http, 'PUT', '/v1/acl/token', t, { ServiceIdentities: [{ ServiceName: 'api' }] }), 403);
    assert.equal(await status(http, 'GET', '/v1/config/jwt-provider', t), 403);
    // Registrations: its service and its sidecar, not another service, not a proxy for one,
    // not over another service's ID.
    assert.equal(await status(http, 'PUT', '/v1/agent/service/register', t, { ID: 'web-1', Name: 'web', Port: 8080, Check: { CheckID: 'web-ttl', TTL: '30s' } }), 200);
    const sidecar = { ID: 'web-proxy-1', Name: 'web-proxy', Kind: 'connect-proxy', Port: 21000, Proxy: { DestinationServiceName: 'web' } };
    assert.equal(await status(http, 'PUT', '/v1/agent/service/register', t, sidecar), 200);
    assert.equal(await status(http, 'PUT', '/v1/agent/service/register', t, { ID: 'api-9', Name: 'api', Port: 1 }), 403);
    assert.equal(await status(http, 'PUT', '/v1/agent/service/register', t, { ...sidecar, ID: 'web-proxy-2', Proxy: { DestinationServiceName: 'api' } }), 403);
    assert.equal(await status(http, 'PUT', '/v1/agent/service/register', { token: management }, { ID: 'api-1', Name: 'api', Port: 9090, Check: { CheckID: 'api-ttl', TTL: '30s' } }), 200);
    assert.equal(await status(http, 'PUT', '/v1/agent/service/register', t, { ID: 'api-1', Name: 'web', Port: 1 }), 403, 'cannot take over api-1');
    // Its own TTL checks only; deregister its own instances only.
    assert.equal(await status(http, 'PUT', '/v1/agent/check/pass/web-ttl', t), 200);
    assert.equal(await status(http, 'PUT', '/v1/agent/check/fail/api-ttl', t), 403);
    assert.equal(await status(http, 'PUT', '/v1/agent/service/deregister/api-1', t), 403);
    // What a proxy reads: catalog and health, intentions, its own proxy-config, authorize for itself.
    assert.equal(await status(http, 'GET', '/v1/health/connect/api', t), 200);
    assert.equal(await status(http, 'GET', '/v1/connect/intentions', t), 200);
    assert.equal(await status(http, 'GET', '/v1/connect/intentions/match?by=destination&name=web', t), 200);
    assert.equal(await status(http, 'GET', '/v1/config/service-defaults', t), 200);
    assert.equal(await status(http, 'GET', '/v1/internal/meshd/proxy-config/web?upstream=api', t), 200);
    assert.equal(await status(http, 'GET', '/v1/internal/meshd/proxy-config/api', t), 403);
    const uri = 'spiffe://11111111-2222-3333-4444-555555555555.consul/ns/default/dc/dc1/svc/billing';
    assert.equal(await status(http, 'POST', '/v1/agent/connect/authorize', t, { Target: 'web', ClientCertURI: uri }), 200);
    assert.equal(await status(http, 'POST', '/v1/agent/connect/authorize', t, { Target: 'api', ClientCertURI: uri }), 403);
    const services = (await (await call(http, 'GET', '/v1/agent/services', { token: management })).json()) as Record<string, unknown>;
    assert.deepEqual(Object.keys(services).sort(), ['api-1', 'db-1', 'web-1', 'web-proxy-1']);
    assert.equal(await status(http, 'PUT', '/v1/agent/service/deregister/web-proxy-1', t), 200);
    assert.equal(await status(http, 'PUT', '/v1/agent/service/deregister/web-1', t), 200);
    // Only the management token deletes tokens; a deleted token is unknown from then on.
    assert.equal(await status(http, 'DELETE', `/v1/acl/token/${web.AccessorID}`, t), 403);
    assert.equal(await status(http, 'DELETE', `/v1/acl/token/${web.AccessorID}`, { token: management }), 200);
    assert.equal(await status(http, 'GET', '/v1/agent/connect/ca/leaf/web', t), 403);
  });

  test('private keys: the CA configuration never returns the root key, not even one the operator supplied', async () => {
    const td = (await (await call(http, 'GET', '/v1/connect/ca/roots')).json()) as { TrustDomain: string };
    const root = await generateRoot({ clusterId: td.TrustDomain.replace(/\.consul$/, ''), now: new Date(Date.now() - 60_000) });
    const set = await call(http, 'PUT', '/v1/connect/ca/configuration', { token: management }, { Provider: 'consul', Config: { PrivateKey: root.keyPem, RootCert: root.certPem } });
    assert.equal(set.status, 200, await set.text());
    for (const path of ['/v1/connect/ca/configuration', '/v1/connect/ca/roots', '/v1/agent/connect/ca/roots?pem=true', '/v1/agent/self', '/v1/agent/services', '/v1/config/service-defaults']) {
      const body = await (await call(http, 'GET', path, { token: management })).text();
      assert.doesNotMatch(body, /PRIVATE KEY|"PrivateKey"|"SigningKey"/, path);
    }
    const roots = await (await call(http, 'GET', '/v1/connect/ca/roots')).text();
    assert.ok(roots.includes(JSON.stringify(root.certPem).slice(1, 40)), 'the supplied root is active');
  });

  test('proxies with service tokens serve traffic; a proxy with web\'s token cannot serve as api', async () => {
    const [api, web] = await Promise.all([serviceToken('api'), serviceToken('web')]);
    const webFile = join(dir, 'web-token');
    writeFileSync(webFile, `${web.SecretID}\n`, { mode: 0o600 });
    app = await startEchoApp();
    procs.push(
      await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1', '-http-addr', http, '-token', api.SecretID]),
    );
    const webProxy = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', '1', '-http-addr', http], { env: { MESHD_HTTP_TOKEN_FILE: webFile } });
    procs.push(webProxy);
    const created = await meshd(['intention', 'create', '-replace', '-allow', '-http-addr', http, '-token-file', tokenFile, 'web', 'api']);
    assert.equal(created.code, 0, created.stderr);
    const port = Number((webProxy.fields['upstream.api'] as string).split(':')[1]);
    assert.ok((await waitUntilEchoes(port, 5000)) >= 0, 'web reaches api through both sidecars');
    assert.equal(await echoOnce(port, 'hello'), 'hello');

    const wrong = await meshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-workers', '1', '-http-addr', http, '-token', web.SecretID]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /refuses to let this proxy act as service "api" \(HTTP 403\)/);
    assert.equal(wrong.stderr.trim().split('\n').length, 1, wrong.stderr);
    const anonymous = await meshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', '1', '-http-addr', http]);
    assert.equal(anonymous.code, 1);
    assert.match(anonymous.stderr, /403.*-token-file/);
  });

  test('CLI commands: -token, -token-file, MESHD_HTTP_TOKEN and MESHD_HTTP_TOKEN_FILE', async () => {
    const list = ['intention', 'list', '-http-addr', http];
    const [none, flag, file, env, envFile, missing, both] = await Promise.all([
      meshd(list),
      meshd([...list, '-token', management]),
      meshd([...list, '-token-file', tokenFile]),
      meshd(list, { MESHD_HTTP_TOKEN: management }),
      meshd(list, { MESHD_HTTP_TOKEN_FILE: tokenFile }),
      meshd([...list, '-token-file', join(dir, 'nope')]),
      meshd([...list, '-token', management, '-token-file', tokenFile]),
    ]);
    assert.equal(none.code, 2, 'intention commands exit 2 on errors, as Consul');
    assert.match(none.stderr, /HTTP 403.*-token-file/);
    for (const r of [flag, file, env, envFile]) {
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, /web\s+allow\s+api/);
    }
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /cannot read the token: -token-file .*nope: no such file/);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /-token or -token-file, not both/);
    const [reg, caGet, bad] = await Promise.all([
      meshd(['services', 'register', '-http-addr', http, '-name', 'cache', '-port', '6379', '-token-file', tokenFile]),
      meshd(['connect', 'ca', 'get-config', '-http-addr', http], { MESHD_HTTP_TOKEN_FILE: tokenFile }),
      meshd(['config', 'list', '-kind', 'service-defaults', '-http-addr', http], { MESHD_HTTP_TOKEN: 'wrong' }),
    ]);
    assert.equal(reg.code, 0, reg.stderr);
    assert.equal(caGet.code, 0, caGet.stderr);
    assert.match(caGet.stdout, /"Provider": "consul"/);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /HTTP 403\): ACL not found/);
  });
});

describe('agent start-up modes', () => {
  test('-dev runs open and says so; -token-file names the management token', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshd-api-auth-dev-'));
    const file = join(dir, 'mgmt');
    writeFileSync(file, 'f2b5c1a4-1111-4222-8333-944455556666\n', { mode: 0o600 });
    const agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-token-file', file]);
    try {
      const http = agent.fields.http as string;
      assert.equal(agent.fields.acl, 'disabled');
      const warning = agent.stderr().split('\n').filter((l) => /DEV MODE, ACLs DISABLED/.test(l));
      assert.equal(warning.length, 1, agent.stderr());
      assert.match(warning[0] as string, /\[WARN\].*without a token.*Never use -dev outside development/);
      assert.equal(await status(http, 'PUT', '/v1/connect/intentions/exact?source=web&destination=api', {}, { Action: 'allow' }), 200, 'open without a token');
      assert.equal(await status(http, 'PUT', '/v1/acl/token', {}, { ServiceIdentities: [{ ServiceName: 'web' }] }), 403, 'tokens are still the management token\'s');
      assert.equal(await status(http, 'PUT', '/v1/acl/token', { token: 'f2b5c1a4-1111-4222-8333-944455556666' }, { ServiceIdentities: [{ ServiceName: 'web' }] }), 200);
    } finally {
      await agent.stop();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('without -dev, -data-dir is required', async () => {
    const r = await meshd(['agent', '-http-addr', '127.0.0.1:0']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /-data-dir is required: it keeps the CA, the catalog and the bootstrapped management token/);
  });
});
