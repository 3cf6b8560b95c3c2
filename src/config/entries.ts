// Config entries as `meshd config write FILE` and `PUT /v1/config` take them: HCL1 or JSON in
// Consul's shape, decoded into domain values (the wire format stops here), and encoded back
// into Consul's API JSON for `GET /v1/config/:kind/:name`. Kinds: service-intentions
// (./service-intentions.ts), service-defaults (./service-defaults.ts), jwt-provider
// (./jwt.ts), and the discovery-chain kinds service-router (./service-router.ts),
// service-splitter (./service-splitter.ts) and service-resolver (./service-resolver.ts), and
// ingress-gateway (./ingress-gateway.ts), and proxy-defaults (./proxy-defaults.ts). Decode rules shared by all of them are in ./wire.ts.
//
// Pure functions: no clock, no I/O (a JWKS Filename is not read here). Runs on the CLI and
// the control thread, never per request.

import { FieldError, type JsonObject } from '../control/decode.ts';
import type { IntentionRule } from '../control/intentions.ts';
import { collapseBlocks, parseConfigText } from './hcl.ts';
import { isPlainObject, normKey } from './wire.ts';
import { decodeServiceIntentions, encodeServiceIntentionsBody, type ServiceIntentionsEntry } from './service-intentions.ts';
import { decodeServiceDefaults, encodeServiceDefaultsBody, type ServiceDefaultsEntry } from './service-defaults.ts';
import { decodeJwtProvider, encodeJwtProviderBody, type JwtProviderEntry } from './jwt.ts';
import { decodeServiceRouter, encodeServiceRouterBody, type ServiceRouterEntry } from './service-router.ts';
import { decodeServiceSplitter, encodeServiceSplitterBody, type ServiceSplitterEntry } from './service-splitter.ts';
import { decodeServiceResolver, encodeServiceResolverBody, type ServiceResolverEntry } from './service-resolver.ts';
import { decodeIngressGateway, encodeIngressGatewayBody, type IngressGatewayEntry } from './ingress-gateway.ts';
import { decodeProxyDefaults, encodeProxyDefaultsBody, type ProxyDefaultsEntry } from './proxy-defaults.ts';

export * from './service-intentions.ts';
export * from './service-defaults.ts';
export * from './jwt.ts';
export * from './service-router.ts';
export * from './service-splitter.ts';
export * from './service-resolver.ts';
export * from './ingress-gateway.ts';
export * from './proxy-defaults.ts';
export type { IntentionRule } from '../control/intentions.ts';

export type ConfigEntry = ServiceIntentionsEntry | ServiceDefaultsEntry | JwtProviderEntry | ServiceRouterEntry | ServiceSplitterEntry | ServiceResolverEntry | IngressGatewayEntry | ProxyDefaultsEntry;
export type ConfigEntryKind = ConfigEntry['kind'];

export const CONFIG_ENTRY_KINDS: readonly ConfigEntryKind[] = [
  'service-intentions', 'service-defaults', 'jwt-provider', 'service-router', 'service-splitter', 'service-resolver', 'ingress-gateway', 'proxy-defaults',
];

/**
 * Keys whose value is one object in Consul's schema, so an HCL1 block (`HTTP { … }`, which
 * HCL1 decodes as a one-element list) collapses back to the object. `Header` is an object
 * under `Locations[]` but a list under `HTTP`; it is listed, and the decoder reads a lone
 * object as a one-element list wherever it wants a list, so both come out right. (The
 * decoder also unwraps one-element lists by itself, as Consul's weak decoding does, so a
 * JSON body given straight to decodeConfigEntry is treated the same; collapsing first keeps
 * the document a file produces in the shape its JSON twin has.)
 *
 * `Subsets` and `Failover` are maps of objects keyed by subset name: HCL1 turns the map into
 * a one-element list (collapsed here) and each value into a one-element list, which the
 * resolver's decoder unwraps (a subset may be called anything, so its name cannot be listed).
 * `QueryParam` is a list under a router's `HTTP`, handled like `Header`. A failover `Policy` and
 * the header modifiers' `Add`/`Set` are not listed (`Policy` is a string in a LoadBalancer, and
 * `Add`/`Set` are too generic): the decoder reads a one-element list as the object anyway.
 */
export const ENTRY_OBJECT_KEYS: ReadonlySet<string> = new Set(
  [
    'Meta', 'LegacyMeta', 'HTTP', 'JWT', 'Header',
    'JSONWebKeySet', 'Local', 'Remote', 'Forwarding', 'QueryParam', 'Cookie', 'CacheConfig',
    'RetryPolicy', 'RetryPolicyBackOff', 'JWKSCluster', 'TLSCertificates', 'TrustedCA', 'CaCertificateProviderInstance',
    'TransparentProxy', 'MeshGateway', 'Expose', 'UpstreamConfig', 'Defaults', 'Destination', 'RateLimits', 'InstanceLevel',
    'Limits', 'PassiveHealthCheck',
    'Match', 'RequestHeaders', 'ResponseHeaders', 'Subsets', 'Failover', 'Redirect', 'LoadBalancer', 'RingHashConfig',
    'LeastRequestConfig', 'CookieConfig', 'PrioritizeByLocality',
    'TLS', 'SDS',
  ].map(normKey),
);

/** A kind as the API path or a document names it (case-insensitive); FieldError('Kind') otherwise. */
export function parseConfigEntryKind(text: string, field = 'Kind'): ConfigEntryKind {
  const kind = text.toLowerCase();
  const found = CONFIG_ENTRY_KINDS.find((k) => k === kind);
  if (found !== undefined) return found;
  throw new FieldError(field, `unsupported config entry kind ${JSON.stringify(text)}: meshd supports ${CONFIG_ENTRY_KINDS.join(', ')}`);
}

/** Decodes and validates one entry (a parsed JSON document, or HCL after collapseBlocks). */
export function decodeConfigEntry(raw: unknown): ConfigEntry {
  if (!isPlainObject(raw)) throw new FieldError('entry', 'must be an object with a Kind');
  let kindRaw: unknown;
  for (const [k, v] of Object.entries(raw)) if (normKey(k) === 'kind') kindRaw = Array.isArray(v) && v.length === 1 ? (v[0] as unknown) : v;
  if (kindRaw === undefined || kindRaw === null || kindRaw === '') throw new FieldError('Kind', `is required (one of ${CONFIG_ENTRY_KINDS.join(', ')})`);
  if (typeof kindRaw !== 'string') throw new FieldError('Kind', 'must be a string');
  switch (parseConfigEntryKind(kindRaw)) {
    case 'service-intentions':
      return decodeServiceIntentions(raw);
    case 'service-defaults':
      return decodeServiceDefaults(raw);
    case 'jwt-provider':
      return decodeJwtProvider(raw);
    case 'service-router':
      return decodeServiceRouter(raw);
    case 'service-splitter':
      return decodeServiceSplitter(raw);
    case 'service-resolver':
      return decodeServiceResolver(raw);
    case 'ingress-gateway':
      return decodeIngressGateway(raw);
    case 'proxy-defaults':
      return decodeProxyDefaults(raw);
  }
}

/**
 * A config file's text (HCL1 or JSON) to an entry. Syntax errors are ConfigSyntaxError
 * (naming `source`); schema errors are FieldError.
 */
export async function parseConfigEntryText(text: string, source: string): Promise<ConfigEntry> {
  return decodeConfigEntry(collapseBlocks(await parseConfigText(text, source), ENTRY_OBJECT_KEYS));
}

export type RaftIndex = { readonly createIndex: number; readonly modifyIndex: number };

/** Consul's API JSON for an entry, as `GET /v1/config/:kind/:name` returns it. */
export function encodeConfigEntry(entry: ConfigEntry, index: RaftIndex): JsonObject {
  let body: JsonObject;
  switch (entry.kind) {
    case 'service-intentions':
      body = encodeServiceIntentionsBody(entry);
      break;
    case 'service-defaults':
      body = encodeServiceDefaultsBody(entry);
      break;
    case 'jwt-provider':
      body = encodeJwtProviderBody(entry);
      break;
    case 'service-router':
      body = encodeServiceRouterBody(entry);
      break;
    case 'service-splitter':
      body = encodeServiceSplitterBody(entry);
      break;
    case 'service-resolver':
      body = encodeServiceResolverBody(entry);
      break;
    case 'ingress-gateway':
      body = encodeIngressGatewayBody(entry);
      break;
    case 'proxy-defaults':
      body = encodeProxyDefaultsBody(entry);
      break;
  }
  return { Kind: entry.kind, Name: entry.name, ...body, CreateIndex: index.createIndex, ModifyIndex: index.modifyIndex };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The flattening the table compiler consumes: one rule per source of every
 * service-intentions entry (other kinds are skipped), an L7 source as 'l7'. Evaluation
 * order: precedence descending, then source name, then destination name.
 */
export function intentionRules(entries: Iterable<ConfigEntry>): IntentionRule[] {
  const rows: { rule: IntentionRule; precedence: number }[] = [];
  for (const e of entries) {
    if (e.kind !== 'service-intentions') continue;
    for (const s of e.sources) {
      rows.push({ precedence: s.precedence, rule: { source: s.name, destination: e.name, action: s.layer === 'l4' ? s.action : 'l7' } });
    }
  }
  rows.sort((a, b) => b.precedence - a.precedence || cmp(a.rule.source, b.rule.source) || cmp(a.rule.destination, b.rule.destination));
  return rows.map((r) => r.rule);
}
