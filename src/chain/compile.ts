// The discovery-chain compiler (consul-mesh.md §3.1): config entries in, for one upstream
// service, (a) Consul's compiled chain as `GET /v1/discovery-chain/:service` returns it and
// (b) the data plane's form (./types.ts). A pure function: no clock, no I/O; it runs on the
// control thread whenever an entry changes, never per request.
//
// It follows Consul's compiler (agent/consul/discoverychain/compile.go), namespace "default",
// partition "default", across federated datacenters:
// - Datacenters: the chain is evaluated in the upstream's datacenter (`-upstream NAME@DC`,
//   an upstream's Datacenter; Consul's EvaluateInDatacenter), the local one by default; a
//   resolver's Redirect.Datacenter, Failover.Datacenters and Failover.Targets[].Datacenter
//   move a target to another one. Each target carries its SNI
//   (`[<subset>.]<service>.default.<dc>.internal.<trust-domain>`) and, for another
//   datacenter, how to get there: its mesh-gateway mode (meshGatewayModeFor).
// - Protocol: the service's service-defaults Protocol, else tcp (meshd has no proxy-defaults).
//   Every service the chain reaches must have the same protocol (else an error, as in Consul).
//   An override (the downstream's UpstreamConfig Protocol, or opts.overrideProtocol) replaces
//   the reported protocol; a non-http-like override, like a tcp service, disables routers
//   and splitters: the chain is its resolver only.
// - Start node: the router if there is one, else the splitter, else the resolver. Routes keep
//   their order, and a catch-all route to the service itself is appended. A destination or
//   split naming only a Service continues to that service's splitter (if any), then its
//   resolver; one naming a ServiceSubset goes straight to the resolver.
// - Nested splitters are flattened: weights multiply, in integer basis points. The splits a
//   parent split expands into sum to exactly the parent's weight: each child but the first
//   gets floor(parent * child / 10000), the first gets what is left (the "remainder to the
//   first split" rule, which also keeps every weight non-negative). Header modifiers merge:
//   the child's request modifiers override the parent's, the parent's response modifiers
//   override the child's. Splitter cycles are an error.
// - Resolvers: Redirect is followed (each resolver's redirect applies once; a redirect that
//   comes back to a target already visited is an error), then DefaultSubset. A subset that
//   the target's resolver does not define is an error naming the entry that asked for it
//   (Consul refuses such entries at write time; meshd refuses them when compiling, since
//   entries may be written in any order, and the API reports it as a 400 for the chain).
//   ConnectTimeout defaults to 5 s (an override replaces it everywhere).
// - Failover (the target's subset's entry, else "*"): Service/ServiceSubset, Datacenters or
//   Targets, each rewritten from the primary target and resolved (redirects, default
//   subsets); the primary itself and repeats are dropped, so no target appears twice.
// - Limits and passive health checks come from the downstream's service-defaults
//   UpstreamConfig (Defaults, with the Override naming this upstream laid over them), with
//   Envoy's defaults where unset.

import { createHash } from 'node:crypto';
import { FieldError, type JsonObject } from '../control/decode.ts';
import type { ConfigEntry, ServiceDefaultsEntry, ServiceResolverEntry, ServiceRouterEntry, ServiceSplitterEntry } from '../config/entries.ts';
import { resolveUpstreamConfig } from '../config/service-defaults.ts';
import { encodeResolverLoadBalancer, type ResolverLoadBalancer } from '../config/service-resolver.ts';
import type { ProxyDefaultsEntry } from '../config/proxy-defaults.ts';
import { encodeServiceRoute, formatDuration, type ServiceRoute } from '../config/service-router.ts';
import { basisPointsToWeight, encodeServiceSplit, TOTAL_WEIGHT_BP, type ServiceSplit } from '../config/service-splitter.ts';
import { DEFAULT_PASSIVE_HEALTH_CHECK } from './types.ts';
import type {
  MeshGatewayMode,
  ChainProtocol,
  ChainRoute,
  ChainSplit,
  ChainTarget,
  DataPlaneChain,
  HeaderModifiers,
  LoadBalancerSpec,
  PassiveHealthCheck,
  RouteAction,
  UpstreamLimits,
} from './types.ts';

/**
 * A chain that cannot be compiled from the entries as they are. `field` names the entry and
 * the field that asked for the impossible, as `<kind>/<name>.<field>`.
 */
export class ChainCompileError extends FieldError {}

export type CompileOptions = {
  /** The local datacenter (the agent's). */
  readonly datacenter: string;
  /** Where the chain is evaluated (Consul's EvaluateInDatacenter): the upstream's Datacenter; the local one when absent. */
  readonly evaluateInDatacenter?: string;
  /** The mode an upstream definition or the proxy's own config sets; '' or absent: not set. */
  readonly overrideMeshGatewayMode?: '' | MeshGatewayMode;
  /** The service whose upstream this is: its service-defaults UpstreamConfig applies. */
  readonly downstream?: string;
  /** The CA's trust domain (`<cluster-id>.consul`): targets get SNI and Name only with it. */
  readonly trustDomain?: string;
  /** POST /v1/discovery-chain's OverrideProtocol (wins over the downstream's UpstreamConfig). */
  readonly overrideProtocol?: ChainProtocol;
  /** POST /v1/discovery-chain's OverrideConnectTimeout, in ms (wins over UpstreamConfig). */
  readonly overrideConnectTimeoutMs?: number;
};

export type CompiledChain = {
  /** `{Chain: {…}}` as Consul's `GET /v1/discovery-chain/:service` returns it. */
  readonly consul: JsonObject;
  readonly dataPlane: DataPlaneChain;
};

export const DEFAULT_CONNECT_TIMEOUT_MS = 5000;
export const DEFAULT_CHOICE_COUNT = 2;
export const DEFAULT_MIN_RING_SIZE = 1024;
export const DEFAULT_MAX_RING_SIZE = 8_388_608;

const NAMESPACE = 'default';
const PARTITION = 'default';

function isHttpLike(p: string): boolean {
  return p === 'http' || p === 'http2' || p === 'grpc';
}

function noHeaders(): HeaderModifiers {
  return { add: {}, set: {}, remove: [] };
}

function copyHeaders(m: HeaderModifiers): HeaderModifiers {
  return { add: { ...m.add }, set: { ...m.set }, remove: [...m.remove] };
}

/** Consul's MergeHTTPHeaderModifiers: `overrides` wins on Add and Set; Remove is the union. */
export function mergeHeaderModifiers(base: HeaderModifiers, overrides: HeaderModifiers): HeaderModifiers {
  const remove = [...base.remove];
  for (const r of overrides.remove) if (!remove.includes(r)) remove.push(r);
  return { add: { ...base.add, ...overrides.add }, set: { ...base.set, ...overrides.set }, remove };
}

/**
 * Splits `total` basis points in the proportions `weights` (basis points of 10000): each
 * but the first gets floor(total * w / 10000), the first gets the rest, so the parts are
 * non-negative and sum to exactly `total`.
 */
export function distributeWeight(total: number, weights: readonly number[]): number[] {
  const parts = weights.map((w, i) => (i === 0 ? 0 : Math.floor((total * w) / TOTAL_WEIGHT_BP)));
  if (parts.length > 0) parts[0] = total - parts.reduce((a, b) => a + b, 0);
  return parts;
}

// ---------------------------------------------------------------------------------------
// The compiler's graph (Consul's DiscoveryGraphNode)

type Target = {
  readonly id: string;
  readonly service: string;
  readonly subset: string;
  readonly datacenter: string;
  /** Set when the target is resolved. */
  resolver: ServiceResolverEntry | null;
  connectTimeoutMs: number;
};

type SplitDef = Pick<ServiceSplit, 'weightBp' | 'service' | 'serviceSubset' | 'requestHeaders' | 'responseHeaders'>;

type RouterNode = { readonly type: 'router'; readonly name: string; readonly routes: { definition: ServiceRoute | null; nextNode: string }[] };
type SplitterNode = {
  readonly type: 'splitter';
  readonly name: string;
  splits: { definition: SplitDef; weightBp: number; nextNode: string }[];
  loadBalancer: ResolverLoadBalancer | null;
};
type ResolverNode = {
  readonly type: 'resolver';
  readonly name: string;
  readonly isDefault: boolean;
  readonly target: string;
  readonly connectTimeoutMs: number;
  readonly requestTimeoutMs: number;
  failover: { targets: string[]; policyMode: string } | null;
  readonly loadBalancer: ResolverLoadBalancer | null;
};
type Node = RouterNode | SplitterNode | ResolverNode;

function nodeKey(n: Node): string {
  return `${n.type}:${n.name}`;
}

function targetId(service: string, subset: string, datacenter: string): string {
  return `${subset === '' ? '' : `${subset}.`}${service}.${NAMESPACE}.${PARTITION}.${datacenter}`;
}

function isDefaultResolver(r: ServiceResolverEntry | null): boolean {
  return (
    r === null ||
    (r.defaultSubset === '' && Object.keys(r.subsets).length === 0 && r.redirect === null && Object.keys(r.failover).length === 0 &&
      r.connectTimeoutMs === 0 && r.requestTimeoutMs === 0 && r.loadBalancer === null)
  );
}

function isHashBased(lb: ResolverLoadBalancer | null): boolean {
  return lb !== null && (lb.policy === 'ring_hash' || lb.policy === 'maglev');
}

function byKey(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

class Compiler {
  readonly #service: string;
  readonly #dc: string;
  readonly #routers = new Map<string, ServiceRouterEntry>();
  readonly #splitters = new Map<string, ServiceSplitterEntry>();
  readonly #resolvers = new Map<string, ServiceResolverEntry>();
  readonly #defaults = new Map<string, ServiceDefaultsEntry>();
  readonly #overrideConnectTimeoutMs: number;
  #advanced = true;
  #protocol = '';

  readonly nodes = new Map<string, Node>();
  readonly #splitterNodes = new Map<string, SplitterNode>();
  readonly #resolverNodes = new Map<string, ResolverNode>();
  readonly targets = new Map<string, Target>();
  readonly retained = new Set<string>();
  startNode = '';

  constructor(entries: readonly ConfigEntry[], service: string, datacenter: string, overrideConnectTimeoutMs: number) {
    this.#service = service;
    this.#dc = datacenter;
    this.#overrideConnectTimeoutMs = overrideConnectTimeoutMs;
    for (const e of entries) {
      if (e.kind === 'service-router') this.#routers.set(e.name, e);
      else if (e.kind === 'service-splitter') this.#splitters.set(e.name, e);
      else if (e.kind === 'service-resolver') this.#resolvers.set(e.name, e);
      else if (e.kind === 'service-defaults') this.#defaults.set(e.name, e);
    }
  }

  defaultsOf(service: string): ServiceDefaultsEntry | null {
    return this.#defaults.get(service) ?? null;
  }

  protocolOf(service: string): string {
    return this.#defaults.get(service)?.protocol ?? 'tcp';
  }

  get protocol(): string {
    return this.#protocol;
  }

  #recordProtocol(service: string, via: string): void {
    const p = this.protocolOf(service);
    if (this.#protocol === '') this.#protocol = p;
    else if (this.#protocol !== p) {
      throw new ChainCompileError(via, `discovery chain ${JSON.stringify(this.#service)} uses inconsistent protocols; service ${JSON.stringify(service)} has ${JSON.stringify(p)} which is not ${JSON.stringify(this.#protocol)}`);
    }
  }

  #target(service: string, subset: string, datacenter = this.#dc): Target {
    const id = targetId(service, subset, datacenter);
    let t = this.targets.get(id);
    if (t === undefined) {
      t = { id, service, subset, datacenter, resolver: null, connectTimeoutMs: 0 };
      this.targets.set(id, t);
    }
    return t;
  }

  /** Consul's rewriteTarget: a new service resets the subset; a datacenter, when given, replaces the target's. */
  #rewrite(t: Target, opts: { service: string; serviceSubset: string; datacenter?: string }): Target {
    let service = t.service;
    let subset = t.subset;
    if (opts.service !== '' && opts.service !== service) {
      service = opts.service;
      subset = '';
    }
    if (opts.serviceSubset !== '') subset = opts.serviceSubset;
    return this.#target(service, subset, opts.datacenter === undefined || opts.datacenter === '' ? t.datacenter : opts.datacenter);
  }

  #record(n: Node): void {
    this.nodes.set(nodeKey(n), n);
    if (n.type === 'splitter') this.#splitterNodes.set(n.name, n);
    if (n.type === 'resolver') this.#resolverNodes.set(n.target, n);
  }

  #resolverFor(service: string): ServiceResolverEntry | null {
    return this.#resolvers.get(service) ?? null;
  }

  compile(overrideProtocol: string): void {
    const root = this.#service;
    const rootVia = `discovery chain ${root}`;
    this.#recordProtocol(root, rootVia);
    this.#advanced = isHttpLike(this.#protocol) && (overrideProtocol === '' || isHttpLike(overrideProtocol));
    const router = this.#advanced ? (this.#routers.get(root) ?? null) : null;
    if (router === null) {
      this.startNode = nodeKey(this.#splitterOrResolver(this.#target(root, ''), rootVia));
    } else {
      const node: RouterNode = { type: 'router', name: `${root}.${NAMESPACE}.${PARTITION}`, routes: [] };
      router.routes.forEach((route, i) => {
        const d = route.destination;
        const svc = d.service === '' ? root : d.service;
        const via = `service-router/${root}.Routes[${i}].Destination`;
        const next = d.serviceSubset === '' ? this.#splitterOrResolver(this.#target(svc, ''), via) : this.#resolve(this.#target(svc, d.serviceSubset), false, `${via}.ServiceSubset`);
        node.routes.push({ definition: route, nextNode: nodeKey(next) });
      });
      const fallback = this.#splitterOrResolver(this.#target(root, ''), `service-router/${root}`);
      node.routes.push({ definition: null, nextNode: nodeKey(fallback) });
      this.#record(node);
      this.startNode = nodeKey(node);
    }
    this.#detectCycles();
    this.#flattenSplitters();
    this.#removeUnused();
  }

  #splitterOrResolver(t: Target, via: string): SplitterNode | ResolverNode {
    return this.#splitter(t.service) ?? this.#resolve(t, false, via);
  }

  #splitter(service: string): SplitterNode | null {
    if (!this.#advanced) return null;
    const name = `${service}.${NAMESPACE}.${PARTITION}`;
    const cached = this.#splitterNodes.get(name);
    if (cached !== undefined) return cached;
    const entry = this.#splitters.get(service);
    if (entry === undefined) return null;
    const node: SplitterNode = { type: 'splitter', name, splits: [], loadBalancer: null };
    // Recorded before recursing, so a loop comes back to this node (and is reported below).
    this.#record(node);
    entry.splits.forEach((split, i) => {
      const svc = split.service === '' ? service : split.service;
      if (svc !== service && split.serviceSubset === '') {
        const nested = this.#splitter(svc);
        if (nested !== null) {
          node.splits.push({ definition: split, weightBp: split.weightBp, nextNode: nodeKey(nested) });
          return;
        }
      }
      const via = `service-splitter/${service}.Splits[${i}]${split.serviceSubset === '' ? '' : '.ServiceSubset'}`;
      const r = this.#resolve(this.#target(svc, split.serviceSubset), false, via);
      node.splits.push({ definition: split, weightBp: split.weightBp, nextNode: nodeKey(r) });
      // One route action can carry one set of hash policies: the first hash-based balancer wins.
      if (node.loadBalancer === null && isHashBased(r.loadBalancer)) node.loadBalancer = r.loadBalancer;
    });
    return node;
  }

  #resolve(start: Target, forFailover: boolean, startVia: string): ResolverNode {
    let target = start;
    let via = startVia;
    const history: string[] = [];
    for (;;) {
      const cached = this.#resolverNodes.get(target.id);
      if (cached !== undefined) return cached;
      this.#recordProtocol(target.service, via);
      const resolver = this.#resolverFor(target.service);
      if (history.includes(target.id)) {
        throw new ChainCompileError(via, `detected circular resolver redirect: [${[...history, target.id].join(' -> ')}]`);
      }
      history.push(target.id);
      if (resolver?.redirect) {
        const next = this.#rewrite(target, resolver.redirect);
        if (next.id !== target.id) {
          target = next;
          via = `service-resolver/${resolver.name}.Redirect`;
          continue;
        }
      }
      if (target.subset === '' && resolver !== null && resolver.defaultSubset !== '') {
        target = this.#rewrite(target, { service: '', serviceSubset: resolver.defaultSubset });
        via = `service-resolver/${resolver.name}.DefaultSubset`;
        continue;
      }
      if (target.subset !== '' && !(resolver !== null && Object.hasOwn(resolver.subsets, target.subset))) {
        throw new ChainCompileError(via, `service ${JSON.stringify(target.service)} does not have a subset named ${JSON.stringify(target.subset)}${resolver === null ? ' (it has no service-resolver)' : ''}`);
      }
      return this.#resolverNode(target, resolver, forFailover);
    }
  }

  #resolverNode(target: Target, resolver: ServiceResolverEntry | null, forFailover: boolean): ResolverNode {
    const sd = this.defaultsOf(target.service);
    if (sd !== null && sd.externalSni !== '' && resolver !== null) {
      const what = resolver.redirect !== null ? 'redirects' : Object.keys(resolver.subsets).length > 0 ? 'subsets' : Object.keys(resolver.failover).length > 0 ? 'failover' : '';
      if (what !== '') {
        throw new ChainCompileError(`service-resolver/${resolver.name}`, `service ${JSON.stringify(target.service)} has an external SNI set; cannot define ${what} for external services`);
      }
    }
    let connectTimeoutMs = resolver !== null && resolver.connectTimeoutMs > 0 ? resolver.connectTimeoutMs : DEFAULT_CONNECT_TIMEOUT_MS;
    if (this.#overrideConnectTimeoutMs > 0) connectTimeoutMs = this.#overrideConnectTimeoutMs;
    target.resolver = resolver;
    target.connectTimeoutMs = connectTimeoutMs;
    const node: ResolverNode = {
      type: 'resolver',
      name: target.id,
      isDefault: isDefaultResolver(resolver),
      target: target.id,
      connectTimeoutMs,
      requestTimeoutMs: resolver?.requestTimeoutMs ?? 0,
      failover: null,
      loadBalancer: resolver?.loadBalancer ?? null,
    };
    this.retained.add(target.id);
    // A failover target's own failover is not followed (Consul's failover is one level).
    if (forFailover) return node;
    this.#record(node);
    if (resolver === null) return node;
    const key = Object.hasOwn(resolver.failover, target.subset) ? target.subset : Object.hasOwn(resolver.failover, '*') ? '*' : null;
    if (key === null) return node;
    const f = resolver.failover[key];
    if (f === undefined) return node;
    const via = `service-resolver/${resolver.name}.Failover.${key}`;
    const candidates: { t: Target; via: string }[] = [];
    if (f.datacenters.length > 0) {
      // The same service (or Service/ServiceSubset) in each datacenter, in order.
      f.datacenters.forEach((dc, i) => candidates.push({ t: this.#rewrite(target, { service: f.service, serviceSubset: f.serviceSubset, datacenter: dc }), via: `${via}.Datacenters[${i}]` }));
    } else if (f.targets.length > 0) {
      f.targets.forEach((t, i) => candidates.push({ t: this.#rewrite(target, t), via: `${via}.Targets[${i}]` }));
    } else {
      candidates.push({ t: this.#rewrite(target, f), via });
    }
    const ids: string[] = [];
    for (const c of candidates) {
      if (c.t.id === target.id) continue;
      const resolved = this.#resolve(c.t, true, c.via).target;
      if (resolved !== target.id && !ids.includes(resolved)) ids.push(resolved);
    }
    if (ids.length > 0) node.failover = { targets: ids, policyMode: f.policyMode };
    return node;
  }

  #next(key: string): Node[] {
    const n = this.nodes.get(key);
    if (n === undefined) return [];
    if (n.type === 'router') return n.routes.map((r) => this.nodes.get(r.nextNode)).filter((x) => x !== undefined);
    if (n.type === 'splitter') return n.splits.map((s) => this.nodes.get(s.nextNode)).filter((x) => x !== undefined);
    return [];
  }

  #detectCycles(): void {
    const onPath: string[] = [];
    const done = new Set<string>();
    const visit = (key: string): void => {
      const at = onPath.indexOf(key);
      if (at >= 0) {
        const loop = [...onPath.slice(at), key];
        const first = this.nodes.get(loop[0] as string);
        throw new ChainCompileError(`service-splitter/${first?.name.split('.')[0] ?? key}.Splits`, `detected circular reference: [${loop.join(' -> ')}]`);
      }
      if (done.has(key)) return;
      onPath.push(key);
      for (const n of this.#next(key)) visit(nodeKey(n));
      onPath.pop();
      done.add(key);
    };
    visit(this.startNode);
  }

  #flattenSplitters(): void {
    const flat = new Map<string, SplitterNode['splits']>();
    const expand = (node: SplitterNode, totalBp: number, parent: SplitDef | null, out: SplitterNode['splits']): void => {
      const parts = distributeWeight(totalBp, node.splits.map((s) => s.weightBp));
      node.splits.forEach((s, i) => {
        const weightBp = parts[i] as number;
        // Consul's MergeParent: child request headers override, parent response headers override.
        const definition: SplitDef =
          parent === null
            ? s.definition
            : {
                ...s.definition,
                requestHeaders: mergeHeaderModifiers(parent.requestHeaders, s.definition.requestHeaders),
                responseHeaders: mergeHeaderModifiers(s.definition.responseHeaders, parent.responseHeaders),
              };
        const next = this.nodes.get(s.nextNode);
        if (next?.type === 'splitter') expand(next, weightBp, definition, out);
        else out.push({ definition, weightBp, nextNode: s.nextNode });
      });
    };
    for (const n of this.nodes.values()) {
      if (n.type !== 'splitter') continue;
      const out: SplitterNode['splits'] = [];
      expand(n, TOTAL_WEIGHT_BP, null, out);
      flat.set(n.name, out);
    }
    for (const [name, splits] of flat) {
      const n = this.#splitterNodes.get(name);
      if (n !== undefined) n.splits = splits;
    }
  }

  #removeUnused(): void {
    const seen = new Set<string>();
    const todo = [this.startNode];
    for (let key = todo.pop(); key !== undefined; key = todo.pop()) {
      if (seen.has(key)) continue;
      seen.add(key);
      for (const n of this.#next(key)) todo.push(nodeKey(n));
    }
    for (const key of [...this.nodes.keys()]) if (!seen.has(key)) this.nodes.delete(key);
  }
}

// ---------------------------------------------------------------------------------------
// Output

/**
 * The mesh-gateway mode of a target ('' = none set, which means none): what the upstream
 * definition or the proxy's own config set, else the downstream's service-defaults, else the
 * target service's service-defaults, else proxy-defaults. (Consul folds the first three into the
 * compile's override and lets proxy-defaults fill an unset one; it only matters for targets in
 * another datacenter, where the proxy dials the destination directly (none), a mesh gateway of
 * its own datacenter (local) or one of the destination's (remote).)
 */
export function meshGatewayModeFor(override: '' | MeshGatewayMode, target: ServiceDefaultsEntry | null, proxyDefaults: ProxyDefaultsEntry | null): '' | MeshGatewayMode {
  if (override !== '') return override;
  if (target !== null && target.meshGatewayMode !== '') return target.meshGatewayMode;
  return proxyDefaults?.meshGatewayMode ?? '';
}

function sni(t: Target, trustDomain: string): string {
  return `${t.subset === '' ? '' : `${t.subset}.`}${t.service}.${NAMESPACE}.${t.datacenter}.internal.${trustDomain}`;
}

function loadBalancerSpec(lb: ResolverLoadBalancer | null): LoadBalancerSpec {
  return {
    policy: lb === null || lb.policy === '' ? 'round_robin' : lb.policy,
    choiceCount: lb?.leastRequestConfig?.choiceCount || DEFAULT_CHOICE_COUNT,
    minimumRingSize: lb?.ringHashConfig?.minimumRingSize || DEFAULT_MIN_RING_SIZE,
    maximumRingSize: lb?.ringHashConfig?.maximumRingSize || DEFAULT_MAX_RING_SIZE,
    hashPolicies: (lb?.hashPolicies ?? []).map((h) => ({
      field: h.field,
      fieldValue: h.fieldValue,
      sourceIp: h.sourceIp,
      terminal: h.terminal,
      cookie: h.cookieConfig === null ? null : { session: h.cookieConfig.session, ttlMs: h.cookieConfig.ttlMs, path: h.cookieConfig.path },
    })),
  };
}

function defaultAction(splits: ChainSplit[]): RouteAction {
  return {
    splits,
    prefixRewrite: '',
    requestTimeoutMs: 0,
    idleTimeoutMs: 0,
    numRetries: 0,
    retryOnConnectFailure: false,
    retryOn: [],
    retryOnStatusCodes: [],
    requestHeaders: noHeaders(),
    responseHeaders: noHeaders(),
  };
}

function encodeNode(n: Node, catchAll: JsonObject): JsonObject {
  if (n.type === 'router') {
    return {
      Type: 'router',
      Name: n.name,
      Routes: n.routes.map((r) => ({ Definition: r.definition === null ? catchAll : encodeServiceRoute(r.definition), NextNode: r.nextNode })),
    };
  }
  if (n.type === 'splitter') {
    const out: JsonObject = {
      Type: 'splitter',
      Name: n.name,
      Splits: n.splits.map((s) => {
        const o: JsonObject = { Definition: encodeServiceSplit(s.definition) };
        if (s.weightBp !== 0) o.Weight = basisPointsToWeight(s.weightBp);
        o.NextNode = s.nextNode;
        return o;
      }),
    };
    if (n.loadBalancer !== null) out.LoadBalancer = encodeResolverLoadBalancer(n.loadBalancer);
    return out;
  }
  const resolver: JsonObject = {};
  if (n.isDefault) resolver.Default = true;
  resolver.ConnectTimeout = formatDuration(n.connectTimeoutMs);
  // A time.Duration without string marshalling in Consul: nanoseconds.
  if (n.requestTimeoutMs !== 0) resolver.RequestTimeout = Math.round(n.requestTimeoutMs * 1e6);
  resolver.Target = n.target;
  if (n.failover !== null) resolver.Failover = { Targets: [...n.failover.targets], ...(n.failover.policyMode === '' ? {} : { Policy: { Mode: n.failover.policyMode } }) };
  const out: JsonObject = { Type: 'resolver', Name: n.name, Resolver: resolver };
  if (n.loadBalancer !== null) out.LoadBalancer = encodeResolverLoadBalancer(n.loadBalancer);
  return out;
}

/**
 * Compiles the discovery chain of `service` from `entries` (every config entry; other kinds
 * are ignored; a later entry of the same kind and name replaces an earlier one). Throws
 * ChainCompileError (a FieldError) when the entries cannot make a chain.
 */
export function compileChain(entries: readonly ConfigEntry[], service: string, opts: CompileOptions): CompiledChain {
  const downstreamDefaults = opts.downstream === undefined ? undefined : entries.findLast((e): e is ServiceDefaultsEntry => e.kind === 'service-defaults' && e.name === opts.downstream);
  const upstreamCfg = resolveUpstreamConfig(downstreamDefaults?.upstreamConfig ?? null, service);
  const overrideProtocol = opts.overrideProtocol ?? upstreamCfg?.protocol ?? '';
  const overrideConnectTimeoutMs = opts.overrideConnectTimeoutMs ?? upstreamCfg?.connectTimeoutMs ?? 0;

  const c = new Compiler(entries, service, opts.evaluateInDatacenter || opts.datacenter, overrideConnectTimeoutMs);
  const proxyDefaults = entries.findLast((e): e is ProxyDefaultsEntry => e.kind === 'proxy-defaults') ?? null;
  const meshGatewayOverride = opts.overrideMeshGatewayMode || downstreamDefaults?.meshGatewayMode || '';
  c.compile(overrideProtocol);
  const customized = { protocol: overrideProtocol !== '' && overrideProtocol !== c.protocol, connectTimeout: overrideConnectTimeoutMs > 0 };
  const protocol = (overrideProtocol !== '' ? overrideProtocol : c.protocol) as ChainProtocol;

  // Targets, in ID order.
  const targetIds = [...c.retained].sort(byKey);
  const failoverOf = new Map<string, readonly string[]>();
  for (const n of c.nodes.values()) if (n.type === 'resolver' && n.failover !== null) failoverOf.set(n.target, n.failover.targets);
  const dpTargets: Record<string, ChainTarget> = {};
  const consulTargets: Record<string, unknown> = {};
  for (const id of targetIds) {
    const t = c.targets.get(id) as Target;
    const subset = t.subset === '' ? null : (t.resolver?.subsets[t.subset] ?? null);
    const sd = c.defaultsOf(t.service);
    const external = sd !== null && sd.externalSni !== '';
    const mode = meshGatewayModeFor(meshGatewayOverride, sd, proxyDefaults);
    dpTargets[id] = {
      id,
      service: t.service,
      subset: t.subset,
      datacenter: t.datacenter,
      sni: external ? sd.externalSni : opts.trustDomain === undefined ? '' : sni(t, opts.trustDomain),
      meshGatewayMode: mode === '' ? 'none' : mode,
      filter: subset?.filter ?? '',
      onlyPassing: subset?.onlyPassing ?? false,
      connectTimeoutMs: t.connectTimeoutMs,
      requestTimeoutMs: t.resolver?.requestTimeoutMs ?? 0,
      loadBalancer: loadBalancerSpec(t.resolver?.loadBalancer ?? null),
      failover: [...(failoverOf.get(id) ?? [])],
    };
    const o: JsonObject = { ID: id, Service: t.service };
    if (t.subset !== '') o.ServiceSubset = t.subset;
    o.Namespace = NAMESPACE;
    o.Partition = PARTITION;
    o.Datacenter = t.datacenter;
    o.MeshGateway = !external && mode !== '' ? { Mode: mode } : {};
    const subsetJson: JsonObject = {};
    if (subset !== null && subset.filter !== '') subsetJson.Filter = subset.filter;
    if (subset?.onlyPassing === true) subsetJson.OnlyPassing = true;
    o.Subset = subsetJson;
    o.TransparentProxy = !external && sd?.transparentProxy?.dialedDirectly === true ? { DialedDirectly: true } : {};
    o.ConnectTimeout = formatDuration(t.connectTimeoutMs);
    if (external) o.External = true;
    if (external) o.SNI = sd.externalSni;
    else if (opts.trustDomain !== undefined) o.SNI = sni(t, opts.trustDomain);
    if (opts.trustDomain !== undefined) o.Name = sni(t, opts.trustDomain);
    consulTargets[id] = o;
  }

  // Data-plane routes.
  const splitsFrom = (key: string): ChainSplit[] => {
    const n = c.nodes.get(key);
    if (n?.type === 'resolver') return [{ weightBp: TOTAL_WEIGHT_BP, targetId: n.target, requestHeaders: noHeaders(), responseHeaders: noHeaders() }];
    if (n?.type === 'splitter') {
      return n.splits.map((s) => {
        const r = c.nodes.get(s.nextNode);
        return {
          weightBp: s.weightBp,
          targetId: r?.type === 'resolver' ? r.target : s.nextNode,
          requestHeaders: copyHeaders(s.definition.requestHeaders),
          responseHeaders: copyHeaders(s.definition.responseHeaders),
        };
      });
    }
    return [];
  };
  const start = c.nodes.get(c.startNode);
  let routes: ChainRoute[];
  if (start?.type === 'router') {
    routes = start.routes.map((r): ChainRoute => {
      if (r.definition === null) return { match: null, action: defaultAction(splitsFrom(r.nextNode)) };
      const d = r.definition.destination;
      return {
        match: r.definition.match,
        action: {
          splits: splitsFrom(r.nextNode),
          prefixRewrite: d.prefixRewrite,
          requestTimeoutMs: d.requestTimeoutMs,
          idleTimeoutMs: d.idleTimeoutMs,
          numRetries: d.numRetries,
          retryOnConnectFailure: d.retryOnConnectFailure,
          retryOn: [...d.retryOn],
          retryOnStatusCodes: [...d.retryOnStatusCodes],
          requestHeaders: copyHeaders(d.requestHeaders),
          responseHeaders: copyHeaders(d.responseHeaders),
        },
      };
    });
  } else {
    routes = [{ match: null, action: defaultAction(splitsFrom(c.startNode)) }];
  }

  // The downstream's view of this upstream: circuit breakers and outlier detection.
  const l = upstreamCfg?.limits ?? null;
  const limits: UpstreamLimits = {
    maxConnections: l?.maxConnections ?? 0,
    maxPendingRequests: l?.maxPendingRequests ?? 0,
    maxConcurrentRequests: l?.maxConcurrentRequests ?? 0,
  };
  const p = upstreamCfg?.passiveHealthCheck ?? null;
  const d = DEFAULT_PASSIVE_HEALTH_CHECK;
  const passiveHealthCheck: PassiveHealthCheck = {
    intervalMs: p !== null && p.intervalMs > 0 ? p.intervalMs : d.intervalMs,
    maxFailures: p !== null && p.maxFailures > 0 ? p.maxFailures : d.maxFailures,
    enforcingConsecutive5xx: p?.enforcingConsecutive5xx ?? d.enforcingConsecutive5xx,
    maxEjectionPercent: p?.maxEjectionPercent ?? d.maxEjectionPercent,
    baseEjectionTimeMs: p?.baseEjectionTimeMs ?? d.baseEjectionTimeMs,
  };

  // Consul's JSON.
  const catchAll: JsonObject = { Match: { HTTP: { PathPrefix: '/' } }, Destination: { Service: service, Namespace: NAMESPACE, Partition: PARTITION } };
  const nodes: Record<string, unknown> = {};
  for (const key of [...c.nodes.keys()].sort(byKey)) nodes[key] = encodeNode(c.nodes.get(key) as Node, catchAll);
  const chain: JsonObject = { ServiceName: service, Namespace: NAMESPACE, Partition: PARTITION, Datacenter: opts.datacenter };
  if (customized.protocol || customized.connectTimeout) {
    const basis = JSON.stringify({ protocol: customized.protocol ? overrideProtocol : '', connectTimeoutMs: customized.connectTimeout ? overrideConnectTimeoutMs : 0 });
    chain.CustomizationHash = createHash('sha256').update(basis).digest('hex').slice(0, 8);
  }
  if (start?.type === 'resolver' && start.isDefault && c.targets.get(start.target)?.service === service) chain.Default = true;
  chain.Protocol = protocol;
  const meta = c.defaultsOf(service)?.meta ?? {};
  if (Object.keys(meta).length > 0) chain.ServiceMeta = { ...meta };
  chain.StartNode = c.startNode;
  chain.Nodes = nodes;
  chain.Targets = consulTargets;

  return {
    consul: { Chain: chain },
    dataPlane: { serviceName: service, protocol, routes, targets: dpTargets, limits, passiveHealthCheck },
  };
}
