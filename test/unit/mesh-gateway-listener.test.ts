// The mesh gateway listener (src/gateway/mesh-listener.ts) with real sockets and plain TCP
// backends: bytes are forwarded unchanged (ClientHello included), round robin, the next instance
// after a connect error, half-close both ways, the SNI timeout, connection limits, and every
// refusal counted with its reason.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { ConnectionCounts } from '../../src/dataplane/limits.ts';
import { MeshGatewayListener } from '../../src/gateway/mesh-listener.ts';
import { BLOCK_SLOTS, S } from '../../src/metrics/counters.ts';
import { D, G, allocateMeshMetrics, destSlot, meshMetricsRegion, refusedSlot, type MeshRefuseReason } from '../../src/metrics/mesh-gateway.ts';
import type { MeshGatewayRouting } from '../../src/workers/messages.ts';

const TD = 'abc.consul';
const SNI = (s: string): string => `${s}.default.dc1.internal.${TD}`;

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

/** A minimal TLS 1.2-style ClientHello record naming `host`. */
function clientHello(host: string): Buffer {
  const name = Buffer.from(host);
  const entry = Buffer.concat([Buffer.from([0]), u16(name.length), name]);
  const sni = Buffer.concat([u16(0), u16(entry.length + 2), u16(entry.length), entry]);
  const body = Buffer.concat([Buffer.from([3, 3]), Buffer.alloc(32, 1), Buffer.from([0]), u16(2), Buffer.from([0x13, 0x01]), Buffer.from([1, 0]), u16(sni.length), sni]);
  const hs = Buffer.concat([Buffer.from([1, 0, (body.length >> 8) & 0xff, body.length & 0xff]), body]);
  return Buffer.concat([Buffer.from([22, 3, 1]), u16(hs.length), hs]);
}

interface Backend {
  readonly port: number;
  /** Everything each accepted connection sent, once it ended. */
  readonly received: Buffer[];
  close(): Promise<void>;
}

/** Answers `<name>:<bytes received>` after the client's FIN, then ends (exercises half-close). */
async function backend(name: string): Promise<Backend> {
  const received: Buffer[] = [];
  const server = net.createServer({ allowHalfOpen: true }, (s) => {
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('end', () => {
      const all = Buffer.concat(chunks);
      received.push(all);
      s.end(`${name}:${all.length}`);
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    received,
    close: () => new Promise((resolve) => server.close(() => resolve())),
  };
}

/** A port nothing listens on. */
async function deadPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}

/** Sends `parts` (with a pause between them), half-closes, and resolves with what came back before the close. */
function exchange(port: number, parts: readonly Buffer[], opts: { end?: boolean; pauseMs?: number } = {}): Promise<string> {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port, allowHalfOpen: true });
    let got = '';
    s.on('data', (d: Buffer) => (got += d.toString()));
    s.on('error', () => undefined);
    s.on('close', () => resolve(got));
    // The far end finished: finish ours too (a no-op when we already did).
    s.on('end', () => s.end());
    s.once('connect', () => {
      void (async () => {
        for (const p of parts) {
          s.write(p);
          if (opts.pauseMs !== undefined) await new Promise((r) => setTimeout(r, opts.pauseMs));
        }
        if (opts.end !== false) s.end();
      })();
    });
  });
}

describe('mesh gateway listener', () => {
  let a: Backend;
  let b: Backend;
  let dead: number;
  let listener: MeshGatewayListener;
  let port: number;
  const counters = new Float64Array(BLOCK_SLOTS);
  const mesh = meshMetricsRegion(allocateMeshMetrics(1, 16), 0, 16);
  const refused = (r: MeshRefuseReason): number => mesh[refusedSlot(r)] as number;
  const routing = (over: Partial<MeshGatewayRouting['services']> = {}): MeshGatewayRouting => ({
    datacenter: 'dc1',
    trustDomain: TD,
    services: {
      [SNI('api')]: { endpoints: [{ host: '127.0.0.1', port: a.port }, { host: '127.0.0.1', port: b.port }], block: 1 },
      [SNI('flaky')]: { endpoints: [{ host: '127.0.0.1', port: dead }, { host: '127.0.0.1', port: b.port }], block: 2 },
      [SNI('down')]: { endpoints: [{ host: '127.0.0.1', port: dead }], block: 3 },
      [SNI('empty')]: { endpoints: [], block: 4 },
      ...(over as Record<string, MeshGatewayRouting['services'][string]>),
    },
    datacenters: { dc2: { endpoints: [{ host: '127.0.0.1', port: a.port }], block: 5 } },
  });

  before(async () => {
    a = await backend('a');
    b = await backend('b');
    dead = await deadPort();
    const gate = new ConnectionCounts(null, 0, 1, 1, 100).gate(0, 3);
    listener = new MeshGatewayListener({ spec: { name: 'mesh.lan', host: '127.0.0.1', port: 0 }, counters, mesh, connectTimeoutMs: 1000, sniTimeoutMs: 300, tcpIdleTimeoutMs: 0, connections: gate }, routing());
    port = await listener.listen(0);
  });

  after(async () => {
    await Promise.all([listener.close(), a.close(), b.close()]);
  });

  test('forwards the ClientHello and what follows unchanged, round robin, with half-close both ways', async () => {
    const hello = clientHello(SNI('API'));
    const rest = Buffer.from('after the hello');
    const answers = [await exchange(port, [hello, rest]), await exchange(port, [hello, rest])];
    assert.deepEqual(answers.sort(), [`a:${hello.length + rest.length}`, `b:${hello.length + rest.length}`]);
    assert.ok(a.received.at(-1)?.equals(Buffer.concat([hello, rest])));
    assert.ok(b.received.at(-1)?.equals(Buffer.concat([hello, rest])));
    assert.equal(mesh[destSlot(1, D.FORWARDED)], 2);
    assert.equal(mesh[G.ROUTED], 2);
  });

  test('a ClientHello cut into many TCP segments is reassembled', async () => {
    const hello = clientHello(SNI('api'));
    const parts = [hello.subarray(0, 1), hello.subarray(1, 3), hello.subarray(3, 9), hello.subarray(9, 40), hello.subarray(40)];
    const got = await exchange(port, parts, { pauseMs: 20 });
    assert.match(got, /^[ab]:\d+$/);
    assert.equal(Number(got.split(':')[1]), hello.length);
  });

  test('a connect error moves on to the next instance', async () => {
    const before = mesh[G.CONNECT_FAILURES] as number;
    const answers: string[] = [];
    for (let i = 0; i < 2; i++) answers.push(await exchange(port, [clientHello(SNI('flaky'))]));
    for (const x of answers) assert.match(x, /^b:/);
    assert.ok((mesh[G.CONNECT_FAILURES] as number) > before);
    assert.ok((mesh[destSlot(2, D.CONNECT_FAILURES)] as number) >= 1);
  });

  test('refusals, each counted with its reason, nothing forwarded', async () => {
    const cases: [Buffer[], MeshRefuseReason][] = [
      [[clientHello(SNI('down'))], 'upstream_connect_failed'],
      [[clientHello(SNI('empty'))], 'no_healthy_upstream'],
      [[clientHello(SNI('nope'))], 'unknown_service'],
      [[clientHello('api.default.dc1.internal.other.consul')], 'foreign_trust_domain'],
      [[clientHello(`x.default.dc9.internal.${TD}`)], 'unknown_datacenter'],
      [[Buffer.from('SSH-2.0-OpenSSH\r\n')], 'not_tls'],
      [[clientHello('bad..name')], 'malformed'],
      [[clientHello(SNI('api')).subarray(0, 20)], 'incomplete'],
    ];
    const received = a.received.length + b.received.length;
    for (const [parts, reason] of cases) {
      const before = refused(reason);
      const got = await exchange(port, parts);
      assert.equal(got, '', reason);
      assert.equal(refused(reason), before + 1, reason);
    }
    assert.equal(a.received.length + b.received.length, received, 'no backend saw a refused connection');
  });

  test('the SNI timeout closes a connection that never completes its ClientHello', async () => {
    const before = refused('sni_timeout');
    const t0 = performance.now();
    const got = await exchange(port, [clientHello(SNI('api')).subarray(0, 30)], { end: false });
    assert.equal(got, '');
    assert.ok(performance.now() - t0 >= 250);
    assert.equal(refused('sni_timeout'), before + 1);
  });

  test('another datacenter\'s names go to its gateways; new routing applies to new connections', async () => {
    assert.match(await exchange(port, [clientHello(`web.default.dc2.internal.${TD}`)]), /^a:/);
    listener.updateRouting({ ...routing(), services: { [SNI('api')]: { endpoints: [{ host: '127.0.0.1', port: b.port }], block: 1 } } });
    for (let i = 0; i < 3; i++) assert.match(await exchange(port, [clientHello(SNI('api'))]), /^b:/);
    const before = refused('unknown_service');
    assert.equal(await exchange(port, [clientHello(SNI('flaky'))]), '');
    assert.equal(refused('unknown_service'), before + 1);
    listener.updateRouting(routing());
  });

  test('the listener connection limit refuses at accept; counters balance', async () => {
    // Three held connections (the gate's limit), then one more.
    const held = await Promise.all(
      [0, 1, 2].map(
        () =>
          new Promise<net.Socket>((resolve) => {
            const s = net.connect({ host: '127.0.0.1', port }, () => resolve(s));
            s.on('error', () => undefined);
          }),
      ),
    );
    await new Promise((r) => setTimeout(r, 50));
    const before = refused('listener_connection_limit');
    assert.equal(await exchange(port, [clientHello(SNI('api'))]), '');
    assert.equal(refused('listener_connection_limit'), before + 1);
    for (const s of held) s.destroy();
    await new Promise((r) => setTimeout(r, 400));
    assert.equal(mesh[G.OPENED], mesh[G.CLOSED], 'every opened connection closed');
    assert.equal(counters[S.ACCEPTED_IN], counters[S.CLOSED_IN]);
    assert.ok((mesh[G.RX] as number) > 0 && (mesh[G.TX] as number) > 0);
  });
});
