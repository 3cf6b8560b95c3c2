// The pure half of `npm run bench:gateway` (../gateway.ts): from the per-round measurements of
// each path to the figures of one phase (medians, ratios against direct, the hop's CPU per
// connection / request / KiB), the gateway-vs-HAProxy CPU summary with its verdict, and the
// text tables. No I/O here, so it is unit-tested on its own.

import { median } from './load.ts';
import { table, type Column } from './report.ts';

export const PATHS = ['direct', 'gateway', 'haproxy'] as const;
export type PathName = (typeof PATHS)[number];

export const PHASES = ['connect', 'keepalive', 'bulk'] as const;
export type Phase = (typeof PHASES)[number];

/** One measurement of one path in one round of a phase. */
export interface Sample {
  /** Complete answers: connections (connect), requests (keepalive), downloads (bulk). */
  readonly answers: number;
  /** Body bytes received within the window. */
  readonly bytes: number;
  readonly seconds: number;
  /** Sorted latency quantiles of the round, µs. */
  readonly p50Us: number;
  readonly p99Us: number;
  readonly errors: number;
  /** CPU time of the hop process over the window (gateway or HAProxy), ms; null for direct. */
  readonly hopCpuMs: number | null;
  /** CPU time of api's sidecar over the window, ms (the same work on every path). */
  readonly sidecarCpuMs: number;
}

export interface PhaseRow {
  readonly path: PathName;
  /** conn/s (connect), req/s (keepalive) or MB/s (bulk; MB = 10^6 bytes of body). */
  readonly rate: number;
  readonly p50Us: number;
  readonly p99Us: number;
  readonly errors: number;
  /** rate / direct's rate (1 for direct). */
  readonly ratioDirect: number | null;
  readonly addedP50Us: number | null;
  readonly addedP99Us: number | null;
  /** The hop's CPU per connection (connect) or per request (keepalive), µs; null for direct and bulk. */
  readonly hopUsPerAnswer: number | null;
  /** The hop's CPU per KiB of body (bulk), ns; null for direct and the other phases. */
  readonly hopNsPerKiB: number | null;
  /** api's sidecar CPU per answer (µs) or per KiB (ns, bulk), for scale. */
  readonly sidecarPerUnit: number;
  /** The primary rate of each round, in round order. */
  readonly runs: readonly number[];
}

export interface PhaseReport {
  readonly phase: Phase;
  readonly title: string;
  readonly unit: string;
  readonly rows: readonly PhaseRow[];
}

export const UNIT: Readonly<Record<Phase, string>> = { connect: 'conn/s', keepalive: 'req/s', bulk: 'MB/s' };

/** The figure of one sample a phase ranks by. */
export function rateOf(phase: Phase, s: Sample): number {
  if (s.seconds <= 0) return 0;
  return phase === 'bulk' ? s.bytes / 1e6 / s.seconds : s.answers / s.seconds;
}

/** µs of CPU per answer, or ns per KiB in the bulk phase; NaN when nothing was carried. */
export function cpuPerUnit(phase: Phase, cpuMs: number, s: Sample): number {
  if (phase === 'bulk') return s.bytes > 0 ? (cpuMs * 1e6) / (s.bytes / 1024) : NaN;
  return s.answers > 0 ? (cpuMs * 1000) / s.answers : NaN;
}

/** Medians of each path's rounds, then the comparisons against direct. */
export function phaseRows(phase: Phase, samples: ReadonlyMap<PathName, readonly Sample[]>): PhaseRow[] {
  const base = new Map<PathName, Omit<PhaseRow, 'ratioDirect' | 'addedP50Us' | 'addedP99Us'>>();
  for (const path of PATHS) {
    const ss = samples.get(path);
    if (ss === undefined || ss.length === 0) continue;
    const hop = path === 'direct' ? null : median(ss.map((s) => cpuPerUnit(phase, s.hopCpuMs ?? NaN, s)).filter(Number.isFinite));
    base.set(path, {
      path,
      rate: median(ss.map((s) => rateOf(phase, s))),
      p50Us: median(ss.map((s) => s.p50Us)),
      p99Us: median(ss.map((s) => s.p99Us)),
      errors: ss.reduce((a, s) => a + s.errors, 0),
      hopUsPerAnswer: phase === 'bulk' ? null : hop,
      hopNsPerKiB: phase === 'bulk' ? hop : null,
      sidecarPerUnit: median(ss.map((s) => cpuPerUnit(phase, s.sidecarCpuMs, s)).filter(Number.isFinite)),
      runs: ss.map((s) => rateOf(phase, s)),
    });
  }
  const direct = base.get('direct');
  return [...base.values()].map((r) => ({
    ...r,
    ratioDirect: direct === undefined || direct.rate <= 0 ? null : r.rate / direct.rate,
    addedP50Us: direct === undefined ? null : r.p50Us - direct.p50Us,
    addedP99Us: direct === undefined ? null : r.p99Us - direct.p99Us,
  }));
}

export interface HopFigure {
  readonly figure: 'us_per_connection' | 'us_per_request' | 'ns_per_kib';
  readonly gateway: number | null;
  readonly haproxy: number | null;
  /** gateway / haproxy: below 1, the gateway's hop costs less. */
  readonly ratio: number | null;
}

export interface HopSummary {
  readonly figures: readonly HopFigure[];
  /** The issue's target: less CPU per connection and per byte than HAProxy's. null: not measured. */
  readonly meetsTarget: boolean | null;
  readonly verdict: string;
}

const FIGURE_OF: Readonly<Record<Phase, HopFigure['figure']>> = { connect: 'us_per_connection', keepalive: 'us_per_request', bulk: 'ns_per_kib' };

export function hopSummary(phases: readonly PhaseReport[]): HopSummary {
  const figures: HopFigure[] = phases.map((p) => {
    const v = (path: PathName): number | null => {
      const r = p.rows.find((x) => x.path === path);
      return (p.phase === 'bulk' ? r?.hopNsPerKiB : r?.hopUsPerAnswer) ?? null;
    };
    const g = v('gateway');
    const h = v('haproxy');
    return { figure: FIGURE_OF[p.phase], gateway: g, haproxy: h, ratio: g !== null && h !== null && h > 0 ? g / h : null };
  });
  const conn = figures.find((f) => f.figure === 'us_per_connection')?.ratio ?? null;
  const kib = figures.find((f) => f.figure === 'ns_per_kib')?.ratio ?? null;
  if (conn === null || kib === null) {
    return { figures, meetsTarget: null, verdict: 'target not checked: the connect and bulk phases did not both measure the gateway and HAProxy' };
  }
  const word = (r: number): string => (r < 1 ? `${fmt((1 - r) * 100)} % less` : `${fmt((r - 1) * 100)} % more`);
  const meets = conn < 1 && kib < 1;
  return {
    figures,
    meetsTarget: meets,
    verdict: `${meets ? 'target met' : 'target NOT met'}: the gateway hop costs ${word(conn)} CPU per connection and ${word(kib)} per KiB than HAProxy's`,
  };
}

export function fmt(n: number | null | undefined, digits = 0): string {
  return n === null || n === undefined || !Number.isFinite(n) ? '-' : n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

export function formatPhase(p: PhaseReport): string {
  const bulk = p.phase === 'bulk';
  const per = p.phase === 'connect' ? 'µs/conn' : p.phase === 'keepalive' ? 'µs/req' : 'ns/KiB';
  const cols: Column<PhaseRow>[] = [
    { head: 'path', cell: (r) => r.path, left: true },
    { head: p.unit, cell: (r) => fmt(r.rate, bulk ? 1 : 0) },
    { head: 'x direct', cell: (r) => fmt(r.ratioDirect, 3) },
    { head: bulk ? 'p50 ms/download' : 'p50 µs', cell: (r) => (bulk ? fmt(r.p50Us / 1000, 1) : fmt(r.p50Us)) },
    { head: bulk ? 'p99 ms/download' : 'p99 µs', cell: (r) => (bulk ? fmt(r.p99Us / 1000, 1) : fmt(r.p99Us)) },
    { head: bulk ? 'added p50/p99 ms' : 'added p50/p99 µs', cell: (r) => (r.path === 'direct' ? '-' : bulk ? `${fmt((r.addedP50Us ?? NaN) / 1000, 1)} / ${fmt((r.addedP99Us ?? NaN) / 1000, 1)}` : `${fmt(r.addedP50Us)} / ${fmt(r.addedP99Us)}`) },
    { head: `hop CPU ${per}`, cell: (r) => fmt(bulk ? r.hopNsPerKiB : r.hopUsPerAnswer, bulk ? 0 : 1) },
    { head: `api sidecar CPU ${per}`, cell: (r) => fmt(r.sidecarPerUnit, bulk ? 0 : 1) },
    { head: 'errors', cell: (r) => fmt(r.errors) },
  ];
  return [
    `█ ${p.phase}: ${p.title}`,
    '',
    ...table(cols, p.rows).map((l) => `  ${l}`),
    '',
    `  rounds (${p.unit}): ${p.rows.map((r) => `${r.path} ${r.runs.map((x) => fmt(x, bulk ? 1 : 0)).join('/')}`).join('; ')}`,
  ].join('\n');
}

const FIGURE_TEXT: Readonly<Record<HopFigure['figure'], string>> = {
  us_per_connection: 'µs CPU per new connection',
  us_per_request: 'µs CPU per keep-alive request',
  ns_per_kib: 'ns CPU per KiB (bulk)',
};

export function formatHopSummary(h: HopSummary): string {
  const cols: Column<HopFigure>[] = [
    { head: 'the hop itself', cell: (f) => FIGURE_TEXT[f.figure], left: true },
    { head: 'meshd gateway', cell: (f) => fmt(f.gateway, f.figure === 'ns_per_kib' ? 0 : 1) },
    { head: 'HAProxy', cell: (f) => fmt(f.haproxy, f.figure === 'ns_per_kib' ? 0 : 1) },
    { head: 'gateway / HAProxy', cell: (f) => fmt(f.ratio, 2) },
  ];
  return ['█ hop CPU: meshd mesh gateway vs HAProxy (mode tcp, SNI routing)', '', ...table(cols, h.figures).map((l) => `  ${l}`), '', `  ${h.verdict}`].join('\n');
}
