// The control-thread side of authorization: compiles intention rules into the shared table
// and publishes it. The agent (for /v1/connect/intentions/check and
// /v1/agent/connect/authorize) and every proxy (for its workers) use this same class, so
// the API's answer and the data plane's decision come from one evaluator over one table.

import { randomBytes } from 'node:crypto';
import { compileIntentions } from '../authz/compile.ts';
import { Decision, decisionCode, decisionRule, PolicyTableReader, PolicyTableWriter } from '../authz/table.ts';
import type { IntentionRule } from './intentions.ts';

export interface CheckResult {
  readonly allowed: boolean;
  /** Consul's reason strings (§2.8). */
  readonly reason: string;
}

export interface Explanation {
  readonly Allowed: boolean;
  readonly Layer: 'L4' | 'L7' | 'default';
  readonly Reason: string;
  readonly Matched: { readonly SourceName: string; readonly DestinationName: string; readonly Action: string | null; readonly Precedence: number } | null;
  /** The table generation the answer came from. */
  readonly Generation: number;
}

export class PolicyEngine {
  readonly #writer: PolicyTableWriter;
  readonly #reader: PolicyTableReader;
  /** One random SipHash key per process: peers cannot precompute colliding names. */
  readonly #hashKey: [number, number];
  #defaultAllow: boolean;
  #queue: Promise<number> = Promise.resolve(0);

  /** Reader slot 0 belongs to the control thread; workers use slots 1..maxWorkers. */
  constructor(opts: { maxWorkers: number; defaultAllow: boolean }) {
    this.#writer = new PolicyTableWriter({ maxReaders: opts.maxWorkers + 1 });
    this.#reader = new PolicyTableReader(this.#writer.memory, 0);
    const key = randomBytes(8);
    this.#hashKey = [key.readUInt32LE(0), key.readUInt32LE(4)];
    this.#defaultAllow = opts.defaultAllow;
  }

  get memory(): WebAssembly.Memory {
    return this.#writer.memory;
  }

  get generation(): number {
    return this.#reader.generation();
  }

  get defaultAllow(): boolean {
    return this.#defaultAllow;
  }

  /** Compiles and publishes; concurrent calls are serialised so generations stay ordered. */
  update(rules: readonly IntentionRule[], defaultAllow: boolean = this.#defaultAllow): Promise<number> {
    const model = compileIntentions({ intentions: rules, defaultAllow, hashKey: this.#hashKey });
    this.#defaultAllow = defaultAllow;
    this.#queue = this.#queue.then(
      () => this.#writer.publish(model),
      () => this.#writer.publish(model),
    );
    return this.#queue;
  }

  /** Frees a dead worker's reader slot so publication never waits on it. */
  releaseReader(slot: number): void {
    this.#writer.releaseReaderSlot(slot);
  }

  /**
   * What the table decides for source -> destination and why: the matched intention and its
   * precedence, or the default policy. (Consul only gives a reason string.)
   */
  explain(source: string, destination: string): Explanation {
    const d = this.#reader.decide(source, destination);
    const code = decisionCode(d);
    const generation = this.#reader.lastGeneration;
    if (code === Decision.DEFAULT_ALLOW || code === Decision.DEFAULT_DENY) {
      return { Allowed: code === Decision.DEFAULT_ALLOW, Layer: 'default', Reason: 'Default intention policy', Matched: null, Generation: generation };
    }
    const rule = this.#reader.ruleAt(decisionRule(d));
    const l7 = code === Decision.L7_DENY;
    return {
      Allowed: code === Decision.ALLOW,
      Layer: l7 ? 'L7' : 'L4',
      Reason: l7 ? 'L7 intention: evaluated per request; a connection-level check counts it as deny' : `Matched L4 intention: ${rule.source} => ${rule.destination} (${rule.action})`,
      Matched: { SourceName: rule.source, DestinationName: rule.destination, Action: l7 ? null : rule.action, Precedence: rule.precedence },
      Generation: generation,
    };
  }

  /** L4 evaluation (L7 intentions count as deny), with the reason Consul would give. */
  check(source: string, destination: string): CheckResult {
    const d = this.#reader.decide(source, destination);
    const code = decisionCode(d);
    switch (code) {
      case Decision.ALLOW:
      case Decision.DENY:
      case Decision.L7_DENY: {
        const rule = this.#reader.ruleAt(decisionRule(d));
        const layer = code === Decision.L7_DENY ? 'L7' : 'L4';
        const shown = code === Decision.L7_DENY ? 'L7 permissions' : rule.action;
        return { allowed: code === Decision.ALLOW, reason: `Matched ${layer} intention: ${rule.source} => ${rule.destination} (${shown})` };
      }
      case Decision.DEFAULT_ALLOW:
        return { allowed: true, reason: 'Default intention policy' };
      default:
        return { allowed: false, reason: 'Default intention policy' };
    }
  }
}
