// `meshd connect proxy -sidecar-for ID`: the proxy's settings come from the agent instead of
// flags. It finds the one connect-proxy registration whose Proxy.DestinationServiceID is ID
// (in GET /v1/agent/services, compared case-insensitively as Consul does; none or several is
// an error), then reads the service's own registration (GET /v1/agent/service/<ID>). The sidecar registration already exists, so the proxy does not register anything:
// the agent health-checks it (catalog.ts defaultSidecarChecks: a TCP check on its listener and
// an alias of the service's own checks, unless the definition gave the sidecar other checks).

import type { AgentClient } from '../control/client.ts';
import { ApiError } from '../control/client.ts';
import type { HostPort } from '../control/proxy.ts';
import type { UpstreamSpec } from '../workers/messages.ts';

/** Where the listener binds when the sidecar registration has no Address (loopback: nothing is exposed by accident). */
export const DEFAULT_SIDECAR_BIND = '127.0.0.1';

export class SidecarForError extends Error {
  override readonly name = 'SidecarForError';
}

interface AgentUpstream {
  readonly DestinationName?: string;
  readonly DestinationType?: string;
  readonly LocalBindAddress?: string;
  readonly LocalBindPort?: number;
  readonly Datacenter?: string;
  readonly MeshGateway?: { readonly Mode?: string } | null;
}

interface AgentService {
  readonly ID: string;
  readonly Service: string;
  readonly Kind?: string;
  readonly Address?: string;
  readonly Port?: number;
  readonly Tags?: readonly string[] | null;
  readonly Meta?: Readonly<Record<string, string>> | null;
  readonly Proxy?: {
    readonly DestinationServiceName?: string;
    readonly DestinationServiceID?: string;
    readonly LocalServiceAddress?: string;
    readonly LocalServicePort?: number;
    readonly Upstreams?: readonly AgentUpstream[] | null;
    readonly MeshGateway?: { readonly Mode?: string } | null;
  } | null;
}

export interface SidecarPlan {
  /** The service the proxy represents (its certificate's identity). */
  readonly service: string;
  readonly serviceAddr: HostPort;
  readonly listen: HostPort;
  readonly upstreams: UpstreamSpec[];
  readonly tags: string[];
  readonly meta: Record<string, string>;
  /** The sidecar registration the plan came from. */
  readonly proxyId: string;
  /** The registration's Proxy.MeshGateway.Mode. */
  readonly meshGatewayMode?: 'none' | 'local' | 'remote';
}

export async function planSidecarFor(client: AgentClient, serviceId: string): Promise<SidecarPlan> {
  const where = client.base.origin;
  const all = (await client.json<Record<string, AgentService>>('GET', '/v1/agent/services')).value;
  const want = serviceId.toLowerCase();
  const proxies = Object.values(all).filter((s) => s.Kind === 'connect-proxy' && (s.Proxy?.DestinationServiceID ?? '').toLowerCase() === want);
  if (proxies.length === 0) {
    if (!Object.values(all).some((s) => s.ID.toLowerCase() === want)) {
      throw new SidecarForError(`no service with ID "${serviceId}" is registered on the agent at ${where}: register it first (meshd services register FILE)`);
    }
    throw new SidecarForError(
      `no sidecar is registered for service "${serviceId}": add connect { sidecar_service {} } to its definition, or register a connect-proxy whose Proxy.DestinationServiceID is "${serviceId}"`,
    );
  }
  if (proxies.length > 1) {
    throw new SidecarForError(`${proxies.length} proxies are registered for service "${serviceId}" (${proxies.map((p) => p.ID).sort().join(', ')}): use one, or deregister the others`);
  }
  // The service itself, under the ID as registered (the match above ignores case, as Consul's).
  const targetId = (proxies[0] as AgentService).Proxy?.DestinationServiceID ?? serviceId;
  let svc: AgentService;
  try {
    svc = (await client.json<AgentService>('GET', `/v1/agent/service/${encodeURIComponent(targetId)}`)).value;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      throw new SidecarForError(`sidecar "${(proxies[0] as AgentService).ID}" is for service ID "${targetId}", which is not registered on the agent at ${where}: register it first (meshd services register FILE)`);
    }
    throw e;
  }
  const sidecar = proxies[0] as AgentService;
  const proxy = sidecar.Proxy ?? {};
  const listenPort = sidecar.Port ?? 0;
  if (listenPort < 1) throw new SidecarForError(`sidecar registration "${sidecar.ID}" has no Port to listen on`);
  const appPort = proxy.LocalServicePort || svc.Port || 0;
  if (appPort < 1) throw new SidecarForError(`service "${targetId}" has no Port, so the proxy cannot reach it: set Port (or the sidecar's Proxy.LocalServicePort)`);
  const upstreams: UpstreamSpec[] = [];
  for (const [i, u] of (proxy.Upstreams ?? []).entries()) {
    const name = u.DestinationName ?? '';
    if (name === '') throw new SidecarForError(`sidecar "${sidecar.ID}": Proxy.Upstreams[${i}] has no DestinationName`);
    if ((u.DestinationType ?? 'service') !== 'service') throw new SidecarForError(`sidecar "${sidecar.ID}": upstream ${name}: only service upstreams are supported, not ${u.DestinationType ?? ''}`);
    if ((u.LocalBindPort ?? 0) < 1) throw new SidecarForError(`sidecar "${sidecar.ID}": upstream ${name} has no LocalBindPort`);
    const dc = u.Datacenter ?? '';
    const mode = meshGatewayMode(u.MeshGateway?.Mode);
    upstreams.push({
      // An upstream in another datacenter is keyed NAME@DC, as `-upstream NAME@DC:PORT` is.
      name: dc === '' ? name : `${name}@${dc}`,
      host: u.LocalBindAddress || '127.0.0.1',
      port: u.LocalBindPort as number,
      ...(dc === '' ? {} : { service: name, datacenter: dc }),
      ...(mode === undefined ? {} : { meshGatewayMode: mode }),
    });
  }
  return {
    service: svc.Service,
    serviceAddr: { host: proxy.LocalServiceAddress || svc.Address || '127.0.0.1', port: appPort },
    listen: { host: sidecar.Address || DEFAULT_SIDECAR_BIND, port: listenPort },
    upstreams,
    tags: [...(svc.Tags ?? [])],
    meta: { ...(svc.Meta ?? {}) },
    proxyId: sidecar.ID,
    ...(meshGatewayMode(proxy.MeshGateway?.Mode) === undefined ? {} : { meshGatewayMode: meshGatewayMode(proxy.MeshGateway?.Mode) }),
  };
}

/** A registered MeshGateway.Mode (the agent validated it); '' or absent: not set. */
function meshGatewayMode(mode: string | undefined): 'none' | 'local' | 'remote' | undefined {
  return mode === 'none' || mode === 'local' || mode === 'remote' ? mode : undefined;
}
