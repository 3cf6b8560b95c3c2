// `npm run soak`: a long run at a steady share of capacity while the control plane churns
// (hardening issue, "Faults and overload"). Not part of `npm test`.
//
//   generator ─▶ web ══mTLS══▶ api sidecar ─▶ node:http app      (open loop, `-load` × capacity)
//   prober    ─▶ evil ══mTLS══▶ api sidecar                      (1 request/s, must stay refused)
//
// Meanwhile: the api service-intentions entry is replaced every `-swap-every` (L4 allow, L7
// PathPrefix permission, wildcard allow: web is allowed by each, evil denied by each); the root
// CA rotates `-rotations` times, evenly spread (EC P-256 → P-384 → RSA 2048 → ...), and every
// sidecar re-issues its leaf after each rotation (-ca-change-jitter 5s); the leaf TTL is set to
// its minimum (1h, the CA configuration's floor), so runs longer than ~54 minutes also see
// ordinary renewals. RSS and open file descriptors of every meshd process (and the V8 heap each sidecar reports) are sampled every
// `-sample`, and a line is printed every `-report`.
//
// Verdict: zero failed allowed requests (every generator request must be a 2xx), evil never
// let through, and flat RSS and fd counts (the slope after the first tenth of the run is
// printed; the run fails if RSS grows by more than `-rss-growth-mb` or fds by more than
// `-fd-growth` from the first tenth to the end). Exit status 1 on a failed verdict.
//
// Flags: -duration 30m -load 0.6 -swap-every 20s -rotations 2 -sample 5s -report 30s
// -workers 1 -capacity 3s -rss-growth-mb 40 -fd-growth 20 -json FILE

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseFlags, type FlagSpecs } from '../src/cli/flags.ts';
import { parseDuration } from '../src/control/decode.ts';
import { startMeshd, type MeshdProcess } from '../src/demo/procs.ts';
import { runOverload, type OverloadResult } from './lib/overload-worker.ts';
import { startNodeApp } from './lib/systems.ts';
import { fdCount, rssMb } from '../test/helpers/proc.ts';

/** The service-intentions variants -swaps cycles through; each allows web's /api requests and denies evil. */
const INTENTIONS: Readonly<Record<string, readonly object[]>> = {
  l4: [{ Name: 'web', Action: 'allow' }, { Name: 'evil', Action: 'deny' }],
  l7: [{ Name: 'web', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/api' } }] }, { Name: 'evil', Action: 'deny' }],
  'l7-alt': [{ Name: 'web', Permissions: [{ Action: 'deny', HTTP: { PathPrefix: '/admin' } }, { Action: 'allow', HTTP: { Methods: ['GET', 'HEAD'] } }] }, { Name: 'evil', Action: 'deny' }],
  wildcard: [{ Name: 'evil', Action: 'deny' }, { Name: '*', Action: 'allow' }],
};

const FLAGS: FlagSpecs = {
  duration: { kind: 'string', help: 'how long the load runs', default: '30m' },
  load: { kind: 'string', help: 'offered rate × measured capacity', default: '0.6' },
  'swap-every': { kind: 'string', help: 'intention swap period', default: '20s' },
  swaps: { kind: 'string', help: `service-intentions variants to cycle through (${Object.keys(INTENTIONS).join(', ')})`, default: 'l4,l7,wildcard' },
  rotations: { kind: 'string', help: 'root rotations, spread evenly over the run', default: '2' },
  sample: { kind: 'string', help: 'RSS/fd sampling period', default: '5s' },
  report: { kind: 'string', help: 'progress line period', default: '30s' },
  workers: { kind: 'string', help: 'workers per sidecar', default: '1' },
  capacity: { kind: 'string', help: 'capacity measurement (closed loop)', default: '3s' },
  'rss-growth-mb': { kind: 'string', help: 'allowed RSS growth per sidecar from the first tenth to the end', default: '40' },
  'fd-growth': { kind: 'string', help: 'allowed fd growth per sidecar from the first tenth to the end', default: '20' },
  json: { kind: 'string', help: 'write the report to FILE' },
};

const f = parseFlags(process.argv.slice(2), FLAGS);
const dur = (k: string): number => parseDuration(f.strings.get(k) ?? '', k);
const num = (k: string): number => Number(f.strings.get(k));
const durationMs = dur('duration');
const log = (line: string): void => void process.stdout.write(`${new Date().toISOString()} ${line}\n`);

interface Sample {
  readonly t: number;
  readonly rss: Record<string, number>;
  readonly fds: Record<string, number>;
  /** V8 heap in use (MB) of each sidecar, every isolate (control thread and workers), from its /metrics. */
  readonly heap: Record<string, number>;
}

/** The V8 heap a sidecar reports in use, MB: meshd_process_heap_used_bytes + every worker's meshd_worker_heap_used_bytes. */
async function heapUsedMb(metricsAddr: string): Promise<number> {
  const text = await (await fetch(`http://${metricsAddr}/metrics`)).text();
  let bytes = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('meshd_process_heap_used_bytes') || line.startsWith('meshd_worker_heap_used_bytes')) bytes += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return Math.round((bytes / 1048576) * 10) / 10;
}

const KEYS = [
  { PrivateKeyType: 'ec', PrivateKeyBits: 384 },
  { PrivateKeyType: 'rsa', PrivateKeyBits: 2048 },
  { PrivateKeyType: 'ec', PrivateKeyBits: 256 },
];


function slope(points: readonly (readonly [number, number])[]): number {
  const n = points.length;
  if (n < 2) return 0;
  const mx = points.reduce((a, p) => a + p[0], 0) / n;
  const my = points.reduce((a, p) => a + p[1], 0) / n;
  let num_ = 0;
  let den = 0;
  for (const [x, y] of points) {
    num_ += (x - mx) * (y - my);
    den += (x - mx) ** 2;
  }
  return den === 0 ? 0 : num_ / den;
}

async function main(): Promise<number> {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-soak-'));
  const app = await startNodeApp(0);
  const procs: MeshdProcess[] = [];
  const timers: NodeJS.Timeout[] = [];
  try {
    log(`soak: ${durationMs / 60_000} min at ${num('load')} × capacity; load average ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
    const agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    procs.push(agent);
    const http = agent.fields.http as string;
    const api_ = async (method: string, path: string, body: unknown): Promise<void> => {
      const r = await fetch(`http://${http}${path}`, { method, body: JSON.stringify(body) });
      if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${await r.text()}`);
    };
    const caConfig = (key: object): object => ({ Provider: 'consul', Config: { LeafCertTTL: '1h', ...key } });
    await api_('PUT', '/v1/connect/ca/configuration', caConfig({ PrivateKeyType: 'ec', PrivateKeyBits: 256 }));
    await api_('PUT', '/v1/config', { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    const variants = (f.strings.get('swaps') ?? '').split(',').map((v) => {
      const sources = INTENTIONS[v.trim()];
      if (sources === undefined) throw new Error(`-swaps: unknown variant ${JSON.stringify(v)} (${Object.keys(INTENTIONS).join(', ')})`);
      return sources;
    });
    await api_('PUT', '/v1/config', { Kind: 'service-intentions', Name: 'api', Sources: variants[0] });
    const common = ['-workers', f.strings.get('workers') ?? '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http, '-ca-change-jitter', '5s'];
    const api = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', ...common]);
    procs.push(api);
    const [web, evil] = await Promise.all([startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', ...common]), startMeshd(['connect', 'proxy', '-service', 'evil', '-upstream', 'api:0', ...common])]);
    procs.push(web, evil);
    const webPort = Number((web.fields['upstream.api'] as string).split(':')[1]);
    const evilBase = `http://${evil.fields['upstream.api'] as string}`;
    for (let i = 0; ; i++) {
      const ok = await fetch(`http://127.0.0.1:${webPort}/api/items`).then(
        async (r) => (await r.arrayBuffer(), r.status === 200),
        () => false,
      );
      if (ok) break;
      if (i > 100) throw new Error('the mesh did not become ready');
      await new Promise((r) => setTimeout(r, 100));
    }
    const cap = await runOverload({ kind: 'closed', port: webPort, path: '/api/items', connections: 64, ms: dur('capacity') });
    const capacity = cap.requests / cap.seconds;
    const rate = Math.max(10, Math.round(capacity * num('load')));
    log(`capacity ${capacity.toFixed(0)} req/s; soak rate ${rate} req/s`);
    await new Promise((r) => setTimeout(r, 2000));

    const pids: Record<string, number> = { agent: agent.child.pid as number, api: api.child.pid as number, web: web.child.pid as number, evil: evil.child.pid as number };
    const samples: Sample[] = [];
    const t0 = Date.now();
    const metricsOf: Record<string, string> = { api: api.fields.metrics as string, web: web.fields.metrics as string, evil: evil.fields.metrics as string };
    const sample = async (): Promise<void> => {
      const t = Date.now() - t0;
      const rss: Record<string, number> = {};
      const fds: Record<string, number> = {};
      for (const [k, pid] of Object.entries(pids)) {
        rss[k] = rssMb(pid).rss;
        fds[k] = fdCount(pid);
      }
      const heap: Record<string, number> = {};
      for (const [k, addr] of Object.entries(metricsOf)) heap[k] = await heapUsedMb(addr).catch(() => NaN);
      samples.push({ t, rss, fds, heap });
    };
    await sample();
    timers.push(setInterval(() => void sample(), dur('sample')));

    // The load, one open-loop phase for the whole run (results at the end, per second).
    const loadDone: Promise<OverloadResult> = runOverload({ kind: 'open', port: webPort, path: '/api/items', phases: [{ label: 'soak', rate, ms: durationMs }], maxConnections: 256, timeoutMs: 10_000 });

    // evil: one request a second, always refused.
    let evilDenied = 0;
    let evilLetThrough = 0;
    let evilOther = 0;
    timers.push(
      setInterval(() => {
        fetch(`${evilBase}/api/items`).then(
          async (r) => {
            await r.arrayBuffer();
            // Denied at L4, api closes evil's connections: evil's sidecar answers 5xx itself.
            if (r.status < 300) evilLetThrough++;
            else evilDenied++;
          },
          () => evilOther++,
        );
      }, 1000),
    );

    let swaps = 0;
    timers.push(
      setInterval(() => {
        const next = variants[++swaps % variants.length];
        api_('PUT', '/v1/config', { Kind: 'service-intentions', Name: 'api', Sources: next }).catch((e: Error) => log(`intention swap failed: ${e.message}`));
      }, dur('swap-every')),
    );

    const rotations = num('rotations');
    let rotated = 0;
    for (let i = 1; i <= rotations; i++) {
      timers.push(
        setTimeout(
          () => {
            const key = KEYS[(i - 1) % KEYS.length] as object;
            api_('PUT', '/v1/connect/ca/configuration', caConfig(key))
              .then(() => {
                rotated++;
                log(`root rotated to ${JSON.stringify(key)}`);
              })
              .catch((e: Error) => log(`root rotation failed: ${e.message}`));
          },
          (durationMs * i) / (rotations + 1),
        ),
      );
    }

    // Leaf re-issues, seen as the leaf's expiry jumping forward on each sidecar's /metrics.
    const lastExpiry: Record<string, number> = {};
    const reissues: Record<string, number> = { api: 0, web: 0, evil: 0 };
    let lastCodes = { ok: 0, bad: {} as Record<string, number> };
    const report = async (): Promise<void> => {
      for (const [name, p] of [
        ['api', api],
        ['web', web],
        ['evil', evil],
      ] as const) {
        const text = await (await fetch(`http://${p.fields.metrics as string}/metrics`)).text();
        const m = /^meshd_leaf_expiry_seconds\{[^}]*\} (-?\d+)/m.exec(text);
        const exp = Number(m?.[1] ?? 0);
        const before = lastExpiry[name];
        // Between two reports the time left only shrinks, unless a new leaf came.
        if (before !== undefined && exp > before + 5) reissues[name] = (reissues[name] ?? 0) + 1;
        lastExpiry[name] = exp;
        if (name === 'web') {
          let ok = 0;
          const bad: Record<string, number> = {};
          for (const line of text.split('\n')) {
            const c = /^meshd_http_requests_total\{[^}]*direction="outbound"[^}]*code_class="(\dxx)"\} (\d+)/.exec(line);
            if (c === null) continue;
            if (c[1] === '2xx') ok += Number(c[2]);
            else if (Number(c[2]) > 0) bad[c[1] as string] = Number(c[2]);
          }
          lastCodes = { ok, bad };
        }
      }
    };
    await report();
    const line = (): string => {
      const s = samples[samples.length - 1] as Sample;
      const rss = Object.entries(s.rss)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
      const fds = Object.entries(s.fds)
        .map(([k, v]) => `${k} ${v}`)
        .join(', ');
      return `t=${Math.round(s.t / 1000)}s web 2xx ${lastCodes.ok}, other ${JSON.stringify(lastCodes.bad)}; evil denied ${evilDenied}, let through ${evilLetThrough}; swaps ${swaps}, rotations ${rotated}, leaf re-issues ${JSON.stringify(reissues)}; RSS MB: ${rss}; fds: ${fds}`;
    };
    timers.push(
      setInterval(() => {
        report().then(
          () => log(line()),
          (e: Error) => log(`report failed: ${e.message}`),
        );
      }, dur('report')),
    );

    const result = await loadDone;
    for (const t of timers) clearInterval(t);
    await report();
    log(line());
    // Why api refused requests (an allowed request refused shows here).
    const apiText = await (await fetch(`http://${api.fields.metrics as string}/metrics`)).text();
    const refusals = apiText
      .split('\n')
      .filter((l) => /^meshd_http_requests_denied_total\{/.test(l) && !l.endsWith(' 0'))
      .map((l) => l.replace(/^meshd_http_requests_denied_total/, ''));
    if (refusals.length > 0) log(`api refused: ${refusals.join(', ')}`);

    const windows = result.windows;
    const ok = windows.reduce((a, w) => a + w.ok, 0);
    const failed = windows.reduce((a, w) => a + w.shed + w.other + w.errors, 0);
    const failedAt = windows.filter((w) => w.shed + w.other + w.errors > 0).map((w) => Math.round(w.at / 1000));
    const worstP99 = Math.max(...windows.map((w) => w.p99));
    // Early: after the warm-up (the first tenth, at least 30 s); late: the last as many samples.
    const tenth = Math.max(durationMs / 10, Math.min(30_000, durationMs / 3));
    const early = samples.filter((s) => s.t >= tenth && s.t < 2 * tenth);
    const late = samples.slice(-Math.max(1, early.length));
    const avg = (xs: readonly Sample[], k: 'rss' | 'fds' | 'heap', who: string): number => xs.reduce((a, s) => a + (s[k][who] ?? 0), 0) / Math.max(1, xs.length);
    const verdicts: string[] = [];
    const growth: Record<string, { rssMb: number; rssSlopeMbPerMin: number; fds: number; rssMax: number; heapMb: number }> = {};
    for (const who of Object.keys(pids)) {
      const after = samples.filter((s) => s.t >= tenth);
      const g = {
        rssMb: Math.round((avg(late, 'rss', who) - avg(early, 'rss', who)) * 10) / 10,
        rssSlopeMbPerMin: Math.round(slope(after.map((s) => [s.t / 60_000, s.rss[who] ?? 0] as const)) * 100) / 100,
        fds: Math.round((avg(late, 'fds', who) - avg(early, 'fds', who)) * 10) / 10,
        rssMax: Math.max(...samples.map((s) => s.rss[who] ?? 0)),
        // The V8 heap's growth beside the RSS's: retained JavaScript objects show here, allocator growth does not.
        heapMb: who === 'agent' ? 0 : Math.round((avg(late, 'heap', who) - avg(early, 'heap', who)) * 10) / 10,
      };
      growth[who] = g;
      if (who !== 'agent' && g.rssMb > num('rss-growth-mb')) verdicts.push(`${who}: RSS grew ${g.rssMb} MB`);
      if (who !== 'agent' && g.fds > num('fd-growth')) verdicts.push(`${who}: ${g.fds} more fds`);
    }
    if (failed > 0) verdicts.push(`${failed} allowed requests failed (at s ${failedAt.slice(0, 20).join(', ')})`);
    if (evilLetThrough > 0) verdicts.push(`evil got through ${evilLetThrough} times`);
    if (rotated < rotations) verdicts.push(`${rotations - rotated} rotations did not happen`);
    log(`done: ${ok} allowed requests ok, ${failed} failed; worst 1 s p99 ${(worstP99 / 1000).toFixed(1)} ms; evil denied ${evilDenied}/${evilDenied + evilLetThrough + evilOther}; ${swaps} intention swaps, ${rotated} root rotations, leaf re-issues ${JSON.stringify(reissues)}`);
    for (const [who, g] of Object.entries(growth)) log(`  ${who}: RSS ${g.rssMb >= 0 ? '+' : ''}${g.rssMb} MB (first tenth → end), slope ${g.rssSlopeMbPerMin} MB/min, max ${g.rssMax} MB; V8 heap ${g.heapMb >= 0 ? '+' : ''}${g.heapMb} MB; fds ${g.fds >= 0 ? '+' : ''}${g.fds}`);
    log(verdicts.length === 0 ? 'verdict: PASS' : `verdict: FAIL: ${verdicts.join('; ')}`);
    const out = f.strings.get('json');
    if (out !== undefined) writeFileSync(out, JSON.stringify({ capacity, rate, ok, failed, failedAt, worstP99, evilDenied, evilLetThrough, evilOther, swaps, rotated, reissues, growth, samples, windows }, null, 2));
    return verdicts.length === 0 ? 0 : 1;
  } finally {
    for (const t of timers) clearInterval(t);
    await Promise.all(procs.slice(1).map((p) => p.stop()));
    await procs[0]?.stop();
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
