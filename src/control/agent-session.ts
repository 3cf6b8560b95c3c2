// What the control thread of every data-plane process shares — a sidecar (./proxy.ts) and an
// ingress gateway (../gateway/ingress.ts) — to follow its agent over the HTTP API:
//
// - WatchSet: blocking-query loops, one per thing watched, that back off with jitter while the
//   agent is away (the last good state keeps serving) and can be re-run at once (reload).
// - MeshCertificates: the trust bundle (watched) and the process's own leaf, obtained by CSR
//   (the key never leaves the process) and renewed on one coarse timer.
// - ServiceHealth: the instances of every service a chain targets, watched, and the endpoints
//   of a chain's targets (subset filters, passing/warning per target).
// - CatalogRegistration: the catalog entries a process registers, their TTL heartbeat, and
//   their removal on shutdown.
// - MetricsEndpoint: the Prometheus `/metrics` HTTP server.
// Runs on: the control (main) thread of `meshd connect proxy` and `meshd connect gateway`.

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { createLeafCsr } from '../ca/authority.ts';
import { serviceSpiffeId } from '../ca/spiffe.ts';
import type { ChainTarget, DataPlaneChain } from '../chain/types.ts';
import type { Gauge } from '../metrics/prometheus.ts';
import type { Endpoint, TlsMaterial, UpstreamRouting } from '../workers/messages.ts';
import { ApiError, type AgentClient } from './client.ts';
import { compileHealthFilter, type HealthFilterEntry } from './filter.ts';
import { renewalDelayMs } from './renewal.ts';

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

/** What every piece logs through: `[LEVEL] <who>: ...` lines (who: `proxy` or `gateway`). */
export interface SessionLog {
  readonly who: string;
  readonly log: (line: string) => void;
}

/** Consul's -register heartbeat: TTL 30s, passed every 10s (TTL/3). */
export const REGISTER_TTL = '30s';
const HEARTBEAT_MS = 10_000;
const WATCH_RETRY_MS = 1000;
const WATCH_RETRY_MAX_MS = 30_000;
/**
 * Floor between two issuances of our own: if the agent's clock and ours disagree so much that
 * a fresh leaf already looks due, we renew every 10 s instead of hammering the CA.
 */
const MIN_REISSUE_MS = 10_000;
const RENEW_RETRY_MS = 10_000;
/** A deregistration at shutdown waits at most this long for the agent. */
const DEREGISTER_TIMEOUT_MS = 2000;

// ------------------------------------------------------------------------------ watches

/** One step of a blocking query: read past `index` (0: read now), apply, return the new index. */
export type WatchStep = (index: number, signal: AbortSignal) => Promise<number>;

export interface WatchSetOptions extends SessionLog {
  /** Ends every watch (the process is stopping). */
  readonly signal: AbortSignal;
  readonly random?: () => number;
}

interface Watch {
  readonly what: string;
  /** Aborts the step in flight (a resync interrupts a long blocking query). */
  current: AbortController | null;
  /** Wakes the loop from a backoff sleep. */
  wake: (() => void) | null;
  /** A resync was asked for: the next step reads from index 0. */
  resync: boolean;
  /** Resyncs waiting for the next full read of this watch: true when it succeeded. */
  waiters: ((ok: boolean) => void)[];
}

export interface ResyncResult {
  readonly watches: number;
  readonly failed: number;
}

/**
 * The blocking-query loops of one process. Each runs until the set's signal (or its own)
 * aborts; an error backs off exponentially with jitter (half to all of 1 s, 2 s, 4 s … capped
 * at 30 s) so a fleet does not hammer an agent that is coming back, then reads afresh from 0.
 * An index that went backwards means the agent restarted (Consul's rule): read afresh too.
 */
export class WatchSet {
  readonly #o: WatchSetOptions;
  readonly #watches = new Set<Watch>();

  constructor(opts: WatchSetOptions) {
    this.#o = opts;
  }

  get size(): number {
    return this.#watches.size;
  }

  /** Starts a loop that calls `step` from index `start` on. */
  add(what: string, start: number, step: WatchStep, stop?: AbortSignal): void {
    const w: Watch = { what, current: null, wake: null, resync: false, waiters: [] };
    const stopped = (): boolean => this.#o.signal.aborted || stop?.aborted === true;
    const signals = stop === undefined ? [this.#o.signal] : [this.#o.signal, stop];
    this.#watches.add(w);
    const loop = async (): Promise<void> => {
      let index = start;
      let failures = 0;
      while (!stopped()) {
        let waiters: ((ok: boolean) => void)[] = [];
        if (w.resync) {
          w.resync = false;
          index = 0;
          failures = 0;
          waiters = w.waiters.splice(0);
        }
        const ctl = new AbortController();
        const abort = (): void => ctl.abort();
        for (const s of signals) s.addEventListener('abort', abort, { once: true });
        w.current = ctl;
        try {
          const next = await step(index, ctl.signal);
          failures = 0;
          index = next < index ? 0 : next;
          for (const done of waiters) done(true);
        } catch (err) {
          if (stopped()) break;
          // Interrupted by a resync: read again at once, no backoff.
          if (w.resync && ctl.signal.aborted) {
            w.waiters.unshift(...waiters);
            continue;
          }
          for (const done of waiters) done(false);
          const cap = Math.min(WATCH_RETRY_MAX_MS, WATCH_RETRY_MS * 2 ** Math.min(failures, 10));
          const wait = Math.floor(cap / 2 + (this.#o.random ?? Math.random)() * (cap / 2));
          failures++;
          this.#o.log(`[WARN] ${this.#o.who}: watch ${what} failed (${failures} in a row), retrying in ${wait} ms: ${(err as Error).message}`);
          await this.#sleep(w, wait, signals);
          index = 0;
        } finally {
          for (const s of signals) s.removeEventListener('abort', abort);
          w.current = null;
        }
      }
      this.#watches.delete(w);
      for (const done of w.waiters.splice(0)) done(true);
    };
    void loop();
  }

  /** Sleeps `ms`, or less when the process stops or a resync wakes the loop. */
  #sleep(w: Watch, ms: number, signals: readonly AbortSignal[]): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        for (const s of signals) s.removeEventListener('abort', done);
        w.wake = null;
        resolve();
      };
      const timer = setTimeout(done, ms);
      for (const s of signals) s.addEventListener('abort', done, { once: true });
      w.wake = done;
    });
  }

  /**
   * Re-reads everything now: every blocking query in flight is interrupted and every loop
   * (also one backing off after errors) reads from index 0 at once. Resolves when each watch
   * has finished that read, with how many failed (those go on retrying with backoff).
   */
  resync(): Promise<ResyncResult> {
    const watches = [...this.#watches];
    const reads = watches.map(
      (w) =>
        new Promise<boolean>((resolve) => {
          w.waiters.push(resolve);
          w.resync = true;
          w.current?.abort();
          w.wake?.();
        }),
    );
    return Promise.all(reads).then((oks) => ({ watches: watches.length, failed: oks.filter((ok) => !ok).length }));
  }
}

// ------------------------------------------------------------------------------ certificates

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

export interface CertificatesOptions extends SessionLog {
  readonly client: AgentClient;
  /** The service whose identity the leaf carries (`spiffe://<td>/ns/default/dc/<dc>/svc/<service>`). */
  readonly service: string;
  /** Stops renewals and aborts a signing request in flight. */
  readonly signal: AbortSignal;
  /** Every new leaf or trust bundle (the owner hands it to its workers). */
  readonly publish: (tls: TlsMaterial) => void;
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

/** The trust bundle and the process's own leaf certificate, renewed before it expires. */
export class MeshCertificates {
  readonly #o: CertificatesOptions;
  #datacenter = 'dc1';
  #tls: TlsMaterial | null = null;
  #activeRootId = '';
  #caPems: string[] = [];
  #trustDomain = '';
  #renewTimer: NodeJS.Timeout | undefined;
  /** When the leaf is due for renewal, on the injected clock; Infinity while none is due. */
  #renewAt = Infinity;
  #renewing: Promise<boolean> | null = null;
  #leafNotAfter = 0;
  #rootNotAfter = 0;

  constructor(opts: CertificatesOptions) {
    this.#o = opts;
  }

  /** The datacenter of the leaf's SPIFFE ID (the agent's, from /v1/agent/self). */
  set datacenter(dc: string) {
    this.#datacenter = dc;
  }

  /** The current leaf and bundle; throws before the first leaf. */
  get tls(): TlsMaterial {
    if (this.#tls === null) throw new Error('no leaf certificate yet');
    return this.#tls;
  }

  /** Seconds until the leaf expires. */
  leafExpirySeconds(): number {
    return Math.round((this.#leafNotAfter - this.#now()) / 1000);
  }

  /** Seconds until the active root expires. */
  rootExpirySeconds(): number {
    return Math.round((this.#rootNotAfter - this.#now()) / 1000);
  }

  /** Reads the roots once (no blocking); returns the index to watch from. */
  async loadRoots(): Promise<number> {
    const r = await this.#o.client.json<RootsBody>('GET', '/v1/agent/connect/ca/roots');
    this.#applyRoots(r.value);
    return r.index;
  }

  /** A WatchStep over the roots. */
  readonly watchRoots: WatchStep = async (index, signal) => {
    const r = await this.#o.client.json<RootsBody>('GET', '/v1/agent/connect/ca/roots', { index, signal });
    if (r.index === index) return r.index;
    const rotated = this.#applyRoots(r.value);
    // Trust the new bundle at once (it holds old and new roots), then re-issue the leaf after
    // the jitter: peers accept the old leaf until then, and the new one through its chain.
    if (this.#tls !== null) this.#publish({ ...this.#tls, caPems: this.#caPems, trustDomain: this.#trustDomain });
    if (rotated) this.#scheduleRenewal(Math.floor((this.#o.random ?? Math.random)() * (this.#o.caChangeJitterMs ?? 30_000)));
    return r.index;
  };

  #applyRoots(body: RootsBody): boolean {
    this.#trustDomain = body.TrustDomain;
    this.#caPems = body.Roots.map((x) => x.RootCert);
    const active = body.Roots.find((x) => x.ID === body.ActiveRootID);
    if (active !== undefined) this.#rootNotAfter = Date.parse(active.NotAfter);
    const rotated = this.#activeRootId !== '' && this.#activeRootId !== body.ActiveRootID;
    this.#activeRootId = body.ActiveRootID;
    return rotated;
  }

  /** A new key and CSR, signed by the agent; the leaf is published and its renewal scheduled. */
  async issueLeaf(): Promise<void> {
    const uri = serviceSpiffeId(this.#trustDomain, 'default', this.#datacenter, this.#o.service);
    const { csrPem, keyPem } = await createLeafCsr(uri);
    let r: { value: IssuedCertBody };
    for (let attempt = 1; ; attempt++) {
      try {
        r = await this.#o.client.json<IssuedCertBody>('POST', '/v1/connect/ca/sign', { body: { CSR: csrPem }, signal: this.#o.signal });
        break;
      } catch (err) {
        // The CA's rate limit answers 429 with Retry-After: wait as told (plus jitter).
        if (!(err instanceof ApiError && err.status === 429) || attempt >= 20) throw err;
        const wait = (err.retryAfterMs ?? 1000) + Math.floor((this.#o.random ?? Math.random)() * 1000);
        await new Promise((resolve) => setTimeout(resolve, wait));
      }
    }
    this.#leafNotAfter = Date.parse(r.value.ValidBefore);
    this.#publish({ keyPem, certPem: r.value.CertPEM, caPems: this.#caPems, trustDomain: this.#trustDomain, uri });
    const due = renewalDelayMs(Date.parse(r.value.ValidAfter), Date.parse(r.value.ValidBefore), this.#now(), (this.#o.random ?? Math.random)());
    this.#scheduleRenewal(Math.max(MIN_REISSUE_MS, due));
  }

  /** Starts the coarse renewal timer. */
  startRenewal(): void {
    this.#renewTimer = setInterval(() => this.#checkRenewal(), this.#o.renewCheckMs ?? 1000);
  }

  stop(): void {
    clearInterval(this.#renewTimer);
  }

  /**
   * Re-issues the leaf now (a reload); joins a renewal already in progress. Resolves false
   * when it failed: the old leaf keeps serving and a retry is scheduled.
   */
  renewNow(): Promise<boolean> {
    return this.#renew();
  }

  #now(): number {
    return (this.#o.now ?? Date.now)();
  }

  #scheduleRenewal(delayMs: number): void {
    this.#renewAt = this.#now() + delayMs;
  }

  #checkRenewal(): void {
    if (this.#renewing !== null || this.#now() < this.#renewAt) return;
    void this.#renew();
  }

  #renew(): Promise<boolean> {
    if (this.#renewing !== null) return this.#renewing;
    this.#renewAt = Infinity;
    const p = this.issueLeaf()
      .then(
        () => true,
        (err: Error) => {
          if (this.#o.signal.aborted) return false;
          this.#o.log(`[WARN] ${this.#o.who}: leaf renewal failed, retrying in 10s: ${err.message}`);
          this.#scheduleRenewal(RENEW_RETRY_MS);
          return false;
        },
      )
      .finally(() => {
        this.#renewing = null;
      });
    this.#renewing = p;
    return p;
  }

  #publish(t: TlsMaterial): void {
    this.#tls = t;
    this.#o.publish(t);
  }
}

// ------------------------------------------------------------------------------ health

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

export interface ServiceHealthOptions extends SessionLog {
  readonly client: AgentClient;
  readonly watches: WatchSet;
  /** A watched service's instances changed (not called for the first read of a service). */
  readonly onChange: () => void;
}

/** `GET /v1/internal/meshd/mesh-gateways`: this datacenter's mesh gateways (LAN) and the others' (WAN). */
export interface MeshGatewaysBody {
  readonly Local: readonly { readonly Address: string; readonly Port: number }[];
  readonly Remote: Readonly<Record<string, readonly { readonly Address: string; readonly Port: number }[]>>;
}

/** The watch key of the mesh gateways (a service key always has an `@`). */
const GATEWAYS = 'mesh-gateways';

/**
 * The instances of every service some chain target names, each watched by a blocking query
 * (`service@dc`: a target in another datacenter is read through the local agent with `?dc=`),
 * and the mesh gateways when a target in another datacenter is reached through them.
 */
export class ServiceHealth {
  readonly #o: ServiceHealthOptions;
  /** Instances per `service@dc`, as the health API returned them (Tags and Meta for subsets). */
  readonly #health = new Map<string, readonly HealthEntry[]>();
  /** Keys watched, each with its own stop switch. */
  readonly #watches = new Map<string, AbortController>();
  readonly #filters = new Map<string, (e: HealthFilterEntry) => boolean>();
  #gateways: MeshGatewaysBody = { Local: [], Remote: {} };
  #datacenter = 'dc1';

  constructor(opts: ServiceHealthOptions) {
    this.#o = opts;
  }

  /** The local datacenter (the agent's, from /v1/agent/self): targets elsewhere are read with ?dc=. */
  set datacenter(dc: string) {
    this.#datacenter = dc;
  }

  /** Follows what the targets of `chains` need (follow()); call it before routing to them. */
  followChains(chains: Iterable<DataPlaneChain>, signal?: AbortSignal): Promise<void> {
    const keys = new Set<string>();
    for (const chain of chains) {
      for (const t of Object.values(chain.targets)) {
        keys.add(healthKey(t.service, t.datacenter));
        if (t.datacenter !== this.#datacenter && t.meshGatewayMode !== 'none') keys.add(GATEWAYS);
      }
    }
    return this.follow(keys, signal);
  }

  /**
   * Reads each of `keys` not followed yet and watches it from then on; stops watching the keys
   * no longer in the set.
   */
  async follow(keys: ReadonlySet<string>, signal?: AbortSignal): Promise<void> {
    for (const key of keys) {
      if (this.#watches.has(key)) continue;
      const index = await this.#load(key, 0, signal, false);
      const ctl = new AbortController();
      this.#watches.set(key, ctl);
      this.#o.watches.add(key === GATEWAYS ? GATEWAYS : `health ${key}`, index, (i, s) => this.#load(key, i, s, true), ctl.signal);
    }
    for (const [key, ctl] of this.#watches) {
      if (keys.has(key)) continue;
      ctl.abort();
      this.#watches.delete(key);
      this.#health.delete(key);
    }
  }

  async #load(key: string, index: number, signal: AbortSignal | undefined, notify: boolean): Promise<number> {
    const opts = { index, ...(signal === undefined ? {} : { signal }) };
    if (key === GATEWAYS) {
      const r = await this.#o.client.json<MeshGatewaysBody>('GET', '/v1/internal/meshd/mesh-gateways', opts);
      if (index !== 0 && r.index === index) return r.index;
      this.#gateways = r.value;
      if (notify) this.#o.onChange();
      return r.index;
    }
    const at = key.lastIndexOf('@');
    const service = key.slice(0, at);
    const dc = key.slice(at + 1);
    // Not ?passing: a subset with OnlyPassing false takes warning instances too (Consul's
    // rule), so the filtering by status happens per target.
    const r = await this.#o.client.json<HealthEntry[]>('GET', `/v1/health/connect/${encodeURIComponent(service)}`, { ...opts, ...(dc === this.#datacenter ? {} : { query: { dc } }) });
    if (index !== 0 && r.index === index) return r.index;
    this.#health.set(key, r.value);
    if (notify) this.#o.onChange();
    return r.index;
  }

  /**
   * The routing of one chain: where each target's connections go. A target here (or in another
   * datacenter with mode none) goes to its healthy instances; one elsewhere with mode local or
   * remote goes to the mesh gateways of this datacenter or of the target's, as long as the target
   * has a healthy instance there (else nowhere, so failover moves on, as in Consul). Every
   * endpoint carries its target's SNI, which is what a gateway routes on.
   */
  upstreamRouting(chain: DataPlaneChain): UpstreamRouting {
    const endpoints: Record<string, readonly Endpoint[]> = {};
    for (const [id, t] of Object.entries(chain.targets)) {
      const instances = targetEndpoints(this.#health.get(healthKey(t.service, t.datacenter)) ?? [], t, this.#filter(t.filter));
      const sni = t.sni === '' ? {} : { sni: t.sni };
      if (t.datacenter === this.#datacenter || t.meshGatewayMode === 'none') {
        endpoints[id] = instances.map((e) => ({ ...e, ...sni }));
      } else if (instances.length === 0) {
        endpoints[id] = [];
      } else {
        const gateways = t.meshGatewayMode === 'local' ? this.#gateways.Local : (this.#gateways.Remote[t.datacenter] ?? []);
        endpoints[id] = gateways.map((g) => ({ host: g.Address, port: g.Port, service: t.service, ...sni }));
      }
    }
    return { chain, endpoints };
  }

  #filter(expr: string): (e: HealthFilterEntry) => boolean {
    let f = this.#filters.get(expr);
    if (f === undefined) {
      try {
        f = expr === '' ? () => true : compileHealthFilter(expr);
      } catch (err) {
        // The agent validated it on write; a filter this process cannot compile selects nothing.
        this.#o.log(`[WARN] ${this.#o.who}: subset filter ${JSON.stringify(expr)} does not compile: ${(err as Error).message}`);
        f = () => false;
      }
      this.#filters.set(expr, f);
    }
    return f;
  }
}

/** The health map's key of a service in a datacenter. */
export function healthKey(service: string, datacenter: string): string {
  return `${service}@${datacenter}`;
}

// ------------------------------------------------------------------------------ catalog

/** A service registration as PUT /v1/agent/service/register takes it (the parts used here). */
export interface RegistrationBody {
  readonly ID: string;
  readonly Name: string;
  readonly [field: string]: unknown;
  /** A TTL check: passed every 10 s while the process runs. */
  readonly Check?: { readonly CheckID: string; readonly Name: string; readonly TTL: string; readonly Status: string };
}

/** The catalog entries a process registered, their heartbeats, and their removal. */
export class CatalogRegistration {
  readonly #o: SessionLog & { readonly client: AgentClient };
  readonly #bodies: RegistrationBody[] = [];
  readonly #heartbeats: NodeJS.Timeout[] = [];

  constructor(opts: SessionLog & { readonly client: AgentClient }) {
    this.#o = opts;
  }

  get registered(): boolean {
    return this.#bodies.length > 0;
  }

  async register(body: RegistrationBody): Promise<void> {
    await this.#o.client.request('PUT', '/v1/agent/service/register', { body });
    this.#bodies.push(body);
    const check = body.Check;
    if (check === undefined) return;
    this.#heartbeats.push(
      setInterval(() => {
        this.#o.client.request('PUT', `/v1/agent/check/pass/${encodeURIComponent(check.CheckID)}`).catch((err: Error) => {
          this.#o.log(`[WARN] ${this.#o.who}: heartbeat failed: ${err.message}`);
        });
      }, HEARTBEAT_MS),
    );
  }

  /**
   * Registers everything again (a reload: an agent that lost or changed the entries gets them
   * back as they were, checks passing). Resolves false if any registration failed.
   */
  async reassert(): Promise<boolean> {
    let ok = true;
    for (const body of this.#bodies) {
      try {
        await this.#o.client.request('PUT', '/v1/agent/service/register', { body });
      } catch (err) {
        ok = false;
        this.#o.log(`[WARN] ${this.#o.who}: could not register ${body.ID} again: ${(err as Error).message}`);
      }
    }
    return ok;
  }

  /** Stops the heartbeats and removes every entry, last registered first (bounded wait). */
  async deregister(): Promise<void> {
    for (const t of this.#heartbeats.splice(0)) clearInterval(t);
    const bodies = this.#bodies.splice(0).reverse();
    for (const body of bodies) {
      try {
        await this.#o.client.request('PUT', `/v1/agent/service/deregister/${encodeURIComponent(body.ID)}`, { signal: AbortSignal.timeout(DEREGISTER_TIMEOUT_MS) });
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 404)) this.#o.log(`[WARN] ${this.#o.who}: could not deregister ${body.ID}: ${(err as Error).message}`);
      }
    }
  }
}

// ------------------------------------------------------------------------------ metrics

/** The Prometheus `/metrics` endpoint of a proxy or gateway (its own HTTP server). */
export class MetricsEndpoint {
  readonly #server: Server;
  readonly address: HostPort;

  constructor(server: Server, address: HostPort) {
    this.#server = server;
    this.address = address;
  }

  /** Binds `addr`; each GET /metrics answers what `scrape` renders. */
  static async start(addr: HostPort, scrape: () => Promise<string>): Promise<MetricsEndpoint> {
    const server = createServer((req, res) => {
      if (req.method === 'GET' && (req.url === '/metrics' || req.url?.startsWith('/metrics?') === true)) {
        scrape().then(
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
    return new MetricsEndpoint(server, { host: addr.host, port: (server.address() as AddressInfo).port });
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}

// ------------------------------------------------------------------------------ the session

/** What a reload did (SIGHUP): see AgentSession.reload. */
export interface ReloadReport {
  /** Watches re-read from index 0, and how many of those reads failed (they retry with backoff). */
  readonly watches: number;
  readonly failedWatches: number;
  /** A new leaf was issued (false: the old one keeps serving; a retry is scheduled). */
  readonly leaf: boolean;
  /** The catalog registrations were written again (true when there are none). */
  readonly registered: boolean;
}

export interface AgentSessionOptions extends SessionLog {
  readonly client: AgentClient;
  /** The service whose identity the process's leaf carries. */
  readonly service: string;
  /** A new leaf or trust bundle (to the workers). */
  readonly publishTls: (tls: TlsMaterial) => void;
  /** A watched service's instances changed (rebuild the routing). */
  readonly onHealthChange: () => void;
  readonly caChangeJitterMs?: number;
  readonly random?: () => number;
  readonly now?: () => number;
  readonly renewCheckMs?: number;
}

/** What stop() drains: the data-plane workers (../workers/supervisor.ts). */
export interface Drainable {
  stop(drainTimeoutMs: number): Promise<void>;
}

/**
 * Everything a data-plane process keeps with its agent — watches, certificates, the health of
 * its targets, its registrations, its /metrics endpoint — and the two things done to all of
 * it at once: reload (SIGHUP) and stop (SIGTERM, with a drain).
 */
export class AgentSession {
  readonly #who: string;
  readonly #abort = new AbortController();
  readonly watches: WatchSet;
  readonly certs: MeshCertificates;
  readonly health: ServiceHealth;
  readonly registration: CatalogRegistration;
  #metrics: MetricsEndpoint | null = null;
  #reloading: Promise<ReloadReport> | null = null;
  #stopping = false;

  constructor(o: AgentSessionOptions) {
    this.#who = o.who;
    const log = { who: o.who, log: o.log };
    const random = o.random === undefined ? {} : { random: o.random };
    this.watches = new WatchSet({ ...log, ...random, signal: this.#abort.signal });
    this.certs = new MeshCertificates({
      ...log,
      ...random,
      client: o.client,
      service: o.service,
      signal: this.#abort.signal,
      publish: o.publishTls,
      ...(o.caChangeJitterMs === undefined ? {} : { caChangeJitterMs: o.caChangeJitterMs }),
      ...(o.now === undefined ? {} : { now: o.now }),
      ...(o.renewCheckMs === undefined ? {} : { renewCheckMs: o.renewCheckMs }),
    });
    this.health = new ServiceHealth({ ...log, client: o.client, watches: this.watches, onChange: o.onHealthChange });
    this.registration = new CatalogRegistration({ ...log, client: o.client });
  }

  /** Aborted by stop(): the signal of start-up reads. */
  get signal(): AbortSignal {
    return this.#abort.signal;
  }

  /** True once stop() began. */
  get stopping(): boolean {
    return this.#stopping;
  }

  /** The gauges every data-plane process reports of itself: its workers, their restarts, its certificates' expiry. */
  gauges(workers: number, restarts: number): Gauge[] {
    return [
      { name: 'meshd_workers', help: 'Data-plane worker threads configured.', type: 'gauge', samples: [{ labels: {}, value: workers }] },
      { name: 'meshd_worker_restarts_total', help: 'Data-plane workers restarted after a crash.', type: 'counter', samples: [{ labels: {}, value: restarts }] },
      { name: 'meshd_leaf_expiry_seconds', help: `Seconds until this ${this.#who}'s leaf certificate expires.`, type: 'gauge', samples: [{ labels: {}, value: this.certs.leafExpirySeconds() }] },
      { name: 'meshd_root_expiry_seconds', help: 'Seconds until the active root CA certificate expires.', type: 'gauge', samples: [{ labels: {}, value: this.certs.rootExpirySeconds() }] },
    ];
  }

  /** Serves /metrics on `addr` (null: none); returns the bound address. */
  async serveMetrics(addr: HostPort | null, scrape: () => Promise<string>): Promise<HostPort | null> {
    if (addr === null) return null;
    this.#metrics = await MetricsEndpoint.start(addr, scrape);
    return this.#metrics.address;
  }

  /**
   * Reload (SIGHUP). A proxy or gateway has no configuration file: everything it serves comes
   * from the agent, so reloading means reading all of it again now. Every blocking query is
   * interrupted and read again from index 0 (also those backing off after agent errors), a
   * new leaf is issued, and the catalog registrations are written again. Listeners, workers
   * and open connections are untouched: new routing and certificates reach the workers as
   * for any change. A reload during another joins it.
   */
  reload(): Promise<ReloadReport> {
    if (this.#reloading !== null) return this.#reloading;
    const run = async (): Promise<ReloadReport> => {
      const [resync, leaf, registered] = await Promise.all([this.watches.resync(), this.certs.renewNow(), this.registration.reassert()]);
      return { watches: resync.watches, failedWatches: resync.failed, leaf, registered };
    };
    const p = run().finally(() => {
      this.#reloading = null;
    });
    this.#reloading = p;
    return p;
  }

  /**
   * Shuts down. The catalog entries go first, so peers stop picking this instance; then the
   * workers drain for up to `drainTimeoutMs` (../workers/supervisor.ts: stop accepting, finish
   * HTTP requests in flight, let tcp connections end, cut the rest; 0: close everything now).
   * Watches keep running meanwhile, so a revoked intention still cuts connections; they end
   * with the renewal timer and /metrics once the workers are gone.
   */
  async stop(workers: Drainable | null, drainTimeoutMs: number): Promise<void> {
    this.#stopping = true;
    await this.registration.deregister();
    await workers?.stop(drainTimeoutMs);
    this.#abort.abort();
    this.certs.stop();
    await this.#metrics?.close();
  }
}
