// TLS session resumption between sidecars (-tls-session-resumption, src/dataplane/outbound.ts):
// the client sidecar's per-instance session cache makes the second connection to an instance
// an abbreviated handshake, and the server sidecar still reads the peer's SPIFFE identity
// from the resumed session and still decides the intention per connection, so a session
// cached while a source was allowed does not let it in once it is denied.
//
// In-process: the real InboundListener and UpstreamListener, real TLS over loopback, leaves
// from our CA, and a policy probe whose answers the test changes.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import * as tls from 'node:tls';
import { createLeafCsr, generateRoot, signLeafCsr, type RootMaterial } from '../../src/ca/authority.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import { compileChain } from '../../src/chain/compile.ts';
import { Decision } from '../../src/authz/table.ts';
import { BLOCK_SLOTS, deniedSlot } from '../../src/metrics/counters.ts';
import { L7_SLOTS } from '../../src/metrics/l7.ts';
import { InboundListener, tlsServerOptions, type PolicyProbe } from '../../src/dataplane/inbound.ts';
import { TlsSessionCache, UpstreamListener } from '../../src/dataplane/outbound.ts';
import type { InboundRouting, TlsMaterial, UpstreamRouting } from '../../src/workers/messages.ts';
import { echoOnce, startEchoApp, type EchoApp } from '../helpers/net.ts';

const CLUSTER_ID = '7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6';
const TD = `${CLUSTER_ID}.consul`;
const DC = 'dc1';

let root: RootMaterial;
const leaves = new Map<string, TlsMaterial>();
let app: EchoApp;

async function leaf(service: string): Promise<TlsMaterial> {
  const uri = serviceSpiffeId(TD, 'default', DC, service);
  const { csrPem, keyPem } = await createLeafCsr(uri);
  const c = await signLeafCsr({ csrPem, root, trustDomain: TD, datacenter: DC, now: new Date() });
  return { keyPem, certPem: c.CertPEM, caPems: [root.certPem], trustDomain: TD, uri };
}

function mat(service: string): TlsMaterial {
  const m = leaves.get(service);
  if (m === undefined) throw new Error(`no leaf for ${service}`);
  return m;
}

/** A probe that allows the sources in `allowed` to reach any destination. */
function policy(allowed: Set<string>): PolicyProbe {
  return { decide: (source) => (allowed.has(source) ? Decision.ALLOW : Decision.DENY), generation: () => 1, lastGeneration: 1 };
}

const INBOUND_ROUTING: InboundRouting = { protocol: 'tcp', localConnectTimeoutMs: 1000, localRequestTimeoutMs: 0, intentionSources: [], intentionJwt: null, defaultAllow: false };

async function startInbound(allowed: Set<string>): Promise<{ listener: InboundListener; port: number; counters: Float64Array }> {
  const counters = new Float64Array(BLOCK_SLOTS);
  const listener = new InboundListener(
    { spec: { host: '127.0.0.1', port: 0, appHost: '127.0.0.1', appPort: app.port }, service: 'api', policy: policy(allowed), counters, connectTimeoutMs: 1000, handshakeTimeoutMs: 5000, l7: new Float64Array(L7_SLOTS) },
    mat('api'),
    INBOUND_ROUTING,
  );
  return { listener, port: await listener.listen(0), counters };
}

function routingTo(port: number): UpstreamRouting {
  const chain = compileChain([], 'api', { datacenter: DC }).dataPlane;
  const target = chain.routes[0]?.action.splits[0]?.targetId as string;
  return { chain, endpoints: { [target]: [{ host: '127.0.0.1', port, service: 'api' }] } };
}

async function startUpstream(port: number, resumption: boolean): Promise<{ listener: UpstreamListener; port: number }> {
  const listener = new UpstreamListener(
    { spec: { name: 'api', host: '127.0.0.1', port: 0 }, counters: new Float64Array(BLOCK_SLOTS), connectTimeoutMs: 2000, l7: new Float64Array(L7_SLOTS), tlsSessionResumption: resumption },
    mat('web'),
    routingTo(port),
  );
  return { listener, port: await listener.listen(0) };
}

/** One mTLS connection as `service`: whether it resumed, what came back for 'ping', and the newest session. */
async function mtlsEcho(port: number, service: string, session?: Buffer): Promise<{ reused: boolean; echoed: string; session: Buffer | undefined }> {
  const m = mat(service);
  const s = tls.connect({ host: '127.0.0.1', port, key: m.keyPem, cert: m.certPem, ca: [...m.caPems], checkServerIdentity: () => undefined, ...(session === undefined ? {} : { session }) });
  let newest: Buffer | undefined;
  s.on('session', (b: Buffer) => (newest = b));
  s.on('error', () => undefined);
  await once(s, 'secureConnect');
  const reused = s.isSessionReused();
  let echoed = '';
  s.setEncoding('utf8');
  s.on('data', (d: string) => (echoed += d));
  s.write('ping');
  await new Promise<void>((resolve) => {
    const t = setTimeout(() => resolve(), 2000);
    const done = (): void => {
      clearTimeout(t);
      resolve();
    };
    s.on('data', () => echoed.length >= 4 && done());
    s.on('close', done);
  });
  // TLS 1.3 tickets may follow the first data; give them a turn before closing.
  await new Promise((r) => setImmediate(r));
  s.destroy();
  return { reused, echoed, session: newest };
}

before(async () => {
  root = await generateRoot({ clusterId: CLUSTER_ID, now: new Date() });
  for (const svc of ['api', 'web', 'evil']) leaves.set(svc, await leaf(svc));
  app = await startEchoApp();
});

after(async () => {
  await app.close();
});

test('server side: a resumed session still carries the peer identity, and the intention is decided again', async () => {
  const allowed = new Set(['web', 'evil']);
  const { listener, port, counters } = await startInbound(allowed);
  try {
    const first = await mtlsEcho(port, 'web');
    assert.equal(first.reused, false);
    assert.equal(first.echoed, 'ping');
    assert.ok(first.session !== undefined, 'the server issued a session ticket');
    // Resumed: no certificate is sent, yet the listener knows it is web (otherwise bad_identity).
    const second = await mtlsEcho(port, 'web', first.session);
    assert.equal(second.reused, true, 'the second connection resumed the session');
    assert.equal(second.echoed, 'ping');
    assert.equal(counters[deniedSlot('bad_identity')], 0);

    // evil gets a session while allowed; then the intention changes to deny.
    const e1 = await mtlsEcho(port, 'evil');
    assert.equal(e1.echoed, 'ping');
    assert.ok(e1.session !== undefined);
    allowed.delete('evil');
    const appConnections = app.connections();
    const e2 = await mtlsEcho(port, 'evil', e1.session);
    assert.equal(e2.reused, true, 'the denied connection did resume');
    assert.equal(e2.echoed, '', 'a denied source gets nothing back on a resumed session');
    assert.equal(counters[deniedSlot('intention')], 1, 'denied by the intention, for the identity read from the session');
    assert.equal(counters[deniedSlot('bad_identity')], 0);
    assert.equal(app.connections(), appConnections, 'the app never saw the denied connection');
  } finally {
    await listener.close();
  }
});

test('client side: the upstream listener resumes its session with an instance, and not when turned off', async () => {
  // An mTLS server like the public listener (same options), which reports resumption.
  const reused: boolean[] = [];
  const peers: string[] = [];
  const server = tls.createServer({ ...tlsServerOptions(mat('api')), requestCert: true, rejectUnauthorized: true }, (s) => {
    reused.push(s.isSessionReused());
    // The client certificate comes back from the session ticket on a resumed TLS 1.3 session.
    peers.push(s.getPeerX509Certificate()?.subjectAltName ?? 'none');
    s.on('error', () => undefined);
    s.pipe(s);
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const serverPort = (server.address() as AddressInfo).port;
  const on = await startUpstream(serverPort, true);
  const off = await startUpstream(serverPort, false);
  try {
    for (let i = 0; i < 3; i++) assert.equal(await echoOnce(on.port, 'ping'), 'ping');
    assert.deepEqual(reused, [false, true, true]);
    assert.deepEqual(peers, Array.from({ length: 3 }, () => `URI:${mat('web').uri}`));
    reused.length = 0;
    // New certificates (a renewal or a new trust bundle): cached sessions are dropped.
    on.listener.updateTls(mat('web'));
    for (let i = 0; i < 2; i++) assert.equal(await echoOnce(on.port, 'ping'), 'ping');
    assert.deepEqual(reused, [false, true]);
    reused.length = 0;
    for (let i = 0; i < 3; i++) assert.equal(await echoOnce(off.port, 'ping'), 'ping');
    assert.deepEqual(reused, [false, false, false]);
  } finally {
    await Promise.all([on.listener.close(), off.listener.close()]);
    server.close();
  }
});

test('through both sidecars: resumed connections are allowed, and refused once the intention denies', async () => {
  const allowed = new Set(['web']);
  const inbound = await startInbound(allowed);
  const up = await startUpstream(inbound.port, true);
  try {
    for (let i = 0; i < 3; i++) assert.equal(await echoOnce(up.port, 'ping'), 'ping');
    assert.equal(inbound.counters[deniedSlot('bad_identity')], 0);
    allowed.delete('web');
    assert.equal(await echoOnce(up.port, 'ping', 1000), '');
    assert.equal(inbound.counters[deniedSlot('intention')], 1);
  } finally {
    await Promise.all([up.listener.close(), inbound.listener.close()]);
  }
});

test('the session cache is a bounded LRU', () => {
  const c = new TlsSessionCache(2);
  const b = (n: number): Buffer => Buffer.from([n]);
  c.set('a', b(1));
  c.set('b', b(2));
  assert.deepEqual(c.get('a'), b(1)); // a is now the most recent
  c.set('c', b(3)); // evicts b
  assert.equal(c.size, 2);
  assert.equal(c.get('b'), undefined);
  assert.deepEqual(c.get('c'), b(3));
  c.delete('a');
  assert.equal(c.get('a'), undefined);
  c.clear();
  assert.equal(c.size, 0);
});

test('server side: new certificates or a new trust bundle end resumption (a root rotated out cannot be resumed past)', async () => {
  // node's setSecureContext makes new session-ticket keys, so no session issued before
  // updateTls resumes after it: a peer verified against a bundle that has since changed does a
  // full handshake against the current one. This test keeps that guarantee from changing under us.
  const { listener, port } = await startInbound(new Set(['web']));
  try {
    const first = await mtlsEcho(port, 'web');
    assert.ok(first.session !== undefined);
    const again = await mtlsEcho(port, 'web', first.session);
    assert.equal(again.reused, true);
    const next = await generateRoot({ clusterId: CLUSTER_ID, now: new Date() });
    const m = mat('api');
    listener.updateTls({ ...m, caPems: [...m.caPems, next.certPem] });
    const after = await mtlsEcho(port, 'web', again.session ?? first.session);
    assert.equal(after.reused, false, 'a session from before the bundle changed was resumed');
    assert.equal(after.echoed, 'ping', 'the full handshake that replaced it succeeds');
  } finally {
    await listener.close();
  }
});
