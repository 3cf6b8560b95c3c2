// `meshd connect proxy`: a sidecar's control thread. Follows the agent over its HTTP API
// with blocking queries (roots, intentions, healthy upstream instances), obtains its leaf
// certificate by CSR (the private key is generated here and never sent), compiles its own
// intention table into shared memory, and runs the data-plane workers. The pieces it shares
// with the ingress gateway (watches, certificates, health, registration, /metrics) are in
// ./agent-session.ts. Shutdown drains (stop), SIGHUP re-reads everything (reload).
// Runs on: the proxy process's main thread. It never touches a data-plane socket.

import type { DataPlaneChain } from '../chain/types.ts';
import type { JwtProviderEntry } from '../config/jwt.ts';
import type { JwtRequirement, SourceIntention } from '../config/service-intentions.ts';
import { allocateConnectionCounts, allocateCounters, counterBlock, openConnections } from '../metrics/counters.ts';
import { withDefaults, type ProxyLimits } from '../dataplane/limits.ts';
import { envoySourceLabels, renderEnvoy } from '../metrics/envoy.ts';
import { allocateL7, l7Families, l7Totals, renderL7 } from '../metrics/l7.ts';
import { LatencyTotals } from '../metrics/latency.ts';
import { renderFamilies, renderPrometheus, type Gauge } from '../metrics/prometheus.ts';
import { allocateWorkerGauges, renderRuntime, runtimeFamilies } from '../metrics/runtime.ts';
import { WorkerSupervisor } from '../workers/supervisor.ts';
import type { InboundRouting, RoutingSnapshot, UpstreamRouting, UpstreamSpec } from '../workers/messages.ts';
import { AgentSession, REGISTER_TTL, type HostPort, type ReloadReport } from './agent-session.ts';
import type { AgentClient } from './client.ts';
import { legacyToRule, type LegacyIntention } from './intentions.ts';
import { PolicyEngine } from './policy.ts';

export { targetEndpoints, type HealthEntry, type HostPort, type ReloadReport } from './agent-session.ts';

export interface ProxyOptions {
  readonly service: string;
  readonly serviceAddr: HostPort | null;
  readonly listen: HostPort | null;
  readonly upstreams: readonly UpstreamSpec[];
  readonly client: AgentClient;
  readonly workers: number;
  readonly metricsAddr: HostPort | null;
  /**
   * Names and labels of /metrics: 'meshd' (default; meshd_* names, seconds) or 'envoy'
   * (Envoy's stat names with Consul's consul_* labels, milliseconds; ../metrics/envoy.ts).
   */
  readonly metricsFormat?: MetricsFormat;
  /** Access log: 'stdout', 'stderr' or a file path (each worker appends); absent: off. */
  readonly accessLog?: string;
  /** Resume TLS sessions on tcp upstreams (default true; ../dataplane/outbound.ts). */
  readonly tlsSessionResumption?: boolean;
  readonly register: boolean;
  readonly registerId?: string;
  /**
   * Tags and Meta of the service instance this sidecar fronts. The sidecar registration
   * carries them too (Consul's sidecar_service inherits them), so resolver subset filters
   * such as `Service.Meta.version == v2` select sidecars by their app's labels.
   */
  readonly tags?: readonly string[];
  readonly meta?: Readonly<Record<string, string>>;
  readonly log: (line: string) => void;
  /** Consul's built-in proxy defaults: local connect 1000 ms, upstream connect 10000 ms. */
  readonly connectTimeoutMs?: number;
  readonly handshakeTimeoutMs?: number;
  /** Lowest TLS version on the public listener and upstream connections (default TLS 1.3). */
  readonly tlsMinVersion?: 'TLSv1.2' | 'TLSv1.3';
  /** Handshakes in progress per worker on the public listener before new ones are refused (default 1024). */
  readonly maxConcurrentHandshakes?: number;
  /** Connection and request limits, idle timeouts (../dataplane/limits.ts); what is absent takes its default. */
  readonly limits?: Partial<ProxyLimits>;
  /**
   * After a root rotation, wait a random time in [0, this) before re-issuing the leaf
   * (Consul's caChangeJitterWindow, 30 s): a fleet then renews spread out, not at once.
   * Peers keep accepting the old leaf meanwhile, because rotated-out roots stay trusted.
   */
  readonly caChangeJitterMs?: number;
  readonly random?: () => number;
  /** Clock for certificate lifetimes (injected by tests). */
  readonly now?: () => number;
  /** How often the renewal deadline is checked (one coarse timer, not a timer per leaf). */
  readonly renewCheckMs?: number;
  /** The registration's Proxy.MeshGateway.Mode (-sidecar-for): the mode of upstreams that set none. */
  readonly meshGatewayMode?: 'none' | 'local' | 'remote';
  /** V8 old-generation limit of each worker, MB (-worker-memory-limit); absent: none. */
  readonly workerMemoryLimitMb?: number;
}

export type MetricsFormat = 'meshd' | 'envoy';

/** How the proxy-config query names an upstream: `NAME[@DC][~MODE]` (the agent's parseUpstreamQuery). */
export function upstreamQuery(u: UpstreamSpec): string {
  return `${u.service ?? u.name}${u.datacenter === undefined ? '' : `@${u.datacenter}`}${u.meshGatewayMode === undefined ? '' : `~${u.meshGatewayMode}`}`;
}

export interface ProxyAddresses {
  readonly inbound: HostPort | null;
  readonly upstreams: Readonly<Record<string, HostPort>>;
  readonly metrics: HostPort | null;
}

/** The agent's answer to GET /v1/internal/meshd/proxy-config/:service (meshd's own endpoint). */
export interface ProxyConfigBody {
  readonly Local: { readonly Protocol: InboundRouting['protocol']; readonly LocalConnectTimeoutMs: number; readonly LocalRequestTimeoutMs: number };
  readonly IntentionSources: readonly SourceIntention[];
  readonly IntentionJwt: JwtRequirement | null;
  /** The jwt-provider entries the intentions name (absent from an older agent: none). */
  readonly JwtProviders?: readonly JwtProviderEntry[];
  readonly DefaultAllow: boolean;
  readonly Chains: Readonly<Record<string, DataPlaneChain>>;
}

/**
 * How long a scrape waits for the workers' latency histograms. Workers answer within a
 * millisecond unless their event loop is stuck; past this, /metrics renders with what the
 * late worker reported in its previous answers, and its answer is added when it arrives.
 */
const SCRAPE_WAIT_MS = 200;

export class SidecarProxy {
  readonly #o: ProxyOptions;
  readonly #client: AgentClient;
  readonly #policy: PolicyEngine;
  readonly #counters: SharedArrayBuffer;
  /** Watches, certificates, upstream targets' health, registrations, /metrics (./agent-session.ts). */
  readonly #session: AgentSession;
  #supervisor: WorkerSupervisor | null = null;
  #datacenter = 'dc1';
  #config: ProxyConfigBody | null = null;
  #routingVersion = 0;
  #routing: RoutingSnapshot | null = null;
  readonly #l7Metrics: SharedArrayBuffer;
  /** Request-duration histograms merged from the workers' answers, per listener, cumulative. */
  readonly #latency: LatencyTotals;
  /** Per-worker event-loop lag and heap gauges (../metrics/runtime.ts). */
  readonly #workerGauges: SharedArrayBuffer;
  /** Open connections per worker and listener, for the connection limits (../dataplane/limits.ts). */
  readonly #connectionCounts: SharedArrayBuffer;

  constructor(opts: ProxyOptions) {
    this.#o = opts;
    this.#client = opts.client;
    this.#policy = new PolicyEngine({ maxWorkers: opts.workers, defaultAllow: false });
    this.#counters = allocateCounters(opts.workers);
    this.#l7Metrics = allocateL7(opts.workers, 1 + opts.upstreams.length);
    this.#latency = new LatencyTotals(1 + opts.upstreams.length);
    this.#workerGauges = allocateWorkerGauges(opts.workers);
    this.#connectionCounts = allocateConnectionCounts(opts.workers, 1 + opts.upstreams.length);
    this.#session = new AgentSession({
      ...opts,
      who: 'proxy',
      publishTls: (tls) => this.#supervisor?.broadcast({ type: 'tls', tls }),
      // Also before the workers start: they are spawned with the latest snapshot.
      onHealthChange: () => this.#publishRouting(),
    });
  }

  get #proxyId(): string {
    return this.#o.registerId === undefined ? `${this.#o.service}-proxy` : `${this.#o.service}-proxy-${this.#o.registerId}`;
  }

  async start(): Promise<ProxyAddresses> {
    const self = await this.#client.json<{ Config: { Datacenter: string } }>('GET', '/v1/agent/self');
    this.#datacenter = self.value.Config.Datacenter;
    const { certs, watches, signal } = this.#session;
    certs.datacenter = this.#datacenter;
    this.#session.health.datacenter = this.#datacenter;
    const rootsIndex = await certs.loadRoots();
    await certs.issueLeaf();
    const intentionsIndex = await this.#loadIntentions(0, signal);
    // Reads the health of every upstream target too, and watches it from then on.
    const configIndex = await this.#loadProxyConfig(0, signal);

    const serviceAddr = this.#o.serviceAddr;
    const listen = this.#o.listen;
    this.#supervisor = new WorkerSupervisor({
      count: this.#o.workers,
      base: {
        policy: this.#policy.memory,
        counters: this.#counters,
        service: this.#o.service,
        inbound: listen === null || serviceAddr === null ? null : { host: listen.host, port: listen.port, appHost: serviceAddr.host, appPort: serviceAddr.port },
        upstreams: this.#o.upstreams,
        l7Metrics: this.#l7Metrics,
        workerGauges: this.#workerGauges,
        connectTimeoutMs: this.#o.connectTimeoutMs ?? 5000,
        handshakeTimeoutMs: this.#o.handshakeTimeoutMs ?? 10_000,
        ...(this.#o.tlsMinVersion === undefined ? {} : { tlsMinVersion: this.#o.tlsMinVersion }),
        ...(this.#o.maxConcurrentHandshakes === undefined ? {} : { maxConcurrentHandshakes: this.#o.maxConcurrentHandshakes }),
        ...(this.#o.accessLog === undefined ? {} : { accessLog: this.#o.accessLog }),
        ...(this.#o.tlsSessionResumption === false ? { tlsSessionResumption: false } : {}),
        limits: withDefaults(this.#o.limits),
        connectionCounts: this.#connectionCounts,
        workers: this.#o.workers,
      },
      currentTls: () => certs.tls,
      currentRouting: () => this.#requireRouting(),
      onWorkerExit: (_index, slot) => this.#policy.releaseReader(slot),
      onLatency: (_index, delta) => this.#latency.merge(delta),
      ...(this.#o.workerMemoryLimitMb === undefined ? {} : { memoryLimitMb: this.#o.workerMemoryLimitMb }),
    });
    const ports = await this.#supervisor.start();
    certs.startRenewal();

    // From here on, changes arrive by blocking queries and reach the workers as messages.
    watches.add('roots', rootsIndex, certs.watchRoots);
    watches.add('intentions', intentionsIndex, (i, s) => this.#loadIntentions(i, s));
    watches.add('proxy config', configIndex, (i, s) => this.#loadProxyConfig(i, s));

    const metrics = await this.#session.serveMetrics(this.#o.metricsAddr, () => this.scrape());
    const upstreams: Record<string, HostPort> = {};
    for (const u of this.#o.upstreams) upstreams[u.name] = { host: u.host, port: ports.upstreams[u.name] ?? u.port };
    const inbound = listen === null || ports.inbound === null ? null : { host: listen.host, port: ports.inbound };
    if (this.#o.register) await this.#register(inbound);
    return { inbound, upstreams, metrics };
  }

  /**
   * Shuts down, with a drain of up to `drainTimeoutMs` (SIGTERM; 0: at once): deregisters
   * first, then the workers stop accepting, finish HTTP requests in flight and let tcp
   * connections end, and what is left at the deadline is cut (AgentSession.stop).
   */
  stop(opts: { readonly drainTimeoutMs?: number } = {}): Promise<void> {
    return this.#session.stop(this.#supervisor, opts.drainTimeoutMs ?? 0);
  }

  /**
   * Reload (SIGHUP): everything is read again from the agent now (roots, intentions, proxy
   * config, health of every target), a new leaf is issued and the registrations written
   * again; no listener or connection is touched (AgentSession.reload). The flags (the
   * listener and upstream set) need a restart.
   */
  reload(): Promise<ReloadReport> {
    return this.#session.reload();
  }

  /** What `/metrics` answers: the workers' latest histograms are merged first (bounded wait). */
  async scrape(): Promise<string> {
    await this.#supervisor?.collectLatency(SCRAPE_WAIT_MS);
    return this.metricsText();
  }

  /**
   * Text of `/metrics`: counters summed over workers, the request-duration histograms merged so
   * far, plus control-thread gauges, in the format `-metrics-format` chose. Both formats end
   * with the proxy's own meshd_* gauges (certificates, workers, event-loop lag, memory), which
   * have no Envoy counterpart.
   */
  metricsText(): string {
    const blocks = Array.from({ length: this.#o.workers }, (_v, i) => counterBlock(this.#counters, i));
    const own: Gauge[] = [
      { name: 'meshd_policy_table_generation', help: 'Generation of the published intention table.', type: 'gauge', samples: [{ labels: {}, value: this.#policy.generation }] },
      ...this.#session.gauges(this.#o.workers, this.#supervisor?.restarts ?? 0),
      {
        name: 'meshd_listener_connections',
        help: 'Connections open on each listener, TLS handshakes included (what -max-inbound-connections, -max-upstream-connections and -max-connections limit).',
        type: 'gauge',
        samples: openConnections(this.#connectionCounts, this.#o.workers, 1 + this.#o.upstreams.length).map((value, l): { labels: Record<string, string>; value: number } => ({ labels: l === 0 ? { direction: 'inbound' } : { direction: 'outbound', upstream: this.#o.upstreams[l - 1]?.name ?? '' }, value })),
      },
    ];
    const mem = process.memoryUsage();
    const runtime = runtimeFamilies(this.#workerGauges, this.#o.workers, { rss: mem.rss, heapUsed: mem.heapUsed, heapTotal: mem.heapTotal, external: mem.external });
    const durations = Array.from({ length: this.#latency.listeners }, (_v, l) => this.#latency.histogram(l));
    if (this.#o.metricsFormat === 'envoy') {
      const source = envoySourceLabels(this.#o.service, this.#datacenter);
      const envoy = renderEnvoy({
        service: this.#o.service,
        datacenter: this.#datacenter,
        counters: blocks,
        l7: l7Totals(this.#l7Metrics, this.#o.workers, 1 + this.#o.upstreams.length),
        durations,
        upstreams: this.#o.upstreams.map((u) => u.name),
        hasInbound: this.#o.listen !== null && this.#o.serviceAddr !== null,
        inboundProtocol: this.#config?.Local.Protocol ?? 'tcp',
      });
      return envoy + renderFamilies(own, source) + renderRuntime(runtime, source);
    }
    const listeners = [{ direction: 'inbound' }, ...this.#o.upstreams.map((u) => ({ direction: 'outbound', upstream: u.name }))];
    const labels = { service: this.#o.service };
    const l7 = renderL7(l7Families(this.#l7Metrics, this.#o.workers, listeners, durations), labels);
    return l7 + renderPrometheus(blocks, labels, own) + renderRuntime(runtime, labels);
  }

  async #loadIntentions(index: number, signal: AbortSignal): Promise<number> {
    const r = await this.#client.json<LegacyIntention[]>('GET', '/v1/connect/intentions', { index, signal });
    if (index !== 0 && r.index === index) return r.index;
    const defaultAllow = r.headers.get('x-consul-default-acl-policy') === 'allow';
    await this.#policy.update(r.value.map(legacyToRule), defaultAllow);
    return r.index;
  }

  /**
   * L7 intentions, HTTP settings and the discovery chain of every upstream, in one blocking
   * query. New targets may name services not watched yet: their health is read before the
   * routing that uses them is published.
   */
  async #loadProxyConfig(index: number, signal: AbortSignal): Promise<number> {
    const query: Record<string, string | readonly string[]> = { upstream: this.#o.upstreams.map(upstreamQuery) };
    if (this.#o.meshGatewayMode !== undefined) query.mode = this.#o.meshGatewayMode;
    const r = await this.#client.json<ProxyConfigBody>('GET', `/v1/internal/meshd/proxy-config/${encodeURIComponent(this.#o.service)}`, { index, query, signal });
    if (index !== 0 && r.index === index) return r.index;
    this.#config = r.value;
    await this.#session.health.followChains(Object.values(r.value.Chains), signal);
    this.#publishRouting();
    return r.index;
  }

  /** Builds the workers' routing snapshot from the config and the health results, and sends it. */
  #publishRouting(): void {
    const cfg = this.#config;
    if (cfg === null) return;
    const upstreams: Record<string, UpstreamRouting> = {};
    for (const u of this.#o.upstreams) {
      const chain: DataPlaneChain | undefined = cfg.Chains[upstreamQuery(u)];
      if (chain === undefined) continue;
      upstreams[u.name] = this.#session.health.upstreamRouting(chain);
    }
    const inbound: InboundRouting = {
      protocol: cfg.Local.Protocol,
      localConnectTimeoutMs: cfg.Local.LocalConnectTimeoutMs,
      localRequestTimeoutMs: cfg.Local.LocalRequestTimeoutMs,
      intentionSources: cfg.IntentionSources,
      intentionJwt: cfg.IntentionJwt,
      jwtProviders: cfg.JwtProviders ?? [],
      defaultAllow: cfg.DefaultAllow,
    };
    this.#routing = { version: ++this.#routingVersion, inbound, upstreams };
    this.#supervisor?.broadcast({ type: 'routing', routing: this.#routing });
  }

  #requireRouting(): RoutingSnapshot {
    if (this.#routing === null) throw new Error('no routing yet');
    return this.#routing;
  }

  async #register(inbound: HostPort | null): Promise<void> {
    const service = this.#o.service;
    const serviceAddr = this.#o.serviceAddr;
    if (serviceAddr === null) return;
    const tags = this.#o.tags ?? [];
    const meta = this.#o.meta ?? {};
    await this.#session.registration.register({ ID: service, Name: service, Address: serviceAddr.host, Port: serviceAddr.port, Tags: tags, Meta: meta });
    if (inbound === null) return;
    const id = this.#proxyId;
    await this.#session.registration.register({
      ID: id,
      Name: `${service}-proxy`,
      Kind: 'connect-proxy',
      Tags: tags,
      Meta: meta,
      Address: inbound.host,
      Port: inbound.port,
      Proxy: { DestinationServiceName: service, DestinationServiceID: service, LocalServiceAddress: serviceAddr.host, LocalServicePort: serviceAddr.port },
      Check: { CheckID: `${id}-ttl`, Name: 'proxy heartbeat', TTL: REGISTER_TTL, Status: 'passing' },
    });
  }
}
