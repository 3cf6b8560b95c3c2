// Test helpers: a TCP echo app that counts the connections it sees, a client that sends
// one message and reports what came back, and a Prometheus text reader.

import * as net from 'node:net';
import type { AddressInfo } from 'node:net';

export interface EchoApp {
  readonly port: number;
  /** Connections the app has accepted (a denied peer must never add one). */
  connections(): number;
  /** Bytes the app has received. */
  bytes(): number;
  close(): Promise<void>;
}

export async function startEchoApp(): Promise<EchoApp> {
  let connections = 0;
  let bytes = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    connections++;
    sockets.add(s);
    s.on('data', (d) => {
      bytes += d.length;
      s.write(d);
    });
    s.on('error', () => undefined);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => connections,
    bytes: () => bytes,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/**
 * Connects, writes `message`, and resolves with what was echoed before the peer closed or
 * `timeoutMs` passed. A proxy that refuses the connection yields '' (closed, nothing back).
 */
export function echoOnce(port: number, message: string, timeoutMs = 2000, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    let got = '';
    const s = net.connect({ host, port });
    const done = (): void => {
      clearTimeout(t);
      s.destroy();
      resolve(got);
    };
    const t = setTimeout(done, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write(message));
    s.on('data', (d: string) => {
      got += d;
      if (got.length >= message.length) done();
    });
    s.on('error', done);
    s.on('close', done);
  });
}

/** Retries `echoOnce` until it echoes, returning the elapsed ms (or -1 after `limitMs`). */
export async function waitUntilEchoes(port: number, limitMs: number): Promise<number> {
  const start = performance.now();
  while (performance.now() - start < limitMs) {
    if ((await echoOnce(port, 'ping', 500)) === 'ping') return performance.now() - start;
    await new Promise((r) => setTimeout(r, 25));
  }
  return -1;
}

export async function waitUntilRefused(port: number, limitMs: number): Promise<number> {
  const start = performance.now();
  while (performance.now() - start < limitMs) {
    if ((await echoOnce(port, 'ping', 500)) === '') return performance.now() - start;
    await new Promise((r) => setTimeout(r, 25));
  }
  return -1;
}

export type Samples = Map<string, number>;

/** Parses Prometheus text into `name{labels}` -> value (labels as written). */
export function parseMetrics(text: string): Samples {
  const out: Samples = new Map();
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const i = line.lastIndexOf(' ');
    out.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return out;
}

export async function scrape(metricsAddr: string): Promise<Samples> {
  const r = await fetch(`http://${metricsAddr}/metrics`);
  return parseMetrics(await r.text());
}

/** Sum of every sample of `name` whose labels include all of `labels`. */
export function total(samples: Samples, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  for (const [key, v] of samples) {
    const brace = key.indexOf('{');
    const n = brace === -1 ? key : key.slice(0, brace);
    if (n !== name) continue;
    if (Object.entries(labels).every(([k, val]) => key.includes(`${k}="${val}"`))) sum += v;
  }
  return sum;
}

/**
 * Scrapes until `ready(samples)` holds or `limitMs` passes, returning the last scrape. For
 * counters incremented on the server side of an event the client may observe first (a TLS
 * alert arrives before the server's handshake-error handler has run).
 */
export async function scrapeUntil(metricsAddr: string, ready: (s: Samples) => boolean, limitMs = 3000): Promise<Samples> {
  const end = performance.now() + limitMs;
  let s = await scrape(metricsAddr);
  while (!ready(s) && performance.now() < end) {
    await new Promise((r) => setTimeout(r, 20));
    s = await scrape(metricsAddr);
  }
  return s;
}
