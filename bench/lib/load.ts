// Main-thread side of the load generator: one worker thread per measurement
// (./load-worker.ts), and the /proc readings taken around it.

import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { LoadJob, LoadResult } from './load-worker.ts';

export type { LoadJob, LoadKind, LoadResult, TlsClient } from './load-worker.ts';

export const GENERATOR = 'meshd-bench raw-socket HTTP/1.1 generator (one worker thread; closed loop, connection-per-request, bulk, and open loop with coordinated-omission correction)';

const WORKER = new URL('./load-worker.ts', import.meta.url);

export async function runLoad(job: LoadJob): Promise<LoadResult> {
  const w = new Worker(WORKER, { workerData: job });
  try {
    return await new Promise<LoadResult>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`load worker exited (${code}) without a result`)));
    });
  } finally {
    await w.terminate();
  }
}

/** CPU time (user + system) of a process so far, in ms; every thread counted. */
export function cpuMs(pid: number): number {
  const t = procStatCpuTicks(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  return ((t.utime + t.stime) * 1000) / 100; // USER_HZ is 100 on Linux
}

/**
 * utime and stime (fields 14 and 15, clock ticks) of a /proc/<pid>/stat line. The command
 * name (field 2) is in parentheses and may itself hold spaces and parentheses, so fields are
 * counted from the last ')'.
 */
export function procStatCpuTicks(stat: string): { utime: number; stime: number } {
  const close = stat.lastIndexOf(')');
  if (close < 0) throw new Error('not a /proc/<pid>/stat line: no ")" after the command name');
  const f = stat.slice(close + 2).split(' ');
  const utime = Number(f[11]);
  const stime = Number(f[12]);
  if (!Number.isInteger(utime) || !Number.isInteger(stime) || f[12] === undefined) throw new Error('not a /proc/<pid>/stat line: utime/stime are not integers');
  return { utime, stime };
}

/** Peak resident set size (VmHWM) of a process, in MB. */
export function peakRssMb(pid: number): number {
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Math.round(Number(m[1]) / 1024);
  } catch {
    return 0;
  }
}

/** The value at quantile q of a sorted array (0 when empty). */
export function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}
