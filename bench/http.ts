// `npm run bench:http`: HTTP/1.1 keep-alive through two sidecars, meshd against HAProxy on the
// same path and the same certificates, and against a direct connection, in one run.
//
//   direct:        load ─▶ app
//   meshd-l4:      load ─▶ web sidecar ══mTLS══▶ api sidecar ─▶ app      (api Protocol tcp)
//   meshd-l7:      the same with Protocol http, an L7 intention (PathPrefix permission), a
//                  service-router route, a service-splitter and metrics scraped at the end
//   haproxy-tcp:   load ─▶ haproxy (mode tcp) ══mTLS══▶ haproxy (mode tcp) ─▶ app
//   haproxy-http:  load ─▶ haproxy (mode http) ══mTLS══▶ haproxy (mode http) ─▶ app
//
// One thread per sidecar on both sides (meshd -workers 1, haproxy nbthread 1). Systems run
// interleaved (A B C D E, then again) and each figure is the median of the rounds. The load
// generator is a closed loop of C keep-alive connections over raw sockets in a worker thread
// (a pre-built GET, a minimal response reader), so it costs less CPU than an HTTP client
// library; the app is node:http answering 2 bytes. CPU per request per sidecar comes from
// /proc/<pid>/stat (utime + stime) over the measured window; peak RSS from VmHWM.
//
// Options: -connections C (32), -duration S (4), -rounds R (3), -json, -json-file FILE (also
// FILE.svg, a latency-percentile plot, log-scale x, one line per system), -threshold EXPR
// (repeatable; exit 1 when one is breached). HAProxy is installed
// with apt when missing (scripts/ensure-tools.sh); if it cannot be, its rows are skipped and
// the report says why.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Worker, isMainThread, parentPort, workerData } from 'node:worker_threads';
import { createLeafCsr, generateRoot, signLeafCsr } from '../src/ca/authority.ts';
import { serviceSpiffeId } from '../src/ca/spiffe.ts';
import { parseFlags, type FlagSpecs } from '../src/cli/flags.ts';
import { freePort, startMeshd, type MeshdProcess } from '../src/demo/procs.ts';

const FLAGS: FlagSpecs = {
  connections: { kind: 'string', help: 'concurrent keep-alive connections', default: '32' },
  duration: { kind: 'string', help: 'seconds per measurement', default: '4' },
  rounds: { kind: 'string', help: 'interleaved rounds (median reported)', default: '3' },
  json: { kind: 'bool', help: 'print JSON' },
  'json-file': { kind: 'string', help: 'also write the JSON report to FILE, and the latency-percentile plot next to it (FILE.svg)', placeholder: 'FILE' },
  threshold: { kind: 'list', help: "fail (exit 1) unless SYSTEM.METRIC OP VALUE holds, e.g. 'meshd-l7.ratio_haproxy>=1.0'; metrics: rps, ratio_direct, ratio_haproxy, p50us, p99us, p999us, errors, cpu_client_us, cpu_server_us, rss_client_mb, rss_server_mb", placeholder: 'EXPR' },
};

/** Percentiles plotted, as in wrk2/HdrHistogram percentile plots. */
const PLOT_PERCENTILES = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999];

/** A latency-percentile plot: x = percentile on a log scale of 1/(1-p), y = latency (ms), one line per system. */
function percentileSvg(series: readonly { name: string; latUs: readonly number[] }[]): string {
  const W = 760;
  const H = 420;
  const L = 64;
  const B = 48;
  const xs = PLOT_PERCENTILES.map((p) => Math.log10(1 / (1 - p)));
  const xMax = Math.max(...xs);
  const ptsOf = (lat: readonly number[]): number[] => PLOT_PERCENTILES.map((p) => (lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] ?? 0) / 1000);
  const all = series.map((s) => ptsOf(s.latUs));
  const yMax = Math.max(1, ...all.flat()) * 1.05;
  const X = (x: number): number => L + (x / xMax) * (W - L - 16);
  const Y = (y: number): number => H - B - (y / yMax) * (H - B - 16);
  const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#8c564b', '#17becf', '#7f7f7f'];
  const out: string[] = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11">`, `<rect width="${W}" height="${H}" fill="white"/>`];
  out.push(`<line x1="${L}" y1="${H - B}" x2="${W - 16}" y2="${H - B}" stroke="black"/><line x1="${L}" y1="16" x2="${L}" y2="${H - B}" stroke="black"/>`);
  PLOT_PERCENTILES.forEach((p, i) => out.push(`<text x="${X(xs[i] as number)}" y="${H - B + 16}" text-anchor="middle">${(p * 100).toString()}%</text>`));
  for (let k = 0; k <= 4; k++) out.push(`<text x="${L - 6}" y="${Y((yMax * k) / 4) + 4}" text-anchor="end">${((yMax * k) / 4).toFixed(1)}</text>`);
  out.push(`<text x="${(L + W) / 2}" y="${H - 8}" text-anchor="middle">percentile (log scale)</text><text x="14" y="${H / 2}" transform="rotate(-90 14 ${H / 2})" text-anchor="middle">latency ms</text>`);
  series.forEach((s, i) => {
    const c = colors[i % colors.length] as string;
    const pts = (all[i] as number[]).map((y, j) => `${X(xs[j] as number).toFixed(1)},${Y(y).toFixed(1)}`).join(' ');
    out.push(`<polyline fill="none" stroke="${c}" stroke-width="2" points="${pts}"/>`);
    out.push(`<text x="${L + 10}" y="${24 + i * 14}" fill="${c}">${s.name}</text>`);
  });
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Evaluates 'system.metric OP value' against the rows; returns a failure message or null. */
function checkThreshold(expr: string, metrics: ReadonlyMap<string, Readonly<Record<string, number>>>): string | null {
  const m = /^([A-Za-z0-9+_-]+)\.([a-z0-9_]+)\s*(>=|<=|>|<|==)\s*(-?[0-9.]+)$/.exec(expr.trim());
  if (m === null) return `threshold ${JSON.stringify(expr)} is not SYSTEM.METRIC OP NUMBER`;
  const [, system, metric, op, raw] = m as unknown as [string, string, string, string, string];
  const v = metrics.get(system)?.[metric];
  if (v === undefined) return `threshold ${expr}: no ${metric} for ${system}`;
  const want = Number(raw);
  const ok = op === '>=' ? v >= want : op === '<=' ? v <= want : op === '>' ? v > want : op === '<' ? v < want : v === want;
  return ok ? null : `threshold ${expr} breached: ${system}.${metric} = ${v}`;
}

interface LoadJob {
  readonly port: number;
  readonly connections: number;
  readonly ms: number;
}

interface LoadResult {
  readonly requests: number;
  readonly errors: number;
  readonly seconds: number;
  /** Sorted latencies in µs (a sample of at most 100k). */
  readonly latUs: number[];
}

const REQUEST = Buffer.from('GET /api/items HTTP/1.1\r\nHost: api\r\nUser-Agent: meshd-bench\r\n\r\n');

/** Worker thread: C connections, each sending one GET and reading one response at a time. */
async function loadThread(job: LoadJob): Promise<LoadResult> {
  const lat: number[] = [];
  let requests = 0;
  let errors = 0;
  const t0 = performance.now();
  const until = t0 + job.ms;
  const one = (): Promise<void> =>
    new Promise((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port: job.port, noDelay: true });
      let buf = Buffer.alloc(0) as Buffer;
      let start = 0;
      const send = (): void => {
        if (performance.now() >= until) {
          s.end();
          resolve();
          return;
        }
        start = performance.now();
        s.write(REQUEST);
      };
      s.on('connect', send);
      s.on('data', (d: Buffer) => {
        buf = buf.length === 0 ? d : Buffer.concat([buf, d]);
        // A response is complete when its headers end and Content-Length bytes follow.
        for (;;) {
          const end = buf.indexOf('\r\n\r\n');
          if (end < 0) return;
          const head = buf.subarray(0, end).toString('latin1');
          const m = /content-length:\s*(\d+)/i.exec(head);
          const total = end + 4 + (m === null ? 0 : Number(m[1]));
          if (buf.length < total) return;
          if (!head.startsWith('HTTP/1.1 200')) errors++;
          buf = buf.subarray(total);
          requests++;
          if (lat.length < 100_000) lat.push((performance.now() - start) * 1000);
          send();
        }
      });
      s.on('error', () => {
        errors++;
        resolve();
      });
      s.on('close', () => resolve());
    });
  await Promise.all(Array.from({ length: job.connections }, one));
  return { requests, errors, seconds: (performance.now() - t0) / 1000, latUs: lat.sort((a, b) => a - b) };
}

function runLoad(job: LoadJob): Promise<LoadResult> {
  const w = new Worker(new URL(import.meta.url), { workerData: job });
  return new Promise((resolve, reject) => {
    w.once('message', (r: LoadResult) => {
      void w.terminate();
      resolve(r);
    });
    w.once('error', reject);
  });
}

function cpuMs(pid: number): number {
  const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100; // USER_HZ is 100 on Linux
}

function peakRssMb(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m === null ? 0 : Math.round(Number(m[1]) / 1024);
}

interface System {
  readonly name: string;
  readonly port: number;
  /** [client sidecar, server sidecar] pids; empty for direct. */
  readonly pids: readonly number[];
  /** Scraped once a second during the measurement (the scrape-overhead row). */
  readonly scrape?: readonly string[];
}

interface Measure {
  /** Sorted latency samples (µs) of this measurement, for the percentile plot. */
  readonly latUs: readonly number[];
  readonly rps: number;
  readonly p50: number;
  readonly p99: number;
  readonly p999: number;
  readonly errors: number;
  /** CPU µs per request, client and server sidecar. */
  readonly cpuUs: readonly number[];
}

async function measure(sys: System, connections: number, seconds: number): Promise<Measure> {
  await runLoad({ port: sys.port, connections, ms: 400 }); // warm-up: connections, TLS, JIT
  const before = sys.pids.map(cpuMs);
  const scraper = sys.scrape === undefined ? undefined : setInterval(() => {
    for (const url of sys.scrape ?? []) void fetch(url).then((res) => res.arrayBuffer()).catch(() => undefined);
  }, 1000);
  const r = await runLoad({ port: sys.port, connections, ms: seconds * 1000 });
  clearInterval(scraper);
  const after = sys.pids.map(cpuMs);
  const at = (q: number): number => Math.round(r.latUs[Math.min(r.latUs.length - 1, Math.floor(q * r.latUs.length))] ?? 0);
  return {
    latUs: r.latUs,
    rps: Math.round(r.requests / r.seconds),
    p50: at(0.5),
    p99: at(0.99),
    p999: at(0.999),
    errors: r.errors,
    cpuUs: sys.pids.map((_p, i) => Math.round((((after[i] as number) - (before[i] as number)) * 1000) / Math.max(1, r.requests))),
  };
}

function median(xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] as number;
}

async function startApp(): Promise<Server> {
  const s = createServer({ keepAliveTimeout: 60_000 }, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
    res.end('ok');
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return s;
}

function haproxyAvailable(): string | null {
  try {
    execFileSync('bash', ['scripts/ensure-tools.sh', 'haproxy'], { stdio: ['ignore', 'ignore', 'inherit'] });
    execFileSync('haproxy', ['-v'], { stdio: 'ignore' });
    return null;
  } catch (err) {
    return `haproxy is not installed and could not be installed (${(err as Error).message.split('\n')[0] ?? ''})`;
  }
}

function startHaproxy(cfg: string, file: string): Promise<ChildProcess> {
  writeFileSync(file, cfg);
  const p = spawn('haproxy', ['-db', '-f', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  p.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => resolve(p), 400);
    p.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`haproxy exited (${code ?? 'signal'}): ${err}`));
    });
  });
}

async function haproxyPair(mode: 'tcp' | 'http', dir: string, appPort: number, pem: { ca: string; web: string; api: string }): Promise<{ port: number; procs: ChildProcess[] }> {
  const [front, back] = [await freePort(), await freePort()];
  const common = `global\n  nbthread 1\n  maxconn 4096\ndefaults\n  mode ${mode}\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n`;
  const reuse = mode === 'http' ? '  http-reuse always\n' : '';
  const server = await startHaproxy(
    `${common}frontend pub\n  bind 127.0.0.1:${back} ssl crt ${pem.api} ca-file ${pem.ca} verify required\n  default_backend app\nbackend app\n${reuse}  server app 127.0.0.1:${appPort}\n`,
    join(dir, `server-${mode}.cfg`),
  );
  const client = await startHaproxy(
    `${common}frontend up\n  bind 127.0.0.1:${front}\n  default_backend api\nbackend api\n${reuse}  server api 127.0.0.1:${back} ssl crt ${pem.web} ca-file ${pem.ca} verify required\n`,
    join(dir, `client-${mode}.cfg`),
  );
  return { port: front, procs: [client, server] };
}

async function meshdPair(protocol: 'tcp' | 'http', dir: string, appPort: number): Promise<{ port: number; procs: MeshdProcess[]; metrics: string; apiMetrics: string }> {
  const agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, `agent-${protocol}`)]);
  const http = agent.fields.http as string;
  const put = async (e: object): Promise<void> => {
    const r = await fetch(`http://${http}/v1/config`, { method: 'PUT', body: JSON.stringify(e) });
    if (r.status !== 200) throw new Error(`config write failed: ${await r.text()}`);
  };
  if (protocol === 'http') {
    await put({ Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
    await put({ Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/api' } }] }] });
    await put({ Kind: 'service-router', Name: 'api', Routes: [{ Match: { HTTP: { PathPrefix: '/admin' } }, Destination: { RequestTimeout: '2s' } }] });
    await put({ Kind: 'service-defaults', Name: 'api-canary', Protocol: 'http' });
    await put({ Kind: 'service-splitter', Name: 'api', Splits: [{ Weight: 100 }, { Weight: 0, Service: 'api-canary' }] });
  } else {
    await put({ Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] });
  }
  const api = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${appPort}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http]);
  const web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http]);
  await new Promise((r) => setTimeout(r, 500));
  return { port: Number((web.fields['upstream.api'] as string).split(':')[1]), procs: [web, api, agent], metrics: web.fields.metrics as string, apiMetrics: api.fields.metrics as string };
}

async function main(): Promise<number> {
  const f = parseFlags(process.argv.slice(2), FLAGS);
  const connections = Number(f.strings.get('connections'));
  const seconds = Number(f.strings.get('duration'));
  const rounds = Number(f.strings.get('rounds'));
  const json = f.bools.get('json') === true;
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  const dir = mkdtempSync(join(tmpdir(), 'meshd-bench-http-'));
  const app = await startApp();
  const appPort = (app.address() as AddressInfo).port;
  const meshd: MeshdProcess[] = [];
  const haproxy: ChildProcess[] = [];
  try {
    const systems: System[] = [{ name: 'direct', port: appPort, pids: [] }];
    const l4 = await meshdPair('tcp', dir, appPort);
    const l7 = await meshdPair('http', dir, appPort);
    meshd.push(...l4.procs, ...l7.procs);
    systems.push({ name: 'meshd-l4', port: l4.port, pids: l4.procs.slice(0, 2).map((p) => p.child.pid as number) });
    systems.push({ name: 'meshd-l7', port: l7.port, pids: l7.procs.slice(0, 2).map((p) => p.child.pid as number) });
    // The same path while Prometheus-style scrapes hit both sidecars once a second.
    systems.push({ name: 'meshd-l7+scrape', port: l7.port, pids: l7.procs.slice(0, 2).map((p) => p.child.pid as number), scrape: [`http://${l7.metrics}/metrics`, `http://${l7.apiMetrics}/metrics`] });
    const noHaproxy = haproxyAvailable();
    if (noHaproxy === null) {
      // The same kind of certificates meshd uses: one root, SPIFFE leaves for web and api.
      const clusterId = '6b3b2f8e-5a3c-4d0e-9c1a-3f1e2d4c5b6a';
      const td = `${clusterId}.consul`;
      const root = await generateRoot({ clusterId, now: new Date() });
      const leaf = async (svc: string): Promise<string> => {
        const { csrPem, keyPem } = await createLeafCsr(serviceSpiffeId(td, 'default', 'dc1', svc));
        const c = await signLeafCsr({ csrPem, root, trustDomain: td, datacenter: 'dc1', now: new Date() });
        const file = join(dir, `${svc}.pem`);
        writeFileSync(file, c.CertPEM + keyPem);
        return file;
      };
      writeFileSync(join(dir, 'ca.pem'), root.certPem);
      const pem = { ca: join(dir, 'ca.pem'), web: await leaf('web'), api: await leaf('api') };
      for (const mode of ['tcp', 'http'] as const) {
        const pair = await haproxyPair(mode, dir, appPort, pem);
        haproxy.push(...pair.procs);
        systems.push({ name: `haproxy-${mode}`, port: pair.port, pids: pair.procs.map((p) => p.pid as number) });
      }
    } else {
      log(`bench: ${noHaproxy}; HAProxy rows skipped`);
    }
    const results = new Map<string, Measure[]>();
    for (let r = 1; r <= rounds; r++) {
      for (const sys of systems) {
        log(`round ${r}/${rounds}: ${sys.name}`);
        const m = await measure(sys, connections, seconds);
        results.set(sys.name, [...(results.get(sys.name) ?? []), m]);
      }
    }
    const metricsOk = (await fetch(`http://${l7.metrics}/metrics`)).status === 200;
    const rows = systems.map((sys) => {
      const ms = results.get(sys.name) ?? [];
      return {
        name: sys.name,
        rps: median(ms.map((m) => m.rps)),
        p50us: median(ms.map((m) => m.p50)),
        p99us: median(ms.map((m) => m.p99)),
        p999us: median(ms.map((m) => m.p999)),
        errors: ms.reduce((a, m) => a + m.errors, 0),
        cpuUsPerRequest: sys.pids.map((_p, i) => median(ms.map((m) => m.cpuUs[i] as number))),
        peakRssMb: sys.pids.map(peakRssMb),
        runs: ms.map((m) => m.rps),
      };
    });
    const direct = rows[0] as (typeof rows)[number];
    const hap = (mode: string): (typeof rows)[number] | undefined => rows.find((x) => x.name === `haproxy-${mode}`);
    const metrics = new Map<string, Record<string, number>>();
    for (const row of rows) {
      const peer = row.name.includes('l7') || row.name.endsWith('http') ? hap('http') : hap('tcp');
      metrics.set(row.name, {
        rps: row.rps,
        ratio_direct: row.rps / direct.rps,
        ...(peer === undefined || row.name === 'direct' ? {} : { ratio_haproxy: row.rps / peer.rps }),
        p50us: row.p50us,
        p99us: row.p99us,
        p999us: row.p999us,
        errors: row.errors,
        ...(row.cpuUsPerRequest.length === 2 ? { cpu_client_us: row.cpuUsPerRequest[0] as number, cpu_server_us: row.cpuUsPerRequest[1] as number } : {}),
        ...(row.peakRssMb.length === 2 ? { rss_client_mb: row.peakRssMb[0] as number, rss_server_mb: row.peakRssMb[1] as number } : {}),
      });
    }
    const failures = (f.lists.get('threshold') ?? []).map((t) => checkThreshold(t, metrics)).filter((x): x is string => x !== null);
    const report = { date: new Date().toISOString(), connections, seconds, rounds, haproxy: noHaproxy ?? 'ok', metricsScraped: metricsOk, rows, metrics: Object.fromEntries(metrics), thresholdFailures: failures };
    const jsonFile = f.strings.get('json-file');
    if (jsonFile !== undefined) {
      writeFileSync(jsonFile, JSON.stringify(report, null, 2) + '\n');
      // The plot uses each system's median-throughput round.
      const series = systems.map((sys) => {
        const ms = [...(results.get(sys.name) ?? [])].sort((a, b) => a.rps - b.rps);
        return { name: sys.name, latUs: ms[Math.floor(ms.length / 2)]?.latUs ?? [] };
      });
      writeFileSync(`${jsonFile}.svg`, percentileSvg(series));
      log(`bench: wrote ${jsonFile} and ${jsonFile}.svg`);
    }
    for (const msg of failures) log(`bench: ${msg}`);
    if (json) {
      process.stdout.write(JSON.stringify(report) + '\n');
      return failures.length > 0 || rows.some((r) => r.errors > 0) ? 1 : 0;
    }
    const out: string[] = [];
    out.push(`HTTP/1.1 keep-alive GET, 2-byte response, ${connections} connections, ${seconds} s x ${rounds} interleaved rounds (median), 1 thread per sidecar`);
    out.push('');
    out.push('system          req/s   x direct  x haproxy   p50 µs   p99 µs  p99.9 µs   CPU µs/req client+server   peak RSS MB client/server  errors');
    for (const row of rows) {
      const peer = row.name.includes('l7') || row.name.endsWith('http') ? hap('http') : hap('tcp');
      const xh = peer === undefined || row.name === 'direct' ? '-' : (row.rps / peer.rps).toFixed(2);
      out.push(
        `${row.name.padEnd(14)} ${String(row.rps).padStart(6)} ${(row.rps / direct.rps).toFixed(3).padStart(9)} ${xh.padStart(9)} ${String(row.p50us).padStart(8)} ${String(row.p99us).padStart(8)} ${String(row.p999us).padStart(9)}   ${(row.cpuUsPerRequest.length === 0 ? '-' : row.cpuUsPerRequest.join(' + ')).padStart(24)}   ${(row.peakRssMb.length === 0 ? '-' : row.peakRssMb.join(' / ')).padStart(24)}  ${row.errors}`,
      );
    }
    const l7row = rows.find((x) => x.name === 'meshd-l7');
    const scraped = rows.find((x) => x.name === 'meshd-l7+scrape');
    if (l7row !== undefined && scraped !== undefined) {
      out.push('');
      out.push(`scrape overhead (both sidecars scraped once a second): p99 ${scraped.p99us} vs ${l7row.p99us} µs (${((scraped.p99us / l7row.p99us - 1) * 100).toFixed(1)} %), req/s ${((scraped.rps / l7row.rps - 1) * 100).toFixed(1)} %`);
    }
    out.push('');
    out.push(`runs (req/s): ${rows.map((r) => `${r.name} ${r.runs.join('/')}`).join('; ')}`);
    if (failures.length > 0) out.push('', ...failures.map((x) => `FAIL ${x}`));
    process.stdout.write(out.join('\n') + '\n');
    return failures.length > 0 || rows.some((r) => r.errors > 0) ? 1 : 0;
  } finally {
    for (const p of haproxy) p.kill('SIGTERM');
    await Promise.all(meshd.map((p) => p.stop()));
    app.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (isMainThread) process.exitCode = await main();
else parentPort?.postMessage(await loadThread(workerData as LoadJob));
