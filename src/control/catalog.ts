// The service catalog: registrations and their TTL health checks, with Consul's JSON shapes
// (`PUT /v1/agent/service/register`, `GET /v1/health/connect/:service`).
// Runs on: the agent's control thread. Decoding happens here, at the edge; the store only
// ever holds validated registrations.

import type { Store } from './store.ts';
import {
  FieldError,
  type JsonObject,
  optNumber,
  optObject,
  optString,
  optStringMap,
  parseDuration,
  pick,
  reqString,
} from './decode.ts';

export const SERVICES = 'catalog/services';
export const CHECKS = 'catalog/checks';

/** Service names become SPIFFE path segments, so they use the segment alphabet. */
export const SERVICE_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

export type ServiceKind = '' | 'connect-proxy';
export type CheckStatus = 'passing' | 'warning' | 'critical';

export interface ProxyConfig {
  readonly DestinationServiceName: string;
  readonly DestinationServiceID: string;
  readonly LocalServiceAddress: string;
  readonly LocalServicePort: number;
}

export interface ServiceRecord {
  readonly ID: string;
  readonly Service: string;
  readonly Kind: ServiceKind;
  readonly Address: string;
  readonly Port: number;
  readonly Tags: string[];
  readonly Meta: Record<string, string>;
  readonly Proxy: ProxyConfig | null;
}

export interface CheckRecord {
  readonly CheckID: string;
  readonly Name: string;
  readonly ServiceID: string;
  readonly ServiceName: string;
  readonly Status: CheckStatus;
  readonly Output: string;
  readonly Type: 'ttl';
  readonly TTLMs: number;
  /** Epoch ms after which a TTL check that was not refreshed turns critical. */
  readonly ExpiresAt: number;
}

export interface NodeInfo {
  readonly Node: string;
  readonly Address: string;
  readonly Datacenter: string;
}

export interface Registration {
  readonly service: ServiceRecord;
  readonly check: Omit<CheckRecord, 'ExpiresAt'> | null;
}

const STATUSES: readonly CheckStatus[] = ['passing', 'warning', 'critical'];

/** Decodes a Consul `AgentServiceRegistration` body. */
export function decodeRegistration(body: JsonObject): Registration {
  const name = reqString(body, 'Name');
  if (!SERVICE_NAME_RE.test(name)) throw new FieldError('Name', 'must be 1-128 characters of letters, digits, ".", "_" or "-", starting with a letter or digit');
  // Consul: an empty ID means the service name.
  const id = optString(body, 'ID') || name;
  const kindRaw = optString(body, 'Kind') ?? '';
  if (kindRaw !== '' && kindRaw !== 'connect-proxy') throw new FieldError('Kind', `unsupported kind ${JSON.stringify(kindRaw)} (use "connect-proxy" or omit it)`);
  const kind: ServiceKind = kindRaw;
  const port = optNumber(body, 'Port') ?? 0;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new FieldError('Port', 'must be an integer 0..65535');
  const tagsRaw = pick(body, 'Tags');
  let tags: string[] = [];
  if (tagsRaw !== undefined && tagsRaw !== null) {
    if (!Array.isArray(tagsRaw) || tagsRaw.some((t) => typeof t !== 'string')) throw new FieldError('Tags', 'must be a list of strings');
    tags = tagsRaw as string[];
  }
  let proxy: ProxyConfig | null = null;
  const p = optObject(body, 'Proxy');
  if (kind === 'connect-proxy') {
    if (p === undefined) throw new FieldError('Proxy', 'is required when Kind is "connect-proxy"');
    const dest = reqString(p, 'DestinationServiceName', 'Proxy.DestinationServiceName');
    if (!SERVICE_NAME_RE.test(dest)) throw new FieldError('Proxy.DestinationServiceName', 'is not a valid service name');
    proxy = {
      DestinationServiceName: dest,
      DestinationServiceID: optString(p, 'DestinationServiceID', 'Proxy.DestinationServiceID') ?? dest,
      LocalServiceAddress: optString(p, 'LocalServiceAddress', 'Proxy.LocalServiceAddress') ?? '',
      LocalServicePort: optNumber(p, 'LocalServicePort', 'Proxy.LocalServicePort') ?? 0,
    };
  } else if (p !== undefined) {
    throw new FieldError('Proxy', 'is only valid with Kind "connect-proxy"');
  }
  const service: ServiceRecord = {
    ID: id,
    Service: name,
    Kind: kind,
    Address: optString(body, 'Address') ?? '',
    Port: port,
    Tags: tags,
    Meta: optStringMap(body, 'Meta') ?? {},
    Proxy: proxy,
  };

  const many = pick(body, 'Checks');
  if (many !== undefined && many !== null && !(Array.isArray(many) && many.length === 0)) {
    throw new FieldError('Checks', 'is not supported: register one TTL check with "Check"');
  }
  let check: Registration['check'] = null;
  const c = optObject(body, 'Check');
  if (c !== undefined) {
    const ttl = optString(c, 'TTL', 'Check.TTL');
    if (ttl === undefined) throw new FieldError('Check.TTL', 'is required (this agent runs TTL checks only)');
    const ttlMs = parseDuration(ttl, 'Check.TTL');
    if (ttlMs < 1000) throw new FieldError('Check.TTL', 'must be at least 1s');
    const status = (optString(c, 'Status', 'Check.Status') || 'critical') as CheckStatus;
    if (!STATUSES.includes(status)) throw new FieldError('Check.Status', 'must be passing, warning or critical');
    check = {
      CheckID: optString(c, 'CheckID', 'Check.CheckID') ?? `service:${id}`,
      Name: optString(c, 'Name', 'Check.Name') ?? `Service '${name}' check`,
      ServiceID: id,
      ServiceName: name,
      Status: status,
      Output: '',
      Type: 'ttl',
      TTLMs: ttlMs,
    };
  }
  return { service, check };
}

export class Catalog {
  readonly #store: Store;
  readonly #node: NodeInfo;
  readonly #now: () => number;

  constructor(store: Store, node: NodeInfo, now: () => number) {
    this.#store = store;
    this.#node = node;
    this.#now = now;
  }

  get node(): NodeInfo {
    return this.#node;
  }

  register(reg: Registration): void {
    // Re-registration replaces the service's checks, as Consul's agent does.
    for (const c of this.#store.list<CheckRecord>(CHECKS)) {
      if (c.value.ServiceID === reg.service.ID && c.value.CheckID !== reg.check?.CheckID) this.#store.delete(CHECKS, c.value.CheckID);
    }
    this.#store.put(SERVICES, reg.service.ID, reg.service);
    if (reg.check !== null) this.#store.put(CHECKS, reg.check.CheckID, { ...reg.check, ExpiresAt: this.#now() + reg.check.TTLMs });
  }

  deregister(serviceId: string): boolean {
    if (this.#store.get(SERVICES, serviceId) === undefined) return false;
    for (const c of this.#store.list<CheckRecord>(CHECKS)) if (c.value.ServiceID === serviceId) this.#store.delete(CHECKS, c.value.CheckID);
    this.#store.delete(SERVICES, serviceId);
    return true;
  }

  /** `PUT /v1/agent/check/{pass,warn,fail}/:id`: refreshes a TTL check. */
  updateCheck(checkId: string, status: CheckStatus, output: string): boolean {
    const c = this.#store.get<CheckRecord>(CHECKS, checkId);
    if (c === undefined) return false;
    this.#store.put(CHECKS, checkId, { ...c.value, Status: status, Output: output, ExpiresAt: this.#now() + c.value.TTLMs });
    return true;
  }

  /** Turns expired TTL checks critical; called by the agent's sweep timer. */
  expireChecks(): number {
    const now = this.#now();
    let changed = 0;
    for (const c of this.#store.list<CheckRecord>(CHECKS)) {
      if (c.value.Status !== 'critical' && c.value.ExpiresAt <= now) {
        this.#store.put(CHECKS, c.value.CheckID, { ...c.value, Status: 'critical', Output: 'TTL expired' });
        changed++;
      }
    }
    return changed;
  }

  services(): ServiceRecord[] {
    return this.#store.list<ServiceRecord>(SERVICES).map((e) => e.value);
  }

  /**
   * Consul's `/v1/health/connect/:service` (sidecars of a service) or
   * `/v1/health/service/:service` shapes: [{Node, Service, Checks}].
   */
  health(name: string, connect: boolean, passingOnly: boolean): object[] {
    const checks = this.#store.list<CheckRecord>(CHECKS).map((e) => e.value);
    const out: object[] = [];
    for (const e of this.#store.list<ServiceRecord>(SERVICES)) {
      const s = e.value;
      const match = connect ? s.Kind === 'connect-proxy' && s.Proxy?.DestinationServiceName === name : s.Service === name;
      if (!match) continue;
      const own = checks.filter((c) => c.ServiceID === s.ID);
      if (passingOnly && own.some((c) => c.Status !== 'passing')) continue;
      out.push({
        Node: { ID: '', Node: this.#node.Node, Address: this.#node.Address, Datacenter: this.#node.Datacenter, TaggedAddresses: null, Meta: {} },
        Service: {
          ID: s.ID,
          Service: s.Service,
          Kind: s.Kind,
          Tags: s.Tags,
          Address: s.Address,
          Port: s.Port,
          Meta: s.Meta,
          Proxy: s.Proxy,
          Namespace: 'default',
          Datacenter: this.#node.Datacenter,
          CreateIndex: e.createIndex,
          ModifyIndex: e.modifyIndex,
        },
        Checks: [
          { Node: this.#node.Node, CheckID: 'serfHealth', Name: 'Serf Health Status', Status: 'passing', ServiceID: '', ServiceName: '', Output: 'Agent alive and reachable', Type: '' },
          ...own.map((c) => ({ Node: this.#node.Node, CheckID: c.CheckID, Name: c.Name, Status: c.Status, ServiceID: c.ServiceID, ServiceName: c.ServiceName, Output: c.Output, Type: c.Type })),
        ],
      });
    }
    return out;
  }
}
