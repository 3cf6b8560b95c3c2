// Service definitions end to end, with real processes: `meshd services register` an HCL
// definition (HTTP check + connect { sidecar_service { ... } }), `meshd connect proxy
// -sidecar-for` runs the sidecar from the registration, traffic flows through it, the agent's
// checks take the instance out of `?passing` soon after its app dies, and
// `meshd services deregister` removes the service and its sidecar.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { meshd } from '../helpers/cli.ts';
import { freePort, startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';

const INTERVAL_MS = 1000;

describe('meshd services + connect proxy -sidecar-for', () => {
  let dir: string;
  let agent: MeshdProcess;
  let http: string;
  let app: Server;
  let appPort: number;
  const procs: MeshdProcess[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-services-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', dir]);
    http = agent.fields.http as string;
    app = createServer((req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end(req.url === '/health' ? 'healthy' : 'hello from web');
    });
    await new Promise<void>((resolve) => app.listen({ host: '127.0.0.1', port: 0 }, resolve));
    appPort = (app.address() as AddressInfo).port;
  });

  after(async () => {
    for (const p of procs) await p.stop();
    app.closeAllConnections();
    app.close();
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const getJson = async <T,>(path: string): Promise<T> => (await fetch(`http://${http}${path}`)).json() as Promise<T>;
  const passing = async (name: string): Promise<string[]> => (await getJson<{ Service: { ID: string } }[]>(`/v1/health/connect/${name}?passing=1`)).map((e) => e.Service.ID);

  test('usage and file errors', async () => {
    const none = await meshd(['services']);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /Usage: meshd services <register\|deregister>/);
    const help = await meshd(['services', 'register', '-help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Usage: meshd services register/);
    assert.match((await meshd(['--help'])).stdout, /services\s+Register and deregister/);
    const both = await meshd(['services', 'deregister', '-http-addr', http]);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /exactly one of -id ID or FILE/);

    const bad = join(dir, 'bad.hcl');
    writeFileSync(bad, 'service {\n  name = "web"\n  check {\n    http = "http://127.0.0.1:1/"\n  }\n}\n');
    const r = await meshd(['services', 'register', '-http-addr', http, bad]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
    assert.match(r.stderr, /bad\.hcl: service "web": Check\.Interval: is required/);
    const missing = await meshd(['services', 'register', '-http-addr', http, join(dir, 'nope.hcl')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /cannot read .*nope\.hcl/);

    const p = await meshd(['connect', 'proxy', '-sidecar-for', 'nope', '-http-addr', http]);
    assert.equal(p.code, 1);
    assert.match(p.stderr, /no service with ID "nope" is registered/);
    const mixed = await meshd(['connect', 'proxy', '-sidecar-for', 'web-1', '-service', 'web', '-http-addr', http]);
    assert.equal(mixed.code, 2);
    assert.match(mixed.stderr, /-service cannot be combined with -sidecar-for/);
  });

  test('register from HCL, run the sidecar from its registration, fail over health, deregister', async () => {
    const sidecarPort = await freePort();
    const upstreamPort = await freePort();
    const file = join(dir, 'web.hcl');
    writeFileSync(
      file,
      `service {
  name = "web"
  id   = "web-1"
  address = "127.0.0.1"
  port = ${appPort}
  tags = ["v1"]
  meta { version = "1" }
  check {
    id       = "web-http"
    name     = "web /health"
    http     = "http://127.0.0.1:${appPort}/health"
    interval = "1s"
    timeout  = "500ms"
  }
  connect {
    sidecar_service {
      port = ${sidecarPort}
      # Consul's default sidecar checks, with a 1s interval instead of 10s to keep the test short.
      checks = [
        { name = "Connect Sidecar Listening", tcp = "127.0.0.1:${sidecarPort}", interval = "1s" },
        { name = "Connect Sidecar Aliasing web-1", alias_service = "web-1" },
      ]
      proxy {
        upstreams = [{ destination_name = "api", local_bind_port = ${upstreamPort} }]
      }
    }
  }
}
`,
    );
    const reg = await meshd(['services', 'register', '-http-addr', http, file]);
    assert.equal(reg.code, 0, reg.stderr);
    assert.equal(reg.stdout.trim(), 'Registered service: web');
    const services = await getJson<Record<string, { Kind?: string; Port: number; Tags: string[]; Proxy?: { DestinationServiceID: string } }>>('/v1/agent/services');
    assert.deepEqual(Object.keys(services).sort(), ['web-1', 'web-1-sidecar-proxy']);
    assert.equal(services['web-1-sidecar-proxy']?.Port, sidecarPort);
    assert.deepEqual(services['web-1-sidecar-proxy']?.Tags, ['v1'], 'the sidecar inherits the tags');

    const sidecar = await startMeshd(['connect', 'proxy', '-sidecar-for', 'web-1', '-http-addr', http, '-workers', '1']);
    procs.push(sidecar);
    assert.equal(sidecar.fields.service, 'web');
    assert.equal(sidecar.fields.inbound, `127.0.0.1:${sidecarPort}`);
    assert.equal(sidecar.fields['upstream.api'], `127.0.0.1:${upstreamPort}`);
    assert.match(sidecar.stderr(), /running sidecar web-1-sidecar-proxy for service ID web-1/);

    // The listener check passes on its next run once the proxy listens.
    const deadline = Date.now() + 10 * INTERVAL_MS;
    while (!(await passing('web')).includes('web-1-sidecar-proxy')) {
      assert.ok(Date.now() < deadline, `the sidecar never became passing: ${JSON.stringify(await getJson('/v1/agent/checks'))}`);
      await sleep(100);
    }
    assert.deepEqual(await passing('web'), ['web-1-sidecar-proxy']);

    // Traffic reaches the app through the sidecar, from a client proxy allowed by an intention.
    assert.equal((await meshd(['intention', 'create', '-http-addr', http, 'client', 'web'])).code, 0);
    const clientPort = await freePort();
    const client = await startMeshd(['connect', 'proxy', '-service', 'client', '-upstream', `web:${clientPort}`, '-http-addr', http, '-workers', '1']);
    procs.push(client);
    let body = '';
    for (let i = 0; i < 50 && body === ''; i++) {
      try {
        body = await (await fetch(`http://127.0.0.1:${clientPort}/`, { signal: AbortSignal.timeout(2000) })).text();
      } catch {
        await sleep(100);
      }
    }
    assert.equal(body, 'hello from web');

    // The app dies: its HTTP check fails on the next run, the sidecar's alias follows.
    app.closeAllConnections();
    await new Promise<void>((resolve) => app.close(() => resolve()));
    const killed = Date.now();
    while ((await passing('web')).length > 0) {
      assert.ok(Date.now() - killed < 2 * INTERVAL_MS + 500, 'still passing two intervals after the app died');
      await sleep(50);
    }
    const left = Date.now() - killed;
    const checks = await getJson<Record<string, { Status: string; Output: string }>>('/v1/agent/checks');
    assert.equal(checks['web-http']?.Status, 'critical');
    assert.match(checks['web-http']?.Output ?? '', /ECONNREFUSED/);
    assert.equal(checks['service:web-1-sidecar-proxy:2']?.Status, 'critical');
    assert.equal(checks['service:web-1-sidecar-proxy:1']?.Status, 'passing', 'the proxy itself still listens');
    assert.ok(left < 2 * INTERVAL_MS + 500, `${left} ms`);

    const dereg = await meshd(['services', 'deregister', '-id', 'web-1', '-http-addr', http]);
    assert.equal(dereg.code, 0, dereg.stderr);
    assert.equal(dereg.stdout.trim(), 'Deregistered service: web-1');
    assert.deepEqual(await getJson('/v1/agent/services'), {}, 'the sidecar went with its service');
    assert.deepEqual(await getJson('/v1/agent/checks'), {});

    // Deregistering by FILE takes the IDs from the definitions.
    assert.equal((await meshd(['services', 'register', '-http-addr', http, file])).code, 0);
    const byFile = await meshd(['services', 'deregister', '-http-addr', http, file]);
    assert.equal(byFile.code, 0, byFile.stderr);
    assert.equal(byFile.stdout.trim(), 'Deregistered service: web-1');
    assert.deepEqual(await getJson('/v1/agent/services'), {});
  });

  test('flags mode and a JSON services list', async () => {
    const r = await meshd(['services', 'register', '-http-addr', http, '-name', 'cache', '-id', 'cache-1', '-port', '6379', '-tag', 'a', '-meta', 'tier=1']);
    assert.equal(r.code, 0, r.stderr);
    const svc = await getJson<{ ID: string; Port: number; Tags: string[]; Meta: Record<string, string> }>('/v1/agent/service/cache-1');
    assert.deepEqual({ ID: svc.ID, Port: svc.Port, Tags: svc.Tags, Meta: svc.Meta }, { ID: 'cache-1', Port: 6379, Tags: ['a'], Meta: { tier: '1' } });
    const file = join(dir, 'many.json');
    writeFileSync(file, JSON.stringify({ services: [{ Name: 'a', Port: 1 }, { Name: 'b', Port: 2, Check: { TTL: '30s' } }] }));
    const many = await meshd(['services', 'register', '-http-addr', http, file]);
    assert.equal(many.code, 0, many.stderr);
    assert.deepEqual(many.stdout.trim().split('\n'), ['Registered service: a', 'Registered service: b']);
    for (const id of ['cache-1', 'a', 'b']) assert.equal((await meshd(['services', 'deregister', '-http-addr', http, '-id', id])).code, 0);
    const gone = await meshd(['services', 'deregister', '-http-addr', http, '-id', 'a']);
    assert.equal(gone.code, 1);
    assert.match(gone.stderr, /HTTP 404/);
  });
});
