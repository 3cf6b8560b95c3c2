// `meshd connect gateway -ingress -service NAME`: runs an ingress gateway (./ingress.ts) for
// the ingress-gateway config entry NAME. `meshd connect gateway -mesh -service NAME -address
// HOST:PORT [-wan-address HOST:PORT]` runs a mesh gateway (./mesh.ts): SNI routing, TLS passed
// through, no key; ready line `meshd gateway ready: service=NAME identity=spiffe://… lan=HOST:PORT
// wan=HOST:PORT metrics=HOST:PORT workers=N`. Flags as Consul's `consul connect envoy -gateway`
// where they exist (-service, -address, -register), plus the sidecar's (-workers,
// -metrics-addr, -access-log, -tls-min-version, -drain-timeout, -worker-memory-limit) and the
// HTTP API flags (-http-addr, -token, -token-file), and for -ingress -tls-cert-file and
// -tls-key-file (the certificate of listeners whose entry enables TLS; both or neither).
// SIGTERM/SIGINT drain, SIGHUP reloads (and re-reads the certificate files), as for
// `connect proxy` (../cli/serve.ts). Prints a ready line `meshd gateway ready: service=NAME listener.<port>=HOST:PORT
// … metrics=HOST:PORT workers=N` once every listener is bound (port 0 in the entry: the port
// the kernel gave).

import { ApiError, type AgentClient } from '../control/client.ts';
import { parseDuration } from '../control/decode.ts';
import { HTTP_API_FLAGS, apiClient, apiToken } from '../cli/http-api.ts';
import { DATA_PLANE_SERVE_FLAGS, describeReload, parseDataPlaneServeFlags, serveSignals } from '../cli/serve.ts';
import { parseFlags, parseHostPort, parseWorkers, usageText, UsageError, type FlagSpecs, type ParsedFlags } from '../cli/flags.ts';

export interface GatewayCliIo {
  readonly out: (text: string) => void;
  readonly err: (text: string) => void;
  readonly log: (line: string) => void;
}

export const GATEWAY_FLAGS: FlagSpecs = {
  ...HTTP_API_FLAGS,
  ingress: { kind: 'bool', help: 'Run an ingress gateway: the listeners and services of the ingress-gateway config entry named by -service' },
  mesh: { kind: 'bool', help: 'Run a mesh gateway: routes TLS connections by SNI to local services and to other datacenters\' gateways, without terminating TLS' },
  service: { kind: 'string', help: 'Name of the gateway: its catalog name; for -ingress also its ingress-gateway config entry and identity (svc/NAME)', placeholder: 'NAME' },
  address: { kind: 'string', help: '-ingress: the HOST every listener binds (default 127.0.0.1; 0.0.0.0 for all interfaces). -mesh: HOST:PORT of the LAN listener (port 0: any free port)', placeholder: 'HOST|HOST:PORT' },
  'wan-address': { kind: 'string', help: '-mesh: HOST:PORT of the WAN listener other datacenters dial (default: the -address listener serves both)', placeholder: 'HOST:PORT' },
  workers: { kind: 'string', help: 'Data-plane worker threads (default: available parallelism)', placeholder: 'N', env: 'MESHD_WORKERS' },
  'metrics-addr': { kind: 'string', help: 'Address to serve Prometheus /metrics on', placeholder: 'HOST:PORT' },
  register: { kind: 'bool', help: 'Register the gateway in the agent catalog (Kind ingress-gateway or mesh-gateway, TTL heartbeat)' },
  'access-log': { kind: 'string', help: 'Write one JSON line per HTTP request and per TCP connection to stdout, stderr or a file; off by default', placeholder: 'stdout|stderr|PATH' },
  'tls-min-version': { kind: 'string', help: 'Lowest TLS version of the mTLS connections to the mesh: TLSv1_3, or TLSv1_2', placeholder: 'VERSION', default: 'TLSv1_3' },
  'tls-cert-file': { kind: 'string', help: '-ingress: PEM certificate (then its chain) that listeners with TLS enabled in the ingress-gateway entry present; read again on SIGHUP', placeholder: 'FILE' },
  'tls-key-file': { kind: 'string', help: "-ingress: PEM private key of -tls-cert-file's certificate (unencrypted); read again on SIGHUP", placeholder: 'FILE' },
  'ca-change-jitter': { kind: 'string', help: 'Longest random wait before re-issuing the leaf after a root rotation', placeholder: 'DURATION', default: '30s' },
  ...DATA_PLANE_SERVE_FLAGS,
};

const SERVICE_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export async function cmdConnectGateway(argv: readonly string[], io: GatewayCliIo): Promise<number> {
  const usage = usageText('connect gateway', '-ingress -service NAME [options] | -mesh -service NAME -address HOST:PORT [-wan-address HOST:PORT] [options]', GATEWAY_FLAGS);
  if (argv.some((a) => a === '-h' || a === '-help' || a === '--help')) return (io.out(usage), 0);
  const f = parseFlags(argv, GATEWAY_FLAGS);
  if (f.positionals.length > 0) throw new UsageError(`unexpected argument: ${f.positionals[0]}`);
  const mesh = f.bools.get('mesh') === true;
  if (mesh && f.bools.get('ingress') === true) throw new UsageError('give one of -ingress and -mesh');
  const certFile = f.strings.get('tls-cert-file');
  const keyFile = f.strings.get('tls-key-file');
  if (mesh && (certFile !== undefined || keyFile !== undefined)) throw new UsageError('-tls-cert-file and -tls-key-file are for ingress gateways (-ingress): a mesh gateway does not terminate TLS');
  if (mesh) return cmdMeshGateway(f, io);
  if ((certFile === undefined) !== (keyFile === undefined)) throw new UsageError(`${certFile === undefined ? '-tls-key-file' : '-tls-cert-file'} needs ${certFile === undefined ? '-tls-cert-file' : '-tls-key-file'}: give both`);
  if (certFile === '' || keyFile === '') throw new UsageError(`${certFile === '' ? '-tls-cert-file' : '-tls-key-file'} needs a file name`);
  if (f.bools.get('ingress') !== true) throw new UsageError('give -ingress (an ingress gateway) or -mesh (a mesh gateway)');
  if (f.strings.has('wan-address')) throw new UsageError('-wan-address is for mesh gateways (-mesh)');
  const name = f.strings.get('service');
  if (name === undefined) throw new UsageError('-service is required: the name of the ingress-gateway config entry');
  if (!SERVICE_RE.test(name)) throw new UsageError(`-service ${JSON.stringify(name)} is not a valid service name`);
  const address = f.strings.get('address') ?? '127.0.0.1';
  if (address === '' || /^[^:[\]]+:\d+$/.test(address) || /^\[.*\]:\d+$/.test(address)) throw new UsageError(`-address takes a HOST (the ports come from the ingress-gateway entry), got ${JSON.stringify(address)}`);
  const host = address.startsWith('[') && address.endsWith(']') ? address.slice(1, -1) : address;
  const tlsRaw = f.strings.get('tls-min-version') ?? 'TLSv1_3';
  if (tlsRaw !== 'TLSv1_3' && tlsRaw !== 'TLSv1_2') throw new UsageError(`-tls-min-version must be TLSv1_3 or TLSv1_2, not ${JSON.stringify(tlsRaw)}`);
  let jitterMs: number;
  try {
    jitterMs = parseDuration(f.strings.get('ca-change-jitter') ?? '30s', 'ca-change-jitter');
  } catch {
    throw new UsageError(`-ca-change-jitter must be a duration such as 30s, got ${JSON.stringify(f.strings.get('ca-change-jitter'))}`);
  }
  const metricsRaw = f.strings.get('metrics-addr');
  const workers = parseWorkers(f.strings.get('workers'));
  const accessLog = f.strings.get('access-log');
  const serve = parseDataPlaneServeFlags(f);
  // SIGHUP is taken over before anything starts: a reload sent early must not kill the gateway.
  const signals = serveSignals('gateway', io.log);
  const { IngressGateway, GatewaySetupError } = await import('./ingress.ts');
  const client = apiClient(f);
  const gateway = new IngressGateway({
    gateway: name,
    address: host,
    client,
    workers,
    metricsAddr: metricsRaw === undefined ? null : parseHostPort(metricsRaw, 'metrics-addr'),
    register: f.bools.get('register') === true,
    ...(accessLog === undefined ? {} : { accessLog }),
    log: io.log,
    tlsMinVersion: tlsRaw === 'TLSv1_2' ? 'TLSv1.2' : 'TLSv1.3',
    caChangeJitterMs: jitterMs,
    workerMemoryLimitMb: serve.workerMemoryLimitMb,
    ...(certFile === undefined || keyFile === undefined ? {} : { tlsFiles: { certFile, keyFile } }),
  });
  let addrs;
  try {
    addrs = await gateway.start();
  } catch (e) {
    await gateway.stop().catch(() => undefined);
    if (e instanceof GatewaySetupError) {
      io.err(`meshd connect gateway: ${e.message}`);
      return 1;
    }
    if (e instanceof ApiError && e.status === 403) {
      io.err(`meshd connect gateway: the agent refuses to let this gateway act as service "${name}" (HTTP 403): ${e.message}`);
      return 1;
    }
    if ((e as { code?: string }).code === 'EADDRINUSE') {
      io.err(`meshd connect gateway: a listener port is already in use (${(e as Error).message}): free it or change the ingress-gateway entry`);
      return 1;
    }
    throw e;
  }
  const parts = [`service=${name}`];
  for (const l of addrs.listeners) parts.push(`${l.name}=${l.bound.host}:${l.bound.port}`);
  const tlsListeners = addrs.listeners.filter((l) => l.tls !== null).map((l) => l.name);
  if (tlsListeners.length > 0) parts.push(`tls=${tlsListeners.join(',')}`);
  if (addrs.metrics !== null) parts.push(`metrics=${addrs.metrics.host}:${addrs.metrics.port}`);
  parts.push(`workers=${workers}`);
  io.out(`meshd gateway ready: ${parts.join(' ')}`);
  return serveUntilSignal(gateway, { client, f, io, signals, drainTimeoutMs: serve.drainTimeoutMs, describe: (r) => describeReload('gateway', r) });
}

/** `-mesh`: a mesh gateway (./mesh.ts). */
async function cmdMeshGateway(f: ParsedFlags, io: GatewayCliIo): Promise<number> {
  const name = f.strings.get('service');
  if (name === undefined) throw new UsageError('-service is required: the mesh gateway\'s catalog name (for example mesh-gateway)');
  if (!SERVICE_RE.test(name)) throw new UsageError(`-service ${JSON.stringify(name)} is not a valid service name`);
  const addressRaw = f.strings.get('address');
  if (addressRaw === undefined) throw new UsageError('-address HOST:PORT is required with -mesh: the LAN listener (port 0: any free port)');
  const lan = parseHostPort(addressRaw, 'address');
  const wanRaw = f.strings.get('wan-address');
  const wan = wanRaw === undefined ? null : parseHostPort(wanRaw, 'wan-address');
  // -tls-min-version, -ca-change-jitter and -access-log have defaults and no meaning here: the
  // gateway makes no TLS connection of its own and logs no HTTP request.
  const metricsRaw = f.strings.get('metrics-addr');
  const workers = parseWorkers(f.strings.get('workers'));
  const serve = parseDataPlaneServeFlags(f);
  const signals = serveSignals('gateway', io.log);
  const { MeshGateway } = await import('./mesh.ts');
  const client = apiClient(f);
  const gateway = new MeshGateway({
    name,
    lan,
    wan,
    client,
    workers,
    metricsAddr: metricsRaw === undefined ? null : parseHostPort(metricsRaw, 'metrics-addr'),
    register: f.bools.get('register') === true,
    log: io.log,
    workerMemoryLimitMb: serve.workerMemoryLimitMb,
  });
  let addrs;
  try {
    addrs = await gateway.start();
  } catch (e) {
    await gateway.stop().catch(() => undefined);
    if (e instanceof ApiError && e.status === 403) {
      io.err(`meshd connect gateway: the agent refuses to let this gateway act as service "${name}" (HTTP 403): ${e.message}`);
      return 1;
    }
    if ((e as { code?: string }).code === 'EADDRINUSE') {
      io.err(`meshd connect gateway: ${wan === null ? '-address' : '-address or -wan-address'} is already in use (${(e as Error).message})`);
      return 1;
    }
    throw e;
  }
  const parts = [`service=${name}`, `identity=${addrs.identity}`, `lan=${hostPort(addrs.lan)}`, `wan=${hostPort(addrs.wan)}`];
  if (addrs.metrics !== null) parts.push(`metrics=${hostPort(addrs.metrics)}`);
  parts.push(`workers=${workers}`);
  io.out(`meshd gateway ready: ${parts.join(' ')}`);
  return serveUntilSignal(gateway, {
    client,
    f,
    io,
    signals,
    drainTimeoutMs: serve.drainTimeoutMs,
    describe: (r) => `[${r.failedWatches === 0 && r.registered ? 'INFO' : 'WARN'}] gateway: reloaded: re-read ${r.watches - r.failedWatches} of ${r.watches} watches${r.registered ? '' : '; registering again failed'}; listeners and open connections untouched`,
  });
}

function hostPort(a: { readonly host: string; readonly port: number }): string {
  return a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;
}

/**
 * What both gateways do once ready: SIGHUP re-reads the token file and reloads (logged with
 * `describe`); the first SIGTERM/SIGINT deregisters and drains, then the process exits 0.
 */
async function serveUntilSignal<R>(
  gateway: { reload(): Promise<R>; stop(o: { drainTimeoutMs: number }): Promise<void> },
  o: { client: Pick<AgentClient, 'setToken'>; f: Parameters<typeof apiToken>[0]; io: { log(line: string): void }; signals: ReturnType<typeof serveSignals>; drainTimeoutMs: number; describe: (r: R) => string },
): Promise<number> {
  o.signals.onReload(() => {
    try {
      o.client.setToken(apiToken(o.f));
    } catch (e) {
      o.io.log(`[WARN] gateway: reload: cannot read the token, keeping the current one: ${(e as Error).message}`);
    }
    gateway.reload().then(
      (r) => o.io.log(o.describe(r)),
      (e: Error) => o.io.log(`[ERROR] gateway: reload failed: ${e.message}`),
    );
  });
  const sig = await o.signals.until();
  o.io.log(`[INFO] gateway: caught ${sig}, deregistering and draining for up to ${o.drainTimeoutMs} ms (send it again to exit at once)`);
  await gateway.stop({ drainTimeoutMs: o.drainTimeoutMs });
  o.io.log('[INFO] gateway: drained, exiting');
  return 0;
}
