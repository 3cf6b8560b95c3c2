// `npm run bench`: the L4 two-sidecar path, measured against a direct connection in the
// same run. Real processes from the CLI (agent, two sidecars), a TCP echo app, and a
// closed-loop load generator in this process: C connections, each sending a 64-byte message
// and waiting for its echo, for D seconds.
//
//   direct:  client ─▶ echo app
//   mesh:    client ─▶ web sidecar upstream ══mTLS══▶ api sidecar ─▶ echo app
//
// Options: -connections C (default 32), -duration S (default 5), -workers N (default 1 per
// sidecar: this machine has 2 cores shared by both sidecars, the app and the generator),
// -json (one JSON object on stdout). The HTTP/L7 benchmark with autocannon and the HAProxy
// comparison belong to the observability issue; this is the L4 baseline.

import * as net from 'node:net';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseFlags, type FlagSpecs } from '../src/cli/flags.ts';
import { startMeshd, type MeshdProcess } from '../src/demo/procs.ts';
import { AgentClient } from '../src/control/client.ts';

const FLAGS: FlagSpecs = {
  connections: { kind: 'string', help: 'concurrent connections', default: '32' },
  duration: { kind: 'string', help: 'seconds per scenario', default: '5' },
  workers: { kind: 'string', help: 'data-plane workers per sidecar', default: '1' },
  json: { kind: 'bool', help: 'print JSON' },
};

const MESSAGE = Buffer.alloc(64, 0x61);

interface Result {
  readonly name: string;
  readonly roundTrips: number;
  readonly perSecond: number;
  readonly p50us: number;
  readonly p99us: number;
  readonly maxUs: number;
}

async function echoApp(): Promise<net.Server> {
  const s = net.createServer((c) => {
    c.on('data', (d) => c.write(d));
    c.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => s.listen({ host: '127.0.0.1', port: 0 }, resolve));
  return s;
}

function connect(port: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, noDelay: true });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

/** One connection's loop: send, wait for the full echo, record the round trip, repeat. */
async function loop(port: number, until: number, samples: number[]): Promise<void> {
  const s = await connect(port);
  await new Promise<void>((resolve, reject) => {
    let got = 0;
    let start = 0;
    const send = (): void => {
      if (performance.now() >= until) {
        s.end();
        resolve();
        return;
      }
      got = 0;
      start = performance.now();
      s.write(MESSAGE);
    };
    s.on('data', (d: Buffer) => {
      got += d.length;
      if (got >= MESSAGE.length) {
        samples.push((performance.now() - start) * 1000);
        send();
      }
    });
    s.on('error', reject);
    send();
  });
}

async function scenario(name: string, port: number, connections: number, seconds: number): Promise<Result> {
  // Warm-up: TLS sessions, JIT, connection setup.
  await Promise.all(Array.from({ length: connections }, () => loop(port, performance.now() + 500, [])));
  const samples: number[] = [];
  const t0 = performance.now();
  await Promise.all(Array.from({ length: connections }, () => loop(port, t0 + seconds * 1000, samples)));
  const elapsed = (performance.now() - t0) / 1000;
  samples.sort((a, b) => a - b);
  const at = (q: number): number => Math.round(samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? 0);
  return { name, roundTrips: samples.length, perSecond: Math.round(samples.length / elapsed), p50us: at(0.5), p99us: at(0.99), maxUs: Math.round(samples.at(-1) ?? 0) };
}

async function main(): Promise<number> {
  const f = parseFlags(process.argv.slice(2), FLAGS);
  const connections = Number(f.strings.get('connections'));
  const seconds = Number(f.strings.get('duration'));
  const workers = f.strings.get('workers') ?? '1';
  const dir = mkdtempSync(join(tmpdir(), 'meshd-bench-'));
  const procs: MeshdProcess[] = [];
  const app = await echoApp();
  try {
    const appPort = (app.address() as net.AddressInfo).port;
    const agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', dir]);
    procs.push(agent);
    const http = agent.fields.http as string;
    procs.push(await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${appPort}`, '-listen', '127.0.0.1:0', '-register', '-workers', workers, '-http-addr', http]));
    const web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', workers, '-http-addr', http]);
    procs.push(web);
    await new AgentClient(new URL(`http://${http}`)).request('PUT', '/v1/connect/intentions/exact', { query: { source: 'web', destination: 'api' }, body: { Action: 'allow' } });
    await new Promise((r) => setTimeout(r, 300));
    const meshPort = Number((web.fields['upstream.api'] as string).split(':')[1]);

    const direct = await scenario('direct', appPort, connections, seconds);
    const mesh = await scenario('mesh (2 sidecars, mTLS)', meshPort, connections, seconds);
    const ratio = mesh.perSecond / direct.perSecond;
    if (f.bools.get('json') === true) {
      process.stdout.write(JSON.stringify({ connections, seconds, workers: Number(workers), results: [direct, mesh], meshToDirect: ratio }) + '\n');
    } else {
      process.stdout.write(`L4 echo round trips, 64 B, ${connections} connections, ${seconds} s each, ${workers} worker(s) per sidecar\n\n`);
      process.stdout.write('scenario                   round-trips/s     p50 µs     p99 µs     max µs\n');
      for (const r of [direct, mesh]) {
        process.stdout.write(`${r.name.padEnd(26)} ${String(r.perSecond).padStart(13)} ${String(r.p50us).padStart(10)} ${String(r.p99us).padStart(10)} ${String(r.maxUs).padStart(10)}\n`);
      }
      process.stdout.write(`\nmesh / direct throughput: ${ratio.toFixed(3)}\n`);
    }
    return 0;
  } finally {
    await Promise.all(procs.reverse().map((p) => p.stop()));
    app.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
