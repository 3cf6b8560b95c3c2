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
// new one is not bound until the gateway restarts. A listener's TLS (on or off, its lowest
// version) is part of the listener set: bound at start, a change is logged and the listener
// routes nothing until the restart (a listener never serves plain HTTP once its entry asks
// for TLS). TLS listeners present the operator's certificate (-tls-cert-file and
// -tls-key-file, ./ingress-cert.ts): read at start (the gateway does not start without it
// when a listener needs it, nor with a bad file) and again on reload, when new connections get
// the new one.
// Runs on: the gateway process's main thread. It never touches a data-plane socket.

import { DEFAULT_PASSIVE_HEALTH_CHECK, type DataPlaneChain } from '../chain/types.ts';
import { WILDCARD_SERVICE, ingressListenerTls, type EffectiveIngressTls, type IngressGatewayEntry, type IngressListener, type IngressListenerProtocol, type IngressService } from '../config/ingress-gateway.ts';
import { AgentSession, REGISTER_TTL, type HostPort, type ReloadReport } from '../control/agent-session.ts';
import type { AgentClient } from '../control/client.ts';
import { PolicyEngine } from '../control/policy.ts';
import { allocateCounters, counterBlock } from '../metrics/counters.ts';
import { allocateL7, l7Families, renderL7 } from '../metrics/l7.ts';
import { LatencyTotals } from '../metrics/latency.ts';
import { renderPrometheus, type Gauge } from '../metrics/prometheus.ts';
import { allocateWorkerGauges, renderRuntime, runtimeFamilies } from '../metrics/runtime.ts';
import { WorkerSupervisor } from '../workers/supervisor.ts';
import type { IngressCertificate, IngressRouting, IngressServiceRouting, RoutingSnapshot, UpstreamRouting, UpstreamSpec } from '../workers/messages.ts';
import type { GatewayConfigBody } from './config.ts';
import { IngressCertificateError, describeIngressCertificate, loadIngressCertificate, type IngressCertificateFiles, type LoadedIngressCertificate } from './ingress-cert.ts';
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
  /** -tls-cert-file and -tls-key-file: the certificate of TLS listeners; absent: none given. */
  readonly tlsFiles?: IngressCertificateFiles;
}

export interface BoundListener {
  /** `listener.<entry port>`: the ready line's key and the workers' listener name. */
  readonly name: string;
  /** The port the entry gives (0: any free port). */
  readonly port: number;
  readonly protocol: IngressListenerProtocol;
  readonly bound: HostPort;
  /** Terminates TLS, with this lowest version; null: plain. */
  readonly tls: EffectiveIngressTls;
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

/** A listener's protocol as bound: `http`, `tcp`, or `https(TLSv1.3)`. */
function boundProtocol(entry: Pick<IngressGatewayEntry, 'tls'>, l: IngressListener): string {
  const t = ingressListenerTls(entry, l);
  return t === null ? l.protocol : `https(${t.minVersion})`;
}

function signature(entry: IngressGatewayEntry): string {
  return entry.listeners
    .map((l) => `${l.port}/${boundProtocol(entry, l)}`)
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
  /** The entry as bound at start (its listeners' TLS is fixed with them). */
  #boundEntry: IngressGatewayEntry | null = null;
  /** The TLS listeners' certificate (the operator's files); null: none given. */
  #certificate: LoadedIngressCertificate | null = null;
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
    // The operator's files first: a bad one stops the gateway before it asks the agent anything.
    if (this.#o.tlsFiles !== undefined) {
      try {
        this.#certificate = loadIngressCertificate(this.#o.tlsFiles);
      } catch (e) {
        if (e instanceof IngressCertificateError) throw new GatewaySetupError(e.message);
        throw e;
      }
      this.#o.log(`[INFO] gateway: TLS certificate loaded from -tls-cert-file: ${describeIngressCertificate(this.#certificate)}`);
    }
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
    this.#boundEntry = entry;
    if (this.#listeners.length === 0) this.#o.log(`[WARN] gateway: ingress-gateway ${JSON.stringify(this.#o.gateway)} declares no listeners: nothing to bind`);
    this.#warnedListeners = signature(entry);
    // Which listeners terminate TLS, fixed with the listener set. As for a port already in use,
    // a listener the gateway cannot serve stops it at start rather than being left unbound.
    const ingressTls: Record<string, 'TLSv1.2' | 'TLSv1.3'> = {};
    for (const l of this.#listeners) {
      const t = ingressListenerTls(entry, l);
      if (t !== null && l.protocol === 'http') ingressTls[listenerName(l.port)] = t.minVersion;
    }
    const tlsPorts = this.#listeners.filter((l) => ingressTls[listenerName(l.port)] !== undefined).map((l) => l.port);
    if (tlsPorts.length > 0 && this.#certificate === null) {
      throw new GatewaySetupError(
        `ingress-gateway ${JSON.stringify(this.#o.gateway)} enables TLS on the listener(s) on port ${tlsPorts.join(', ')}: start the gateway with -tls-cert-file FILE and -tls-key-file FILE (PEM: the certificate with its chain, and its key)`,
      );
    }
    if (tlsPorts.length === 0 && this.#certificate !== null) {
      this.#o.log(`[WARN] gateway: -tls-cert-file given, but no listener of ingress-gateway ${JSON.stringify(this.#o.gateway)} enables TLS: the certificate is unused until one does and the gateway restarts`);
    }
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

    const currentCertificate = (): IngressCertificate | undefined => this.#certificate?.material;
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
        ...(tlsPorts.length === 0 ? {} : { ingressTls }),
        l7Listeners: this.#blockCount,
        l7Metrics: this.#l7Metrics,
        workerGauges: this.#workerGauges,
        connectTimeoutMs: this.#o.connectTimeoutMs ?? 5000,
        handshakeTimeoutMs: 10_000,
        ...(this.#o.tlsMinVersion === undefined ? {} : { tlsMinVersion: this.#o.tlsMinVersion }),
        ...(this.#o.accessLog === undefined ? {} : { accessLog: this.#o.accessLog }),
        // A getter: the supervisor spreads the base into each worker's init, so a worker
        // started after a reload (a crashed one's replacement) gets the current certificate.
        get ingressCertificate(): IngressCertificate | undefined {
          return currentCertificate();
        },
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
      return { name, port: l.port, protocol: l.protocol, bound: { host: this.#o.address, port: this.#boundPorts.get(name) ?? l.port }, tls: ingressTls[name] === undefined ? null : { minVersion: ingressTls[name] } };
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
    this.reloadCertificate();
    return this.#session.reload();
  }

  /**
   * Reads -tls-cert-file and -tls-key-file again and hands the certificate to every worker:
   * the next handshakes present it, open connections keep theirs. A file that fails the
   * checks keeps the current certificate (logged). false: nothing was swapped.
   */
  reloadCertificate(): boolean {
    const files = this.#o.tlsFiles;
    if (files === undefined) return false;
    let loaded: LoadedIngressCertificate;
    try {
      loaded = loadIngressCertificate(files);
    } catch (e) {
      if (!(e instanceof IngressCertificateError)) throw e;
      this.#o.log(`[WARN] gateway: reload: keeping the current TLS certificate: ${e.message}`);
      return false;
    }
    this.#certificate = loaded;
    this.#supervisor?.broadcast({ type: 'ingress-certificate', certificate: loaded.material });
    this.#o.log(`[INFO] gateway: reload: TLS certificate read again from -tls-cert-file, new connections get it: ${describeIngressCertificate(loaded)}`);
    return true;
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
    const now = entry === null ? '(entry deleted)' : signature(entry);
    if (now === this.#warnedListeners) return;
    this.#warnedListeners = now;
    const bound = this.#boundEntry === null ? '' : signature(this.#boundEntry);
    if (now === bound) {
      this.#o.log(`[INFO] gateway: the listeners of ingress-gateway ${JSON.stringify(this.#o.gateway)} match the bound ones again`);
      return;
    }
    this.#o.log(
      `[WARN] gateway: the listeners of ingress-gateway ${JSON.stringify(this.#o.gateway)} changed (now: ${now || 'none'}; bound: ${bound || 'none'}): ` +
        'RESTART THE GATEWAY to apply them; until then bound listeners missing from the entry (or whose protocol or TLS changed) answer nothing, and new ones are not bound' +
        (this.#certificate === null && /https/.test(now) ? ' (a TLS listener also needs -tls-cert-file and -tls-key-file)' : ''),
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
    const liveEntry = cfg.Entry;
    const boundEntry = this.#boundEntry;
    const live = new Map((liveEntry?.listeners ?? []).map((l) => [l.port, l]));
    const upstreams: Record<string, UpstreamRouting> = {};
    const ingress: Record<string, IngressRouting> = {};
    this.#listeners.forEach((bound, i) => {
      const name = listenerName(bound.port);
      const l = live.get(bound.port);
      // A listener whose protocol or TLS changed serves nothing until the restart.
      const same = l !== undefined && liveEntry !== null && boundEntry !== null && boundProtocol(liveEntry, l) === boundProtocol(boundEntry, bound);
      const current = same ? l : null;
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
