// What the agent tells a mesh gateway (`meshd connect gateway -mesh`): the answer of meshd's
// `GET /v1/internal/meshd/mesh-gateway-config/:name`, built by a pure function from the
// catalog's health entries, the service-resolver entries and the federation states.
//
// - Services: every local service that has sidecars, keyed by the SNI its callers send
//   (`<service>.default.<dc>.internal.<td>`, src/chain/compile.ts's form, Consul's
//   agent/connect/sni.go), mapped to its sidecars' public listeners that are passing or warning
//   (critical never); and, for each subset of the service's resolver, the subset SNI
//   `<subset>.<service>.default.<dc>.internal.<td>` mapped to the instances its Filter selects
//   (OnlyPassing honoured). The same rules as a sidecar's targets (targetEndpoints).
// - Datacenters: every other datacenter's mesh gateways (their WAN addresses), from the
//   `federation-states` table the federation keeps.
// Runs on: the agent's control thread.

import type { ServiceResolverEntry } from '../config/service-resolver.ts';
import { targetEndpoints, type HealthEntry } from '../control/agent-session.ts';
import { compileHealthFilter, type HealthFilterEntry } from '../control/filter.ts';

export { FEDERATION_STATES, type FederationState } from '../control/federation.ts';
import type { FederationState } from '../control/federation.ts';

/** The sidecars of one service as the health API returns them. */
export type HealthEntryList = readonly HealthEntry[];

export interface MeshAddress {
  readonly Address: string;
  readonly Port: number;
}

/** The agent's answer to GET /v1/internal/meshd/mesh-gateway-config/:name. */
export interface MeshGatewayConfigBody {
  readonly Datacenter: string;
  readonly TrustDomain: string;
  /** SNI → the sidecars' public listeners to forward to. */
  readonly Services: Readonly<Record<string, readonly MeshAddress[]>>;
  /** Other datacenter → its mesh gateways (WAN addresses). */
  readonly Datacenters: Readonly<Record<string, readonly MeshAddress[]>>;
}

export interface MeshConfigInput {
  readonly datacenter: string;
  readonly trustDomain: string;
  /** Every service with sidecars, with its sidecars' health entries (Consul's /v1/health/connect shape). */
  readonly services: ReadonlyMap<string, HealthEntryList>;
  /** The service-resolver entries (only their subsets are read). */
  readonly resolvers: readonly ServiceResolverEntry[];
  readonly federationStates: readonly FederationState[];
  /** A subset filter that does not compile (the agent validated it on write): logged, selects nothing. */
  readonly onBadFilter?: (service: string, subset: string, why: string) => void;
}

/** Consul's SNI of a service (or one subset of it) in the default namespace and partition. */
export function serviceSni(service: string, subset: string, datacenter: string, trustDomain: string): string {
  return `${subset === '' ? '' : `${subset}.`}${service}.default.${datacenter}.internal.${trustDomain}`.toLowerCase();
}

function addresses(entries: readonly HealthEntry[], service: string, onlyPassing: boolean, keep: (e: HealthFilterEntry) => boolean): MeshAddress[] {
  return targetEndpoints(entries, { service, onlyPassing }, keep).map((e) => ({ Address: e.host, Port: e.port }));
}

/** Builds the mesh gateway's routing table. Keys are lower-case (SNI is matched lower-cased). */
export function meshGatewayConfig(input: MeshConfigInput): MeshGatewayConfigBody {
  const { datacenter, trustDomain } = input;
  const services: Record<string, MeshAddress[]> = {};
  const set = (key: string, value: MeshAddress[]): void => void Object.defineProperty(services, key, { value, enumerable: true, writable: true, configurable: true });
  const resolvers = new Map(input.resolvers.map((r) => [r.name, r]));
  for (const name of [...input.services.keys()].sort()) {
    const entries = input.services.get(name) ?? [];
    set(serviceSni(name, '', datacenter, trustDomain), addresses(entries, name, false, () => true));
    for (const [subset, def] of Object.entries(resolvers.get(name)?.subsets ?? {})) {
      let keep: (e: HealthFilterEntry) => boolean;
      try {
        keep = def.filter === '' ? () => true : compileHealthFilter(def.filter);
      } catch (err) {
        input.onBadFilter?.(name, subset, (err as Error).message);
        keep = () => false;
      }
      set(serviceSni(name, subset, datacenter, trustDomain), addresses(entries, name, def.onlyPassing, keep));
    }
  }
  const datacenters: Record<string, MeshAddress[]> = {};
  for (const st of input.federationStates) {
    if (st.Datacenter === '' || st.Datacenter.toLowerCase() === datacenter.toLowerCase()) continue;
    Object.defineProperty(datacenters, st.Datacenter.toLowerCase(), {
      value: st.MeshGateways.filter((g) => g.Address !== '' && g.Port > 0).map((g) => ({ Address: g.Address, Port: g.Port })),
      enumerable: true,
      writable: true,
      configurable: true,
    });
  }
  return { Datacenter: datacenter, TrustDomain: trustDomain, Services: services, Datacenters: datacenters };
}
