// Health-aware splits and protocol changes on a running mesh, with real processes: a 50/50
// service-splitter between `api` and `api-canary`, whose canary sidecar is stopped (it
// deregisters) and started again; and a `db` upstream that starts as tcp and becomes http when
// its service-defaults is written, without restarting anything.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent, request } from 'node:http';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';

interface Reply {
  readonly status: number;
  readonly instance: string | null;
  readonly xfcc: string | null;
}

/** GET with node:http; `agent: false` is a new connection per request. */
function get(url: string, agent: Agent | false = false): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(url, { agent }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let xfcc: string | null = null;
        if (res.statusCode === 200) xfcc = (JSON.parse(text) as { xfcc: string | null }).xfcc;
        const instance = res.headers['x-instance'];
        resolve({ status: res.statusCode ?? 0, instance: typeof instance === 'string' ? instance : null, xfcc });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** `n` requests, 20 at a time. */
async function burst(url: string, n: number): Promise<Reply[]> {
  const out: Reply[] = [];
  for (let i = 0; i < n; i += 20) out.push(...(await Promise.all(Array.from({ length: Math.min(20, n - i) }, () => get(url)))));
  return out;
}

async function until(what: string, limitMs: number, ok: () => Promise<boolean>): Promise<number> {
  const start = performance.now();
  while (!(await ok())) {
    assert.ok(performance.now() - start < limitMs, `${what}: not within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return performance.now() - start;
}

function tally(replies: readonly Reply[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of replies) {
    const key = `${r.status} ${r.instance ?? '-'}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

describe('health-aware splits and a protocol switch on a running mesh', () => {
  let dir: string;
  let agent: MeshdProcess;
  let http: string;
  let apiApp: HttpApp;
  let canaryApp: HttpApp;
  let dbApp: HttpApp;
  let canary: MeshdProcess | undefined;
  const procs: MeshdProcess[] = [];
  let base: string;
  let dbBase: string;

  const startCanary = (): Promise<MeshdProcess> =>
    startMeshd(['connect', 'proxy', '-service', 'api-canary', '-service-addr', `127.0.0.1:${canaryApp.port}`, '-listen', '127.0.0.1:0', '-register', '-register-id', 'canary-1', '-workers', '1', '-http-addr', http]);

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-l7h-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    http = agent.fields.http as string;
    await putConfig(http, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(http, { Kind: 'service-defaults', Name: 'api-canary', Protocol: 'http' });
    await putConfig(http, { Kind: 'service-splitter', Name: 'api', Splits: [{ Weight: 50 }, { Weight: 50, Service: 'api-canary' }] });
    for (const name of ['api', 'api-canary', 'db']) await putConfig(http, { Kind: 'service-intentions', Name: name, Sources: [{ Name: 'web', Action: 'allow' }] });
    [apiApp, canaryApp, dbApp] = await Promise.all([startApp('api'), startApp('canary'), startApp('db')]);
    const sidecar = (service: string, app: HttpApp): Promise<MeshdProcess> =>
      startMeshd(['connect', 'proxy', '-service', service, '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1', '-http-addr', http]);
    procs.push(...(await Promise.all([sidecar('api', apiApp), sidecar('db', dbApp)])));
    canary = await startCanary();
    const web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-upstream', 'db:0', '-workers', '1', '-http-addr', http]);
    procs.push(web);
    base = `http://${web.fields['upstream.api'] as string}/split`;
    dbBase = `http://${web.fields['upstream.db'] as string}/db`;
    const seen = new Set<string | null>();
    await until('both sides of the split seen', 10_000, async () => {
      const r = await get(base);
      seen.add(r.instance);
      return seen.has('api') && seen.has('canary');
    });
  });

  after(async () => {
    await Promise.all([canary?.stop(), ...procs.map((p) => p.stop())]);
    await agent?.stop();
    await Promise.all([apiApp, canaryApp, dbApp].map((a) => a?.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  test('a 50/50 split sends about half of 200 requests to each side', async () => {
    const replies = await burst(base, 200);
    const t = tally(replies);
    // Binomial(200, 0.5): sd 7.1; 99.9 % two-sided is 100 +- 23.
    assert.equal((t['200 api'] ?? 0) + (t['200 canary'] ?? 0), 200, JSON.stringify(t));
    assert.ok(Math.abs((t['200 canary'] ?? 0) - 100) <= 23, JSON.stringify(t));
  });

  test("when the canary's sidecar stops (and deregisters), every request succeeds on api: its share moves over, no 503s", async () => {
    await canary?.stop();
    canary = undefined;
    // Within a few seconds, a run of 50 requests all land on api.
    const ms = await until('the canary share moved to api', 5000, async () => (await burst(base, 50)).every((r) => r.status === 200 && r.instance === 'api'));
    const t = tally(await burst(base, 200));
    assert.deepEqual(t, { '200 api': 200 }, `after ${ms.toFixed(0)} ms`);
  });

  test('a new canary sidecar takes its share back', async () => {
    const hits = canaryApp.hits;
    canary = await startCanary();
    await until('traffic to the canary resumed', 5000, async () => (await get(base)).instance === 'canary');
    const t = tally(await burst(base, 200));
    assert.equal((t['200 api'] ?? 0) + (t['200 canary'] ?? 0), 200, JSON.stringify(t));
    assert.ok(Math.abs((t['200 canary'] ?? 0) - 100) <= 23, JSON.stringify(t));
    assert.ok(canaryApp.hits > hits);
  });

  test('a tcp upstream becomes http when service-defaults says so: new connections are HTTP-proxied (XFCC at the app), an open one keeps its mode', async () => {
    // tcp: the bytes are spliced; the app sees the request as the client wrote it.
    const before = await get(dbBase);
    assert.equal(before.status, 200);
    assert.equal(before.instance, 'db');
    assert.equal(before.xfcc, null);
    // A kept-alive connection opened while the upstream is tcp.
    const keep = new Agent({ keepAlive: true, maxSockets: 1 });
    try {
      assert.equal((await get(dbBase, keep)).xfcc, null);

      await putConfig(http, { Kind: 'service-defaults', Name: 'db', Protocol: 'http' });
      await until('db proxied as http', 5000, async () => {
        const r = await get(dbBase);
        return r.status === 200 && r.xfcc !== null;
      });
      const now = await get(dbBase);
      assert.equal(now.status, 200);
      assert.match(now.xfcc ?? '', /^By=spiffe:\/\/[^;]+\/svc\/db;Hash=[0-9a-f]{64};URI=spiffe:\/\/[^;]+\/svc\/web$/);

      // The connection accepted before the switch is still served as tcp.
      const old = await get(dbBase, keep);
      assert.equal(old.status, 200);
      assert.equal(old.xfcc, null);
    } finally {
      keep.destroy();
    }
  });
});
