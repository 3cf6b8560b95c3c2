// `node bench/l7-authz.ts`: cost of one L7 decision (compileL7Sources(...).evaluate) for an
// intention with 10 permissions mixing path prefix/exact/regex, methods and header matchers,
// for requests decided by the first permission, by a late one, and by the default policy;
// plus normalizeRequestPath on a plain and on a dirty path. Prints ns per call (tinybench
// p50/p99 over samples of 1,000 calls each). Options: -json.

import { Bench } from 'tinybench';
import { compileL7Sources, normalizeRequestPath, rawHeaderValue } from '../src/authz/l7.ts';
import type { L7Request } from '../src/authz/l7.ts';
import type { HeaderMatch, IntentionPermission, L7SourceIntention } from '../src/config/service-intentions.ts';

const BATCH = 1000;

function h(name: string, matcher: HeaderMatch['matcher'], ignoreCase = false, invert = false): HeaderMatch {
  return { name, matcher, invert, ignoreCase };
}

const PERMISSIONS: IntentionPermission[] = [
  { action: 'deny', http: { path: { kind: 'prefix', value: '/v2/admin' }, methods: [], headers: [] }, jwt: null },
  { action: 'allow', http: { path: { kind: 'exact', value: '/healthz' }, methods: ['GET', 'HEAD'], headers: [] }, jwt: null },
  { action: 'deny', http: { path: null, methods: [], headers: [h('x-debug', { kind: 'present' })] }, jwt: null },
  { action: 'allow', http: { path: { kind: 'regex', value: '/v1/users/[0-9]+' }, methods: ['GET'], headers: [] }, jwt: null },
  { action: 'allow', http: { path: { kind: 'prefix', value: '/v1/orders' }, methods: ['GET', 'POST'], headers: [h('x-tenant', { kind: 'exact', value: 'acme' }, true)] }, jwt: null },
  { action: 'deny', http: { path: { kind: 'regex', value: '/v1/(internal|private)/.*' }, methods: [], headers: [] }, jwt: null },
  { action: 'allow', http: { path: { kind: 'prefix', value: '/v1/catalog' }, methods: [], headers: [h('user-agent', { kind: 'contains', value: 'mesh' }, true)] }, jwt: null },
  { action: 'allow', http: { path: { kind: 'prefix', value: '/v1/search' }, methods: ['GET'], headers: [h('x-region', { kind: 'regex', value: 'eu-[a-z]+-[0-9]' })] }, jwt: null },
  { action: 'deny', http: { path: null, methods: ['DELETE'], headers: [h('x-role', { kind: 'prefix', value: 'admin' }, false, true)] }, jwt: null },
  { action: 'allow', http: { path: { kind: 'prefix', value: '/v2' }, methods: ['GET', 'PUT'], headers: [h('x-tenant', { kind: 'suffix', value: '.prod' })] }, jwt: null },
];

const source: L7SourceIntention = { name: 'web', type: 'consul', description: '', precedence: 9, layer: 'l7', permissions: PERMISSIONS };
const program = compileL7Sources([source]);

function request(method: string, path: string, raw: string[]): L7Request {
  return { method, path, header: (name) => rawHeaderValue(raw, name) };
}
const BASE = ['Host', 'api', 'User-Agent', 'curl/8.0', 'Accept', '*/*', 'X-Tenant', 'acme'];
const CASES: [label: string, req: L7Request, wantIndex: number][] = [
  ['first permission', request('GET', '/v2/admin/users', BASE), 0],
  ['5th (prefix+header)', request('POST', '/v1/orders/17', BASE), 4],
  ['8th (header regex)', request('GET', '/v1/search', [...BASE, 'X-Region', 'eu-west-1']), 7],
  ['default (no match)', request('PATCH', '/v3/other', BASE), -1],
];

for (const [label, r, want] of CASES) {
  const got = program.evaluate('web', r, false).permissionIndex;
  if (got !== want) throw new Error(`${label}: permission ${got}, expected ${want}`);
}

const bench = new Bench({ time: 300, warmupTime: 100 });
let sink = 0;
for (const [label, r] of CASES) {
  bench.add(label, () => {
    for (let k = 0; k < BATCH; k++) sink += program.evaluate('web', r, false).permissionIndex;
  });
}
const PATHS: [string, string][] = [['normalize plain', '/v1/orders/17?x=1'], ['normalize dirty', '/v1//a/./b/%2e%2E/orders%2F17?x=1']];
for (const [label, p] of PATHS) {
  bench.add(label, () => {
    for (let k = 0; k < BATCH; k++) sink += normalizeRequestPath(p).ok ? 1 : 0;
  });
}
await bench.run();
if (sink === 0.5) process.stdout.write('');

const rows = bench.tasks.map((t) => {
  const r = t.result;
  const lat = r !== undefined && 'latency' in r ? (r.latency as unknown as Record<string, number>) : undefined;
  const ns = (q: string): number => Math.round(((lat?.[q] ?? NaN) * 1e6) / BATCH);
  return { case: t.name, p50ns: ns('p50'), p99ns: ns('p99') };
});
if (process.argv.includes('-json') || process.argv.includes('--json')) {
  process.stdout.write(JSON.stringify(rows) + '\n');
} else {
  process.stdout.write(`L7 decision, 10 permissions (Node ${process.versions.node}; ns per call, samples of ${BATCH} calls)\n\n`);
  process.stdout.write('case                      p50 ns   p99 ns\n');
  for (const r of rows) process.stdout.write(`${r.case.padEnd(24)}  ${String(r.p50ns).padStart(6)}   ${String(r.p99ns).padStart(6)}\n`);
}
