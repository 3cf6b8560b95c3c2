// `npm run bench:micro`: every micro-benchmark in one run. First a few per-request operations
// measured here with tinybench (SPIFFE ID parse, peer identity from a leaf's DER, one L7
// counter + histogram record), then the dedicated suites one after the other: the L4 decision
// (TypeScript vs WebAssembly probe), the L7 decision with 10 permissions, load-balancer and
// split picks, and leaf signing. Each prints its own table; figures per operation.

import { spawnSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { Bench } from 'tinybench';
import { createLeafCsr, generateRoot, signLeafCsr } from '../src/ca/authority.ts';
import { parseSpiffeId, serviceSpiffeId } from '../src/ca/spiffe.ts';
import { serviceIdentity } from '../src/dataplane/identity.ts';
import { allocateL7, l7Block, recordRequest } from '../src/metrics/l7.ts';

const BATCH = 1000;
const clusterId = '0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d';
const td = `${clusterId}.consul`;
const root = await generateRoot({ clusterId, now: new Date() });
const { csrPem } = await createLeafCsr(serviceSpiffeId(td, 'default', 'dc1', 'web'));
const leaf = await signLeafCsr({ csrPem, root, trustDomain: td, datacenter: 'dc1', now: new Date() });
const der = new X509Certificate(leaf.CertPEM).raw;
const uri = serviceSpiffeId(td, 'default', 'dc1', 'web');
const block = l7Block(allocateL7(1, 1), 0, 1, 0);

let sink = 0;
const bench = new Bench({ time: 300, warmupTime: 100 });
bench.add('SPIFFE service ID parse', () => {
  for (let i = 0; i < BATCH; i++) sink += parseSpiffeId(uri) === null ? 0 : 1;
});
bench.add('peer identity from leaf DER', () => {
  for (let i = 0; i < BATCH; i++) sink += serviceIdentity(der, td).ok ? 1 : 0;
});
bench.add('L7 counter + histogram record', () => {
  for (let i = 0; i < BATCH; i++) recordRequest(block, 200, (i % 97) / 10_000);
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
