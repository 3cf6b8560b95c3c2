// `npm run bench:micro`: every micro-benchmark in one run. First a few per-request operations
// measured here with tinybench (SPIFFE ID parse, peer identity from a leaf's DER, one L7
// counter + histogram record, an HDR record in the JS and the WebAssembly histogram), and what
// one scrape costs per listener (the worker's encode + reset, the control thread's merge, two
// ways, and the bucket counts); then the dedicated suites one after the other: the L4 decision
// (TypeScript vs WebAssembly probe), the L7 decision with 10 permissions, load-balancer and
// split picks, and leaf signing. Each prints its own table; figures per operation.

import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { build, decodeFromCompressedBase64, encodeIntoCompressedBase64, initWebAssemblySync, WasmHistogram } from 'hdr-histogram-js';
import { Bench } from 'tinybench';
import { createLeafCsr, generateRoot, signLeafCsr } from '../src/ca/authority.ts';
import { parseSpiffeId, serviceSpiffeId } from '../src/ca/spiffe.ts';
import { serviceIdentity } from '../src/dataplane/identity.ts';
import { allocateL7, l7Block, recordRequest } from '../src/metrics/l7.ts';
import { HDR_PARAMS, LatencyRecorder, LatencyTotals, installLatencyRecorder, micros } from '../src/metrics/latency.ts';
import { rng } from './lib/tables.ts';

const BATCH = 1000;
const clusterId = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
const td = `${clusterId}.consul`;
const root = await generateRoot({ clusterId, now: new Date() });
const { csrPem } = await createLeafCsr(serviceSpiffeId(td, 'default', 'dc1', 'web'));
const leaf = await signLeafCsr({ csrPem, root, trustDomain: td, datacenter: 'dc1', now: new Date() });
const der = new X509Certificate(leaf.CertPEM).raw;
const uri = serviceSpiffeId(td, 'default', 'dc1', 'web');
const block = l7Block(allocateL7(1, 1), 0, 1, 0);
// recordRequest records durations in this thread's recorder, as in a data-plane worker.
installLatencyRecorder(new LatencyRecorder(0, 1));
initWebAssemblySync();
const jsHist = build({ ...HDR_PARAMS, useWebAssembly: false });
const wasmHist = build({ ...HDR_PARAMS, useWebAssembly: true });
// Durations as a sidecar sees them: log-uniform from 100 µs to 50 ms.
const random = rng(6);
const durations = Array.from({ length: BATCH }, () => 1e-4 * 500 ** random());
const durationsUs = durations.map(micros);

let sink = 0;
const bench = new Bench({ time: 300, warmupTime: 100 });
bench.add('SPIFFE service ID parse', () => {
  for (let i = 0; i < BATCH; i++) sink += parseSpiffeId(uri) === null ? 0 : 1;
});
bench.add('peer identity from leaf DER', () => {
  for (let i = 0; i < BATCH; i++) sink += serviceIdentity(der, td).ok ? 1 : 0;
});
bench.add('L7 counter + histogram record', () => {
  for (let i = 0; i < BATCH; i++) recordRequest(block, 200, durations[i] as number);
});
bench.add('histogram record (JS)', () => {
  for (let i = 0; i < BATCH; i++) jsHist.recordValue(durationsUs[i] as number);
});
bench.add('histogram record (WASM)', () => {
  for (let i = 0; i < BATCH; i++) wasmHist.recordValue(durationsUs[i] as number);
});
await bench.run();

process.stdout.write(`Per-request operations (Node ${process.versions.node}; ns per operation, tinybench samples of ${BATCH})\n\n`);
process.stdout.write(`${'operation'.padEnd(34)} ${'p50 ns'.padStart(8)} ${'p99 ns'.padStart(8)}\n`);
for (const t of bench.tasks) {
  const r = t.result;
  const lat = r !== undefined && 'latency' in r ? (r.latency as unknown as Record<string, number>) : undefined;
  const ns = (q: string): string => String(Math.round(((lat?.[q] ?? 0) * 1e6) / BATCH)).padStart(8);
  process.stdout.write(`${t.name.padEnd(34)} ${ns('p50')} ${ns('p99')}\n`);
}

// One scrape, per worker and listener, with a second of traffic at 5000 req/s behind it.
const PER_SCRAPE = 5000;
const worker = build({ ...HDR_PARAMS, useWebAssembly: true });
if (!(worker instanceof WasmHistogram)) throw new Error('expected a WebAssembly histogram');
const fill = (): void => {
  for (let i = 0; i < PER_SCRAPE; i++) worker.recordValue(durationsUs[i % BATCH] as number);
};
fill();
const raw = worker.encode();
const compressed = encodeIntoCompressedBase64(worker);
const delta = { encoded: [raw], sums: [1] };
const totals = new LatencyTotals(1);
const accumulator = build({ ...HDR_PARAMS, useWebAssembly: false });
const scrape = new Bench({ time: 200, warmupTime: 50 });
// The worker rows refill the histogram before each sample (untimed), as a second of traffic would.
const refill = { beforeEach: (): void => {
  worker.reset();
  fill();
} };
scrape.add('worker: encode raw + reset (meshd)', () => {
  sink += worker.encode().length;
  worker.reset();
}, refill);
scrape.add('worker: compressed base64 + reset', () => {
  sink += encodeIntoCompressedBase64(worker).length;
  worker.reset();
}, refill);
scrape.add('control: merge raw V2 (meshd)', () => totals.merge(delta));
scrape.add('control: decode base64 + add', () => {
  const h = decodeFromCompressedBase64(compressed);
  accumulator.add(h);
  h.destroy();
});
scrape.add('control: bucket counts', () => {
  sink += totals.histogram(0).count;
});
await scrape.run();
process.stdout.write(`\nOne scrape, per worker and listener (a delta of ${PER_SCRAPE} durations: ${raw.length} B raw, ${compressed.length} B compressed base64; µs per operation)\n\n`);
process.stdout.write(`${'operation'.padEnd(34)} ${'p50 µs'.padStart(8)} ${'p99 µs'.padStart(8)}\n`);
for (const t of scrape.tasks) {
  const r = t.result;
  const lat = r !== undefined && 'latency' in r ? (r.latency as unknown as Record<string, number>) : undefined;
  const v = (q: string): string => ((lat?.[q] ?? 0) * 1000).toFixed(1).padStart(8);
  process.stdout.write(`${t.name.padEnd(34)} ${v('p50')} ${v('p99')}\n`);
}
worker.destroy();
wasmHist.destroy();
if (sink < 0) process.stdout.write('');

const suites: readonly [string, readonly string[]][] = [
  ['authz-wasm.ts', []],
  ['l7-authz.ts', []],
  ['lb.ts', []],
  ['ca.ts', ['-time', '300']],
];
for (const [file, args] of suites) {
  process.stdout.write(`\n== bench/${file} ==\n`);
  const r = spawnSync(process.execPath, [fileURLToPath(new URL(`./${file}`, import.meta.url)), ...args], { stdio: 'inherit' });
  if (r.status !== 0) {
    process.stderr.write(`bench/${file} exited with ${r.status ?? r.signal ?? 'unknown'}\n`);
    process.exitCode = 1;
  }
}
