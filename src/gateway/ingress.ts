// `meshd connect gateway -ingress -service NAME`: an ingress gateway's control thread. Like a
// sidecar's (src/control/proxy.ts), with the same pieces (src/control/agent-session.ts): it follows the agent with
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

import { DEFAULT_PASSIVE_HEALTH_CHECK, type DataPlaneChain } from '../chain/types.ts';
import { WILDCARD_SERVICE, type IngressListener, type IngressListenerProtocol, type IngressService } from '../config/ingress-gateway.ts';
import { AgentSession, REGISTER_TTL, type HostPort, type ReloadReport } from '../control/agent-session.ts';
import type { AgentClient } from '../control/client.ts';
import { PolicyEngine } from '../control/policy.ts';
import { allocateCounters, counterBlock } from '../metrics/counters.ts';
import { allocateL7, l7Families, renderL7 } from '../metrics/l7.ts';
import { LatencyTotals } from '../metrics/latency.ts';
import { renderPrometheus, type Gauge } from '../metrics/prometheus.ts';
import { allocateWorkerGauges, renderRuntime, runtimeFamilies } from '../metrics/runtime.ts';
import { WorkerSupervisor } from '../workers/supervisor.ts';
import type { IngressRouting, IngressServiceRouting, RoutingSnapshot, UpstreamRouting, UpstreamSpec } from '../workers/messages.ts';
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
  /** V8 old-generation limit of each worker, MB (-worker-memory-limit); absent: none. */
  readonly workerMemoryLimitMb?: number;
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

/** L7 blocks beyond the services the entry names at start: room for services added live and a wildcard's. */
export const SPARE_SERVICE_BLOCKS = 16;
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
  /** The workers need a policy table; a gateway has no public listener, so it stays empty. */
  readonly #policy: PolicyEngine;
  readonly #counters: SharedArrayBuffer;
  /** Watches, certificates, exposed targets' health, registration, /metrics (../control/agent-session.ts). */
  readonly #session: AgentSession;
  #l7Metrics: SharedArrayBuffer | null = null;
  #latency: LatencyTotals | null = null;
  readonly #workerGauges: SharedArrayBuffer;
  #supervisor: WorkerSupervisor | null = null;
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
  #routingVersion = 0;
  #routing: RoutingSnapshot | null = null;

  constructor(opts: IngressGatewayOptions) {
    this.#o = opts;
    this.#client = opts.client;
    this.#policy = new PolicyEngine({ maxWorkers: opts.workers, defaultAllow: false });
    this.#counters = allocateCounters(opts.workers);
    this.#workerGauges = allocateWorkerGauges(opts.workers);
    this.#session = new AgentSession({
      ...opts,
      who: 'gateway',
      service: opts.gateway,
      publishTls: (tls) => this.#supervisor?.broadcast({ type: 'tls', tls }),
      onHealthChange: () => this.#publishRouting(),
    });
  }

  async start(): Promise<GatewayAddresses> {
    const self = await this.#client.json<{ Config: { Datacenter: string } }>('GET', '/v1/agent/self');
    const { certs, watches, signal } = this.#session;
    certs.datacenter = self.value.Config.Datacenter;
    this.#session.health.datacenter = self.value.Config.Datacenter;
    const configIndex = await this.#loadConfig(0, signal);
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

    const rootsIndex = await certs.loadRoots();
    await certs.issueLeaf();
    // An empty table, published once: the workers' policy reader needs one.
    await this.#policy.update([], false);
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
      currentTls: () => certs.tls,
      currentRouting: () => this.#requireRouting(),
      onWorkerExit: (_index, slot) => this.#policy.releaseReader(slot),
      onLatency: (_index, delta) => this.#latency?.merge(delta),
      ...(this.#o.workerMemoryLimitMb === undefined ? {} : { memoryLimitMb: this.#o.workerMemoryLimitMb }),
    });
    const ports = await this.#supervisor.start();
    for (const u of upstreams) this.#boundPorts.set(u.name, ports.upstreams[u.name] ?? u.port);
    // Port 0: the virtual hosts' `:<port>` domains name the port the kernel gave.
    if (this.#listeners.some((l) => l.port === 0)) this.#publishRouting();
    certs.startRenewal();

    watches.add('roots', rootsIndex, certs.watchRoots);
    watches.add('gateway config', configIndex, (i, s) => this.#loadConfig(i, s));

    const metrics = await this.#session.serveMetrics(this.#o.metricsAddr, () => this.scrape());
    const listeners = this.#listeners.map((l): BoundListener => {
      const name = listenerName(l.port);
      return { name, port: l.port, protocol: l.protocol, bound: { host: this.#o.address, port: this.#boundPorts.get(name) ?? l.port } };
    });
    if (this.#o.register) await this.#register(listeners[0]?.bound.port ?? 0);
    return { listeners, metrics };
  }

  /** As the sidecar's (SidecarProxy.stop): deregister, drain for up to `drainTimeoutMs`, stop. */
  stop(opts: { readonly drainTimeoutMs?: number } = {}): Promise<void> {
    return this.#session.stop(this.#supervisor, opts.drainTimeoutMs ?? 0);
  }

  /**
   * As the sidecar's (SidecarProxy.reload): the gateway config with its chains, the roots and
   * the health of every target are read again now, a new leaf is issued and the registration
   * written again, with no listener or connection touched. A changed listener set still
   * needs a restart (logged, as when the change arrives by a watch).
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
   * The sidecar's families (meshd format): L7 per http listener (`listener`, requests no
   * service took) and per exposed service (`listener` and `upstream`), L4 counters, the
   * gateway's own gauges and the runtime gauges, all with `service` = the gateway's name.
   */
  metricsText(): string {
    const workers = this.#o.workers;
    const blocks = Array.from({ length: workers }, (_v, i) => counterBlock(this.#counters, i));
    const own: Gauge[] = this.#session.gauges(workers, this.#supervisor?.restarts ?? 0);
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

  // ------------------------------------------------------------------------ config and health

  /** The gateway config with every exposed chain; the health of their targets is read before routing to them. */
  async #loadConfig(index: number, signal: AbortSignal): Promise<number> {
    const r = await this.#client.json<GatewayConfigBody>('GET', `/v1/internal/meshd/gateway-config/${encodeURIComponent(this.#o.gateway)}`, { index, signal });
    if (index !== 0 && r.index === index) return r.index;
    this.#config = r.value;
    for (const [service, why] of Object.entries(r.value.ChainErrors)) this.#o.log(`[WARN] gateway: the discovery chain of ${service} does not compile, not exposed: ${why}`);
    if (this.#supervisor !== null) this.#checkListenerSet();
    await this.#session.health.followChains(Object.values(r.value.Chains), signal);
    this.#publishRouting();
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
      upstream: this.#session.health.upstreamRouting(chain),
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
        upstreams[name] = chain === undefined ? { chain: emptyChain(name), endpoints: {} } : this.#session.health.upstreamRouting({ ...chain, protocol: 'tcp' });
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

  /** Consul's gateway registration: Kind ingress-gateway, ID and Name the gateway's, a TTL heartbeat. */
  async #register(port: number): Promise<void> {
    const id = this.#o.gateway;
    await this.#session.registration.register({
      ID: id,
      Name: id,
      Kind: 'ingress-gateway',
      Address: this.#o.address,
      Port: port,
      Check: { CheckID: `${id}-ttl`, Name: 'gateway heartbeat', TTL: REGISTER_TTL, Status: 'passing' },
    });
  }
}
