// The overload scenario, shared by `npm run overload` (bench/overload.ts, the full measurement)
// and the short check in `npm test` (test/serial/overload.serial.ts):
//
//   generator ─▶ web (upstream listener, HTTP) ══mTLS══▶ api sidecar ─▶ node:http app
//
// 1. capacity: closed loop, the most web→api serves (requests/s);
// 2. baseline: open loop at a low rate (a fraction of capacity), its p99;
// 3. overload: open loop at `factor` × capacity; the generator opens connections as needed (up
//    to `maxConnections`), like independent callers. web must shed what it cannot serve with fast
//    503s (-max-concurrent-requests, flag overflow) or refuse connections at accept, instead of
//    queueing without bound;
// 4. recovery: the low rate again; how long until the p99 of 1 s windows is back to the
//    baseline (1.5 × its p99 + 5 ms, two windows in a row).
// RSS of both sidecars is sampled every 250 ms throughout.

import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { runOverload, type Window } from './overload-worker.ts';
import { startNodeApp } from './systems.ts';
import { peakRssMb, quantile } from './load.ts';

export interface OverloadOptions {
  readonly capacityMs: number;
  readonly baselineMs: number;
  readonly overloadMs: number;
  readonly recoveryMs: number;
  /** Offered load in the overload phase, × capacity. */
  readonly factor: number;
  /** The baseline and recovery rate, × capacity. */
  readonly lowFraction: number;
  /** Connections of the closed loop that measures capacity. */
  readonly capacityConnections: number;
  /** Most connections the open-loop generator opens. */
  readonly maxConnections: number;
  /** Extra flags for web (the sidecar under overload) and the api sidecar. */
  readonly webFlags: readonly string[];
  readonly apiFlags: readonly string[];
  readonly workers: number;
  readonly log: (line: string) => void;
}

export const DEFAULT_OVERLOAD: OverloadOptions = {
  capacityMs: 3000,
  baselineMs: 3000,
  overloadMs: 10_000,
  recoveryMs: 12_000,
  factor: 2,
  lowFraction: 0.2,
  capacityConnections: 64,
  maxConnections: 512,
  webFlags: ['-max-concurrent-requests', '64'],
  apiFlags: [],
  workers: 1,
  log: () => undefined,
};

export interface OverloadReport {
  readonly capacityRps: number;
  readonly capacityP99Us: number;
  readonly baselineP99Us: number;
  readonly offeredRps: number;
  readonly lowRps: number;
  readonly windows: readonly Window[];
  /** Over the overload phase. */
  readonly overload: { readonly ok: number; readonly shed: number; readonly other: number; readonly errors: number; readonly p50Us: number; readonly p99Us: number; readonly okP99Us: number; readonly shedP99Us: number; readonly lastWindowP99Us: number; readonly maxQueued: number; readonly maxConnections: number };
  /** ms after the load dropped until two 1 s windows in a row have their p99 within the recovery bound; -1: never. */
  readonly recoveryMs: number;
  readonly recoveryBoundUs: number;
  readonly peakRssMb: { readonly web: number; readonly api: number };
  /** The sidecars' own counters after the run. */
  readonly webOverflow: number;
  readonly webConnectionRefusals: number;
}

async function scrapeText(addr: string): Promise<string> {
  return (await fetch(`http://${addr}/metrics`)).text();
}

function metric(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const key = line.slice(0, line.lastIndexOf(' '));
    const n = key.includes('{') ? key.slice(0, key.indexOf('{')) : key;
    if (n !== name) continue;
    if (Object.entries(labels).every(([k, v]) => key.includes(`${k}="${v}"`))) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

/** A window's p99 counts as recovered when it is within 1.5 × the baseline p99 plus 5 ms. */
export function recoveryBound(baselineP99Us: number): number {
  return Math.round(baselineP99Us * 1.5 + 5000);
}

export async function runOverloadScenario(o: OverloadOptions): Promise<OverloadReport> {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-overload-'));
  const procs: MeshdProcess[] = [];
  const app = await startNodeApp(0);
  let timer: NodeJS.Timeout | undefined;
  try {
    const agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    procs.push(agent);
    const http = agent.fields.http as string;
    const put = async (e: object): Promise<void> => {
      const r = await fetch(`http://${http}/v1/config`, { method: 'PUT', body: JSON.stringify(e) });
      if (r.status !== 200) throw new Error(`config write failed: ${await r.text()}`);
    };
    await put({ Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await put({ Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] });
    const workers = ['-workers', String(o.workers)];
    const api = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', ...workers, '-metrics-addr', '127.0.0.1:0', '-http-addr', http, ...o.apiFlags]);
    procs.push(api);
    const web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', ...workers, '-metrics-addr', '127.0.0.1:0', '-http-addr', http, ...o.webFlags]);
    procs.push(web);
    const port = Number((web.fields['upstream.api'] as string).split(':')[1]);
    for (let i = 0; ; i++) {
      const ok = await fetch(`http://127.0.0.1:${port}/api/items`).then(
        async (r) => (await r.arrayBuffer(), r.status === 200),
        () => false,
      );
      if (ok) break;
      if (i > 100) throw new Error('the mesh did not become ready');
      await new Promise((r) => setTimeout(r, 100));
    }
    const pids = { web: web.child.pid as number, api: api.child.pid as number };
    const peak = { web: 0, api: 0 };
    timer = setInterval(() => {
      peak.web = Math.max(peak.web, peakRssMb(pids.web));
      peak.api = Math.max(peak.api, peakRssMb(pids.api));
    }, 250);

    o.log(`capacity: closed loop, ${o.capacityConnections} connections, ${o.capacityMs} ms`);
    const cap = await runOverload({ kind: 'closed', port, path: '/api/items', connections: o.capacityConnections, ms: o.capacityMs });
    const capacityRps = cap.requests / cap.seconds;
    const lowRps = Math.max(10, Math.round(capacityRps * o.lowFraction));
    const offeredRps = Math.round(capacityRps * o.factor);
    o.log(`capacity ${capacityRps.toFixed(0)} req/s (p99 ${(quantile(cap.latUs, 0.99) / 1000).toFixed(1)} ms, ${cap.errors} errors); baseline ${lowRps} req/s, overload ${offeredRps} req/s`);
    const run = await runOverload({
      kind: 'open',
      port,
      path: '/api/items',
      maxConnections: o.maxConnections,
      timeoutMs: 30_000,
      phases: [
        { label: 'baseline', rate: lowRps, ms: o.baselineMs },
        { label: 'overload', rate: offeredRps, ms: o.overloadMs },
        { label: 'recovery', rate: lowRps, ms: o.recoveryMs },
      ],
    });
    clearInterval(timer);
    const windows = run.windows;
    const base = windows.filter((w) => w.phase === 'baseline').slice(1); // the first window warms up
    const baselineP99Us = Math.max(...base.map((w) => w.p99), 1);
    const over = windows.filter((w) => w.phase === 'overload');
    const rec = windows.filter((w) => w.phase === 'recovery');
    const bound = recoveryBound(baselineP99Us);
    // The first recovery window that, with the next one, is within the bound (two quiet
    // seconds in a row: one noisy second later on, on a shared machine, is not a relapse).
    let firstGood = rec.length;
    for (let i = 0; i < rec.length; i++) {
      if ((rec[i] as Window).p99 <= bound && (rec[i + 1] === undefined || (rec[i + 1] as Window).p99 <= bound)) {
        firstGood = i;
        break;
      }
    }
    // From the load drop (the start of the first recovery window) to the start of that window.
    const recoveryMs = firstGood >= rec.length ? -1 : (rec[firstGood] as Window).at - (rec[0] as Window).at;
    const sum = (k: 'ok' | 'shed' | 'other' | 'errors'): number => over.reduce((a, w) => a + w[k], 0);
    const wm = await scrapeText(web.fields.metrics as string);
    const report: OverloadReport = {
      capacityRps: Math.round(capacityRps),
      capacityP99Us: quantile(cap.latUs, 0.99),
      baselineP99Us,
      offeredRps,
      lowRps,
      windows,
      overload: {
        ok: sum('ok'),
        shed: sum('shed'),
        other: sum('other'),
        errors: sum('errors'),
        p50Us: Math.max(...over.map((w) => w.p50)),
        p99Us: Math.max(...over.map((w) => w.p99)),
        okP99Us: Math.max(...over.map((w) => w.okP99)),
        shedP99Us: Math.max(...over.map((w) => w.shedP99)),
        lastWindowP99Us: over[over.length - 1]?.p99 ?? 0,
        maxQueued: Math.max(...over.map((w) => w.queued)),
        maxConnections: Math.max(...over.map((w) => w.connections)),
      },
      recoveryMs,
      recoveryBoundUs: bound,
      peakRssMb: { web: Math.max(peak.web, peakRssMb(pids.web)), api: Math.max(peak.api, peakRssMb(pids.api)) },
      webOverflow: metric(wm, 'meshd_http_local_responses_total', { flag: 'overflow' }),
      webConnectionRefusals: metric(wm, 'meshd_connections_denied_total', { reason: 'listener_connection_limit' }) + metric(wm, 'meshd_connections_denied_total', { reason: 'proxy_connection_limit' }),
    };
    return report;
  } finally {
    clearInterval(timer);
    await Promise.all(procs.slice(1).map((p) => p.stop()));
    await procs[0]?.stop();
    await app.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The per-window table, for the script's output. */
export function formatWindows(windows: readonly Window[]): string {
  const ms = (us: number): string => (us / 1000).toFixed(1);
  const rows = [['t (s)', 'phase', '2xx', 'shed', 'other', 'errors', 'p50 ms', 'p99 ms', 'max ms', '2xx p99', 'shed p99', 'conns', 'queued']];
  for (const w of windows) rows.push([(w.at / 1000).toFixed(0), w.phase, String(w.ok), String(w.shed), String(w.other), String(w.errors), ms(w.p50), ms(w.p99), ms(w.max), ms(w.okP99), ms(w.shedP99), String(w.connections), String(w.queued)]);
  const widths = (rows[0] as string[]).map((_c, i) => Math.max(...rows.map((r) => (r[i] as string).length)));
  return rows.map((r) => r.map((c, i) => c.padStart(widths[i] as number)).join('  ')).join('\n');
}
