// The proxy's /metrics as Prometheus itself sees it: `promtool check metrics` accepts the
// text, and a real Prometheus server (started here, scraping every second) reports the
// sidecar `up == 1` with its counters. Both tools come from Debian's `prometheus` package,
// which `npm test`'s pretest installs when absent; without them these tests skip and say so.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { echoOnce, startEchoApp, type EchoApp } from '../helpers/net.ts';

const hasPromtool = spawnSync('promtool', ['--version']).status === 0;
const hasPrometheus = spawnSync('prometheus', ['--version']).status === 0;

let dir: string;
let agent: MeshdProcess;
let api: MeshdProcess;
let web: MeshdProcess;
let app: EchoApp;

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshd-prom-'));
  agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0']);
  const http = agent.fields.http as string;
  app = await startEchoApp();
  api = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '2', '-metrics-addr', '127.0.0.1:0', '-http-addr', http]);
  web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', '1', '-http-addr', http]);
  const allow = await fetch(`http://${http}/v1/connect/intentions/exact?source=web&destination=api`, { method: 'PUT', body: '{"Action":"allow"}' });
  assert.equal(allow.status, 200);
  // Some traffic so that counters, denied reasons and bytes are non-zero.
  const port = Number((web.fields['upstream.api'] as string).split(':')[1]);
  for (let i = 0; i < 20 && (await echoOnce(port, 'x', 500)) !== 'x'; i++) await new Promise((r) => setTimeout(r, 50));
});

after(async () => {
  await Promise.all([web?.stop(), api?.stop()]);
  await agent?.stop();
  await app?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('promtool check metrics accepts the proxy exposition', { skip: hasPromtool ? false : 'promtool not installed (Debian package prometheus; npm test installs it when it can)' }, async () => {
  const text = await (await fetch(`http://${api.fields.metrics}/metrics`)).text();
  const r = spawnSync('promtool', ['check', 'metrics'], { input: text });
  assert.equal(r.status, 0, `promtool: ${r.stdout.toString()}${r.stderr.toString()}`);
  assert.equal(r.stdout.toString() + r.stderr.toString(), '', 'no lint warnings either');
});

test('a real Prometheus server scrapes the sidecar: up == 1 and the counters arrive', { skip: hasPrometheus ? false : 'prometheus not installed (Debian package prometheus)', timeout: 60_000 }, async () => {
  const port = await freePort();
  const config = join(dir, 'prometheus.yml');
  writeFileSync(config, `global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: meshd\n    static_configs:\n      - targets: ['${api.fields.metrics}']\n`);
  const prom: ChildProcess = spawn('prometheus', [`--config.file=${config}`, `--storage.tsdb.path=${join(dir, 'tsdb')}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: 'ignore' });
  try {
    const query = async (q: string): Promise<{ metric: Record<string, string>; value: [number, string] }[]> => {
      const r = await fetch(`http://127.0.0.1:${port}/api/v1/query?query=${encodeURIComponent(q)}`);
      const body = (await r.json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
      return body.data.result;
    };
    let up: string | undefined;
    for (let i = 0; i < 100 && up !== '1'; i++) {
      await new Promise((r) => setTimeout(r, 300));
      up = await query('up{job="meshd"}').then((r) => r[0]?.value[1], () => undefined);
    }
    assert.equal(up, '1', 'Prometheus never saw the sidecar up');
    const accepted = await query('sum(meshd_connections_accepted_total{service="api",direction="inbound"})');
    assert.ok(Number(accepted[0]?.value[1]) >= 1, JSON.stringify(accepted));
    const workers = await query('count(meshd_worker_connections_accepted_total{service="api"})');
    assert.equal(workers[0]?.value[1], '2');
  } finally {
    prom.kill('SIGTERM');
    await new Promise((r) => prom.once('exit', r));
  }
});

test('the agent serves /v1/agent/metrics?format=prometheus: promtool accepts it and CSR outcomes count', { skip: hasPromtool ? false : 'promtool not installed (Debian package prometheus)' }, async () => {
  const http = agent.fields.http as string;
  const read = async (): Promise<string> => (await fetch(`http://${http}/v1/agent/metrics?format=prometheus`)).text();
  const value = (text: string, series: string): number => Number(new RegExp(`^${series.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  const before = await read();
  // Two sidecars got leaves at startup; one CSR that is not a CSR is refused as invalid.
  assert.ok(value(before, 'meshd_ca_leaf_signed_total') >= 2, before);
  const bad = await fetch(`http://${http}/v1/connect/ca/sign`, { method: 'POST', body: JSON.stringify({ CSR: 'not a csr' }) });
  assert.equal(bad.status, 400);
  const after = await read();
  assert.equal(value(after, 'meshd_ca_csr_rejected_total{reason="invalid"}') - value(before, 'meshd_ca_csr_rejected_total{reason="invalid"}'), 1);
  assert.ok(value(after, 'meshd_root_expiry_seconds') > 87_000 * 3600, 'a fresh root has ~87600h left');
  assert.equal(value(after, 'meshd_ca_roots'), 1);
  const r = spawnSync('promtool', ['check', 'metrics'], { input: after });
  assert.equal(r.status, 0, `promtool: ${r.stdout.toString()}${r.stderr.toString()}`);
  assert.equal((await fetch(`http://${http}/v1/agent/metrics`)).status, 400, 'format=prometheus is required');
});
