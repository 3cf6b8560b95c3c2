// Slow clients (hardening issue, "Limits"): slowhttptest (Debian's package, installed by
// `npm test`'s pretest when absent) holds hundreds of connections open against the web
// sidecar's HTTP listener, trickling a header line (slowloris) or a body byte (slow POST) at a
// time, while another client keeps calling through the same sidecar. That client's p99 must
// stay under one second, and nothing fails. A latency bound: it runs in `npm test`'s serial
// phase (test/serial/), alone on the machine.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { Agent as UndiciAgent, request } from 'undici';
import { startHttpMesh, type HttpMesh } from '../helpers/http-app.ts';

const HAVE_TOOL = spawnSync('slowhttptest', ['-h'], { encoding: 'utf8' }).error === undefined;
const ATTACK_SECONDS = 12;

describe('slow clients do not starve others', { skip: HAVE_TOOL ? false : 'slowhttptest is not installed (npm test installs the Debian package; apt was unavailable)' }, () => {
  let mesh: HttpMesh;
  let port: number;

  before(async () => {
    mesh = await startHttpMesh({ Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] });
    port = mesh.port;
  });

  after(async () => {
    await mesh?.stop();
  });

  for (const [mode, flags] of [
    ['slowloris (headers one line at a time)', ['-H']],
    ['slow POST (a body byte at a time)', ['-B', '-s', '65536']],
  ] as const) {
    test(`${mode}: 400 slow connections, another client's p99 stays under 1 s`, async () => {
      const attack = spawn('slowhttptest', [...flags, '-c', '400', '-r', '200', '-i', '2', '-x', '10', '-l', String(ATTACK_SECONDS), '-p', '3', '-u', `http://127.0.0.1:${port}/ok`], { stdio: 'ignore' });
      const exited = new Promise<void>((resolve) => attack.once('exit', () => resolve()));
      try {
        await new Promise((r) => setTimeout(r, 2500)); // let the slow connections pile up
        const dispatcher = new UndiciAgent({ connections: 4 });
        const latencies: number[] = [];
        let failures = 0;
        const until = Date.now() + (ATTACK_SECONDS - 4) * 1000;
        while (Date.now() < until) {
          const t0 = performance.now();
          try {
            const r = await request(`http://127.0.0.1:${port}/ok`, { dispatcher, headersTimeout: 5000, bodyTimeout: 5000 });
            await r.body.text();
            if (r.statusCode !== 200) failures++;
          } catch {
            failures++;
          }
          latencies.push(performance.now() - t0);
          await new Promise((r) => setTimeout(r, 20));
        }
        await dispatcher.close();
        latencies.sort((a, b) => a - b);
        const p99 = latencies[Math.floor(latencies.length * 0.99)] ?? Infinity;
        assert.equal(failures, 0, `${failures} of ${latencies.length} requests failed during the attack`);
        assert.ok(latencies.length > 50, `only ${latencies.length} requests`);
        assert.ok(p99 < 1000, `p99 ${p99.toFixed(1)} ms during the attack`);
      } finally {
        attack.kill('SIGKILL');
        await exited;
      }
    });
  }
});
