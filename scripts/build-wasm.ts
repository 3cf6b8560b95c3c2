// `npm run build:wasm`: assembles src/wasm/policy.wat into src/wasm/policy.wasm with wabt (the
// emscripten build from npm: no native toolchain, works offline). The output is deterministic:
// no debug names, canonical LEBs, so the same .wat always gives the same bytes;
// test/wasm/drift.test.ts calls assemblePolicyWasm() and compares with the committed binary.
// Runs on: a developer machine / CI, never in the data plane (wabt is a devDependency).

import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import wabtInit from 'wabt';

export const WAT_PATH = fileURLToPath(new URL('../src/wasm/policy.wat', import.meta.url));
export const WASM_PATH = fileURLToPath(new URL('../src/wasm/policy.wasm', import.meta.url));

/**
 * Post-MVP features policy.wat uses: threads (shared memory import, i32.atomic.*) and
 * multi-memory (the private scratch memory next to the imported table). `multi_memory` is
 * accepted by wabt 1.0.39 but missing from its typings, hence the wider record type.
 */
const FEATURES: Record<string, boolean> = { threads: true, multi_memory: true, multi_value: true };

/** The binary for `watSource` (default: the committed policy.wat). */
export async function assemblePolicyWasm(watSource: string = readFileSync(WAT_PATH, 'utf8')): Promise<Uint8Array> {
  const wabt = await wabtInit();
  const mod = wabt.parseWat('policy.wat', watSource, FEATURES);
  try {
    mod.resolveNames();
    // validate() takes the feature set at run time (wabt's typings omit the parameter).
    (mod.validate as (features: Record<string, boolean>) => void).call(mod, FEATURES);
    const { buffer } = mod.toBinary({ log: false, write_debug_names: false, canonicalize_lebs: true, relocatable: false });
    return Uint8Array.from(buffer);
  } finally {
    mod.destroy();
  }
}

if (process.argv[1] !== undefined && fileURLToPath(import.meta.url) === process.argv[1]) {
  const bytes = await assemblePolicyWasm();
  writeFileSync(WASM_PATH, bytes);
  console.log(`wrote ${WASM_PATH} (${bytes.length} bytes)`);
}
