// `npm run bench:gateway`: what the mesh gateway's hop costs. One agent (-dev), an `api`
// sidecar (-workers 1) in front of a node:http app, an intention web → api allow, and the load
// generator playing `web` itself: mTLS with web's leaf from the agent, the agent's roots, and
// api's SNI. Three paths to the same sidecar, measured in one run, interleaved by rounds
// (A B C, A B C, ...) so drift on a shared machine hits all three alike:
//
//   direct   load ══mTLS══▶ api sidecar ─▶ app
//   gateway  load ══mTLS══▶ meshd connect gateway -mesh -workers 1 (SNI peek + splice) ══▶ api sidecar
//   haproxy  load ══mTLS══▶ HAProxy mode tcp, nbthread 1, req.ssl_sni → backend       ══▶ api sidecar
//
// Phases: connect (a full mTLS handshake and one small GET per connection, closed loop),
// keepalive (GETs over persistent connections) and bulk (a large body downloaded again and
// again). The hop's CPU (utime+stime of the gateway's or HAProxy's process, all threads, from
// /proc) over each measured window is divided by connections, requests or KiB. Each figure is
// the median of the rounds. A table on stdout, progress on stderr, `--json FILE` writes JSON.

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseFlags, UsageError, type FlagSpecs } from '../src/cli/flags.ts';
import { startMeshd, type MeshdProcess } from '../src/demo/procs.ts';
import { formatSummary, readProfiles, summarize, type ProfileSummary, type Window } from './lib/cpuprofile.ts';
import { formatHopSummary, formatPhase, hopSummary, phaseRows, PATHS, UNIT, type PathName, type Phase, type PhaseReport, type Sample } from './lib/gateway-figures.ts';
import { GENERATOR, cpuMs, quantile, runLoad, type LoadJob, type TlsClient } from './lib/load.ts';
import { normaliseArgv } from './lib/suite.ts';
import { ensureHaproxy, haproxySniRouter, haproxyVersion, startNodeApp, type App, type Proc } from './lib/systems.ts';

const FLAGS: FlagSpecs = {
  duration: { kind: 'string', help: 'seconds per measurement (one path, one phase, one round)', default: '5' },
  rounds: { kind: 'string', help: 'interleaved rounds; each figure is the median', default: '3' },
  phase: { kind: 'string', help: 'comma-separated phases: connect, keepalive, bulk, or all', placeholder: 'LIST', default: 'all' },
  'connect-connections': { kind: 'string', help: 'connect: concurrent loops, each a new mTLS connection per request', default: '16' },
  connections: { kind: 'string', help: 'keepalive: persistent connections', default: '32' },
  'bulk-mb': { kind: 'string', help: 'bulk: body size in MiB', default: '64' },
  'bulk-connections': { kind: 'string', help: 'bulk: concurrent downloads', default: '2' },
  haproxy: { kind: 'bool', help: 'compare with HAProxy (installed with apt when missing); -haproxy=false skips it' },
  json: { kind: 'bool', help: 'print the JSON report on stdout; `--json FILE` writes it to FILE instead' },
  'json-file': { kind: 'string', help: 'write the JSON report to FILE', placeholder: 'FILE' },
  'cpu-prof': { kind: 'bool', help: 'run the gateway under node --cpu-prof and print where its CPU went during the measurements (profiles kept in a meshd-gw-cpuprof-* directory of the system temp dir)' },
  help: { kind: 'bool', help: 'this text' },
};

const TITLES: Readonly<Record<Phase, (o: Options) => string>> = {
  connect: (o) => `a new mTLS connection per request (full handshake, no resumption) + one GET (2-byte answer), ${o.connectConnections} closed loops`,
  keepalive: (o) => `GET (2-byte answer) over ${o.connections} persistent mTLS connections, closed loop`,
  bulk: (o) => `a ${o.bulkBytes / 2 ** 20} MiB answer downloaded again and again over ${o.bulkConnections} persistent mTLS connection(s); MB = 10^6 bytes of body`,
};

interface Options {
  readonly seconds: number;
  readonly rounds: number;
  readonly phases: readonly Phase[];
  readonly connectConnections: number;
  readonly connections: number;
  readonly bulkBytes: number;
  readonly bulkConnections: number;
}

interface Target {
  readonly path: PathName;
  readonly port: number;
  /** The hop's process (gateway or HAProxy); null for direct. */
  readonly hopPid: number | null;
}

function num(raw: string | undefined, flag: string, min: number): number {
  const n = Number(raw);
  if (!Number.isFinite(n) || n < min) throw new UsageError(`-${flag} must be a number >= ${min}, got ${JSON.stringify(raw)}`);
  return n;
}

function helpText(): string {
  const lines = ['Usage: npm run bench:gateway -- [options]', '', 'The mesh gateway hop (meshd connect gateway -mesh) against HAProxy mode tcp doing the same SNI routing, and a direct mTLS connection.', '', 'Options:'];
  for (const [name, spec] of Object.entries(FLAGS)) {
    lines.push(spec.kind === 'bool' ? `  -${name}` : `  -${name} ${spec.placeholder ?? 'N'}`);
    lines.push(`      ${spec.help}${spec.default === undefined ? '' : ` (default: ${spec.default})`}`);
  }
  return lines.join('\n') + '\n';
}

async function getJson<T>(url: string): Promise<T> {
  const r = await fetch(url);
  if (r.status !== 200) throw new Error(`GET ${url}: HTTP ${r.status}: ${await r.text()}`);
  return (await r.json()) as T;
}

function hostPort(s: string, what: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port <= 0) throw new Error(`${what}: not HOST:PORT: ${JSON.stringify(s)}`);
  return { host: s.slice(0, i), port };
}

/** Polls until `check` holds (config, catalog and routes take a moment to reach every process). */
async function until(what: string, check: () => Promise<boolean>, limitMs = 15_000): Promise<void> {
  const deadline = performance.now() + limitMs;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`${what}: not within ${limitMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** One mTLS connection and GET through `port` answered 200. */
async function answers(port: number, tls: TlsClient): Promise<string | null> {
  const r = await runLoad({ kind: 'connect', connections: 1, ms: 150, port, tls });
  return r.requests > 0 && r.errors === 0 ? null : (r.firstError ?? 'no answer');
}

async function main(argv: readonly string[]): Promise<number> {
  const log = (s: string): void => void process.stderr.write(`${s}\n`);
  let f;
  let o: Options;
  try {
    f = parseFlags(normaliseArgv(argv), FLAGS);
    if (f.positionals.length > 0) throw new UsageError(`unexpected argument: ${f.positionals[0]}`);
    const raw = (f.strings.get('phase') ?? 'all').split(',').map((s) => s.trim()).filter((s) => s !== '');
    const phases = raw.includes('all') ? [...(['connect', 'keepalive', 'bulk'] as const)] : raw;
    for (const p of phases) if (p !== 'connect' && p !== 'keepalive' && p !== 'bulk') throw new UsageError(`-phase: unknown phase ${JSON.stringify(p)} (connect, keepalive, bulk)`);
    o = {
      seconds: num(f.strings.get('duration'), 'duration', 0.1),
      rounds: Math.round(num(f.strings.get('rounds'), 'rounds', 1)),
      phases: (['connect', 'keepalive', 'bulk'] as const).filter((p) => phases.includes(p)),
      connectConnections: Math.round(num(f.strings.get('connect-connections'), 'connect-connections', 1)),
      connections: Math.round(num(f.strings.get('connections'), 'connections', 1)),
      bulkBytes: Math.round(num(f.strings.get('bulk-mb'), 'bulk-mb', 0.001) * 2 ** 20),
      bulkConnections: Math.round(num(f.strings.get('bulk-connections'), 'bulk-connections', 1)),
    };
  } catch (e) {
    if (e instanceof UsageError) return (log(`bench:gateway: ${e.message}\n\n${helpText()}`), 2);
    throw e;
  }
  if (f.bools.get('help') === true) return (process.stdout.write(helpText()), 0);

  const dir = mkdtempSync(join(tmpdir(), 'meshd-bench-gw-'));
  const started = new Date();
  const load0 = loadavg();
  const meshd: MeshdProcess[] = [];
  let app: App | null = null;
  let hap: Proc | null = null;
  try {
    app = await startNodeApp(o.bulkBytes);
    const wantHaproxy = f.bools.get('haproxy') !== false;
    const haproxyReason = wantHaproxy ? ensureHaproxy() : 'skipped (-haproxy=false)';
    if (haproxyReason !== null) log(`bench:gateway: ${haproxyReason}; the HAProxy path is skipped`);

    const agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    meshd.push(agent);
    const http = agent.fields.http as string;
    const put = await fetch(`http://${http}/v1/config`, { method: 'PUT', body: JSON.stringify({ Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] }) });
    if (put.status !== 200) throw new Error(`the web → api intention was refused: ${await put.text()}`);
    const sidecar = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1', '-http-addr', http]);
    meshd.push(sidecar);
    const inbound = hostPort(sidecar.fields.inbound as string, 'the api sidecar\'s inbound');
    const profDir = f.bools.get('cpu-prof') === true ? mkdtempSync(join(tmpdir(), 'meshd-gw-cpuprof-')) : null;
    const gateway = await startMeshd(
      ['connect', 'gateway', '-mesh', '-service', 'mesh-gateway', '-address', '127.0.0.1:0', '-register', '-workers', '1', '-metrics-addr', '127.0.0.1:0', '-http-addr', http],
      profDir === null ? {} : { env: { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${profDir}`.trim() } },
    );
    meshd.push(gateway);
    const lan = hostPort(gateway.fields.lan as string, 'the gateway\'s lan');

    // api's SNI as the gateway's routing table names it, once the sidecar's registration is in.
    let sni = '';
    await until('api\'s sidecar in the mesh gateway routing', async () => {
      const cfg = await getJson<{ Datacenter: string; TrustDomain: string; Services: Record<string, { Port: number }[]> }>(`http://${http}/v1/internal/meshd/mesh-gateway-config/mesh-gateway`);
      sni = `api.default.${cfg.Datacenter}.internal.${cfg.TrustDomain}`;
      return cfg.Services[sni]?.some((a) => a.Port === inbound.port) === true;
    });
    const leaf = await getJson<{ CertPEM: string; PrivateKeyPEM: string }>(`http://${http}/v1/agent/connect/ca/leaf/web`);
    const roots = (await getJson<{ Roots: { RootCert: string }[] }>(`http://${http}/v1/agent/connect/ca/roots`)).Roots.map((r) => r.RootCert);
    const tls: TlsClient = { servername: sni, ca: roots, cert: leaf.CertPEM, key: leaf.PrivateKeyPEM };

    const targets: Target[] = [
      { path: 'direct', port: inbound.port, hopPid: null },
      { path: 'gateway', port: lan.port, hopPid: gateway.child.pid as number },
    ];
    if (haproxyReason === null) {
      const h = await haproxySniRouter(dir, 1, sni, inbound);
      hap = h.proc;
      targets.push({ path: 'haproxy', port: h.port, hopPid: h.proc.pid });
    }
    for (const t of targets) {
      let last: string | null = 'not tried';
      await until(`${t.path}: an mTLS GET through port ${t.port} answered 200`, async () => (last = await answers(t.port, tls)) === null).catch((e: Error) => {
        throw new Error(`${e.message} (last: ${last})`);
      });
    }
    const hv = haproxyReason === null ? haproxyVersion() : `none: ${haproxyReason}`;
    log(`bench:gateway: phases ${o.phases.join(', ')}; ${o.rounds} rounds x ${o.seconds} s per path; ${hv}; load average ${load0.map((x) => x.toFixed(2)).join(' ')}`);

    const sidecarPid = sidecar.child.pid as number;
    const reports: PhaseReport[] = [];
    // The profiles' clock (CLOCK_MONOTONIC µs): only the measurements count, not the start-up.
    const monoUs = (): number => Number(process.hrtime.bigint() / 1000n);
    const window: { -readonly [K in keyof Window]: Window[K] } = { fromUs: monoUs(), toUs: 0 };
    for (const phase of o.phases) {
      const job: Omit<LoadJob, 'port'> =
        phase === 'connect'
          ? { kind: 'connect', connections: o.connectConnections, ms: o.seconds * 1000, tls }
          : phase === 'keepalive'
            ? { kind: 'closed', connections: o.connections, ms: o.seconds * 1000, tls }
            : { kind: 'bulk', connections: o.bulkConnections, ms: o.seconds * 1000, path: '/api/bulk', tls };
      const samples = new Map<PathName, Sample[]>();
      for (let r = 1; r <= o.rounds; r++) {
        for (const t of targets) {
          await runLoad({ ...job, ms: phase === 'bulk' ? 600 : 400, port: t.port });
          const hop0 = t.hopPid === null ? 0 : cpuMs(t.hopPid);
          const side0 = cpuMs(sidecarPid);
          const res = await runLoad({ ...job, port: t.port });
          const s: Sample = {
            answers: res.requests,
            bytes: res.bytes,
            seconds: res.seconds,
            p50Us: quantile(res.latUs, 0.5),
            p99Us: quantile(res.latUs, 0.99),
            errors: res.errors,
            hopCpuMs: t.hopPid === null ? null : cpuMs(t.hopPid) - hop0,
            sidecarCpuMs: cpuMs(sidecarPid) - side0,
          };
          samples.set(t.path, [...(samples.get(t.path) ?? []), s]);
          const rate = phase === 'bulk' ? s.bytes / 1e6 / s.seconds : s.answers / s.seconds;
          const hopPer = s.hopCpuMs === null ? '' : phase === 'bulk' ? `  hop ${Math.round((s.hopCpuMs * 1e6) / (s.bytes / 1024))} ns/KiB` : `  hop ${((s.hopCpuMs * 1000) / s.answers).toFixed(1)} µs/${phase === 'connect' ? 'conn' : 'req'}`;
          log(
            `[${phase} ${r}/${o.rounds}] ${t.path.padEnd(8)} ${rate.toLocaleString('en-US', { maximumFractionDigits: phase === 'bulk' ? 1 : 0 }).padStart(9)} ${UNIT[phase]}  p50 ${Math.round(s.p50Us)} µs  p99 ${Math.round(s.p99Us)} µs${hopPer}${s.errors > 0 ? `  errors ${s.errors} (${res.firstError ?? ''})` : ''}`,
          );
        }
      }
      reports.push({ phase, title: TITLES[phase](o), unit: UNIT[phase], rows: phaseRows(phase, samples) });
    }

    window.toUs = monoUs();
    let profile: ProfileSummary | null = null;
    if (profDir !== null) {
      // The profile is written when the process exits.
      await gateway.stop(20_000);
      profile = summarize(readProfiles(profDir), 20, window);
    }
    const hop = hopSummary(reports);
    const load1 = loadavg();
    const header = [
      `meshd bench:gateway, ${started.toISOString()}, node ${process.version}, ${cpus().length} CPU(s) (${cpus()[0]?.model ?? '?'}), load average ${load0.map((x) => x.toFixed(2)).join(' ')} at start, ${load1.map((x) => x.toFixed(2)).join(' ')} at end`,
      `paths: direct (load ══mTLS══▶ api sidecar), gateway (meshd connect gateway -mesh -workers 1), haproxy (${hv}, mode tcp, nbthread 1, req.ssl_sni routing); api sidecar -workers 1 in front of a node:http app`,
      `load generator: ${GENERATOR}, speaking mTLS as web (leaf from the agent); ${o.rounds} interleaved rounds x ${o.seconds} s per path and phase (median), warm-up before each`,
      `hop CPU: utime+stime of the gateway's / HAProxy's process (all threads) over each window, per answer or per KiB of body`,
    ];
    const errors = reports.flatMap((p) => p.rows.filter((r) => r.errors > 0).map((r) => `${p.phase}.${r.path}`));
    const json = {
      date: started.toISOString(),
      node: process.version,
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? '?',
      loadAverageAtStart: load0,
      loadAverageAtEnd: load1,
      generator: GENERATOR,
      haproxy: hv,
      settings: o,
      paths: PATHS.filter((p) => targets.some((t) => t.path === p)),
      phases: reports,
      hop,
      errorRows: errors,
      ...(profile === null ? {} : { gatewayCpuProfile: { dir: profDir, summary: profile } }),
    };
    const out = [...header, '', ...reports.flatMap((p) => [formatPhase(p), '']), formatHopSummary(hop), ''];
    if (profile !== null) out.push(formatSummary(profile, `CPU profile of the gateway during the measurements (${profDir})`), '');
    if (errors.length > 0) out.push(`errors in: ${errors.join(', ')}`, '');
    const jsonFile = f.strings.get('json-file');
    if (jsonFile !== undefined) {
      writeFileSync(jsonFile, JSON.stringify(json, null, 2) + '\n');
      log(`bench:gateway: wrote ${jsonFile}`);
    }
    if (f.bools.get('json') === true) process.stdout.write(JSON.stringify(json) + '\n');
    else process.stdout.write(out.join('\n'));
    return errors.length > 0 ? 1 : 0;
  } finally {
    await hap?.stop();
    // The gateway and the sidecar before the agent they talk to.
    for (const p of meshd.reverse()) await p.stop(20_000);
    await app?.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main(process.argv.slice(2));
