// The bench's .cpuprofile summary (bench/lib/cpuprofile.ts): self time per function
// aggregated by name + url:line across nodes and files, categories, and the sampling interval.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { categorize, formatSummary, readProfiles, summarize, type CpuProfile } from '../../bench/lib/cpuprofile.ts';

const SRC = 'file:///work/main/src/dataplane/inbound.ts';

/** 10 samples over 10 ms: 1 ms each. Two nodes share decide()@inbound.ts:10 (different callers). */
const PROFILE: CpuProfile = {
  startTime: 0,
  endTime: 10_000,
  nodes: [
    { id: 1, callFrame: { functionName: '(root)', url: '', lineNumber: -1 }, children: [2, 3, 5, 6, 7, 8] },
    { id: 2, callFrame: { functionName: 'decide', url: SRC, lineNumber: 9 }, children: [4] },
    { id: 3, callFrame: { functionName: 'onSecure', url: SRC, lineNumber: 40 }, children: [9] },
    { id: 4, callFrame: { functionName: 'writev', url: '', lineNumber: -1 } },
    { id: 5, callFrame: { functionName: '(idle)', url: '', lineNumber: -1 } },
    { id: 6, callFrame: { functionName: '(garbage collector)', url: '', lineNumber: -1 } },
    { id: 7, callFrame: { functionName: 'onStreamRead', url: 'node:internal/stream_base_commons', lineNumber: 160 } },
    { id: 8, callFrame: { functionName: 'TLSSocket._start', url: 'node:_tls_wrap', lineNumber: 1000 } },
    { id: 9, callFrame: { functionName: 'decide', url: SRC, lineNumber: 9 } },
  ],
  // decide x3 (2 via node 2, 1 via node 9), writev x1, idle x4, gc x1, onStreamRead x1; root never.
  samples: [2, 2, 9, 4, 5, 5, 5, 5, 6, 7],
  timeDeltas: [1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000, 1000],
};

test('self time aggregates by function name and url:line; idle is left out of the busy share', () => {
  const s = summarize([PROFILE]);
  assert.equal(s.files, 1);
  assert.equal(s.totalMs, 10);
  assert.equal(s.busyMs, 6);
  const top = s.functions[0];
  assert.deepEqual(top, { name: 'decide', where: 'src/dataplane/inbound.ts:10', category: 'meshd', selfMs: 3, pct: 50 });
  assert.ok(!s.functions.some((f) => f.name === '(idle)'));
  assert.ok(!s.functions.some((f) => f.name === '(root)'));
  const cat = Object.fromEntries(s.categories.map((c) => [c.category, c.ms]));
  assert.deepEqual(cat, { meshd: 3, idle: 4, native: 1, gc: 1, 'net/stream': 1 });
  assert.equal(s.categories.find((c) => c.category === 'idle')?.pct, 40); // of all sampled time
});

test('several files (threads) add up; hitCount is used when samples are absent', () => {
  const hits: CpuProfile = {
    startTime: 0,
    endTime: 4000,
    nodes: [
      { id: 1, callFrame: { functionName: '(root)', url: '', lineNumber: -1 }, hitCount: 0 },
      { id: 2, callFrame: { functionName: 'decide', url: SRC, lineNumber: 9 }, hitCount: 2 },
      { id: 3, callFrame: { functionName: 'update', url: 'node:internal/crypto/hash', lineNumber: 5 }, hitCount: 2 },
    ],
  };
  const s = summarize([PROFILE, hits], 2);
  assert.equal(s.files, 2);
  assert.equal(s.functions.length, 2);
  assert.equal(s.functions[0]?.name, 'decide');
  assert.equal(s.functions[0]?.selfMs, 5); // 3 ms + 2 x (4 ms / 4 samples)
  assert.equal(s.categories.find((c) => c.category === 'tls/crypto')?.ms, 2);
  assert.match(formatSummary(s, 'server sidecar'), /decide\s+src\/dataplane\/inbound\.ts:10/);
});

test('categories', () => {
  assert.equal(categorize('(program)', ''), 'program');
  assert.equal(categorize('x', 'node:_http_server'), 'http');
  assert.equal(categorize('x', 'node:internal/http'), 'http');
  assert.equal(categorize('x', 'node:internal/tls/wrap'), 'tls/crypto');
  assert.equal(categorize('x', 'node:net'), 'net/stream');
  assert.equal(categorize('x', 'node:internal/streams/writable'), 'net/stream');
  assert.equal(categorize('x', 'node:events'), 'node other');
  assert.equal(categorize('x', 'file:///a/node_modules/undici/lib/x.js'), 'undici');
  assert.equal(categorize('x', 'file:///a/node_modules/pino/x.js'), 'dependencies');
  assert.equal(categorize('x', 'file:///a/src/control/proxy.ts'), 'meshd');
});

test('readProfiles reads every .cpuprofile of a directory', () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-cpuprof-'));
  try {
    writeFileSync(join(dir, 'CPU.1.cpuprofile'), JSON.stringify(PROFILE));
    writeFileSync(join(dir, 'other.txt'), 'x');
    assert.equal(readProfiles(dir).length, 1);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a window keeps only the samples taken inside it (profile clock, µs)', () => {
  // Sample i is at 1000 * (i + 1) µs; the window [3500, 8500] holds samples 3..7: writev, idle x4.
  const s = summarize([PROFILE], 15, { fromUs: 3500, toUs: 8500 });
  assert.equal(s.totalMs, 5);
  assert.equal(s.busyMs, 1);
  assert.deepEqual(s.threads, [{ busyMs: 1, totalMs: 5 }]);
  assert.deepEqual(
    s.functions.map((f) => f.name),
    ['writev'],
  );
});
