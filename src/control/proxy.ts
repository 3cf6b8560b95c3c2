// `meshd connect proxy`: a sidecar's control thread. Follows the agent over its HTTP API
// with blocking queries (roots, intentions, healthy upstream instances), obtains its leaf
// certificate by CSR (the private key is generated here and never sent), compiles its own
// intention table into shared memory, and runs the data-plane workers.
// Runs on: the proxy process's main thread. It never touches a data-plane socket.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLeafCsr } from '../ca/authority.ts';
import { serviceSpiffeId } from '../ca/spiffe.ts';
import type { ChainTarget, DataPlaneChain } from '../chain/types.ts';
import type { JwtProviderEntry } from '../config/jwt.ts';
import type { JwtRequirement, SourceIntention } from '../config/service-intentions.ts';
import { allocateCounters, counterBlock } from '../metrics/counters.ts';
import { envoySourceLabels, renderEnvoy } from '../metrics/envoy.ts';
import { allocateL7, l7Families, l7Totals, renderL7 } from '../metrics/l7.ts';
import { LatencyTotals } from '../metrics/latency.ts';
import { renderFamilies, renderPrometheus, type Gauge } from '../metrics/prometheus.ts';
import { allocateWorkerGauges, renderRuntime, runtimeFamilies } from '../metrics/runtime.ts';
import { WorkerSupervisor } from '../workers/supervisor.ts';
import type { Endpoint, InboundRouting, RoutingSnapshot, TlsMaterial, UpstreamRouting, UpstreamSpec } from '../workers/messages.ts';
import { compileHealthFilter, type HealthFilterEntry } from './filter.ts';
import { ApiError, type AgentClient } from './client.ts';
import { legacyToRule, type LegacyIntention } from './intentions.ts';
import { PolicyEngine } from './policy.ts';
import { renewalDelayMs } from './renewal.ts';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

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
}

export type MetricsFormat = 'meshd' | 'envoy';

export interface ProxyAddresses {
  readonly inbound: HostPort | null;
  readonly upstreams: Readonly<Record<string, HostPort>>;
  readonly metrics: HostPort | null;
}

interface RootsBody {
  readonly ActiveRootID: string;
  readonly TrustDomain: string;
  readonly Roots: readonly { readonly ID: string; readonly RootCert: string; readonly NotAfter: string }[];
}

export interface HealthEntry extends HealthFilterEntry {
  readonly Node: { readonly Address: string };
  readonly Service: {
    readonly Address: string;
    readonly Port: number;
    readonly Tags: readonly string[];
    readonly Meta: Readonly<Record<string, string>>;
    readonly Proxy: { readonly DestinationServiceName: string } | null;
  };
  readonly Checks?: readonly { readonly Status: string }[];
}

/** An instance's health as the worst of its checks (Consul's aggregate). */
function aggregateStatus(e: HealthEntry): 'passing' | 'warning' | 'critical' {
  let worst: 'passing' | 'warning' | 'critical' = 'passing';
  for (const c of e.Checks ?? []) {
    if (c.Status === 'critical') return 'critical';
    if (c.Status === 'warning') worst = 'warning';
  }
  return worst;
}

/**
 * The instances a chain target routes to: those its subset filter selects, passing, and also
 * warning unless the subset says OnlyPassing (Consul's rule); critical ones never.
 */
export function targetEndpoints(entries: readonly HealthEntry[], target: Pick<ChainTarget, 'service' | 'onlyPassing'>, keep: (e: HealthFilterEntry) => boolean): Endpoint[] {
  const out: Endpoint[] = [];
  for (const e of entries) {
    const st = aggregateStatus(e);
    if (st === 'critical' || (st === 'warning' && target.onlyPassing) || !keep(e)) continue;
    out.push({ host: e.Service.Address !== '' ? e.Service.Address : e.Node.Address, port: e.Service.Port, service: e.Service.Proxy?.DestinationServiceName ?? target.service });
  }
  return out;
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

interface IssuedCertBody {
  readonly CertPEM: string;
  readonly ValidAfter: string;
  readonly ValidBefore: string;
}

/** Consul's -register heartbeat: TTL 30s, passed every 10s (TTL/3). */
const REGISTER_TTL = '30s';
const HEARTBEAT_MS = 10_000;
const WATCH_RETRY_MS = 1000;
const WATCH_RETRY_MAX_MS = 30_000;
/**
 * Floor between two issuances of our own: if the agent's clock and ours disagree so much that
 * a fresh leaf already looks due, we renew every 10 s instead of hammering the CA.
 */
const MIN_REISSUE_MS = 10_000;
const RENEW_RETRY_MS = 10_000;
/**
 * How long a scrape waits for the workers' latency histograms. Workers answer within a
 * millisecond unless their event loop is stuck; past this, /metrics renders with what the
 * late worker reported in its previous answers, and its answer is added when it arrives.
 */
const SCRAPE_WAIT_MS = 200;

export class SidecarProxy {
  readonly #o: ProxyOptions;
  readonly #client: AgentClient;
  readonly #abort = new AbortController();
  readonly #policy: PolicyEngine;
  readonly #counters: SharedArrayBuffer;
  #supervisor: WorkerSupervisor | null = null;
  #metrics: Server | null = null;
  #tls: TlsMaterial | null = null;
  #keyPem = '';
  #datacenter = 'dc1';
  #activeRootId = '';
  #caPems: string[] = [];
  #trustDomain = '';
  /** Passing instances per service, as the health API returned them (Tags and Meta for subsets). */
  readonly #health = new Map<string, readonly HealthEntry[]>();
  /** Services whose health is watched, each with its own stop switch. */
  readonly #healthWatches = new Map<string, AbortController>();
  #config: ProxyConfigBody | null = null;
  #routingVersion = 0;
  #routing: RoutingSnapshot | null = null;
  readonly #filters = new Map<string, (e: HealthFilterEntry) => boolean>();
  readonly #l7Metrics: SharedArrayBuffer;
  /** Request-duration histograms merged from the workers' answers, per listener, cumulative. */
  readonly #latency: LatencyTotals;
  /** Per-worker event-loop lag and heap gauges (../metrics/runtime.ts). */
  readonly #workerGauges: SharedArrayBuffer;
  #renewTimer: NodeJS.Timeout | undefined;
  /** When the leaf is due for renewal, on the injected clock; Infinity while none is due. */
  #renewAt = Infinity;
  #renewing = false;
  #leafNotAfter = 0;
  #rootNotAfter = 0;
  #heartbeat: NodeJS.Timeout | undefined;
  #registeredIds: string[] = [];

  constructor(opts: ProxyOptions) {
    this.#o = opts;
    this.#client = opts.client;
    this.#policy = new PolicyEngine({ maxWorkers: opts.workers, defaultAllow: false });
    this.#counters = allocateCounters(opts.workers);
    this.#l7Metrics = allocateL7(opts.workers, 1 + opts.upstreams.length);
    this.#latency = new LatencyTotals(1 + opts.upstreams.length);
    this.#workerGauges = allocateWorkerGauges(opts.workers);
  }

  get #proxyId(): string {
    return this.#o.registerId === undefined ? `${this.#o.service}-proxy` : `${this.#o.service}-proxy-${this.#o.registerId}`;
  }

  async start(): Promise<ProxyAddresses> {
    const self = await this.#client.json<{ Config: { Datacenter: string } }>('GET', '/v1/agent/self');
    this.#datacenter = self.value.Config.Datacenter;
    const rootsIndex = await this.#loadRoots();
    await this.#issueLeaf();
    const intentionsIndex = await this.#loadIntentions(0);
    const configIndex = await this.#loadProxyConfig(0);
    const healthIndexes = new Map<string, number>();
    for (const service of this.#targetServices()) healthIndexes.set(service, await this.#loadHealth(service, 0));
    this.#publishRouting();

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
      },
      currentTls: () => this.#requireTls(),
      currentRouting: () => this.#requireRouting(),
      onWorkerExit: (_index, slot) => this.#policy.releaseReader(slot),
      onLatency: (_index, delta) => this.#latency.merge(delta),
    });
    const ports = await this.#supervisor.start();
    this.#renewTimer = setInterval(() => this.#checkRenewal(), this.#o.renewCheckMs ?? 1000);

    // From here on, changes arrive by blocking queries and reach the workers as messages.
    this.#watch('roots', rootsIndex, (i) => this.#watchRoots(i));
    this.#watch('intentions', intentionsIndex, (i) => this.#loadIntentions(i));
    this.#watch('proxy config', configIndex, (i) => this.#loadProxyConfig(i));
    for (const [service, index] of healthIndexes) this.#watchHealth(service, index);

    const metrics = this.#o.metricsAddr === null ? null : await this.#startMetrics(this.#o.metricsAddr);
    const upstreams: Record<string, HostPort> = {};
    for (const u of this.#o.upstreams) upstreams[u.name] = { host: u.host, port: ports.upstreams[u.name] ?? u.port };
    const inbound = listen === null || ports.inbound === null ? null : { host: listen.host, port: ports.inbound };
    if (this.#o.register) await this.#register(inbound);
    return { inbound, upstreams, metrics };
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    clearInterval(this.#renewTimer);
    clearInterval(this.#heartbeat);
    await this.#deregister();
    await this.#supervisor?.stop();
    const m = this.#metrics;
    if (m !== null) {
      m.closeAllConnections();
      await new Promise<void>((resolve) => m.close(() => resolve()));
    }
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
      { name: 'meshd_workers', help: 'Data-plane worker threads configured.', type: 'gauge', samples: [{ labels: {}, value: this.#o.workers }] },
      { name: 'meshd_worker_restarts_total', help: 'Data-plane workers restarted after a crash.', type: 'counter', samples: [{ labels: {}, value: this.#supervisor?.restarts ?? 0 }] },
      { name: 'meshd_leaf_expiry_seconds', help: "Seconds until this proxy's leaf certificate expires.", type: 'gauge', samples: [{ labels: {}, value: Math.round((this.#leafNotAfter - this.#now()) / 1000) }] },
      { name: 'meshd_root_expiry_seconds', help: 'Seconds until the active root CA certificate expires.', type: 'gauge', samples: [{ labels: {}, value: Math.round((this.#rootNotAfter - this.#now()) / 1000) }] },
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

  #requireTls(): TlsMaterial {
    if (this.#tls === null) throw new Error('no leaf certificate yet');
    return this.#tls;
  }

  async #loadRoots(): Promise<number> {
    const r = await this.#client.json<RootsBody>('GET', '/v1/agent/connect/ca/roots');
    this.#applyRoots(r.value);
    return r.index;
  }

  #applyRoots(body: RootsBody): boolean {
    this.#trustDomain = body.TrustDomain;
    this.#caPems = body.Roots.map((x) => x.RootCert);
    const active = body.Roots.find((x) => x.ID === body.ActiveRootID);
    if (active !== undefined) this.#rootNotAfter = Date.parse(active.NotAfter);
    const rotated = this.#activeRootId !== '' && this.#activeRootId !== body.ActiveRootID;
    this.#activeRootId = body.ActiveRootID;
    return rotated;
  }

  async #watchRoots(index: number): Promise<number> {
    const r = await this.#client.json<RootsBody>('GET', '/v1/agent/connect/ca/roots', { index, signal: this.#abort.signal });
    if (r.index === index) return r.index;
    const rotated = this.#applyRoots(r.value);
    // Trust the new bundle at once (it holds old and new roots), then re-issue the leaf after
    // the jitter: peers accept the old leaf until then, and the new one through its chain.
    if (this.#tls !== null) this.#publishTls({ ...this.#tls, caPems: this.#caPems, trustDomain: this.#trustDomain });
    if (rotated) {
      const jitter = Math.floor((this.#o.random ?? Math.random)() * (this.#o.caChangeJitterMs ?? 30_000));
      this.#scheduleRenewal(jitter);
    }
    return r.index;
  }

  async #issueLeaf(): Promise<void> {
    const uri = serviceSpiffeId(this.#trustDomain, 'default', this.#datacenter, this.#o.service);
    const { csrPem, keyPem } = await createLeafCsr(uri);
    let r: { value: IssuedCertBody };
    for (let attempt = 1; ; attempt++) {
      try {
        r = await this.#client.json<IssuedCertBody>('POST', '/v1/connect/ca/sign', { body: { CSR: csrPem }, signal: this.#abort.signal });
        break;
      } catch (err) {
        // The CA's rate limit answers 429 with Retry-After: wait as told (plus jitter).
        if (!(err instanceof ApiError && err.status === 429) || attempt >= 20) throw err;
        const wait = (err.retryAfterMs ?? 1000) + Math.floor((this.#o.random ?? Math.random)() * 1000);
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
    this.#keyPem = keyPem;
    this.#leafNotAfter = Date.parse(r.value.ValidBefore);
    this.#publishTls({ keyPem: this.#keyPem, certPem: r.value.CertPEM, caPems: this.#caPems, trustDomain: this.#trustDomain, uri });
    const due = renewalDelayMs(Date.parse(r.value.ValidAfter), Date.parse(r.value.ValidBefore), this.#now(), (this.#o.random ?? Math.random)());
    this.#scheduleRenewal(Math.max(MIN_REISSUE_MS, due));
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
  }

  #scheduleRenewal(delayMs: number): void {
    this.#renewAt = this.#now() + delayMs;
  }

  #checkRenewal(): void {
    if (this.#renewing || this.#now() < this.#renewAt) return;
    this.#renewing = true;
    this.#renewAt = Infinity;
    this.#issueLeaf()
      .catch((err: Error) => {
        if (this.#abort.signal.aborted) return;
        this.#o.log(`[WARN] proxy: leaf renewal failed, retrying in 10s: ${err.message}`);
        this.#scheduleRenewal(RENEW_RETRY_MS);
      })
      .finally(() => {
        this.#renewing = false;
      });
  }

  #publishTls(t: TlsMaterial): void {
    this.#tls = t;
    this.#supervisor?.broadcast({ type: 'tls', tls: t });
  }

  async #loadIntentions(index: number): Promise<number> {
    const r = await this.#client.json<LegacyIntention[]>('GET', '/v1/connect/intentions', { index, signal: this.#abort.signal });
    if (index !== 0 && r.index === index) return r.index;
    const defaultAllow = r.headers.get('x-consul-default-acl-policy') === 'allow';
    await this.#policy.update(r.value.map(legacyToRule), defaultAllow);
    return r.index;
  }

  /** L7 intentions, HTTP settings and the discovery chain of every upstream, in one blocking query. */
  async #loadProxyConfig(index: number): Promise<number> {
    const query: Record<string, string | readonly string[]> = { upstream: this.#o.upstreams.map((u) => u.name) };
    const r = await this.#client.json<ProxyConfigBody>('GET', `/v1/internal/meshd/proxy-config/${encodeURIComponent(this.#o.service)}`, { index, query, signal: this.#abort.signal });
    if (index !== 0 && r.index === index) return r.index;
    this.#config = r.value;
    if (this.#supervisor !== null) {
      // New targets may name services not watched yet: fetch them before routing to them.
      for (const service of this.#targetServices()) {
        if (this.#healthWatches.has(service)) continue;
        this.#watchHealth(service, await this.#loadHealth(service, 0));
      }
      for (const [service, ctl] of this.#healthWatches) {
        if (this.#targetServices().has(service)) continue;
        ctl.abort();
        this.#healthWatches.delete(service);
        this.#health.delete(service);
      }
      this.#publishRouting();
    }
    return r.index;
  }

  /** Every service a target of an upstream chain names. */
  #targetServices(): Set<string> {
    const out = new Set<string>();
    for (const chain of Object.values(this.#config?.Chains ?? {})) for (const t of Object.values(chain.targets)) out.add(t.service);
    return out;
  }

  async #loadHealth(service: string, index: number, signal: AbortSignal = this.#abort.signal): Promise<number> {
    // Not ?passing: a subset with OnlyPassing false takes warning instances too (Consul's
    // rule), so the filtering by status happens per target in #publishRouting.
    const r = await this.#client.json<HealthEntry[]>('GET', `/v1/health/connect/${encodeURIComponent(service)}`, { index, signal });
    if (index !== 0 && r.index === index) return r.index;
    this.#health.set(service, r.value);
    if (this.#supervisor !== null) this.#publishRouting();
    return r.index;
  }

  #watchHealth(service: string, index: number): void {
    const ctl = new AbortController();
    this.#healthWatches.set(service, ctl);
    const signal = AbortSignal.any([this.#abort.signal, ctl.signal]);
    this.#watch(`health ${service}`, index, (i) => this.#loadHealth(service, i, signal), signal);
  }

  #filter(expr: string): (e: HealthFilterEntry) => boolean {
    let f = this.#filters.get(expr);
    if (f === undefined) {
      try {
        f = expr === '' ? () => true : compileHealthFilter(expr);
      } catch (err) {
        // The agent validated it on write; a filter this proxy cannot compile selects nothing.
        this.#o.log(`[WARN] proxy: subset filter ${JSON.stringify(expr)} does not compile: ${(err as Error).message}`);
        f = () => false;
      }
      this.#filters.set(expr, f);
    }
    return f;
  }

  /** Builds the workers' routing snapshot from the config and the health results, and sends it. */
  #publishRouting(): void {
    const cfg = this.#config;
    if (cfg === null) return;
    const upstreams: Record<string, UpstreamRouting> = {};
    for (const u of this.#o.upstreams) {
      const chain = cfg.Chains[u.name];
      if (chain === undefined) continue;
      const endpoints: Record<string, readonly Endpoint[]> = {};
      for (const [id, t] of Object.entries(chain.targets)) {
        endpoints[id] = targetEndpoints(this.#health.get(t.service) ?? [], t, this.#filter(t.filter));
      }
      upstreams[u.name] = { chain, endpoints };
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

  /** Runs a blocking-query loop until stop(); errors back off and retry. */
  #watch(what: string, start: number, step: (index: number) => Promise<number>, signal: AbortSignal = this.#abort.signal): void {
    const loop = async (): Promise<void> => {
      let index = start;
      let failures = 0;
      while (!signal.aborted) {
        try {
          const next = await step(index);
          failures = 0;
          // Consul's rule: an index that went backwards means the agent restarted; resync.
          index = next < index ? 0 : next;
        } catch (err) {
          if (signal.aborted) return;
          // Exponential backoff with jitter (half to all of 1 s, 2 s, 4 s … capped at 30 s), so a fleet of
          // sidecars does not hammer an agent that is coming back; the last good state keeps serving.
          const cap = Math.min(WATCH_RETRY_MAX_MS, WATCH_RETRY_MS * 2 ** Math.min(failures, 10));
          const wait = Math.floor(cap / 2 + (this.#o.random ?? Math.random)() * (cap / 2));
          failures++;
          this.#o.log(`[WARN] proxy: watch ${what} failed (${failures} in a row), retrying in ${wait} ms: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, wait));
          index = 0;
        }
      }
    };
    void loop();
  }

  async #startMetrics(addr: HostPort): Promise<HostPort> {
    const server = createServer((req, res) => {
      if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?') === true)) {
        this.scrape().then(
          (body) => {
            res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'content-length': Buffer.byteLength(body) });
            res.end(body);
          },
          (err: Error) => {
            res.writeHead(500, { 'content-type': 'text/plain' });
            res.end(`metrics failed: ${err.message}\n`);
          },
        );
        return;
      }
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found: try /metrics\n');
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: addr.host, port: addr.port }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    this.#metrics = server;
    return { host: addr.host, port: (server.address() as AddressInfo).port };
  }

  async #register(inbound: HostPort | null): Promise<void> {
    const service = this.#o.service;
    if (this.#o.serviceAddr !== null) {
      await this.#client.request('PUT', '/v1/agent/service/register', {
        body: { ID: service, Name: service, Address: this.#o.serviceAddr.host, Port: this.#o.serviceAddr.port, Tags: this.#o.tags ?? [], Meta: this.#o.meta ?? {} },
      });
      this.#registeredIds.push(service);
    }
    if (inbound !== null && this.#o.serviceAddr !== null) {
      const id = this.#proxyId;
      await this.#client.request('PUT', '/v1/agent/service/register', {
        body: {
          ID: id,
          Name: `${service}-proxy`,
          Kind: 'connect-proxy',
          Tags: this.#o.tags ?? [],
          Meta: this.#o.meta ?? {},
          Address: inbound.host,
          Port: inbound.port,
          Proxy: { DestinationServiceName: service, DestinationServiceID: service, LocalServiceAddress: this.#o.serviceAddr.host, LocalServicePort: this.#o.serviceAddr.port },
          Check: { CheckID: `${id}-ttl`, Name: 'proxy heartbeat', TTL: REGISTER_TTL, Status: 'passing' },
        },
      });
      this.#registeredIds.push(id);
      this.#heartbeat = setInterval(() => {
        this.#client.request('PUT', `/v1/agent/check/pass/${encodeURIComponent(`${id}-ttl`)}`).catch((err: Error) => {
          this.#o.log(`[WARN] proxy: heartbeat failed: ${err.message}`);
        });
      }, HEARTBEAT_MS);
    }
  }

  async #deregister(): Promise<void> {
    for (const id of this.#registeredIds.reverse()) {
      try {
        await this.#client.request('PUT', `/v1/agent/service/deregister/${encodeURIComponent(id)}`);
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) this.#o.log(`[WARN] proxy: could not deregister ${id}: ${(err as Error).message}`);
      }
    }
    this.#registeredIds = [];
  }
}
