// drainHttp (src/dataplane/http-guard.ts), the HTTP part of a SIGTERM drain: an idle
// keep-alive connection is closed at once; a request in flight is answered in full with
// `Connection: close` and its connection closed after; a request that starts on a kept-alive
// connection after the drain began gets `Connection: close` too; the drain resolves when no
// connection is left.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as http from 'node:http';
import * as net from 'node:net';
import { drainHttp, guardedServer } from '../../src/dataplane/http-guard.ts';

interface Served {
  readonly port: number;
  readonly server: http.Server;
  readonly front: net.Server;
}

/**
 * A guarded server fed by a plain TCP listener, as the data plane's listeners do; /slow
 * answers after 300 ms, /stream sends its head at once and its body over 300 ms.
 */
async function serve(): Promise<Served> {
  const server = guardedServer(
    60_000,
    (req, res) => {
      req.resume();
      const answer = (): void => {
        res.writeHead(200, { 'content-length': '2' });
        res.end('ok');
      };
      if (req.url === '/slow') setTimeout(answer, 300);
      else if (req.url === '/stream') {
        res.writeHead(200, { 'content-length': '2' });
        res.write('o');
        setTimeout(() => res.end('k'), 300);
      } else answer();
    },
    () => undefined,
  );
  const front = net.createServer((s) => server.emit('connection', s));
  await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
  return { port: (front.address() as net.AddressInfo).port, server, front };
}

function get(port: number, path: string, agent: http.Agent): Promise<{ status: number; body: string; connection: string | undefined; socket: net.Socket }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port, path, agent }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, connection: res.headers.connection, socket: req.socket as net.Socket }));
    });
    req.on('error', reject);
  });
}

const closed = (s: net.Socket): Promise<void> => (s.closed ? Promise.resolve() : new Promise((resolve) => s.once('close', () => resolve())));

test('idle connections close at once, a request in flight finishes with Connection: close, then the drain resolves', async () => {
  const { port, server, front } = await serve();
  const idleAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const busyAgent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const idle = await get(port, '/', idleAgent);
  assert.equal(idle.connection, 'keep-alive');
  const slow = get(port, '/slow', busyAgent);
  await new Promise((r) => setTimeout(r, 100));

  let drained = false;
  const drain = drainHttp(server).then(() => (drained = true));
  front.close();
  await closed(idle.socket);
  const r = await slow;
  assert.equal(r.status, 200);
  assert.equal(r.body, 'ok');
  assert.equal(r.connection, 'close');
  await closed(r.socket);
  await drain;
  assert.equal(drained, true);
  idleAgent.destroy();
  busyAgent.destroy();
});

test('the second request of a kept-alive connection, in flight, is answered with Connection: close', async () => {
  const { port, server, front } = await serve();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const first = await get(port, '/', agent);
  assert.equal(first.connection, 'keep-alive');
  const second = get(port, '/slow', agent);
  await new Promise((r) => setTimeout(r, 50));
  const drain = drainHttp(server);
  front.close();
  const r = await second;
  assert.equal(r.socket, first.socket, 'not the kept-alive connection');
  assert.equal(r.connection, 'close');
  await drain;
  agent.destroy();
});

test('a response whose head is already out is finished, then its connection closed', async () => {
  const { port, server, front } = await serve();
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const streaming = get(port, '/stream', agent);
  await new Promise((r) => setTimeout(r, 100));
  const drain = drainHttp(server);
  front.close();
  const r = await streaming;
  assert.equal(r.body, 'ok');
  assert.equal(r.connection, 'keep-alive', 'sent before the drain began');
  await closed(r.socket);
  await drain;
  agent.destroy();
});

test('a server with no connection drains at once', async () => {
  const { server, front } = await serve();
  front.close();
  await drainHttp(server);
});
