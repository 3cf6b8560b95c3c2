// Where a mesh gateway sends a connection, from the SNI of its ClientHello (Consul's mesh
// gateway, ../shared/reference/consul-mesh.md §4.4): an exact local service or subset name goes
// to that service's sidecars; a name of another datacenter (`*.<dc>.internal.<td>`, the whole-DC
// gateway name `<dc>.internal.<td>` included) goes to that datacenter's mesh gateways; anything
// else is refused with a reason. Pure; the round robin lives in the listener.
// Runs on: data-plane workers (the table is compiled once per routing snapshot).

import type { MeshDestination, MeshGatewayRouting } from '../workers/messages.ts';

export interface MeshRouteTable {
  readonly datacenter: string;
  /** `.internal.<td>`: the suffix of every name of this mesh. */
  readonly trustDomainSuffix: string;
  readonly services: ReadonlyMap<string, MeshDestination>;
  readonly datacenters: ReadonlyMap<string, MeshDestination>;
}

export type MeshRoute =
  | { readonly kind: 'service' | 'datacenter'; readonly key: string; readonly destination: MeshDestination }
  | { readonly kind: 'refuse'; readonly reason: 'unknown_service' | 'unknown_datacenter' | 'foreign_trust_domain' };

/** Maps, not objects: a client's name must never reach an object's prototype (`__proto__`). */
export function compileMeshRoutes(r: MeshGatewayRouting): MeshRouteTable {
  return {
    datacenter: r.datacenter.toLowerCase(),
    trustDomainSuffix: `.internal.${r.trustDomain.toLowerCase()}`,
    services: new Map(Object.entries(r.services).map(([k, v]) => [k.toLowerCase(), v])),
    datacenters: new Map(Object.entries(r.datacenters).map(([k, v]) => [k.toLowerCase(), v])),
  };
}

/** The route of a (lower-case) server name. */
export function selectMeshRoute(t: MeshRouteTable, sni: string): MeshRoute {
  const local = t.services.get(sni);
  if (local !== undefined) return { kind: 'service', key: sni, destination: local };
  if (!sni.endsWith(t.trustDomainSuffix)) return { kind: 'refuse', reason: 'foreign_trust_domain' };
  // `[<subset>.]<service>.<ns>.<dc>` or `<dc>`: the datacenter is the last label.
  const head = sni.slice(0, sni.length - t.trustDomainSuffix.length);
  const dc = head.slice(head.lastIndexOf('.') + 1);
  if (dc === '' || dc === t.datacenter) return { kind: 'refuse', reason: 'unknown_service' };
  const remote = t.datacenters.get(dc);
  if (remote === undefined) return { kind: 'refuse', reason: 'unknown_datacenter' };
  return { kind: 'datacenter', key: dc, destination: remote };
}
