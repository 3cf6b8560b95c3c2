// `npm run bench:csr-burst`: does a burst of CSRs stall the agent's control thread?
// Starts a real agent (CLI, -dev, CSR rate limit off), prepares N CSRs, then fires them all
// at once at /v1/connect/ca/sign while a probe reads GET /v1/connect/ca/roots every 10 ms.
// Reports the probe's latency idle and during the burst, and leaves signed per second.
// The burst runs in a worker thread so the probe's latency is the agent's, not the client's,
// and that thread lowers its own priority (nice 19): on 2 cores the load generator would
// otherwise take CPU from the agent it is measuring; in production CSRs come from other hosts.
// A sentinel thread measures what any thread on this machine waits for the CPU during the burst
// (how late a 1 ms timer fires), the floor under the probe's tail that no agent change removes.
// Options: -csrs N (default 1000), -json.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent as HttpAgent, request } from 'node:http';
import { setPriority } from 'node:os';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { parseFlags, type FlagSpecs } from '../src/cli/flags.ts';
import { startMeshd } from '../src/demo/procs.ts';
import { createLeafCsr } from '../src/ca/authority.ts';
import { serviceSpiffeId } from '../src/ca/spiffe.ts';

const FLAGS: FlagSpecs = {
  csrs: { kind: 'string', help: 'CSRs in the burst', default: '1000' },
  json: { kind: 'bool', help: 'print JSON' },
};

// The probe has its own keep-alive connection so it never queues behind the burst's sockets.
const probeAgent = new HttpAgent({ keepAlive: true, maxSockets: 1 });
const burstAgent = new HttpAgent({ keepAlive: true, maxSockets: 64 });

function call(host: string, port: number, method: string, path: string, body: string | null, agent: HttpAgent): Promise<{ status: number; ms: number }> {
  const start = performance.now();
  return new Promise((resolve, reject) => {
    const req = request({ host, port, method, path, agent, headers: body === null ? {} : { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - start }));
    });
    req.on('error', reject);
    req.end(body ?? undefined);
  });
}

function pct(sorted: readonly number[], q: number): number {
  return sorted.length === 0 ? 0 : (sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number);
}

async function probe(host: string, port: number, untilDone: () => boolean): Promise<number[]> {
  const out: number[] = [];
  while (!untilDone()) {
    out.push((await call(host, port, 'GET', '/v1/connect/ca/roots', null, probeAgent)).ms);
    await new Promise((r) => setTimeout(r, 10));
  }
  return out.sort((a, b) => a - b);
}

async function main(): Promise<number> {
  const f = parseFlags(process.argv.slice(2), FLAGS);
  const n = Number(f.strings.get('csrs'));
  const dir = mkdtempSync(join(tmpdir(), 'meshd-burst-'));
  const agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', dir]);
  try {
    const [host, portText] = (agent.fields.http as string).split(':') as [string, string];
    const port = Number(portText);
    const td = agent.fields['trust-domain'] as string;
    const off = await call(host, port, 'PUT', '/v1/connect/ca/configuration', JSON.stringify({ Provider: 'consul', Config: { CSRMaxPerSecond: 0, CSRMaxConcurrent: 0 } }), probeAgent);
    if (off.status !== 200) throw new Error(`could not lift the CSR rate limit (HTTP ${off.status})`);
    const csrs: string[] = [];
    for (let i = 0; i < n; i++) csrs.push(JSON.stringify({ CSR: (await createLeafCsr(serviceSpiffeId(td, 'default', 'dc1', `svc-${i % 50}`))).csrPem }));
    // Warm the signing pool (its first task loads the worker).
    await call(host, port, 'POST', '/v1/connect/ca/sign', csrs[0] as string, burstAgent);

    let idleDone = false;
    setTimeout(() => (idleDone = true), 1000);
    const idle = await probe(host, port, () => idleDone);

    // The burst is sent from a worker thread: in this thread its 1,000 requests and responses
    // would delay the probe's own event loop, and the probe would measure the client, not the
    // agent.
    let burstDone = false;
    const sentinel = new Worker(new URL(import.meta.url), { workerData: { sentinel: true } satisfies SentinelJob });
    await new Promise((resolve) => sentinel.once('message', resolve));
    const t0 = performance.now();
    const worker = new Worker(new URL(import.meta.url), { workerData: { host, port, csrs } satisfies BurstJob });
    const burst = new Promise<number[]>((resolve, reject) => {
      worker.once('message', (statuses: number[]) => resolve(statuses));
      worker.once('error', reject);
    }).then((r) => {
      burstDone = true;
      return r;
    });
    const during = await probe(host, port, () => burstDone);
    const results = await burst;
    const seconds = (performance.now() - t0) / 1000;
    await worker.terminate();
    sentinel.postMessage('stop');
    const lateness = (await new Promise<number[]>((resolve) => sentinel.once('message', resolve))).sort((a, b) => a - b);
    await sentinel.terminate();
    const ok = results.filter((status) => status === 200).length;
    const report = {
      csrs: n,
      signed: ok,
      seconds: Number(seconds.toFixed(2)),
      leavesPerSecond: Math.round(ok / seconds),
      rootsIdleMs: { p50: pct(idle, 0.5), p99: pct(idle, 0.99), max: idle.at(-1) ?? 0 },
      rootsDuringBurstMs: { p50: pct(during, 0.5), p99: pct(during, 0.99), max: during.at(-1) ?? 0, samples: during.length },
      timerLatenessMs: { p50: pct(lateness, 0.5), p99: pct(lateness, 0.99), max: lateness.at(-1) ?? 0, samples: lateness.length },
    };
    if (f.bools.get('json') === true) process.stdout.write(JSON.stringify(report) + '\n');
    else {
      const fmt = (x: { p50: number; p99: number; max: number }): string => `p50 ${x.p50.toFixed(2)} ms, p99 ${x.p99.toFixed(2)} ms, max ${x.max.toFixed(2)} ms`;
      process.stdout.write(`${ok}/${n} CSRs signed in ${report.seconds} s: ${report.leavesPerSecond} leaves/s\n`);
      process.stdout.write(`GET /v1/connect/ca/roots idle:         ${fmt(report.rootsIdleMs)}\n`);
      process.stdout.write(`GET /v1/connect/ca/roots during burst: ${fmt(report.rootsDuringBurstMs)} (${during.length} probes)\n`);
      process.stdout.write(`idle thread's 1 ms timer, lateness:    ${fmt(report.timerLatenessMs)} (the machine's scheduling floor)\n`);
    }
    return ok === n ? 0 : 1;
  } finally {
    probeAgent.destroy();
    burstAgent.destroy();
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

interface BurstJob {
  readonly host: string;
  readonly port: number;
  readonly csrs: readonly string[];
}

interface SentinelJob {
  readonly sentinel: true;
}

/** Until told to stop: how late (ms) each 1 ms timer fires. */
async function sentinelThread(): Promise<void> {
  const lateness: number[] = [];
  let stop = false;
  parentPort?.once('message', () => (stop = true));
  parentPort?.postMessage('ready');
  while (!stop) {
    const t = performance.now();
    await new Promise((r) => setTimeout(r, 1));
    lateness.push(Math.max(0, performance.now() - t - 1));
  }
  parentPort?.postMessage(lateness);
}

if (isMainThread) {
  process.exitCode = await main();
} else if ((workerData as Partial<SentinelJob>).sentinel === true) {
  await sentinelThread();
} else {
  const job = workerData as BurstJob;
  // Linux: lowers this thread only (setpriority on the calling thread).
  setPriority(19);
  const statuses = await Promise.all(job.csrs.map(async (body) => (await call(job.host, job.port, 'POST', '/v1/connect/ca/sign', body, burstAgent)).status));
  burstAgent.destroy();
  parentPort?.postMessage(statuses);
}
