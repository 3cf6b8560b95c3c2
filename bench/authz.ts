// `npm run bench:authz`: the L4 intention decision and table publication at scale.
// For tables of 100, 1k, 10k and 100k intentions over up to 10,000 services: decide() latency
// (p50/p99 from tinybench) for a sidecar-like mix (one destination, many sources) and for
// random pairs; compile and publish time; bytes of one table half. Options: -json.

import { Bench } from 'tinybench';
import { compileIntentions, encodeTable } from '../src/authz/compile.ts';
import { PolicyTableReader, PolicyTableWriter } from '../src/authz/table.ts';
import { intentions, rng, SERVICES } from './lib/tables.ts';

const SIZES = [100, 1_000, 10_000, 100_000] as const;
const BATCH = 1000;

interface Row {
  intentions: number;
  compileMs: number;
  publishMs: number;
  halfBytes: number;
  sidecarP50ns: number;
  sidecarP99ns: number;
  randomP50ns: number;
  randomP99ns: number;
}

async function measure(n: number): Promise<Row> {
  const rand = rng(n);
  const rs = intentions(n, rand);
  const t0 = performance.now();
  const model = compileIntentions({ intentions: rs, defaultAllow: false, hashKey: [0x01234567, 0x89abcdef] });
  const t1 = performance.now();
  const writer = new PolicyTableWriter({ maxReaders: 1 });
  const t2 = performance.now();
  await writer.publish(model);
  const t3 = performance.now();
  const reader = new PolicyTableReader(writer.memory, 0);
  const halfBytes = encodeTable(model).length;

  // Sidecar-like: the destination is this sidecar's service, sources vary over 200 names.
  const dst = rs.find((r) => r.destination !== '*')?.destination ?? 'svc-1';
  const sources = Array.from({ length: 200 }, (_v, i) => (i % 2 === 0 ? (rs[i % rs.length]?.source ?? 'x') : `svc-${Math.floor(rand() * SERVICES)}`));
  const pairs = Array.from({ length: 4096 }, () => [`svc-${Math.floor(rand() * SERVICES)}`, `svc-${Math.floor(rand() * SERVICES)}`] as const);
  let i = 0;
  let sink = 0;
  const bench = new Bench({ time: 300, warmupTime: 100 });
  // BATCH decisions per sample: one decide() is far below the timer's resolution and cost.
  bench.add(`sidecar ${n}`, () => {
    for (let k = 0; k < BATCH; k++) sink ^= reader.decide(sources[i++ % 200] as string, dst);
  });
  bench.add(`random ${n}`, () => {
    for (let k = 0; k < BATCH; k++) {
      const p = pairs[i++ & 4095] as readonly [string, string];
      sink ^= reader.decide(p[0], p[1]);
    }
  });
  await bench.run();
  const ns = (name: string, q: 'p50' | 'p99'): number => {
    const r = bench.tasks.find((t) => t.name === name)?.result;
    const lat = r !== undefined && 'latency' in r ? (r.latency as unknown as Record<string, number>) : undefined;
    const ms = lat?.[q] ?? NaN;
    return Math.round((ms * 1e6) / BATCH);
  };
  if (sink === 0.5) process.stdout.write('');
  return {
    intentions: n,
    compileMs: Math.round(t1 - t0),
    publishMs: Math.round(t3 - t2),
    halfBytes,
    sidecarP50ns: ns(`sidecar ${n}`, 'p50'),
    sidecarP99ns: ns(`sidecar ${n}`, 'p99'),
    randomP50ns: ns(`random ${n}`, 'p50'),
    randomP99ns: ns(`random ${n}`, 'p99'),
  };
}

const rows: Row[] = [];
for (const n of SIZES) rows.push(await measure(n));
if (process.argv.includes('-json') || process.argv.includes('--json')) {
  process.stdout.write(JSON.stringify(rows) + '\n');
} else {
  process.stdout.write(`L4 intention decision (Node ${process.versions.node}; per decision: tinybench samples of 1,000 decisions each)\n\n`);
  process.stdout.write('intentions   compile ms   publish ms   half KiB   sidecar p50/p99 ns   random p50/p99 ns\n');
  for (const r of rows) {
    process.stdout.write(
      `${String(r.intentions).padStart(10)}   ${String(r.compileMs).padStart(10)}   ${String(r.publishMs).padStart(10)}   ${String(Math.round(r.halfBytes / 1024)).padStart(8)}   ${`${r.sidecarP50ns}/${r.sidecarP99ns}`.padStart(18)}   ${`${r.randomP50ns}/${r.randomP99ns}`.padStart(17)}\n`,
    );
  }
}
