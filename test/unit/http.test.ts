import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FieldError } from '../../src/control/decode.ts';
import { HttpError, blockingParams, flagParam } from '../../src/control/http.ts';

const u = (q: string): URL => new URL(`http://agent/v1/health/connect/x${q}`);

test('blockingParams: no index means a plain (non-blocking) read', () => {
  assert.equal(blockingParams(u('')), null);
  assert.equal(blockingParams(u('?wait=5s')), null);
});

test('blockingParams: index and wait are parsed; wait defaults to 5 minutes', () => {
  assert.deepEqual(blockingParams(u('?index=42&wait=5s')), { index: 42, waitMs: 5_000 });
  assert.deepEqual(blockingParams(u('?wait=1m30s&index=7')), { index: 7, waitMs: 90_000 });
  assert.deepEqual(blockingParams(u('?index=0')), { index: 0, waitMs: 300_000 });
  assert.deepEqual(blockingParams(u('?index=9007199254740991&wait=10ms')), { index: Number.MAX_SAFE_INTEGER, waitMs: 10 });
});

test('blockingParams caps wait at 10 minutes', () => {
  assert.equal(blockingParams(u('?index=1&wait=1h'))?.waitMs, 600_000);
  assert.equal(blockingParams(u('?index=1&wait=10m'))?.waitMs, 600_000);
  assert.equal(blockingParams(u('?index=1&wait=9m59s'))?.waitMs, 599_000);
});

test('blockingParams: a bad index is HttpError 400 naming the value; a bad wait is a FieldError naming wait', () => {
  for (const bad of ['abc', '-1', '1.5', 'NaN', 'Infinity']) {
    assert.throws(
      () => blockingParams(u(`?index=${bad}`)),
      (e: unknown) => {
        assert.ok(e instanceof HttpError, `${bad}: ${String(e)}`);
        assert.equal(e.status, 400);
        assert.ok(e.message.includes(JSON.stringify(bad)), e.message);
        return true;
      },
    );
  }
  assert.throws(
    () => blockingParams(u('?index=1&wait=5')),
    (e: unknown) => e instanceof FieldError && e.field === 'wait',
  );
});

test('flagParam: a bare flag or any value but false/0 is true; absent, false and 0 are false', () => {
  assert.equal(flagParam(new URL('http://a/?pem'), 'pem'), true);
  assert.equal(flagParam(new URL('http://a/?pem='), 'pem'), true);
  assert.equal(flagParam(new URL('http://a/?pem=true'), 'pem'), true);
  assert.equal(flagParam(new URL('http://a/?pem=1'), 'pem'), true);
  assert.equal(flagParam(new URL('http://a/?pem=false'), 'pem'), false);
  assert.equal(flagParam(new URL('http://a/?pem=0'), 'pem'), false);
  assert.equal(flagParam(new URL('http://a/'), 'pem'), false);
  assert.equal(flagParam(new URL('http://a/?passing=1'), 'pem'), false);
  assert.equal(flagParam(new URL('http://a/?passing&pem=false'), 'passing'), true);
});
