// The `meshd` command line. Consul's verbs and flags: `agent`, `connect proxy`,
// `intention create|check|get|list|delete`; plus `demo` (what `npm start` runs) and `version`.
// Exit codes: 0 ok, 1 runtime failure, 2 usage error (and, for `intention check`, Consul's
// 0 allowed / 1 denied / 2 error).

import { tmpdir } from 'node:os';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { DATACENTER_RE, UUID_RE, parseDuration, parseJson } from '../control/decode.ts';
import { CA_CONFIG_OBJECT_KEYS, collapseBlocks, parseConfigText } from '../config/hcl.ts';
import { join } from 'node:path';
import { parseFlags, parseHostPort, parseUpstream, parseWorkers, usageText, UsageError, type FlagSpecs, type ParsedFlags } from './flags.ts';
import { AgentUnreachable, ApiError, type AgentClient } from '../control/client.ts';
import { HTTP_API_FLAGS as HTTP_ADDR, TokenFileError, apiClient, apiToken } from './http-api.ts';
import { DATA_PLANE_SERVE_FLAGS, describeReload, parseDataPlaneServeFlags, serveSignals } from './serve.ts';
import { VERSION } from '../version.ts';
import type { ProxyLimits } from '../dataplane/limits.ts';
import type { UpstreamSpec } from '../workers/messages.ts';

const TOP_USAGE = `Usage: meshd <command> [args]

meshd is a zero-trust service mesh modelled on Consul Connect.

Commands:
  agent            Run the authority: CA, catalog, intentions, HTTP API
  connect proxy    Run a sidecar proxy for one service
  connect gateway  Run an ingress gateway (-ingress) for an ingress-gateway config entry
  intention        Create, check, list, match, explain and delete service intentions
  config           Write, read, list and delete config entries (HCL or JSON)
  services         Register and deregister service definitions (HCL or JSON)
  demo             Start an agent and a demo mesh (what \`npm start\` runs)
  version          Print the version

Run \`meshd <command> -help\` for a command's flags.
`;

function out(text: string): void {
  process.stdout.write(text.endsWith('\n') ? text : `${text}\n`);
}

function err(text: string): void {
  process.stderr.write(text.endsWith('\n') ? text : `${text}\n`);
}

function logLine(line: string): void {
  process.stderr.write(`${new Date().toISOString()} ${line}\n`);
}

function wantsHelp(argv: readonly string[]): boolean {
  return argv.some((a) => a === '-h' || a === '-help' || a === '--help');
}

/** -http-addr, -token / -token-file and their environment variables (./http-api.ts). */
function client(flags: ParsedFlags): AgentClient {
  return apiClient(flags);
}


// ---------------------------------------------------------------------------------- agent

const AGENT_FLAGS: FlagSpecs = {
  dev: { kind: 'bool', help: 'Development mode: open API (ACLs off: no token needed), state in a temporary directory unless -data-dir is given' },
  // No env: the listen address is only ever chosen explicitly (MESHD_HTTP_ADDR is the clients'
  // variable, as CONSUL_HTTP_ADDR). A non-loopback address is allowed, with a warning.
  'http-addr': { kind: 'string', help: 'Address the HTTP API listens on (a non-loopback address is reachable from other hosts: the agent warns)', placeholder: 'HOST:PORT', default: '127.0.0.1:8500' },
  'data-dir': { kind: 'string', help: 'Directory for persistent state (CA root, catalog, intentions)', placeholder: 'DIR' },
  datacenter: { kind: 'string', help: 'Datacenter name', placeholder: 'NAME', default: 'dc1' },
  node: { kind: 'string', help: 'Node name (default: the hostname)', placeholder: 'NAME' },
  'default-intention-policy': { kind: 'string', help: 'Decision when no intention matches: allow or deny', placeholder: 'POLICY', default: 'deny' },
  'initial-management-token': { kind: 'string', help: 'Management token: may do everything, including creating service tokens (default: bootstrapped into DIR/acl-management-token)', placeholder: 'TOKEN', env: 'MESHD_INITIAL_MANAGEMENT_TOKEN' },
  'token-file': { kind: 'string', help: 'File holding the management token (instead of the one bootstrapped into DIR/acl-management-token)', placeholder: 'FILE' },
  'primary-datacenter': { kind: 'string', help: 'The datacenter that owns the CA root and the config entries (default: this -datacenter, i.e. this agent is the primary)', placeholder: 'NAME' },
  'join-wan': { kind: 'string', help: "A secondary's way to the primary: the primary agent's HTTP API (required when -primary-datacenter is another datacenter)", placeholder: 'HOST:PORT' },
  'replication-token-file': { kind: 'string', help: "File holding the token a secondary presents to the primary (Consul's acl.tokens.replication; not needed when the primary runs -dev)", placeholder: 'FILE' },
};

/**
 * Federation flags: -primary-datacenter (default: -datacenter, this agent is the primary),
 * -join-wan (a secondary's only way to the primary; refused on a primary, where nobody
 * would use it) and -replication-token-file (the secondary's token at the primary).
 */
async function federationFlags(f: ParsedFlags, datacenter: string): Promise<{ primaryDatacenter: string; joinWan?: string; replicationToken: string | null }> {
  const primary = f.strings.get('primary-datacenter') ?? datacenter;
  if (!DATACENTER_RE.test(primary)) throw new UsageError('-primary-datacenter must be lower-case letters, digits, "-" or "_"');
  const join = f.strings.get('join-wan');
  const tokenFile = f.strings.get('replication-token-file');
  if (primary === datacenter) {
    if (join !== undefined) throw new UsageError(`-join-wan is for a secondary datacenter; this agent is the primary (-datacenter ${datacenter}${f.strings.has('primary-datacenter') ? '' : ', and -primary-datacenter defaults to it'}): give -primary-datacenter NAME of the primary to join it`);
    if (tokenFile !== undefined) throw new UsageError('-replication-token-file is for a secondary datacenter (with -primary-datacenter and -join-wan); the primary has nothing to replicate from');
    return { primaryDatacenter: primary, replicationToken: null };
  }
  if (join === undefined) throw new UsageError(`-join-wan HOST:PORT is required: this agent is a secondary (-datacenter ${datacenter}, -primary-datacenter ${primary}) and reaches the primary through its agent's HTTP API`);
  const hp = parseHostPort(join, 'join-wan');
  let replicationToken: string | null = null;
  if (tokenFile !== undefined) {
    const { readTokenFile } = await import('../control/acl.ts');
    try {
      replicationToken = readTokenFile(tokenFile);
    } catch (e) {
      throw new AgentSetupError(`cannot read -replication-token-file ${tokenFile}: ${(e as Error).message}`);
    }
  }
  return { primaryDatacenter: primary, joinWan: hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`, replicationToken };
}

/**
 * The agent's management token. -dev: only one given by flag (the API is open anyway).
 * Otherwise -token-file, else -initial-management-token (or its env), else the one in
 * DIR/acl-management-token, bootstrapped on first start (0600) and printed that once.
 * `reload` reads a token that came from a file again (agent reload); absent otherwise.
 */
async function managementToken(f: ParsedFlags, dev: boolean, dataDir: string): Promise<{ token: string | null; reload?: () => string }> {
  const { loadOrBootstrapManagementToken, readTokenFile, tokenFileIsShared } = await import('../control/acl.ts');
  const file = f.strings.get('token-file');
  const given = f.strings.get('initial-management-token');
  if (file !== undefined && given !== undefined) throw new UsageError('give -token-file or -initial-management-token, not both');
  if (file !== undefined) {
    let token: string;
    try {
      token = readTokenFile(file);
    } catch (e) {
      throw new AgentSetupError(`cannot read -token-file ${file}: ${(e as Error).message}`);
    }
    if (tokenFileIsShared(file)) logLine(`[WARN] agent: token file ${file} is readable by group or others: chmod 600 it`);
    return { token, reload: () => readTokenFile(file) };
  }
  if (given !== undefined) return { token: given };
  if (dev) return { token: null };
  let boot: ReturnType<typeof loadOrBootstrapManagementToken>;
  try {
    boot = loadOrBootstrapManagementToken(dataDir);
  } catch (e) {
    throw new AgentSetupError(`cannot read or create the management token in ${dataDir}: ${(e as Error).message}`);
  }
  if (boot.created) {
    logLine(`[WARN] agent: ACL bootstrap: created the management token ${boot.token} (shown this once)`);
    logLine(`[WARN] agent: the management token is saved in ${boot.path} (mode 0600): use it with -token-file ${boot.path} or MESHD_HTTP_TOKEN_FILE=${boot.path}`);
  } else {
    if (tokenFileIsShared(boot.path)) logLine(`[WARN] agent: token file ${boot.path} is readable by group or others: chmod 600 it`);
    logLine(`[INFO] agent: management token read from ${boot.path}`);
  }
  return { token: boot.token, reload: () => readTokenFile(boot.path) };
}

/** A start-up problem the agent reports in one line (exit 1). */
class AgentSetupError extends Error {
  override readonly name = 'AgentSetupError';
}

async function cmdAgent(argv: readonly string[]): Promise<number> {
  const usage = usageText('agent', '-data-dir DIR [options] | -dev [options]', AGENT_FLAGS);
  if (wantsHelp(argv)) return (out(usage), 0);
  const f = parseFlags(argv, AGENT_FLAGS);
  if (f.positionals.length > 0) throw new UsageError(`unexpected argument: ${f.positionals[0]}`);
  const dev = f.bools.get('dev') === true;
  let dataDir = f.strings.get('data-dir') ?? null;
  // Outside -dev the CA key, the catalog and the management token must survive a restart:
  // there is no in-memory mode that would print a token nobody can recover.
  if (!dev && dataDir === null) throw new UsageError('-data-dir is required: it keeps the CA, the catalog and the bootstrapped management token (or use -dev for a throwaway agent with an open API)');
  const policy = f.strings.get('default-intention-policy');
  if (policy !== 'allow' && policy !== 'deny') throw new UsageError('-default-intention-policy must be allow or deny');
  const datacenter = f.strings.get('datacenter') ?? 'dc1';
  if (!DATACENTER_RE.test(datacenter)) throw new UsageError('-datacenter must be lower-case letters, digits, "-" or "_"');
  const addr = parseHostPort(f.strings.get('http-addr') ?? '', 'http-addr');
  let federation: Awaited<ReturnType<typeof federationFlags>>;
  try {
    federation = await federationFlags(f, datacenter);
  } catch (e) {
    if (!(e instanceof AgentSetupError)) throw e;
    err(`meshd agent: ${e.message}`);
    return 1;
  }
  let tempDir: string | null = null;
  if (dataDir === null) {
    tempDir = mkdtempSync(join(tmpdir(), 'meshd-dev-'));
    dataDir = tempDir;
  }
  // SIGHUP is taken over before anything starts: a reload sent early must not kill the agent.
  const signals = serveSignals('agent', logLine);
  const { Agent } = await import('../control/agent.ts');
  const { isLoopbackHost } = await import('../control/acl.ts');
  const node = f.strings.get('node');
  let agent: InstanceType<typeof Agent>;
  let management: Awaited<ReturnType<typeof managementToken>>;
  try {
    management = await managementToken(f, dev, dataDir);
  } catch (e) {
    if (!(e instanceof AgentSetupError)) throw e;
    err(`meshd agent: ${e.message}`);
    if (tempDir !== null) rmSync(tempDir, { recursive: true, force: true });
    return 1;
  }
  try {
    agent = new Agent({
      host: addr.host,
      port: addr.port,
      dataDir,
      datacenter,
      defaultAllow: policy === 'allow',
      dev,
      managementToken: management.token,
      ...(management.reload === undefined ? {} : { reloadManagementToken: management.reload }),
      ...(node === undefined ? {} : { nodeName: node }),
      primaryDatacenter: federation.primaryDatacenter,
      ...(federation.joinWan === undefined ? {} : { joinWan: federation.joinWan }),
      replicationToken: federation.replicationToken,
    });
    await agent.start();
  } catch (e) {
    if (e instanceof Error && (e.name === 'CaStateError' || /state\.json/.test(e.message))) {
      err(`meshd agent: ${e.message}`);
      return 1;
    }
    const code = (e as { code?: string }).code;
    if (code === 'EADDRINUSE') {
      err(`meshd agent: ${addr.host}:${addr.port} is already in use: stop the process using it or choose another -http-addr`);
      return 1;
    }
    throw e;
  }
  const a = agent.address;
  const where = `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`;
  if (dev) {
    logLine(`[WARN] agent: DEV MODE, ACLs DISABLED: the HTTP API at ${where} answers every caller without a token (intentions, config, registrations, CA settings; certificates to loopback callers). Never use -dev outside development.`);
  }
  if (!isLoopbackHost(addr.host)) {
    logLine(`[WARN] agent: the HTTP API listens on ${where}, reachable from other hosts over plain HTTP${dev ? ' and open to all of them (-dev)' : ': tokens cross the network in clear text'}; the default is 127.0.0.1`);
  }
  if (federation.joinWan !== undefined) {
    logLine(`[INFO] agent: secondary datacenter ${datacenter}: replicating the CA, config entries and federation states from the primary ${federation.primaryDatacenter} at ${federation.joinWan}${federation.replicationToken === null ? ' (no -replication-token-file: works only if the primary runs -dev)' : ''}`);
  }
  // A secondary that has not reached its primary yet does not know the trust domain.
  out(`meshd agent ready: http=${a.address}:${a.port} datacenter=${datacenter} primary-datacenter=${federation.primaryDatacenter} trust-domain=${agent.trustDomain || 'pending'} data-dir=${dataDir} acl=${dev ? 'disabled' : 'enabled'}`);
  const ready = agent;
  signals.onReload(() => {
    ready.reload().then(
      (r) => logLine(`[INFO] agent: reloaded: ${r.tokenReloaded ? 'management token read again, ' : ''}${r.checks} health-check probes restarted, CA rate limits and intention table re-applied`),
      (e: Error) => logLine(`[ERROR] agent: reload failed, nothing changed: ${e.message}`),
    );
  });
  const sig = await signals.until();
  logLine(`[INFO] agent: caught ${sig}, shutting down`);
  await agent.stop();
  if (tempDir !== null) rmSync(tempDir, { recursive: true, force: true });
  return 0;
}

// ---------------------------------------------------------------------------------- proxy

const PROXY_FLAGS: FlagSpecs = {
  ...HTTP_ADDR,
  service: { kind: 'string', help: 'Name of the service this proxy represents', placeholder: 'NAME' },
  'service-addr': { kind: 'string', help: 'Address of the local app (required with -listen)', placeholder: 'HOST:PORT' },
  listen: { kind: 'string', help: 'Address of the public mTLS listener', placeholder: 'HOST:PORT' },
  upstream: { kind: 'list', help: 'Upstream as NAME:PORT or NAME:HOST:PORT; listens on 127.0.0.1:PORT by default', placeholder: 'NAME:PORT' },
  workers: { kind: 'string', help: 'Data-plane worker threads (default: available parallelism)', placeholder: 'N', env: 'MESHD_WORKERS' },
  'metrics-addr': { kind: 'string', help: 'Address to serve Prometheus /metrics on', placeholder: 'HOST:PORT' },
  'access-log': { kind: 'string', help: 'Write one JSON line per HTTP request and per TCP connection (pino, buffered) to stdout, stderr or a file; off by default', placeholder: 'stdout|stderr|PATH' },
  'tls-session-resumption': { kind: 'bool', help: 'Resume TLS sessions to upstream sidecars on tcp upstreams (a small per-instance cache; -tls-session-resumption=false makes every connection a full mTLS handshake); on by default' },
  'metrics-format': {
    kind: 'string',
    help: "Names and labels of /metrics: meshd (meshd_* names, seconds) or envoy (Envoy's stat names with Consul's consul_* labels, milliseconds)",
    placeholder: 'FORMAT',
    default: 'meshd',
  },
  register: { kind: 'bool', help: 'Register the service and this sidecar in the agent catalog' },
  'register-id': { kind: 'string', help: 'Suffix of the sidecar registration ID (<service>-proxy-<suffix>)', placeholder: 'SUFFIX' },
  'service-tag': { kind: 'list', help: 'Tag of the service instance, registered on the sidecar too (for resolver subsets)', placeholder: 'TAG' },
  'service-meta': { kind: 'list', help: 'Meta of the service instance as KEY=VALUE, registered on the sidecar too (for resolver subsets)', placeholder: 'KEY=VALUE' },
  'ca-change-jitter': { kind: 'string', help: 'Longest random wait before re-issuing the leaf after a root rotation (spreads the CSR load)', placeholder: 'DURATION', default: '30s' },
  'tls-min-version': { kind: 'string', help: "Lowest TLS version of the public listener and upstream connections: TLSv1_3, or TLSv1_2 to also allow TLS 1.2 with ECDHE+AEAD suites only (Consul's TLSMinVersion spelling)", placeholder: 'VERSION', default: 'TLSv1_3' },
  'handshake-timeout': { kind: 'string', help: 'Close a public-listener connection whose TLS handshake has not finished after this long', placeholder: 'DURATION', default: '10s' },
  'max-concurrent-handshakes': { kind: 'string', help: 'TLS handshakes in progress per worker on the public listener; new connections over it are closed at once (counted as overloaded)', placeholder: 'N', default: '1024' },
  // Limits (src/dataplane/limits.ts): connections count over all workers; request limits are
  // shared out, each worker admitting ceil(N / workers).
  'max-connections': { kind: 'string', help: 'Connections open at once over all listeners of this proxy; more are closed at accept (counted as proxy_connection_limit)', placeholder: 'N', default: '8192' },
  'max-inbound-connections': { kind: 'string', help: 'Connections open at once on the public listener (TLS handshakes included); more are closed at accept (listener_connection_limit)', placeholder: 'N', default: '4096' },
  'max-upstream-connections': { kind: 'string', help: 'Connections open at once on each upstream listener; more are closed at accept (listener_connection_limit)', placeholder: 'N', default: '4096' },
  'max-concurrent-requests': { kind: 'string', help: 'HTTP requests in progress per listener (each worker admits ceil(N/workers)); more are answered 503 at once (flag overflow)', placeholder: 'N', default: '1024' },
  'max-requests-per-source': { kind: 'string', help: 'HTTP requests in progress on the public listener per calling service (each worker admits ceil(N/workers)); more are answered 429 at once (flag source_limit)', placeholder: 'N', default: '512' },
  'http-idle-timeout': { kind: 'string', help: 'Close an HTTP connection (public or upstream listener) after this long without a request', placeholder: 'DURATION', default: '120s' },
  'tcp-idle-timeout': { kind: 'string', help: 'Close a tcp (L4) connection after this long without a byte either way; 0 for never', placeholder: 'DURATION', default: '1h' },
  'upstream-idle-timeout': { kind: 'string', help: "Close pooled connections to upstream sidecars and to the local app after this long unused (keep it below the peers' -http-idle-timeout)", placeholder: 'DURATION', default: '60s' },
  'max-event-loop-delay': {
    kind: 'string',
    help: "Shed load when a worker's event loop runs this late (p90 over 100 ms): new HTTP requests get 503 (flag overflow) and new connections are closed at accept (overload) until it is back under half of it; 0 never sheds",
    placeholder: 'DURATION',
    default: '0',
  },
  ...DATA_PLANE_SERVE_FLAGS,
  'sidecar-for': {
    kind: 'string',
    help: 'Run the sidecar registered for this service ID (connect { sidecar_service {} }): service, addresses, upstreams, tags and meta come from the agent; nothing is re-registered',
    placeholder: 'ID',
  },
};

async function cmdConnect(argv: readonly string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === 'ca') return cmdConnectCa(rest);
  if (sub === 'gateway') {
    const { cmdConnectGateway } = await import('../gateway/cli.ts');
    return cmdConnectGateway(rest, { out, err, log: logLine });
  }
  if (sub !== 'proxy') {
    if (sub === undefined || wantsHelp(argv)) return (out('Usage: meshd connect <proxy|gateway|ca> [options]\n'), sub === undefined ? 2 : 0);
    throw new UsageError(`unknown connect subcommand: ${sub} (try: meshd connect proxy)`);
  }
  const usage = usageText('connect proxy', '-service NAME [options] | -sidecar-for ID [options]', PROXY_FLAGS);
  if (wantsHelp(rest)) return (out(usage), 0);
  const f = parseFlags(rest, PROXY_FLAGS);
  if (f.positionals.length > 0) throw new UsageError(`unexpected argument: ${f.positionals[0]}`);
  const serve = parseDataPlaneServeFlags(f);
  // SIGHUP is taken over before anything starts: a reload sent early must not kill the proxy.
  const signals = serveSignals('proxy', logLine);
  const metricsRaw = f.strings.get('metrics-addr');
  const metricsFormat = f.strings.get('metrics-format') ?? 'meshd';
  if (metricsFormat !== 'meshd' && metricsFormat !== 'envoy') throw new UsageError(`-metrics-format must be meshd or envoy, not ${JSON.stringify(metricsFormat)}`);
  const sidecarFor = f.strings.get('sidecar-for');
  let service: string;
  let serviceAddr: { host: string; port: number } | null;
  let listen: { host: string; port: number } | null;
  let upstreams: UpstreamSpec[];
  let meshGatewayMode: UpstreamSpec['meshGatewayMode'];
  let register: boolean;
  let registerId: string | undefined;
  let tags: string[];
  const meta: Record<string, string> = {};
  if (sidecarFor !== undefined) {
    // The registration supplies everything the flags mode takes from flags.
    for (const flag of ['service', 'service-addr', 'listen', 'register-id'] as const) if (f.strings.has(flag)) throw new UsageError(`-${flag} cannot be combined with -sidecar-for (the registration supplies it)`);
    for (const flag of ['upstream', 'service-tag', 'service-meta'] as const) if (f.lists.has(flag)) throw new UsageError(`-${flag} cannot be combined with -sidecar-for (the registration supplies it)`);
    if (f.bools.get('register') === true) throw new UsageError('-register cannot be combined with -sidecar-for: the sidecar is registered already');
    const { planSidecarFor, SidecarForError } = await import('./sidecar-for.ts');
    let plan;
    try {
      plan = await planSidecarFor(client(f), sidecarFor);
    } catch (e) {
      if (e instanceof SidecarForError) {
        err(`meshd connect proxy: ${e.message}`);
        return 1;
      }
      throw e;
    }
    ({ service, serviceAddr, listen, upstreams, tags } = plan);
    meshGatewayMode = plan.meshGatewayMode;
    Object.assign(meta, plan.meta);
    register = false;
    logLine(`[INFO] proxy: running sidecar ${plan.proxyId} for service ID ${sidecarFor}`);
  } else {
    const name = f.strings.get('service');
    if (name === undefined) throw new UsageError('-service is required');
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(name)) throw new UsageError(`-service ${JSON.stringify(name)} is not a valid service name`);
    service = name;
    const listenRaw = f.strings.get('listen');
    const serviceAddrRaw = f.strings.get('service-addr');
    if (listenRaw !== undefined && serviceAddrRaw === undefined) throw new UsageError('-service-addr is required with -listen');
    upstreams = (f.lists.get('upstream') ?? []).map(parseUpstream);
    if (listenRaw === undefined && upstreams.length === 0) throw new UsageError('nothing to do: give -listen (inbound) and/or -upstream (outbound)');
    const names = new Set<string>();
    for (const u of upstreams) {
      if (names.has(u.name)) throw new UsageError(`-upstream ${u.name} given twice`);
      names.add(u.name);
    }
    register = f.bools.get('register') === true;
    if (register && listenRaw === undefined) throw new UsageError('-register needs -listen');
    registerId = f.strings.get('register-id');
    Object.assign(meta, parseKeyValues('service-meta', f.lists.get('service-meta') ?? []));
    tags = f.lists.get('service-tag') ?? [];
    serviceAddr = serviceAddrRaw === undefined ? null : parseHostPort(serviceAddrRaw, 'service-addr');
    listen = listenRaw === undefined ? null : parseHostPort(listenRaw, 'listen');
  }
  const { SidecarProxy } = await import('../control/proxy.ts');
  const agentClient = client(f);
  const proxy = new SidecarProxy({
    service,
    serviceAddr,
    listen,
    upstreams,
    client: agentClient,
    workers: parseWorkers(f.strings.get('workers')),
    metricsAddr: metricsRaw === undefined ? null : parseHostPort(metricsRaw, 'metrics-addr'),
    metricsFormat,
    ...(f.strings.get('access-log') === undefined ? {} : { accessLog: f.strings.get('access-log') }),
    tlsSessionResumption: f.bools.get('tls-session-resumption') !== false,
    register,
    ...(registerId === undefined ? {} : { registerId }),
    tags,
    meta,
    log: logLine,
    caChangeJitterMs: parseDurationFlag(f.strings.get('ca-change-jitter') ?? '30s', 'ca-change-jitter'),
    tlsMinVersion: parseTlsMinVersion(f.strings.get('tls-min-version') ?? 'TLSv1_3'),
    handshakeTimeoutMs: parseHandshakeTimeout(f.strings.get('handshake-timeout') ?? '10s'),
    maxConcurrentHandshakes: parsePositiveInt(f.strings.get('max-concurrent-handshakes') ?? '1024', 'max-concurrent-handshakes'),
    limits: parseLimits(f),
    workerMemoryLimitMb: serve.workerMemoryLimitMb,
    ...(meshGatewayMode === undefined ? {} : { meshGatewayMode }),
  });
  let addrs;
  try {
    addrs = await proxy.start();
  } catch (e) {
    await proxy.stop().catch(() => undefined);
    if (e instanceof ApiError && e.status === 403) {
      err(`meshd connect proxy: the agent refuses to let this proxy act as service "${service}" (HTTP 403): ${e.message}`);
      return 1;
    }
    const code = (e as { code?: string }).code;
    if (code === 'EADDRINUSE') {
      err(`meshd connect proxy: a listen address is already in use (${(e as Error).message}): free the port or choose another`);
      return 1;
    }
    throw e;
  }
  const parts = [`service=${service}`];
  if (addrs.inbound !== null) parts.push(`inbound=${addrs.inbound.host}:${addrs.inbound.port}`);
  for (const [name, a] of Object.entries(addrs.upstreams)) parts.push(`upstream.${name}=${a.host}:${a.port}`);
  if (addrs.metrics !== null) parts.push(`metrics=${addrs.metrics.host}:${addrs.metrics.port}`);
  parts.push(`workers=${parseWorkers(f.strings.get('workers'))}`);
  out(`meshd proxy ready: ${parts.join(' ')}`);
  signals.onReload(() => {
    // A rotated token file is read again (a token given by flag or variable stays as it is).
    try {
      agentClient.setToken(apiToken(f));
    } catch (e) {
      logLine(`[WARN] proxy: reload: cannot read the token, keeping the current one: ${(e as Error).message}`);
    }
    proxy.reload().then(
      (r) => logLine(describeReload('proxy', r)),
      (e: Error) => logLine(`[ERROR] proxy: reload failed: ${e.message}`),
    );
  });
  const sig = await signals.until();
  logLine(`[INFO] proxy: caught ${sig}, deregistering and draining for up to ${serve.drainTimeoutMs} ms (send it again to exit at once)`);
  await proxy.stop({ drainTimeoutMs: serve.drainTimeoutMs });
  logLine('[INFO] proxy: drained, exiting');
  return 0;
}

const CA_SET_FLAGS: FlagSpecs = {
  ...HTTP_ADDR,
  'config-file': { kind: 'string', help: 'JSON or HCL file with the CA configuration (Provider = "consul", Config { ... })', placeholder: 'FILE' },
};

async function cmdConnectCa(argv: readonly string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'get-config': {
      if (wantsHelp(rest)) return (out(usageText('connect ca get-config', '', HTTP_ADDR)), 0);
      const f = parseFlags(rest, HTTP_ADDR);
      const r = await client(f).request('GET', '/v1/connect/ca/configuration');
      out(JSON.stringify(parseJson(r.text), null, 2));
      return 0;
    }
    case 'set-config': {
      if (wantsHelp(rest)) return (out(usageText('connect ca set-config', '-config-file FILE', CA_SET_FLAGS)), 0);
      const f = parseFlags(rest, CA_SET_FLAGS);
      const file = f.strings.get('config-file');
      if (file === undefined) throw new UsageError('-config-file is required');
      let body: unknown;
      try {
        body = collapseBlocks(await parseConfigText(readFileSync(file, 'utf8'), file), CA_CONFIG_OBJECT_KEYS);
      } catch (e) {
        err(`meshd: cannot read ${file}: ${(e as Error).message}`);
        return 1;
      }
      await client(f).request('PUT', '/v1/connect/ca/configuration', { body });
      out('Configuration updated!');
      return 0;
    }
    default:
      throw new UsageError(`unknown connect ca subcommand: ${String(sub)} (get-config or set-config)`);
  }
}

/** Consul's TLSMinVersion values; TLS 1.0 and 1.1 are not offered at all. */
function parseTlsMinVersion(value: string): 'TLSv1.2' | 'TLSv1.3' {
  if (value === 'TLSv1_3') return 'TLSv1.3';
  if (value === 'TLSv1_2') return 'TLSv1.2';
  throw new UsageError(`-tls-min-version must be TLSv1_3 or TLSv1_2, not ${JSON.stringify(value)}`);
}

/** A handshake timeout of 0 would mean none: refused, a slow client must not hold a slot forever. */
function parseHandshakeTimeout(value: string): number {
  const ms = parseDurationFlag(value, 'handshake-timeout');
  if (ms < 1) throw new UsageError(`-handshake-timeout must be positive, got ${JSON.stringify(value)}`);
  return ms;
}

/** The limit flags (their defaults are DEFAULT_LIMITS in src/dataplane/limits.ts). */
function parseLimits(f: ParsedFlags): Partial<ProxyLimits> {
  const n = (flag: string): number => parsePositiveInt(f.strings.get(flag) ?? '', flag);
  const ms = (flag: string, zeroOk: boolean): number => {
    const v = parseDurationFlag(f.strings.get(flag) ?? '', flag);
    if (v < 1 && !(zeroOk && v === 0)) throw new UsageError(`-${flag} must be positive${zeroOk ? ' (or 0 for never)' : ''}, got ${JSON.stringify(f.strings.get(flag))}`);
    return v;
  };
  return {
    maxConnections: n('max-connections'),
    maxInboundConnections: n('max-inbound-connections'),
    maxUpstreamConnections: n('max-upstream-connections'),
    maxConcurrentRequests: n('max-concurrent-requests'),
    maxRequestsPerSource: n('max-requests-per-source'),
    httpIdleTimeoutMs: ms('http-idle-timeout', false),
    tcpIdleTimeoutMs: ms('tcp-idle-timeout', true),
    upstreamIdleTimeoutMs: ms('upstream-idle-timeout', false),
    maxEventLoopDelayMs: ms('max-event-loop-delay', true),
  };
}

function parsePositiveInt(value: string, flag: string): number {
  const n = /^[0-9]{1,9}$/.test(value) ? Number(value) : NaN;
  if (!(n >= 1)) throw new UsageError(`-${flag} must be a whole number of at least 1, got ${JSON.stringify(value)}`);
  return n;
}

function parseDurationFlag(value: string, flag: string): number {
  try {
    return parseDuration(value, flag);
  } catch {
    throw new UsageError(`-${flag} must be a duration such as 30s or 500ms, got ${JSON.stringify(value)}`);
  }
}

// ---------------------------------------------------------------------------------- config

const CONFIG_KIND_FLAGS: FlagSpecs = {
  ...HTTP_ADDR,
  kind: { kind: 'string', help: 'Config entry kind (service-intentions, service-defaults, service-router, service-splitter, service-resolver, jwt-provider, ingress-gateway)', placeholder: 'KIND' },
  name: { kind: 'string', help: 'Config entry name', placeholder: 'NAME' },
};

async function cmdConfig(argv: readonly string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'write': {
      const flags: FlagSpecs = { ...HTTP_ADDR, cas: { kind: 'bool', help: 'Check-and-set with -modify-index' }, 'modify-index': { kind: 'string', help: 'ModifyIndex for -cas (0: only create)', placeholder: 'N' } };
      if (wantsHelp(rest)) return (out(usageText('config write', 'FILE (HCL or JSON; - for stdin)', flags)), 0);
      const f = parseFlags(rest, flags);
      if (f.positionals.length !== 1) throw new UsageError('meshd config write needs exactly one argument: FILE');
      const file = f.positionals[0] as string;
      const { ENTRY_OBJECT_KEYS } = await import('../config/entries.ts');
      let body: unknown;
      try {
        const text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
        body = collapseBlocks(await parseConfigText(text, file), ENTRY_OBJECT_KEYS);
      } catch (e) {
        err(`meshd: cannot read ${file}: ${(e as Error).message}`);
        return 1;
      }
      const query: Record<string, string> = {};
      if (f.bools.get('cas') === true) query.cas = f.strings.get('modify-index') ?? '0';
      const r = await client(f).json<boolean>('PUT', '/v1/config', { body, query });
      if (!r.value) {
        err('meshd: config entry not written: the check-and-set index did not match');
        return 1;
      }
      const b = body as Record<string, unknown>;
      out(`Config entry written: ${String(b.Kind ?? b.kind)}/${String(b.Name ?? b.name)}`);
      return 0;
    }
    case 'read':
    case 'delete': {
      if (wantsHelp(rest)) return (out(usageText(`config ${sub}`, '-kind KIND -name NAME', CONFIG_KIND_FLAGS)), 0);
      const f = parseFlags(rest, CONFIG_KIND_FLAGS);
      const kind = f.strings.get('kind');
      const name = f.strings.get('name');
      if (kind === undefined || name === undefined) throw new UsageError(`meshd config ${sub} needs -kind and -name`);
      const path = `/v1/config/${encodeURIComponent(kind)}/${encodeURIComponent(name)}`;
      if (sub === 'read') {
        const r = await client(f).request('GET', path);
        out(JSON.stringify(parseJson(r.text), null, 2));
      } else {
        await client(f).request('DELETE', path);
        out(`Config entry deleted: ${kind}/${name}`);
      }
      return 0;
    }
    case 'list': {
      if (wantsHelp(rest)) return (out(usageText('config list', '-kind KIND', CONFIG_KIND_FLAGS)), 0);
      const f = parseFlags(rest, CONFIG_KIND_FLAGS);
      const kind = f.strings.get('kind');
      if (kind === undefined) throw new UsageError('meshd config list needs -kind');
      const r = await client(f).json<{ Name: string }[]>('GET', `/v1/config/${encodeURIComponent(kind)}`);
      for (const e of r.value) out(e.Name);
      return 0;
    }
    default:
      throw new UsageError(`unknown config subcommand: ${String(sub)} (write, read, list or delete)`);
  }
}

// ---------------------------------------------------------------------------------- intention

const INTENTION_CREATE_FLAGS: FlagSpecs = {
  ...HTTP_ADDR,
  allow: { kind: 'bool', help: 'Create an intention that allows the connection (the default)' },
  deny: { kind: 'bool', help: 'Create an intention that denies the connection' },
  replace: { kind: 'bool', help: 'Replace an existing intention for the same pair' },
  description: { kind: 'string', help: 'Description of the intention', placeholder: 'TEXT' },
  meta: { kind: 'list', help: 'Metadata for the intention as KEY=VALUE (repeatable); stored with the intention through the legacy ID API', placeholder: 'KEY=VALUE' },
};

function twoNames(f: ParsedFlags, cmd: string): [string, string] {
  if (f.positionals.length !== 2) throw new UsageError(`meshd intention ${cmd} needs exactly two arguments: SRC DST`);
  return [f.positionals[0] as string, f.positionals[1] as string];
}

/** `get` and `delete` take SRC DST, or one legacy intention ID, as Consul's do. */
function pairOrId(f: ParsedFlags, cmd: string): { id: string } | { src: string; dst: string } {
  const [first] = f.positionals;
  if (f.positionals.length === 1 && first !== undefined && UUID_RE.test(first)) return { id: first };
  if (f.positionals.length !== 2) throw new UsageError(`meshd intention ${cmd} needs SRC DST, or one intention ID`);
  return { src: f.positionals[0] as string, dst: f.positionals[1] as string };
}

/** Repeated `-flag KEY=VALUE` values as a map (a later key wins). */
function parseKeyValues(flag: string, values: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of values) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`-${flag} ${JSON.stringify(kv)} must be KEY=VALUE`);
    out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

interface LegacyIntentionOut {
  readonly ID?: string;
  readonly Meta?: Readonly<Record<string, string>>;
  readonly SourceName: string;
  readonly DestinationName: string;
  readonly Action: string;
  readonly Precedence: number;
  readonly Description: string;
}

async function cmdIntention(argv: readonly string[]): Promise<number> {
  const [sub, ...rest] = argv;
  const help = 'Usage: meshd intention <create|check|get|list|match|explain|delete> [options] [SRC DST]\n';
  if (sub === undefined) return (err(help), 2);
  if (sub === '-help' || sub === '--help' || sub === '-h') return (out(help), 0);
  switch (sub) {
    case 'create': {
      const usage = usageText('intention create', '[-allow|-deny] [-replace] [-meta KEY=VALUE]... SRC DST', INTENTION_CREATE_FLAGS);
      if (wantsHelp(rest)) return (out(usage), 0);
      const f = parseFlags(rest, INTENTION_CREATE_FLAGS);
      const [src, dst] = twoNames(f, 'create');
      if (f.bools.get('allow') === true && f.bools.get('deny') === true) throw new UsageError('-allow and -deny are exclusive');
      const action = f.bools.get('deny') === true ? 'deny' : 'allow';
      const c = client(f);
      const query = { source: src, destination: dst };
      if (f.bools.get('replace') !== true) {
        try {
          await c.request('GET', '/v1/connect/intentions/exact', { query });
          err(`Intention with source "${src}" and destination "${dst}" already exists: use -replace to change it`);
          return 1;
        } catch (e) {
          if (!(e instanceof ApiError && e.status === 404)) throw e;
        }
      }
      const description = f.strings.get('description') ?? '';
      const metaFlags = f.lists.get('meta') ?? [];
      if (metaFlags.length === 0) {
        await c.request('PUT', '/v1/connect/intentions/exact', { query, body: { SourceType: 'consul', Action: action, Description: description } });
      } else {
        // Per-intention Meta only exists on the legacy ID API (Consul's CLI uses it too): with
        // -replace the old pair goes first, then the new one is created with its Meta.
        if (f.bools.get('replace') === true) await c.request('DELETE', '/v1/connect/intentions/exact', { query });
        const body = { SourceName: src, DestinationName: dst, SourceType: 'consul', Action: action, Description: description, Meta: parseKeyValues('meta', metaFlags) };
        await c.request('POST', '/v1/connect/intentions', { body });
      }
      out(`Created: ${src} => ${dst} (${action})`);
      return 0;
    }
    case 'check': {
      if (wantsHelp(rest)) return (out(usageText('intention check', 'SRC DST', HTTP_ADDR)), 0);
      const f = parseFlags(rest, HTTP_ADDR);
      const [src, dst] = twoNames(f, 'check');
      const r = await client(f).json<{ Allowed: boolean }>('GET', '/v1/connect/intentions/check', { query: { source: src, destination: dst } });
      out(r.value.Allowed ? 'Allowed' : 'Denied');
      return r.value.Allowed ? 0 : 1;
    }
    case 'get': {
      if (wantsHelp(rest)) return (out(usageText('intention get', 'SRC DST | ID', HTTP_ADDR)), 0);
      const f = parseFlags(rest, HTTP_ADDR);
      const which = pairOrId(f, 'get');
      const r =
        'id' in which
          ? await client(f).json<LegacyIntentionOut>('GET', `/v1/connect/intentions/${which.id}`)
          : await client(f).json<LegacyIntentionOut>('GET', '/v1/connect/intentions/exact', { query: { source: which.src, destination: which.dst } });
      const i = r.value;
      const lines = [`Source:       ${i.SourceName}`, `Destination:  ${i.DestinationName}`, `Action:       ${i.Action}`, `Precedence:   ${i.Precedence}`, `Description:  ${i.Description}`];
      if (i.ID !== undefined) lines.unshift(`ID:           ${i.ID}`);
      const meta = Object.entries(i.Meta ?? {}).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
      if (meta.length > 0) lines.push(`Meta:         ${meta.map(([k, v]) => `${k}=${v}`).join(', ')}`);
      out(lines.join('\n'));
      return 0;
    }
    case 'list': {
      if (wantsHelp(rest)) return (out(usageText('intention list', '', HTTP_ADDR)), 0);
      const f = parseFlags(rest, HTTP_ADDR);
      if (f.positionals.length > 0) throw new UsageError('meshd intention list takes no arguments');
      const r = await client(f).json<LegacyIntentionOut[]>('GET', '/v1/connect/intentions');
      if (r.value.length === 0) {
        out('There are no intentions.');
        return 0;
      }
      const rows = [['Source', 'Action', 'Destination', 'Precedence'], ...r.value.map((i) => [i.SourceName, i.Action, i.DestinationName, String(i.Precedence)])];
      const widths = rows[0]!.map((_c, col) => Math.max(...rows.map((row) => (row[col] as string).length)));
      out(rows.map((row) => row.map((cell, col) => cell.padEnd(widths[col] as number)).join('  ').trimEnd()).join('\n'));
      return 0;
    }
    case 'match': {
      const flags: FlagSpecs = { ...HTTP_ADDR, source: { kind: 'bool', help: 'Match intentions whose source is NAME' }, destination: { kind: 'bool', help: 'Match intentions whose destination is NAME (the default)' } };
      if (wantsHelp(rest)) return (out(usageText('intention match', '[-source|-destination] NAME', flags)), 0);
      const f = parseFlags(rest, flags);
      if (f.positionals.length !== 1) throw new UsageError('meshd intention match needs exactly one argument: NAME');
      if (f.bools.get('source') === true && f.bools.get('destination') === true) throw new UsageError('-source and -destination are exclusive');
      const name = f.positionals[0] as string;
      const by = f.bools.get('source') === true ? 'source' : 'destination';
      const r = await client(f).json<Record<string, LegacyIntentionOut[]>>('GET', '/v1/connect/intentions/match', { query: { by, name } });
      for (const i of r.value[name] ?? []) out(`${i.SourceName} => ${i.DestinationName} (${i.Action})`);
      return 0;
    }
    case 'explain': {
      const flags: FlagSpecs = {
        ...HTTP_ADDR,
        path: { kind: 'string', help: 'Evaluate L7 permissions for a request to this path', placeholder: 'PATH' },
        method: { kind: 'string', help: 'The request method (with -path; default GET)', placeholder: 'METHOD' },
        header: { kind: 'list', help: 'A request header as Name:Value (with -path)', placeholder: 'NAME:VALUE' },
      };
      if (wantsHelp(rest)) return (out(usageText('intention explain', '[-path P [-method M] [-header N:V]...] SRC DST', flags)), 0);
      const f = parseFlags(rest, flags);
      const [src, dst] = twoNames(f, 'explain');
      const query: Record<string, string | readonly string[]> = { source: src, destination: dst };
      const path = f.strings.get('path');
      if (path !== undefined) query.path = path;
      const method = f.strings.get('method');
      if (method !== undefined) query.method = method;
      const header = f.lists.get('header');
      if (header !== undefined) query.header = header;
      const r = await client(f).json<{
        Allowed: boolean;
        Layer: string;
        Reason: string;
        Matched: { SourceName: string; DestinationName: string; Precedence: number } | null;
        Generation: number;
        Permission?: { Index: number; Action: string } | null;
      }>('GET', '/v1/connect/intentions/explain', { query });
      const e = r.value;
      out(`${e.Allowed ? 'Allowed' : 'Denied'}: ${e.Reason}`);
      if (e.Matched !== null) out(`Matched:     ${e.Matched.SourceName} => ${e.Matched.DestinationName} (precedence ${e.Matched.Precedence})`);
      if (e.Permission !== undefined && e.Permission !== null) out(`Permission:  #${e.Permission.Index} (${e.Permission.Action})`);
      out(`Layer:       ${e.Layer}\nGeneration:  ${e.Generation}`);
      return e.Allowed ? 0 : 1;
    }
    case 'delete': {
      if (wantsHelp(rest)) return (out(usageText('intention delete', 'SRC DST | ID', HTTP_ADDR)), 0);
      const f = parseFlags(rest, HTTP_ADDR);
      const which = pairOrId(f, 'delete');
      if ('id' in which) {
        await client(f).request('DELETE', `/v1/connect/intentions/${which.id}`);
        out(`Intention deleted: ${which.id}`);
      } else {
        await client(f).request('DELETE', '/v1/connect/intentions/exact', { query: { source: which.src, destination: which.dst } });
        out(`Intention deleted: ${which.src} => ${which.dst}`);
      }
      return 0;
    }
    default:
      throw new UsageError(`unknown intention subcommand: ${sub}`);
  }
}

// ---------------------------------------------------------------------------------- main

export async function main(argv: readonly string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case undefined:
        err(TOP_USAGE);
        return 2;
      case '-h':
      case '-help':
      case '--help':
      case 'help':
        out(TOP_USAGE);
        return 0;
      case 'version':
      case '-version':
      case '--version':
        out(`meshd v${VERSION} (node ${process.versions.node})`);
        return 0;
      case 'agent':
        return await cmdAgent(rest);
      case 'connect':
        return await cmdConnect(rest);
      case 'intention':
        return await cmdIntention(rest);
      case 'config':
        return await cmdConfig(rest);
      case 'services': {
        const { cmdServices } = await import('./services.ts');
        return await cmdServices(rest, out, err);
      }
      case 'demo': {
        const { runDemo } = await import('../demo/demo.ts');
        return await runDemo(rest);
      }
      default:
        throw new UsageError(`unknown command: ${cmd}`);
    }
  } catch (e) {
    if (e instanceof UsageError) {
      err(`meshd: ${e.message}\n`);
      err(TOP_USAGE);
      return 2;
    }
    // `intention check` uses exit 2 for every error, as Consul does; so do the others here
    // for an unreachable agent or an API refusal, which are not denials.
    if (e instanceof AgentUnreachable) {
      err(`meshd: ${e.message}`);
      return cmd === 'intention' ? 2 : 1;
    }
    if (e instanceof ApiError) {
      err(`meshd: the agent refused the request (HTTP ${e.status}): ${e.message}`);
      return cmd === 'intention' ? 2 : 1;
    }
    if (e instanceof TokenFileError) {
      err(`meshd: cannot read the token: ${e.message}`);
      return cmd === 'intention' ? 2 : 1;
    }
    err(`meshd: ${(e as Error).stack ?? String(e)}`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
process.exitCode = code;
// Commands that serve (agent, proxy, demo) have shut their servers down by now; exit so a
// forgotten timer cannot keep the process alive after Ctrl-C.
process.exit(code);
