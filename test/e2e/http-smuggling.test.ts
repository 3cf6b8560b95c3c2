// Request smuggling, ambiguity and encoding bypasses against the HTTP data plane, over raw
// sockets, with real processes: an agent, `api` (Protocol http) behind its sidecar with an L7
// intention that denies /admin, and the `web` sidecar whose plaintext upstream listener an
// app (here: the test) talks to. Every ambiguous message gets a 4xx and a closed connection,
// and the app never sees it — nor a valid request pipelined behind it. Paths are authorised
// and forwarded in the same normalised form (the app echoes what it got).

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { startHttpMesh, type HttpApp, type HttpMesh } from '../helpers/http-app.ts';

interface RawReply {
  readonly status: number;
  readonly text: string;
  /** The proxy closed the connection after its reply. */
  readonly closed: boolean;
}

/** Writes `raw` on a new connection; collects until the peer closes or `waitMs` passes. */
function rawRequest(port: number, raw: string | Buffer, waitMs = 1500): Promise<RawReply> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port });
    let text = '';
    let closed = false;
    const done = (): void => {
      clearTimeout(timer);
      s.destroy();
      const m = /^HTTP\/1\.1 (\d{3})/.exec(text);
      resolve({ status: m === null ? 0 : Number(m[1]), text, closed });
    };
    const timer = setTimeout(done, waitMs);
    s.on('connect', () => s.write(raw));
    s.on('data', (d: Buffer) => (text += d.toString('latin1')));
    s.on('end', () => {
      closed = true;
      done();
    });
    s.on('close', () => {
      closed = true;
      done();
    });
    s.on('error', (e) => (text === '' ? reject(e) : done()));
  });
}

const VALID = 'GET /ok HTTP/1.1\r\nHost: api\r\n\r\n';

describe('HTTP hardening: smuggling, ambiguity, limits and encoding bypasses', () => {
  let mesh: HttpMesh;
  let app: HttpApp;
  let port: number;

  before(async () => {
    mesh = await startHttpMesh({
      Kind: 'service-intentions',
      Name: 'api',
      Sources: [{ Name: 'web', Permissions: [{ Action: 'deny', HTTP: { PathPrefix: '/admin' } }, { Action: 'allow', HTTP: { PathPrefix: '/' } }] }],
    });
    app = mesh.app;
    port = mesh.port;
  });

  after(async () => {
    await mesh?.stop();
  });

  // [case, raw request head (a valid request is pipelined behind it), expected status]
  const AMBIGUOUS: readonly [string, string, number][] = [
    ['Content-Length with Transfer-Encoding', 'POST /ok HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n', 400],
    ['two different Content-Lengths', 'POST /ok HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!', 400],
    ['two equal Content-Lengths', 'POST /ok HTTP/1.1\r\nHost: api\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello', 400],
    ['a Content-Length list', 'POST /ok HTTP/1.1\r\nHost: api\r\nContent-Length: 5, 5\r\n\r\nhello', 400],
    ['Transfer-Encoding: xchunked', 'POST /ok HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n', 400],
    ['Transfer-Encoding: chunked, identity', 'POST /ok HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n', 400],
    ['a space before the colon', 'POST /ok HTTP/1.1\r\nHost: api\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n', 400],
    ['two Transfer-Encoding headers', 'POST /ok HTTP/1.1\r\nHost: api\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n0\r\n\r\n', 400],
    ['obs-fold', 'GET /ok HTTP/1.1\r\nHost: api\r\nX-A: a\r\n b\r\n\r\n', 400],
    ['bare LF line endings', 'GET /ok HTTP/1.1\nHost: api\n\n', 400],
    ['a bare CR', 'GET /ok HTTP/1.1\r\nHost: api\rX-A: b\r\n\r\n', 400],
    ['two Host headers', 'GET /ok HTTP/1.1\r\nHost: api\r\nHost: evil\r\n\r\n', 400],
    ['two Authorization headers', 'GET /ok HTTP/1.1\r\nHost: api\r\nAuthorization: Bearer a\r\nAuthorization: Bearer b\r\n\r\n', 400],
    ['a header name with an underscore', 'GET /ok HTTP/1.1\r\nHost: api\r\nX_Forwarded_For: 1.2.3.4\r\n\r\n', 400],
    ['an absolute-form target', 'GET http://evil.example/ok HTTP/1.1\r\nHost: api\r\n\r\n', 400],
    ['no Host header', 'GET /ok HTTP/1.1\r\nX-A: 1\r\n\r\n', 400],
    ['a NUL in a header value', 'GET /ok HTTP/1.1\r\nHost: api\r\nX-A: a\x00b\r\n\r\n', 400],
    ['a header block over the limit', `GET /ok HTTP/1.1\r\nHost: api\r\nX-Big: ${'a'.repeat(80 * 1024)}\r\n\r\n`, 431],
    ['more headers than the limit', `GET /ok HTTP/1.1\r\nHost: api\r\n${Array.from({ length: 150 }, (_v, i) => `X-H${i}: v\r\n`).join('')}\r\n`, 431],
  ];

  for (const [what, head, status] of AMBIGUOUS) {
    test(`refused with ${status}, connection closed, nothing forwarded (pipelined request included): ${what}`, async () => {
      const hits = app.hits;
      const r = await rawRequest(port, head + VALID);
      assert.equal(r.status, status, r.text.slice(0, 300));
      assert.ok(r.closed, 'connection left open after an ambiguous request');
      assert.equal((r.text.match(/HTTP\/1\.1 /g) ?? []).length, 1, 'the pipelined request was answered');
      // A pipelined request forwarded anyway would reach the app after the reply: give it time.
      await new Promise((res) => setTimeout(res, 150));
      assert.equal(app.hits, hits, 'the app saw a request');
    });
  }

  test('a well-formed pipeline of two requests is answered twice, in order', async () => {
    const hits = app.hits;
    const r = await rawRequest(port, 'GET /ok/1 HTTP/1.1\r\nHost: api\r\n\r\nGET /ok/2 HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n');
    assert.equal((r.text.match(/HTTP\/1\.1 200/g) ?? []).length, 2, r.text);
    assert.ok(r.text.indexOf('"/ok/1"') < r.text.indexOf('"/ok/2"'));
    assert.equal(app.hits, hits + 2);
  });

  // [raw path, what the app must see (null: refused with 403 or 400)]
  const BYPASS: readonly [string, string | null][] = [
    ['/admin', null],
    ['/%61dmin', null],
    ['/%2e/admin', null],
    ['/x/%2e%2e/admin', null],
    ['/x/../admin', null],
    ['//admin', null],
    ['/.//admin/', null],
    ['/%2fadmin', null],
    ['/%5cadmin', null],
    ['/\\admin', null],
    ['/admin;jsessionid=1', null],
    ['/x/..;/admin', null],
    ['/ADMIN', '/ADMIN'],
    ['/public/../ok', '/ok'],
    ['/ok/%7euser', '/ok/~user'],
    ['/ok/a%2Fb', '/ok/a/b'],
    ['/ok?q=/admin', '/ok?q=/admin'],
  ];

  for (const [raw, seen] of BYPASS) {
    test(`path ${raw}: ${seen === null ? 'refused' : `authorised and forwarded as ${seen}`}`, async () => {
      const hits = app.hits;
      const r = await rawRequest(port, `GET ${raw} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`);
      if (seen === null) {
        assert.ok(r.status === 403 || r.status === 400, `status ${r.status}: ${r.text.slice(0, 200)}`);
        assert.equal(app.hits, hits, 'the app saw a denied path');
      } else {
        assert.equal(r.status, 200, r.text.slice(0, 300));
        assert.equal(app.last?.url, seen, 'the forwarded path is not the authorised one');
      }
    });
  }
});
