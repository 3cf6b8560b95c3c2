// The resolver and resilience features end to end, with real processes: two `api` instances
// labelled version=v1 and one labelled v2 (meta registered on their sidecars), a resolver with
// v1/v2 subsets, v1 -> v2 failover and ring_hash on a header, and web's UpstreamConfig with a
// concurrency limit and passive health checking.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { scrapeUntil, total } from '../helpers/net.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';

interface Reply {
  readonly status: number;
  readonly instance: string | null;
  readonly flag: string | null;
}

async function get(url: string, headers: Record<string, string> = {}): Promise<Reply> {
  const r = await fetch(url, { headers });
  await r.arrayBuffer();
  return { status: r.status, instance: r.headers.get('x-instance'), flag: r.headers.get('x-meshd-response-flag') };
}

async function until(what: string, limitMs: number, ok: () => Promise<boolean>): Promise<void> {
  const end = Date.now() + limitMs;
  while (!(await ok())) {
    assert.ok(Date.now() < end, `${what}: not within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('resolver subsets, failover, ring hash, circuit breaking and outlier ejection', () => {
  let dir: string;
  let agent: MeshdProcess;
  let web: MeshdProcess;
  let v1a: HttpApp;
  let v1b: HttpApp;
  let v2: HttpApp;
  const sidecars = new Map<string, MeshdProcess>();
  let base: string;

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-l7r-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    const http = agent.fields.http as string;
    await putConfig(http, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(http, {
      Kind: 'service-defaults',
      Name: 'web',
      UpstreamConfig: {
        Overrides: [
          {
            Name: 'api',
            Limits: { MaxConcurrentRequests: 2 },
            PassiveHealthCheck: { Interval: '1s', MaxFailures: 3, BaseEjectionTime: '2s', MaxEjectionPercent: 100 },
          },
        ],
      },
    });
    await putConfig(http, {
      Kind: 'service-resolver',
      Name: 'api',
      DefaultSubset: 'v1',
      Subsets: { v1: { Filter: 'Service.Meta.version == v1' }, v2: { Filter: 'Service.Meta.version == v2' } },
      Failover: { v1: { ServiceSubset: 'v2' } },
      LoadBalancer: { Policy: 'ring_hash', HashPolicies: [{ Field: 'header', FieldValue: 'x-user' }] },
    });
    await putConfig(http, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] });
    [v1a, v1b, v2] = await Promise.all([startApp('v1a'), startApp('v1b'), startApp('v2')]);
    const sidecar = async (app: HttpApp, version: string): Promise<void> => {
      const p = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-register-id', app.name, '-service-meta', `version=${version}`, '-workers', '1', '-http-addr', http]);
      sidecars.set(app.name, p);
    };
    await Promise.all([sidecar(v1a, 'v1'), sidecar(v1b, 'v1'), sidecar(v2, 'v2')]);
    web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http]);
    base = `http://${web.fields['upstream.api'] as string}`;
    // Both v1 instances in rotation (requests without x-user go to a random v1 host).
    const seen = new Set<string | null>();
    await until('both v1 instances seen', 10_000, async () => {
      seen.add((await get(`${base}/who`)).instance);
      return seen.has('v1a') && seen.has('v1b');
    });
  });

  after(async () => {
    await Promise.all([web?.stop(), ...[...sidecars.values()].map((p) => p.stop())]);
    await agent?.stop();
    await Promise.all([v1a, v1b, v2].map((a) => a?.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  test('the default subset holds only v1: v2 gets nothing while v1 is healthy', async () => {
    const before = v2.hits;
    for (let i = 0; i < 40; i++) assert.equal((await get(`${base}/x`)).status, 200);
    assert.equal(v2.hits, before);
  });

  test('ring_hash keeps a user on one instance while the set is unchanged, and spreads users', async () => {
    const byUser = new Map<string, Set<string | null>>();
    for (let u = 0; u < 20; u++) {
      for (let i = 0; i < 5; i++) {
        const r = await get(`${base}/me`, { 'x-user': `user-${u}` });
        assert.equal(r.status, 200);
        const s = byUser.get(`user-${u}`) ?? new Set();
        s.add(r.instance);
        byUser.set(`user-${u}`, s);
      }
    }
    for (const [u, s] of byUser) assert.equal(s.size, 1, `${u} went to ${[...s].join(', ')}`);
    const used = new Set([...byUser.values()].flatMap((s) => [...s]));
    assert.deepEqual([...used].sort(), ['v1a', 'v1b']);
  });

  test('MaxConcurrentRequests 2: extra concurrent requests get 503 overflow, and later ones succeed', async () => {
    const replies = await Promise.all(Array.from({ length: 8 }, () => get(`${base}/hold`)));
    const ok = replies.filter((r) => r.status === 200).length;
    const overflow = replies.filter((r) => r.status === 503 && r.flag === 'overflow').length;
    assert.ok(ok >= 2 && ok <= 3, `ok ${ok}`);
    assert.equal(ok + overflow, 8);
    assert.equal((await get(`${base}/hold`)).status, 200);
    const m = await scrapeUntil(web.fields.metrics as string, (s) => total(s, 'meshd_upstream_overflows_total', { limit: 'requests' }) >= overflow);
    assert.equal(total(m, 'meshd_upstream_overflows_total', { upstream: 'api', limit: 'requests' }), overflow);
  });

  test('an instance answering 500 is ejected after 3 in a row, and returns after the ejection time', async () => {
    v1b.broken = true;
    // Requests without x-user go to a random v1 instance: v1b fails until it is ejected.
    // One at a time: the concurrency limit of 2 is still in force.
    await until('v1b ejected', 5000, async () => {
      for (let i = 0; i < 10; i++) {
        const r = await get(`${base}/e`);
        if (r.status !== 200 || r.instance !== 'v1a') return false;
      }
      return true;
    });
    const m = await scrapeUntil(web.fields.metrics as string, (s) => total(s, 'meshd_outlier_ejections_total') >= 1);
    assert.ok(total(m, 'meshd_outlier_ejections_total', { upstream: 'api' }) >= 1);
    v1b.broken = false;
    const hits = v1b.hits;
    await until('v1b back in rotation', 6000, async () => {
      await get(`${base}/e`);
      return v1b.hits > hits;
    });
  });

  test('when every v1 instance is gone, v1 fails over to v2', async () => {
    await Promise.all(['v1a', 'v1b'].map(async (n) => sidecars.get(n)?.stop()));
    sidecars.delete('v1a');
    sidecars.delete('v1b');
    await until('failover to v2', 5000, async () => (await get(`${base}/f`)).instance === 'v2');
    for (let i = 0; i < 10; i++) assert.equal((await get(`${base}/f`)).instance, 'v2');
  });

  test('a dead local app: the server sidecar answers 503 naming the cause', async () => {
    await v2.close();
    const r = await fetch(`${base}/dead`);
    assert.equal(r.status, 503);
    assert.match(await r.text(), /local app unreachable: ECONNREFUSED/);
  });
});
