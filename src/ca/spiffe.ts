// SPIFFE ID model, strict parser and builders for Consul-style mesh identities.
//
// Runs on: any thread. parseSpiffeId is called on the data plane once per handshake
// (after der.ts has pulled the URI SAN out of the peer certificate), so it is written
// as a hand-rolled scanner: no regex, no URL object, one split.
//
// Formats follow consul-mesh.md §1.2 (Consul's agent/connect/uri_*.go):
//   signing (CA) cert      spiffe://<td>
//   service                spiffe://<td>[/ap/<ap>]/ns/<ns>/dc/<dc>/svc/<svc>
//   client agent           spiffe://<td>[/ap/<ap>]/agent/client/dc/<dc>/id/<node>
//   server agent           spiffe://<td>/agent/server/dc/<dc>
//   mesh gateway           spiffe://<td>[/ap/<ap>]/gateway/mesh/dc/<dc>
//
// Where we are stricter than Consul, and why:
// * Consul URL-unescapes each segment; we reject any `%`. Our CA only issues IDs built
//   by the builders below, which never escape, so every legitimate ID has exactly one
//   spelling. That lets the authorization layer compare IDs as strings.
// * `/ap/default/...` is rejected: Consul never emits it (it omits `/ap/` for the
//   default partition), and accepting it would give one identity two spellings.
// * Segment alphabet is `[A-Za-z0-9._-]`: Consul service, namespace, partition,
//   datacenter and node names are DNS-label-ish (letters, digits, `-`, `_`, `.`); `.`
//   and `..` on their own are rejected so a segment can never look like a path step.
// * Trust domain alphabet is the SPIFFE spec's (`[a-z0-9._-]`, lower case only), with
//   no empty DNS labels. No port, userinfo, query or fragment can get through because
//   `:`, `@`, `?` and `#` are outside both alphabets.

export type ServiceId = {
  kind: 'service';
  trustDomain: string;
  partition: string;
  namespace: string;
  datacenter: string;
  service: string;
};

export type SigningId = { kind: 'signing'; trustDomain: string };

export type AgentId = {
  kind: 'agent';
  trustDomain: string;
  partition: string;
  datacenter: string;
  node: string;
};

export type ServerId = { kind: 'server'; trustDomain: string; datacenter: string };

export type MeshGatewayId = {
  kind: 'mesh-gateway';
  trustDomain: string;
  partition: string;
  datacenter: string;
};

export type SpiffeId = ServiceId | SigningId | AgentId | ServerId | MeshGatewayId;

/** Partition name Consul uses when the URI has no `/ap/` segment (§1.2). */
export const DEFAULT_PARTITION = 'default';

/** Longest URI we look at. SPIFFE IDs are short; 2048 is the common URL limit. */
export const MAX_SPIFFE_ID_LENGTH = 2048;

/** Longest trust domain: a DNS name (RFC 1035 §2.3.4 caps names at 255 octets). */
const MAX_TRUST_DOMAIN_LENGTH = 255;

const SCHEME = 'spiffe://';

const CH_DOT = 0x2e;
const CH_DASH = 0x2d;
const CH_UNDERSCORE = 0x5f;

function isLowerAlnum(c: number): boolean {
  return (c >= 0x61 && c <= 0x7a) || (c >= 0x30 && c <= 0x39);
}

/**
 * True when `s` may appear as one path segment of a SPIFFE ID we accept:
 * non-empty, only `[A-Za-z0-9._-]`, and not `.` or `..`.
 */
export function isValidSegment(s: string): boolean {
  const n = s.length;
  if (n === 0) return false;
  if (s === '.' || s === '..') return false;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (isLowerAlnum(c) || (c >= 0x41 && c <= 0x5a) || c === CH_DOT || c === CH_DASH || c === CH_UNDERSCORE) {
      continue;
    }
    return false;
  }
  return true;
}

/**
 * True when `s` is a trust domain we accept: 1..255 chars of `[a-z0-9._-]`, no empty
 * dot-separated label (so no leading, trailing or doubled dot).
 */
export function isValidTrustDomain(s: string): boolean {
  const n = s.length;
  if (n === 0 || n > MAX_TRUST_DOMAIN_LENGTH) return false;
  let prevDot = true; // a leading dot is an empty label
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c === CH_DOT) {
      if (prevDot) return false;
      prevDot = true;
      continue;
    }
    if (!(isLowerAlnum(c) || c === CH_DASH || c === CH_UNDERSCORE)) return false;
    prevDot = false;
  }
  return !prevDot;
}

/**
 * Parses a SPIFFE ID strictly. Returns null for anything that is not exactly one of the
 * canonical forms above. Never throws, whatever the input.
 */
export function parseSpiffeId(uri: string): SpiffeId | null {
  if (typeof uri !== 'string') return null;
  if (uri.length > MAX_SPIFFE_ID_LENGTH || !uri.startsWith(SCHEME)) return null;

  const slash = uri.indexOf('/', SCHEME.length);
  const host = slash < 0 ? uri.slice(SCHEME.length) : uri.slice(SCHEME.length, slash);
  if (!isValidTrustDomain(host)) return null;

  if (slash < 0) {
    // §1.2: an ID with no path is a signing ID only if its host has a dot
    // (Consul splits it into ClusterID and domain at the first dot).
    return host.indexOf('.') > 0 ? { kind: 'signing', trustDomain: host } : null;
  }

  // `uri.slice(slash + 1)` of "/a/b" is "a/b"; a trailing slash or "//" yields an empty
  // segment, which isValidSegment rejects.
  const segs = uri.slice(slash + 1).split('/');
  for (let i = 0; i < segs.length; i++) {
    if (!isValidSegment(segs[i] as string)) return null;
  }

  let i = 0;
  let partition = DEFAULT_PARTITION;
  if (segs[0] === 'ap') {
    const ap = segs[1];
    // Non-canonical: Consul omits /ap/ for the default partition.
    if (ap === undefined || ap === DEFAULT_PARTITION) return null;
    partition = ap;
    i = 2;
  }
  const rest = segs.length - i;
  const head = segs[i];

  if (head === 'ns' && rest === 6 && segs[i + 2] === 'dc' && segs[i + 4] === 'svc') {
    return {
      kind: 'service',
      trustDomain: host,
      partition,
      namespace: segs[i + 1] as string,
      datacenter: segs[i + 3] as string,
      service: segs[i + 5] as string,
    };
  }
  if (head === 'agent' && segs[i + 1] === 'client' && rest === 6 && segs[i + 2] === 'dc' && segs[i + 4] === 'id') {
    return {
      kind: 'agent',
      trustDomain: host,
      partition,
      datacenter: segs[i + 3] as string,
      node: segs[i + 5] as string,
    };
  }
  if (head === 'agent' && segs[i + 1] === 'server' && rest === 4 && segs[i + 2] === 'dc' && i === 0) {
    // Server IDs have no partition form in Consul.
    return { kind: 'server', trustDomain: host, datacenter: segs[i + 3] as string };
  }
  if (head === 'gateway' && segs[i + 1] === 'mesh' && rest === 4 && segs[i + 2] === 'dc') {
    return { kind: 'mesh-gateway', trustDomain: host, partition, datacenter: segs[i + 3] as string };
  }
  return null;
}

function need(ok: boolean, what: string, value: string): void {
  if (!ok) throw new RangeError(`invalid SPIFFE ${what} ${JSON.stringify(value)}: see src/ca/spiffe.ts for the alphabet`);
}

function partitionPrefix(partition: string): string {
  if (partition === '' || partition === DEFAULT_PARTITION) return '';
  need(isValidSegment(partition), 'partition', partition);
  return `/ap/${partition}`;
}

/**
 * Builds a service SPIFFE ID. Throws RangeError on a segment outside the alphabet: a
 * caller passing one has skipped validation at the edge, which is a bug, not traffic.
 */
export function serviceSpiffeId(
  trustDomain: string,
  namespace: string,
  datacenter: string,
  service: string,
  partition: string = DEFAULT_PARTITION,
): string {
  need(isValidTrustDomain(trustDomain), 'trust domain', trustDomain);
  need(isValidSegment(namespace), 'namespace', namespace);
  need(isValidSegment(datacenter), 'datacenter', datacenter);
  need(isValidSegment(service), 'service', service);
  return `${SCHEME}${trustDomain}${partitionPrefix(partition)}/ns/${namespace}/dc/${datacenter}/svc/${service}`;
}

/** Builds the signing (CA) SPIFFE ID, `spiffe://<td>`. */
export function signingSpiffeId(trustDomain: string): string {
  need(isValidTrustDomain(trustDomain) && trustDomain.indexOf('.') > 0, 'trust domain', trustDomain);
  return `${SCHEME}${trustDomain}`;
}

/** Formats any parsed ID back to its canonical URI; `formatSpiffeId(parseSpiffeId(u)!) === u`. */
export function formatSpiffeId(id: SpiffeId): string {
  switch (id.kind) {
    case 'signing':
      return signingSpiffeId(id.trustDomain);
    case 'service':
      return serviceSpiffeId(id.trustDomain, id.namespace, id.datacenter, id.service, id.partition);
    case 'agent':
      need(isValidTrustDomain(id.trustDomain), 'trust domain', id.trustDomain);
      need(isValidSegment(id.datacenter), 'datacenter', id.datacenter);
      need(isValidSegment(id.node), 'node', id.node);
      return `${SCHEME}${id.trustDomain}${partitionPrefix(id.partition)}/agent/client/dc/${id.datacenter}/id/${id.node}`;
    case 'server':
      need(isValidTrustDomain(id.trustDomain), 'trust domain', id.trustDomain);
      need(isValidSegment(id.datacenter), 'datacenter', id.datacenter);
      return `${SCHEME}${id.trustDomain}/agent/server/dc/${id.datacenter}`;
    case 'mesh-gateway':
      need(isValidTrustDomain(id.trustDomain), 'trust domain', id.trustDomain);
      need(isValidSegment(id.datacenter), 'datacenter', id.datacenter);
      return `${SCHEME}${id.trustDomain}${partitionPrefix(id.partition)}/gateway/mesh/dc/${id.datacenter}`;
  }
}

/**
 * Trust domain for a cluster ID (§1.1): `<ClusterID>.consul`, lower-cased. The `.consul`
 * suffix is fixed and independent of the DNS `domain` setting.
 */
export function trustDomainFor(clusterId: string): string {
  return `${clusterId}.consul`.toLowerCase();
}
