// `node bench/lb.ts`: per-request data-plane choices. pick() for every load-balancer policy
// over 10 and 100 endpoints (with a hash key for ring_hash/maglev, and a retry pick with an
// excluded host), SplitPicker.pick over 3 and 20 splits, requestHashKey, and the build time of
// the ring and the Maglev table. Times per operation from tinybench samples of 1,000
// operations each. Options: -json.

import { Bench } from 'tinybench';
import { createBalancer, hash32, requestHashKey, type Balancer, type HashableRequest } from '../src/dataplane/lb.ts';
import { SplitPicker } from '../src/dataplane/split.ts';
import type { ChainSplit, HashPolicy, LoadBalancerPolicy } from '../src/chain/types.ts';
import type { Endpoint } from '../src/workers/messages.ts';

const BATCH = 1000;
const POLICIES: readonly LoadBalancerPolicy[] = ['round_robin', 'random', 'least_request', 'ring_hash', 'maglev'];

interface Row {
  name: string;
  p50ns: number;
  p99ns: number;
}

function endpoints(n: number): Endpoint[] {
  return Array.from({ length: n }, (_v, i) => ({ host: `10.0.${i >> 8}.${i & 255}`, port: 20000, service: 'api' }));
}

const keys = Uint32Array.from({ length: 4096 }, (_v, i) => hash32(`user-${i}`));
const builds: { name: string; ms: number }[] = [];
const bench = new Bench({ time: 300, warmupTime: 100 });
let sink = 0;
let i = 0;

for (const n of [10, 100]) {
  const list = endpoints(n);
  for (const policy of POLICIES) {
    const t0 = performance.now();
    const b: Balancer = createBalancer({ policy, choiceCount: 2, minimumRingSize: 1024, maximumRingSize: 8 * 1024 * 1024, hashPolicies: [] }, list);
    if (policy === 'ring_hash' || policy === 'maglev') builds.push({ name: `${policy} build ${n}`, ms: performance.now() - t0 });
    bench.add(`${policy} pick ${n}`, () => {
      for (let k = 0; k < BATCH; k++) {
        const ep = b.pick(keys[i++ & 4095] as number);
        if (ep !== null) sink ^= ep.port;
      }
    });
    const bad = list[3] as Endpoint;
    bench.add(`${policy} retry pick ${n}`, () => {
      for (let k = 0; k < BATCH; k++) {
        const ep = b.pick(keys[i++ & 4095] as number, bad);
        if (ep !== null) sink ^= ep.port;
      }
    });
  }
}

const NO_HEADERS = { add: {}, set: {}, remove: [] };
for (const n of [3, 20]) {
  const splits: ChainSplit[] = Array.from({ length: n }, (_v, k) => ({
    weightBp: k === 0 ? 10000 - (n - 1) * Math.floor(10000 / n) : Math.floor(10000 / n),
    targetId: `t${k}`,
    requestHeaders: NO_HEADERS,
    responseHeaders: NO_HEADERS,
  }));
  const p = new SplitPicker(splits);
  bench.add(`split pick ${n}`, () => {
    for (let k = 0; k < BATCH; k++) sink ^= p.pick();
  });
}

const policies: HashPolicy[] = [
  { field: 'header', fieldValue: 'x-user-id', sourceIp: false, terminal: false, cookie: null },
  { field: '', fieldValue: '', sourceIp: true, terminal: true, cookie: null },
];
const headers: Record<string, string> = { 'x-user-id': 'user-8d3f2a91-4c1e' };
const req: HashableRequest = { header: (h) => headers[h], cookie: () => undefined, query: () => undefined, sourceIp: '10.20.30.40' };
bench.add('requestHashKey header+ip', () => {
  for (let k = 0; k < BATCH; k++) sink ^= requestHashKey(policies, req) ?? 0;
});

await bench.run();
if (sink === 0.5) process.stdout.write('');

const rows: Row[] = bench.tasks.map((t) => {
  const r = t.result;
  const lat = r !== undefined && 'latency' in r ? (r.latency as unknown as Record<string, number>) : undefined;
  const ns = (q: string): number => Math.round(((lat?.[q] ?? NaN) * 1e6) / BATCH);
  return { name: t.name, p50ns: ns('p50'), p99ns: ns('p99') };
});

if (process.argv.includes('-json') || process.argv.includes('--json')) {
  process.stdout.write(JSON.stringify({ rows, builds }) + '\n');
} else {
  process.stdout.write(`Data-plane choices (Node ${process.versions.node}; ns per operation, samples of ${BATCH})\n\n`);
  process.stdout.write('operation                         p50 ns   p99 ns\n');
  for (const r of rows) process.stdout.write(`${r.name.padEnd(32)} ${String(r.p50ns).padStart(7)}  ${String(r.p99ns).padStart(7)}\n`);
  process.stdout.write('\n');
  for (const b of builds) process.stdout.write(`${b.name.padEnd(32)} ${b.ms.toFixed(2).padStart(7)} ms\n`);
}
