// The access log with real processes: the client sidecar logs to a file, the server sidecar
// too; HTTP requests (allowed, denied, and one the proxy answers itself) and a TCP connection
// each produce exactly one JSON line with the documented fields.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { echoOnce, startEchoApp, type EchoApp } from '../helpers/net.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';

interface Line {
  readonly time: number;
  readonly dir: string;
  readonly proto: string;
  readonly upstream?: string;
  readonly src?: string;
  readonly method?: string;
  readonly path?: string;
  readonly status?: number;
  readonly flag?: string;
  readonly rx?: number;
  readonly tx?: number;
  readonly ms: number;
}

function lines(file: string): Line[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => JSON.parse(l) as Line);
}

describe('access log', () => {
  let dir: string;
  let agent: MeshdProcess;
  const procs: MeshdProcess[] = [];
  let app: HttpApp;
  let echo: EchoApp;
  let webLog: string;
  let apiLog: string;
  let base: string;
  let dbPort: number;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-alog-'));
    webLog = join(dir, 'web-access.log');
    apiLog = join(dir, 'api-access.log');
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    const http = agent.fields.http as string;
    await putConfig(http, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(http, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/ok' } }] }] });
    await putConfig(http, { Kind: 'service-intentions', Name: 'db', Sources: [{ Name: 'web', Action: 'allow' }] });
    app = await startApp('api-1');
    echo = await startEchoApp();
    procs.push(await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1', '-access-log', apiLog, '-http-addr', http]));
    procs.push(await startMeshd(['connect', 'proxy', '-service', 'db', '-service-addr', `127.0.0.1:${echo.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1', '-http-addr', http]));
    const web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-upstream', 'db:0', '-workers', '2', '-access-log', webLog, '-http-addr', http]);
    procs.push(web);
    base = `http://${web.fields['upstream.api'] as string}`;
    dbPort = Number((web.fields['upstream.db'] as string).split(':')[1]);
    const end = Date.now() + 10_000;
    while ((await fetch(`${base}/ok/ready`).then(async (r) => (await r.arrayBuffer(), r.status))) !== 200) assert.ok(Date.now() < end, 'api not reachable');
  });

  after(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await agent?.stop();
    await app?.close();
    await echo?.close();
    if (process.env.KEEP_LOG === undefined) rmSync(dir, { recursive: true, force: true });
    else process.stderr.write(`${readFileSync(webLog, 'utf8').slice(0, 600)}\n`);
  });

  test('one JSON line per HTTP request on both sidecars, with status, path, caller and cause', async () => {
    // Lines are written asynchronously, so earlier requests (the readiness loop) may still be
    // arriving: pick this test's requests by their paths.
    const paths = ['/ok/a', '/ok/b', '/denied'];
    for (const path of ['/ok/a?secret=1', '/ok/b', '/denied']) {
      const r = await fetch(`${base}${path}`);
      await r.arrayBuffer();
    }
    const mine = async (file: string): Promise<Line[]> => {
      const end = Date.now() + 5000;
      for (;;) {
        const got = lines(file).filter((l) => l.proto === 'http' && paths.includes(l.path ?? ''));
        if (got.length >= 3 || Date.now() > end) return got;
        await new Promise((r) => setTimeout(r, 50));
      }
    };
    const web = await mine(webLog);
    const api = await mine(apiLog);
    assert.equal(web.length, 3);
    assert.equal(api.length, 3);
    assert.deepEqual(web.map((l) => [l.dir, l.proto, l.upstream, l.method, l.path, l.status]), [
      ['outbound', 'http', 'api', 'GET', '/ok/a', 200],
      ['outbound', 'http', 'api', 'GET', '/ok/b', 200],
      ['outbound', 'http', 'api', 'GET', '/denied', 403],
    ]);
    assert.deepEqual(api.map((l) => [l.dir, l.src, l.path, l.status, l.flag]), [
      ['inbound', 'web', '/ok/a', 200, undefined],
      ['inbound', 'web', '/ok/b', 200, undefined],
      ['inbound', 'web', '/denied', 403, 'rbac_denied'],
    ]);
    for (const l of [...web, ...api]) {
      assert.ok(l.ms >= 0 && l.ms < 10_000);
      assert.ok(Math.abs(l.time - Date.now()) < 60_000);
    }
    // The query is never logged.
    assert.ok(!readFileSync(webLog, 'utf8').includes('secret'));
  });

  test('a TCP connection is one line with the payload bytes each way', async () => {
    assert.equal(await echoOnce(dbPort, 'hello access log'), 'hello access log');
    const end = Date.now() + 5000;
    let got = lines(webLog).filter((l) => l.proto === 'tcp');
    while (got.length === 0 && Date.now() < end) {
      await new Promise((r) => setTimeout(r, 50));
      got = lines(webLog).filter((l) => l.proto === 'tcp');
    }
    assert.equal(got.length, 1);
    assert.equal(got[0]?.upstream, 'db');
    assert.equal(got[0]?.rx, 'hello access log'.length);
    assert.equal(got[0]?.tx, 'hello access log'.length);
  });
});
