// `npm run bench`: meshd's two-sidecar path against a direct connection and against HAProxy
// set up as the same two sidecars with the same kind of certificates, in one run, interleaved
// (A B C, A B C, ...), each figure the median of the rounds. Scenarios:
//
//   l4         HTTP keep-alive through the sidecars with Protocol tcp (HAProxy mode tcp)
//   l7         the same with Protocol http, an L7 intention, a router and a splitter, and a
//              meshd+scrape row (both sidecars' /metrics scraped once a second) (HAProxy mode http)
//   handshake  a new connection per request through the sidecars in tcp mode: every request
//              is an mTLS handshake between them, full (meshd -tls-session-resumption=false,
//              HAProxy no-ssl-reuse) or resumed (the defaults of both)
//   bulk       a large body (64 MiB) downloaded again and again, MB/s, l4 and l7
//   latency    open-loop fixed rates with coordinated-omission correction (1000 req/s and 60 %
//              of the meshd maximum measured on the same path): p50/p90/p99/p99.9
//   scaling    meshd -workers 1..cores against HAProxy nbthread 1..cores (l4; l7 with -scaling-l7)
//
//   load (raw sockets, worker thread) ─▶ client sidecar ══mTLS══▶ server sidecar ─▶ app
//
// The report: a table per scenario on stdout, progress on stderr, `-json FILE` (and FILE.svg,
// latency-percentile plots), `-threshold 'l4.ratio_haproxy>=1.0'` (exit 1 when breached),
// `-cpu-prof SCENARIO` (the server sidecar(s) of that scenario run under --cpu-prof, and the
// profile is summarised). docs/BENCHMARKS.md explains the figures.

import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseFlags, UsageError, type FlagSpecs } from '../../src/cli/flags.ts';
import { formatSummary, readProfiles, summarize, type ProfileSummary, type Window } from './cpuprofile.ts';
import { GENERATOR, cpuMs, median, peakRssMb, quantile, runLoad, type LoadJob } from './load.ts';
import { addComparisons, checkThreshold, flatMetrics, formatScenario, percentileSvg, type PlotPanel, type Row, type ScenarioReport, type ThresholdResult } from './report.ts';
import {
  ensureHaproxy,
  haproxyCerts,
  haproxyClient,
  haproxyServer,
  haproxyVersion,
  meshdClient,
  meshdServer,
  nginxInstalled,
  startAgent,
  startNginxApp,
  startNodeApp,
  waitReady,
  type App,
  type Pems,
  type Proc,
} from './systems.ts';

export const SCENARIOS = ['l4', 'l7', 'handshake', 'bulk', 'latency', 'scaling'] as const;
export type Scenario = (typeof SCENARIOS)[number];

const METRICS_HELP =
  'rps (req/s), hps (handshakes/s), mbps (MB/s), ratio_direct, ratio_haproxy, resume_gain (handshake: resumed / full), scale (scaling: / 1 thread), p50us, p90us, p99us, p999us, added_p50us, added_p99us, added_p999us (minus direct), p99_ratio_haproxy, p999_ratio_haproxy (latency: meshd p99 / HAProxy p99 at the same rate), target_rps, late (latency), errors, cpu_client_us, cpu_server_us (per request, handshake or MB), rss_client_mb, rss_server_mb';

export const FLAGS: FlagSpecs = {
  scenario: { kind: 'string', help: `comma-separated scenarios: ${SCENARIOS.join(', ')}, or all`, placeholder: 'LIST', default: 'all' },
  connections: { kind: 'string', help: 'concurrent connections of the load (closed loop, handshake loops, open loop)', default: '32' },
  duration: { kind: 'string', help: 'seconds per measurement', default: '2' },
  rounds: { kind: 'string', help: 'interleaved rounds; each figure is the median', default: '3' },
  'bulk-mb': { kind: 'string', help: 'bulk: body size in MiB', default: '64' },
  'bulk-connections': { kind: 'string', help: 'bulk: concurrent downloads', default: '1' },
  'latency-rates': { kind: 'string', help: 'latency: fixed rates, req/s or N% of the meshd maximum on the path', placeholder: 'LIST', default: '1000,60%' },
  'latency-path': { kind: 'string', help: 'latency: l7 (Protocol http, HAProxy mode http) or l4', default: 'l7' },
  'max-workers': { kind: 'string', help: 'scaling: up to this many workers/threads per sidecar (default: the number of cores)', placeholder: 'N' },
  'scaling-l7': { kind: 'bool', help: 'scaling: measure the l7 path too' },
  app: { kind: 'string', help: 'the app behind the sidecars: auto (nginx when installed, else node:http), node or nginx', default: 'auto' },
  haproxy: { kind: 'bool', help: 'compare with HAProxy (installed with apt when missing); -haproxy=false skips it' },
  json: { kind: 'bool', help: 'print the JSON report on stdout; `-json FILE` (or --json FILE) writes it to FILE instead, with FILE.svg' },
  'json-file': { kind: 'string', help: 'write the JSON report to FILE and latency-percentile plots to FILE.svg', placeholder: 'FILE' },
  threshold: { kind: 'list', help: `exit 1 unless SCENARIO[.SYSTEM].METRIC OP NUMBER holds, e.g. 'l4.ratio_haproxy>=1.0', 'handshake.meshd-resume.hps>=3000'; SYSTEM defaults to the scenario's meshd row; metrics: ${METRICS_HELP}`, placeholder: 'EXPR' },
  'cpu-prof': { kind: 'string', help: 'run the server sidecar(s) of this scenario under node --cpu-prof and summarise the profiles (top functions by self time, categories)', placeholder: 'SCENARIO' },
  'cpu-prof-dir': { kind: 'string', help: 'a new meshd-cpuprof-* directory is made here for the .cpuprofile files, one subdirectory per server sidecar (kept; default: the system temp dir)', placeholder: 'DIR' },
  help: { kind: 'bool', help: 'this text' },
};

interface Options {
  readonly scenarios: readonly Scenario[];
  readonly connections: number;
  readonly seconds: number;
  readonly rounds: number;
  readonly bulkBytes: number;
  readonly bulkConnections: number;
  readonly latencyRates: readonly string[];
  readonly latencyPath: 'l4' | 'l7';
  readonly maxWorkers: number;
  readonly scalingL7: boolean;
}

/** A system measured in a scenario: where the load goes, and which processes to read. */
interface Sys {
  readonly name: string;
  readonly kind: Row['kind'];
  readonly port: number;
  /** [client sidecar, server sidecar]; empty for direct. */
  readonly pids: readonly number[];
  readonly job: Omit<LoadJob, 'port'>;
  readonly warm: Omit<LoadJob, 'port'>;
  /** URLs scraped once a second during the measurement. */
  readonly scrape?: readonly string[];
  /** Extra metrics of the row (latency: target_rps). */
  readonly extra?: Readonly<Record<string, number>>;
}

interface Measure {
  readonly value: number;
  readonly latUs: readonly number[];
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly errors: number;
  readonly late: number;
  readonly cpuUs: readonly number[];
}

interface Ctx {
  readonly o: Options;
  readonly dir: string;
  readonly agent: string;
  readonly app: App;
  readonly pem: Pems | null;
  readonly log: (s: string) => void;
  readonly cpuProf: { readonly scenario: Scenario; readonly dir: string } | null;
  /** meshd's median req/s per path, from the l4 and l7 scenarios (the latency scenario's 100 %). */
  readonly maxRps: Map<'l4' | 'l7', number>;
  readonly profiles: { label: string; summary: ProfileSummary; dir: string }[];
  /** From the first warm-up to the end of the last measurement of the latest scenario (for -cpu-prof). */
  window: Window | null;
}

/** Now on the clock of V8's CPU profiles (CLOCK_MONOTONIC, µs). */
function monoUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

function intFlag(raw: string | undefined, flag: string, min: number): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min) throw new UsageError(`-${flag} must be a number >= ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

/**
 * `-json` alone prints JSON on stdout; `-json FILE` / `--json FILE` / `--json=FILE` (the
 * issue's spelling) means `-json-file FILE`.
 */
export function normaliseArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    const m = /^--?json(?:=(.*))?$/.exec(a);
    if (m === null) {
      out.push(a);
      continue;
    }
    const inline = m[1];
    if (inline !== undefined && inline !== 'true' && inline !== 'false') out.push(`-json-file=${inline}`);
    else if (inline === undefined && argv[i + 1] !== undefined && !(argv[i + 1] as string).startsWith('-')) out.push(`-json-file=${argv[++i] as string}`);
    else out.push(a);
  }
  return out;
}

async function measureOnce(ctx: Ctx, sys: Sys, primary: ScenarioReport['primary']): Promise<Measure> {
  await runLoad({ ...sys.warm, port: sys.port });
  const before = sys.pids.map(cpuMs);
  const scraper =
    sys.scrape === undefined
      ? undefined
      : setInterval(() => {
          for (const url of sys.scrape ?? []) {
            fetch(url)
              .then((res) => res.arrayBuffer())
              .catch(() => undefined);
          }
        }, 1000);
  const r = await runLoad({ ...sys.job, port: sys.port });
  clearInterval(scraper);
  const after = sys.pids.map(cpuMs);
  const units = primary === 'mbps' ? r.bytes / 1e6 : r.requests;
  const value = units / r.seconds;
  if (r.firstError !== undefined) ctx.log(`    ${sys.name}: ${r.errors} error(s), first: ${r.firstError}`);
  return {
    value,
    latUs: r.latUs,
    p50: quantile(r.latUs, 0.5),
    p90: quantile(r.latUs, 0.9),
    p99: quantile(r.latUs, 0.99),
    p999: quantile(r.latUs, 0.999),
    errors: r.errors,
    late: r.late ?? 0,
    cpuUs: sys.pids.map((_p, i) => (((after[i] as number) - (before[i] as number)) * 1000) / Math.max(1e-9, units)),
  };
}

const UNIT: Readonly<Record<ScenarioReport['primary'], string>> = { rps: 'req/s', hps: 'handshakes/s', mbps: 'MB/s' };

/** Rounds of every system in turn; then one row per system from the medians. */
async function interleave(ctx: Ctx, scenario: string, systems: readonly Sys[], primary: ScenarioReport['primary']): Promise<Row[]> {
  const results = new Map<string, Measure[]>();
  const fromUs = monoUs();
  for (let r = 1; r <= ctx.o.rounds; r++) {
    for (const sys of systems) {
      const m = await measureOnce(ctx, sys, primary);
      results.set(sys.name, [...(results.get(sys.name) ?? []), m]);
      const v = m.value.toLocaleString('en-US', { maximumFractionDigits: primary === 'mbps' ? 1 : 0 });
      ctx.log(`[${scenario} ${r}/${ctx.o.rounds}] ${sys.name.padEnd(16)} ${v.padStart(9)} ${UNIT[primary]}  p50 ${Math.round(m.p50)} µs  p99 ${Math.round(m.p99)} µs${m.errors > 0 ? `  errors ${m.errors}` : ''}`);
    }
  }
  ctx.window = { fromUs, toUs: monoUs() };
  return systems.map((sys) => {
    const ms = results.get(sys.name) ?? [];
    const med = (f: (m: Measure) => number): number => median(ms.map(f));
    const byValue = [...ms].sort((a, b) => a.value - b.value);
    return {
      system: sys.name,
      kind: sys.kind,
      metrics: {
        ...sys.extra,
        [primary]: round(med((m) => m.value), primary === 'mbps' ? 1 : 0),
        p50us: Math.round(med((m) => m.p50)),
        p90us: Math.round(med((m) => m.p90)),
        p99us: Math.round(med((m) => m.p99)),
        p999us: Math.round(med((m) => m.p999)),
        errors: ms.reduce((a, m) => a + m.errors, 0),
        ...(sys.job.kind === 'open' ? { late: ms.reduce((a, m) => a + m.late, 0) } : {}),
      },
      runs: ms.map((m) => round(m.value, primary === 'mbps' ? 1 : 0)),
      latUs: byValue[Math.floor(byValue.length / 2)]?.latUs ?? [],
      cpuUs: sys.pids.map((_p, i) => Math.round(med((m) => m.cpuUs[i] as number))),
      rssMb: sys.pids.map(peakRssMb),
    };
  });
}

function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Starts processes, runs `body`, stops them all (and summarises a CPU profile taken meanwhile). */
async function withProcs<T>(ctx: Ctx, body: (procs: Proc[]) => Promise<T>): Promise<T> {
  const procs: Proc[] = [];
  try {
    return await body(procs);
  } finally {
    await Promise.all(procs.map((p) => p.stop()));
  }
}

/** The profile directory of one server sidecar when this scenario is the profiled one. */
function profDir(ctx: Ctx, scenario: Scenario, label: string): { cpuProfDir?: string } {
  if (ctx.cpuProf?.scenario !== scenario) return {};
  const dir = join(ctx.cpuProf.dir, label);
  mkdirSync(dir, { recursive: true });
  return { cpuProfDir: dir };
}

function summariseProfiles(ctx: Ctx, scenario: Scenario): void {
  if (ctx.cpuProf?.scenario !== scenario) return;
  const labels = readdirSync(ctx.cpuProf.dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => e.name);
  for (const label of labels) {
    const dir = join(ctx.cpuProf.dir, label);
    let profiles;
    try {
      profiles = readProfiles(dir);
    } catch {
      continue;
    }
    if (profiles.length === 0) {
      ctx.log(`bench: no .cpuprofile written in ${dir}`);
      continue;
    }
    // Only the measured part: not the sidecar's start-up (module loading, type stripping).
    ctx.profiles.push({ label: `${scenario} ${label}`, summary: summarize(profiles, 15, ctx.window ?? undefined), dir });
  }
}

interface MeshdPath {
  readonly port: number;
  readonly pids: number[];
  readonly metrics: string[];
}

async function meshdPath(ctx: Ctx, procs: Proc[], protocol: 'tcp' | 'http', workers: number, prof: { cpuProfDir?: string }): Promise<MeshdPath> {
  const server = await meshdServer(ctx.agent, protocol, workers, ctx.app.port, prof);
  procs.push(server.proc);
  const client = await meshdClient(ctx.agent, server.service, workers);
  procs.push(client.proc);
  await waitReady(client.port, `meshd ${protocol} path`);
  return { port: client.port, pids: [client.proc.pid, server.proc.pid], metrics: [`http://${client.metrics}/metrics`, `http://${server.metrics}/metrics`] };
}

async function haproxyPath(ctx: Ctx, procs: Proc[], mode: 'tcp' | 'http', threads: number): Promise<MeshdPath | null> {
  if (ctx.pem === null) return null;
  const server = await haproxyServer(ctx.dir, ctx.pem, mode, threads, ctx.app.port);
  procs.push(server.proc);
  const client = await haproxyClient(ctx.dir, ctx.pem, mode, threads, server.port);
  procs.push(client.proc);
  await waitReady(client.port, `haproxy ${mode} path`);
  return { port: client.port, pids: [client.proc.pid, server.proc.pid], metrics: [] };
}

function closedJob(ctx: Ctx): { job: Omit<LoadJob, 'port'>; warm: Omit<LoadJob, 'port'> } {
  return { job: { kind: 'closed', connections: ctx.o.connections, ms: ctx.o.seconds * 1000 }, warm: { kind: 'closed', connections: ctx.o.connections, ms: 400 } };
}

function report(name: Scenario, title: string, primary: ScenarioReport['primary'], cpuPer: string, defaultSystem: string, rows: Row[], notes: string[] = []): ScenarioReport {
  return { name, title, primary, unit: UNIT[primary], cpuPer, defaultSystem, rows, notes };
}

async function scenarioL4(ctx: Ctx): Promise<ScenarioReport> {
  const rows = await withProcs(ctx, async (procs) => {
    const meshd = await meshdPath(ctx, procs, 'tcp', 1, profDir(ctx, 'l4', 'server'));
    const hap = await haproxyPath(ctx, procs, 'tcp', 1);
    const j = closedJob(ctx);
    const systems: Sys[] = [{ name: 'direct', kind: 'direct', port: ctx.app.port, pids: [], ...j }, { name: 'meshd', kind: 'meshd', port: meshd.port, pids: meshd.pids, ...j }];
    if (hap !== null) systems.push({ name: 'haproxy', kind: 'haproxy', port: hap.port, pids: hap.pids, ...j });
    return interleave(ctx, 'l4', systems, 'rps');
  });
  summariseProfiles(ctx, 'l4');
  addComparisons(rows, 'rps', (r) => (r.kind === 'meshd' ? 'haproxy' : undefined));
  const m = rows.find((r) => r.system === 'meshd')?.metrics.rps;
  if (m !== undefined) ctx.maxRps.set('l4', m);
  return report('l4', `HTTP/1.1 keep-alive GET (2-byte answer) through two sidecars, Protocol tcp / HAProxy mode tcp, ${ctx.o.connections} connections, 1 thread per sidecar`, 'rps', 'req', 'meshd', rows);
}

async function scenarioL7(ctx: Ctx): Promise<ScenarioReport> {
  const rows = await withProcs(ctx, async (procs) => {
    const meshd = await meshdPath(ctx, procs, 'http', 1, profDir(ctx, 'l7', 'server'));
    const hap = await haproxyPath(ctx, procs, 'http', 1);
    const j = closedJob(ctx);
    const systems: Sys[] = [
      { name: 'direct', kind: 'direct', port: ctx.app.port, pids: [], ...j },
      { name: 'meshd', kind: 'meshd', port: meshd.port, pids: meshd.pids, ...j },
      // The same path while Prometheus-style scrapes hit both sidecars once a second.
      { name: 'meshd+scrape', kind: 'meshd', port: meshd.port, pids: meshd.pids, scrape: meshd.metrics, ...j },
    ];
    if (hap !== null) systems.push({ name: 'haproxy', kind: 'haproxy', port: hap.port, pids: hap.pids, ...j });
    return interleave(ctx, 'l7', systems, 'rps');
  });
  summariseProfiles(ctx, 'l7');
  addComparisons(rows, 'rps', (r) => (r.kind === 'meshd' ? 'haproxy' : undefined));
  const l7 = rows.find((r) => r.system === 'meshd');
  const scraped = rows.find((r) => r.system === 'meshd+scrape');
  const notes: string[] = [];
  if (l7 !== undefined && scraped !== undefined) {
    const [a, b] = [scraped.metrics.p99us as number, l7.metrics.p99us as number];
    notes.push(`scrape overhead (both sidecars' /metrics once a second): p99 ${a} vs ${b} µs (${(((a - b) / b) * 100).toFixed(1)} %), req/s ${((((scraped.metrics.rps as number) - (l7.metrics.rps as number)) / (l7.metrics.rps as number)) * 100).toFixed(1)} %`);
    ctx.maxRps.set('l7', l7.metrics.rps as number);
  }
  return report('l7', `the same with Protocol http (L7 intention with a PathPrefix permission, service-router, service-splitter, metrics on) / HAProxy mode http`, 'rps', 'req', 'meshd', rows, notes);
}

async function scenarioHandshake(ctx: Ctx): Promise<ScenarioReport> {
  const rows = await withProcs(ctx, async (procs) => {
    const server = await meshdServer(ctx.agent, 'tcp', 1, ctx.app.port, profDir(ctx, 'handshake', 'server'));
    procs.push(server.proc);
    const full = await meshdClient(ctx.agent, server.service, 1, { resumption: false });
    procs.push(full.proc);
    const resumed = await meshdClient(ctx.agent, server.service, 1, { resumption: true });
    procs.push(resumed.proc);
    await Promise.all([waitReady(full.port, 'meshd full'), waitReady(resumed.port, 'meshd resume')]);
    const job: Omit<LoadJob, 'port'> = { kind: 'connect', connections: ctx.o.connections, ms: ctx.o.seconds * 1000 };
    const warm: Omit<LoadJob, 'port'> = { kind: 'connect', connections: ctx.o.connections, ms: 400 };
    const systems: Sys[] = [
      { name: 'direct', kind: 'direct', port: ctx.app.port, pids: [], job, warm },
      { name: 'meshd', kind: 'meshd', port: full.port, pids: [full.proc.pid, server.proc.pid], job, warm },
      { name: 'meshd-resume', kind: 'meshd', port: resumed.port, pids: [resumed.proc.pid, server.proc.pid], job, warm },
    ];
    if (ctx.pem !== null) {
      const hs = await haproxyServer(ctx.dir, ctx.pem, 'tcp', 1, ctx.app.port);
      procs.push(hs.proc);
      const hFull = await haproxyClient(ctx.dir, ctx.pem, 'tcp', 1, hs.port, false);
      procs.push(hFull.proc);
      const hRes = await haproxyClient(ctx.dir, ctx.pem, 'tcp', 1, hs.port, true);
      procs.push(hRes.proc);
      await Promise.all([waitReady(hFull.port, 'haproxy full'), waitReady(hRes.port, 'haproxy resume')]);
      systems.push({ name: 'haproxy', kind: 'haproxy', port: hFull.port, pids: [hFull.proc.pid, hs.proc.pid], job, warm });
      systems.push({ name: 'haproxy-resume', kind: 'haproxy', port: hRes.port, pids: [hRes.proc.pid, hs.proc.pid], job, warm });
    }
    return interleave(ctx, 'handshake', systems, 'hps');
  });
  summariseProfiles(ctx, 'handshake');
  addComparisons(rows, 'hps', (r) => (r.kind !== 'meshd' ? undefined : r.system === 'meshd' ? 'haproxy' : 'haproxy-resume'));
  for (const [resumed, full] of [
    ['meshd-resume', 'meshd'],
    ['haproxy-resume', 'haproxy'],
  ] as const) {
    const a = rows.find((r) => r.system === resumed);
    const b = rows.find((r) => r.system === full)?.metrics.hps;
    if (a !== undefined && b !== undefined && b > 0) a.metrics.resume_gain = (a.metrics.hps as number) / b;
  }
  return report(
    'handshake',
    `a new connection per request (Connection: close), ${ctx.o.connections} loops; through the sidecars (tcp) each one an mTLS handshake between them: full (meshd -tls-session-resumption=false, HAProxy no-ssl-reuse) or resumed (both defaults); direct is a plain TCP connection per request`,
    'hps',
    'handshake',
    'meshd',
    rows,
  );
}

async function scenarioBulk(ctx: Ctx): Promise<ScenarioReport> {
  const rows = await withProcs(ctx, async (procs) => {
    const l4 = await meshdPath(ctx, procs, 'tcp', 1, profDir(ctx, 'bulk', 'server-l4'));
    const l7 = await meshdPath(ctx, procs, 'http', 1, profDir(ctx, 'bulk', 'server-l7'));
    const htcp = await haproxyPath(ctx, procs, 'tcp', 1);
    const hhttp = await haproxyPath(ctx, procs, 'http', 1);
    const job: Omit<LoadJob, 'port'> = { kind: 'bulk', connections: ctx.o.bulkConnections, ms: ctx.o.seconds * 1000, path: '/api/bulk' };
    const warm: Omit<LoadJob, 'port'> = { ...job, ms: 500 };
    const systems: Sys[] = [
      { name: 'direct', kind: 'direct', port: ctx.app.port, pids: [], job, warm },
      { name: 'meshd-l4', kind: 'meshd', port: l4.port, pids: l4.pids, job, warm },
    ];
    if (htcp !== null) systems.push({ name: 'haproxy-tcp', kind: 'haproxy', port: htcp.port, pids: htcp.pids, job, warm });
    systems.push({ name: 'meshd-l7', kind: 'meshd', port: l7.port, pids: l7.pids, job, warm });
    if (hhttp !== null) systems.push({ name: 'haproxy-http', kind: 'haproxy', port: hhttp.port, pids: hhttp.pids, job, warm });
    return interleave(ctx, 'bulk', systems, 'mbps');
  });
  summariseProfiles(ctx, 'bulk');
  addComparisons(rows, 'mbps', (r) => (r.system === 'meshd-l4' ? 'haproxy-tcp' : r.system === 'meshd-l7' ? 'haproxy-http' : undefined));
  const mib = ctx.o.bulkBytes / 2 ** 20;
  return report('bulk', `a ${mib} MiB answer downloaded again and again over ${ctx.o.bulkConnections} keep-alive connection(s); MB = 10^6 bytes of body; latency columns are the time of one whole download`, 'mbps', 'MB', 'meshd-l4', rows);
}

async function scenarioLatency(ctx: Ctx): Promise<ScenarioReport> {
  const path = ctx.o.latencyPath;
  const notes: string[] = [];
  const rows = await withProcs(ctx, async (procs) => {
    const meshd = await meshdPath(ctx, procs, path === 'l7' ? 'http' : 'tcp', 1, profDir(ctx, 'latency', 'server'));
    const hap = await haproxyPath(ctx, procs, path === 'l7' ? 'http' : 'tcp', 1);
    let max = ctx.maxRps.get(path);
    const relative = ctx.o.latencyRates.some((r) => r.endsWith('%'));
    if (!relative) {
      max = 0;
    } else if (max === undefined) {
      // The path's scenario did not run: one closed-loop measurement of meshd gives the maximum.
      const m = await measureOnce(ctx, { name: 'meshd', kind: 'meshd', port: meshd.port, pids: [], ...closedJob(ctx) }, 'rps');
      max = Math.round(m.value);
      notes.push(`maximum: meshd ${path} ${max} req/s, from one closed-loop measurement here (the ${path} scenario did not run)`);
    } else {
      notes.push(`maximum: meshd ${path} ${max} req/s, the median of the ${path} scenario`);
    }
    const rates = ctx.o.latencyRates.map((spec) => {
      const pct = /^(\d+(?:\.\d+)?)%$/.exec(spec);
      return pct === null ? { label: spec, rate: intFlag(spec, 'latency-rates', 1) } : { label: `${pct[1] as string}pct`, rate: Math.max(1, Math.round((Number(pct[1]) / 100) * (max))) };
    });
    const systems: Sys[] = [];
    for (const { label, rate } of rates) {
      const job: Omit<LoadJob, 'port'> = { kind: 'open', connections: ctx.o.connections, ms: ctx.o.seconds * 1000, rate };
      const warm: Omit<LoadJob, 'port'> = { ...job, ms: 500 };
      const extra = { target_rps: rate };
      systems.push({ name: `direct@${label}`, kind: 'direct', port: ctx.app.port, pids: [], job, warm, extra });
      systems.push({ name: `meshd@${label}`, kind: 'meshd', port: meshd.port, pids: meshd.pids, job, warm, extra });
      if (hap !== null) systems.push({ name: `haproxy@${label}`, kind: 'haproxy', port: hap.port, pids: hap.pids, job, warm, extra });
    }
    return interleave(ctx, 'latency', systems, 'rps');
  });
  summariseProfiles(ctx, 'latency');
  const at = (r: Row): string => r.system.slice(r.system.indexOf('@'));
  addComparisons(rows, 'rps', () => undefined, (r) => `direct${at(r)}`);
  // meshd's p99 over HAProxy's at the same rate: <= 1 is "added p99 <= HAProxy's" (same direct baseline).
  for (const r of rows) {
    if (r.kind !== 'meshd') continue;
    const h = rows.find((x) => x.system === `haproxy${at(r)}`)?.metrics;
    for (const q of ['p99us', 'p999us'] as const) {
      const mine = r.metrics[q];
      const theirs = h?.[q];
      if (mine !== undefined && theirs !== undefined && theirs > 0) r.metrics[`${q.slice(0, -2)}_ratio_haproxy`] = mine / theirs;
    }
  }
  notes.push('latency is measured from each request\'s intended send time when its connection was still busy with the previous one (coordinated-omission correction, as wrk2), else from its send; "late" counts the corrected requests');
  return report('latency', `open loop at fixed rates over ${ctx.o.connections} keep-alive connections, ${path} path (${path === 'l7' ? 'Protocol http / HAProxy mode http' : 'Protocol tcp / HAProxy mode tcp'})`, 'rps', 'req', `meshd@${ctx.o.latencyRates[0] ?? '1000'}`, rows, notes);
}

async function scenarioScaling(ctx: Ctx): Promise<ScenarioReport> {
  const n = ctx.o.maxWorkers;
  const rows = await withProcs(ctx, async (procs) => {
    const j = closedJob(ctx);
    const systems: Sys[] = [{ name: 'direct', kind: 'direct', port: ctx.app.port, pids: [], ...j }];
    for (let w = 1; w <= n; w++) {
      const meshd = await meshdPath(ctx, procs, 'tcp', w, profDir(ctx, 'scaling', `server-w${w}`));
      systems.push({ name: `meshd-w${w}`, kind: 'meshd', port: meshd.port, pids: meshd.pids, ...j });
      const hap = await haproxyPath(ctx, procs, 'tcp', w);
      if (hap !== null) systems.push({ name: `haproxy-t${w}`, kind: 'haproxy', port: hap.port, pids: hap.pids, ...j });
      if (ctx.o.scalingL7) {
        const m7 = await meshdPath(ctx, procs, 'http', w, profDir(ctx, 'scaling', `server-l7-w${w}`));
        systems.push({ name: `meshd-l7-w${w}`, kind: 'meshd', port: m7.port, pids: m7.pids, ...j });
        const h7 = await haproxyPath(ctx, procs, 'http', w);
        if (h7 !== null) systems.push({ name: `haproxy-http-t${w}`, kind: 'haproxy', port: h7.port, pids: h7.pids, ...j });
      }
    }
    return interleave(ctx, 'scaling', systems, 'rps');
  });
  summariseProfiles(ctx, 'scaling');
  addComparisons(rows, 'rps', (r) => (r.kind === 'meshd' ? r.system.replace(/^meshd-l7-w/, 'haproxy-http-t').replace(/^meshd-w/, 'haproxy-t') : undefined));
  for (const r of rows) {
    if (r.kind === 'direct') continue;
    const one = rows.find((x) => x.system === r.system.replace(/\d+$/, '1'))?.metrics.rps;
    if (one !== undefined && one > 0) r.metrics.scale = (r.metrics.rps as number) / one;
  }
  return report('scaling', `l4${ctx.o.scalingL7 ? ' and l7' : ''} keep-alive, ${ctx.o.connections} connections: meshd -workers 1..${n} per sidecar (meshd-wN) against HAProxy nbthread 1..${n} (haproxy-tN)`, 'rps', 'req', `meshd-w${n}`, rows);
}

const RUN: Readonly<Record<Scenario, (ctx: Ctx) => Promise<ScenarioReport>>> = {
  l4: scenarioL4,
  l7: scenarioL7,
  handshake: scenarioHandshake,
  bulk: scenarioBulk,
  latency: scenarioLatency,
  scaling: scenarioScaling,
};

function helpText(command: string): string {
  const lines = [
    `Usage: ${command} [-scenario l4,l7,handshake,bulk,latency,scaling] [options]`,
    '',
    'meshd (two sidecars, mTLS between them) against a direct connection and against HAProxy as the same two',
    'sidecars, in one run, interleaved rounds, medians. Flags take one dash or two (-duration 2, --duration=2).',
    '',
  ];
  for (const [name, spec] of Object.entries(FLAGS)) {
    lines.push(spec.kind === 'bool' ? `  -${name}` : `  -${name} ${spec.placeholder ?? 'N'}`);
    lines.push(`      ${spec.help}${spec.default === undefined ? '' : ` (default: ${spec.default})`}${spec.kind === 'list' ? ' (repeatable)' : ''}`);
  }
  lines.push(
    '',
    'Threshold names: SCENARIO.SYSTEM.METRIC, e.g. l4.meshd.ratio_haproxy, handshake.meshd-resume.hps,',
    'latency.meshd@1000.added_p99us, latency.meshd@60pct.p999us, bulk.meshd-l7.mbps, scaling.meshd-w2.scale.',
    'SCENARIO.METRIC is the scenario\'s meshd row (l4/l7/handshake: meshd; bulk: meshd-l4; latency: meshd@<first rate>;',
    'scaling: meshd-w<max>). Systems: direct, meshd, haproxy; l7 adds meshd+scrape; handshake meshd-resume and',
    'haproxy-resume; bulk meshd-l4, meshd-l7, haproxy-tcp, haproxy-http; latency NAME@RATE (RATE as given, N% as Npct);',
    'scaling meshd-wN, haproxy-tN (meshd-l7-wN, haproxy-http-tN with -scaling-l7).',
    'Exit status: 1 when a threshold is breached (or names a figure this run did not produce) or a row had errors.',
  );
  return lines.join('\n') + '\n';
}

/** Runs the suite; returns the exit status. `defaults.scenario` is the scenario list when -scenario is not given. */
export async function runSuite(argv: readonly string[], defaults: { command: string; scenario?: string } = { command: 'npm run bench --' }): Promise<number> {
  const log = (s: string): void => {
    process.stderr.write(`${s}\n`);
  };
  let f;
  try {
    f = parseFlags(normaliseArgv(argv), defaults.scenario === undefined ? FLAGS : { ...FLAGS, scenario: { ...FLAGS.scenario, default: defaults.scenario } as (typeof FLAGS)[string] });
  } catch (e) {
    if (e instanceof UsageError) {
      log(`bench: ${e.message}\n\n${helpText(defaults.command)}`);
      return 2;
    }
    throw e;
  }
  if (f.bools.get('help') === true) {
    process.stdout.write(helpText(defaults.command));
    return 0;
  }
  const rawScenarios = (f.strings.get('scenario') ?? 'all').split(',').map((s) => s.trim()).filter((s) => s !== '');
  const scenarios = rawScenarios.includes('all') ? [...SCENARIOS] : rawScenarios;
  for (const s of scenarios) if (!(SCENARIOS as readonly string[]).includes(s)) return (log(`bench: unknown scenario ${JSON.stringify(s)} (${SCENARIOS.join(', ')})`), 2);
  const latencyPath = f.strings.get('latency-path') ?? 'l7';
  if (latencyPath !== 'l4' && latencyPath !== 'l7') return (log('bench: -latency-path must be l4 or l7'), 2);
  const cpuProfScenario = f.strings.get('cpu-prof');
  if (cpuProfScenario !== undefined && !scenarios.includes(cpuProfScenario)) return (log(`bench: -cpu-prof ${cpuProfScenario}: not one of the scenarios run (${scenarios.join(', ')})`), 2);
  let o: Options;
  try {
    o = {
      scenarios: SCENARIOS.filter((s) => scenarios.includes(s)),
      connections: intFlag(f.strings.get('connections'), 'connections', 1),
      seconds: intFlag(f.strings.get('duration'), 'duration', 0.1),
      rounds: intFlag(f.strings.get('rounds'), 'rounds', 1),
      bulkBytes: Math.round(intFlag(f.strings.get('bulk-mb'), 'bulk-mb', 0.001) * 2 ** 20),
      bulkConnections: intFlag(f.strings.get('bulk-connections'), 'bulk-connections', 1),
      latencyRates: (f.strings.get('latency-rates') ?? '1000,60%').split(',').map((s) => s.trim()),
      latencyPath,
      maxWorkers: f.strings.has('max-workers') ? intFlag(f.strings.get('max-workers'), 'max-workers', 1) : availableParallelism(),
      scalingL7: f.bools.get('scaling-l7') === true,
    };
  } catch (e) {
    if (e instanceof UsageError) return (log(`bench: ${e.message}`), 2);
    throw e;
  }

  const dir = mkdtempSync(join(tmpdir(), 'meshd-bench-'));
  const started = new Date();
  const load0 = loadavg()[0] ?? 0;
  const appChoice = f.strings.get('app') ?? 'auto';
  const useNginx = appChoice === 'nginx' || (appChoice === 'auto' && nginxInstalled());
  let app: App | null = null;
  let agent: { http: string; proc: Proc } | null = null;
  try {
    app = useNginx ? await startNginxApp(dir, o.bulkBytes) : await startNodeApp(o.bulkBytes);
    const wantHaproxy = f.bools.get('haproxy') !== false;
    const haproxyReason = wantHaproxy ? ensureHaproxy() : 'skipped (-haproxy=false)';
    if (haproxyReason !== null) log(`bench: ${haproxyReason}; HAProxy rows skipped`);
    const pem = haproxyReason === null ? await haproxyCerts(dir) : null;
    agent = await startAgent(dir);
    // A new directory per run (inside -cpu-prof-dir when given), so old profiles never mix in.
    let cpuProfDir: string | null = null;
    if (cpuProfScenario !== undefined) {
      const parent = f.strings.get('cpu-prof-dir') ?? tmpdir();
      mkdirSync(parent, { recursive: true });
      cpuProfDir = mkdtempSync(join(parent, 'meshd-cpuprof-'));
    }
    const ctx: Ctx = {
      o,
      dir,
      agent: agent.http,
      app,
      pem,
      log,
      cpuProf: cpuProfDir === null ? null : { scenario: cpuProfScenario as Scenario, dir: cpuProfDir },
      maxRps: new Map(),
      profiles: [],
      window: null,
    };
    const hv = haproxyReason === null ? haproxyVersion() : `none: ${haproxyReason}`;
    log(`bench: scenarios ${o.scenarios.join(', ')}; ${o.rounds} rounds x ${o.seconds} s; app ${app.kind}; ${hv}; load average ${load0.toFixed(2)}`);
    const results: ScenarioReport[] = [];
    for (const s of o.scenarios) {
      const t = performance.now();
      results.push(await RUN[s](ctx));
      log(`bench: ${s} done in ${((performance.now() - t) / 1000).toFixed(0)} s`);
    }

    const metrics = flatMetrics(results);
    const thresholds: ThresholdResult[] = (f.lists.get('threshold') ?? []).map((t) => checkThreshold(t, results, metrics));
    const errorRows = results.flatMap((s) => s.rows.filter((r) => (r.metrics.errors ?? 0) > 0).map((r) => `${s.name}.${r.system}`));
    const header = [
      `meshd bench, ${started.toISOString()}, node ${process.version}, ${cpus().length} CPU(s) (${cpus()[0]?.model ?? '?'}), load average at start ${load0.toFixed(2)}`,
      `load generator: ${GENERATOR}`,
      `app: ${app.kind}; haproxy: ${hv}; ${o.rounds} interleaved rounds x ${o.seconds} s per system (median), warm-up before each`,
    ];
    const jsonReport = {
      date: started.toISOString(),
      node: process.version,
      cpus: cpus().length,
      loadAverageAtStart: load0,
      generator: GENERATOR,
      app: app.kind,
      haproxy: hv,
      settings: o,
      scenarios: results.map((s) => ({ ...s, rows: s.rows.map((r) => ({ system: r.system, kind: r.kind, metrics: r.metrics, runs: r.runs, cpuUsPerUnit: r.cpuUs, peakRssMb: r.rssMb })) })),
      metrics: Object.fromEntries(metrics),
      thresholds,
      cpuProfiles: ctx.profiles,
      errorRows,
    };
    const jsonFile = f.strings.get('json-file');
    if (jsonFile !== undefined) {
      writeFileSync(jsonFile, JSON.stringify(jsonReport, null, 2) + '\n');
      const panels: PlotPanel[] = results
        .filter((s) => s.name !== 'bulk')
        .map((s) => ({ title: `${s.name} (${s.unit === 'MB/s' ? 'download' : 'request'} latency)`, series: s.rows.map((r) => ({ name: r.system, latUs: r.latUs })) }));
      writeFileSync(`${jsonFile}.svg`, percentileSvg(panels));
      log(`bench: wrote ${jsonFile} and ${jsonFile}.svg`);
    }
    const out: string[] = [...header, ''];
    for (const s of results) out.push(formatScenario(s), '');
    for (const p of ctx.profiles) out.push(formatSummary(p.summary, `CPU profile, ${p.label} sidecar (${p.dir})`), '');
    if (thresholds.length > 0) {
      out.push('thresholds:');
      for (const t of thresholds) out.push(`  ${t.ok ? '✓' : '✗'} ${t.message}`);
      out.push('');
    }
    if (errorRows.length > 0) out.push(`errors in: ${errorRows.join(', ')}`, '');
    if (f.bools.get('json') === true) process.stdout.write(JSON.stringify(jsonReport) + '\n');
    else process.stdout.write(out.join('\n'));
    const failed = thresholds.filter((t) => !t.ok);
    for (const t of failed) log(`bench: threshold breached: ${t.message}`);
    return failed.length > 0 || errorRows.length > 0 ? 1 : 0;
  } finally {
    await agent?.proc.stop();
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
