// `npm run bench:authz-wasm`: L4 decide() ns/op, TypeScript reader (PolicyTableReader) vs the
// WebAssembly probe (WasmPolicyProbe), on the same published table, same process, same queries.
// Tables of 100, 10k and 100k intentions over up to 10,000 services; two query mixes:
//   sidecar: one destination (this sidecar's service), sources cycling over 200 names
//            (half of them named in rules, half random services);
//   random:  uniformly random (source, destination) service pairs, 4,096 of them.
// Each tinybench sample runs 1,000 decisions; figures are per decision. Options: -json.

import { Bench } from 'tinybench';
import { compileIntentions } from '../src/authz/compile.ts';
import { PolicyTableReader, PolicyTableWriter } from '../src/authz/table.ts';
import { WasmPolicyProbe } from '../src/wasm/policy.ts';
import { intentions, rng, SERVICES } from './lib/tables.ts';

const SIZES = [100, 10_000, 100_000] as const;
const BATCH = 1000;

interface Row {
  intentions: number;
  mix: 'sidecar' | 'random';
  tsP50ns: number;
  wasmP50ns: number;
  tsMeanNs: number;
  wasmMeanNs: number;
}

async function measure(n: number): Promise<Row[]> {
  const rand = rng(n);
  const rs = intentions(n, rand);
  const writer = new PolicyTableWriter({ maxReaders: 2 });
  await writer.publish(compileIntentions({ intentions: rs, defaultAllow: false, hashKey: [0x01234567, 0x89abcdef] }));
  const reader = new PolicyTableReader(writer.memory, 0);
  const probe = new WasmPolicyProbe(writer.memory, 1);

  const dst = rs.find((r) => r.destination !== '*')?.destination ?? 'svc-1';
  const sources = Array.from({ length: 200 }, (_v, i) => (i % 2 === 0 ? (rs[i % rs.length]?.source ?? 'x') : `svc-${Math.floor(rand() * SERVICES)}`));
  const pairs = Array.from({ length: 4096 }, () => [`svc-${Math.floor(rand() * SERVICES)}`, `svc-${Math.floor(rand() * SERVICES)}`] as const);
  // Both must agree before their speed means anything.
  for (const [s, d] of [...sources.map((s) => [s, dst] as const), ...pairs]) {
    if (reader.decide(s, d) !== probe.decide(s, d)) throw new Error(`ts and wasm disagree on ${s} → ${d} at ${n} rules`);
  }

  let i = 0;
  let sink = 0;
  const bench = new Bench({ time: 400, warmupTime: 150 });
  // One closure per task, written out: a shared call site would see both implementations and
  // go polymorphic, slowing both.
  bench.add('ts sidecar', () => {
    for (let k = 0; k < BATCH; k++) sink ^= reader.decide(sources[i++ % 200]!, dst);
  });
  bench.add('wasm sidecar', () => {
    for (let k = 0; k < BATCH; k++) sink ^= probe.decide(sources[i++ % 200]!, dst);
  });
  bench.add('ts random', () => {
    for (let k = 0; k < BATCH; k++) {
      const p = pairs[i++ & 4095]!;
      sink ^= reader.decide(p[0], p[1]);
    }
  });
  bench.add('wasm random', () => {
    for (let k = 0; k < BATCH; k++) {
      const p = pairs[i++ & 4095]!;
      sink ^= probe.decide(p[0], p[1]);
    }
  });
  await bench.run();
  if (sink === 0.5) process.stdout.write('');
  const stat = (name: string, q: 'p50' | 'mean'): number => {
    const result = bench.tasks.find((t) => t.name === name)?.result;
    const ms = result !== undefined && 'latency' in result ? result.latency[q] : NaN;
    return Math.round((ms * 1e6) / BATCH);
  };
  reader.close();
  probe.close();
  return (['sidecar', 'random'] as const).map((mix) => ({
    intentions: n,
    mix,
    tsP50ns: stat(`ts ${mix}`, 'p50'),
    wasmP50ns: stat(`wasm ${mix}`, 'p50'),
    tsMeanNs: stat(`ts ${mix}`, 'mean'),
    wasmMeanNs: stat(`wasm ${mix}`, 'mean'),
  }));
}

const rows: Row[] = [];
for (const n of SIZES) rows.push(...(await measure(n)));
if (process.argv.includes('-json') || process.argv.includes('--json')) {
  process.stdout.write(JSON.stringify(rows) + '\n');
} else {
  process.stdout.write(`L4 decide(), TS vs WASM (Node ${process.versions.node}; ns per decision, tinybench samples of ${BATCH})\n\n`);
  process.stdout.write('intentions   mix       TS p50   WASM p50   TS mean   WASM mean   WASM/TS (p50)\n');
  for (const r of rows) {
    process.stdout.write(
      `${String(r.intentions).padStart(10)}   ${r.mix.padEnd(7)}   ${String(r.tsP50ns).padStart(6)}   ${String(r.wasmP50ns).padStart(8)}   ` +
      `${String(r.tsMeanNs).padStart(7)}   ${String(r.wasmMeanNs).padStart(9)}   ${(r.wasmP50ns / r.tsP50ns).toFixed(2).padStart(13)}\n`,
    );
  }
}
