// Load-balancer policies: hashing, request hash keys, and each policy's choice rules, with
// fast-check properties for consistency (rebuilds, removals) and retries' exclusion.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  createBalancer,
  endpointKey,
  hash32,
  LeastRequestBalancer,
  MaglevBalancer,
  MAGLEV_TABLE_SIZE,
  requestHashKey,
  RingHashBalancer,
  RoundRobinBalancer,
  type HashableRequest,
} from '../../src/dataplane/lb.ts';
import type { HashPolicy, LoadBalancerPolicy, LoadBalancerSpec } from '../../src/chain/types.ts';
import type { Endpoint } from '../../src/workers/messages.ts';

function spec(policy: LoadBalancerPolicy, over: Partial<LoadBalancerSpec> = {}): LoadBalancerSpec {
  return { policy, choiceCount: 0, minimumRingSize: 0, maximumRingSize: 0, hashPolicies: [], ...over };
}

function eps(n: number): Endpoint[] {
  return Array.from({ length: n }, (_v, i) => ({ host: `10.0.${i >> 8}.${i & 255}`, port: 8080 + (i % 3), service: 'api' }));
}

/** Distinct host:port endpoint sets. */
function arbEndpoints(min: number, max: number): fc.Arbitrary<Endpoint[]> {
  return fc
    .uniqueArray(fc.tuple(fc.integer({ min: 1, max: 254 }), fc.integer({ min: 20000, max: 20040 })), {
      minLength: min,
      maxLength: max,
      selector: (t) => `${t[0]}:${t[1]}`,
    })
    .map((ts) => ts.map(([a, p]) => ({ host: `10.1.0.${a}`, port: p, service: 'api' })));
}

/** A deterministic shuffle from a seed (copies; endpoint objects are copied too). */
function shuffled(list: readonly Endpoint[], seed: number): Endpoint[] {
  const out = list.map((e) => ({ ...e }));
  let s = seed >>> 0 || 1;
  for (let i = out.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    const j = s % (i + 1);
    const t = out[i] as Endpoint;
    out[i] = out[j] as Endpoint;
    out[j] = t;
  }
  return out;
}

/** A random source that replays `values` (then repeats the last). */
function replay(values: readonly number[]): () => number {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)] ?? 0;
}

function key(ep: Endpoint | null): string {
  return ep === null ? 'null' : endpointKey(ep);
}

// Reference MurmurHash3 x86_32 over a byte buffer, to check the streaming UTF-8 version.
function murmurBytes(b: Uint8Array, seed: number): number {
  let h = seed | 0;
  const n = b.length;
  const blocks = n & ~3;
  for (let i = 0; i < blocks; i += 4) {
    let k = (b[i] as number) | ((b[i + 1] as number) << 8) | ((b[i + 2] as number) << 16) | ((b[i + 3] as number) << 24);
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const tail = n & 3;
  if (tail > 0) {
    let k = 0;
    if (tail === 3) k ^= (b[blocks + 2] as number) << 16;
    if (tail >= 2) k ^= (b[blocks + 1] as number) << 8;
    k ^= b[blocks] as number;
    k = Math.imul(k, 0xcc9e2d51);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, 0x1b873593);
    h ^= k;
  }
  h ^= n;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

test('hash32 is MurmurHash3 x86_32: published vectors', () => {
  assert.equal(hash32(''), 0);
  assert.equal(hash32('', 1), 0x514e28b7);
  assert.equal(hash32('hello'), 0x248bfa47);
  assert.equal(hash32('The quick brown fox jumps over the lazy dog'), 0x2e4ff723);
});

test('hash32 over UTF-16 strings equals MurmurHash3 of their UTF-8 bytes (lone surrogates as U+FFFD)', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 40 }), fc.integer({ min: 0, max: 0xffffffff }), (s, seed) => {
      assert.equal(hash32(s, seed), murmurBytes(Buffer.from(s, 'utf8'), seed));
    }),
    { numRuns: 500 },
  );
  assert.equal(hash32('\ud800x'), murmurBytes(Buffer.from([0xef, 0xbf, 0xbd, 0x78]), 0));
});

// ------------------------------------------------------------------------------------------
// requestHashKey

function hp(over: Partial<HashPolicy>): HashPolicy {
  return { field: '', fieldValue: '', sourceIp: false, terminal: false, cookie: null, ...over };
}

function req(h: Record<string, string>, c: Record<string, string> = {}, q: Record<string, string> = {}, ip = '10.9.9.9'): HashableRequest {
  return { header: (n) => h[n], cookie: (n) => c[n], query: (n) => q[n], sourceIp: ip };
}

const rotl1 = (x: number): number => ((x << 1) | (x >>> 31)) >>> 0;

test('requestHashKey: no policy or no value ⇒ null; one value ⇒ its hash', () => {
  assert.equal(requestHashKey([], req({ a: 'x' })), null);
  assert.equal(requestHashKey([hp({ field: 'header', fieldValue: 'x-user' })], req({})), null);
  assert.equal(requestHashKey([hp({ field: 'header', fieldValue: 'x-user' })], req({ 'x-user': 'alice' })), hash32('alice'));
  assert.equal(requestHashKey([hp({ field: 'header', fieldValue: 'x-user' })], req({ 'x-user': '' })), hash32(''));
  assert.equal(requestHashKey([hp({ field: 'cookie', fieldValue: 'sid' })], req({}, { sid: 's1' })), hash32('s1'));
  assert.equal(requestHashKey([hp({ field: 'query_parameter', fieldValue: 'u' })], req({}, {}, { u: 'q' })), hash32('q'));
  assert.equal(requestHashKey([hp({ sourceIp: true })], req({})), hash32('10.9.9.9'));
  assert.equal(requestHashKey([hp({ sourceIp: true })], req({}, {}, {}, '')), null);
});

test('requestHashKey combines values in order with rotl(hash,1) ^ h and stops after a terminal hit', () => {
  const policies = [
    hp({ field: 'header', fieldValue: 'x-a' }),
    hp({ field: 'header', fieldValue: 'x-b', terminal: true }),
    hp({ sourceIp: true }),
  ];
  // Both headers: the terminal second one ends evaluation.
  assert.equal(requestHashKey(policies, req({ 'x-a': 'A', 'x-b': 'B' })), (rotl1(hash32('A')) ^ hash32('B')) >>> 0);
  // The terminal one yields nothing, so evaluation goes on to the source IP.
  assert.equal(requestHashKey(policies, req({ 'x-a': 'A' })), (rotl1(hash32('A')) ^ hash32('10.9.9.9')) >>> 0);
  assert.equal(requestHashKey(policies, req({})), hash32('10.9.9.9'));
  // A terminal first policy that hits: nothing else counts.
  assert.equal(requestHashKey([hp({ sourceIp: true, terminal: true }), hp({ field: 'header', fieldValue: 'x-a' })], req({ 'x-a': 'A' })), hash32('10.9.9.9'));
});

// ------------------------------------------------------------------------------------------
// Policies

test('createBalancer picks the class for each policy; empty sets pick null', () => {
  const list = eps(3);
  assert.ok(createBalancer(spec('round_robin'), list) instanceof RoundRobinBalancer);
  const lr = createBalancer(spec('least_request'), list);
  assert.ok(lr instanceof LeastRequestBalancer && lr.choiceCount === 2);
  assert.ok(createBalancer(spec('ring_hash'), list) instanceof RingHashBalancer);
  assert.ok(createBalancer(spec('maglev'), list) instanceof MaglevBalancer);
  assert.equal(createBalancer(spec('random'), list).policy, 'random');
  for (const p of ['round_robin', 'random', 'least_request', 'ring_hash', 'maglev'] as const) {
    const b = createBalancer(spec(p), []);
    assert.equal(b.pick(123), null, p);
    assert.equal(b.pick(null, list[0]), null, p);
  }
});

test('round_robin cycles through every endpoint in order, from a random start', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 30 }), fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), (n, r0) => {
      const list = eps(n);
      const b = createBalancer(spec('round_robin'), list, { random: () => r0 });
      const start = Math.floor(r0 * n);
      for (let k = 0; k < 3 * n; k++) assert.equal(b.pick(null), list[(start + k) % n]);
    }),
  );
});

test('random picks floor(random × N)', () => {
  const list = eps(10);
  const b = createBalancer(spec('random'), list, { random: replay([0, 0.55, 0.999999]) });
  assert.equal(b.pick(null), list[0]);
  assert.equal(b.pick(null), list[5]);
  assert.equal(b.pick(null), list[9]);
});

test('exclude never returns the excluded endpoint when another exists, for every policy', () => {
  const policies = ['round_robin', 'random', 'least_request', 'ring_hash', 'maglev'] as const;
  fc.assert(
    fc.property(
      fc.constantFrom(...policies),
      arbEndpoints(2, 12),
      fc.nat(),
      fc.option(fc.integer({ min: 0, max: 0xffffffff })),
      fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 1, maxLength: 8 }),
      (policy, list, which, hashKey, rs) => {
        const b = createBalancer(spec(policy, { minimumRingSize: 64 }), list, { random: replay(rs) });
        const bad = list[which % list.length] as Endpoint;
        // A copy: exclusion is by host:port, not identity.
        const got = b.pick(hashKey, { ...bad });
        assert.notEqual(got, null);
        assert.notEqual(key(got), key(bad));
      },
    ),
    { numRuns: 300 },
  );
  // The only endpoint is returned even when excluded.
  for (const p of policies) {
    const one = eps(1);
    assert.equal(createBalancer(spec(p), one).pick(7, one[0]), one[0], p);
  }
});

test('least_request (P2C) takes the less loaded of the sampled hosts; ties go to the first sample', () => {
  fc.assert(
    fc.property(
      fc.integer({ min: 2, max: 12 }),
      fc.array(fc.integer({ min: 0, max: 4 }), { minLength: 12, maxLength: 12 }),
      fc.array(fc.double({ min: 0, max: 1, maxExcluded: true, noNaN: true }), { minLength: 2, maxLength: 2 }),
      (n, loads, rs) => {
        const list = eps(n);
        const b = createBalancer(spec('least_request'), list, { random: replay(rs) });
        for (let i = 0; i < n; i++) for (let k = 0; k < (loads[i] as number); k++) b.onRequestStart(list[i] as Endpoint);
        const a = list[Math.floor((rs[0] as number) * n)] as Endpoint;
        const c = list[Math.floor((rs[1] as number) * n)] as Endpoint;
        const want = b.activeRequests(c) < b.activeRequests(a) ? c : a;
        assert.equal(b.pick(null), want);
      },
    ),
  );
});

test('least_request: choiceCount samples, and load steers traffic away over many picks', () => {
  const list = eps(2);
  const b = createBalancer(spec('least_request'), list, { random: mulberry(7) });
  for (let k = 0; k < 5; k++) b.onRequestStart(list[0] as Endpoint);
  let light = 0;
  for (let k = 0; k < 4000; k++) if (b.pick(null) === list[1]) light++;
  // Two samples: the busy host wins only when both samples are it (1/4).
  assert.ok(light > 2800 && light < 3200, String(light));
  // choiceCount 4 with 3 loaded hosts out of 4: the idle one is found unless all 4 samples miss.
  const four = eps(4);
  const b4 = createBalancer(spec('least_request', { choiceCount: 4 }), four, { random: mulberry(9) });
  for (let i = 0; i < 3; i++) b4.onRequestStart(four[i] as Endpoint);
  let idle = 0;
  for (let k = 0; k < 4000; k++) if (b4.pick(null) === four[3]) idle++;
  const expect = 4000 * (1 - (3 / 4) ** 4);
  assert.ok(Math.abs(idle - expect) < 150, `${idle} vs ${expect}`);
});

test('active-request accounting: by identity or host:port, never below zero', () => {
  const list = eps(3);
  const b = createBalancer(spec('least_request'), list);
  const ep = list[1] as Endpoint;
  b.onRequestStart(ep);
  b.onRequestStart({ ...ep });
  assert.equal(b.activeRequests(ep), 2);
  b.onRequestEnd(ep);
  b.onRequestEnd(ep);
  b.onRequestEnd(ep);
  assert.equal(b.activeRequests(ep), 0);
  b.onRequestStart({ host: 'elsewhere', port: 1, service: 'x' });
  assert.equal(b.activeRequests({ host: 'elsewhere', port: 1, service: 'x' }), 0);
});

function mulberry(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// ------------------------------------------------------------------------------------------
// ring_hash

test('ring_hash sizes the ring as Envoy: ceil(min/N) points per host, within [min, max]', () => {
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 300 }), fc.integer({ min: 1, max: 5000 }), fc.integer({ min: 0, max: 20000 }), (n, min, extra) => {
      const max = min + extra;
      const b = new RingHashBalancer(eps(n), min, max);
      assert.equal(b.ringSize, b.hashesPerHost * n);
      if (n <= max) {
        assert.ok(b.ringSize <= max, `${b.ringSize} > ${max}`);
        if (Math.ceil(min / n) * n <= max) assert.equal(b.hashesPerHost, Math.ceil(min / n));
      } else {
        assert.equal(b.hashesPerHost, 1);
      }
      assert.ok(b.ringSize >= Math.min(min, Math.floor(max / n) * n));
    }),
  );
  const d = new RingHashBalancer(eps(10), 0, 0);
  assert.equal(d.ringSize, 1030); // Envoy's 1024 minimum, rounded up to a multiple of 10
});

test('ring_hash and maglev: a key maps to the same endpoint across rebuilds of the same set in any order', () => {
  fc.assert(
    fc.property(
      fc.constantFrom('ring_hash' as const, 'maglev' as const),
      arbEndpoints(1, 25),
      fc.integer(),
      fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 1, maxLength: 50 }),
      (policy, list, seed, keys) => {
        const a = createBalancer(spec(policy), list);
        const b = createBalancer(spec(policy), shuffled(list, seed));
        for (const k of keys) assert.equal(key(b.pick(k)), key(a.pick(k)));
      },
    ),
    { numRuns: 60 },
  );
});

test('ring_hash: removing one endpoint moves only the keys it owned (hashes per host unchanged)', () => {
  fc.assert(
    fc.property(arbEndpoints(5, 30), fc.nat(), fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 200, maxLength: 200 }), (list, which, keys) => {
      const n = list.length;
      // (N−1)² as the minimum ring gives N−1 points per host for both N and N−1 hosts.
      const min = (n - 1) * (n - 1);
      const gone = list[which % n] as Endpoint;
      const before = new RingHashBalancer(list, min, 0);
      const after = new RingHashBalancer(list.filter((e) => e !== gone), min, 0);
      assert.equal(before.hashesPerHost, after.hashesPerHost);
      for (const k of keys) {
        const was = before.pick(k) as Endpoint;
        if (was !== gone) assert.equal(key(after.pick(k)), key(was));
        else assert.notEqual(key(after.pick(k)), key(gone));
      }
    }),
    { numRuns: 100 },
  );
});

test('ring_hash with Envoy sizing: removing one of N endpoints keeps at least 1 − 3/N of keys in place', () => {
  fc.assert(
    fc.property(arbEndpoints(5, 40), fc.nat(), (list, which) => {
      const n = list.length;
      const gone = list[which % n] as Endpoint;
      const before = new RingHashBalancer(list, 1024, 0);
      const after = new RingHashBalancer(list.filter((e) => e !== gone), 1024, 0);
      let stay = 0;
      const K = 4000;
      for (let k = 0; k < K; k++) {
        const h = hash32(`user-${k}`);
        if (key(before.pick(h)) === key(after.pick(h))) stay++;
      }
      assert.ok(stay / K >= 1 - 3 / n, `${stay / K} < ${1 - 3 / n} (N=${n})`);
    }),
    { numRuns: 30 },
  );
});

test('ring_hash and maglev with no hash key pick a random host', () => {
  const list = eps(8);
  for (const p of ['ring_hash', 'maglev'] as const) {
    const b = createBalancer(spec(p), list, { random: mulberry(3) });
    const seen = new Set<string>();
    for (let k = 0; k < 400; k++) seen.add(key(b.pick(null)));
    assert.equal(seen.size, 8, p);
  }
});

test('ring_hash spreads keys over hosts (each host within ±35% of an even share at 1024 points)', () => {
  const list = eps(10);
  const b = new RingHashBalancer(list, 1024, 0);
  const count = new Map<string, number>();
  const K = 50_000;
  for (let k = 0; k < K; k++) {
    const e = key(b.pick(hash32(`k${k}`)));
    count.set(e, (count.get(e) ?? 0) + 1);
  }
  assert.equal(count.size, 10);
  for (const [e, c] of count) assert.ok(Math.abs(c - K / 10) < 0.35 * (K / 10), `${e}: ${c}`);
});

// ------------------------------------------------------------------------------------------
// maglev

test('maglev: every endpoint owns within ±10% of 1/N of the 65537-slot table (N ≤ 20)', () => {
  for (let n = 1; n <= 20; n++) {
    const b = new MaglevBalancer(eps(n));
    const shares = b.shares();
    assert.equal(shares.size, n);
    let total = 0;
    for (const [e, c] of shares) {
      total += c;
      const ideal = MAGLEV_TABLE_SIZE / n;
      assert.ok(Math.abs(c - ideal) <= 0.1 * ideal, `N=${n} ${e}: ${c} vs ${ideal}`);
    }
    assert.equal(total, MAGLEV_TABLE_SIZE);
  }
});

test('maglev: removing one of N ≥ 5 endpoints keeps at least 1 − 2/N of the table in place', () => {
  fc.assert(
    fc.property(arbEndpoints(5, 40), fc.nat(), (list, which) => {
      const n = list.length;
      const gone = list[which % n] as Endpoint;
      const before = new MaglevBalancer(list);
      const after = new MaglevBalancer(list.filter((e) => e !== gone));
      let stay = 0;
      for (let slot = 0; slot < MAGLEV_TABLE_SIZE; slot++) {
        const was = before.pick(slot) as Endpoint;
        const now = after.pick(slot) as Endpoint;
        if (was === gone) assert.notEqual(key(now), key(gone));
        else if (key(was) === key(now)) stay++;
      }
      assert.ok(stay / MAGLEV_TABLE_SIZE >= 1 - 2 / n, `${stay / MAGLEV_TABLE_SIZE} < ${1 - 2 / n} (N=${n})`);
    }),
    { numRuns: 25 },
  );
});
