// The request-head check shared by both HTTP hops (src/dataplane/http-guard.ts).

import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { MAX_REQUEST_HEADERS, checkRequestHead } from '../../src/dataplane/http-guard.ts';

test('a plain head passes; each ambiguity is named', () => {
  assert.equal(checkRequestHead(['Host', 'api', 'Content-Length', '5', 'Authorization', 'Bearer x']), null);
  assert.equal(checkRequestHead(['host', 'api', 'transfer-encoding', 'Chunked']), null);
  const cases: [string[], RegExp][] = [
    [[], /no Host header/],
    [['Host', 'a', 'HOST', 'b'], /more than one Host/],
    [['Host', 'a', 'Authorization', 'x', 'authorization', 'y'], /more than one Authorization/],
    [['Host', 'a', 'Content-Length', '5', 'content-length', '5'], /more than one Content-Length/],
    [['Host', 'a', 'Content-Length', '5, 5'], /not one decimal number/],
    [['Host', 'a', 'Content-Length', '+5'], /not one decimal number/],
    [['Host', 'a', 'Transfer-Encoding', 'gzip, chunked'], /unsupported Transfer-Encoding/],
    [['Host', 'a', 'Transfer-Encoding', 'chunked', 'Transfer-Encoding', 'chunked'], /more than one Transfer-Encoding/],
    [['Host', 'a', 'Transfer-Encoding', 'chunked', 'Content-Length', '0'], /both Content-Length and Transfer-Encoding/],
    [['Host', 'a', 'X_Forwarded_For', '1'], /underscores are refused: X_Forwarded_For/],
  ];
  for (const [raw, re] of cases) assert.match(checkRequestHead(raw)?.detail ?? 'passed', re, JSON.stringify(raw));
  assert.equal(checkRequestHead(['Host', 'a', 'X_A', '1'])?.status, 400);
});

test('the header-count limit: exactly the limit passes, one more is a 431', () => {
  const fields = (n: number): string[] => ['Host', 'a', ...Array.from({ length: n - 1 }, (_v, i) => [`X-${i}`, 'v']).flat()];
  assert.equal(checkRequestHead(fields(MAX_REQUEST_HEADERS)), null);
  assert.equal(checkRequestHead(fields(MAX_REQUEST_HEADERS + 1))?.status, 431);
});

test('property: names other than the four checked, without "_", never make a head fail', () => {
  const name = fc.stringMatching(/^[A-Za-z0-9-]{1,20}$/).filter((n) => !['host', 'authorization', 'content-length', 'transfer-encoding'].includes(n.toLowerCase()));
  fc.assert(
    fc.property(fc.array(fc.tuple(name, fc.string({ maxLength: 10 })), { maxLength: MAX_REQUEST_HEADERS - 1 }), (pairs) => {
      assert.equal(checkRequestHead(['Host', 'h', ...pairs.flat()]), null);
    }),
    { seed: 99, numRuns: 300 },
  );
});
