// Load balancing over one target's healthy endpoints, per request: the five policies that a
// service-resolver's LoadBalancer names, with Envoy's semantics behind each.
//
// A Balancer is built for one endpoint set and is immutable in its choice structure (ring,
// Maglev table); when the set changes (catalog update, outlier ejection) the caller builds a
// new one. Picks allocate nothing. Endpoints are identified by `${host}:${port}`; the
// `service` field travels along but plays no part in the choice.
//
// Hashing: MurmurHash3 x86_32 (Austin Appleby's public-domain algorithm) over the UTF-8 bytes
// of a string, computed while walking the UTF-16 code units, so no byte buffer is made. Lone
// surrogates hash as U+FFFD, as TextEncoder would encode them. The seed gives independent hash
// functions: ring points are hash(key, replica), Maglev uses two fixed seeds.

import type { HashPolicy, LoadBalancerPolicy, LoadBalancerSpec } from '../chain/types.ts';
import type { Endpoint } from '../workers/messages.ts';

// ---------------------------------------------------------------------------------------------
// MurmurHash3 x86_32 over UTF-8

// Streaming state. JavaScript runs one function at a time on a thread and hash32 calls nothing
// that could re-enter it, so module-level state is safe and spares an object per call.
let mH = 0;
let mK = 0;
let mLen = 0;

function mixByte(b: number): void {
  mK |= b << ((mLen & 3) << 3);
  mLen++;
  if ((mLen & 3) === 0) {
    let k = Math.imul(mK, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    mH ^= k;
    mH = (mH << 13) | (mH >>> 19);
    mH = (Math.imul(mH, 5) + 0xe6546b64) | 0;
    mK = 0;
  }
}

/** MurmurHash3 x86_32 of the UTF-8 encoding of `s`; an unsigned 32-bit integer. */
export function hash32(s: string, seed = 0): number {
  mH = seed | 0;
  mK = 0;
  mLen = 0;
  const n = s.length;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) {
      mixByte(c);
    } else if (c < 0x800) {
      mixByte(0xc0 | (c >> 6));
      mixByte(0x80 | (c & 0x3f));
    } else if (c >= 0xd800 && c <= 0xdfff) {
      const d = i + 1 < n ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && d >= 0xdc00 && d <= 0xdfff) {
        const cp = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        mixByte(0xf0 | (cp >> 18));
        mixByte(0x80 | ((cp >> 12) & 0x3f));
        mixByte(0x80 | ((cp >> 6) & 0x3f));
        mixByte(0x80 | (cp & 0x3f));
        i++;
      } else {
        mixByte(0xef);
        mixByte(0xbf);
        mixByte(0xbd);
      }
    } else {
      mixByte(0xe0 | (c >> 12));
      mixByte(0x80 | ((c >> 6) & 0x3f));
      mixByte(0x80 | (c & 0x3f));
    }
  }
  let h = mH;
  if ((mLen & 3) !== 0) {
    let k = Math.imul(mK, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  h ^= mLen;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

// ---------------------------------------------------------------------------------------------
// Request hash (Envoy's route hash_policy)

/** What requestHashKey reads from a request. Header names are passed as the policy spells them. */
export interface HashableRequest {
  header(name: string): string | undefined;
  cookie(name: string): string | undefined;
  query(name: string): string | undefined;
  readonly sourceIp: string;
}

/**
 * The request's hash for ring_hash/maglev, as Envoy computes it from a route's hash policies:
 * policies are evaluated in order; each that yields a value contributes hash(value), combined as
 * `hash = rotl32(hash, 1) ^ h`; evaluation stops after the first `terminal` policy that yielded a
 * hash. null when no policy yielded one (the balancer then picks a random host).
 *
 * A header or query parameter that is present (even empty) yields a hash; an absent one does not.
 * A source-IP policy yields one when the address is non-empty.
 *
 * Not done: Envoy's cookie generation. With a CookieConfig TTL, Envoy sets a cookie on the
 * response when the request lacks it, so later requests stick; here an absent cookie simply
 * yields no hash.
 */
export function requestHashKey(policies: readonly HashPolicy[], req: HashableRequest): number | null {
  let hash = 0;
  let any = false;
  for (let i = 0; i < policies.length; i++) {
    const p = policies[i] as HashPolicy;
    let v: string | undefined;
    if (p.sourceIp) {
      v = req.sourceIp === '' ? undefined : req.sourceIp;
    } else if (p.field === 'header') {
      v = req.header(p.fieldValue);
    } else if (p.field === 'cookie') {
      v = req.cookie(p.fieldValue);
    } else if (p.field === 'query_parameter') {
      v = req.query(p.fieldValue);
    }
    if (v === undefined) continue;
    const h = hash32(v);
    hash = any ? (((hash << 1) | (hash >>> 31)) ^ h) >>> 0 : h;
    any = true;
    if (p.terminal) break;
  }
  return any ? hash : null;
}

// ---------------------------------------------------------------------------------------------
// Balancers

export interface Balancer {
  readonly policy: LoadBalancerPolicy;
  readonly endpoints: readonly Endpoint[];
  /**
   * The endpoint for one request (or one retry), null when there are no endpoints. `hashKey`
   * matters to ring_hash and maglev only (null ⇒ a random host, as Envoy). With `exclude` (the
   * endpoint that just failed), an endpoint with a different host:port is returned whenever one
   * exists.
   */
  pick(hashKey: number | null, exclude?: Endpoint | null): Endpoint | null;
  /** Active-request accounting (least_request uses it; kept for every policy). */
  onRequestStart(ep: Endpoint): void;
  onRequestEnd(ep: Endpoint): void;
  activeRequests(ep: Endpoint): number;
}

export interface BalancerOptions {
  /** Uniform in [0, 1); Math.random by default. */
  readonly random?: () => number;
}

export const DEFAULT_CHOICE_COUNT = 2;
export const DEFAULT_MIN_RING_SIZE = 1024;
export const DEFAULT_MAX_RING_SIZE = 8 * 1024 * 1024;
/** Maglev's lookup table size: Envoy's default, a prime. */
export const MAGLEV_TABLE_SIZE = 65537;

export function endpointKey(ep: Endpoint): string {
  return `${ep.host}:${ep.port}`;
}

function sameHost(a: Endpoint, b: Endpoint): boolean {
  return a === b || (a.port === b.port && a.host === b.host);
}

abstract class BaseBalancer implements Balancer {
  abstract readonly policy: LoadBalancerPolicy;
  readonly endpoints: readonly Endpoint[];
  protected readonly random: () => number;
  private readonly active: Int32Array;
  private readonly byRef: Map<Endpoint, number>;
  private readonly byKey: Map<string, number>;

  constructor(endpoints: readonly Endpoint[], opts: BalancerOptions | undefined) {
    this.endpoints = endpoints.slice();
    this.random = opts?.random ?? Math.random;
    this.active = new Int32Array(endpoints.length);
    this.byRef = new Map();
    this.byKey = new Map();
    for (let i = 0; i < this.endpoints.length; i++) {
      const ep = this.endpoints[i] as Endpoint;
      this.byRef.set(ep, i);
      const k = endpointKey(ep);
      if (!this.byKey.has(k)) this.byKey.set(k, i);
    }
  }

  abstract pick(hashKey: number | null, exclude?: Endpoint | null): Endpoint | null;

  /** Index of `ep` in `endpoints`: by identity (what pick returned), else by host:port; -1. */
  protected indexOf(ep: Endpoint): number {
    const i = this.byRef.get(ep);
    if (i !== undefined) return i;
    return this.byKey.get(endpointKey(ep)) ?? -1;
  }

  onRequestStart(ep: Endpoint): void {
    const i = this.indexOf(ep);
    if (i >= 0) this.active[i] = (this.active[i] as number) + 1;
  }

  /** Clamped at zero: a request begun on a previous balancer may end on this one. */
  onRequestEnd(ep: Endpoint): void {
    const i = this.indexOf(ep);
    if (i >= 0 && (this.active[i] as number) > 0) this.active[i] = (this.active[i] as number) - 1;
  }

  activeRequests(ep: Endpoint): number {
    const i = this.indexOf(ep);
    return i >= 0 ? (this.active[i] as number) : 0;
  }

  protected activeAt(i: number): number {
    return this.active[i] as number;
  }

  protected randomIndex(n: number): number {
    const i = Math.floor(this.random() * n);
    return i >= n ? n - 1 : i < 0 ? 0 : i;
  }

  /** The first endpoint from `start` on (cyclically) that is not `exclude`'s host; else `fallback`. */
  protected firstOther(start: number, exclude: Endpoint, fallback: Endpoint): Endpoint {
    const eps = this.endpoints;
    const n = eps.length;
    for (let k = 0; k < n; k++) {
      let i = start + k;
      if (i >= n) i -= n;
      const ep = eps[i] as Endpoint;
      if (!sameHost(ep, exclude)) return ep;
    }
    return fallback;
  }
}

/** Envoy's unweighted round robin; the cursor starts at a random index so workers do not march in step. */
export class RoundRobinBalancer extends BaseBalancer {
  readonly policy = 'round_robin';
  private next: number;

  constructor(endpoints: readonly Endpoint[], opts?: BalancerOptions) {
    super(endpoints, opts);
    this.next = endpoints.length > 0 ? this.randomIndex(endpoints.length) : 0;
  }

  pick(_hashKey: number | null, exclude?: Endpoint | null): Endpoint | null {
    const n = this.endpoints.length;
    if (n === 0) return null;
    let i = this.next;
    if (i >= n) i = 0;
    this.next = i + 1 === n ? 0 : i + 1;
    const ep = this.endpoints[i] as Endpoint;
    if (exclude == null || !sameHost(ep, exclude)) return ep;
    const other = this.firstOther(this.next, exclude, ep);
    if (other !== ep) {
      const j = this.indexOf(other);
      this.next = j + 1 === n ? 0 : j + 1;
    }
    return other;
  }
}

export class RandomBalancer extends BaseBalancer {
  readonly policy = 'random';

  pick(_hashKey: number | null, exclude?: Endpoint | null): Endpoint | null {
    const n = this.endpoints.length;
    if (n === 0) return null;
    const i = this.randomIndex(n);
    const ep = this.endpoints[i] as Endpoint;
    if (exclude == null || !sameHost(ep, exclude)) return ep;
    // One more draw among the others, then a scan (duplicates of the excluded host:port).
    const j = this.randomIndex(n);
    return this.firstOther(j, exclude, ep);
  }
}

/**
 * Envoy's least_request with equal weights: "power of N choices". Sample `choiceCount` hosts
 * uniformly (with replacement) and take the one with the fewest active requests; on a tie the
 * earlier sample wins.
 */
export class LeastRequestBalancer extends BaseBalancer {
  readonly policy = 'least_request';
  readonly choiceCount: number;

  constructor(endpoints: readonly Endpoint[], choiceCount: number, opts?: BalancerOptions) {
    super(endpoints, opts);
    this.choiceCount = choiceCount >= 1 ? Math.floor(choiceCount) : DEFAULT_CHOICE_COUNT;
  }

  pick(_hashKey: number | null, exclude?: Endpoint | null): Endpoint | null {
    const n = this.endpoints.length;
    if (n === 0) return null;
    let best = -1;
    let bestActive = 0;
    let firstSample = 0;
    for (let c = 0; c < this.choiceCount; c++) {
      const i = this.randomIndex(n);
      if (c === 0) firstSample = i;
      if (exclude != null && sameHost(this.endpoints[i] as Endpoint, exclude)) continue;
      const a = this.activeAt(i);
      if (best < 0 || a < bestActive) {
        best = i;
        bestActive = a;
      }
    }
    if (best >= 0) return this.endpoints[best] as Endpoint;
    // Every sample was the excluded host.
    const fallback = this.endpoints[firstSample] as Endpoint;
    return exclude != null ? this.firstOther(firstSample, exclude, fallback) : fallback;
  }
}

/**
 * Endpoints in a canonical order (by host:port), so that the ring and the Maglev table depend on
 * the set only, not on the order the catalog listed it in.
 */
function canonicalOrder(endpoints: readonly Endpoint[]): { eps: Endpoint[]; keys: string[] } {
  const keyed = endpoints.map((ep) => ({ ep, key: endpointKey(ep) }));
  keyed.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  return { eps: keyed.map((e) => e.ep), keys: keyed.map((e) => e.key) };
}

/**
 * Envoy's ring_hash (Karger consistent hashing). Every endpoint puts `hashesPerHost` points on a
 * 32-bit ring, at hash32(host:port, replica); a request goes to the owner of the first point at or
 * after its hash, wrapping. Sizing as Envoy with equal weights: hashesPerHost =
 * floor(min(ceil(min/N)·N, max) / N), at least 1, so the ring has max(min, N)-ish points rounded
 * up to a multiple of N and never more than max (unless N itself exceeds max: every host keeps one
 * point). Points that collide are ordered by host:port.
 *
 * Hashes live in a sorted Uint32Array with a parallel Int32Array of endpoint indices; a pick is
 * one binary search.
 */
export class RingHashBalancer extends BaseBalancer {
  readonly policy = 'ring_hash';
  readonly hashesPerHost: number;
  private readonly ringHashes: Uint32Array;
  private readonly ringOwners: Int32Array;
  private readonly ringEps: readonly Endpoint[];

  constructor(endpoints: readonly Endpoint[], minimumRingSize: number, maximumRingSize: number, opts?: BalancerOptions) {
    super(endpoints, opts);
    const { eps, keys } = canonicalOrder(this.endpoints);
    this.ringEps = eps;
    const n = eps.length;
    let max = maximumRingSize > 0 ? Math.floor(maximumRingSize) : DEFAULT_MAX_RING_SIZE;
    const min = minimumRingSize > 0 ? Math.floor(minimumRingSize) : DEFAULT_MIN_RING_SIZE;
    if (max < min) max = min;
    if (n === 0) {
      this.hashesPerHost = 0;
      this.ringHashes = new Uint32Array(0);
      this.ringOwners = new Int32Array(0);
      return;
    }
    if (n >= 1 << 21) throw new RangeError(`ring_hash: too many endpoints (${n})`);
    const scale = Math.min(Math.ceil(min / n) * n, max);
    const per = Math.max(1, Math.floor(scale / n));
    this.hashesPerHost = per;
    const size = per * n;
    // hash·2^21 + owner is exact in a double (53 bits), so a numeric sort orders by hash, then
    // by canonical owner.
    const packed = new Float64Array(size);
    let p = 0;
    for (let i = 0; i < n; i++) {
      const key = keys[i] as string;
      for (let r = 0; r < per; r++) packed[p++] = hash32(key, r) * 2097152 + i;
    }
    packed.sort();
    this.ringHashes = new Uint32Array(size);
    this.ringOwners = new Int32Array(size);
    for (let j = 0; j < size; j++) {
      const v = packed[j] as number;
      const owner = v % 2097152;
      this.ringOwners[j] = owner;
      this.ringHashes[j] = (v - owner) / 2097152;
    }
  }

  get ringSize(): number {
    return this.ringHashes.length;
  }

  pick(hashKey: number | null, exclude?: Endpoint | null): Endpoint | null {
    const size = this.ringHashes.length;
    if (size === 0) return null;
    let j: number;
    if (hashKey === null) {
      j = this.randomIndex(size);
    } else {
      const h = hashKey >>> 0;
      let lo = 0;
      let hi = size;
      const hs = this.ringHashes;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if ((hs[mid] as number) < h) lo = mid + 1;
        else hi = mid;
      }
      j = lo === size ? 0 : lo;
    }
    const ep = this.ringEps[this.ringOwners[j] as number] as Endpoint;
    if (exclude == null || !sameHost(ep, exclude)) return ep;
    // Walk on along the ring to the next distinct host (Envoy's behaviour for retries).
    for (let k = 1; k < size; k++) {
      let t = j + k;
      if (t >= size) t -= size;
      const other = this.ringEps[this.ringOwners[t] as number] as Endpoint;
      if (!sameHost(other, exclude)) return other;
    }
    return ep;
  }
}

/**
 * Envoy's maglev (Eisenbud et al., NSDI 2016) with equal weights. Each endpoint's preference list
 * is the permutation offset + j·skip (mod M) of the M = 65537 table slots, with offset =
 * hash32(key, seed₁) mod M and skip = hash32(key, seed₂) mod (M − 1) + 1 (M prime, so any skip
 * visits every slot). Endpoints, in canonical order, take turns claiming their next free preferred
 * slot until the table is full: every endpoint gets ⌊M/N⌋ or ⌈M/N⌉ slots. A pick is one lookup.
 */
export class MaglevBalancer extends BaseBalancer {
  readonly policy = 'maglev';
  private readonly table: Int32Array;
  private readonly tableEps: readonly Endpoint[];

  constructor(endpoints: readonly Endpoint[], opts?: BalancerOptions) {
    super(endpoints, opts);
    const { eps, keys } = canonicalOrder(this.endpoints);
    this.tableEps = eps;
    const n = eps.length;
    const m = MAGLEV_TABLE_SIZE;
    if (n === 0) {
      this.table = new Int32Array(0);
      return;
    }
    const next = new Float64Array(n);
    const skip = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const key = keys[i] as string;
      next[i] = hash32(key, 0x2b7e1516) % m;
      skip[i] = (hash32(key, 0x28aed2a6) % (m - 1)) + 1;
    }
    const table = new Int32Array(m).fill(-1);
    let filled = 0;
    while (filled < m) {
      for (let i = 0; i < n && filled < m; i++) {
        let c = next[i] as number;
        const s = skip[i] as number;
        while ((table[c] as number) >= 0) {
          c += s;
          if (c >= m) c -= m;
        }
        table[c] = i;
        c += s;
        if (c >= m) c -= m;
        next[i] = c;
        filled++;
      }
    }
    this.table = table;
  }

  /** Table slots owned by each endpoint, keyed by host:port (for tests and diagnostics). */
  shares(): Map<string, number> {
    const out = new Map<string, number>();
    for (let c = 0; c < this.table.length; c++) {
      const k = endpointKey(this.tableEps[this.table[c] as number] as Endpoint);
      out.set(k, (out.get(k) ?? 0) + 1);
    }
    return out;
  }

  pick(hashKey: number | null, exclude?: Endpoint | null): Endpoint | null {
    const m = this.table.length;
    if (m === 0) return null;
    const c = hashKey === null ? this.randomIndex(m) : (hashKey >>> 0) % m;
    const ep = this.tableEps[this.table[c] as number] as Endpoint;
    if (exclude == null || !sameHost(ep, exclude)) return ep;
    // The next slot owned by another host: slots interleave, so this is a short walk.
    for (let k = 1; k < m; k++) {
      let t = c + k;
      if (t >= m) t -= m;
      const other = this.tableEps[this.table[t] as number] as Endpoint;
      if (!sameHost(other, exclude)) return other;
    }
    return ep;
  }
}

/** A balancer for `endpoints` under `spec.policy`. */
export function createBalancer(spec: LoadBalancerSpec, endpoints: readonly Endpoint[], opts?: BalancerOptions): Balancer {
  switch (spec.policy) {
    case 'random':
      return new RandomBalancer(endpoints, opts);
    case 'least_request':
      return new LeastRequestBalancer(endpoints, spec.choiceCount, opts);
    case 'ring_hash':
      return new RingHashBalancer(endpoints, spec.minimumRingSize, spec.maximumRingSize, opts);
    case 'maglev':
      return new MaglevBalancer(endpoints, opts);
    case 'round_robin':
    default:
      return new RoundRobinBalancer(endpoints, opts);
  }
}
