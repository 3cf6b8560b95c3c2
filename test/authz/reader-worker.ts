// Worker thread for publication.test.ts: hammers PolicyTableReader.decide (or its WASM twin,
// WasmPolicyProbe, with probe: 'wasm') while the main thread
// publishes, and checks every decision against the model of the generation the reader announced.

import { parentPort, workerData } from 'node:worker_threads';
import { compileIntentions } from '../../src/authz/compile.ts';
import { Decision, NO_RULE, PolicyTableReader, decisionCode, decisionRule } from '../../src/authz/table.ts';
import { WasmPolicyProbe } from '../../src/wasm/policy.ts';
import { concurrencyQueries, generationSpec, modelRuleIndex, naiveDecide } from './fixtures.ts';

export interface ReaderWorkerData {
  readonly probe: 'ts' | 'wasm';
  readonly memory: WebAssembly.Memory;
  readonly slot: number;
  /** Int32 control words: [0] = workers started, [1] = stop flag. */
  readonly control: SharedArrayBuffer;
  readonly hashKey: [number, number];
}

export interface ReaderWorkerResult {
  readonly decisions: number;
  readonly generationsSeen: number;
  readonly maxGeneration: number;
  readonly mismatches: string[];
}

const data = workerData as ReaderWorkerData;
const control = new Int32Array(data.control);
const reader = data.probe === 'wasm' ? new WasmPolicyProbe(data.memory, data.slot) : new PolicyTableReader(data.memory, data.slot);
const queries = concurrencyQueries();

/** Expected decision ints for generation g, computed independently of the shared memory. */
const expectedByGeneration = new Map<number, Int32Array>();
function expectedFor(g: number): Int32Array {
  let expected = expectedByGeneration.get(g);
  if (expected !== undefined) return expected;
  expected = new Int32Array(queries.length);
  if (g === 0) {
    expected.fill(Decision.DEFAULT_DENY);
  } else {
    const spec = generationSpec(g);
    const model = compileIntentions({ ...spec, hashKey: data.hashKey });
    queries.forEach(([src, dst], q) => {
      const naive = naiveDecide(spec.intentions, spec.defaultAllow, src, dst);
      const rule = naive.winner === undefined ? NO_RULE : modelRuleIndex(model, naive.winner);
      expected[q] = naive.code | ((rule + 1) << 3);
    });
  }
  expectedByGeneration.set(g, expected);
  return expected;
}

const mismatches: string[] = [];
const seen = new Set<number>();
let decisions = 0;
let maxGeneration = 0;
Atomics.add(control, 0, 1);
while (Atomics.load(control, 1) === 0) {
  for (let q = 0; q < queries.length; q++) {
    const [src, dst] = queries[q]!;
    let d: number;
    try {
      d = reader.decide(src, dst);
    } catch (e) {
      if (mismatches.length < 10) mismatches.push(`threw: ${String(e)}`);
      continue;
    }
    const g = reader.lastGeneration;
    decisions++;
    seen.add(g);
    if (g > maxGeneration) maxGeneration = g;
    const want = expectedFor(g)[q]!;
    if (d !== want && mismatches.length < 10) {
      mismatches.push(`gen ${g} ${src}→${dst}: got code ${decisionCode(d)} rule ${decisionRule(d)}, ` +
        `want code ${decisionCode(want)} rule ${decisionRule(want)}`);
    }
  }
}
reader.close();
const result: ReaderWorkerResult = { decisions, generationsSeen: seen.size, maxGeneration, mismatches };
parentPort!.postMessage(result);
