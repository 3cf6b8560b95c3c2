// Two datacenters on one machine (gateways issue): dc1 is the primary, dc2 joins it over the
// WAN. web in dc1 calls api in dc2 through `-upstream api@dc2:PORT`:
//
//   web (dc1) ══mTLS══▶ gw1 (dc1, LAN) ══▶ gw2 (dc2, WAN) ══▶ api sidecar (dc2) ─▶ app "api-dc2"
//                 mode local: two gateway hops; remote: gw2 only; none: straight to the sidecar
//
// The gateways never terminate TLS: api's sidecar in dc2 sees web's dc1 leaf (chained to the
// primary's root) and decides by the intentions replicated from dc1; the app sees web's identity
// in XFCC. api's resolver fails over to dc1, so stopping api in dc2 moves the traffic to the
// app in dc1 with no failed request.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';
import { eventually } from '../helpers/until.ts';

interface Answer {
  readonly status: number;
  readonly instance: string | null;
  readonly xfcc: string | null;
}

async function call(port: number, path = '/items'): Promise<Answer> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  const text = await r.text();
  let body: { instance?: string; xfcc?: string | null } = {};
  try {
    body = JSON.parse(text) as typeof body;
  } catch {
    // a local reply (403, 503) is text
  }
  return { status: r.status, instance: body.instance ?? null, xfcc: body.xfcc ?? null };
}

/** Connections a mesh gateway holds open now. */
async function active(metricsAddr: string): Promise<number> {
  const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith('meshd_mesh_gateway_connections_active')) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

/** Connections a mesh gateway has spliced (every worker, every destination). */
async function spliced(metricsAddr: string): Promise<number> {
  const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
  let sum = 0;
  for (const line of text.split('\n')) if (line.startsWith('meshd_mesh_gateway_connections_total{') && line.includes('result="routed"')) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  return sum;
}

describe('two datacenters: web in dc1 calls api in dc2 through mesh gateways', { timeout: 120_000 }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-multi-dc-'));
  const procs: MeshdProcess[] = [];
  const apps: HttpApp[] = [];
  let http1 = '';
  let http2 = '';
  let trustDomain = '';
  let gw1: MeshdProcess;
  let gw2: MeshdProcess;
  let api2: MeshdProcess;
  let port = 0;
  const start = async (args: string[]): Promise<MeshdProcess> => {
    const p = await startMeshd(args);
    procs.push(p);
    return p;
  };
  const mode = (m: 'none' | 'local' | 'remote'): Promise<void> => putConfig(http1, { Kind: 'proxy-defaults', Name: 'global', MeshGateway: { Mode: m } });

  before(async () => {
    const agent1 = await start(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'dc1')]);
    http1 = agent1.fields.http as string;
    trustDomain = agent1.fields['trust-domain'] as string;
    const agent2 = await start(['agent', '-dev', '-datacenter', 'dc2', '-primary-datacenter', 'dc1', '-join-wan', http1, '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'dc2')]);
    http2 = agent2.fields.http as string;
    await eventually('dc2 to join dc1', async () => {
      const dcs = (await (await fetch(`http://${http1}/v1/catalog/datacenters`)).json()) as string[];
      return dcs.includes('dc2') ? true : undefined;
    });
    // Written in the primary; dc2 gets them by replication.
    await putConfig(http1, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await putConfig(http1, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/items' } }] }] });
    await putConfig(http1, { Kind: 'service-resolver', Name: 'api', Failover: { '*': { Datacenters: ['dc1'] } } });
    await mode('local');
    const app1 = await startApp('api-dc1');
    const app2 = await startApp('api-dc2');
    apps.push(app1, app2);
    const sidecar = (app: HttpApp, http: string): string[] => ['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1', '-http-addr', http];
    api2 = await start(sidecar(app2, http2));
    await start(sidecar(app1, http1));
    const gateway = (http: string): string[] => ['connect', 'gateway', '-mesh', '-service', 'mesh-gateway', '-address', '127.0.0.1:0', '-wan-address', '127.0.0.1:0', '-register', '-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http];
    gw2 = await start(gateway(http2));
    gw1 = await start(gateway(http1));
    const web = await start(['connect', 'proxy', '-service', 'web', '-upstream', 'api@dc2:0', '-workers', '1', '-http-addr', http1]);
    port = Number((web.fields['upstream.api@dc2'] as string).split(':')[1]);
    // Until dc2's gateway is in the federation state and every watch has caught up.
    await eventually('a first answer from api in dc2', async () => ((await call(port)).instance === 'api-dc2' ? true : undefined), 30_000);
  });

  after(async () => {
    await Promise.all(procs.slice(2).map((p) => p.stop()));
    await Promise.all(procs.slice(0, 2).map((p) => p.stop()));
    await Promise.all(apps.map((a) => a.close()));
    rmSync(dir, { recursive: true, force: true });
  });

  test('mode local: both gateways carry the connection; dc2 sees web\'s dc1 identity', async () => {
    // before() made the mesh's first connection in mode local: web → gw1 → gw2 → api in dc2.
    assert.ok((await spliced(gw1.fields.metrics as string)) >= 1, 'gw1 spliced nothing');
    assert.ok((await spliced(gw2.fields.metrics as string)) >= 1, 'gw2 spliced nothing');
    const a = await call(port);
    assert.equal(a.status, 200);
    assert.equal(a.instance, 'api-dc2');
    assert.match(a.xfcc ?? '', new RegExp(`URI=spiffe://${trustDomain.replace(/\./g, '\\.')}/ns/default/dc/dc1/svc/web`));
    // The gateways hold no key: their ready lines name an identity, never a certificate.
    assert.match(gw1.fields.identity as string, /\/gateway\/mesh\/dc\/dc1$/);
    assert.match(gw2.fields.identity as string, /\/gateway\/mesh\/dc\/dc2$/);
  });

  test('mode remote: straight to dc2\'s gateway; mode none: straight to the sidecar', async () => {
    await mode('remote');
    const g1 = await spliced(gw1.fields.metrics as string);
    const g2 = await spliced(gw2.fields.metrics as string);
    await eventually('a request through gw2 alone', async () => {
      const r = await call(port);
      return r.instance === 'api-dc2' && (await spliced(gw2.fields.metrics as string)) > g2 ? true : undefined;
    });
    for (let i = 0; i < 5; i++) assert.equal((await call(port)).instance, 'api-dc2');
    assert.equal(await spliced(gw1.fields.metrics as string), g1, 'mode remote went through the local gateway');
    await mode('none');
    // The routing change closes the pooled connections through the gateways; from then on a
    // request through either would open a new one there.
    await eventually('no connection left through the gateways', async () => ((await active(gw1.fields.metrics as string)) + (await active(gw2.fields.metrics as string)) === 0 ? true : undefined));
    const n1 = await spliced(gw1.fields.metrics as string);
    const n2 = await spliced(gw2.fields.metrics as string);
    for (let i = 0; i < 5; i++) assert.equal((await call(port)).instance, 'api-dc2');
    assert.deepEqual([await spliced(gw1.fields.metrics as string), await spliced(gw2.fields.metrics as string), await active(gw1.fields.metrics as string), await active(gw2.fields.metrics as string)], [n1, n2, 0, 0]);
    await mode('local');
  });

  test('the intentions replicated to dc2 decide there: a path outside the permission is 403', async () => {
    const denied = await call(port, '/admin');
    assert.equal(denied.status, 403);
    assert.equal((await call(port, '/items/1')).status, 200);
  });

  test('stopping api in dc2 fails over to dc1 without a failed request', async () => {
    let failures = 0;
    const seen: string[] = [];
    let stop = false;
    const loop = (async () => {
      while (!stop) {
        const r = await call(port).catch(() => ({ status: 0, instance: null, xfcc: null }));
        if (r.status !== 200) failures++;
        seen.push(r.instance ?? String(r.status));
        await new Promise((res) => setTimeout(res, 20));
      }
    })();
    await new Promise((r) => setTimeout(r, 500));
    await api2.stop();
    await eventually('answers from dc1', () => Promise.resolve(seen.length > 5 && seen.slice(-5).every((s) => s === 'api-dc1') ? true : undefined));
    await new Promise((r) => setTimeout(r, 500));
    stop = true;
    await loop;
    assert.equal(failures, 0, `failed requests during the failover: ${JSON.stringify(seen.filter((s) => !s.startsWith('api-')))}`);
    assert.ok(seen.includes('api-dc2') && seen.at(-1) === 'api-dc1', JSON.stringify(seen.slice(0, 3)));
  });
});
