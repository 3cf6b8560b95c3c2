// `meshd connect gateway -mesh -service NAME`: a mesh gateway's control thread. It follows one
// blocking query, `GET /v1/internal/meshd/mesh-gateway-config/NAME` (./mesh-config.ts, on the
// agent): which SNI names map to which local sidecars, and which other datacenters have which
// mesh gateways. It turns that into the workers' routing snapshot, registers the gateway
// (Kind mesh-gateway, TaggedAddresses lan and wan) with a TTL heartbeat, serves /metrics, and
// runs the same data-plane workers as a sidecar, whose listeners here are SNI routers
// (./mesh-listener.ts).
//
// Its identity is `spiffe://<td>/gateway/mesh/dc/<dc>`, but it holds no key and no certificate:
// it never terminates TLS and never asks the agent for a leaf (Consul's mesh gateway cannot
// decrypt the traffic it carries either).
// Runs on: the gateway process's main thread. It never touches a data-plane socket.

import { formatSpiffeId } from '../ca/spiffe.ts';
import { AgentSession, REGISTER_TTL, type HostPort, type ReloadReport } from '../control/agent-session.ts';
import type { AgentClient } from '../control/client.ts';
import { PolicyEngine } from '../control/policy.ts';
import { allocateConnectionCounts, allocateCounters, counterBlock } from '../metrics/counters.ts';
import { allocateL7 } from '../metrics/l7.ts';
import { MESH_DESTINATION_BLOCKS, allocateMeshMetrics, meshGatewayFamilies, type DestinationLabels } from '../metrics/mesh-gateway.ts';
import { renderFamilies, renderPrometheus, type Gauge } from '../metrics/prometheus.ts';
import { allocateWorkerGauges, renderRuntime, runtimeFamilies } from '../metrics/runtime.ts';
import { WorkerSupervisor } from '../workers/supervisor.ts';
import type { MeshDestination, MeshGatewayRouting, RoutingSnapshot, TlsMaterial, UpstreamSpec } from '../workers/messages.ts';
import type { MeshAddress, MeshGatewayConfigBody } from './mesh-config.ts';

export interface MeshGatewayOptions {
  /** -service: the catalog ID and name, and the name the agent's config route is asked for. */
  readonly name: string;
  /** -address: the LAN listener (port 0: any free port). */
  readonly lan: HostPort;
  /** -wan-address; null or equal to `lan`: one listener serves both. */
  readonly wan: HostPort | null;
  readonly client: AgentClient;
  readonly workers: number;
  readonly metricsAddr: HostPort | null;
  readonly register: boolean;
  readonly log: (line: string) => void;
  /** Dial timeout per instance (default 5 s). */
  readonly connectTimeoutMs?: number;
  /** A connection must send its whole ClientHello within this (default 10 s). */
  readonly sniTimeoutMs?: number;
  readonly workerMemoryLimitMb?: number;
  readonly random?: () => number;
}

export interface MeshGatewayAddresses {
  readonly identity: string;
  readonly lan: HostPort;
  readonly wan: HostPort;
  readonly metrics: HostPort | null;
}

const LAN = 'mesh.lan';
const WAN = 'mesh.wan';

/** The label of a service destination: the SNI without `.default.<dc>.internal.<td>`, i.e. `[<subset>.]<service>`. */
export function serviceLabel(sni: string, datacenter: string, trustDomain: string): string {
  const suffix = `.default.${datacenter}.internal.${trustDomain}`.toLowerCase();
  return sni.endsWith(suffix) ? sni.slice(0, -suffix.length) : sni;
}

export class MeshGateway {
  readonly #o: MeshGatewayOptions;
  readonly #client: AgentClient;
  readonly #session: AgentSession;
  readonly #policy: PolicyEngine;
  readonly #counters: SharedArrayBuffer;
  readonly #meshMetrics: SharedArrayBuffer;
  readonly #workerGauges: SharedArrayBuffer;
  #supervisor: WorkerSupervisor | null = null;
  #config: MeshGatewayConfigBody | null = null;
  #routingVersion = 0;
  #routing: RoutingSnapshot | null = null;
  /** Destination counter blocks, by `service:<sni>` or `dc:<name>`, assigned on first sight and kept. */
  readonly #blocks = new Map<string, number>();
  readonly #blockLabels: (DestinationLabels | undefined)[] = [{ kind: 'other', destination: '_other' }];
  #warnedFull = false;

  constructor(opts: MeshGatewayOptions) {
    this.#o = opts;
    this.#client = opts.client;
    this.#policy = new PolicyEngine({ maxWorkers: opts.workers, defaultAllow: false });
    this.#counters = allocateCounters(opts.workers);
    this.#meshMetrics = allocateMeshMetrics(opts.workers);
    this.#workerGauges = allocateWorkerGauges(opts.workers);
    // The session's certificate half is never used: no leaf, no roots (a mesh gateway holds no key).
    this.#session = new AgentSession({
      who: 'gateway',
      log: opts.log,
      client: opts.client,
      service: opts.name,
      publishTls: () => undefined,
      onHealthChange: () => undefined,
      ...(opts.random === undefined ? {} : { random: opts.random }),
    });
  }

  /** The gateway's SPIFFE ID (known once started). */
  get identity(): string {
    const c = this.#config;
    if (c === null) throw new Error('not started');
    return formatSpiffeId({ kind: 'mesh-gateway', trustDomain: c.TrustDomain, partition: 'default', datacenter: c.Datacenter });
  }

  async start(): Promise<MeshGatewayAddresses> {
    const { watches, signal } = this.#session;
    const configIndex = await this.#loadConfig(0, signal);
    // The workers' policy reader needs a published table; nothing here decides by intention.
    await this.#policy.update([], false);

    const wanSeparate = this.#o.wan !== null && (this.#o.wan.host !== this.#o.lan.host || this.#o.wan.port !== this.#o.lan.port);
    const upstreams: UpstreamSpec[] = [{ name: LAN, host: this.#o.lan.host, port: this.#o.lan.port }];
    if (wanSeparate && this.#o.wan !== null) upstreams.push({ name: WAN, host: this.#o.wan.host, port: this.#o.wan.port });
    const l7Blocks = 1 + upstreams.length;
    this.#supervisor = new WorkerSupervisor({
      count: this.#o.workers,
      base: {
        policy: this.#policy.memory,
        counters: this.#counters,
        service: this.#o.name,
        inbound: null,
        upstreams,
        l7Listeners: l7Blocks,
        l7Metrics: allocateL7(this.#o.workers, l7Blocks),
        workerGauges: this.#workerGauges,
        connectTimeoutMs: this.#o.connectTimeoutMs ?? 5000,
        handshakeTimeoutMs: 10_000,
        connectionCounts: allocateConnectionCounts(this.#o.workers, l7Blocks),
        workers: this.#o.workers,
        meshGateway: { listeners: upstreams.map((u) => u.name), metrics: this.#meshMetrics, destinations: MESH_DESTINATION_BLOCKS, sniTimeoutMs: this.#o.sniTimeoutMs ?? 10_000 },
      },
      currentTls: () => this.#noTls(),
      currentRouting: () => this.#requireRouting(),
      onWorkerExit: (_index, slot) => this.#policy.releaseReader(slot),
      ...(this.#o.workerMemoryLimitMb === undefined ? {} : { memoryLimitMb: this.#o.workerMemoryLimitMb }),
    });
    const ports = await this.#supervisor.start();
    const lan = { host: this.#o.lan.host, port: ports.upstreams[LAN] ?? this.#o.lan.port };
    const wan = wanSeparate && this.#o.wan !== null ? { host: this.#o.wan.host, port: ports.upstreams[WAN] ?? this.#o.wan.port } : lan;
    watches.add('mesh gateway config', configIndex, (i, s) => this.#loadConfig(i, s));
    const metrics = await this.#session.serveMetrics(this.#o.metricsAddr, () => Promise.resolve(this.metricsText()));
    if (this.#o.register) await this.#register(lan, wan);
    return { identity: this.identity, lan, wan, metrics };
  }

  /** Deregisters, then drains the workers for up to `drainTimeoutMs` (forwarded connections run on meanwhile). */
  stop(opts: { readonly drainTimeoutMs?: number } = {}): Promise<void> {
    return this.#session.stop(this.#supervisor, opts.drainTimeoutMs ?? 0);
  }

  /**
   * SIGHUP: the routing is read again from the agent now and the registration is written
   * again; no leaf is involved (there is none). Listeners and connections are untouched.
   */
  async reload(): Promise<ReloadReport> {
    const [resync, registered] = await Promise.all([this.#session.watches.resync(), this.#session.registration.reassert()]);
    return { watches: resync.watches, failedWatches: resync.failed, leaf: true, registered };
  }

  metricsText(): string {
    const workers = this.#o.workers;
    const blocks = Array.from({ length: workers }, (_v, i) => counterBlock(this.#counters, i));
    const labels = { service: this.#o.name };
    const own: Gauge[] = [
      { name: 'meshd_workers', help: 'Data-plane worker threads configured.', type: 'gauge', samples: [{ labels: {}, value: workers }] },
      { name: 'meshd_worker_restarts_total', help: 'Data-plane workers restarted after a crash.', type: 'counter', samples: [{ labels: {}, value: this.#supervisor?.restarts ?? 0 }] },
      { name: 'meshd_mesh_gateway_routes', help: 'Routes the mesh gateway holds, by kind (local service or subset names, other datacenters).', type: 'gauge', samples: this.#routeCounts() },
    ];
    const mem = process.memoryUsage();
    const runtime = runtimeFamilies(this.#workerGauges, workers, { rss: mem.rss, heapUsed: mem.heapUsed, heapTotal: mem.heapTotal, external: mem.external });
    return renderPrometheus(blocks, labels, own) + renderFamilies(meshGatewayFamilies(this.#meshMetrics, workers, this.#blockLabels), labels) + renderRuntime(runtime, labels);
  }

  #routeCounts(): { labels: Record<string, string>; value: number }[] {
    const r = this.#routing?.mesh;
    return [
      { labels: { kind: 'service' }, value: r === undefined ? 0 : Object.keys(r.services).length },
      { labels: { kind: 'datacenter' }, value: r === undefined ? 0 : Object.keys(r.datacenters).length },
    ];
  }

  async #loadConfig(index: number, signal: AbortSignal): Promise<number> {
    const r = await this.#client.json<MeshGatewayConfigBody>('GET', `/v1/internal/meshd/mesh-gateway-config/${encodeURIComponent(this.#o.name)}`, { index, signal });
    if (index !== 0 && r.index === index) return r.index;
    this.#config = r.value;
    this.#publishRouting();
    return r.index;
  }

  /** The counter block of a destination; block 0 ("_other") once the capacity is used up. */
  #blockFor(key: string, labels: DestinationLabels): number {
    const known = this.#blocks.get(key);
    if (known !== undefined) return known;
    if (this.#blockLabels.length >= MESH_DESTINATION_BLOCKS) {
      if (!this.#warnedFull) {
        this.#warnedFull = true;
        this.#o.log(`[WARN] gateway: more than ${MESH_DESTINATION_BLOCKS - 1} destinations: ${labels.destination} and later ones are counted as destination="_other"`);
      }
      return 0;
    }
    const block = this.#blockLabels.length;
    this.#blockLabels.push(labels);
    this.#blocks.set(key, block);
    return block;
  }

  #publishRouting(): void {
    const cfg = this.#config;
    if (cfg === null) return;
    const dc = cfg.Datacenter.toLowerCase();
    const td = cfg.TrustDomain.toLowerCase();
    const hosts = (list: readonly MeshAddress[]): MeshDestination['endpoints'] => list.map((a) => ({ host: a.Address, port: a.Port }));
    const services: Record<string, MeshDestination> = {};
    for (const [sni, list] of Object.entries(cfg.Services)) {
      const key = sni.toLowerCase();
      const block = this.#blockFor(`service:${key}`, { kind: 'service', destination: serviceLabel(key, dc, td) });
      Object.defineProperty(services, key, { value: { endpoints: hosts(list), block }, enumerable: true, writable: true, configurable: true });
    }
    const datacenters: Record<string, MeshDestination> = {};
    for (const [name, list] of Object.entries(cfg.Datacenters)) {
      const key = name.toLowerCase();
      if (key === dc) continue;
      const block = this.#blockFor(`dc:${key}`, { kind: 'datacenter', destination: key });
      Object.defineProperty(datacenters, key, { value: { endpoints: hosts(list), block }, enumerable: true, writable: true, configurable: true });
    }
    const mesh: MeshGatewayRouting = { datacenter: dc, trustDomain: td, services, datacenters };
    // No public listener and no upstream chains: only `mesh` is read.
    const inbound = { protocol: 'tcp' as const, localConnectTimeoutMs: 5000, localRequestTimeoutMs: 15_000, intentionSources: [], intentionJwt: null, defaultAllow: false };
    this.#routing = { version: ++this.#routingVersion, inbound, upstreams: {}, mesh };
    this.#supervisor?.broadcast({ type: 'routing', routing: this.#routing });
  }

  #requireRouting(): RoutingSnapshot {
    if (this.#routing === null) throw new Error('no routing yet');
    return this.#routing;
  }

  /** The workers' init carries TLS material; a mesh gateway has none (no listener reads it). */
  #noTls(): TlsMaterial {
    return { keyPem: '', certPem: '', caPems: [], trustDomain: this.#config?.TrustDomain ?? '', uri: this.#config === null ? '' : this.identity };
  }

  /** Consul's mesh gateway registration: Kind mesh-gateway, Port the LAN one, TaggedAddresses lan and wan, TTL heartbeat. */
  async #register(lan: HostPort, wan: HostPort): Promise<void> {
    const id = this.#o.name;
    await this.#session.registration.register({
      ID: id,
      Name: id,
      Kind: 'mesh-gateway',
      Address: lan.host,
      Port: lan.port,
      TaggedAddresses: { lan: { Address: lan.host, Port: lan.port }, wan: { Address: wan.host, Port: wan.port } },
      Check: { CheckID: `${id}-ttl`, Name: 'mesh gateway heartbeat', TTL: REGISTER_TTL, Status: 'passing' },
    });
  }
}
