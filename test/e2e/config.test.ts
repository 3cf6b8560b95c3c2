// Config entries through the real CLI and agent: `meshd config write` with HCL and JSON,
// read/list/delete, check-and-set, refusals that name the field and change nothing, and the
// effect on the data plane (an L7 intention on an L4 listener is a deny, as in Consul).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { meshd } from '../helpers/cli.ts';
import { startEchoApp, waitUntilEchoes, waitUntilRefused, type EchoApp } from '../helpers/net.ts';

let dir: string;
let agent: MeshdProcess;
let api: MeshdProcess;
let web: MeshdProcess;
let app: EchoApp;
let http: string;
let upstreamPort: number;

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshd-config-'));
  agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0']);
  http = agent.fields.http as string;
  app = await startEchoApp();
  api = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1', '-http-addr', http]);
  web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', '1', '-http-addr', http]);
  upstreamPort = Number((web.fields['upstream.api'] as string).split(':')[1]);
});

after(async () => {
  await Promise.all([web?.stop(), api?.stop()]);
  await agent?.stop();
  await app?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('config write (HCL) allows web -> api on the live mesh; read, list and delete work', async () => {
  const hcl = file(
    'api.hcl',
    `Kind = "service-intentions"
Name = "api"
Sources = [
  {
    Name   = "web"
    Action = "allow"
  },
  {
    Name   = "*"
    Action = "deny"
  }
]
`,
  );
  const w = await meshd(['config', 'write', '-http-addr', http, hcl]);
  assert.equal(w.code, 0, w.stderr);
  assert.match(w.stdout, /Config entry written: service-intentions\/api/);
  assert.ok((await waitUntilEchoes(upstreamPort, 5000)) >= 0, 'web -> api never allowed');
  assert.equal((await meshd(['intention', 'check', '-http-addr', http, 'billing', 'api'])).stdout.trim(), 'Denied');

  const read = await meshd(['config', 'read', '-http-addr', http, '-kind', 'service-intentions', '-name', 'api']);
  const entry = JSON.parse(read.stdout) as { Sources: { Name: string; Precedence: number }[]; CreateIndex: number; ModifyIndex: number };
  assert.deepEqual(entry.Sources.map((s) => [s.Name, s.Precedence]), [['web', 9], ['*', 8]]);
  assert.ok(entry.ModifyIndex > 0);
  assert.equal((await meshd(['config', 'list', '-http-addr', http, '-kind', 'service-intentions'])).stdout.trim(), 'api');

  // The legacy view sees the same rules.
  assert.match((await meshd(['intention', 'list', '-http-addr', http])).stdout, /web\s+allow\s+api\s+9/);

  const del = await meshd(['config', 'delete', '-http-addr', http, '-kind', 'service-intentions', '-name', 'api']);
  assert.equal(del.code, 0, del.stderr);
  assert.ok((await waitUntilRefused(upstreamPort, 5000)) >= 0, 'still allowed after the entry was deleted');
});

test('an invalid entry is refused with the field named, and nothing changes', async () => {
  const good = file('good.json', JSON.stringify({ Kind: 'service-intentions', Name: 'db', Sources: [{ Name: 'web', Action: 'allow' }] }));
  assert.equal((await meshd(['config', 'write', '-http-addr', http, good])).code, 0);
  const before = (await meshd(['config', 'read', '-http-addr', http, '-kind', 'service-intentions', '-name', 'db'])).stdout;
  const bad = file('bad.hcl', 'Kind = "service-intentions"\nName = "db"\nSources = [{ Name = "web" Permissions = [{ Action = "allow" HTTP { PathPrefix = "v1" } }] }]\n');
  const r = await meshd(['config', 'write', '-http-addr', http, bad]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Sources\[0\]\.Permissions\[0\]\.HTTP\.PathPrefix/);
  assert.equal((await meshd(['config', 'read', '-http-addr', http, '-kind', 'service-intentions', '-name', 'db'])).stdout, before);
  const unknownKind = await meshd(['config', 'write', '-http-addr', http, file('k.json', '{"Kind":"mesh","Name":"x"}')]);
  assert.equal(unknownKind.code, 1);
  assert.match(unknownKind.stderr, /unsupported config entry kind/);
});

test('check-and-set: -cas -modify-index 0 only creates; a stale index is refused', async () => {
  const f = file('cas.json', JSON.stringify({ Kind: 'service-defaults', Name: 'cache', Protocol: 'http' }));
  assert.equal((await meshd(['config', 'write', '-cas', '-modify-index', '0', '-http-addr', http, f])).code, 0);
  const again = await meshd(['config', 'write', '-cas', '-modify-index', '0', '-http-addr', http, f]);
  assert.equal(again.code, 1);
  assert.match(again.stderr, /check-and-set/);
  const read = JSON.parse((await meshd(['config', 'read', '-http-addr', http, '-kind', 'service-defaults', '-name', 'cache'])).stdout) as { Protocol: string; ModifyIndex: number };
  assert.equal(read.Protocol, 'http');
  assert.equal((await meshd(['config', 'write', '-cas', '-modify-index', String(read.ModifyIndex), '-http-addr', http, f])).code, 0);
});

test('an L7 intention on an L4 listener denies the connection (Consul: L7 counts as deny for L4)', async () => {
  const l7 = file('l7.json', JSON.stringify({ Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/' } }] }] }));
  assert.equal((await meshd(['config', 'write', '-http-addr', http, l7])).code, 0);
  assert.ok((await waitUntilRefused(upstreamPort, 5000)) >= 0);
  const ex = await meshd(['intention', 'explain', '-http-addr', http, 'web', 'api']);
  assert.match(ex.stdout, /Layer:\s+L7/);
  await meshd(['config', 'delete', '-http-addr', http, '-kind', 'service-intentions', '-name', 'api']);
});
