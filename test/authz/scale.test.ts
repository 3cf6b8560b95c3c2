// (d) Scale: 100k intentions. Measures compile, publish and decide; reports figures as test
// diagnostics and asserts only correctness (timings depend on the machine).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { compileIntentions, decodeTable, encodeTable } from '../../src/authz/compile.ts';
import type { IntentionRule } from '../../src/authz/compile.ts';
import { Decision, PolicyTableReader, PolicyTableWriter, decisionCode } from '../../src/authz/table.ts';
import { xorshift32 } from './fixtures.ts';

const RULES = 100_000;
const SERVICES = 2_000;

test(`${RULES} intentions over ${SERVICES} services: compile, publish with growth, decide`, async (t) => {
  const next = xorshift32(20240601);
  const byPair = new Map<string, IntentionRule>();
  const actions = ['allow', 'deny', 'l7'] as const;
  // A few wildcard rules, then random exact pairs until RULES are unique.
  for (let i = 0; i < 50; i++) {
    const svc = `svc-${next() % SERVICES}`;
    const rule: IntentionRule = i % 2 === 0
      ? { source: '*', destination: svc, action: actions[i % 3]! }
      : { source: svc, destination: '*', action: actions[i % 3]! };
    byPair.set(`${rule.source}\u0000${rule.destination}`, rule);
  }
  while (byPair.size < RULES) {
    const rule: IntentionRule = { source: `svc-${next() % SERVICES}`, destination: `svc-${next() % SERVICES}`, action: actions[next() % 3]! };
    byPair.set(`${rule.source}\u0000${rule.destination}`, rule);
  }
  const intentions = [...byPair.values()];

  let t0 = performance.now();
  const model = compileIntentions({ intentions, defaultAllow: false, hashKey: [0x11111111, 0x22222222] });
  const compileMs = performance.now() - t0;
  t0 = performance.now();
  const bytes = encodeTable(model);
  const encodeMs = performance.now() - t0;

  // Default 4 pages: the first publish of this table must grow the memory.
  const writer = new PolicyTableWriter({ maxReaders: 1 });
  const reader = new PolicyTableReader(writer.memory, 0);
  const before = writer.memory.buffer.byteLength;
  t0 = performance.now();
  await writer.publish(model);
  const publishMs = performance.now() - t0;
  t.diagnostic(`compile ${compileMs.toFixed(1)} ms, encode ${encodeMs.toFixed(1)} ms, publish (encode + copy + grow) ${publishMs.toFixed(1)} ms; ` +
    `table ${(bytes.length / 1024).toFixed(0)} KiB, ${model.names.length} names, rule slots ${model.ruleCapacity}; memory ${before} → ${writer.memory.buffer.byteLength} bytes`);

  assert.deepEqual(decodeTable(bytes), model);

  // Reference: Consul's four candidate keys in precedence order, from a plain Map.
  const reference = (s: string, d: string): number => {
    for (const key of [`${s}\u0000${d}`, `*\u0000${d}`, `${s}\u0000*`, '*\u0000*']) {
      const r = byPair.get(key);
      if (r !== undefined) return r.action === 'allow' ? Decision.ALLOW : r.action === 'deny' ? Decision.DENY : Decision.L7_DENY;
    }
    return Decision.DEFAULT_DENY;
  };

  // Query mix: half existing pairs, half random pairs of known services (mostly misses that fall
  // through to the wildcard candidates and the default), plus names that are not interned.
  const queries: [string, string][] = [];
  for (let i = 0; i < 4096; i++) {
    if (i % 2 === 0) {
      const r = intentions[next() % intentions.length]!;
      queries.push([r.source === '*' ? 'svc-1' : r.source, r.destination === '*' ? 'svc-2' : r.destination]);
    } else if (i % 16 === 1) {
      queries.push([`stranger-${i}`, `svc-${next() % SERVICES}`]);
    } else {
      queries.push([`svc-${next() % SERVICES}`, `svc-${next() % SERVICES}`]);
    }
  }
  for (const [s, d] of queries) assert.equal(decisionCode(reader.decide(s, d)), reference(s, d), `${s} → ${d}`);

  // decide() ns/op for three query shapes. This machine may be shared, so each figure is the
  // best of 5 rounds of 200k lookups after a warm-up (noise only ever adds time).
  const sidecar: [string, string][] = Array.from({ length: 4096 }, () => [`svc-${next() % 200}`, 'svc-42']);
  const single: [string, string][] = [queries[0]!];
  let sink = 0;
  const nsPerOp = (qs: readonly [string, string][]): number => {
    const mask = qs.length - 1; // lengths are powers of two
    for (let i = 0; i < 100_000; i++) {
      const q = qs[i & mask]!;
      sink ^= reader.decide(q[0], q[1]);
    }
    let best = Infinity;
    for (let round = 0; round < 5; round++) {
      const start = performance.now();
      for (let i = 0; i < 200_000; i++) {
        const q = qs[i & mask]!;
        sink ^= reader.decide(q[0], q[1]);
      }
      best = Math.min(best, ((performance.now() - start) * 1e6) / 200_000);
    }
    return best;
  };
  t.diagnostic(`decide ns/op: random mix ${nsPerOp(queries).toFixed(0)}, sidecar mix (1 destination, 200 sources) ` +
    `${nsPerOp(sidecar).toFixed(0)}, one repeated exact hit ${nsPerOp(single).toFixed(0)} (sink ${sink & 1})`);
});
