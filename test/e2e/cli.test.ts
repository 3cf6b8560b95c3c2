// The CLI's contract: help, usage errors (exit 2), one-line runtime errors that say what to
// do, and both flag spellings. Everything runs the real CLI as a child process.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:net';
import { fileURLToPath } from 'node:url';
import { meshd } from '../helpers/cli.ts';
import { freePort, startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';

describe('meshd CLI', () => {
  test('--help and -help exit 0 with the command list', async () => {
    for (const flag of ['--help', '-help']) {
      const r = await meshd([flag]);
      assert.equal(r.code, 0);
      assert.match(r.stdout, /connect proxy/);
    }
  });

  test('the bin shim runs the CLI on the pinned runtime', async () => {
    const bin = fileURLToPath(new URL('../../bin/meshd.js', import.meta.url));
    const out = await new Promise<string>((resolve, reject) =>
      execFile(process.execPath, [bin, 'version'], (err, stdout) => (err === null ? resolve(stdout) : reject(new Error(err.message)))),
    );
    assert.match(out, /^meshd v\d+\.\d+\.\d+ \(node 2\d\./);
  });

  test('an unknown flag prints usage and exits 2', async () => {
    const r = await meshd(['connect', 'proxy', '-servce', 'web']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /unknown flag: -servce/);
    assert.match(r.stderr, /Usage: meshd/);
  });

  test('a missing argument is a one-line usage error', async () => {
    const r = await meshd(['connect', 'proxy', '-listen', '127.0.0.1:0']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^meshd: -service is required$/m);
    const w = await meshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:1', '-workers', '0']);
    assert.equal(w.code, 2);
    assert.match(w.stderr, /-workers must be an integer/);
  });

  test('an unreachable agent gives one line that says what to do', async () => {
    const port = await freePort();
    const r = await meshd(['intention', 'check', '-http-addr', `127.0.0.1:${port}`, 'web', 'api']);
    assert.equal(r.code, 2, 'intention check errors exit 2, as Consul');
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.match(r.stderr, /cannot reach the meshd agent at http:\/\/127\.0\.0\.1:\d+ \(ECONNREFUSED\): start one with `meshd agent -dev`/);
    const p = await meshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-http-addr', `127.0.0.1:${port}`]);
    assert.equal(p.code, 1);
    assert.match(p.stderr, /cannot reach the meshd agent/);
  });

  test('MESHD_HTTP_ADDR is honoured', async () => {
    const port = await freePort();
    const r = await meshd(['intention', 'list'], { MESHD_HTTP_ADDR: `127.0.0.1:${port}` });
    assert.match(r.stderr, new RegExp(`127\\.0\\.0\\.1:${port}`));
  });

  describe('with an agent', () => {
    let agent: MeshdProcess;
    let http: string;
    let blocker: Server;
    before(async () => {
      agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0']);
      http = agent.fields.http as string;
      blocker = createServer();
      await new Promise<void>((resolve) => blocker.listen({ host: '127.0.0.1', port: 0 }, resolve));
    });
    after(async () => {
      blocker.close();
      await agent.stop();
    });

    test('a port in use gives a one-line error', async () => {
      const port = (blocker.address() as { port: number }).port;
      const a = await meshd(['agent', '-dev', '-http-addr', `127.0.0.1:${port}`]);
      assert.equal(a.code, 1);
      assert.match(a.stderr, new RegExp(`127\\.0\\.0\\.1:${port} is already in use`));
      const p = await meshd(['connect', 'proxy', '-service', 'web', '-upstream', `api:${port}`, '-workers', '1', '-http-addr', http]);
      assert.equal(p.code, 1);
      assert.match(p.stderr, /already in use/);
    });

    test('intention create refuses to overwrite without -replace', async () => {
      assert.equal((await meshd(['intention', 'create', '-http-addr', http, 'a', 'b'])).code, 0);
      const again = await meshd(['intention', 'create', '-deny', '-http-addr', http, 'a', 'b']);
      assert.equal(again.code, 1);
      assert.match(again.stderr, /already exists: use -replace/);
      const get = await meshd(['intention', 'get', '-http-addr', http, 'a', 'b']);
      assert.match(get.stdout, /Action:\s+allow/);
    });

    test('intention create -meta stores per-intention Meta (legacy ID API); get and delete take the ID', async () => {
      const c = await meshd(['intention', 'create', '-deny', '-meta', 'team=payments', '-meta', 'ticket=OPS-1', '-http-addr', http, 'mweb', 'mdb']);
      assert.equal(c.code, 0, c.stderr);
      const get = await meshd(['intention', 'get', '-http-addr', http, 'mweb', 'mdb']);
      assert.match(get.stdout, /Action:\s+deny/);
      assert.match(get.stdout, /Meta:\s+team=payments, ticket=OPS-1/);
      const id = /ID:\s+([0-9a-f-]{36})/.exec(get.stdout)?.[1];
      assert.ok(id !== undefined, get.stdout);
      const again = await meshd(['intention', 'create', '-meta', 'team=x', '-http-addr', http, 'mweb', 'mdb']);
      assert.equal(again.code, 1, 'no -replace: refused');
      const replaced = await meshd(['intention', 'create', '-replace', '-allow', '-meta', 'team=risk', '-http-addr', http, 'mweb', 'mdb']);
      assert.equal(replaced.code, 0, replaced.stderr);
      const get2 = await meshd(['intention', 'get', '-http-addr', http, 'mweb', 'mdb']);
      assert.match(get2.stdout, /Action:\s+allow/);
      assert.match(get2.stdout, /Meta:\s+team=risk$/m);
      const id2 = /ID:\s+([0-9a-f-]{36})/.exec(get2.stdout)?.[1] as string;
      assert.notEqual(id2, id);
      const byId = await meshd(['intention', 'get', '-http-addr', http, id2]);
      assert.match(byId.stdout, /Source:\s+mweb/);
      assert.equal((await meshd(['intention', 'delete', '-http-addr', http, id2])).code, 0);
      assert.equal((await meshd(['intention', 'get', '-http-addr', http, 'mweb', 'mdb'])).code, 2, 'gone (intention errors exit 2)');
      const bad = await meshd(['intention', 'create', '-meta', 'novalue', '-http-addr', http, 'mweb', 'mdb']);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /-meta "novalue" must be KEY=VALUE/);
    });

    test('intention match lists what applies in evaluation order; explain names the deciding intention', async () => {
      for (const [src, dst, flag] of [['web', 'db', '-allow'], ['*', 'db', '-deny'], ['web', '*', '-deny'], ['ops', 'cache', '-allow']] as const) {
        const r = await meshd(['intention', 'create', flag, '-http-addr', http, src, dst]);
        assert.equal(r.code, 0, r.stderr);
      }
      const byDst = await meshd(['intention', 'match', '-destination', '-http-addr', http, 'db']);
      assert.equal(byDst.code, 0, byDst.stderr);
      assert.deepEqual(byDst.stdout.trim().split('\n'), ['web => db (allow)', '* => db (deny)', 'web => * (deny)']);
      const bySrc = await meshd(['intention', 'match', '-source', '-http-addr', http, 'web']);
      assert.deepEqual(bySrc.stdout.trim().split('\n'), ['web => db (allow)', '* => db (deny)', 'web => * (deny)']);
      const ex = await meshd(['intention', 'explain', '-http-addr', http, 'web', 'db']);
      assert.equal(ex.code, 0);
      assert.match(ex.stdout, /^Allowed: Matched L4 intention: web => db \(allow\)/);
      assert.match(ex.stdout, /precedence 9/);
      const ex2 = await meshd(['intention', 'explain', '-http-addr', http, 'api', 'db']);
      assert.equal(ex2.code, 1);
      assert.match(ex2.stdout, /\* => db \(precedence 8\)/);
      const ex3 = await meshd(['intention', 'explain', '-http-addr', http, 'x', 'y']);
      assert.match(ex3.stdout, /^Denied: Default intention policy/);
      for (const [src, dst] of [['web', 'db'], ['*', 'db'], ['web', '*'], ['ops', 'cache']]) await meshd(['intention', 'delete', '-http-addr', http, src as string, dst as string]);
    });

    test('an invalid intention is refused with the field named, and nothing changes', async () => {
      const before = await (await fetch(`http://${http}/v1/connect/intentions`)).text();
      const r = await meshd(['intention', 'create', '-http-addr', http, 'web*', 'api']);
      assert.equal(r.code, 2);
      assert.match(r.stderr, /source: partial wildcards are not allowed/);
      const bad = await fetch(`http://${http}/v1/connect/intentions/exact?source=web&destination=api`, { method: 'PUT', body: '{"Action": "maybe"}' });
      assert.equal(bad.status, 400);
      assert.match(await bad.text(), /Action: must be "allow" or "deny"/);
      const notJson = await fetch(`http://${http}/v1/connect/intentions/exact?source=web&destination=api`, { method: 'PUT', body: '{"Action": ' });
      assert.equal(notJson.status, 400);
      assert.equal(await (await fetch(`http://${http}/v1/connect/intentions`)).text(), before);
    });
  });
});
