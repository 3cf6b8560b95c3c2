// Synthetic intention sets for the authz benchmarks: deterministic, so every run and every
// implementation measures the same tables and queries.

import type { IntentionRule } from '../../src/control/intentions.ts';

export const SERVICES = 10_000;

/** mulberry32: a small seeded PRNG. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * `n` distinct intentions over up to SERVICES services: ~5 % with a `*` source, ~3 % with a
 * `*` destination, 80 % allow.
 */
export function intentions(n: number, rand: () => number): IntentionRule[] {
  const seen = new Set<string>();
  const out: IntentionRule[] = [];
  const svc = (): string => `svc-${Math.floor(rand() * Math.min(SERVICES, Math.max(20, n)))}`;
  while (out.length < n) {
    const r = rand();
    const source = r < 0.05 ? '*' : svc();
    const destination = r > 0.97 ? '*' : svc();
    const key = `${source}>${destination}`;
    if (seen.has(key)) continue;
    seen.add(key);
    out.push({ source, destination, action: rand() < 0.8 ? 'allow' : 'deny' });
  }
  return out;
}
