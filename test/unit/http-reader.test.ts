// The load generators' streaming response reader (bench/lib/http-reader.ts): statuses and body
// bytes come out the same however the stream is cut into chunks.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ResponseReader } from '../../bench/lib/http-reader.ts';

const STREAM = Buffer.from(
  [
    'HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello',
    'HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n',
    'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nx-trailer: 1\r\n\r\n',
    'HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n',
    'HTTP/1.1 204 No Content\r\n\r\n',
  ].join(''),
  'latin1',
);

test('statuses and body bytes are the same however the stream is cut', () => {
  fc.assert(
    fc.property(fc.uniqueArray(fc.integer({ min: 1, max: STREAM.length - 1 }), { maxLength: 12 }), (cuts) => {
      const reader = new ResponseReader();
      const statuses: number[] = [];
      let from = 0;
      for (const at of [...cuts].sort((a, b) => a - b).concat(STREAM.length)) {
        reader.feed(STREAM.subarray(from, at), (s) => statuses.push(s));
        from = at;
      }
      assert.deepEqual(statuses, [200, 503, 200, 429, 204]);
      assert.equal(reader.bodyBytes, 5 + 3 + 16);
    }),
    { seed: 7, numRuns: 300 },
  );
});
