// Test helpers for src/authz: a naive evaluator written straight from Consul's rules (no ids, no
// hashing), and deterministic per-generation intention sets for the concurrency test (imported
// by both the test and its worker threads, so both sides agree on what generation n contains).

import type { CompiledTable, IntentionRule } from '../../src/authz/compile.ts';
import assert from 'node:assert/strict';
import { Decision, NO_RULE, decisionCode, decisionRule, type PolicyTableReader } from '../../src/authz/table.ts';

/** Consul §2.2: count = 1 for `*`, 2 for an exact name (CE: namespace always exact). */
function exactCount(name: string): number {
  return name === '*' ? 1 : 2;
}

/** Consul §2.2: max = {2: 9, 1: 6}[count(destination)], precedence = max − (2 − count(source)). */
export function consulPrecedence(rule: IntentionRule): number {
  const max = exactCount(rule.destination) === 2 ? 9 : 6;
  return max - (2 - exactCount(rule.source));
}

export interface NaiveDecision {
  readonly code: number;
  readonly winner: IntentionRule | undefined;
}

/**
 * Consul §2.3, literally: collect intentions matching the destination, sort by precedence
 * (ties: source then destination name), the first whose source matches decides; L7 → deny for an
 * L4 check; no match → default policy.
 */
export function naiveDecide(
  intentions: readonly IntentionRule[],
  defaultAllow: boolean,
  source: string,
  destination: string,
): NaiveDecision {
  const candidates = intentions
    .filter((i) => i.destination === '*' || i.destination === destination)
    .sort((a, b) =>
      consulPrecedence(b) - consulPrecedence(a) ||
      (a.source < b.source ? -1 : a.source > b.source ? 1 : 0) ||
      (a.destination < b.destination ? -1 : a.destination > b.destination ? 1 : 0));
  for (const i of candidates) {
    if (i.source === '*' || i.source === source) {
      const code = i.action === 'allow' ? Decision.ALLOW : i.action === 'deny' ? Decision.DENY : Decision.L7_DENY;
      return { code, winner: i };
    }
  }
  return { code: defaultAllow ? Decision.DEFAULT_ALLOW : Decision.DEFAULT_DENY, winner: undefined };
}

/** Index of `rule` in a compiled model (linear scan: independent of the hash tables). */
export function modelRuleIndex(model: CompiledTable, rule: IntentionRule): number {
  const src = model.names.indexOf(rule.source);
  const dst = model.names.indexOf(rule.destination);
  return model.rules.findIndex((r) => r.srcId === src && r.dstId === dst);
}

// ── concurrency fixture: generation n of the publication test ──

const ACTIONS = ['allow', 'deny', 'l7'] as const;

export interface GenerationSpec {
  readonly intentions: IntentionRule[];
  readonly defaultAllow: boolean;
}

/**
 * Generation n: `x → y` alternates allow/deny, 20 + 15n filler rules whose actions rotate with n
 * (so every generation gives a different decision vector: a reader that mixed two generations'
 * bytes would disagree with both), wildcard rules that come and go, and a default that flips.
 * The filler grows to ~3,000 rules by n = 200, forcing the writer to grow memory several times
 * while readers run.
 */
export function generationSpec(n: number): GenerationSpec {
  const intentions: IntentionRule[] = [{ source: 'x', destination: 'y', action: n % 2 === 0 ? 'allow' : 'deny' }];
  const filler = 20 + 15 * n;
  for (let i = 0; i < filler; i++) {
    intentions.push({ source: `svc-${i % 97}`, destination: `api-${i}`, action: ACTIONS[(n + i) % 3]! });
  }
  if (n % 3 === 0) intentions.push({ source: '*', destination: 'y', action: 'deny' });
  if (n % 5 === 0) intentions.push({ source: 'x', destination: '*', action: 'allow' });
  if (n % 7 === 0) intentions.push({ source: '*', destination: '*', action: 'l7' });
  return { intentions, defaultAllow: n % 4 < 2 };
}

/** Queries the readers check in the concurrency test: hits, wildcard hits and unknown names. */
export function concurrencyQueries(): [string, string][] {
  const q: [string, string][] = [
    ['x', 'y'], ['x', 'z'], ['q', 'y'], ['nobody', 'nowhere'], ['x', 'api-3'], ['svc-3', 'y'],
  ];
  for (const i of [0, 1, 2, 50, 96, 97, 300, 1000, 1500, 2999, 3100]) {
    q.push([`svc-${i % 97}`, `api-${i}`]);
    q.push([`svc-${(i + 1) % 97}`, `api-${i}`]);
  }
  return q;
}

/** A small deterministic PRNG (xorshift32): tests stay reproducible without Math.random. */
export function xorshift32(seed: number): () => number {
  let s = seed | 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s >>> 0;
  };
}

/**
 * Asserts that decision `d` (from any probe, for generation `g`) is what Consul's semantics
 * give: the same code as the naive evaluator, and the same winning rule, read back through
 * `reader`.
 */
export function assertMatchesNaive(intentions: readonly IntentionRule[], defaultAllow: boolean, reader: PolicyTableReader,
  g: number, src: string, dst: string, d: number): void {
  const expected = naiveDecide(intentions, defaultAllow, src, dst);
  assert.equal(decisionCode(d), expected.code, `${src} → ${dst}`);
  if (expected.winner === undefined) {
    assert.equal(decisionRule(d), NO_RULE);
  } else {
    assert.deepEqual(reader.ruleAtGeneration(decisionRule(d), g), {
      source: expected.winner.source,
      destination: expected.winner.destination,
      action: expected.winner.action,
      precedence: consulPrecedence(expected.winner),
    });
  }
}
