// Datacenter federation, agent side (Consul's WAN federation through the primary, without
// gossip): federation states, `?dc=` forwarding, a secondary's replication of the primary's
// config entries and CA, and forwarding a secondary's writes to the primary.
//
// Runs on: the agent's control thread. Every loop here is a blocking query against the
// primary's HTTP API (-join-wan) with the replication token; none holds state beyond the
// store, so a restart resumes from index 0.
//
// Roles: the primary (-primary-datacenter equal to -datacenter, the default) owns the CA
// root, the config entries and the `federation-states` table; a secondary (-join-wan)
// replicates all three and keeps its own catalog. See docs/ARCHITECTURE.md "Federation".

import { request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders, type ServerResponse } from 'node:http';
import type { Store } from './store.ts';
import type { CheckRecord, ServiceRecord } from './catalog.ts';
import { SERVICES, CHECKS } from './catalog.ts';
import { DATACENTER_RE, FieldError } from './decode.ts';
import { AgentClient, AgentUnreachable, ApiError } from './client.ts';
import { decodePrimaryRoots, type CaState } from './ca-state.ts';
import { createIntermediateCsr } from '../ca/authority.ts';
import { decodeCaConfiguration, defaultCaConfig } from './ca-config.ts';
import { HttpError, MAX_BODY_BYTES, readBody, sendText } from './http.ts';

/** The store table the mesh gateways read (key: datacenter). Its value shape is fixed. */
export const FEDERATION_STATES = 'federation-states';

export interface MeshGatewayAddress {
  readonly Address: string;
  readonly Port: number;
}

export interface FederationState {
  readonly Datacenter: string;
  /** That datacenter's agent API, host:port. */
  readonly Address: string;
  /** WAN addresses of that datacenter's mesh-gateway services whose checks are not critical. */
  readonly MeshGateways: readonly MeshGatewayAddress[];
  /** RFC 3339; the time of the last change of the other fields. */
  readonly UpdatedAt: string;
}

const HOST_PORT_RE = /^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+):(\d{1,5})$/;

/** How often a secondary sends its state even when nothing changed (Consul's anti-entropy). */
export const STATE_RESEND_MS = 30_000;
/** How long a forwarded write waits for the secondary to replicate it before answering. */
export const WRITE_REPLICATION_WAIT_MS = 5_000;

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Decodes a federation state (the body of `PUT /v1/internal/meshd/federation-state`, or an
 * element of the primary's list). Every field is required and checked; FieldError names it.
 */
export function decodeFederationState(raw: unknown, path = ''): FederationState {
  const at = (f: string): string => (path === '' ? f : `${path}.${f}`);
  if (!isObject(raw)) throw new FieldError(path === '' ? 'body' : path, 'must be a JSON object');
  for (const k of Object.keys(raw)) {
    if (!['Datacenter', 'Address', 'MeshGateways', 'UpdatedAt'].includes(k)) throw new FieldError(at(k), 'unknown field; allowed: Datacenter, Address, MeshGateways, UpdatedAt');
  }
  const dc = raw.Datacenter;
  if (typeof dc !== 'string' || !DATACENTER_RE.test(dc)) throw new FieldError(at('Datacenter'), 'must be a datacenter name (lower-case letters, digits, "-" or "_", at most 63)');
  const address = raw.Address;
  if (typeof address !== 'string' || !validHostPort(address)) throw new FieldError(at('Address'), 'must be the agent API as HOST:PORT');
  const gws = raw.MeshGateways;
  if (!Array.isArray(gws)) throw new FieldError(at('MeshGateways'), 'must be a list (empty when there are none)');
  if (gws.length > 1024) throw new FieldError(at('MeshGateways'), 'at most 1024 gateways');
  const meshGateways = gws.map((g: unknown, i): MeshGatewayAddress => {
    const p = at(`MeshGateways[${i}]`);
    if (!isObject(g)) throw new FieldError(p, 'must be an object {Address, Port}');
    for (const k of Object.keys(g)) if (k !== 'Address' && k !== 'Port') throw new FieldError(`${p}.${k}`, 'unknown field; allowed: Address, Port');
    if (typeof g.Address !== 'string' || g.Address === '' || g.Address.length > 255 || /[\s/]/.test(g.Address)) throw new FieldError(`${p}.Address`, 'must be a host name or IP address');
    if (typeof g.Port !== 'number' || !Number.isInteger(g.Port) || g.Port < 1 || g.Port > 65535) throw new FieldError(`${p}.Port`, 'must be a port number 1-65535');
    return { Address: g.Address, Port: g.Port };
  });
  const updated = raw.UpdatedAt;
  if (typeof updated !== 'string' || !/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/.test(updated) || Number.isNaN(Date.parse(updated))) {
    throw new FieldError(at('UpdatedAt'), 'must be an RFC 3339 time');
  }
  return { Datacenter: dc, Address: address, MeshGateways: meshGateways, UpdatedAt: updated };
}

function validHostPort(s: string): boolean {
  const m = HOST_PORT_RE.exec(s);
  return m !== null && Number(m[1]) <= 65535;
}

/** Two states say the same thing (UpdatedAt aside). */
export function sameFederationState(a: FederationState | undefined, b: FederationState): boolean {
  return a !== undefined && a.Datacenter === b.Datacenter && a.Address === b.Address && JSON.stringify(a.MeshGateways) === JSON.stringify(b.MeshGateways);
}

/**
 * The addresses of this datacenter's mesh gateways: catalog services of Kind `mesh-gateway` none
 * of whose checks is critical, at their `TaggedAddresses[tag]` (`wan`: what other datacenters
 * dial, the federation state; `lan`: what this datacenter's proxies dial), else the service
 * address (else the node's) and port. Sorted, so an unchanged set compares equal.
 */
export function localMeshGateways(services: readonly ServiceRecord[], checks: readonly CheckRecord[], nodeAddress: string, tag: 'wan' | 'lan' = 'wan'): MeshGatewayAddress[] {
  const critical = new Set(checks.filter((c) => c.Status === 'critical').map((c) => c.ServiceID));
  const out: MeshGatewayAddress[] = [];
  for (const s of services) {
    if (s.Kind !== 'mesh-gateway' || critical.has(s.ID)) continue;
    const tagged = s.TaggedAddresses?.[tag];
    const address = tagged?.Address || s.Address || nodeAddress;
    const port = tagged?.Port ?? s.Port;
    if (address !== '' && port > 0) out.push({ Address: address, Port: port });
  }
  return out.sort((a, b) => (a.Address < b.Address ? -1 : a.Address > b.Address ? 1 : a.Port - b.Port));
}

// ------------------------------------------------------------------------ config snapshots

/**
 * The body of `GET /v1/internal/meshd/replication/config-entries`: every config table's
 * stored values as they are (service-intentions with their legacy IDs, Meta and times), so a
 * secondary's store holds exactly what the primary's does.
 */
export interface ConfigSnapshot {
  readonly Index: number;
  readonly Tables: Record<string, { Key: string; Value: unknown }[]>;
}

export function configSnapshot(store: Store, tables: readonly string[]): ConfigSnapshot {
  const out: Record<string, { Key: string; Value: unknown }[]> = {};
  for (const t of tables) {
    const entries = store.list<unknown>(t);
    out[t] = entries.map((e) => ({ Key: keyOf(e.value), Value: e.value })).filter((e) => e.Key !== '');
  }
  return { Index: store.maxIndex(tables), Tables: out };
}

/** Config entries are stored under their name (`name` in the domain form, `Name` in the first layout). */
function keyOf(v: unknown): string {
  if (!isObject(v)) return '';
  const n = v.name ?? v.Name;
  return typeof n === 'string' ? n : '';
}

/**
 * Makes the local tables equal to the snapshot: changed values are written, missing ones
 * deleted, equal ones left alone (so a replication that changed nothing wakes nobody).
 * Returns the tables that changed. Tables the snapshot does not name are left alone.
 */
export function applyConfigSnapshot(store: Store, tables: readonly string[], snap: unknown): Set<string> {
  if (!isObject(snap) || !isObject(snap.Tables)) throw new Error('replication answer is not {Index, Tables}');
  const changed = new Set<string>();
  for (const t of tables) {
    const rows = snap.Tables[t];
    if (rows === undefined) continue;
    if (!Array.isArray(rows)) throw new Error(`replication answer: table ${t} is not a list`);
    const want = new Map<string, unknown>();
    for (const row of rows as unknown[]) {
      if (!isObject(row) || typeof row.Key !== 'string' || row.Key === '' || !isObject(row.Value)) throw new Error(`replication answer: a row of ${t} is not {Key, Value}`);
      want.set(row.Key, row.Value);
    }
    for (const e of store.list<unknown>(t)) {
      const k = keyOf(e.value);
      if (!want.has(k)) {
        store.delete(t, k);
        changed.add(t);
      }
    }
    for (const [k, v] of want) {
      const cur = store.get<unknown>(t, k);
      if (cur !== undefined && JSON.stringify(cur.value) === JSON.stringify(v)) continue;
      store.put(t, k, v);
      changed.add(t);
    }
  }
  return changed;
}

// ------------------------------------------------------------------------------ forwarding

/** Hop-by-hop headers (RFC 9110 §7.6.1) are not passed through. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'proxy-authenticate', 'proxy-authorization']);
/** Request headers a forwarded API call keeps: the caller's token and the body's framing. */
const FORWARDED_REQUEST_HEADERS = ['x-consul-token', 'authorization', 'content-type', 'content-length', 'transfer-encoding', 'accept'];

function splitHostPort(address: string): { host: string; port: number } {
  const i = address.lastIndexOf(':');
  const host = address.slice(0, i);
  return { host: host.startsWith('[') ? host.slice(1, -1) : host, port: Number(address.slice(i + 1)) };
}

/**
 * Proxies one API request to another datacenter's agent (`?dc=`), streaming both ways:
 * a blocking query holds the upstream request open as long as the caller waits, and a
 * caller that goes away aborts it. Status, body and headers (X-Consul-*) come back as they
 * are. Resolves when the exchange is over, however it ended.
 */
export function proxyToDatacenter(req: IncomingMessage, res: ServerResponse, dc: string, address: string, pathAndQuery: string): Promise<void> {
  return new Promise((resolve) => {
    const headers: OutgoingHttpHeaders = {};
    for (const h of FORWARDED_REQUEST_HEADERS) {
      const v = req.headers[h];
      if (v !== undefined) headers[h] = v;
    }
    const { host, port } = splitHostPort(address);
    let done = false;
    const finish = (): void => {
      if (done) return;
      done = true;
      resolve();
    };
    const up = httpRequest({ host, port, method: req.method ?? 'GET', path: pathAndQuery, headers }, (upRes) => {
      const out: OutgoingHttpHeaders = {};
      for (const [k, v] of Object.entries(upRes.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) out[k] = v;
      res.writeHead(upRes.statusCode ?? 502, out);
      upRes.pipe(res);
      upRes.once('error', () => res.destroy());
      res.once('finish', finish);
    });
    up.once('error', (err) => {
      if (!res.headersSent) sendText(res, 500, `rpc error: cannot reach datacenter ${dc} at ${address}: ${err.message}`);
      else res.destroy();
      finish();
    });
    // The caller went away (or the answer is complete): end the upstream request with it.
    res.once('close', () => {
      if (!res.writableFinished) up.destroy();
      finish();
    });
    req.pipe(up);
  });
}

/** Whether a request is a write a secondary forwards to the primary, and what it replicates. */
export function forwardedWriteKind(method: string, path: string): 'config' | 'ca' | null {
  if (method === 'PUT' && path === '/v1/connect/ca/configuration') return 'ca';
  if (method === 'PUT' && path === '/v1/config') return 'config';
  if (method === 'DELETE' && /^\/v1\/config\/[^/]+\/[^/]+$/.test(path)) return 'config';
  if ((method === 'PUT' || method === 'DELETE') && path === '/v1/connect/intentions/exact') return 'config';
  if (method === 'POST' && path === '/v1/connect/intentions') return 'config';
  if ((method === 'PUT' || method === 'DELETE') && /^\/v1\/connect\/intentions\/[^/]+$/.test(path) && !/\/(exact|check|match|explain)$/.test(path)) return 'config';
  return null;
}

// ------------------------------------------------------------------------------ the runner

export interface FederationOptions {
  readonly store: Store;
  readonly ca: CaState;
  readonly datacenter: string;
  readonly primaryDatacenter: string;
  /** The primary's agent API (-join-wan); null on the primary. */
  readonly primaryAddress: string | null;
  /** Sent to the primary as X-Consul-Token (-replication-token-file); null: none. */
  readonly replicationToken: string | null;
  /** This agent's API as host:port (its own state's Address). */
  readonly selfAddress: () => string;
  readonly nodeAddress: string;
  readonly services: () => readonly ServiceRecord[];
  readonly checks: () => readonly CheckRecord[];
  /** Every config-entry table (intentions included): what a secondary replicates. */
  readonly configTables: readonly string[];
  /** Called after replication changed the intentions (the agent republishes its table). */
  readonly onIntentionsChanged: () => Promise<void>;
  readonly intentionsTable: string;
  /** Called after the CA replicated (the agent re-applies the primary's CSR limits). */
  readonly onCaChanged?: () => void;
  readonly log: (line: string) => void;
  readonly now?: () => number;
}

/** Where one replication loop stands (`GET /v1/internal/meshd/federation`, metrics). */
export interface ReplicationStatus {
  /** The primary's X-Consul-Index of the last answer applied. */
  Index: number;
  LastSuccess: string | null;
  LastError: string | null;
  LastErrorAt: string | null;
}

type LoopName = 'ConfigEntries' | 'FederationStates' | 'Roots' | 'State';

/** Retry delays: 250 ms doubling to 5 s, with jitter (a primary coming up is found fast). */
class Backoff {
  #ms = 0;
  next(): number {
    this.#ms = this.#ms === 0 ? 250 : Math.min(5000, this.#ms * 2);
    return Math.round(this.#ms * (0.75 + Math.random() * 0.5));
  }
  reset(): void {
    this.#ms = 0;
  }
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done(): void {
      clearTimeout(t);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

export class Federation {
  readonly #o: FederationOptions;
  readonly #client: AgentClient | null;
  readonly #stop = new AbortController();
  readonly #now: () => number;
  readonly #status: Record<LoopName, ReplicationStatus> = {
    ConfigEntries: { Index: 0, LastSuccess: null, LastError: null, LastErrorAt: null },
    FederationStates: { Index: 0, LastSuccess: null, LastError: null, LastErrorAt: null },
    Roots: { Index: 0, LastSuccess: null, LastError: null, LastErrorAt: null },
    State: { Index: 0, LastSuccess: null, LastError: null, LastErrorAt: null },
  };
  /** The last error logged per loop and when, so a primary that stays down is not logged every 250 ms. */
  readonly #logged = new Map<LoopName, { message: string; at: number }>();
  /** The primary's index of the config snapshot applied last. */
  #configIndex = 0;
  /** Forwarded CA writes waiting for the roots loop's next pass. */
  readonly #caWaiters = new Set<() => void>();
  #loops: Promise<void>[] = [];

  constructor(opts: FederationOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#client = opts.primaryAddress === null ? null : new AgentClient(new URL(`http://${opts.primaryAddress}`), opts.replicationToken);
  }

  get isSecondary(): boolean {
    return this.#client !== null;
  }

  get primaryDatacenter(): string {
    return this.#o.primaryDatacenter;
  }

  start(): void {
    this.#loops.push(this.#stateLoop());
    if (this.#client === null) return;
    this.#loops.push(this.#caLoop(), this.#configLoop(), this.#statesLoop());
  }

  async stop(): Promise<void> {
    this.#stop.abort();
    await Promise.allSettled(this.#loops);
  }

  /** The agent API of a datacenter, from the federation states (the primary's is -join-wan). */
  addressOf(dc: string): string | null {
    const s = this.#o.store.get<FederationState>(FEDERATION_STATES, dc)?.value;
    if (s !== undefined) return s.Address;
    if (dc === this.#o.primaryDatacenter && this.#o.primaryAddress !== null) return this.#o.primaryAddress;
    return null;
  }

  /** Consul's `/v1/catalog/datacenters`: this one and every known one, sorted. */
  datacenters(): string[] {
    const names = new Set([this.#o.datacenter, this.#o.primaryDatacenter, ...this.#o.store.list<FederationState>(FEDERATION_STATES).map((e) => e.value.Datacenter)]);
    return [...names].sort();
  }

  states(): FederationState[] {
    return this.#o.store
      .list<FederationState>(FEDERATION_STATES)
      .map((e) => e.value)
      .sort((a, b) => (a.Datacenter < b.Datacenter ? -1 : 1));
  }

  status(): object {
    return {
      Datacenter: this.#o.datacenter,
      PrimaryDatacenter: this.#o.primaryDatacenter,
      Primary: this.#client === null,
      ...(this.#client === null ? {} : { PrimaryAddress: this.#o.primaryAddress, Replication: this.#status }),
    };
  }

  /** For metrics: each loop's index and last success (epoch seconds, 0 = never). */
  replicationSamples(): { type: string; index: number; lastSuccess: number }[] {
    if (this.#client === null) return [];
    return (Object.keys(this.#status) as LoopName[]).map((k) => {
      const s = this.#status[k];
      return { type: k, index: s.Index, lastSuccess: s.LastSuccess === null ? 0 : Date.parse(s.LastSuccess) / 1000 };
    });
  }

  /** Primary: stores a secondary's state (`PUT /v1/internal/meshd/federation-state`). */
  acceptState(body: unknown): void {
    if (this.#client !== null) throw new HttpError(400, `this agent is a secondary datacenter: federation states go to the primary (${this.#o.primaryDatacenter})`);
    const state = decodeFederationState(body);
    if (state.Datacenter === this.#o.datacenter) throw new HttpError(400, `Datacenter: ${state.Datacenter} is the primary's own; each datacenter sends only its own state`);
    if (!sameFederationState(this.#o.store.get<FederationState>(FEDERATION_STATES, state.Datacenter)?.value, state)) this.#o.store.put(FEDERATION_STATES, state.Datacenter, state);
  }

  /**
   * Secondary: forwards a write (config entry, intention, CA configuration) to the primary
   * with the caller's token, and answers with the primary's answer once this datacenter has
   * replicated it (at most WRITE_REPLICATION_WAIT_MS), so a read right after the write sees it.
   */
  async forwardWrite(req: IncomingMessage, res: ServerResponse, url: URL, kind: 'config' | 'ca'): Promise<void> {
    const address = this.#o.primaryAddress as string;
    const body = req.method === 'GET' || req.method === 'DELETE' ? '' : await readBody(req, MAX_BODY_BYTES);
    const headers: Record<string, string> = {};
    for (const h of ['x-consul-token', 'authorization', 'content-type']) {
      const v = req.headers[h];
      if (typeof v === 'string') headers[h] = v;
    }
    let answer: Response;
    try {
      answer = await fetch(new URL(`${url.pathname}${url.search}`, `http://${address}`), { method: req.method ?? 'PUT', headers, ...(body === '' ? {} : { body }), signal: AbortSignal.timeout(30_000) });
    } catch (err) {
      throw new HttpError(500, `rpc error: cannot forward the write to the primary datacenter ${this.#o.primaryDatacenter} at ${address}: ${describe(err)}`);
    }
    const text = await answer.text();
    if (answer.ok) {
      const deadline = this.#now() + WRITE_REPLICATION_WAIT_MS;
      try {
        if (kind === 'config') await this.#pullConfig(AbortSignal.timeout(WRITE_REPLICATION_WAIT_MS));
        else await this.#waitForCa(deadline);
      } catch (err) {
        this.#o.log(`[WARN] federation: a write forwarded to ${this.#o.primaryDatacenter} succeeded but is not replicated here yet: ${describe(err)}`);
      }
    }
    const out: Record<string, string> = {};
    answer.headers.forEach((v, k) => {
      if (!HOP_BY_HOP.has(k) && k !== 'content-length') out[k] = v;
    });
    out['content-length'] = String(Buffer.byteLength(text));
    res.writeHead(answer.status, out);
    res.end(text);
  }

  // --- loops ---

  #fail(loop: LoopName, err: unknown): void {
    const message = describe(err);
    const s = this.#status[loop];
    s.LastError = message;
    s.LastErrorAt = new Date(this.#now()).toISOString();
    const prev = this.#logged.get(loop);
    if (prev !== undefined && prev.message === message && this.#now() - prev.at < 60_000) return;
    this.#logged.set(loop, { message, at: this.#now() });
    const what = { ConfigEntries: 'replicating config entries from', FederationStates: 'replicating federation states from', Roots: 'replicating the CA (roots, intermediate) from', State: "sending this datacenter's federation state to" }[loop];
    this.#o.log(`[WARN] federation: ${what} the primary datacenter ${this.#o.primaryDatacenter} at ${this.#o.primaryAddress ?? ''} failed, retrying with backoff: ${message}`);
  }

  #ok(loop: LoopName, index: number): void {
    const s = this.#status[loop];
    if (this.#logged.has(loop)) {
      this.#logged.delete(loop);
      this.#o.log(`[INFO] federation: ${loop} replication from ${this.#o.primaryDatacenter} works again`);
    }
    s.Index = index;
    s.LastSuccess = new Date(this.#now()).toISOString();
    s.LastError = null;
  }

  /** Runs `step` until stopped: it returns the next index; failures back off. */
  async #loop(name: LoopName, step: (index: number, signal: AbortSignal) => Promise<number>): Promise<void> {
    const signal = this.#stop.signal;
    const backoff = new Backoff();
    let index = 0;
    while (!signal.aborted) {
      try {
        const next = await step(index, signal);
        // An index that went backwards: the primary's store was reset; read from the start.
        index = next < index ? 0 : next;
        backoff.reset();
      } catch (err) {
        if (signal.aborted) return;
        this.#fail(name, err);
        index = 0;
        await sleep(backoff.next(), signal);
      }
    }
  }

  /**
   * Both roles: computes this datacenter's state (agent address and passing mesh gateways)
   * when the catalog changes, stores it locally, and on a secondary sends it to the primary
   * (at start, on change, and every STATE_RESEND_MS).
   */
  #stateLoop(): Promise<void> {
    const o = this.#o;
    let sentAt = 0;
    let sent: FederationState | undefined;
    let retryAt = 0;
    const signal = this.#stop.signal;
    const backoff = new Backoff();
    return (async () => {
      while (!signal.aborted) {
        const catalogIndex = o.store.maxIndex([SERVICES, CHECKS]);
        const mine: FederationState = { Datacenter: o.datacenter, Address: o.selfAddress(), MeshGateways: localMeshGateways(o.services(), o.checks(), o.nodeAddress), UpdatedAt: new Date(this.#now()).toISOString() };
        const stored = o.store.get<FederationState>(FEDERATION_STATES, o.datacenter)?.value;
        const current = sameFederationState(stored, mine) ? (stored as FederationState) : mine;
        if (current === mine) o.store.put(FEDERATION_STATES, o.datacenter, mine);
        let waitMs = STATE_RESEND_MS;
        if (this.#client !== null) {
          const due = !sameFederationState(sent, current) || this.#now() - sentAt >= STATE_RESEND_MS;
          if (due && this.#now() >= retryAt) {
            try {
              await this.#client.request('PUT', '/v1/internal/meshd/federation-state', { body: current, signal });
              sent = current;
              sentAt = this.#now();
              backoff.reset();
              this.#ok('State', 0);
            } catch (err) {
              if (signal.aborted) return;
              this.#fail('State', err);
              retryAt = this.#now() + backoff.next();
            }
          }
          waitMs = Math.max(10, Math.min(STATE_RESEND_MS - (this.#now() - sentAt), retryAt > this.#now() ? retryAt - this.#now() : STATE_RESEND_MS));
        }
        await o.store.waitForChange([SERVICES, CHECKS], catalogIndex, waitMs, signal);
      }
    })();
  }

  /** Secondary: the primary's federation states (every datacenter's but our own). */
  #statesLoop(): Promise<void> {
    const client = this.#client as AgentClient;
    const o = this.#o;
    return this.#loop('FederationStates', async (index, signal) => {
      const r = await client.json<unknown>('GET', '/v1/internal/federation-states', { index, signal });
      if (!Array.isArray(r.value)) throw new Error('the primary\'s /v1/internal/federation-states answer is not a list');
      const states = (r.value as unknown[]).map((v, i) => decodeFederationState(v, `[${i}]`)).filter((s) => s.Datacenter !== o.datacenter);
      const want = new Map(states.map((s) => [s.Datacenter, s]));
      for (const e of o.store.list<FederationState>(FEDERATION_STATES)) {
        const dc = e.value.Datacenter;
        if (dc !== o.datacenter && !want.has(dc)) o.store.delete(FEDERATION_STATES, dc);
      }
      for (const s of states) {
        const cur = o.store.get<FederationState>(FEDERATION_STATES, s.Datacenter)?.value;
        if (cur === undefined || JSON.stringify(cur) !== JSON.stringify(s)) o.store.put(FEDERATION_STATES, s.Datacenter, s);
      }
      this.#ok('FederationStates', r.index);
      return r.index;
    });
  }

  /** Secondary: config entries (every kind, deletions included) by blocking query. */
  #configLoop(): Promise<void> {
    const client = this.#client as AgentClient;
    return this.#loop('ConfigEntries', async (index, signal) => {
      const r = await client.json<ConfigSnapshot>('GET', '/v1/internal/meshd/replication/config-entries', { index, signal });
      // An index below the one asked for means the primary was reset: take it whatever we hold.
      await this.#applyConfig(r.value, r.index, r.index < index);
      return r.index;
    });
  }

  /** One non-blocking pull (after a forwarded write). */
  async #pullConfig(signal: AbortSignal): Promise<void> {
    const client = this.#client as AgentClient;
    const r = await client.json<ConfigSnapshot>('GET', '/v1/internal/meshd/replication/config-entries', { signal });
    await this.#applyConfig(r.value, r.index, false);
  }

  /** Applies a snapshot unless a newer one is already in (a pull and the loop can cross). */
  async #applyConfig(snap: unknown, index: number, reset: boolean): Promise<void> {
    if (!reset && index <= this.#configIndex) return;
    this.#configIndex = index;
    const changed = applyConfigSnapshot(this.#o.store, this.#o.configTables, snap);
    if (changed.has(this.#o.intentionsTable)) await this.#o.onIntentionsChanged();
    this.#ok('ConfigEntries', index);
  }

  /**
   * Secondary: follows the primary's roots and CA configuration. A new intermediate is
   * obtained (key generated here, CSR signed by the primary) when there is none, when the
   * primary's active root changed (before the new ActiveRootID is served: proxies re-issue
   * on it, and their new leaves must chain to the new root), and at half its life.
   */
  #caLoop(): Promise<void> {
    const client = this.#client as AgentClient;
    const o = this.#o;
    return this.#loop('Roots', async (index, signal) => {
      // Wake at the intermediate's renewal point even if the roots do not change.
      const renewAt = o.ca.intermediateRenewAt();
      const wait = renewAt === null ? 60_000 : Math.max(1000, Math.min(60_000, renewAt - this.#now()));
      const roots = await client.json<unknown>('GET', '/v1/connect/ca/roots', { index, signal, wait: `${Math.ceil(wait / 1000)}s` });
      const cfg = await client.json<unknown>('GET', '/v1/connect/ca/configuration', { signal });
      await this.#syncCa(roots.value, cfg.value);
      o.onCaChanged?.();
      this.#ok('Roots', roots.index);
      for (const wake of [...this.#caWaiters]) wake();
      return roots.index;
    });
  }

  async #syncCa(rootsRaw: unknown, cfgRaw: unknown): Promise<void> {
    const o = this.#o;
    const roots = decodePrimaryRoots(rootsRaw);
    if (!o.ca.needsIntermediate(roots)) {
      await o.ca.adoptPrimary(rootsRaw, cfgRaw, null);
      return;
    }
    const cfg = decodeCaConfiguration(cfgRaw, defaultCaConfig());
    const { csrPem, keyPem } = await createIntermediateCsr({ trustDomain: roots.TrustDomain, privateKeyType: cfg.privateKeyType, privateKeyBits: cfg.privateKeyBits });
    const signed = await (this.#client as AgentClient).json<{ CertPEM?: unknown; RootID?: unknown }>('POST', '/v1/internal/meshd/ca/sign-intermediate', { body: { CSR: csrPem }, signal: this.#stop.signal });
    if (typeof signed.value.CertPEM !== 'string') throw new Error('the primary\'s sign-intermediate answer has no CertPEM');
    if (signed.value.RootID !== roots.ActiveRootID) throw new Error(`the primary rotated its root (now ${String(signed.value.RootID)}) while signing our intermediate; reading its roots again`);
    await o.ca.adoptPrimary(rootsRaw, cfgRaw, { certPem: signed.value.CertPEM, keyPem });
    const int = o.ca.intermediate;
    o.log(`[INFO] federation: new intermediate from ${o.primaryDatacenter} (root ${roots.ActiveRootID}), valid until ${int?.material.notAfter.toISOString() ?? '?'}; ${cfg.privateKeyType} ${cfg.privateKeyBits}`);
  }

  /** After a forwarded CA configuration write: waits for the roots loop's next pass. */
  #waitForCa(deadline: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(t);
        this.#caWaiters.delete(done);
        resolve();
      };
      const t = setTimeout(done, Math.max(0, deadline - this.#now()));
      this.#caWaiters.add(done);
    });
  }
}

/** One line for a failure: the agent's own message, or why the primary could not be reached. */
export function describe(err: unknown): string {
  if (err instanceof AgentUnreachable) {
    const m = /\(([^)]*)\)/.exec(err.message);
    return `unreachable (${m?.[1] ?? err.message})`;
  }
  if (err instanceof ApiError) {
    if (err.status === 403) return `HTTP 403 ${err.message} (give the secondary a token the primary accepts with -replication-token-file)`;
    return `HTTP ${err.status} ${err.message}`;
  }
  if (err instanceof FieldError) return `bad answer: ${err.message}`;
  // fetch's own failure says "fetch failed"; the reason is its cause.
  const cause = (err as { cause?: { code?: string; message?: string } } | null)?.cause;
  if (err instanceof TypeError && cause !== undefined) return `unreachable (${cause.code ?? cause.message ?? 'unknown'})`;
  return err instanceof Error ? err.message : String(err);
}
