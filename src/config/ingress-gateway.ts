// The `ingress-gateway` config entry (consul-mesh.md §4.6): the listeners an ingress gateway
// (`meshd connect gateway -ingress -service NAME`, src/gateway/) binds, and the mesh services
// each one exposes to clients outside the mesh. Decoding applies Consul's normalisation and
// validation (agent/structs/config_entry_gateways.go, IngressGatewayConfigEntry.Validate) and
// yields a domain value; encoding gives back Consul's API JSON.
//
// Normalisation: a listener's Protocol is lower-cased and defaults to "tcp" (Consul's
// Normalize).
//
// Consul's rules, with its wording: two listeners may not share a port; a listener needs at
// least one service; a tcp listener carries exactly one service, no wildcard and no Hosts; a
// wildcard service ("*") takes no Hosts; a service appears once per listener; Hosts are
// unique within a listener, each a DNS name with a wildcard only as the leftmost label (or
// "*" alone). That each exposed service speaks the listener's protocol is a cross-entry rule
// (its service-defaults decide), checked by the agent when any entry is written
// (src/control/agent.ts), as Consul checks it in its service graph.
//
// Where meshd differs:
// - TLS: `TLS { Enabled, TLSMinVersion }` on the entry (every listener's default) and on a
//   listener, merged as Consul's xDS code merges them (resolveListenerTLSConfig): a listener's
//   Enabled = true turns TLS on, its Enabled = false does not turn off the entry's, and its
//   TLSMinVersion, when set, replaces the entry's. TLSMinVersion is TLSv1_2 or TLSv1_3
//   (TLS_AUTO and "" mean the default, TLSv1_3); older versions are refused. The certificate is
//   the operator's, given to the gateway process (-tls-cert-file/-tls-key-file), not Consul's
//   leaf with the Hosts as SANs. Refused, naming the field: SDS (entry, listener or service),
//   TLSMaxVersion, CipherSuites, and TLS on a tcp listener (from the listener or the entry):
//   meshd terminates TLS on http listeners only.
// - Listener protocols http2 and grpc are refused: the ingress listener speaks HTTP/1.1.
// - Per-service and gateway-wide circuit breakers and outlier detection (Defaults,
//   MaxConnections, MaxPendingRequests, MaxConcurrentRequests, PassiveHealthCheck) are
//   refused when set; the gateway compiles each chain as a downstream named like the gateway,
//   so `service-defaults` UpstreamConfig under the gateway's name sets them instead.
// - Port 0 is accepted and means "any free port" (tests); the gateway reports the bound port.
// - Hosts are compared case-insensitively for uniqueness (Envoy matches them so).
// - CE only: Namespace/Partition must be empty or "default".

import { FieldError, type JsonObject } from '../control/decode.ts';
import type { HeaderModifiers } from '../chain/types.ts';
import { decodeEntryName, decodeHeaderModifiers, encodeHeaderModifiers, validateServiceRef } from './service-router.ts';
import { ENTRY_COMMON_KEYS, WireObject, decodeMeta, encodeMeta, expectKind, ignoreReadOnlyIndexes, rejectEnterpriseTenancy } from './wire.ts';

export const INGRESS_LISTENER_PROTOCOLS = ['tcp', 'http'] as const;
export type IngressListenerProtocol = (typeof INGRESS_LISTENER_PROTOCOLS)[number];

/** The wildcard service name: every http-like service of the catalog, by `<service>.ingress.*`. */
export const WILDCARD_SERVICE = '*';

export type IngressService = {
  /** An exact service name, or "*" (http listeners only). */
  readonly name: string;
  /** As written (case kept); empty: the default `<service>.ingress.*` domains. */
  readonly hosts: readonly string[];
  readonly requestHeaders: HeaderModifiers;
  readonly responseHeaders: HeaderModifiers;
  readonly meta: Readonly<Record<string, string>>;
};

/** TLSMinVersion as written ("" and TLS_AUTO: the default, TLS 1.3). */
export const INGRESS_TLS_VERSIONS = ['', 'TLS_AUTO', 'TLSv1_2', 'TLSv1_3'] as const;
export type IngressTlsVersion = (typeof INGRESS_TLS_VERSIONS)[number];

/** A `TLS` block (Consul's GatewayTLSConfig, the parts meshd does). */
export type IngressTls = {
  readonly enabled: boolean;
  readonly minVersion: IngressTlsVersion;
};

export type IngressListener = {
  /** 0..65535; 0 binds any free port. */
  readonly port: number;
  readonly protocol: IngressListenerProtocol;
  /** At least one; exactly one on a tcp listener. */
  readonly services: readonly IngressService[];
  /** The listener's own TLS block, as given; absent: none (the entry's applies). */
  readonly tls?: IngressTls;
};

export type IngressGatewayEntry = {
  readonly kind: 'ingress-gateway';
  readonly name: string;
  readonly meta: Readonly<Record<string, string>>;
  readonly listeners: readonly IngressListener[];
  /** The gateway-wide TLS default; absent: `{ Enabled = false }` with no version. */
  readonly tls?: IngressTls;
};

/** What a listener's TLS comes to (Node's version names); null: plain. */
export type EffectiveIngressTls = { readonly minVersion: 'TLSv1.2' | 'TLSv1.3' } | null;

/**
 * The TLS a listener serves: Consul's merge of the entry's block and the listener's (Enabled
 * is or-ed, the listener's TLSMinVersion wins when set). Default minimum: TLS 1.3.
 */
export function ingressListenerTls(entry: Pick<IngressGatewayEntry, 'tls'>, l: Pick<IngressListener, 'tls'>): EffectiveIngressTls {
  if (entry.tls?.enabled !== true && l.tls?.enabled !== true) return null;
  const own = l.tls?.minVersion ?? '';
  const v = own !== '' ? own : (entry.tls?.minVersion ?? '');
  return { minVersion: v === 'TLSv1_2' ? 'TLSv1.2' : 'TLSv1.3' };
}

const TLS_KEYS = ['Enabled', 'SDS', 'TLSMinVersion', 'TLSMaxVersion', 'CipherSuites'];
const LIMIT_KEYS = ['MaxConnections', 'MaxPendingRequests', 'MaxConcurrentRequests', 'PassiveHealthCheck'] as const;
const ENTRY_KEYS = [...ENTRY_COMMON_KEYS, 'TLS', 'Listeners', 'Defaults'];
const LISTENER_KEYS = ['Port', 'Protocol', 'TLS', 'Services'];
const SERVICE_KEYS = ['Name', 'Hosts', 'Namespace', 'Partition', 'TLS', 'RequestHeaders', 'ResponseHeaders', 'Meta', ...LIMIT_KEYS];

function isEmptyValue(v: unknown): boolean {
  if (v === undefined || v === null) return true;
  if (Array.isArray(v)) return v.every(isEmptyValue);
  if (typeof v === 'object') return Object.values(v).every(isEmptyValue);
  return v === '' || v === false || v === 0;
}

/**
 * A `TLS` block of the entry or a listener: Enabled and TLSMinVersion are taken, what meshd
 * does not do is refused with the field named. null: no block.
 */
function decodeTls(obj: WireObject): IngressTls | null {
  const t = obj.object('TLS', TLS_KEYS);
  if (t === null) return null;
  const enabled = t.bool('Enabled');
  const raw = t.string('TLSMinVersion');
  if (raw === 'TLSv1_0' || raw === 'TLSv1_1') throw new FieldError(t.field('TLSMinVersion'), `${raw} is not supported by meshd: its ingress listeners speak TLSv1_2 or TLSv1_3`);
  if (!(INGRESS_TLS_VERSIONS as readonly string[]).includes(raw)) throw new FieldError(t.field('TLSMinVersion'), `${JSON.stringify(raw)} is not a valid TLS version: give TLSv1_2 or TLSv1_3`);
  if (!isEmptyValue(t.raw('TLSMaxVersion'))) throw new FieldError(t.field('TLSMaxVersion'), 'is not supported by meshd: its ingress listeners offer TLS up to TLSv1_3; remove it');
  if (!isEmptyValue(t.raw('CipherSuites'))) throw new FieldError(t.field('CipherSuites'), "is not supported by meshd: its ingress listeners use Node's default TLS 1.2 suites (TLS 1.3 suites are not configurable); remove it");
  if (!isEmptyValue(t.raw('SDS'))) throw new FieldError(t.field('SDS'), 'is not supported by meshd: give the gateway its certificate with -tls-cert-file and -tls-key-file; remove it');
  return { enabled, minVersion: raw as IngressTlsVersion };
}

function refuseLimits(obj: WireObject, where: string): void {
  for (const key of LIMIT_KEYS) {
    if (!isEmptyValue(obj.raw(key))) {
      throw new FieldError(obj.field(key), `is not supported on ${where} by meshd yet: set it in the UpstreamConfig of a service-defaults entry named like the gateway`);
    }
  }
}

// A DNS label as Consul's dns.IsDomainName takes it in practice (letters, digits, "-", "_").
const LABEL_RE = /^[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;

/**
 * Consul's validateHost: "*" alone, or a DNS name (optionally `:port`) whose only wildcard is
 * a leftmost `*.` label.
 */
export function validateIngressHost(host: string, field: string): void {
  if (host === '*') return;
  let name = host;
  const colon = host.lastIndexOf(':');
  if (colon >= 0) {
    const port = host.slice(colon + 1);
    if (!/^[0-9]{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) throw new FieldError(field, `Host ${JSON.stringify(host)} must be a valid DNS hostname`);
    name = host.slice(0, colon);
  }
  const bare = name.startsWith('*.') ? name.slice(2) : name;
  if (bare.includes('*')) throw new FieldError(field, `Host ${JSON.stringify(host)} is not valid, a wildcard specifier is only allowed as the leftmost label`);
  const labels = (bare.endsWith('.') ? bare.slice(0, -1) : bare).split('.');
  if (bare === '' || bare.length > 253 || !labels.every((l) => LABEL_RE.test(l))) throw new FieldError(field, `Host ${JSON.stringify(host)} must be a valid DNS hostname`);
}

function decodeListener(l: WireObject, ports: Map<number, number>, index: number, entryTls: IngressTls | null): IngressListener {
  const port = l.int('Port', 0, 65535);
  if (ports.has(port)) throw new FieldError(l.field('Port'), `port ${port} declared on two listeners`);
  ports.set(port, index);
  const raw = l.string('Protocol').toLowerCase();
  const protocol = raw === '' ? 'tcp' : raw;
  if (protocol === 'http2' || protocol === 'grpc') {
    throw new FieldError(l.field('Protocol'), `${JSON.stringify(protocol)} listeners are not supported by meshd yet: its ingress listeners speak tcp or http (HTTP/1.1)`);
  }
  if (protocol !== 'tcp' && protocol !== 'http') throw new FieldError(l.field('Protocol'), `protocol must be 'tcp', 'http', 'http2', or 'grpc'. '${protocol}' is an unsupported protocol`);
  const tls = decodeTls(l);
  if (protocol === 'tcp' && tls?.enabled === true) {
    throw new FieldError(`${l.field('TLS')}.Enabled`, `TLS on a tcp listener is not supported by meshd yet (listener on port ${port}): it terminates TLS on http listeners only; terminate it in front of the gateway or remove it`);
  }
  if (protocol === 'tcp' && entryTls?.enabled === true) {
    throw new FieldError('TLS.Enabled', `TLS on a tcp listener is not supported by meshd yet, and the gateway-wide TLS applies to every listener, listener on port ${port} (Listeners[${index}]) included: enable TLS on the http listeners' own TLS blocks instead`);
  }
  const objs = l.objects('Services', SERVICE_KEYS);
  if (objs.length === 0) throw new FieldError(l.field('Services'), `No service declared for listener with port ${port}`);
  if (protocol === 'tcp' && objs.length > 1) throw new FieldError(l.field('Services'), `Multiple services per listener are only supported for protocol = 'http' (listener on port ${port})`);
  const names = new Set<string>();
  const hostsSeen = new Set<string>();
  const services = objs.map((s): IngressService => {
    rejectEnterpriseTenancy(s);
    const name = s.string('Name');
    if (name === '') throw new FieldError(s.field('Name'), `Service name cannot be blank (listener on port ${port})`);
    if (name === WILDCARD_SERVICE) {
      if (protocol === 'tcp') throw new FieldError(s.field('Name'), `Wildcard service name is only valid for protocol = 'http' (listener on port ${port})`);
    } else {
      validateServiceRef(name, s.field('Name'));
    }
    if (names.has(name)) throw new FieldError(s.field('Name'), `Service ${name} cannot be added multiple times (listener on port ${port})`);
    names.add(name);
    const hosts = s.strings('Hosts');
    if (hosts.length > 0 && protocol === 'tcp') throw new FieldError(s.field('Hosts'), `Associating hosts to a service is not supported for the tcp protocol (listener on port ${port})`);
    if (hosts.length > 0 && name === WILDCARD_SERVICE) throw new FieldError(s.field('Hosts'), `Associating hosts to a wildcard service is not supported (listener on port ${port})`);
    hosts.forEach((h, k) => {
      const field = `${s.field('Hosts')}[${k}]`;
      const key = h.toLowerCase();
      if (hostsSeen.has(key)) throw new FieldError(field, `Hosts must be unique within a specific listener (listener on port ${port})`);
      hostsSeen.add(key);
      validateIngressHost(h, field);
    });
    const requestHeaders = decodeHeaderModifiers(s, 'RequestHeaders');
    const responseHeaders = decodeHeaderModifiers(s, 'ResponseHeaders');
    if (protocol === 'tcp') {
      for (const key of ['RequestHeaders', 'ResponseHeaders']) {
        if (!isEmptyValue(s.raw(key))) throw new FieldError(s.field(key), `header modifiers are only valid on http listeners (service ${JSON.stringify(name)} on listener on port ${port})`);
      }
    }
    const st = s.object('TLS', ['SDS']);
    if (st !== null && !isEmptyValue(st.raw('SDS'))) throw new FieldError(st.field('SDS'), 'per-service certificates (SDS) are not supported by meshd: the gateway serves one certificate, -tls-cert-file; remove it');
    refuseLimits(s, 'an ingress service');
    return { name, hosts, requestHeaders, responseHeaders, meta: decodeMeta(s) };
  });
  return { port, protocol, services, ...(tls === null ? {} : { tls }) };
}

/** Decodes an `ingress-gateway` document (its Kind, if given, must say so). */
export function decodeIngressGateway(raw: unknown): IngressGatewayEntry {
  const e = new WireObject(raw, '', ENTRY_KEYS);
  expectKind(e, 'ingress-gateway');
  ignoreReadOnlyIndexes(e);
  const name = decodeEntryName(e);
  rejectEnterpriseTenancy(e);
  const meta = decodeMeta(e);
  const tls = decodeTls(e);
  const defaults = e.object('Defaults', LIMIT_KEYS);
  if (defaults !== null) refuseLimits(defaults, 'an ingress gateway');
  const ports = new Map<number, number>();
  const listeners = e.objects('Listeners', LISTENER_KEYS).map((l, i) => decodeListener(l, ports, i, tls));
  // The entry's block is always in Consul's JSON (a struct): { Enabled = false } and no
  // version is the same as none, and decodes so (encode -> decode gives the same value).
  const gatewayTls = tls === null || (!tls.enabled && tls.minVersion === '') ? {} : { tls };
  return { kind: 'ingress-gateway', name, meta, listeners, ...gatewayTls };
}

function encodeService(s: IngressService): JsonObject {
  // Consul's IngressService: Hosts has no omitempty (null when there are none).
  const out: JsonObject = { Name: s.name, Hosts: s.hosts.length === 0 ? null : [...s.hosts] };
  const req = encodeHeaderModifiers(s.requestHeaders);
  if (req !== undefined) out.RequestHeaders = req;
  const res = encodeHeaderModifiers(s.responseHeaders);
  if (res !== undefined) out.ResponseHeaders = res;
  const meta = encodeMeta(s.meta);
  if (meta !== undefined) out.Meta = meta;
  return out;
}

/** Consul's GatewayTLSConfig JSON: Enabled always, TLSMinVersion omitempty. */
function encodeTls(t: IngressTls | undefined): JsonObject {
  const out: JsonObject = { Enabled: t?.enabled ?? false };
  if (t !== undefined && t.minVersion !== '') out.TLSMinVersion = t.minVersion;
  return out;
}

/**
 * The body fields of Consul's JSON after Kind and Name (the entry's TLS is a struct there:
 * always present; a listener's is a pointer with omitempty: present when it was given).
 */
export function encodeIngressGatewayBody(e: IngressGatewayEntry): JsonObject {
  const out: JsonObject = {
    TLS: encodeTls(e.tls),
    Listeners: e.listeners.map((l) => ({ Port: l.port, Protocol: l.protocol, ...(l.tls === undefined ? {} : { TLS: encodeTls(l.tls) }), Services: l.services.map(encodeService) })),
  };
  const meta = encodeMeta(e.meta);
  if (meta !== undefined) out.Meta = meta;
  return out;
}

/** The exact service names an entry exposes (the wildcard left out), sorted, once each. */
export function ingressServiceNames(e: IngressGatewayEntry): string[] {
  const out = new Set<string>();
  for (const l of e.listeners) for (const s of l.services) if (s.name !== WILDCARD_SERVICE) out.add(s.name);
  return [...out].sort();
}
