// Worker isolation: a data-plane worker that crashes takes only itself down. The others keep
// accepting on the shared port, the supervisor replaces the dead one on the same port, and
// the policy table keeps publishing (the dead reader's slot is released).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as tls from 'node:tls';
import { createLeafCsr, generateRoot, signLeafCsr } from '../../src/ca/authority.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import { PolicyEngine } from '../../src/control/policy.ts';
import { allocateCounters, counterBlock, S } from '../../src/metrics/counters.ts';
import { allocateL7 } from '../../src/metrics/l7.ts';
import { WorkerSupervisor } from '../../src/workers/supervisor.ts';
import type { TlsMaterial } from '../../src/workers/messages.ts';
import { startEchoApp, type EchoApp } from '../helpers/net.ts';

const CLUSTER = '11111111-2222-3333-4444-555555555555';
const TD = `${CLUSTER}.consul`;

let app: EchoApp;
let engine: PolicyEngine;
let supervisor: WorkerSupervisor;
let counters: SharedArrayBuffer;
let port: number;
let client: { key: string; cert: string; ca: string[] };

async function leaf(root: Awaited<ReturnType<typeof generateRoot>>, service: string): Promise<{ keyPem: string; certPem: string }> {
  const { csrPem, keyPem } = await createLeafCsr(serviceSpiffeId(TD, 'default', 'dc1', service));
  const issued = await signLeafCsr({ csrPem, root, trustDomain: TD, datacenter: 'dc1', now: new Date() });
  return { keyPem, certPem: issued.CertPEM };
}

function mtlsEcho(message: string): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s = tls.connect({ host: '127.0.0.1', port, key: client.key, cert: client.cert, ca: client.ca, checkServerIdentity: () => undefined });
    const done = (): void => {
      clearTimeout(t);
      s.destroy();
      resolve(got);
    };
    const t = setTimeout(done, 2000);
    s.on('secureConnect', () => s.write(message));
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.length >= message.length) done();
    });
    s.on('error', done);
    s.on('close', done);
  });
}

function accepted(worker: number): number {
  return counterBlock(counters, worker)[S.ACCEPTED_IN] as number;
}

before(async () => {
  const root = await generateRoot({ clusterId: CLUSTER, now: new Date() });
  const api = await leaf(root, 'api');
  const web = await leaf(root, 'web');
  client = { key: web.keyPem, cert: web.certPem, ca: [root.certPem] };
  const material: TlsMaterial = { keyPem: api.keyPem, certPem: api.certPem, caPems: [root.certPem], trustDomain: TD, uri: serviceSpiffeId(TD, 'default', 'dc1', 'api') };
  app = await startEchoApp();
  engine = new PolicyEngine({ maxWorkers: 2, defaultAllow: false });
  await engine.update([{ source: 'web', destination: 'api', action: 'allow' }]);
  counters = allocateCounters(2);
  supervisor = new WorkerSupervisor({
    count: 2,
    base: {
      policy: engine.memory,
      counters,
      service: 'api',
      inbound: { host: '127.0.0.1', port: 0, appHost: '127.0.0.1', appPort: app.port },
      upstreams: [],
      l7Metrics: allocateL7(2, 1),
      connectTimeoutMs: 2000,
      handshakeTimeoutMs: 5000,
    },
    currentTls: () => material,
    currentRouting: () => ({
      version: 1,
      inbound: { protocol: 'tcp', localConnectTimeoutMs: 5000, localRequestTimeoutMs: 15000, intentionSources: [], intentionJwt: null, defaultAllow: false },
      upstreams: {},
    }),
    onWorkerExit: (_index, slot) => engine.releaseReader(slot),
    workerUrl: new URL('./crashing-worker.ts', import.meta.url),
    memoryLimitMb: 128,
  });
  port = (await supervisor.start()).inbound as number;
});

after(async () => {
  await supervisor?.stop();
  await app?.close();
});

test('a crashed worker leaves the other serving and is replaced on the same port', async () => {
  const first = await Promise.all(Array.from({ length: 20 }, (_v, i) => mtlsEcho(`a${i}`)));
  assert.deepEqual(first, Array.from({ length: 20 }, (_v, i) => `a${i}`));
  assert.ok(accepted(0) > 0 && accepted(1) > 0, `connections did not spread: ${accepted(0)}/${accepted(1)}`);

  assert.equal(supervisor.post(0, { type: 'test-crash' }), true);
  // While worker 0 is down (and being replaced), new connections are served by worker 1.
  for (let i = 0; i < 50 && supervisor.running().includes(0); i++) await new Promise((r) => setTimeout(r, 5));
  const during = await Promise.all(Array.from({ length: 10 }, (_v, i) => mtlsEcho(`b${i}`)));
  assert.deepEqual(during, Array.from({ length: 10 }, (_v, i) => `b${i}`));

  for (let i = 0; i < 200 && supervisor.running().length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(supervisor.running(), [0, 1]);
  assert.equal(supervisor.restarts, 1);

  // The replacement accepts again on the same port, and counting continues in its block.
  const before0 = accepted(0);
  let ok = 0;
  for (let round = 0; round < 10 && accepted(0) === before0; round++) {
    const r = await Promise.all(Array.from({ length: 10 }, (_v, i) => mtlsEcho(`c${i}`)));
    ok += r.filter((x, i) => x === `c${i}`).length;
  }
  assert.ok(accepted(0) > before0, 'the replacement worker never accepted');
  assert.ok(ok >= 10);

  // Publication is not stuck on the dead worker's reader slot.
  const published = await engine.update([]);
  assert.ok(published > 1);
  assert.equal(await mtlsEcho('denied now'), '');
});

test('a worker that runs out of memory dies alone and is replaced within 2 s; the other keeps serving', async () => {
  const restarts = supervisor.restarts;
  await engine.update([{ source: 'web', destination: 'api', action: 'allow' }]);
  assert.equal(await mtlsEcho('allowed again'), 'allowed again');
  assert.equal(supervisor.post(1, { type: 'test-oom' }), true);
  const t0 = performance.now();
  for (let i = 0; i < 500 && supervisor.running().includes(1); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(!supervisor.running().includes(1), 'the leaking worker never died (no heap limit?)');
  // Worker 0 serves while 1 is replaced.
  const during = await Promise.all(Array.from({ length: 10 }, (_v, i) => mtlsEcho(`d${i}`)));
  const died = performance.now();
  for (let i = 0; i < 200 && supervisor.running().length < 2; i++) await new Promise((r) => setTimeout(r, 10));
  assert.deepEqual(supervisor.running(), [0, 1]);
  assert.ok(performance.now() - died < 2000, `replaced after ${Math.round(performance.now() - died)} ms`);
  assert.equal(supervisor.restarts, restarts + 1);
  assert.ok(performance.now() - t0 < 15_000);
  assert.deepEqual(during, Array.from({ length: 10 }, (_v, i) => `d${i}`), 'worker 0 stopped serving');
});
