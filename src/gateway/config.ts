// What the agent knows about an ingress gateway, computed from the config entries and the
// catalog: the cross-entry protocol rule Consul enforces on writes, and the answer of meshd's
// `GET /v1/internal/meshd/gateway-config/:name` (the gateway's counterpart of proxy-config).
// Pure functions; run on the agent's control thread.

import { compileChain } from '../chain/compile.ts';
import type { DataPlaneChain } from '../chain/types.ts';
import type { ConfigEntry } from '../config/entries.ts';
import { WILDCARD_SERVICE, ingressServiceNames, type IngressGatewayEntry } from '../config/ingress-gateway.ts';
import { FieldError } from '../control/decode.ts';

/** The agent's answer to GET /v1/internal/meshd/gateway-config/:name. */
export interface GatewayConfigBody {
  /** null: no ingress-gateway entry has that name. */
  readonly Entry: IngressGatewayEntry | null;
  /**
   * What a "*" service expands to: every service of the catalog (proxies and gateways left
   * out, the gateway itself too) whose chain is http-like, sorted. Empty without a wildcard.
   */
  readonly WildcardServices: readonly string[];
  /** The data-plane chain of every exposed service, compiled with the gateway as the downstream. */
  readonly Chains: Readonly<Record<string, DataPlaneChain>>;
  /** Services whose chain does not compile, with why (they are left out of Chains). */
  readonly ChainErrors: Readonly<Record<string, string>>;
}

export interface GatewayCompileOptions {
  readonly datacenter: string;
  readonly trustDomain?: string;
}

function hasWildcard(e: IngressGatewayEntry): boolean {
  return e.listeners.some((l) => l.services.some((s) => s.name === WILDCARD_SERVICE));
}

/**
 * Consul's rule for ingress gateways in the service graph: every service a listener names
 * speaks the listener's protocol. An http listener needs an http-like service (meshd serves
 * http2 and grpc services over HTTP/1.1, so it accepts them where Consul wants "http"
 * exactly); a tcp listener takes a tcp service, or an http-like one whose chain starts at a
 * resolver (no router or splitter that L4 would ignore). Keys `ingress-gateway/<name>`, one
 * message per entry (the first problem), naming the field. A service whose chain does not
 * compile is skipped here (that failure is reported for the chain itself).
 */
export function ingressProtocolErrors(entries: readonly ConfigEntry[], opts: GatewayCompileOptions): Map<string, string> {
  const out = new Map<string, string>();
  for (const e of entries) {
    if (e.kind !== 'ingress-gateway') continue;
    const problem = entryProtocolProblem(entries, e, opts);
    if (problem !== null) out.set(`ingress-gateway/${e.name}`, `ingress-gateway ${JSON.stringify(e.name)}: ${problem}`);
  }
  return out;
}

function entryProtocolProblem(entries: readonly ConfigEntry[], e: IngressGatewayEntry, opts: GatewayCompileOptions): string | null {
  for (const [i, l] of e.listeners.entries()) {
    for (const [j, s] of l.services.entries()) {
      if (s.name === WILDCARD_SERVICE) continue;
      let protocol: string;
      let startsAtResolver: boolean;
      try {
        const c = compileChain(entries, s.name, { datacenter: opts.datacenter });
        protocol = c.dataPlane.protocol;
        const startNode = (c.consul.Chain as { StartNode?: unknown }).StartNode;
        startsAtResolver = typeof startNode === 'string' && startNode.startsWith('resolver:');
      } catch (err) {
        if (err instanceof FieldError) continue;
        throw err;
      }
      const ok = l.protocol === 'http' ? protocol !== 'tcp' : protocol === 'tcp' || startsAtResolver;
      if (!ok) return `Listeners[${i}].Services[${j}].Name: service ${JSON.stringify(s.name)} has protocol ${JSON.stringify(protocol)}, which does not match defined listener protocol ${JSON.stringify(l.protocol)}`;
    }
  }
  return null;
}

/**
 * The gateway's configuration: its entry, the wildcard's services, and the chains of all
 * exposed services. `catalogServices` are the names of the catalog's typical services.
 */
export function gatewayConfig(entries: readonly ConfigEntry[], gateway: string, catalogServices: readonly string[], opts: GatewayCompileOptions): GatewayConfigBody {
  const entry = entries.find((e): e is IngressGatewayEntry => e.kind === 'ingress-gateway' && e.name === gateway) ?? null;
  const chains: Record<string, DataPlaneChain> = {};
  const errors: Record<string, string> = {};
  const compile = (service: string): DataPlaneChain | null => {
    try {
      return compileChain(entries, service, { datacenter: opts.datacenter, downstream: gateway, ...(opts.trustDomain === undefined ? {} : { trustDomain: opts.trustDomain }) }).dataPlane;
    } catch (err) {
      if (!(err instanceof FieldError)) throw err;
      errors[service] = err.message;
      return null;
    }
  };
  if (entry === null) return { Entry: null, WildcardServices: [], Chains: chains, ChainErrors: errors };
  for (const name of ingressServiceNames(entry)) {
    const c = compile(name);
    if (c !== null) chains[name] = c;
  }
  const wildcard: string[] = [];
  if (hasWildcard(entry)) {
    for (const name of [...new Set(catalogServices)].sort()) {
      if (name === gateway) continue;
      const c = chains[name] ?? compile(name);
      // Consul leaves services of another protocol out of a wildcard (no error).
      if (c === null || c.protocol === 'tcp') continue;
      chains[name] = c;
      wildcard.push(name);
    }
  }
  return { Entry: entry, WildcardServices: wildcard, Chains: chains, ChainErrors: errors };
}
