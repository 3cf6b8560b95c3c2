import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { WASM_PATH, assemblePolicyWasm } from '../../scripts/build-wasm.ts';

test('committed src/wasm/policy.wasm equals a fresh build of policy.wat (run `npm run build:wasm`)', async () => {
  const fresh = await assemblePolicyWasm();
  const committed = new Uint8Array(readFileSync(WASM_PATH));
  assert.equal(committed.length, fresh.length, `policy.wasm is ${committed.length} bytes, a fresh build ${fresh.length}`);
  const first = fresh.findIndex((b, i) => b !== committed[i]);
  assert.equal(first, -1, `policy.wasm differs from a fresh build at byte ${first}`);
});

test('the build is deterministic and tracks the source', async () => {
  const a = await assemblePolicyWasm();
  const b = await assemblePolicyWasm();
  assert.deepEqual(a, b);
  // A changed source yields a different binary, so the drift check cannot pass vacuously.
  const wat = readFileSync(new URL('../../src/wasm/policy.wat', import.meta.url), 'utf8');
  const changed = await assemblePolicyWasm(wat.replace('(i32.const 0xff)', '(i32.const 0xee)'));
  assert.notDeepEqual(changed, a);
});
