// Table churn under load: a new intention table every 100 ms (unrelated pairs flipping) while
// fixed-rate requests and long-lived connections flow web -> api through two sidecars. No
// allowed request may fail, and live re-checking must not close an allowed connection.
// MESHD_CHURN_SECONDS sets the duration (default 5; the 30 s run is recorded in
// docs/BENCHMARKS.md with MESHD_CHURN_SECONDS=30).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { echoOnce, scrape, startEchoApp, total, waitUntilEchoes, type EchoApp } from '../helpers/net.ts';

const SECONDS = Number(process.env.MESHD_CHURN_SECONDS ?? 5);

let agent: MeshdProcess;
let api: MeshdProcess;
let web: MeshdProcess;
let app: EchoApp;
let http: string;
let port: number;

before(async () => {
  agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0']);
  http = agent.fields.http as string;
  app = await startEchoApp();
  api = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '2', '-metrics-addr', '127.0.0.1:0', '-http-addr', http]);
  web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', '1', '-http-addr', http]);
  port = Number((web.fields['upstream.api'] as string).split(':')[1]);
  const r = await fetch(`http://${http}/v1/connect/intentions/exact?source=web&destination=api`, { method: 'PUT', body: '{"Action":"allow"}' });
  assert.equal(r.status, 200);
  assert.ok((await waitUntilEchoes(port, 5000)) >= 0);
});

after(async () => {
  await Promise.all([web?.stop(), api?.stop()]);
  await agent?.stop();
  await app?.close();
});

test(`a new table every 100 ms for ${SECONDS} s: zero failed requests on the allowed pair`, { timeout: (SECONDS + 30) * 1000 }, async () => {
  const genBefore = total(await scrape(api.fields.metrics as string), 'meshd_policy_table_generation');
  let publishes = 0;
  let churnFailures = 0;
  const churn = setInterval(() => {
    const i = publishes++;
    fetch(`http://${http}/v1/connect/intentions/exact?source=churn-${i % 50}&destination=api`, { method: 'PUT', body: JSON.stringify({ Action: i % 2 === 0 ? 'deny' : 'allow' }) })
      .then((r) => r.text())
      .catch(() => churnFailures++);
  }, 100);

  // Long-lived connections: ping-pong every 50 ms; any close or lost echo is a failure.
  const lived = Array.from({ length: 3 }, () => {
    const s = net.connect({ host: '127.0.0.1', port });
    s.setEncoding('utf8');
    const st = { ok: 0, closed: false, pending: '' };
    const send = (): void => {
      if (st.closed) return;
      st.pending = `#${st.ok}#`;
      s.write(st.pending);
    };
    s.on('connect', send);
    s.on('data', (d: string) => {
      if (d.includes(st.pending)) {
        st.ok++;
        setTimeout(send, 50);
      }
    });
    s.on('error', () => undefined);
    s.on('close', () => (st.closed = true));
    return { s, st };
  });

  let ok = 0;
  let failed = 0;
  const inflight: Promise<void>[] = [];
  const end = performance.now() + SECONDS * 1000;
  let n = 0;
  while (performance.now() < end) {
    const msg = `q${n++}`;
    inflight.push(echoOnce(port, msg, 3000).then((got) => void (got === msg ? ok++ : failed++)));
    await new Promise((r) => setTimeout(r, 20));
  }
  clearInterval(churn);
  await Promise.all(inflight);
  const closedEarly = lived.filter((l) => l.st.closed).length;
  for (const l of lived) l.s.destroy();

  assert.equal(failed, 0, `${failed} of ${ok + failed} requests failed`);
  assert.equal(closedEarly, 0, 'live re-checking closed an allowed connection');
  for (const l of lived) assert.ok(l.st.ok > SECONDS * 5, `a long-lived connection stalled (${l.st.ok} echoes)`);
  assert.equal(churnFailures, 0);
  const genAfter = total(await scrape(api.fields.metrics as string), 'meshd_policy_table_generation');
  assert.ok(genAfter - genBefore >= publishes * 0.5, `only ${genAfter - genBefore} generations for ${publishes} publishes`);
});
