// What `npm run bench` prints and writes: one k6-style table per scenario, the flat metric
// names thresholds refer to, threshold checks, and the latency-percentile plot (SVG).

import { quantile } from './load.ts';

export interface Row {
  /** Row name inside its scenario: direct, meshd, haproxy, meshd-resume, meshd@1000, ... */
  readonly system: string;
  readonly kind: 'direct' | 'meshd' | 'haproxy';
  /** Every figure of the row by metric name (the names thresholds use). */
  readonly metrics: Record<string, number>;
  /** The primary figure of each round, in round order. */
  readonly runs: readonly number[];
  /** Latency samples (µs, sorted) of the median round, for the plot. */
  readonly latUs: readonly number[];
  /** Per sidecar, [client, server] (empty for direct). */
  readonly cpuUs: readonly number[];
  readonly rssMb: readonly number[];
}

export interface ScenarioReport {
  readonly name: string;
  readonly title: string;
  /** Metric name of the primary figure: rps, hps or mbps. */
  readonly primary: 'rps' | 'hps' | 'mbps';
  /** Unit of the primary figure, for the table head. */
  readonly unit: string;
  /** What CPU µs are counted per (request, handshake, MB). */
  readonly cpuPer: string;
  /** Row a two-part threshold (`l4.ratio_haproxy`) refers to. */
  readonly defaultSystem: string;
  readonly rows: readonly Row[];
  readonly notes: readonly string[];
}

const fmt = (n: number | undefined, digits = 0): string => (n === undefined || !Number.isFinite(n) ? '-' : n.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }));

export interface Column<R = Row> {
  readonly head: string;
  readonly cell: (r: R) => string;
  readonly left?: boolean;
}

export function table<R = Row>(cols: readonly Column<R>[], rows: readonly R[]): string[] {
  const cells = rows.map((r) => cols.map((c) => c.cell(r)));
  const widths = cols.map((c, i) => Math.max(c.head.length, ...cells.map((row) => (row[i] as string).length)));
  const line = (vals: readonly string[]): string => vals.map((v, i) => (cols[i]?.left === true ? v.padEnd(widths[i] as number) : v.padStart(widths[i] as number))).join('  ');
  return [line(cols.map((c) => c.head)), line(widths.map((w) => '─'.repeat(w))), ...cells.map(line)];
}

export function formatScenario(s: ScenarioReport): string {
  const m = (r: Row, k: string, d = 0): string => fmt(r.metrics[k], d);
  const pair = (xs: readonly number[], sep: string): string => (xs.length === 0 ? '-' : xs.map((x) => fmt(x)).join(sep));
  const latency = s.name === 'latency';
  const cols: Column[] = [{ head: 'system', cell: (r) => r.system, left: true }];
  if (latency) {
    cols.push({ head: 'target req/s', cell: (r) => m(r, 'target_rps') }, { head: 'achieved', cell: (r) => m(r, 'rps') });
    cols.push({ head: 'p50 µs', cell: (r) => m(r, 'p50us') }, { head: 'p90 µs', cell: (r) => m(r, 'p90us') }, { head: 'p99 µs', cell: (r) => m(r, 'p99us') }, { head: 'p99.9 µs', cell: (r) => m(r, 'p999us') });
    cols.push({ head: 'added p50/p99 µs', cell: (r) => (r.kind === 'direct' ? '-' : `${m(r, 'added_p50us')} / ${m(r, 'added_p99us')}`) }, { head: 'p99 x haproxy', cell: (r) => m(r, 'p99_ratio_haproxy', 2) }, { head: 'late', cell: (r) => m(r, 'late') });
  } else {
    cols.push({ head: s.unit, cell: (r) => m(r, s.primary) });
    cols.push({ head: 'x direct', cell: (r) => m(r, 'ratio_direct', 3) }, { head: 'x haproxy', cell: (r) => m(r, 'ratio_haproxy', 2) });
    if (s.name === 'scaling') cols.push({ head: 'x 1 thread', cell: (r) => m(r, 'scale', 2) });
    if (s.name === 'handshake') cols.push({ head: 'x full', cell: (r) => m(r, 'resume_gain', 2) });
    cols.push({ head: 'p50 µs', cell: (r) => m(r, 'p50us') }, { head: 'p99 µs', cell: (r) => m(r, 'p99us') }, { head: 'p99.9 µs', cell: (r) => m(r, 'p999us') });
    cols.push({ head: 'added p50/p99 µs', cell: (r) => (r.kind === 'direct' ? '-' : `${m(r, 'added_p50us')} / ${m(r, 'added_p99us')}`) });
  }
  cols.push({ head: `CPU µs/${s.cpuPer} client+server`, cell: (r) => pair(r.cpuUs, ' + ') });
  cols.push({ head: 'peak RSS MB client/server', cell: (r) => pair(r.rssMb, ' / ') });
  cols.push({ head: 'errors', cell: (r) => m(r, 'errors') });
  const out = [`█ ${s.name}: ${s.title}`, '', ...table(cols, s.rows).map((l) => `  ${l}`), ''];
  out.push(`  rounds (${s.unit}): ${s.rows.map((r) => `${r.system} ${r.runs.map((x) => fmt(x)).join('/')}`).join('; ')}`);
  for (const n of s.notes) out.push(`  ${n}`);
  return out.join('\n');
}

/** Fills ratio_direct, ratio_haproxy (against `peerOf(row)`) and added latencies from the scenario's direct row. */
export function addComparisons(rows: readonly Row[], primary: string, peerOf: (r: Row) => string | undefined, directOf: (r: Row) => string | undefined = () => 'direct'): void {
  const byName = new Map(rows.map((r) => [r.system, r]));
  for (const r of rows) {
    const v = r.metrics[primary];
    if (v === undefined) continue;
    const d = byName.get(directOf(r) ?? '');
    if (d !== undefined && d !== r) {
      const dv = d.metrics[primary];
      if (dv !== undefined && dv > 0) r.metrics.ratio_direct = v / dv;
      for (const q of ['p50us', 'p99us', 'p999us']) {
        const a = r.metrics[q];
        const b = d.metrics[q];
        if (a !== undefined && b !== undefined) r.metrics[`added_${q}`] = a - b;
      }
    }
    if (d === r) r.metrics.ratio_direct = 1;
    const peer = byName.get(peerOf(r) ?? '');
    const pv = peer?.metrics[primary];
    if (peer !== undefined && peer !== r && pv !== undefined && pv > 0) r.metrics.ratio_haproxy = v / pv;
    if (r.kind === 'meshd' || r.kind === 'haproxy') {
      r.metrics.cpu_client_us = r.cpuUs[0] ?? NaN;
      r.metrics.cpu_server_us = r.cpuUs[1] ?? NaN;
      r.metrics.rss_client_mb = r.rssMb[0] ?? NaN;
      r.metrics.rss_server_mb = r.rssMb[1] ?? NaN;
      for (const k of ['cpu_client_us', 'cpu_server_us', 'rss_client_mb', 'rss_server_mb']) if (Number.isNaN(r.metrics[k])) delete r.metrics[k];
    }
  }
}

/** Every figure as `scenario.system.metric`. */
export function flatMetrics(scenarios: readonly ScenarioReport[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of scenarios) for (const r of s.rows) for (const [k, v] of Object.entries(r.metrics)) out.set(`${s.name}.${r.system}.${k}`, v);
  return out;
}

/** bench:http's row names, before the scenarios: `meshd-l7.ratio_haproxy` means `l7.meshd.ratio_haproxy`. */
const LEGACY: Readonly<Record<string, string>> = {
  direct: 'l4.direct',
  'meshd-l4': 'l4.meshd',
  'meshd-l7': 'l7.meshd',
  'meshd-l7+scrape': 'l7.meshd+scrape',
  'haproxy-tcp': 'l4.haproxy',
  'haproxy-http': 'l7.haproxy',
};

export interface ThresholdResult {
  readonly expr: string;
  /** The metric it was checked against (scenario.system.metric). */
  readonly metric: string;
  readonly value: number | null;
  readonly ok: boolean;
  readonly message: string;
}

/**
 * `SCENARIO.SYSTEM.METRIC OP NUMBER` or `SCENARIO.METRIC OP NUMBER` (the scenario's default
 * row, its meshd row), OP one of >= <= > < ==. A threshold on a figure this run did not
 * produce fails, as in k6.
 */
export function checkThreshold(expr: string, scenarios: readonly ScenarioReport[], metrics: ReadonlyMap<string, number>): ThresholdResult {
  const m = /^([A-Za-z0-9+@_-]+)\.(?:([A-Za-z0-9+@_-]+)\.)?([a-z0-9_]+)\s*(>=|<=|>|<|==)\s*(-?[0-9]+(?:\.[0-9]*)?)$/.exec(expr.trim());
  if (m === null) return { expr, metric: '', value: null, ok: false, message: `threshold ${JSON.stringify(expr)} is not SCENARIO[.SYSTEM].METRIC OP NUMBER` };
  const [, first, second, metric, op, raw] = m as unknown as [string, string, string | undefined, string, string, string];
  let scenario = first;
  let system = second;
  const legacy = LEGACY[first];
  if (second === undefined && legacy !== undefined && !scenarios.some((s) => s.name === first)) {
    [scenario, system] = legacy.split('.') as [string, string];
  }
  const s = scenarios.find((x) => x.name === scenario);
  system ??= s?.defaultSystem ?? 'meshd';
  const key = `${scenario}.${system}.${metric}`;
  const v = metrics.get(key);
  if (v === undefined) return { expr, metric: key, value: null, ok: false, message: `${expr}: ${key} was not measured in this run` };
  const want = Number(raw);
  const ok = op === '>=' ? v >= want : op === '<=' ? v <= want : op === '>' ? v > want : op === '<' ? v < want : v === want;
  return { expr, metric: key, value: v, ok, message: `${expr}: ${key} = ${fmt(v, Math.abs(v) < 10 ? 3 : 0)}` };
}

/** Percentiles plotted, as in wrk2/HdrHistogram percentile plots. */
const PLOT_PERCENTILES = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999];

export interface PlotPanel {
  readonly title: string;
  readonly series: readonly { readonly name: string; readonly latUs: readonly number[] }[];
}

/**
 * Latency-percentile plots, one panel per scenario: x = percentile on a log scale of
 * 1/(1-p), y = latency (ms), one line per system.
 */
export function percentileSvg(panels: readonly PlotPanel[]): string {
  const W = 760;
  const PH = 380;
  const L = 64;
  const B = 44;
  const T = 28;
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf', '#7f7f7f', '#bcbd22', '#e377c2'];
  const xs = PLOT_PERCENTILES.map((p) => Math.log10(1 / (1 - p)));
  const xMax = Math.max(...xs);
  const H = PH * Math.max(1, panels.length);
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  panels.forEach((panel, k) => {
    const top = k * PH;
    const all = panel.series.map((s) => PLOT_PERCENTILES.map((p) => quantile(s.latUs, p) / 1000));
    const yMax = Math.max(0.001, ...all.flat()) * 1.05;
    const X = (x: number): number => L + (x / xMax) * (W - L - 16);
    const Y = (y: number): number => top + PH - B - (y / yMax) * (PH - B - T);
    out.push(`<text x="${L}" y="${top + 16}" font-size="13" font-weight="bold">${panel.title}</text>`);
    out.push(`<line x1="${L}" y1="${top + PH - B}" x2="${W - 16}" y2="${top + PH - B}" stroke="black"/><line x1="${L}" y1="${top + T}" x2="${L}" y2="${top + PH - B}" stroke="black"/>`);
    PLOT_PERCENTILES.forEach((p, i) => out.push(`<text x="${X(xs[i] as number)}" y="${top + PH - B + 16}" text-anchor="middle">${(p * 100).toString()}%</text>`));
    for (let j = 0; j <= 4; j++) out.push(`<text x="${L - 6}" y="${Y((yMax * j) / 4) + 4}" text-anchor="end">${((yMax * j) / 4).toFixed(yMax < 4 ? 2 : 1)}</text>`);
    out.push(`<text x="${(L + W) / 2}" y="${top + PH - 8}" text-anchor="middle">percentile (log scale)</text><text x="14" y="${top + PH / 2}" transform="rotate(-90 14 ${top + PH / 2})" text-anchor="middle">latency ms</text>`);
    panel.series.forEach((s, i) => {
      const c = colors[i % colors.length] as string;
      const pts = (all[i] as number[]).map((y, j) => `${X(xs[j] as number).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
      out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts}"/>`);
      out.push(`<text x="${L + 10}" y="${top + T + 12 + i * 14}" fill="${c}">${s.name.replace(/&/g, '&amp;').replace(/</g, '&lt;')}</text>`);
    });
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}
