import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FieldError } from '../../src/control/decode.ts';
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HttpError, Router, blockingParams, flagParam, readBody, sendText } from '../../src/control/http.ts';

async function serve(router: Router): Promise<{ server: Server; port: number }> {
  const server = createServer((req, res) => void router.handle(req, res));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { server, port: (server.address() as AddressInfo).port };
}

function post(port: number, path: string, body: Buffer | string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, method: 'POST', path, headers: { 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    // A 413 may close the connection before the whole upload is written.
    req.on('error', (err: NodeJS.ErrnoException) => (err.code === 'EPIPE' || err.code === 'ECONNRESET' ? undefined : reject(err)));
    req.end(body);
  });
}

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

test('readBody returns the whole body across chunks, and refuses one over the limit with 413', async () => {
  const router = new Router().on('POST', '/echo', async (ctx) => sendText(ctx.res, 200, `${(await readBody(ctx.req, 64 * 1024)).length}`));
  const { server, port } = await serve(router);
  try {
    const big = Buffer.alloc(60 * 1024, 0x62);
    assert.deepEqual(await post(port, '/echo', big), { status: 200, text: `${big.length}\n` });
    assert.deepEqual(await post(port, '/echo', 'héllo'), { status: 200, text: '5\n' });
    const over = await post(port, '/echo', Buffer.alloc(65 * 1024, 0x61));
    assert.equal(over.status, 413);
    assert.match(over.text, /larger than 65536 bytes/);
  } finally {
    server.closeAllConnections();
    server.close();
  }
});

test('Router: ctx.signal aborts when the client goes away, and a handler that never asks for it still works', async () => {
  let aborted!: () => void;
  const sawAbort = new Promise<void>((r) => (aborted = r));
  const router = new Router()
    .on('GET', '/hold', (ctx) => {
      ctx.signal.addEventListener('abort', () => aborted());
    })
    .on('GET', '/plain', (ctx) => sendText(ctx.res, 200, 'ok'));
  const { server, port } = await serve(router);
  try {
    const req = request({ host: '127.0.0.1', port, path: '/hold' });
    req.on('error', () => {});
    req.end();
    await new Promise((r) => setTimeout(r, 50));
    req.destroy();
    await sawAbort;
    const text = await new Promise<string>((resolve, reject) => {
      request({ host: '127.0.0.1', port, path: '/plain' }, (res) => {
        let t = '';
        res.on('data', (c: Buffer) => (t += c.toString()));
        res.on('end', () => resolve(t));
      }).on('error', reject).end();
    });
    assert.equal(text, 'ok\n');
  } finally {
    server.closeAllConnections();
    server.close();
  }
});
