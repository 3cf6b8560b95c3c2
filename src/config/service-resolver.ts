// The `service-resolver` config entry (consul-mesh.md §3.4): which instances of a service
// satisfy a request (subsets), where it goes instead (Redirect) or next (Failover), and how
// its connections are made and balanced. Decoding applies Consul's validation
// (ServiceResolverConfigEntry.Validate) and yields a domain value; encoding gives back
// Consul's API JSON.
//
// meshd is Consul CE with WAN-federated datacenters, so:
// - Peer, SamenessGroup, and Namespace/Partition other than "default" are refused here.
// - Datacenters (Redirect.Datacenter, Failover.Datacenters, Failover.Targets[].Datacenter) must
//   be valid datacenter names (they become SNI labels); whether one exists is the data plane's
//   question: a target in an unknown datacenter has no instances, and failover moves on.
// - Failover Policy modes other than "default" (order-by-locality) and PrioritizeByLocality
//   "failover" need localities meshd does not have: refused. PrioritizeByLocality "none" is
//   the default behaviour and is accepted and dropped.
//
// Stricter than Consul: subset filters must compile against the health entry's selectors
// (Consul checks the syntax only); a hash policy must hash something; RingHashConfig sizes
// must satisfy min <= max <= 8388608 (Envoy's limits); ChoiceCount must be 0 or >= 2; an empty
// failover target is refused (Consul would silently skip it).
// Cross-entry rules (a subset named on another service's resolver exists, redirect loops)
// are the chain compiler's (src/chain/compile.ts).

import { DATACENTER_RE, FieldError, type JsonObject } from '../control/decode.ts';
import { compileHealthFilter, FilterError } from '../control/filter.ts';
import type { LoadBalancerPolicy } from '../chain/types.ts';
import {
  decodeDurationMs,
  decodeEntryName,
  decodeNamedMap,
  formatDuration,
  rejectPeerAndSamenessGroup,
  validateServiceRef,
  validateSubsetName,
} from './service-router.ts';
import { ENTRY_COMMON_KEYS, WireObject, decodeMeta, defineData, encodeMeta, expectKind, ignoreReadOnlyIndexes, rejectEnterpriseTenancy } from './wire.ts';

export type ResolverSubset = {
  /** go-bexpr over the health entry; '' = every instance. */
  readonly filter: string;
  /** true: passing only; false: passing and warning. */
  readonly onlyPassing: boolean;
};

export type ResolverRedirect = {
  /** '' = this service. */
  readonly service: string;
  readonly serviceSubset: string;
  /** '' = the local one (the only one meshd serves). */
  readonly datacenter: string;
};

export type ResolverFailoverTarget = {
  readonly service: string;
  readonly serviceSubset: string;
  readonly datacenter: string;
};

export type ResolverFailover = {
  readonly service: string;
  readonly serviceSubset: string;
  readonly datacenters: readonly string[];
  /** Exclusive with service, serviceSubset and datacenters. */
  readonly targets: readonly ResolverFailoverTarget[];
  /** '' or "default" (the only mode without localities). */
  readonly policyMode: '' | 'default';
};

export type HashPolicyField = '' | 'header' | 'cookie' | 'query_parameter';

export type ResolverHashPolicy = {
  readonly field: HashPolicyField;
  readonly fieldValue: string;
  readonly cookieConfig: { readonly session: boolean; readonly ttlMs: number; readonly path: string } | null;
  readonly sourceIp: boolean;
  readonly terminal: boolean;
};

export type ResolverLoadBalancer = {
  /** '' = Envoy's default, round_robin. */
  readonly policy: '' | LoadBalancerPolicy;
  /** Only with ring_hash; 0 = Envoy's default. */
  readonly ringHashConfig: { readonly minimumRingSize: number; readonly maximumRingSize: number } | null;
  /** Only with least_request; 0 = Envoy's default (2). */
  readonly leastRequestConfig: { readonly choiceCount: number } | null;
  /** Only with ring_hash or maglev. */
  readonly hashPolicies: readonly ResolverHashPolicy[];
};

export type ServiceResolverEntry = {
  readonly kind: 'service-resolver';
  readonly name: string;
  readonly meta: Readonly<Record<string, string>>;
  /** '' = the unnamed subset (every instance); otherwise a key of `subsets`. */
  readonly defaultSubset: string;
  /** Keyed by subset name, in name order. */
  readonly subsets: Readonly<Record<string, ResolverSubset>>;
  /** Exclusive with failover. */
  readonly redirect: ResolverRedirect | null;
  /** Keyed by subset name or "*", in key order. */
  readonly failover: Readonly<Record<string, ResolverFailover>>;
  /** 0 = the default (5 s). */
  readonly connectTimeoutMs: number;
  /** 0 = not set (15 s applies). */
  readonly requestTimeoutMs: number;
  readonly loadBalancer: ResolverLoadBalancer | null;
};

export const LB_POLICIES: readonly LoadBalancerPolicy[] = ['round_robin', 'random', 'least_request', 'ring_hash', 'maglev'];
export const HASH_POLICY_FIELDS = ['header', 'cookie', 'query_parameter'] as const;
/** Envoy's upper bound for a ring (and its default maximum). */
export const MAX_RING_SIZE = 8_388_608;

const ENTRY_KEYS = [
  ...ENTRY_COMMON_KEYS, 'DefaultSubset', 'Subsets', 'Redirect', 'Failover', 'ConnectTimeout', 'RequestTimeout', 'LoadBalancer', 'PrioritizeByLocality',
];
const SUBSET_KEYS = ['Filter', 'OnlyPassing'];
const REDIRECT_KEYS = ['Service', 'ServiceSubset', 'Namespace', 'Partition', 'Datacenter', 'Peer', 'SamenessGroup'];
const FAILOVER_KEYS = ['Service', 'ServiceSubset', 'Namespace', 'Datacenters', 'Targets', 'Policy', 'SamenessGroup'];
const TARGET_KEYS = ['Service', 'ServiceSubset', 'Partition', 'Namespace', 'Datacenter', 'Peer'];
const LB_KEYS = ['Policy', 'RingHashConfig', 'LeastRequestConfig', 'HashPolicies'];
const HASH_KEYS = ['Field', 'FieldValue', 'CookieConfig', 'SourceIP', 'Terminal'];
const MAX_UINT32 = 2 ** 32 - 1;

function sortedRecord<T>(entries: [string, T][]): Record<string, T> {
  const out: Record<string, T> = {};
  for (const [k, v] of [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) defineData(out, k, v);
  return out;
}

function decodeSubsets(e: WireObject): Record<string, ResolverSubset> {
  const entries = decodeNamedMap(e, 'Subsets', 'subset name').map(([name, raw]): [string, ResolverSubset] => {
    const field = `${e.field('Subsets')}.${name}`;
    validateSubsetName(name, field);
    const s = new WireObject(raw, field, SUBSET_KEYS);
    const filter = s.string('Filter');
    if (filter !== '') {
      try {
        compileHealthFilter(filter);
      } catch (err) {
        if (err instanceof FilterError) throw new FieldError(s.field('Filter'), `is not a valid expression: ${err.message}`);
        throw err;
      }
    }
    return [name, { filter, onlyPassing: s.bool('OnlyPassing') }];
  });
  return sortedRecord(entries);
}

function decodeRedirect(e: WireObject, name: string, isSubset: (s: string) => boolean): ResolverRedirect | null {
  const r = e.object('Redirect', REDIRECT_KEYS);
  if (r === null) return null;
  rejectEnterpriseTenancy(r);
  rejectPeerAndSamenessGroup(r);
  const service = r.string('Service');
  const serviceSubset = r.string('ServiceSubset');
  const datacenter = r.string('Datacenter');
  if (service === '' && serviceSubset === '' && datacenter === '') throw new FieldError(r.path, 'Redirect is empty');
  if (datacenter !== '') validateDatacenter(datacenter, r.field('Datacenter'));
  if (service !== '') validateServiceRef(service, r.field('Service'));
  if (service === '' && serviceSubset !== '') throw new FieldError(r.field('ServiceSubset'), 'defined without Redirect.Service');
  if (serviceSubset !== '') {
    validateSubsetName(serviceSubset, r.field('ServiceSubset'));
    if (service === name && !isSubset(serviceSubset)) throw new FieldError(r.field('ServiceSubset'), `${JSON.stringify(serviceSubset)} is not a valid subset of ${JSON.stringify(name)}`);
  }
  return { service, serviceSubset, datacenter };
}

function validateDatacenter(dc: string, field: string): void {
  if (!DATACENTER_RE.test(dc)) throw new FieldError(field, `${JSON.stringify(dc)} is not a valid datacenter name (lower-case letters, digits, "-" or "_", at most 63)`);
}

function decodePolicyMode(f: WireObject): '' | 'default' {
  const p = f.object('Policy', ['Mode', 'Regions']);
  if (p === null) return '';
  if (p.strings('Regions').length > 0) throw new FieldError(p.field('Regions'), 'locality-aware failover is not supported by meshd (it has no regions or zones)');
  const mode = p.string('Mode');
  if (mode === '' || mode === 'default') return mode;
  if (mode === 'order-by-locality') throw new FieldError(p.field('Mode'), '"order-by-locality" is not supported by meshd (it has no regions or zones); use "default"');
  throw new FieldError(p.field('Mode'), `must be one of '', 'default', or 'order-by-locality', got ${JSON.stringify(mode)}`);
}

function decodeFailoverTarget(t: WireObject, name: string, isSubset: (s: string) => boolean): ResolverFailoverTarget {
  rejectEnterpriseTenancy(t);
  if (t.string('Peer') !== '') throw new FieldError(t.field('Peer'), 'cluster peering is not supported by meshd');
  const service = t.string('Service');
  const serviceSubset = t.string('ServiceSubset');
  const datacenter = t.string('Datacenter');
  if (t.string('Partition') !== '' && datacenter !== '') throw new FieldError(t.path, 'Partition cannot be set with Datacenter');
  if (service === '' && serviceSubset === '' && datacenter === '') throw new FieldError(t.path, 'must set at least one of Service, ServiceSubset or Datacenter');
  if (datacenter !== '') validateDatacenter(datacenter, t.field('Datacenter'));
  if (service !== '') validateServiceRef(service, t.field('Service'));
  if (serviceSubset !== '') {
    validateSubsetName(serviceSubset, t.field('ServiceSubset'));
    if ((service === '' || service === name) && !isSubset(serviceSubset)) {
      throw new FieldError(t.field('ServiceSubset'), `${JSON.stringify(serviceSubset)} is not a valid subset of ${JSON.stringify(name)}`);
    }
  }
  return { service, serviceSubset, datacenter };
}

function decodeFailover(e: WireObject, name: string, isSubset: (s: string) => boolean): Record<string, ResolverFailover> {
  const entries = decodeNamedMap(e, 'Failover', 'subset name or "*"').map(([key, raw]): [string, ResolverFailover] => {
    const field = `${e.field('Failover')}.${key}`;
    if (key !== '*' && !isSubset(key)) throw new FieldError(field, `${JSON.stringify(key)} is not a subset of ${JSON.stringify(name)} (use a name from Subsets, or "*")`);
    const f = new WireObject(raw, field, FAILOVER_KEYS);
    rejectEnterpriseTenancy(f);
    if (f.string('SamenessGroup') !== '') throw new FieldError(f.field('SamenessGroup'), 'sameness groups are a Consul Enterprise feature that meshd does not have');
    const service = f.string('Service');
    const serviceSubset = f.string('ServiceSubset');
    const datacenters = f.strings('Datacenters');
    const targetObjs = f.objects('Targets', TARGET_KEYS);
    if (service === '' && serviceSubset === '' && datacenters.length === 0 && targetObjs.length === 0) {
      throw new FieldError(field, 'one of Service, ServiceSubset, Targets, or Datacenters is required');
    }
    const policyMode = decodePolicyMode(f);
    if (service !== '') validateServiceRef(service, f.field('Service'));
    if (serviceSubset !== '') {
      validateSubsetName(serviceSubset, f.field('ServiceSubset'));
      if ((service === '' || service === name) && !isSubset(serviceSubset)) {
        throw new FieldError(f.field('ServiceSubset'), `${JSON.stringify(serviceSubset)} is not a valid subset of ${JSON.stringify(name)}`);
      }
    }
    if (targetObjs.length > 0) {
      if (datacenters.length > 0) throw new FieldError(f.field('Targets'), 'Targets cannot be set with Datacenters');
      if (serviceSubset !== '') throw new FieldError(f.field('Targets'), 'Targets cannot be set with ServiceSubset');
      if (service !== '') throw new FieldError(f.field('Targets'), 'Targets cannot be set with Service');
    }
    datacenters.forEach((dc, i) => {
      if (dc === '') throw new FieldError(`${f.field('Datacenters')}[${i}]`, 'found empty datacenter');
      validateDatacenter(dc, `${f.field('Datacenters')}[${i}]`);
    });
    const targets = targetObjs.map((t) => decodeFailoverTarget(t, name, isSubset));
    return [key, { service, serviceSubset, datacenters, targets, policyMode }];
  });
  return sortedRecord(entries);
}

function decodeHashPolicy(h: WireObject): ResolverHashPolicy {
  const rawField = h.string('Field');
  if (rawField !== '' && !(HASH_POLICY_FIELDS as readonly string[]).includes(rawField)) {
    throw new FieldError(h.field('Field'), `${JSON.stringify(rawField)} is not a supported field (use ${HASH_POLICY_FIELDS.join(', ')})`);
  }
  const field = rawField as HashPolicyField;
  const fieldValue = h.string('FieldValue');
  const sourceIp = h.bool('SourceIP');
  if (sourceIp && field !== '') throw new FieldError(h.path, `A single hash policy cannot hash both a source address and a ${JSON.stringify(field)}`);
  if (sourceIp && fieldValue !== '') throw new FieldError(h.field('FieldValue'), 'A FieldValue cannot be specified when hashing SourceIP');
  if (field !== '' && fieldValue === '') throw new FieldError(h.field('FieldValue'), `Field ${JSON.stringify(field)} was specified without a FieldValue`);
  if (fieldValue !== '' && field === '') throw new FieldError(h.field('Field'), 'FieldValue requires a Field to apply to');
  if (field === '' && !sourceIp) throw new FieldError(h.path, 'must hash something: set Field and FieldValue, or SourceIP');
  const c = h.object('CookieConfig', ['Session', 'TTL', 'Path']);
  let cookieConfig: ResolverHashPolicy['cookieConfig'] = null;
  if (c !== null) {
    if (field !== 'cookie') throw new FieldError(h.field('CookieConfig'), `cookie_config provided for ${JSON.stringify(field)}`);
    cookieConfig = { session: c.bool('Session'), ttlMs: decodeDurationMs(c, 'TTL'), path: c.string('Path') };
    if (cookieConfig.session && cookieConfig.ttlMs !== 0) throw new FieldError(c.field('TTL'), 'a session cookie cannot have an associated TTL');
  }
  return { field, fieldValue, cookieConfig, sourceIp, terminal: h.bool('Terminal') };
}

function decodeLoadBalancer(e: WireObject): ResolverLoadBalancer | null {
  const lb = e.object('LoadBalancer', LB_KEYS);
  if (lb === null) return null;
  const rawPolicy = lb.string('Policy');
  if (rawPolicy !== '' && !(LB_POLICIES as readonly string[]).includes(rawPolicy)) {
    throw new FieldError(lb.field('Policy'), `${JSON.stringify(rawPolicy)} is not supported (use ${LB_POLICIES.join(', ')})`);
  }
  const policy = rawPolicy as '' | LoadBalancerPolicy;
  const rh = lb.object('RingHashConfig', ['MinimumRingSize', 'MaximumRingSize']);
  if (rh !== null && policy !== 'ring_hash') throw new FieldError(rh.path, `RingHashConfig specified for incompatible load balancing policy ${JSON.stringify(policy)}`);
  const lr = lb.object('LeastRequestConfig', ['ChoiceCount']);
  if (lr !== null && policy !== 'least_request') throw new FieldError(lr.path, `LeastRequestConfig specified for incompatible load balancing policy ${JSON.stringify(policy)}`);
  const hashObjs = lb.objects('HashPolicies', HASH_KEYS);
  if (hashObjs.length > 0 && policy !== 'ring_hash' && policy !== 'maglev') {
    throw new FieldError(lb.field('HashPolicies'), `HashPolicies specified for non-hash-based Policy: ${JSON.stringify(policy)}`);
  }
  let ringHashConfig: ResolverLoadBalancer['ringHashConfig'] = null;
  if (rh !== null) {
    const minimumRingSize = rh.int('MinimumRingSize', 0, MAX_RING_SIZE);
    const maximumRingSize = rh.int('MaximumRingSize', 0, MAX_RING_SIZE);
    if (minimumRingSize !== 0 && maximumRingSize !== 0 && minimumRingSize > maximumRingSize) {
      throw new FieldError(rh.path, `MinimumRingSize (${minimumRingSize}) must not exceed MaximumRingSize (${maximumRingSize})`);
    }
    ringHashConfig = { minimumRingSize, maximumRingSize };
  }
  let leastRequestConfig: ResolverLoadBalancer['leastRequestConfig'] = null;
  if (lr !== null) {
    const choiceCount = lr.int('ChoiceCount', 0, MAX_UINT32);
    if (choiceCount === 1) throw new FieldError(lr.field('ChoiceCount'), 'must be at least 2 (or 0 for the default, 2)');
    leastRequestConfig = { choiceCount };
  }
  return { policy, ringHashConfig, leastRequestConfig, hashPolicies: hashObjs.map(decodeHashPolicy) };
}

/** Decodes a `service-resolver` document (its Kind, if given, must say so). */
export function decodeServiceResolver(raw: unknown): ServiceResolverEntry {
  const e = new WireObject(raw, '', ENTRY_KEYS);
  expectKind(e, 'service-resolver');
  ignoreReadOnlyIndexes(e);
  const name = decodeEntryName(e);
  rejectEnterpriseTenancy(e);
  const meta = decodeMeta(e);
  const pl = e.object('PrioritizeByLocality', ['Mode']);
  if (pl !== null && pl.string('Mode') !== '' && pl.string('Mode') !== 'none') {
    throw new FieldError(pl.field('Mode'), `${JSON.stringify(pl.string('Mode'))} is not supported by meshd (it has no regions or zones); use "none"`);
  }

  const subsets = decodeSubsets(e);
  const isSubset = (s: string): boolean => Object.hasOwn(subsets, s);
  const defaultSubset = e.string('DefaultSubset');
  if (defaultSubset !== '' && !isSubset(defaultSubset)) throw new FieldError('DefaultSubset', `${JSON.stringify(defaultSubset)} is not a valid subset`);

  const redirect = decodeRedirect(e, name, isSubset);
  const failover = decodeFailover(e, name, isSubset);
  if (redirect !== null && Object.keys(failover).length > 0) throw new FieldError('Redirect', 'Redirect and Failover cannot both be set');

  return {
    kind: 'service-resolver',
    name,
    meta,
    defaultSubset,
    subsets,
    redirect,
    failover,
    connectTimeoutMs: decodeDurationMs(e, 'ConnectTimeout'),
    requestTimeoutMs: decodeDurationMs(e, 'RequestTimeout'),
    loadBalancer: decodeLoadBalancer(e),
  };
}

// ---------------------------------------------------------------------------------------
// Encoding: Consul's JSON field names and omitempty rules.

function encodeTargetLike(t: { readonly service: string; readonly serviceSubset: string; readonly datacenter: string }): JsonObject {
  const out: JsonObject = {};
  if (t.service !== '') out.Service = t.service;
  if (t.serviceSubset !== '') out.ServiceSubset = t.serviceSubset;
  if (t.datacenter !== '') out.Datacenter = t.datacenter;
  return out;
}

/** Consul's JSON for a LoadBalancer (also used on discovery-chain nodes). */
export function encodeResolverLoadBalancer(lb: ResolverLoadBalancer): JsonObject {
  const out: JsonObject = {};
  if (lb.policy !== '') out.Policy = lb.policy;
  if (lb.ringHashConfig !== null) {
    const rh: JsonObject = {};
    if (lb.ringHashConfig.minimumRingSize !== 0) rh.MinimumRingSize = lb.ringHashConfig.minimumRingSize;
    if (lb.ringHashConfig.maximumRingSize !== 0) rh.MaximumRingSize = lb.ringHashConfig.maximumRingSize;
    out.RingHashConfig = rh;
  }
  if (lb.leastRequestConfig !== null) out.LeastRequestConfig = lb.leastRequestConfig.choiceCount === 0 ? {} : { ChoiceCount: lb.leastRequestConfig.choiceCount };
  if (lb.hashPolicies.length > 0) {
    out.HashPolicies = lb.hashPolicies.map((h) => {
      const o: JsonObject = {};
      if (h.field !== '') o.Field = h.field;
      if (h.fieldValue !== '') o.FieldValue = h.fieldValue;
      if (h.cookieConfig !== null) {
        const c: JsonObject = {};
        if (h.cookieConfig.session) c.Session = true;
        if (h.cookieConfig.ttlMs !== 0) c.TTL = formatDuration(h.cookieConfig.ttlMs);
        if (h.cookieConfig.path !== '') c.Path = h.cookieConfig.path;
        o.CookieConfig = c;
      }
      if (h.sourceIp) o.SourceIP = true;
      if (h.terminal) o.Terminal = true;
      return o;
    });
  }
  return out;
}

/** The body fields of Consul's JSON after Kind and Name (the caller adds the indexes). */
export function encodeServiceResolverBody(e: ServiceResolverEntry): JsonObject {
  const out: JsonObject = {};
  if (e.defaultSubset !== '') out.DefaultSubset = e.defaultSubset;
  const subsetNames = Object.keys(e.subsets);
  if (subsetNames.length > 0) {
    const subsets: Record<string, unknown> = {};
    for (const name of subsetNames) {
      const s = e.subsets[name] as ResolverSubset;
      const o: JsonObject = {};
      if (s.filter !== '') o.Filter = s.filter;
      if (s.onlyPassing) o.OnlyPassing = true;
      defineData(subsets, name, o);
    }
    out.Subsets = subsets;
  }
  if (e.redirect !== null) out.Redirect = encodeTargetLike(e.redirect);
  const failoverKeys = Object.keys(e.failover);
  if (failoverKeys.length > 0) {
    const failover: Record<string, unknown> = {};
    for (const key of failoverKeys) {
      const f = e.failover[key] as ResolverFailover;
      const o: JsonObject = {};
      if (f.service !== '') o.Service = f.service;
      if (f.serviceSubset !== '') o.ServiceSubset = f.serviceSubset;
      if (f.datacenters.length > 0) o.Datacenters = [...f.datacenters];
      if (f.targets.length > 0) o.Targets = f.targets.map(encodeTargetLike);
      if (f.policyMode !== '') o.Policy = { Mode: f.policyMode };
      defineData(failover, key, o);
    }
    out.Failover = failover;
  }
  if (e.connectTimeoutMs !== 0) out.ConnectTimeout = formatDuration(e.connectTimeoutMs);
  if (e.requestTimeoutMs !== 0) out.RequestTimeout = formatDuration(e.requestTimeoutMs);
  if (e.loadBalancer !== null) out.LoadBalancer = encodeResolverLoadBalancer(e.loadBalancer);
  const meta = encodeMeta(e.meta);
  if (meta !== undefined) out.Meta = meta;
  return out;
}
