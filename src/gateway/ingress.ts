// `meshd connect gateway -ingress -service NAME`: an ingress gateway's control thread. Like a
// sidecar's (src/control/proxy.ts), whose pieces it mirrors: it follows the agent with
// blocking queries (roots, its gateway config, healthy instances of every target), obtains a
// leaf for its own identity `spiffe://<td>/ns/default/dc/<dc>/svc/<NAME>` by CSR (the key never
// leaves the process), and runs the same data-plane workers (src/workers/), with the same
// metrics families. It has no public listener: its listeners are those of its ingress-gateway
// entry (src/config/ingress-gateway.ts), bound on `-address` at start. A tcp listener is an
// ordinary upstream listener on the one service's chain; an http listener routes each request
// by Host header to the exposed service's HttpUpstream (./ingress-listener.ts).
//
// Live: the services and Hosts of each listener, header modifiers, the wildcard's expansion,
// every chain (routers, splitters, resolvers, service-defaults) and instance health. Needs a
// restart: the listener set (a port added or removed, a protocol changed); the change is
// logged, a listener no longer in the entry answers nothing (404 / connection closed), and a
// new one is not bound until the gateway restarts.
// Runs on: the gateway process's main thread. It never touches a data-plane socket.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLeafCsr } from '../ca/authority.ts';
import { serviceSpiffeId } from '../ca/spiffe.ts';
import { DEFAULT_PASSIVE_HEALTH_CHECK, type DataPlaneChain } from '../chain/types.ts';
import { WILDCARD_SERVICE, type IngressListener, type IngressListenerProtocol, type IngressService } from '../config/ingress-gateway.ts';
import { ApiError, type AgentClient } from '../control/client.ts';
import { compileHealthFilter, type HealthFilterEntry } from '../control/filter.ts';
import { PolicyEngine } from '../control/policy.ts';
import { targetEndpoints, type HealthEntry, type HostPort } from '../control/proxy.ts';
import { renewalDelayMs } from '../control/renewal.ts';
import { allocateCounters, counterBlock } from '../metrics/counters.ts';
import { allocateL7, l7Families, renderL7 } from '../metrics/l7.ts';
import { LatencyTotals } from '../metrics/latency.ts';
import { renderPrometheus, type Gauge } from '../metrics/prometheus.ts';
import { allocateWorkerGauges, renderRuntime, runtimeFamilies } from '../metrics/runtime.ts';
import { WorkerSupervisor } from '../workers/supervisor.ts';
import type { Endpoint, IngressRouting, IngressServiceRouting, RoutingSnapshot, TlsMaterial, UpstreamRouting, UpstreamSpec } from '../workers/messages.ts';
import type { GatewayConfigBody } from './config.ts';
import { ingressDomains } from './hosts.ts';

export interface IngressGatewayOptions {
  /** The gateway's name: its ingress-gateway entry, its identity and its catalog name. */
  readonly gateway: string;
  /** Host every listener binds (-address). */
  readonly address: string;
  readonly client: AgentClient;
  readonly workers: number;
  readonly metricsAddr: HostPort | null;
  readonly register: boolean;
  /** Access log: 'stdout', 'stderr' or a file path; absent: off. */
  readonly accessLog?: string;
  readonly log: (line: string) => void;
  /** Connect timeout of tcp listeners' upstream connections (HTTP takes the chain's). */
  readonly connectTimeoutMs?: number;
  readonly tlsMinVersion?: 'TLSv1.2' | 'TLSv1.3';
  /** As the sidecar's: a random wait in [0, this) before re-issuing the leaf after a root rotation. */
  readonly caChangeJitterMs?: number;
  readonly random?: () => number;
  readonly now?: () => number;
  readonly renewCheckMs?: number;
}

export interface BoundListener {
  /** `listener.<entry port>`: the ready line's key and the workers' listener name. */
  readonly name: string;
  /** The port the entry gives (0: any free port). */
  readonly port: number;
  readonly protocol: IngressListenerProtocol;
  readonly bound: HostPort;
}

export interface GatewayAddresses {
  readonly listeners: readonly BoundListener[];
  readonly metrics: HostPort | null;
}

/** The gateway cannot start (exit 1 with this message). */
export class GatewaySetupError extends Error {
  override readonly name = 'GatewaySetupError';
}

interface RootsBody {
  readonly ActiveRootID: string;
  readonly TrustDomain: string;
  readonly Roots: readonly { readonly ID: string; readonly RootCert: string; readonly NotAfter: string }[];
}

interface IssuedCertBody {
  readonly CertPEM: string;
  readonly ValidAfter: string;
  readonly ValidBefore: string;
}

/** L7 blocks beyond the services the entry names at start: room for services added live and a wildcard's. */
export const SPARE_SERVICE_BLOCKS = 16;
const REGISTER_TTL = '30s';
const HEARTBEAT_MS = 10_000;
const WATCH_RETRY_MS = 1000;
const WATCH_RETRY_MAX_MS = 30_000;
const MIN_REISSUE_MS = 10_000;
const RENEW_RETRY_MS = 10_000;
const SCRAPE_WAIT_MS = 200;

/** A chain with no route: http answers 503, tcp closes the connection (counted). */
function emptyChain(name: string): DataPlaneChain {
  return { serviceName: name, protocol: 'tcp', routes: [], targets: {}, limits: { maxConnections: 0, maxPendingRequests: 0, maxConcurrentRequests: 0 }, passiveHealthCheck: DEFAULT_PASSIVE_HEALTH_CHECK };
}

function listenerName(port: number): string {
  return `listener.${port}`;
}

function signature(listeners: readonly { readonly port: number; readonly protocol: string }[]): string {
  return listeners
    .map((l) => `${l.port}/${l.protocol}`)
    .sort()
    .join(', ');
}

export class IngressGateway {
  readonly #o: IngressGatewayOptions;
  readonly #client: AgentClient;
  readonly #abort = new AbortController();
  /** The workers need a policy table; a gateway has no public listener, so it stays empty. */
  readonly #policy: PolicyEngine;
  readonly #counters: SharedArrayBuffer;
  #l7Metrics: SharedArrayBuffer | null = null;
  #latency: LatencyTotals | null = null;
  readonly #workerGauges: SharedArrayBuffer;
  #supervisor: WorkerSupervisor | null = null;
  #metrics: Server | null = null;
  #tls: TlsMaterial | null = null;
  #datacenter = 'dc1';
  #activeRootId = '';
  #caPems: string[] = [];
  #trustDomain = '';
  #config: GatewayConfigBody | null = null;
  /** The listeners as bound at start (fixed for the process's life). */
  #listeners: readonly IngressListener[] = [];
  readonly #boundPorts = new Map<string, number>();
  /** L7 block of each (listener, service), assigned on first sight and kept. */
  readonly #serviceBlocks = new Map<string, number>();
  #firstServiceBlock = 0;
  #blockCount = 0;
  #nextBlock = 0;
  #warnedFull = false;
  #warnedListeners = '';
  readonly #warnedServices = new Set<string>();
  readonly #health = new Map<string, readonly HealthEntry[]>();
  readonly #healthWatches = new Map<string, AbortController>();
  readonly #filters = new Map<string, (e: HealthFilterEntry) => boolean>();
  #routingVersion = 0;
  #routing: RoutingSnapshot | null = null;
  #renewTimer: NodeJS.Timeout | undefined;
  #renewAt = Infinity;
  #renewing = false;
  #leafNotAfter = 0;
  #rootNotAfter = 0;
  #heartbeat: NodeJS.Timeout | undefined;
  #registered = false;

  constructor(opts: IngressGatewayOptions) {
    this.#o = opts;
    this.#client = opts.client;
    this.#policy = new PolicyEngine({ maxWorkers: opts.workers, defaultAllow: false });
    this.#counters = allocateCounters(opts.workers);
    this.#workerGauges = allocateWorkerGauges(opts.workers);
  }

  async start(): Promise<GatewayAddresses> {
    const self = await this.#client.json<{ Config: { Datacenter: string } }>('GET', '/v1/agent/self');
    this.#datacenter = self.value.Config.Datacenter;
    const configIndex = await this.#loadConfig(0);
    const entry = this.#config?.Entry ?? null;
    if (entry === null) {
      throw new GatewaySetupError(`no ingress-gateway config entry is named ${JSON.stringify(this.#o.gateway)}: write one (meshd config write) before starting the gateway`);
    }
    this.#listeners = entry.listeners;
    if (this.#listeners.length === 0) this.#o.log(`[WARN] gateway: ingress-gateway ${JSON.stringify(this.#o.gateway)} declares no listeners: nothing to bind`);
    this.#warnedListeners = signature(this.#listeners);
    // Blocks: 0 (a sidecar's public listener; unused), one per listener, then the services'.
    const named = this.#listeners.reduce((n, l) => n + l.services.filter((s) => s.name !== WILDCARD_SERVICE).length, 0);
    this.#firstServiceBlock = 1 + this.#listeners.length;
    this.#nextBlock = this.#firstServiceBlock;
    this.#blockCount = this.#firstServiceBlock + named + SPARE_SERVICE_BLOCKS;
    this.#l7Metrics = allocateL7(this.#o.workers, this.#blockCount);
    this.#latency = new LatencyTotals(this.#blockCount);

    const rootsIndex = await this.#loadRoots();
    await this.#issueLeaf();
    // An empty table, published once: the workers' policy reader needs one.
    await this.#policy.update([], false);
    const healthIndexes = new Map<string, number>();
    for (const service of this.#targetServices()) healthIndexes.set(service, await this.#loadHealth(service, 0));
    this.#publishRouting();

    const upstreams: UpstreamSpec[] = this.#listeners.map((l) => ({ name: listenerName(l.port), host: this.#o.address, port: l.port }));
    this.#supervisor = new WorkerSupervisor({
      count: this.#o.workers,
      base: {
        policy: this.#policy.memory,
        counters: this.#counters,
        service: this.#o.gateway,
        inbound: null,
        upstreams,
        ingress: this.#listeners.filter((l) => l.protocol === 'http').map((l) => listenerName(l.port)),
        l7Listeners: this.#blockCount,
        l7Metrics: this.#l7Metrics,
        workerGauges: this.#workerGauges,
        connectTimeoutMs: this.#o.connectTimeoutMs ?? 5000,
        handshakeTimeoutMs: 10_000,
        ...(this.#o.tlsMinVersion === undefined ? {} : { tlsMinVersion: this.#o.tlsMinVersion }),
        ...(this.#o.accessLog === undefined ? {} : { accessLog: this.#o.accessLog }),
      },
      currentTls: () => this.#requireTls(),
      currentRouting: () => this.#requireRouting(),
      onWorkerExit: (_index, slot) => this.#policy.releaseReader(slot),
      onLatency: (_index, delta) => this.#latency?.merge(delta),
    });
    const ports = await this.#supervisor.start();
    for (const u of upstreams) this.#boundPorts.set(u.name, ports.upstreams[u.name] ?? u.port);
    // Port 0: the virtual hosts' `:<port>` domains name the port the kernel gave.
    if (this.#listeners.some((l) => l.port === 0)) this.#publishRouting();
    this.#renewTimer = setInterval(() => this.#checkRenewal(), this.#o.renewCheckMs ?? 1000);

    this.#watch('roots', rootsIndex, (i) => this.#watchRoots(i));
    this.#watch('gateway config', configIndex, (i) => this.#loadConfig(i));
    for (const [service, index] of healthIndexes) this.#watchHealth(service, index);

    const metrics = this.#o.metricsAddr === null ? null : await this.#startMetrics(this.#o.metricsAddr);
    const listeners = this.#listeners.map((l): BoundListener => {
      const name = listenerName(l.port);
      return { name, port: l.port, protocol: l.protocol, bound: { host: this.#o.address, port: this.#boundPorts.get(name) ?? l.port } };
    });
    if (this.#o.register) await this.#register(listeners[0]?.bound.port ?? 0);
    return { listeners, metrics };
  }

  async stop(): Promise<void> {
    this.#abort.abort();
    clearInterval(this.#renewTimer);
    clearInterval(this.#heartbeat);
    if (this.#registered) {
      try {
        await this.#client.request('PUT', `/v1/agent/service/deregister/${encodeURIComponent(this.#o.gateway)}`);
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) this.#o.log(`[WARN] gateway: could not deregister ${this.#o.gateway}: ${(err as Error).message}`);
      }
      this.#registered = false;
    }
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
   * The sidecar's families (meshd format): L7 per http listener (`listener`, requests no
   * service took) and per exposed service (`listener` and `upstream`), L4 counters, the
   * gateway's own gauges and the runtime gauges, all with `service` = the gateway's name.
   */
  metricsText(): string {
    const workers = this.#o.workers;
    const blocks = Array.from({ length: workers }, (_v, i) => counterBlock(this.#counters, i));
    const own: Gauge[] = [
      { name: 'meshd_workers', help: 'Data-plane worker threads configured.', type: 'gauge', samples: [{ labels: {}, value: workers }] },
      { name: 'meshd_worker_restarts_total', help: 'Data-plane workers restarted after a crash.', type: 'counter', samples: [{ labels: {}, value: this.#supervisor?.restarts ?? 0 }] },
      { name: 'meshd_leaf_expiry_seconds', help: "Seconds until this gateway's leaf certificate expires.", type: 'gauge', samples: [{ labels: {}, value: Math.round((this.#leafNotAfter - this.#now()) / 1000) }] },
      { name: 'meshd_root_expiry_seconds', help: 'Seconds until the active root CA certificate expires.', type: 'gauge', samples: [{ labels: {}, value: Math.round((this.#rootNotAfter - this.#now()) / 1000) }] },
    ];
    const mem = process.memoryUsage();
    const runtime = runtimeFamilies(this.#workerGauges, workers, { rss: mem.rss, heapUsed: mem.heapUsed, heapTotal: mem.heapTotal, external: mem.external });
    const labels = { service: this.#o.gateway };
    let l7 = '';
    if (this.#l7Metrics !== null && this.#latency !== null) {
      const latency = this.#latency;
      // One label set per block; blocks without one (a sidecar's inbound, tcp listeners, unused
      // service blocks) are dropped from the output.
      const SKIP = { __skip: '1' };
      const blockLabels: Record<string, string>[] = Array.from({ length: this.#blockCount }, () => SKIP);
      this.#listeners.forEach((l, i) => {
        if (l.protocol === 'http') blockLabels[1 + i] = { direction: 'outbound', listener: String(l.port) };
      });
      for (const [key, block] of this.#serviceBlocks) {
        const [listener, upstream] = key.split('\u0000') as [string, string];
        blockLabels[block] = { direction: 'outbound', listener, upstream };
      }
      const durations = Array.from({ length: this.#blockCount }, (_v, b) => latency.histogram(b));
      const families = l7Families(this.#l7Metrics, workers, blockLabels, durations).map((f) => ({ ...f, samples: f.samples.filter((s) => s.labels.__skip === undefined) }));
      l7 = renderL7(families, labels);
    }
    return l7 + renderPrometheus(blocks, labels, own) + renderRuntime(runtime, labels);
  }

  // ------------------------------------------------------------------------ certificates

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
    if (this.#tls !== null) this.#publishTls({ ...this.#tls, caPems: this.#caPems, trustDomain: this.#trustDomain });
    if (rotated) this.#scheduleRenewal(Math.floor((this.#o.random ?? Math.random)() * (this.#o.caChangeJitterMs ?? 30_000)));
    return r.index;
  }

  async #issueLeaf(): Promise<void> {
    const uri = serviceSpiffeId(this.#trustDomain, 'default', this.#datacenter, this.#o.gateway);
    const { csrPem, keyPem } = await createLeafCsr(uri);
    let r: { value: IssuedCertBody };
    for (let attempt = 1; ; attempt++) {
      try {
        r = await this.#client.json<IssuedCertBody>('POST', '/v1/connect/ca/sign', { body: { CSR: csrPem }, signal: this.#abort.signal });
        break;
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 429) || attempt >= 20) throw err;
        const wait = (err.retryAfterMs ?? 1000) + Math.floor((this.#o.random ?? Math.random)() * 1000);
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
    this.#leafNotAfter = Date.parse(r.value.ValidBefore);
    this.#publishTls({ keyPem, certPem: r.value.CertPEM, caPems: this.#caPems, trustDomain: this.#trustDomain, uri });
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
        this.#o.log(`[WARN] gateway: leaf renewal failed, retrying in 10s: ${err.message}`);
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

  // ------------------------------------------------------------------------ config and health

  async #loadConfig(index: number): Promise<number> {
    const r = await this.#client.json<GatewayConfigBody>('GET', `/v1/internal/meshd/gateway-config/${encodeURIComponent(this.#o.gateway)}`, { index, signal: this.#abort.signal });
    if (index !== 0 && r.index === index) return r.index;
    this.#config = r.value;
    for (const [service, why] of Object.entries(r.value.ChainErrors)) this.#o.log(`[WARN] gateway: the discovery chain of ${service} does not compile, not exposed: ${why}`);
    if (this.#supervisor !== null) {
      this.#checkListenerSet();
      for (const service of this.#targetServices()) {
        if (this.#healthWatches.has(service)) continue;
        this.#watchHealth(service, await this.#loadHealth(service, 0));
      }
      const targets = this.#targetServices();
      for (const [service, ctl] of this.#healthWatches) {
        if (targets.has(service)) continue;
        ctl.abort();
        this.#healthWatches.delete(service);
        this.#health.delete(service);
      }
      this.#publishRouting();
    }
    return r.index;
  }

  /** Logs (once per distinct change) that the entry's listeners differ from the bound ones. */
  #checkListenerSet(): void {
    const entry = this.#config?.Entry ?? null;
    const now = entry === null ? '(entry deleted)' : signature(entry.listeners);
    if (now === this.#warnedListeners) return;
    this.#warnedListeners = now;
    const bound = signature(this.#listeners);
    if (now === bound) {
      this.#o.log(`[INFO] gateway: the listeners of ingress-gateway ${JSON.stringify(this.#o.gateway)} match the bound ones again`);
      return;
    }
    this.#o.log(
      `[WARN] gateway: the listeners of ingress-gateway ${JSON.stringify(this.#o.gateway)} changed (now: ${now || 'none'}; bound: ${bound || 'none'}): ` +
        'RESTART THE GATEWAY to apply them; until then bound listeners missing from the entry answer nothing, and new ones are not bound',
    );
  }

  /** Every service a target of an exposed chain names. */
  #targetServices(): Set<string> {
    const out = new Set<string>();
    for (const chain of Object.values(this.#config?.Chains ?? {})) for (const t of Object.values(chain.targets)) out.add(t.service);
    return out;
  }

  async #loadHealth(service: string, index: number, signal: AbortSignal = this.#abort.signal): Promise<number> {
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
        this.#o.log(`[WARN] gateway: subset filter ${JSON.stringify(expr)} does not compile: ${(err as Error).message}`);
        f = () => false;
      }
      this.#filters.set(expr, f);
    }
    return f;
  }

  #upstreamRouting(chain: DataPlaneChain): UpstreamRouting {
    const endpoints: Record<string, readonly Endpoint[]> = {};
    for (const [id, t] of Object.entries(chain.targets)) endpoints[id] = targetEndpoints(this.#health.get(t.service) ?? [], t, this.#filter(t.filter));
    return { chain, endpoints };
  }

  /** The L7 block of a (listener, service); the listener's own once the spare blocks are used up. */
  #blockFor(listenerIndex: number, port: number, service: string): number {
    const key = `${port}\u0000${service}`;
    const known = this.#serviceBlocks.get(key);
    if (known !== undefined) return known;
    if (this.#nextBlock >= this.#blockCount) {
      if (!this.#warnedFull) {
        this.#warnedFull = true;
        this.#o.log(`[WARN] gateway: more exposed services than L7 metric blocks (${this.#blockCount - this.#firstServiceBlock}): ${service} and later ones count under their listener only until a restart`);
      }
      return 1 + listenerIndex;
    }
    const block = this.#nextBlock++;
    this.#serviceBlocks.set(key, block);
    return block;
  }

  #exposedService(listenerIndex: number, l: IngressListener, s: IngressService, name: string, chain: DataPlaneChain): IngressServiceRouting {
    const port = this.#boundPorts.get(listenerName(l.port)) ?? l.port;
    return {
      service: name,
      domains: ingressDomains(name, s.name === WILDCARD_SERVICE ? [] : s.hosts, port),
      block: this.#blockFor(listenerIndex, l.port, name),
      requestHeaders: s.requestHeaders,
      responseHeaders: s.responseHeaders,
      upstream: this.#upstreamRouting(chain),
    };
  }

  /** Builds the workers' routing snapshot from the config and the health results, and sends it. */
  #publishRouting(): void {
    const cfg = this.#config;
    if (cfg === null) return;
    const live = new Map((cfg.Entry?.listeners ?? []).map((l) => [l.port, l]));
    const upstreams: Record<string, UpstreamRouting> = {};
    const ingress: Record<string, IngressRouting> = {};
    this.#listeners.forEach((bound, i) => {
      const name = listenerName(bound.port);
      const l = live.get(bound.port);
      const current = l !== undefined && l.protocol === bound.protocol ? l : null;
      if (bound.protocol === 'tcp') {
        const service = current?.services[0]?.name;
        const chain = service === undefined ? undefined : cfg.Chains[service];
        // L4, as Consul's tcp listener: the chain's first target (and its failover).
        upstreams[name] = chain === undefined ? { chain: emptyChain(name), endpoints: {} } : this.#upstreamRouting({ ...chain, protocol: 'tcp' });
        return;
      }
      const services: IngressServiceRouting[] = [];
      const explicit = new Set<string>();
      for (const s of current?.services ?? []) {
        if (s.name === WILDCARD_SERVICE) continue;
        explicit.add(s.name);
        const chain = cfg.Chains[s.name];
        if (chain === undefined || chain.protocol === 'tcp') {
          const key = `${bound.port}/${s.name}`;
          if (!this.#warnedServices.has(key)) {
            this.#warnedServices.add(key);
            this.#o.log(`[WARN] gateway: ${s.name} is not exposed on listener ${bound.port}: ${chain === undefined ? 'its chain did not compile' : 'it is a tcp service on an http listener'}`);
          }
          continue;
        }
        services.push(this.#exposedService(i, bound, s, s.name, chain));
      }
      const wildcard = current?.services.find((s) => s.name === WILDCARD_SERVICE);
      if (wildcard !== undefined) {
        for (const svc of cfg.WildcardServices) {
          const chain = cfg.Chains[svc];
          if (explicit.has(svc) || chain === undefined) continue;
          services.push(this.#exposedService(i, bound, wildcard, svc, chain));
        }
      }
      ingress[name] = { services };
    });
    // A gateway has no public listener; the snapshot's inbound part is never read.
    const inbound = { protocol: 'tcp' as const, localConnectTimeoutMs: 5000, localRequestTimeoutMs: 15_000, intentionSources: [], intentionJwt: null, defaultAllow: false };
    this.#routing = { version: ++this.#routingVersion, inbound, upstreams, ingress };
    this.#supervisor?.broadcast({ type: 'routing', routing: this.#routing });
  }

  #requireRouting(): RoutingSnapshot {
    if (this.#routing === null) throw new Error('no routing yet');
    return this.#routing;
  }

  /** Runs a blocking-query loop until stop(); errors back off (with jitter) and retry. */
  #watch(what: string, start: number, step: (index: number) => Promise<number>, signal: AbortSignal = this.#abort.signal): void {
    const loop = async (): Promise<void> => {
      let index = start;
      let failures = 0;
      while (!signal.aborted) {
        try {
          const next = await step(index);
          failures = 0;
          index = next < index ? 0 : next;
        } catch (err) {
          if (signal.aborted) return;
          const cap = Math.min(WATCH_RETRY_MAX_MS, WATCH_RETRY_MS * 2 ** Math.min(failures, 10));
          const wait = Math.floor(cap / 2 + (this.#o.random ?? Math.random)() * (cap / 2));
          failures++;
          this.#o.log(`[WARN] gateway: watch ${what} failed (${failures} in a row), retrying in ${wait} ms: ${(err as Error).message}`);
          await new Promise((r) => setTimeout(r, wait));
          index = 0;
        }
      }
    };
    void loop();
  }

  // ------------------------------------------------------------------------ metrics, catalog

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

  /** Consul's gateway registration: Kind ingress-gateway, ID and Name the gateway's, a TTL heartbeat. */
  async #register(port: number): Promise<void> {
    const id = this.#o.gateway;
    await this.#client.request('PUT', '/v1/agent/service/register', {
      body: {
        ID: id,
        Name: id,
        Kind: 'ingress-gateway',
        Address: this.#o.address,
        Port: port,
        Check: { CheckID: `${id}-ttl`, Name: 'gateway heartbeat', TTL: REGISTER_TTL, Status: 'passing' },
      },
    });
    this.#registered = true;
    this.#heartbeat = setInterval(() => {
      this.#client.request('PUT', `/v1/agent/check/pass/${encodeURIComponent(`${id}-ttl`)}`).catch((err: Error) => {
        this.#o.log(`[WARN] gateway: heartbeat failed: ${err.message}`);
      });
    }, HEARTBEAT_MS);
  }
}
