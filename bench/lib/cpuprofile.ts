// Summarises V8 .cpuprofile files (node --cpu-prof; one file per thread, workers included):
// self time per function (aggregated by name + url:line over every node and every file) and
// a breakdown by category (node's TLS/crypto, net/streams, HTTP, undici, meshd's src/, GC,
// (program), (idle)...). Self time = self samples x the profile's mean sampling interval.

import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface CpuProfileNode {
  readonly id: number;
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number; readonly columnNumber?: number; readonly scriptId?: string | number };
  readonly hitCount?: number;
  readonly children?: readonly number[];
}

export interface CpuProfile {
  readonly nodes: readonly CpuProfileNode[];
  /** µs */
  readonly startTime: number;
  /** µs */
  readonly endTime: number;
  readonly samples?: readonly number[];
  readonly timeDeltas?: readonly number[];
}

export type Category = 'tls/crypto' | 'net/stream' | 'http' | 'undici' | 'meshd' | 'dependencies' | 'node other' | 'native' | 'gc' | 'program' | 'idle';

export interface FunctionTime {
  readonly name: string;
  /** url:line (1-based line), or '' for native code. */
  readonly where: string;
  readonly category: Category;
  readonly selfMs: number;
  /** Percent of busy time (everything but (idle)). */
  readonly pct: number;
}

export interface CategoryTime {
  readonly category: Category;
  readonly ms: number;
  /** Percent of busy time; (idle) is given as a percent of all sampled time. */
  readonly pct: number;
}

export interface ProfileSummary {
  readonly files: number;
  /** Sampled wall time, all threads added. */
  readonly totalMs: number;
  readonly busyMs: number;
  /** Per profile (thread), in the order given. */
  readonly threads: readonly { readonly busyMs: number; readonly totalMs: number }[];
  readonly functions: readonly FunctionTime[];
  readonly categories: readonly CategoryTime[];
}

/** The category a function belongs to, from its script URL and name. */
export function categorize(functionName: string, url: string): Category {
  if (functionName === '(garbage collector)') return 'gc';
  if (functionName === '(program)') return 'program';
  if (functionName === '(idle)') return 'idle';
  if (url === '') return 'native';
  if (url.includes('/node_modules/undici/') || url.startsWith('node:internal/deps/undici')) return 'undici';
  if (url.includes('/node_modules/')) return 'dependencies';
  if (url.startsWith('node:')) {
    const m = url.slice('node:'.length).replace(/^internal\//, '');
    if (/^(_tls|tls|crypto)/.test(m)) return 'tls/crypto';
    if (/^(_http|https?\b|http\/)/.test(m)) return 'http';
    if (/^(net|stream|streams\/|stream_base_commons|js_stream_socket|dgram|dns)/.test(m)) return 'net/stream';
    return 'node other';
  }
  if (url.includes('/src/')) return 'meshd';
  return 'node other';
}

/** A time window in the profiles' clock (CLOCK_MONOTONIC µs, as `process.hrtime.bigint() / 1000n`). */
export interface Window {
  readonly fromUs: number;
  readonly toUs: number;
}

/**
 * Self samples per node: from `samples` (only those inside `window`, when given) when
 * present, else the nodes' hitCount. Also the mean sampling interval (µs).
 */
function selfSamples(p: CpuProfile, window?: Window): { counts: Map<number, number>; intervalUs: number } {
  const counts = new Map<number, number>();
  let all = 0;
  if (p.samples !== undefined && p.samples.length > 0) {
    let t = p.startTime;
    for (let i = 0; i < p.samples.length; i++) {
      t += p.timeDeltas?.[i] ?? 0;
      all++;
      if (window !== undefined && (t < window.fromUs || t > window.toUs)) continue;
      const id = p.samples[i] as number;
      counts.set(id, (counts.get(id) ?? 0) + 1);
    }
  } else {
    for (const n of p.nodes) {
      if ((n.hitCount ?? 0) === 0) continue;
      counts.set(n.id, n.hitCount as number);
      all += n.hitCount as number;
    }
  }
  return { counts, intervalUs: all === 0 ? 0 : (p.endTime - p.startTime) / all };
}

function shortUrl(url: string): string {
  const i = url.lastIndexOf('/src/');
  if (url.startsWith('file://') && i >= 0) return url.slice(i + 1);
  const j = url.lastIndexOf('/node_modules/');
  return j >= 0 ? url.slice(j + '/node_modules/'.length) : url;
}

/** Aggregates `profiles` (one per thread); with `window`, only the samples taken inside it. */
export function summarize(profiles: readonly CpuProfile[], top = 15, window?: Window): ProfileSummary {
  const fns = new Map<string, { name: string; where: string; category: Category; ms: number }>();
  const cats = new Map<Category, number>();
  const threads: { busyMs: number; totalMs: number }[] = [];
  let totalMs = 0;
  for (const p of profiles) {
    const { counts, intervalUs } = selfSamples(p, window);
    const intervalMs = intervalUs / 1000;
    const thread = { busyMs: 0, totalMs: 0 };
    for (const n of p.nodes) {
      const c = counts.get(n.id);
      if (c === undefined) continue;
      const { functionName, url, lineNumber } = n.callFrame;
      if (functionName === '(root)') continue;
      const ms = c * intervalMs;
      totalMs += ms;
      const category = categorize(functionName, url);
      thread.totalMs += ms;
      if (category !== 'idle') thread.busyMs += ms;
      cats.set(category, (cats.get(category) ?? 0) + ms);
      const name = functionName === '' ? '(anonymous)' : functionName;
      const where = url === '' ? '' : `${shortUrl(url)}:${lineNumber + 1}`;
      const key = `${name} ${where}`;
      const f = fns.get(key);
      if (f === undefined) fns.set(key, { name, where, category, ms });
      else f.ms += ms;
    }
    threads.push({ busyMs: round(thread.busyMs), totalMs: round(thread.totalMs) });
  }
  const idle = cats.get('idle') ?? 0;
  const busyMs = totalMs - idle;
  const pctBusy = (ms: number): number => (busyMs > 0 ? (100 * ms) / busyMs : 0);
  const functions = [...fns.values()]
    .filter((f) => f.category !== 'idle')
    .sort((a, b) => b.ms - a.ms)
    .slice(0, top)
    .map((f) => ({ name: f.name, where: f.where, category: f.category, selfMs: round(f.ms), pct: round(pctBusy(f.ms)) }));
  const categories = [...cats.entries()]
    .sort((a, b) => b[1] - a[1])
    .map(([category, ms]) => ({ category, ms: round(ms), pct: round(category === 'idle' ? (totalMs > 0 ? (100 * ms) / totalMs : 0) : pctBusy(ms)) }));
  return { files: profiles.length, totalMs: round(totalMs), busyMs: round(busyMs), threads, functions, categories };
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}

/** Reads every .cpuprofile in `dir`. */
export function readProfiles(dir: string): CpuProfile[] {
  return readdirSync(dir)
    .filter((f) => f.endsWith('.cpuprofile'))
    .map((f) => JSON.parse(readFileSync(join(dir, f), 'utf8')) as CpuProfile);
}

export function formatSummary(s: ProfileSummary, title: string): string {
  const threads = s.threads.map((t) => `${(t.busyMs / 1000).toFixed(2)}/${(t.totalMs / 1000).toFixed(2)}`).join(', ');
  const out = [`${title}: ${s.files} profile(s), one per thread (busy/sampled s: ${threads}); ${(s.busyMs / 1000).toFixed(2)} s busy of ${(s.totalMs / 1000).toFixed(2)} s sampled`, '', '  self ms   % busy  category      function'];
  for (const f of s.functions) out.push(`${f.selfMs.toFixed(1).padStart(9)} ${f.pct.toFixed(1).padStart(7)}%  ${f.category.padEnd(12)}  ${f.name}${f.where === '' ? '' : `  ${f.where}`}`);
  out.push('', '  by category:');
  for (const c of s.categories) out.push(`    ${c.category.padEnd(12)} ${c.ms.toFixed(1).padStart(9)} ms  ${c.pct.toFixed(1).padStart(5)}%${c.category === 'idle' ? ' of sampled time' : ' of busy time'}`);
  return out.join('\n');
}
