// `meshd agent`: the authority. Owns the store (catalog, intentions, CA), serves Consul's
// HTTP API, and evaluates intentions through the same compiled table the data plane reads.
// Runs on: the agent process's main (control) thread; CSR signing runs in the piscina pool.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { hostname } from 'node:os';
import type { AddressInfo } from 'node:net';
import { FileStore, type Store } from './store.ts';
import { Catalog, CHECKS, SERVICES, SERVICE_NAME_RE, SIDECAR_SUFFIX, agentCheckJson, agentServiceJson, decodeRegistration, type CheckStatus } from './catalog.ts';
import { CheckRunner, type CheckTimers, type Probe } from './checks.ts';
import { Intentions, INTENTIONS, IntentionExistsError, decodeExactBody, decodeLegacyBody } from './intentions.ts';
import { CONFIG_ENTRY_KINDS, decodeConfigEntry, encodeConfigEntry, parseConfigEntryKind, ENTRY_OBJECT_KEYS, type ConfigEntry, type ConfigEntryKind } from '../config/entries.ts';
import { referencedJwtProviders } from '../config/service-intentions.ts';
import { compileChain } from '../chain/compile.ts';
import type { MeshGatewayMode } from '../chain/types.ts';
import { gatewayConfig, ingressProtocolErrors } from '../gateway/config.ts';
import { FEDERATION_STATES, meshGatewayConfig, type FederationState, type HealthEntryList } from '../gateway/mesh-config.ts';
import { compileL7Sources, normalizeRequestPath } from '../authz/l7.ts';
import { collapseBlocks } from '../config/hcl.ts';
import { compileFilter, FilterError, INTENTION_FILTER_FIELDS } from './filter.ts';
import { CaState, CaStateError, CA_TABLE } from './ca-state.ts';
import { Federation, configSnapshot, forwardedWriteKind, localMeshGateways, proxyToDatacenter, type MeshGatewayAddress } from './federation.ts';
import { LeafCache } from './leaf-cache.ts';
import { Acl, decodeTokenBody, extractToken, type Access, type Caller } from './acl.ts';
import { CsrLimiter } from './rate-limit.ts';
import { PolicyEngine } from './policy.ts';
import { DATACENTER_RE, FieldError, UUID_RE, parseDuration, parseJsonObject, reqString } from './decode.ts';
import { HttpError, Router, blockingParams, flagParam, readBody, sendJson, sendText, type RequestContext } from './http.ts';
import { SigningPool } from '../ca/pool.ts';
import { CaError, CsrError, IntermediateError } from '../ca/authority.ts';
import { parseSpiffeId } from '../ca/spiffe.ts';
import { VERSION } from '../version.ts';
import { renderFamilies } from '../metrics/prometheus.ts';


export interface AgentOptions {
  readonly host: string;
  readonly port: number;
  /** null: in-memory only (tests); the CLI's -dev without -data-dir passes a temp dir. */
  readonly dataDir: string | null;
  readonly datacenter: string;
  readonly nodeName?: string;
  readonly defaultAllow: boolean;
  /**
   * `-dev`: ACLs off (acl.ts): callers without a token may do everything but manage tokens,
   * and obtain certificates from loopback only. Otherwise every route but the public reads
   * needs a token.
   */
  readonly dev?: boolean;
  /** Consul's acl.tokens.initial_management: may do anything, including creating tokens. */
  readonly managementToken?: string | null;
  /**
   * Reads the management token again from where it came from (a token file), for reload();
   * throws when it cannot. Absent: the token is fixed for the agent's life.
   */
  readonly reloadManagementToken?: () => string | null;
  readonly now?: () => number;
  /** How often TTL checks are swept for expiry. */
  readonly sweepIntervalMs?: number;
  /** How often the CA prunes old roots and checks for automatic renewal. */
  readonly caTickIntervalMs?: number;
  /** Timers of the HTTP/TCP check runner (tests step a fake clock). */
  readonly checkTimers?: CheckTimers;
  /** Replaces the HTTP/TCP probes (tests). */
  readonly checkProbe?: Probe;
  /**
   * Consul's primary_datacenter: the datacenter that owns the CA root and the config
   * entries. Absent or equal to `datacenter`: this agent is the primary.
   */
  readonly primaryDatacenter?: string;
  /** A secondary's way to the primary: its agent API, host:port (`-join-wan`). */
  readonly joinWan?: string;
  /** Consul's acl.tokens.replication: what a secondary sends to the primary. */
  readonly replicationToken?: string | null;
  /** Log lines (federation); stderr by default. */
  readonly log?: (line: string) => void;
}

/** The store table of a config entry kind (service-intentions live in the intentions table). */
function configTable(kind: ConfigEntryKind): string {
  return kind === 'service-intentions' ? INTENTIONS : `config/${kind}`;
}

/** One `upstream=` of the proxy-config query, parsed. */
interface UpstreamQuery {
  readonly datacenter: string;
  readonly mode: '' | MeshGatewayMode;
}

function parseMeshGatewayMode(text: string, what: string): '' | MeshGatewayMode {
  if (text === '' || text === 'none' || text === 'local' || text === 'remote') return text;
  throw new HttpError(400, `${what}: mesh gateway mode must be none, local or remote, got ${JSON.stringify(text)}`);
}

/** `NAME[@DC][~MODE]`, as the proxy asks for its upstreams' chains. */
export function parseUpstreamQuery(text: string): UpstreamQuery & { readonly service: string } {
  const m = /^([^@~]+)(?:@([^@~]+))?(?:~([^@~]*))?$/.exec(text);
  if (m === null) throw new HttpError(400, `upstream ${JSON.stringify(text)} must be NAME[@DC][~MODE]`);
  const datacenter = m[2] ?? '';
  if (datacenter !== '' && !DATACENTER_RE.test(datacenter)) throw new HttpError(400, `upstream ${JSON.stringify(text)}: invalid datacenter ${JSON.stringify(datacenter)}`);
  return { service: m[1] as string, datacenter, mode: parseMeshGatewayMode(m[3] ?? '', `upstream ${JSON.stringify(text)}`) };
}

export class Agent {
  readonly #opts: AgentOptions;
  readonly #store: Store;
  readonly #catalog: Catalog;
  readonly #intentions: Intentions;
  readonly #ca: CaState;
  readonly #pool: SigningPool;
  readonly #policy: PolicyEngine;
  readonly #server: Server;
  readonly #acl: Acl;
  readonly #leaves: LeafCache;
  readonly #limiter: CsrLimiter;
  readonly #now: () => number;
  readonly #checks: CheckRunner;
  readonly #federation: Federation;
  #sweep: NodeJS.Timeout | undefined;
  #caTick: NodeJS.Timeout | undefined;
  /** CSR outcomes for /v1/agent/metrics; the reason set is fixed (metric labels). */
  readonly #csr = { signed: 0, invalid: 0, permission: 0, rate_limited: 0 };
  #address: AddressInfo | undefined;

  constructor(opts: AgentOptions) {
    this.#opts = opts;
    const now = opts.now ?? Date.now;
    this.#now = now;
    this.#store = new FileStore(opts.dataDir);
    this.#catalog = new Catalog(this.#store, { Node: opts.nodeName ?? hostname(), Address: opts.host, Datacenter: opts.datacenter }, now);
    this.#intentions = new Intentions(this.#store);
    this.#pool = new SigningPool();
    const primaryDc = opts.primaryDatacenter ?? opts.datacenter;
    const secondary = primaryDc !== opts.datacenter;
    if (secondary && (opts.joinWan === undefined || opts.joinWan === '')) throw new Error(`a secondary datacenter (${opts.datacenter}, primary ${primaryDc}) needs joinWan: the primary agent's API`);
    this.#ca = new CaState(this.#store, this.#pool, { datacenter: opts.datacenter, now, secondary });
    this.#policy = new PolicyEngine({ maxWorkers: 0, defaultAllow: opts.defaultAllow });
    this.#acl = new Acl(this.#store, { managementToken: opts.managementToken ?? null, devLoopback: opts.dev === true });
    this.#leaves = new LeafCache(this.#ca, this.#store, { datacenter: opts.datacenter, now });
    this.#limiter = new CsrLimiter(now, 0, 0);
    this.#checks = new CheckRunner({
      report: (id, result) => this.#catalog.setCheckResult(id, result.status, result.output),
      log: (line) => process.stderr.write(`${new Date().toISOString()} ${line}\n`),
      ...(opts.checkTimers === undefined ? {} : { timers: opts.checkTimers }),
      ...(opts.checkProbe === undefined ? {} : { probe: opts.checkProbe }),
    });
    const log = opts.log ?? ((line: string): void => void process.stderr.write(`${new Date().toISOString()} ${line}\n`));
    this.#federation = new Federation({
      store: this.#store,
      ca: this.#ca,
      datacenter: opts.datacenter,
      primaryDatacenter: primaryDc,
      primaryAddress: secondary ? (opts.joinWan as string) : null,
      replicationToken: opts.replicationToken ?? null,
      selfAddress: () => {
        const a = this.address;
        return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`;
      },
      nodeAddress: opts.host,
      services: () => this.#catalog.services(),
      checks: () => this.#catalog.checks(),
      configTables: CONFIG_ENTRY_KINDS.map(configTable),
      intentionsTable: INTENTIONS,
      onIntentionsChanged: () => this.#republish(),
      onCaChanged: () => this.#limiter.configure(this.#ca.config.csrMaxPerSecond, this.#ca.config.csrMaxConcurrent),
      log,
      now,
    });
    const router = this.#routes();
    router.intercept((req, res, url) => this.#forward(req, res, url));
    this.#server = createServer((req, res) => void router.handle(req, res));
    // Blocking queries hold a request open for up to 10 minutes.
    this.#server.requestTimeout = 0;
    this.#server.keepAliveTimeout = 65_000;
  }

  get trustDomain(): string {
    return this.#ca.trustDomain;
  }

  get address(): AddressInfo {
    if (this.#address === undefined) throw new Error('agent not started');
    return this.#address;
  }

  async start(): Promise<void> {
    await this.#ca.bootstrap();
    this.#limiter.configure(this.#ca.config.csrMaxPerSecond, this.#ca.config.csrMaxConcurrent);
    await this.#policy.update(this.#intentions.rules());
    await new Promise<void>((resolve, reject) => {
      this.#server.once('error', reject);
      this.#server.listen({ host: this.#opts.host, port: this.#opts.port }, () => {
        this.#server.off('error', reject);
        resolve();
      });
    });
    this.#address = this.#server.address() as AddressInfo;
    // Checks of registrations persisted in the data dir run again.
    this.#syncChecks();
    this.#sweep = setInterval(() => {
      this.#catalog.expireChecks();
      if (this.#catalog.reapCritical().length > 0) this.#syncChecks();
    }, this.#opts.sweepIntervalMs ?? 1000);
    this.#sweep.unref();
    this.#caTick = setInterval(() => {
      this.#ca.tick().catch((err: Error) => process.stderr.write(`${new Date().toISOString()} [ERROR] agent: CA housekeeping failed: ${err.message}\n`));
    }, this.#opts.caTickIntervalMs ?? 60_000);
    this.#caTick.unref();
    this.#federation.start();
  }

  /** Federation: this agent's role and replication status. */
  get federation(): Federation {
    return this.#federation;
  }

  /**
   * Requests another agent answers: `?dc=` naming another known datacenter is proxied to
   * that datacenter's agent (Consul's RPC forwarding, over its HTTP API; `/v1/agent/*` stays
   * local, as in Consul), and a secondary's config, intention and CA configuration writes
   * go to the primary. The remote agent checks the caller's token.
   */
  #forward(req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean> | boolean {
    const dc = url.searchParams.get('dc');
    if (dc !== null && dc !== '' && dc !== this.#opts.datacenter && !url.pathname.startsWith('/v1/agent/')) {
      const address = this.#federation.addressOf(dc);
      if (address === null) throw new HttpError(500, 'No path to datacenter');
      const rest = new URLSearchParams(url.searchParams);
      rest.delete('dc');
      const query = rest.toString();
      return proxyToDatacenter(req, res, dc, address, `${url.pathname}${query === '' ? '' : `?${query}`}`).then(() => true);
    }
    if (!this.#federation.isSecondary) return false;
    const kind = forwardedWriteKind(req.method ?? '', url.pathname);
    if (kind === null) return false;
    return this.#federation.forwardWrite(req, res, url, kind).then(() => true);
  }

  /**
   * Reload (SIGHUP, PUT /v1/agent/reload). The agent's configuration is its flags, and its
   * state (catalog, checks, intentions, config entries, CA configuration) lives in the data
   * directory and changes through the API, so there are no service or check definition files
   * to read again. A reload re-reads what does come from a file: the management token, when
   * it came from -token-file or DIR/acl-management-token (so it can be rotated without a
   * restart; the old one is refused at once). Then it re-applies what derives from stored
   * state: every HTTP/TCP health-check probe is restarted (runs now), the CSR rate limits are
   * taken again from the CA configuration, and the intention table is recompiled. A token file
   * that cannot be read fails the reload before anything changed, keeping the old token.
   */
  async reload(): Promise<{ readonly tokenReloaded: boolean; readonly checks: number }> {
    const reread = this.#opts.reloadManagementToken;
    const token = reread === undefined ? undefined : reread();
    if (token !== undefined) this.#acl.setManagementToken(token);
    this.#checks.stopAll();
    this.#syncChecks();
    this.#limiter.configure(this.#ca.config.csrMaxPerSecond, this.#ca.config.csrMaxConcurrent);
    await this.#republish();
    return { tokenReloaded: token !== undefined, checks: this.#checks.ids().length };
  }

  /** The CA, for in-process tests that drive housekeeping with an injected clock. */
  get ca(): CaState {
    return this.#ca;
  }

  async stop(): Promise<void> {
    await this.#federation.stop();
    clearInterval(this.#sweep);
    this.#checks.stopAll();
    clearInterval(this.#caTick);
    this.#store.close();
    this.#server.closeAllConnections();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
    await this.#pool.close();
  }

  #consulHeaders(index: number): Record<string, string | number> {
    return {
      'X-Consul-Index': index,
      'X-Consul-KnownLeader': 'true',
      'X-Consul-LastContact': 0,
      'X-Consul-Default-ACL-Policy': this.#policy.defaultAllow ? 'allow' : 'deny',
    };
  }

  /** Runs a read as a Consul blocking query over the given tables. */
  async #blocking(ctx: RequestContext, tables: readonly string[], read: () => unknown): Promise<void> {
    const p = blockingParams(ctx.url);
    const index = p === null ? this.#store.maxIndex(tables) : await this.#store.waitForChange(tables, p.index, p.waitMs, ctx.signal);
    if (ctx.signal.aborted) return;
    sendJson(ctx.res, 200, read(), this.#consulHeaders(index));
  }

  /** Makes the running HTTP/TCP probes match the catalog's checks. */
  #syncChecks(): void {
    this.#checks.sync(this.#catalog.probeChecks());
  }

  async #republish(): Promise<void> {
    await this.#policy.update(this.#intentions.rules());
  }

  /** Resolves the caller and checks the route's access class (acl.ts); 400/403 otherwise. */
  #authorize(ctx: RequestContext, access: Access): Caller {
    const t = extractToken(ctx.req, ctx.url);
    if (!t.ok) throw new HttpError(t.status, t.message);
    const r = this.#acl.resolve(t.token, ctx.req.socket.remoteAddress);
    if (!r.ok) throw new HttpError(r.status, r.message);
    const d = this.#acl.admits(r.caller, access);
    if (!d.ok) throw new HttpError(d.status, d.message);
    return r.caller;
  }

  /** Refuses (403) unless the caller may write every one of `services` (acl.ts mayWrite). */
  #requireWrite(caller: Caller, services: Iterable<string>): void {
    for (const name of services) {
      const d = this.#acl.mayWrite(caller, name);
      if (!d.ok) throw new HttpError(d.status, d.message);
    }
  }

  /** The services a registered instance speaks for: its name, and a proxy's destination. */
  #instanceNames(serviceId: string): string[] {
    const s = this.#catalog.service(serviceId);
    if (s === undefined) return [];
    return s.Proxy === null ? [s.Service] : [s.Service, s.Proxy.DestinationServiceName];
  }

  #routes(): Router {
    const r = new Router();
    // Every route declares who may call it (acl.ts Access; docs/ARCHITECTURE.md, "API
    // authorization"); the check runs before the body is read, so a refused request changes
    // nothing. `service` routes check the service they act for themselves, with the caller.
    const on = (
      methods: string | readonly string[],
      path: string,
      access: Access,
      handler: (ctx: RequestContext, caller: Caller) => Promise<void> | void,
      onRefused?: () => void,
    ): void => {
      r.on(methods, path, (ctx) => {
        let caller: Caller;
        try {
          caller = this.#authorize(ctx, access);
        } catch (err) {
          onRefused?.();
          throw err;
        }
        return handler(ctx, caller);
      });
    };

    on('GET', '/v1/agent/self', 'read', (ctx) => {
      sendJson(ctx.res, 200, {
        Config: { Datacenter: this.#opts.datacenter, PrimaryDatacenter: this.#federation.primaryDatacenter, NodeName: this.#catalog.node.Node, Version: VERSION, Server: true },
        Member: { Name: this.#catalog.node.Node, Addr: this.#opts.host },
      });
    });
    // Consul's agent metrics endpoint; only the Prometheus format is served.
    on('GET', '/v1/agent/metrics', 'read', (ctx) => {
      if (ctx.url.searchParams.get('format') !== 'prometheus') throw new HttpError(400, 'meshd serves agent metrics as Prometheus text only: add ?format=prometheus');
      const roots = (this.#ca.rootsResponse() as { Roots: unknown[] }).Roots.length;
      const text = renderFamilies([
        { name: 'meshd_root_expiry_seconds', help: 'Seconds until the active root CA certificate expires.', type: 'gauge', samples: [{ labels: {}, value: this.#ca.activeRootExpirySeconds() }] },
        { name: 'meshd_ca_roots', help: 'Roots in the trust bundle (active and rotated-out).', type: 'gauge', samples: [{ labels: {}, value: roots }] },
        { name: 'meshd_ca_leaf_signed_total', help: 'Leaf certificates signed from CSRs.', type: 'counter', samples: [{ labels: {}, value: this.#csr.signed }] },
        {
          name: 'meshd_ca_csr_rejected_total',
          help: 'CSRs refused, by reason.',
          type: 'counter',
          samples: (['invalid', 'permission', 'rate_limited'] as const).map((reason) => ({ labels: { reason }, value: this.#csr[reason] })),
        },
        { name: 'meshd_catalog_services', help: 'Service instances registered in the catalog.', type: 'gauge', samples: [{ labels: {}, value: this.#catalog.services().length }] },
        ...(this.#federation.isSecondary
          ? [
              { name: 'meshd_federation_replication_index', help: "The primary's index of the last replicated answer, by what is replicated.", type: 'gauge' as const, samples: this.#federation.replicationSamples().map((x) => ({ labels: { type: x.type }, value: x.index })) },
              { name: 'meshd_federation_replication_last_success_seconds', help: 'Unix time of the last successful replication from the primary (0: never), by what is replicated.', type: 'gauge' as const, samples: this.#federation.replicationSamples().map((x) => ({ labels: { type: x.type }, value: x.lastSuccess })) },
            ]
          : []),
        { name: 'meshd_policy_table_generation', help: "Generation of the agent's compiled intention table.", type: 'gauge', samples: [{ labels: {}, value: this.#policy.generation }] },
      ]);
      ctx.res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'content-length': Buffer.byteLength(text) });
      ctx.res.end(text);
    });
    // Consul's reload endpoint (operator: it is what SIGHUP does; see reload()). A reload
    // that fails (an unreadable token file) answers 500 and changes nothing.
    on('PUT', '/v1/agent/reload', 'operator', async (ctx) => {
      try {
        await this.reload();
      } catch (err) {
        throw new HttpError(500, `reload failed: ${(err as Error).message}`);
      }
      sendText(ctx.res, 200, '');
    });
    on('GET', '/v1/status/leader', 'public', (ctx) => sendJson(ctx.res, 200, `${this.address.address}:${this.address.port}`));

    // --- CA ---
    const roots = async (ctx: RequestContext): Promise<void> => {
      if (flagParam(ctx.url, 'pem')) {
        const body = this.#ca.pemBundle();
        ctx.res.writeHead(200, { 'content-type': 'application/pem-certificate-chain', 'content-length': Buffer.byteLength(body), ...this.#consulHeaders(this.#store.maxIndex([CA_TABLE])) });
        ctx.res.end(body);
        return;
      }
      await this.#blocking(ctx, [CA_TABLE], () => {
        // A secondary serves the primary's roots once it has them and an intermediate.
        if (!this.#ca.ready) throw new HttpError(503, `CA not initialized yet: this secondary datacenter has not obtained the primary's (${this.#federation.primaryDatacenter}) roots and an intermediate; see the agent log`);
        return this.#ca.rootsResponse();
      });
    };
    on('GET', '/v1/connect/ca/roots', 'public', roots);
    on('GET', '/v1/agent/connect/ca/roots', 'public', roots);
    // meshd's own signing endpoint: Consul signs over an internal RPC (ConnectCA.Sign), so
    // there is no Consul path to mirror. Body {"CSR": "<PEM>"}; reply: Consul's IssuedCert
    // without PrivateKeyPEM (the key never left the proxy). The caller must be allowed to act
    // for the CSR's service (src/control/acl.ts); CSRs are admitted by CSRMaxPerSecond or
    // CSRMaxConcurrent and refused beyond that with 429 and Retry-After.
    const csrRefused = (): void => {
      this.#csr.permission++;
    };
    on(['PUT', 'POST'], '/v1/connect/ca/sign', 'service', async (ctx, caller) => {
      const scope = this.#acl.certificateScope(caller);
      if (!scope.ok) {
        this.#csr.permission++;
        throw new HttpError(scope.status, scope.message);
      }
      const body = parseJsonObject(await readBody(ctx.req));
      const csr = reqString(body, 'CSR');
      const admission = this.#limiter.admit();
      if (!admission.ok) {
        this.#csr.rate_limited++;
        ctx.res.setHeader('Retry-After', String(Math.max(1, Math.ceil(admission.retryAfterMs / 1000))));
        throw new HttpError(429, 'rate limited: too many certificate signing requests (CSRMaxPerSecond / CSRMaxConcurrent); retry later');
      }
      try {
        const issued = await this.#ca.sign(csr, scope.services);
        this.#csr.signed++;
        sendJson(ctx.res, 200, issued);
      } catch (err) {
        if (err instanceof CsrError) {
          if (err.code === 'CSR_PERMISSION_DENIED') this.#csr.permission++;
          else this.#csr.invalid++;
          throw new HttpError(err.code === 'CSR_PERMISSION_DENIED' ? 403 : 400, `invalid CSR: ${err.message}`);
        }
        if (err instanceof CaStateError) throw new HttpError(503, err.message);
        throw err;
      } finally {
        admission.release();
      }
    }, csrRefused);
    // Consul's leaf endpoint: the one route that serves a private key (the agent generates it),
    // so only to a caller with service:write on the service.
    on('GET', '/v1/agent/connect/ca/leaf/:service', 'service', async (ctx, caller) => {
      const service = ctx.params.service as string;
      if (!SERVICE_NAME_RE.test(service)) throw new HttpError(400, `invalid service name ${JSON.stringify(service)}`);
      const scope = this.#acl.certificateScope(caller);
      if (!scope.ok) throw new HttpError(scope.status, scope.message);
      if (scope.services !== '*' && !scope.services.includes(service)) throw new HttpError(403, `Permission denied: token lacks permission 'service:write' on "${service}"`);
      const p = blockingParams(ctx.url);
      let leaf: Awaited<ReturnType<LeafCache['get']>>;
      try {
        leaf = await this.#leaves.get(service, p?.index ?? null, p?.waitMs ?? 0, ctx.signal);
      } catch (err) {
        // A secondary without an intermediate yet: no leaves until it has one.
        if (err instanceof CaStateError) throw new HttpError(503, err.message);
        throw err;
      }
      if (ctx.signal.aborted) return;
      sendJson(ctx.res, 200, leaf, this.#consulHeaders(leaf.ModifyIndex));
    });
    on('GET', '/v1/connect/ca/configuration', 'operator', (ctx) => this.#blocking(ctx, [CA_TABLE], () => this.#ca.configResponse()));
    on('PUT', '/v1/connect/ca/configuration', 'operator', async (ctx) => {
      const body = parseJsonObject(await readBody(ctx.req));
      try {
        await this.#ca.setConfig(body);
      } catch (err) {
        if (err instanceof CaError) throw new HttpError(400, `CA configuration refused: ${err.message}`);
        throw err;
      }
      this.#limiter.configure(this.#ca.config.csrMaxPerSecond, this.#ca.config.csrMaxConcurrent);
      sendJson(ctx.res, 200, true);
    });

    // --- federation (src/control/federation.ts) ---
    // Consul's datacenter list: this one and every one the federation states know. Public,
    // as in Consul (names only).
    on('GET', '/v1/catalog/datacenters', 'public', (ctx) => sendJson(ctx.res, 200, this.#federation.datacenters()));
    // Consul's path; Consul's answer is a list too (its MeshGateways are health entries,
    // ours {Address, Port}). operator, as Consul's operator:read.
    on('GET', '/v1/internal/federation-states', 'operator', (ctx) => this.#blocking(ctx, [FEDERATION_STATES], () => this.#federation.states()));
    // For proxies with remote upstreams: every datacenter's mesh gateways (WAN addresses).
    on('GET', '/v1/internal/federation-states/mesh-gateways', 'read', (ctx) =>
      this.#blocking(ctx, [FEDERATION_STATES], () => {
        const out: Record<string, { Address: string; Port: number }[]> = {};
        for (const s of this.#federation.states()) out[s.Datacenter] = s.MeshGateways.map((g) => ({ Address: g.Address, Port: g.Port }));
        return out;
      }),
    );
    // A secondary's own state, sent to the primary (Consul: FederationState.Apply over RPC).
    on('PUT', '/v1/internal/meshd/federation-state', 'operator', async (ctx) => {
      this.#federation.acceptState(parseJsonObject(await readBody(ctx.req)));
      sendJson(ctx.res, 200, true);
    });
    on('GET', '/v1/internal/meshd/federation', 'read', (ctx) => sendJson(ctx.res, 200, this.#federation.status()));
    // Config entries as stored (every kind, intentions with their legacy fields), for a
    // secondary's replication: {Index, Tables: {table: [{Key, Value}]}}. jwt-provider
    // entries are in it, so operator (the replication token).
    on('GET', '/v1/internal/meshd/replication/config-entries', 'operator', (ctx) => {
      const tables = CONFIG_ENTRY_KINDS.map(configTable);
      return this.#blocking(ctx, tables, () => configSnapshot(this.#store, tables));
    });
    // Consul's ConnectCA.SignIntermediate: the primary signs a secondary's intermediate CSR
    // with its active root. Body {"CSR": PEM}; answer {"CertPEM", "RootID"}.
    on('POST', '/v1/internal/meshd/ca/sign-intermediate', 'operator', async (ctx) => {
      if (this.#federation.isSecondary) throw new HttpError(400, `only the primary datacenter (${this.#federation.primaryDatacenter}) signs intermediates`);
      const csr = reqString(parseJsonObject(await readBody(ctx.req)), 'CSR');
      try {
        sendJson(ctx.res, 200, await this.#ca.signIntermediate(csr));
      } catch (err) {
        if (err instanceof IntermediateError || err instanceof CaError) throw new HttpError(400, err.message);
        throw err;
      }
    });
    on('PUT', '/v1/acl/token', 'acl', async (ctx) => {
      const { description, services } = decodeTokenBody(parseJsonObject(await readBody(ctx.req)));
      sendJson(ctx.res, 200, this.#acl.createServiceToken(description, services, new Date(this.#now())));
    });
    // Consul's "who am I": the token the request carries (never the anonymous one).
    on('GET', '/v1/acl/token/self', 'token', (ctx, caller) => {
      if (caller.kind === 'service') return sendJson(ctx.res, 200, caller.token);
      sendJson(ctx.res, 200, { AccessorID: '', Description: 'Management token (meshd agent)', Policies: [{ ID: '00000000-0000-0000-0000-000000000001', Name: 'global-management' }], ServiceIdentities: [] });
    });
    on('DELETE', '/v1/acl/token/:id', 'acl', (ctx) => {
      const id = ctx.params.id as string;
      if (!this.#acl.deleteServiceToken(id)) throw new HttpError(404, `ACL token not found: ${JSON.stringify(id)} (give the AccessorID)`);
      sendJson(ctx.res, 200, true);
    });

    // --- catalog ---
    on('PUT', '/v1/agent/service/register', 'service', async (ctx, caller) => {
      const reg = decodeRegistration(parseJsonObject(await readBody(ctx.req)));
      // As Consul's agent: service:write on the name, on a proxy's destination, on its sidecar,
      // and on whatever the IDs it would replace belong to now.
      const names = new Set([reg.service.Service, ...this.#instanceNames(reg.service.ID), ...this.#instanceNames(`${reg.service.ID}${SIDECAR_SUFFIX}`)]);
      if (reg.service.Proxy !== null) names.add(reg.service.Proxy.DestinationServiceName);
      if (reg.sidecar !== undefined) names.add(reg.sidecar.service.Service);
      this.#requireWrite(caller, names);
      this.#catalog.register(reg);
      this.#syncChecks();
      sendText(ctx.res, 200, '');
    });
    on('PUT', '/v1/agent/service/deregister/:id', 'service', (ctx, caller) => {
      const id = ctx.params.id as string;
      this.#requireWrite(caller, this.#instanceNames(id));
      if (!this.#catalog.deregister(id)) throw new HttpError(404, `Unknown service ID "${id}". Ensure that the service ID is passed, not the service name.`);
      this.#syncChecks();
      sendText(ctx.res, 200, '');
    });
    on('GET', '/v1/agent/services', 'read', (ctx) => {
      const out: Record<string, object> = {};
      for (const s of this.#catalog.services()) out[s.ID] = agentServiceJson(s, this.#opts.datacenter);
      sendJson(ctx.res, 200, out);
    });
    // Consul's single-service read; `?hash=<ContentHash>&wait=` blocks until the service changes.
    on('GET', '/v1/agent/service/:id', 'read', async (ctx) => {
      const id = ctx.params.id as string;
      if (id === 'register') throw new HttpError(405, `method GET not allowed on ${ctx.url.pathname}`);
      const read = (): Record<string, unknown> => {
        const s = this.#catalog.service(id);
        if (s === undefined) throw new HttpError(404, `unknown service ID: ${id}`);
        return agentServiceJson(s, this.#opts.datacenter);
      };
      let body = read();
      const hash = ctx.url.searchParams.get('hash');
      if (hash !== null && hash === body.ContentHash) {
        const wait = ctx.url.searchParams.get('wait');
        // Consul's blocking defaults: 5m, at most 10m.
        const until = Date.now() + Math.min(600_000, wait === null ? 300_000 : parseDuration(wait, 'wait'));
        while (!ctx.signal.aborted && Date.now() < until && body.ContentHash === hash) {
          await this.#store.waitForChange([SERVICES], this.#store.maxIndex([SERVICES]), until - Date.now(), ctx.signal);
          body = read();
        }
        if (ctx.signal.aborted) return;
      }
      sendJson(ctx.res, 200, body, { 'X-Consul-ContentHash': body.ContentHash as string });
    });
    on('GET', '/v1/agent/checks', 'read', (ctx) => {
      const out: Record<string, object> = {};
      for (const c of this.#catalog.checks()) out[c.CheckID] = agentCheckJson(c, this.#catalog.node.Node, this.#catalog.service(c.ServiceID)?.Tags ?? []);
      sendJson(ctx.res, 200, out);
    });
    for (const [verb, status] of [['pass', 'passing'], ['warn', 'warning'], ['fail', 'critical']] as const) {
      on('PUT', `/v1/agent/check/${verb}/:id`, 'service', (ctx, caller) => {
        const id = ctx.params.id as string;
        const check = this.#catalog.check(id);
        // A service's check needs service:write on it; a node check (no service), management.
        if (check !== undefined) {
          const owners = check.ServiceID === '' ? [] : this.#instanceNames(check.ServiceID);
          if (owners.length > 0) this.#requireWrite(caller, owners);
          else if (caller.kind === 'service') throw new HttpError(403, `Permission denied: check "${id}" belongs to no service of this token (node checks need the management token)`);
        }
        const type = check?.Type;
        if (type !== undefined && type !== 'ttl') throw new HttpError(400, `check "${id}" is a ${type} check run by the agent; only TTL checks are updated with /v1/agent/check/${verb}`);
        if (!this.#catalog.updateCheck(id, status satisfies CheckStatus, ctx.url.searchParams.get('note') ?? '')) throw new HttpError(404, `Unknown check ID "${id}"`);
        sendText(ctx.res, 200, '');
      });
    }
    on('GET', '/v1/catalog/services', 'read', (ctx) =>
      this.#blocking(ctx, [SERVICES], () => {
        const out: Record<string, string[]> = {};
        for (const s of this.#catalog.services()) out[s.Service] = [...new Set([...(out[s.Service] ?? []), ...s.Tags])];
        return out;
      }),
    );
    // Consul's catalog view of one service's instances (CatalogService: node fields, then
    // Service* fields), from the same records as the health endpoint. `?tag=` filters.
    on('GET', '/v1/catalog/service/:service', 'read', (ctx) =>
      this.#blocking(ctx, [SERVICES], () => {
        const tags = ctx.url.searchParams.getAll('tag');
        return (this.#catalog.health(ctx.params.service as string, false, false) as { Node: Record<string, unknown>; Service: Record<string, unknown> & { Tags: string[] } }[])
          .filter((h) => tags.every((t) => h.Service.Tags.includes(t)))
          .map(({ Node: n, Service: sv }) => ({
            ID: n.ID,
            Node: n.Node,
            Address: n.Address,
            Datacenter: n.Datacenter,
            TaggedAddresses: n.TaggedAddresses,
            NodeMeta: n.Meta,
            ServiceKind: sv.Kind,
            ServiceID: sv.ID,
            ServiceName: sv.Service,
            ServiceTags: sv.Tags,
            ServiceAddress: sv.Address,
            ServicePort: sv.Port,
            ServiceMeta: sv.Meta,
            ServiceTaggedAddresses: sv.TaggedAddresses ?? null,
            ServiceProxy: sv.Proxy,
            Namespace: 'default',
            CreateIndex: sv.CreateIndex,
            ModifyIndex: sv.ModifyIndex,
          }));
      }),
    );
    on('GET', '/v1/health/connect/:service', 'read', (ctx) =>
      this.#blocking(ctx, [SERVICES, CHECKS], () => this.#catalog.health(ctx.params.service as string, true, flagParam(ctx.url, 'passing'))),
    );
    on('GET', '/v1/health/service/:service', 'read', (ctx) =>
      this.#blocking(ctx, [SERVICES, CHECKS], () => this.#catalog.health(ctx.params.service as string, false, flagParam(ctx.url, 'passing'))),
    );

    // --- intentions ---
    const pair = (url: URL): { source: string; destination: string } => {
      const source = url.searchParams.get('source');
      const destination = url.searchParams.get('destination');
      if (source === null || source === '') throw new HttpError(400, 'required query parameter "source" not set');
      if (destination === null || destination === '') throw new HttpError(400, 'required query parameter "destination" not set');
      return { source, destination };
    };
    on('PUT', '/v1/connect/intentions/exact', 'operator', async (ctx) => {
      const { source, destination } = pair(ctx.url);
      const rule = decodeExactBody(parseJsonObject(await readBody(ctx.req)));
      try {
        this.#intentions.upsert(source, destination, rule);
      } catch (err) {
        if (err instanceof FieldError) throw new HttpError(400, `Invalid intention: ${err.message}`);
        throw err;
      }
      await this.#republish();
      sendJson(ctx.res, 200, true);
    });
    on('GET', '/v1/connect/intentions/exact', 'read', (ctx) => {
      const { source, destination } = pair(ctx.url);
      const found = this.#intentions.get(source, destination);
      if (found === undefined) throw new HttpError(404, `Intention not found: ${source} => ${destination}`);
      sendJson(ctx.res, 200, found, this.#consulHeaders(this.#store.maxIndex([INTENTIONS])));
    });
    on('DELETE', '/v1/connect/intentions/exact', 'operator', async (ctx) => {
      const { source, destination } = pair(ctx.url);
      this.#intentions.delete(source, destination);
      await this.#republish();
      sendJson(ctx.res, 200, true);
    });
    on('GET', '/v1/connect/intentions', 'read', (ctx) => {
      const expr = ctx.url.searchParams.get('filter');
      let keep: ((o: Record<string, unknown>) => boolean) | null = null;
      if (expr !== null && expr !== '') {
        try {
          keep = compileFilter(expr, INTENTION_FILTER_FIELDS);
        } catch (err) {
          if (err instanceof FilterError) throw new HttpError(400, `Failed to create boolean expression evaluator: ${err.message}`);
          throw err;
        }
      }
      return this.#blocking(ctx, [INTENTIONS], () => {
        const all = this.#intentions.list();
        return keep === null ? all : all.filter((i) => keep(i as unknown as Record<string, unknown>));
      });
    });

    // --- config entries (Consul's /v1/config) ---
    const table = (kind: ConfigEntryKind): string => (kind === 'service-intentions' ? INTENTIONS : `config/${kind}`);
    const kindParam = (ctx: RequestContext): ConfigEntryKind => {
      try {
        return parseConfigEntryKind(ctx.params.kind as string, 'kind');
      } catch (err) {
        if (err instanceof FieldError) throw new HttpError(400, err.message);
        throw err;
      }
    };
    const readEntry = (kind: ConfigEntryKind, name: string): { value: ConfigEntry; createIndex: number; modifyIndex: number } | undefined =>
      kind === 'service-intentions' ? this.#intentions.entry(name) : this.#store.get<ConfigEntry>(table(kind), name);
    // Every config entry, for the chain compiler (intentions included: they share the index).
    const configTables = CONFIG_ENTRY_KINDS.map(table);
    const allEntries = (): ConfigEntry[] => [
      ...this.#intentions.entries(),
      ...CONFIG_ENTRY_KINDS.filter((k) => k !== 'service-intentions').flatMap((k) => this.#store.list<ConfigEntry>(table(k)).map((e) => e.value)),
    ];
    // Problems of the service graph, by what they are about (a chain's service name, or
    // `ingress-gateway/<name>` for a listener whose service speaks another protocol).
    const chainErrors = (entries: readonly ConfigEntry[]): Map<string, string> => {
      const out = new Map<string, string>();
      const names = new Set(entries.filter((e) => e.kind !== 'service-intentions' && e.kind !== 'jwt-provider' && e.kind !== 'ingress-gateway' && e.kind !== 'proxy-defaults').map((e) => e.name));
      for (const name of names) {
        try {
          compileChain(entries, name, { datacenter: this.#opts.datacenter });
        } catch (err) {
          if (!(err instanceof FieldError)) throw err;
          out.set(name, `the discovery chain for ${JSON.stringify(name)} would not compile: ${err.message}`);
        }
      }
      for (const [key, message] of ingressProtocolErrors(entries, { datacenter: this.#opts.datacenter })) out.set(key, message);
      return out;
    };
    const refuseBrokenChains = (before: readonly ConfigEntry[], after: readonly ConfigEntry[]): void => {
      const was = chainErrors(before);
      for (const [key, message] of chainErrors(after)) {
        if (!was.has(key)) throw new HttpError(400, `Request decode failed: ${message}`);
      }
    };
    on('PUT', '/v1/config', 'operator', async (ctx) => {
      const entry = decodeConfigEntry(collapseBlocks(parseJsonObject(await readBody(ctx.req)), ENTRY_OBJECT_KEYS));
      const cas = ctx.url.searchParams.get('cas');
      if (cas !== null) {
        // Check-and-set: 0 means "only if absent", otherwise the entry's ModifyIndex.
        const current = readEntry(entry.kind, entry.name);
        if ((current?.modifyIndex ?? 0) !== Number(cas)) return sendJson(ctx.res, 200, false);
      }
      // Cross-entry rules (a route to a subset no resolver defines, splitters that loop,
      // services of one chain with different protocols) only show when chains compile: a write
      // that makes a chain fail which compiled before is refused, naming the entry and field,
      // with nothing stored.
      if (entry.kind !== 'service-intentions' && entry.kind !== 'jwt-provider') {
        const before = allEntries();
        refuseBrokenChains(before, [...before.filter((e) => !(e.kind === entry.kind && e.name === entry.name)), entry]);
      }
      if (entry.kind === 'service-intentions') this.#intentions.write(entry);
      else this.#store.put(table(entry.kind), entry.name, entry);
      if (entry.kind === 'service-intentions') await this.#republish();
      sendJson(ctx.res, 200, true);
    });
    // jwt-provider entries are mesh-wide (Consul: mesh:read, which service identities lack).
    const requireKindRead = (caller: Caller, kind: ConfigEntryKind): void => {
      if (kind !== 'jwt-provider') return;
      const d = this.#acl.admits(caller, 'operator');
      if (!d.ok) throw new HttpError(d.status, d.message);
    };
    on('GET', '/v1/config/:kind/:name', 'read', (ctx, caller) => {
      const kind = kindParam(ctx);
      requireKindRead(caller, kind);
      const e = readEntry(kind, ctx.params.name as string);
      if (e === undefined) throw new HttpError(404, `Config entry not found for "${kind}" / "${ctx.params.name as string}"`);
      sendJson(ctx.res, 200, encodeConfigEntry(e.value, e), this.#consulHeaders(this.#store.maxIndex([table(kind)])));
    });
    on('GET', '/v1/config/:kind', 'read', (ctx, caller) => {
      const kind = kindParam(ctx);
      requireKindRead(caller, kind);
      return this.#blocking(ctx, [table(kind)], () => {
        const names = this.#store.list<{ name?: string; Name?: string }>(table(kind)).map((e) => e.value.name ?? e.value.Name ?? '');
        return names
          .sort()
          .map((n) => readEntry(kind, n))
          .flatMap((e) => (e === undefined ? [] : [encodeConfigEntry(e.value, e)]));
      });
    });
    on('DELETE', '/v1/config/:kind/:name', 'operator', async (ctx) => {
      const kind = kindParam(ctx);
      const name = ctx.params.name as string;
      const cas = ctx.url.searchParams.get('cas');
      const current = readEntry(kind, name);
      if (cas !== null && (current?.modifyIndex ?? 0) !== Number(cas)) return sendJson(ctx.res, 200, false);
      if (kind !== 'service-intentions' && kind !== 'jwt-provider') {
        const before = allEntries();
        refuseBrokenChains(before, before.filter((e) => !(e.kind === kind && e.name === name)));
      }
      this.#store.delete(table(kind), name);
      if (kind === 'service-intentions') await this.#republish();
      sendJson(ctx.res, 200, true);
    });
    const compile = (service: string, downstream?: string, entries: readonly ConfigEntry[] = allEntries(), upstream: UpstreamQuery = { datacenter: '', mode: '' }): ReturnType<typeof compileChain> => {
      if (!SERVICE_NAME_RE.test(service)) throw new HttpError(400, `invalid service name ${JSON.stringify(service)}`);
      try {
        return compileChain(entries, service, {
          datacenter: this.#opts.datacenter,
          trustDomain: this.#ca.trustDomain,
          evaluateInDatacenter: upstream.datacenter,
          overrideMeshGatewayMode: upstream.mode,
          ...(downstream === undefined ? {} : { downstream }),
        });
      } catch (err) {
        if (err instanceof FieldError) throw new HttpError(400, `discovery chain for ${service} does not compile: ${err.message}`);
        throw err;
      }
    };
    // Consul's discovery chain, compiled from the router, splitter, resolver and defaults entries.
    on('GET', '/v1/discovery-chain/:service', 'read', (ctx) => this.#blocking(ctx, configTables, () => compile(ctx.params.service as string).consul));
    // meshd's own: what a sidecar needs besides intentions and health, in one blocking query:
    // its HTTP settings, the L7 intentions naming it, and its upstreams' chains (data-plane form).
    // Only for the caller's own service: the answer carries its JWT providers.
    on('GET', '/v1/internal/meshd/proxy-config/:service', 'service', (ctx, caller) => {
      this.#requireWrite(caller, [ctx.params.service as string]);
      return this.#blocking(ctx, configTables, () => {
        const service = ctx.params.service as string;
        const defaults = this.#store.get<ConfigEntry>(table('service-defaults'), service)?.value;
        const sd = defaults?.kind === 'service-defaults' ? defaults : null;
        // One read of the entries for every chain in this answer.
        const entries = allEntries();
        const own = compile(service, undefined, entries).dataPlane;
        const chains: Record<string, unknown> = {};
        // `upstream=NAME[@DC][~MODE]`: the chain of NAME evaluated in DC, the upstream
        // definition's mesh-gateway mode (else the proxy's own, `mode=`) overriding the entries'.
        const instanceMode = parseMeshGatewayMode(ctx.url.searchParams.get('mode') ?? '', 'mode');
        for (const up of ctx.url.searchParams.getAll('upstream')) {
          const q = parseUpstreamQuery(up);
          chains[up] = compile(q.service, service, entries, { datacenter: q.datacenter, mode: q.mode || instanceMode }).dataPlane;
        }
        const intentions = this.#intentions.entry(service)?.value ?? null;
        // The jwt-provider entries the intentions name; an unknown name is left out (its
        // requirements then never hold at the proxy).
        const jwtProviders = (intentions === null ? [] : referencedJwtProviders(intentions)).flatMap((n) => {
          const e = readEntry('jwt-provider', n)?.value;
          return e?.kind === 'jwt-provider' ? [e] : [];
        });
        return {
          Local: { Protocol: own.protocol, LocalConnectTimeoutMs: sd?.localConnectTimeoutMs || 5000, LocalRequestTimeoutMs: sd?.localRequestTimeoutMs || 15000 },
          // All sources (L4 ones too), so an exact L4 source is never shadowed by a `*` L7 program.
          IntentionSources: intentions?.sources ?? [],
          IntentionJwt: intentions?.jwt ?? null,
          JwtProviders: jwtProviders,
          DefaultAllow: this.#policy.defaultAllow,
          Chains: chains,
        };
      });
    });
    // meshd's own, for `meshd connect gateway -ingress`: its ingress-gateway entry, what a "*"
    // service expands to, and the chain of every exposed service, in one blocking query (over
    // the catalog too when a wildcard needs it). Only for the gateway's own name.
    on('GET', '/v1/internal/meshd/gateway-config/:name', 'service', (ctx, caller) => {
      const name = ctx.params.name as string;
      if (!SERVICE_NAME_RE.test(name)) throw new HttpError(400, `invalid gateway name ${JSON.stringify(name)}`);
      this.#requireWrite(caller, [name]);
      const current = readEntry('ingress-gateway', name)?.value;
      const wildcard = current?.kind === 'ingress-gateway' && current.listeners.some((l) => l.services.some((s) => s.name === '*'));
      return this.#blocking(ctx, wildcard ? [...configTables, SERVICES] : configTables, () => {
        const catalog = this.#catalog.services().flatMap((s) => (s.Kind === '' ? [s.Service] : []));
        return gatewayConfig(allEntries(), name, catalog, { datacenter: this.#opts.datacenter, trustDomain: this.#ca.trustDomain });
      });
    });
    // meshd's own, for `meshd connect gateway -mesh`: SNI → local sidecars (services and resolver
    // subsets, healthy ones) and datacenter → its mesh gateways (../gateway/mesh-config.ts), in
    // one blocking query woken by catalog, health, config-entry and federation-state changes.
    on('GET', '/v1/internal/meshd/mesh-gateway-config/:name', 'service', (ctx, caller) => {
      const name = ctx.params.name as string;
      if (!SERVICE_NAME_RE.test(name)) throw new HttpError(400, `invalid gateway name ${JSON.stringify(name)}`);
      this.#requireWrite(caller, [name]);
      return this.#blocking(ctx, [...configTables, SERVICES, CHECKS, FEDERATION_STATES], () => {
        const services = new Map<string, HealthEntryList>();
        for (const s of this.#catalog.services()) {
          const dest = s.Kind === 'connect-proxy' ? s.Proxy?.DestinationServiceName : undefined;
          if (dest !== undefined && !services.has(dest)) services.set(dest, this.#catalog.health(dest, true, false) as HealthEntryList);
        }
        return meshGatewayConfig({
          datacenter: this.#opts.datacenter,
          trustDomain: this.#ca.trustDomain,
          services,
          resolvers: allEntries().flatMap((e) => (e.kind === 'service-resolver' ? [e] : [])),
          federationStates: this.#store.list<FederationState>(FEDERATION_STATES).map((e) => e.value),
          onBadFilter: (svc, subset, why) => process.stderr.write(`${new Date().toISOString()} [WARN] agent: mesh gateway: subset ${subset} of ${svc} has a filter that does not compile: ${why}\n`),
        });
      });
    });
    // meshd's own, for sidecars with upstreams in other datacenters through mesh gateways
    // (MeshGateway.Mode local or remote): this datacenter's healthy mesh gateways by their LAN
    // address, and every other datacenter's by WAN address (its federation state).
    on('GET', '/v1/internal/meshd/mesh-gateways', 'read', (ctx) =>
      this.#blocking(ctx, [SERVICES, CHECKS, FEDERATION_STATES], () => {
        const local = localMeshGateways(this.#catalog.services(), this.#catalog.checks(), this.#opts.host, 'lan');
        const remote: Record<string, readonly MeshGatewayAddress[]> = {};
        for (const { value } of this.#store.list<FederationState>(FEDERATION_STATES)) {
          if (value.Datacenter !== this.#opts.datacenter) remote[value.Datacenter] = value.MeshGateways;
        }
        return { Local: local, Remote: remote };
      }),
    );
    on('GET', '/v1/connect/intentions/check', 'read', (ctx) => {
      const { source, destination } = pair(ctx.url);
      sendJson(ctx.res, 200, { Allowed: this.#policy.check(source, destination).allowed }, this.#consulHeaders(this.#store.maxIndex([INTENTIONS])));
    });
    // Consul's match: intentions that apply to a source or destination, in evaluation order.
    on('GET', '/v1/connect/intentions/match', 'read', (ctx) => {
      const by = ctx.url.searchParams.get('by');
      if (by !== 'source' && by !== 'destination') throw new HttpError(400, 'required query parameter "by" must be "source" or "destination"');
      const names = ctx.url.searchParams.getAll('name');
      if (names.length === 0) throw new HttpError(400, 'required query parameter "name" not set');
      const all = this.#intentions.list();
      const out: Record<string, unknown[]> = {};
      for (const n of names) out[n] = all.filter((i) => (by === 'source' ? i.SourceName === n || i.SourceName === '*' : i.DestinationName === n || i.DestinationName === '*'));
      sendJson(ctx.res, 200, out, this.#consulHeaders(this.#store.maxIndex([INTENTIONS])));
    });
    // With `path` (and optionally `method`, and `header=Name:Value` repeated), an L7 decision
    // is evaluated as the data plane would: the path normalised, the source's permissions
    // top-down, no match giving the default policy. JWT requirements count as unmet (no token).
    on('GET', '/v1/connect/intentions/explain', 'read', (ctx) => {
      const { source, destination } = pair(ctx.url);
      const base = this.#policy.explain(source, destination);
      const rawPath = ctx.url.searchParams.get('path');
      const headers = this.#store.maxIndex([INTENTIONS]);
      if (rawPath === null || base.Layer !== 'L7') return sendJson(ctx.res, 200, base, this.#consulHeaders(headers));
      const norm = normalizeRequestPath(rawPath);
      if (!norm.ok) throw new HttpError(400, `path: ${norm.detail}`);
      const method = (ctx.url.searchParams.get('method') ?? 'GET').toUpperCase();
      const hdrs = new Map<string, string>();
      for (const h of ctx.url.searchParams.getAll('header')) {
        const colon = h.indexOf(':');
        if (colon <= 0) throw new HttpError(400, `header ${JSON.stringify(h)} must be Name:Value`);
        const name = h.slice(0, colon).trim().toLowerCase();
        const prev = hdrs.get(name);
        hdrs.set(name, prev === undefined ? h.slice(colon + 1).trim() : `${prev},${h.slice(colon + 1).trim()}`);
      }
      const entry = this.#intentions.entry(destination)?.value;
      const program = entry === undefined ? null : compileL7Sources(entry.sources, { entryJwt: entry.jwt }).programFor(source);
      const d = program?.evaluate({ method, path: norm.path, header: (n) => hdrs.get(n) }, this.#policy.defaultAllow);
      sendJson(
        ctx.res,
        200,
        {
          ...base,
          Allowed: d?.allow ?? this.#policy.defaultAllow,
          Reason: d === undefined ? 'no L7 program for this source' : d.permissionIndex < 0 ? 'no permission matched: default intention policy' : `permission ${d.permissionIndex} matched (${d.allow ? 'allow' : 'deny'})`,
          Request: { Method: method, Path: norm.path },
          Permission: d === undefined || d.permissionIndex < 0 ? null : { Index: d.permissionIndex, Action: d.allow ? 'allow' : 'deny' },
        },
        this.#consulHeaders(headers),
      );
    });
    on('POST', '/v1/agent/connect/authorize', 'service', async (ctx, caller) => {
      const body = parseJsonObject(await readBody(ctx.req));
      const target = reqString(body, 'Target');
      // Consul: service:write on the Target.
      this.#requireWrite(caller, [target]);
      const uri = reqString(body, 'ClientCertURI');
      const id = parseSpiffeId(uri);
      if (id === null) throw new HttpError(400, `ClientCertURI not a valid Connect identifier: ${uri}`);
      if (id.kind !== 'service') throw new HttpError(400, `ClientCertURI not a valid Service identifier: ${uri}`);
      // Consul ignores the URI's trust domain and datacenter here (§2.8): callers have
      // verified the chain already. Intentions match on the service name.
      const result = this.#policy.check(id.service, target);
      sendJson(ctx.res, 200, { Authorized: result.allowed, Reason: result.reason });
    });

    // The deprecated ID API (Consul ≤1.8, still used by `intention create -meta`): the only
    // way to give one intention its own Meta. Registered last so the named paths above
    // (exact, check, match, explain) win over `:id`.
    const invalid = (err: unknown): never => {
      if (err instanceof FieldError) throw new HttpError(400, `Invalid intention: ${err.message}`);
      throw err;
    };
    const uuidParam = (ctx: RequestContext): string => {
      const id = ctx.params.id as string;
      if (!UUID_RE.test(id)) throw new HttpError(400, `invalid intention ID ${JSON.stringify(id)}: must be a UUID`);
      return id;
    };
    on('POST', '/v1/connect/intentions', 'operator', async (ctx) => {
      const body = parseJsonObject(await readBody(ctx.req));
      let id: string;
      try {
        id = this.#intentions.createLegacy(decodeLegacyBody(body), new Date(this.#now()));
      } catch (err) {
        if (err instanceof IntentionExistsError) throw new HttpError(409, err.message);
        return invalid(err);
      }
      await this.#republish();
      sendJson(ctx.res, 200, { ID: id });
    });
    on('GET', '/v1/connect/intentions/:id', 'read', (ctx) => {
      const found = this.#intentions.getById(uuidParam(ctx));
      if (found === undefined) throw new HttpError(404, 'Intention not found');
      sendJson(ctx.res, 200, found, this.#consulHeaders(this.#store.maxIndex([INTENTIONS])));
    });
    on('PUT', '/v1/connect/intentions/:id', 'operator', async (ctx) => {
      const id = uuidParam(ctx);
      const body = parseJsonObject(await readBody(ctx.req));
      let updated = false;
      try {
        updated = this.#intentions.updateLegacy(id, decodeLegacyBody(body), new Date(this.#now()));
      } catch (err) {
        invalid(err);
      }
      if (!updated) throw new HttpError(404, 'Intention not found');
      await this.#republish();
      sendJson(ctx.res, 200, true);
    });
    on('DELETE', '/v1/connect/intentions/:id', 'operator', async (ctx) => {
      if (!this.#intentions.deleteById(uuidParam(ctx))) throw new HttpError(404, 'Intention not found');
      await this.#republish();
      sendJson(ctx.res, 200, true);
    });
    return r;
  }
}

