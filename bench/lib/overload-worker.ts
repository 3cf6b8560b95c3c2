// The overload generator, run in a worker thread (runOverload below starts it): a raw-socket
// HTTP/1.1 client that behaves like many independent callers, not like a fixed pool.
//
//   closed  C keep-alive connections, each sending the next request when the last answer is
//           complete: the most the system serves (capacity).
//   open    phases of fixed request rates. A request due while every open connection is busy
//           opens a new connection, up to `maxConnections`; past that it waits in the
//           generator's queue. Latency runs from the request's intended send time
//           (coordinated omission corrected), so a system that cannot keep up shows it, whether
//           the queue is in the system or here.
//
// Results come per window (default 1 s, by completion time): answers by class (2xx, shed: 503
// and 429, other status, error: reset, refused or timed out), latency quantiles over all of
// them and over the 2xx alone, and the connections and queued requests at the window's end.

import * as net from 'node:net';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { ResponseReader } from './http-reader.ts';

export interface Phase {
  readonly label: string;
  /** Requests per second (open loop). */
  readonly rate: number;
  readonly ms: number;
}

export type OverloadJob =
  | { readonly kind: 'closed'; readonly port: number; readonly path: string; readonly connections: number; readonly ms: number }
  | {
      readonly kind: 'open';
      readonly port: number;
      readonly path: string;
      readonly phases: readonly Phase[];
      readonly maxConnections: number;
      /** A request unanswered this long after it was sent is an error (its connection is dropped). */
      readonly timeoutMs: number;
      readonly windowMs?: number;
    };

export interface Window {
  readonly phase: string;
  /** ms since the first phase began, at the window's end. */
  readonly at: number;
  readonly ok: number;
  readonly shed: number;
  readonly other: number;
  readonly errors: number;
  /** µs, over every answer and error in the window. */
  readonly p50: number;
  readonly p99: number;
  readonly max: number;
  /** µs, over the 2xx answers alone. */
  readonly okP99: number;
  /** µs, over the 503/429 answers alone. */
  readonly shedP99: number;
  readonly connections: number;
  readonly queued: number;
}

export interface OverloadResult {
  readonly requests: number;
  readonly seconds: number;
  readonly errors: number;
  /** closed: sorted latencies (µs). */
  readonly latUs: readonly number[];
  /** open: per window. */
  readonly windows: readonly Window[];
  readonly firstError?: string;
}

interface Conn {
  readonly socket: net.Socket;
  readonly reader: ResponseReader;
  connected: boolean;
  /** The request in flight: its intended and actual send times (ms), or null when idle. */
  intended: number;
  sent: number;
  busy: boolean;
}

function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
}

async function closed(job: Extract<OverloadJob, { kind: 'closed' }>): Promise<OverloadResult> {
  const req = Buffer.from(`GET ${job.path} HTTP/1.1\r\nHost: api\r\n\r\n`);
  const lat: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  let measuring = false;
  let stop = false;
  const sockets: net.Socket[] = [];
  await Promise.all(
    Array.from(
      { length: job.connections },
      () =>
        new Promise<void>((resolve) => {
          const reader = new ResponseReader();
          const s = net.connect({ host: '127.0.0.1', port: job.port, noDelay: true });
          sockets.push(s);
          let sent = 0;
          const send = (): void => {
            if (stop) return resolve();
            sent = performance.now();
            s.write(req);
          };
          s.on('connect', send);
          s.on('data', (d: Buffer) =>
            reader.feed(d, (status) => {
              if (measuring) {
                if (status >= 200 && status < 300) lat.push(Math.round((performance.now() - sent) * 1000));
                else errors++;
              }
              send();
            }),
          );
          s.on('error', (e) => {
            errors++;
            firstError ??= e.message;
            resolve();
          });
          s.on('close', () => resolve());
        }),
    ).concat([
      new Promise<void>((resolve) =>
        setTimeout(() => {
          measuring = true;
          setTimeout(() => {
            measuring = false;
            stop = true;
            resolve();
          }, job.ms);
        }, 300),
      ),
    ]),
  ).catch(() => undefined);
  for (const s of sockets) s.destroy();
  lat.sort((a, b) => a - b);
  return { requests: lat.length, seconds: job.ms / 1000, errors, latUs: lat, windows: [], ...(firstError === undefined ? {} : { firstError }) };
}

function open(job: Extract<OverloadJob, { kind: 'open' }>): Promise<OverloadResult> {
  const req = Buffer.from(`GET ${job.path} HTTP/1.1\r\nHost: api\r\n\r\n`);
  const windowMs = job.windowMs ?? 1000;
  const idle: Conn[] = [];
  const all = new Set<Conn>();
  const queue: number[] = [];
  let queueHead = 0;
  const windows: Window[] = [];
  let cur = { ok: 0, shed: 0, other: 0, errors: 0, lat: [] as number[], okLat: [] as number[], shedLat: [] as number[] };
  let requests = 0;
  let errors = 0;
  let firstError: string | undefined;
  const t0 = performance.now();
  const ends: number[] = [];
  let acc = 0;
  for (const p of job.phases) ends.push((acc += p.ms));
  const phaseAt = (t: number): number => {
    const i = ends.findIndex((e) => t < e);
    return i < 0 ? job.phases.length - 1 : i;
  };

  const record = (c: Conn, status: number): void => {
    const us = Math.round((performance.now() - c.intended) * 1000);
    requests++;
    cur.lat.push(us);
    if (status === 0) {
      cur.errors++;
      errors++;
    } else if (status >= 200 && status < 300) {
      cur.ok++;
      cur.okLat.push(us);
    } else if (status === 503 || status === 429) {
      cur.shed++;
      cur.shedLat.push(us);
    } else cur.other++;
  };
  const next = (c: Conn): void => {
    c.busy = false;
    if (queueHead < queue.length) {
      send(c, queue[queueHead++] as number);
      if (queueHead > 4096 && queueHead * 2 > queue.length) {
        queue.splice(0, queueHead);
        queueHead = 0;
      }
    } else idle.push(c);
  };
  const send = (c: Conn, intended: number): void => {
    c.busy = true;
    c.intended = intended;
    c.sent = performance.now();
    if (c.connected) c.socket.write(req);
  };
  const connect = (intended: number): void => {
    const socket = net.connect({ host: '127.0.0.1', port: job.port, noDelay: true });
    const c: Conn = { socket, reader: new ResponseReader(), connected: false, intended, sent: performance.now(), busy: true };
    all.add(c);
    socket.on('connect', () => {
      c.connected = true;
      if (c.busy) socket.write(req);
    });
    socket.on('data', (d: Buffer) =>
      c.reader.feed(d, (status) => {
        record(c, status);
        next(c);
      }),
    );
    socket.on('error', (e) => {
      firstError ??= e.message;
    });
    socket.on('close', () => {
      all.delete(c);
      const i = idle.indexOf(c);
      if (i >= 0) idle.splice(i, 1);
      if (c.busy) {
        c.busy = false;
        record(c, 0);
        // Its request failed; the next queued one (if any) needs a connection.
        if (queueHead < queue.length && all.size < job.maxConnections) connect(queue[queueHead++] as number);
      }
    });
  };
  const dispatch = (intended: number): void => {
    const c = idle.pop();
    if (c !== undefined) send(c, intended);
    else if (all.size < job.maxConnections) connect(intended);
    else queue.push(intended);
  };

  return new Promise((resolve) => {
    const total = ends[ends.length - 1] ?? 0;
    let issued = 0;
    let phaseStartIssued = 0;
    let phase = 0;
    let windowEnd = windowMs;
    const tick = (): void => {
      const t = performance.now() - t0;
      const p = phaseAt(Math.min(t, total - 0.001));
      if (p !== phase) {
        phase = p;
        phaseStartIssued = issued;
      }
      const start = p === 0 ? 0 : (ends[p - 1] as number);
      const rate = (job.phases[p] as Phase).rate;
      const due = Math.floor(((Math.min(t, total) - start) * rate) / 1000);
      while (issued - phaseStartIssued < due) {
        const k = issued - phaseStartIssued;
        dispatch(t0 + start + (k * 1000) / rate);
        issued++;
      }
      // Requests sent longer ago than the timeout: their connections are dropped (errors).
      const now = performance.now();
      for (const c of all) if (c.busy && now - c.sent > job.timeoutMs) c.socket.destroy();
      if (t >= windowEnd) {
        const lat = cur.lat.sort((a, b) => a - b);
        const okLat = cur.okLat.sort((a, b) => a - b);
        const shedLat = cur.shedLat.sort((a, b) => a - b);
        windows.push({
          phase: (job.phases[phaseAt(windowEnd - 1)] as Phase).label,
          at: windowEnd,
          ok: cur.ok,
          shed: cur.shed,
          other: cur.other,
          errors: cur.errors,
          p50: quantile(lat, 0.5),
          p99: quantile(lat, 0.99),
          max: lat[lat.length - 1] ?? 0,
          okP99: quantile(okLat, 0.99),
          shedP99: quantile(shedLat, 0.99),
          connections: all.size,
          queued: queue.length - queueHead,
        });
        cur = { ok: 0, shed: 0, other: 0, errors: 0, lat: [], okLat: [], shedLat: [] };
        windowEnd += windowMs;
      }
      if (t >= total + 0.001 && windowEnd > total + windowMs - 1) {
        for (const c of all) c.socket.destroy();
        resolve({ requests, seconds: total / 1000, errors, latUs: [], windows, ...(firstError === undefined ? {} : { firstError }) });
        return;
      }
      setTimeout(tick, 1);
    };
    tick();
  });
}

/** Runs a job in a fresh worker thread. */
export async function runOverload(job: OverloadJob): Promise<OverloadResult> {
  const w = new Worker(new URL(import.meta.url), { workerData: job });
  try {
    return await new Promise<OverloadResult>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`overload worker exited (${code}) without a result`)));
    });
  } finally {
    await w.terminate();
  }
}

if (!isMainThread && parentPort !== null && (workerData as OverloadJob | undefined)?.kind !== undefined) {
  const job = workerData as OverloadJob;
  const result = job.kind === 'closed' ? await closed(job) : await open(job);
  parentPort.postMessage(result);
}
