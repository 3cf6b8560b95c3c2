// Two datacenters on one machine, both real agents started by the CLI: dc2 joins dc1
// (-primary-datacenter dc1 -join-wan). Config entries and intentions replicate dc1 → dc2
// (writes on dc2 go to dc1 and read back at once), dc2 signs leaves with an intermediate
// from dc1's root (openssl verify, a mutual TLS handshake across datacenters), `?dc=`
// reaches the other datacenter's catalog, a root rotation on dc1 reaches dc2 with a new
// intermediate first, and a secondary started before its primary comes up once it does.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { once } from 'node:events';
import { freePort, startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { meshd } from '../helpers/cli.ts';
import { createLeafCsr } from '../../src/ca/authority.ts';
import { eventually } from '../helpers/until.ts';

interface Roots {
  ActiveRootID: string;
  TrustDomain: string;
  Roots: { ID: string; RootCert: string; Active: boolean; IntermediateCerts: string[] | null }[];
}
interface Leaf {
  CertPEM: string;
  PrivateKeyPEM: string;
  ServiceURI: string;
}

let dir: string;
let dc1: MeshdProcess;
let dc2: MeshdProcess;
let http1: string;
let http2: string;

async function call(base: string, method: string, path: string, body?: unknown): Promise<{ status: number; text: string; index: number; json: () => unknown }> {
  const res = await fetch(`http://${base}${path}`, { method, ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }) });
  const text = await res.text();
  return { status: res.status, text, index: Number(res.headers.get('x-consul-index') ?? 0), json: () => JSON.parse(text) as unknown };
}

async function ok<T>(base: string, method: string, path: string, body?: unknown): Promise<T> {
  const r = await call(base, method, path, body);
  assert.ok(r.status >= 200 && r.status < 300, `${method} ${base}${path}: HTTP ${r.status} ${r.text}`);
  return r.json() as T;
}

/** eventually(), with dc2's log in the failure: what a secondary says is the first thing to read. */
async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, limitMs = 10_000): Promise<T> {
  try {
    return await eventually(what, fn, limitMs, 50);
  } catch (err) {
    return assert.fail(`${(err as Error).message}\ndc2 stderr: ${dc2?.stderr() ?? ''}`);
  }
}

function pems(chain: string): string[] {
  return chain.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
}

/** openssl verify of a leaf against exactly `rootPem`, with the rest of its chain as untrusted. */
function opensslVerify(rootPem: string, certPem: string): string {
  const [leaf, ...rest] = pems(certPem);
  const d = mkdtempSync(join(dir, 'verify-'));
  writeFileSync(join(d, 'root.pem'), rootPem);
  writeFileSync(join(d, 'leaf.pem'), leaf as string);
  writeFileSync(join(d, 'rest.pem'), rest.join('\n'));
  return execFileSync('openssl', ['verify', '-CAfile', join(d, 'root.pem'), ...(rest.length > 0 ? ['-untrusted', join(d, 'rest.pem')] : []), join(d, 'leaf.pem')], { encoding: 'utf8', stdio: 'pipe' });
}

function secondaryArgs(primaryHttp: string, dataDir: string): string[] {
  return ['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', dataDir, '-datacenter', 'dc2', '-primary-datacenter', 'dc1', '-join-wan', primaryHttp];
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshd-federation-'));
  dc1 = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'dc1')]);
  http1 = dc1.fields.http as string;
  dc2 = await startMeshd(secondaryArgs(http1, join(dir, 'dc2')));
  http2 = dc2.fields.http as string;
  assert.equal(dc2.fields['primary-datacenter'], 'dc1');
  // dc2 serves roots once it holds an intermediate from dc1.
  await waitFor('dc2 has the primary roots', async () => ((await call(http2, 'GET', '/v1/connect/ca/roots')).status === 200 ? true : undefined));
});

after(async () => {
  await Promise.all([dc1?.stop(), dc2?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

test('both datacenters list ["dc1","dc2"] and dc2 serves the primary\'s roots', async () => {
  for (const base of [http2, http1]) {
    await waitFor(`${base} lists both datacenters`, async () => {
      const dcs = await ok<string[]>(base, 'GET', '/v1/catalog/datacenters');
      return JSON.stringify(dcs) === '["dc1","dc2"]' ? true : undefined;
    });
  }
  const r1 = await ok<Roots>(http1, 'GET', '/v1/connect/ca/roots');
  const r2 = await ok<Roots>(http2, 'GET', '/v1/agent/connect/ca/roots');
  assert.equal(r2.TrustDomain, r1.TrustDomain);
  assert.equal(r2.ActiveRootID, r1.ActiveRootID);
  assert.deepEqual(r2.Roots.map((r) => r.RootCert), r1.Roots.map((r) => r.RootCert));
  // The secondary's intermediate is listed last on the active root (Consul's order).
  const active2 = r2.Roots.find((r) => r.Active);
  assert.equal(active2?.IntermediateCerts?.length, 1);
  // Federation states: dc1 knows dc2's agent address.
  const states = await ok<{ Datacenter: string; Address: string; MeshGateways: unknown[] }[]>(http1, 'GET', '/v1/internal/federation-states');
  assert.deepEqual(states.map((s) => [s.Datacenter, s.Address]), [['dc1', http1], ['dc2', http2]]);
  assert.deepEqual(await ok(http2, 'GET', '/v1/internal/federation-states/mesh-gateways'), { dc1: [], dc2: [] });
  const self = await ok<{ Config: { Datacenter: string; PrimaryDatacenter: string } }>(http2, 'GET', '/v1/agent/self');
  assert.deepEqual([self.Config.Datacenter, self.Config.PrimaryDatacenter], ['dc2', 'dc1']);
});

test('a config entry and an intention written on dc1 wake a blocking query on dc2 within 1 s', async () => {
  const before = await call(http2, 'GET', '/v1/config/service-defaults');
  const t0 = Date.now();
  const blocked = call(http2, 'GET', `/v1/config/service-defaults?index=${before.index}&wait=10s`);
  await new Promise((r) => setTimeout(r, 100));
  await ok(http1, 'PUT', '/v1/config', { Kind: 'service-defaults', Name: 'billing', Protocol: 'http' });
  const woke = await blocked;
  assert.ok(Date.now() - t0 < 1100, `woke after ${Date.now() - t0} ms`);
  assert.ok(woke.index > before.index);
  assert.deepEqual((woke.json() as { Name: string; Protocol: string }[]).map((e) => [e.Name, e.Protocol]), [['billing', 'http']]);

  // An intention through the legacy ID API keeps its ID and Meta on dc2, and dc2's own
  // intention table (republished on replication) decides with it.
  const ib = await call(http2, 'GET', '/v1/connect/intentions');
  const iblocked = call(http2, 'GET', `/v1/connect/intentions?index=${ib.index}&wait=10s`);
  const { ID } = await ok<{ ID: string }>(http1, 'POST', '/v1/connect/intentions', { SourceName: 'web', DestinationName: 'billing', Action: 'allow', Meta: { owner: 'team-a' } });
  const t1 = Date.now();
  const list = (await iblocked).json() as { ID?: string; SourceName: string; Meta: Record<string, string> }[];
  assert.ok(Date.now() - t1 < 1000);
  assert.deepEqual(list.map((i) => [i.ID, i.SourceName, i.Meta]), [[ID, 'web', { owner: 'team-a' }]]);
  assert.deepEqual(await ok(http2, 'GET', '/v1/connect/intentions/check?source=web&destination=billing'), { Allowed: true });
  assert.deepEqual(await ok(http2, 'GET', '/v1/connect/intentions/check?source=other&destination=billing'), { Allowed: false });
});

test('a write on dc2 lands on dc1 and reads back at once on dc2; deletes replicate both ways', async () => {
  assert.equal(await ok(http2, 'PUT', '/v1/config', { Kind: 'service-resolver', Name: 'orders', ConnectTimeout: '3s' }), true);
  // No wait: the write is answered once dc2 has replicated it.
  const on2 = await ok<{ Name: string; ConnectTimeout: string }>(http2, 'GET', '/v1/config/service-resolver/orders');
  assert.equal(on2.ConnectTimeout, '3s');
  assert.equal((await ok<{ Name: string }>(http1, 'GET', '/v1/config/service-resolver/orders')).Name, 'orders');
  // The chain on dc2 compiles with the replicated resolver.
  assert.match(JSON.stringify(await ok(http2, 'GET', '/v1/discovery-chain/orders')), /"ConnectTimeout":"3s"/);

  // The CLI's intention create on dc2 goes to dc1 too.
  const created = await meshd(['intention', 'create', '-deny', '-http-addr', http2, 'web', 'orders']);
  assert.equal(created.code, 0, created.stderr);
  assert.deepEqual(await ok(http2, 'GET', '/v1/connect/intentions/check?source=web&destination=orders'), { Allowed: false });
  assert.equal((await call(http1, 'GET', '/v1/connect/intentions/exact?source=web&destination=orders')).status, 200);

  // Delete on dc2: gone on both at once.
  assert.equal(await ok(http2, 'DELETE', '/v1/config/service-resolver/orders'), true);
  assert.equal((await call(http2, 'GET', '/v1/config/service-resolver/orders')).status, 404);
  assert.equal((await call(http1, 'GET', '/v1/config/service-resolver/orders')).status, 404);
  // Delete on dc1: replicated to dc2 shortly.
  await ok(http1, 'DELETE', '/v1/config/service-defaults/billing');
  await waitFor('the delete reaches dc2', async () => ((await call(http2, 'GET', '/v1/config/service-defaults/billing')).status === 404 ? true : undefined), 2000);
  // A refused write is refused on dc2 with dc1's answer, and nothing changes.
  const bad = await call(http2, 'PUT', '/v1/config', { Kind: 'service-defaults', Name: 'x', Protocol: 'carrier-pigeon' });
  assert.equal(bad.status, 400, bad.text);
  assert.equal((await call(http1, 'GET', '/v1/config/service-defaults/x')).status, 404);
});

test('a dc2 leaf chains leaf → dc2 intermediate → dc1 root; the intermediate is CA:TRUE pathlen 0', async () => {
  const roots = await ok<Roots>(http1, 'GET', '/v1/connect/ca/roots');
  const leaf = await ok<Leaf>(http2, 'GET', '/v1/agent/connect/ca/leaf/api');
  assert.match(leaf.ServiceURI, /\/dc\/dc2\/svc\/api$/);
  const chain = pems(leaf.CertPEM);
  assert.equal(chain.length, 2, 'leaf then intermediate');
  const activeRoot = roots.Roots.find((r) => r.ID === roots.ActiveRootID)?.RootCert as string;
  assert.match(opensslVerify(activeRoot, leaf.CertPEM), /OK/);
  const int = new X509Certificate(chain[1] as string);
  assert.equal(int.ca, true);
  assert.equal(int.subjectAltName, `URI:spiffe://${roots.TrustDomain}`);
  writeFileSync(join(dir, 'int.pem'), chain[1] as string);
  const text = execFileSync('openssl', ['x509', '-in', join(dir, 'int.pem'), '-noout', '-text'], { encoding: 'utf8' });
  assert.match(text, /CA:TRUE, pathlen:0/);
  // The leaf is not signed by the root itself.
  assert.ok(!new X509Certificate(chain[0] as string).checkIssued(new X509Certificate(activeRoot)));
  // A CSR naming dc1 sent to dc2 is refused: dc2 signs dc2 identities only.
  const csr = await createLeafCsr(`spiffe://${roots.TrustDomain}/ns/default/dc/dc1/svc/api`);
  const refused = await call(http2, 'POST', '/v1/connect/ca/sign', { CSR: csr.csrPem });
  assert.equal(refused.status, 400);
  assert.match(refused.text, /different datacenter: dc1, we are dc2/);
  const own = await ok<{ CertPEM: string }>(http2, 'POST', '/v1/connect/ca/sign', { CSR: (await createLeafCsr(`spiffe://${roots.TrustDomain}/ns/default/dc/dc2/svc/api`)).csrPem });
  assert.match(opensslVerify(activeRoot, own.CertPEM), /OK/);
});

async function handshake(server: Leaf, serverCa: string[], client: Leaf, clientCa: string[]): Promise<{ serverSaw: string; clientSaw: string }> {
  const srv = tls.createServer({ key: server.PrivateKeyPEM, cert: server.CertPEM, ca: serverCa, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' });
  let serverSaw = '';
  srv.on('secureConnection', (s) => {
    serverSaw = s.getPeerCertificate().subjectaltname ?? '';
    s.end('hi');
  });
  srv.listen(0, '127.0.0.1');
  await once(srv, 'listening');
  const port = (srv.address() as { port: number }).port;
  const sock = tls.connect({ port, host: '127.0.0.1', key: client.PrivateKeyPEM, cert: client.CertPEM, ca: clientCa, checkServerIdentity: () => undefined, minVersion: 'TLSv1.3' });
  try {
    // Under TLS 1.3 the client is connected before the server has checked its certificate:
    // the exchange counts only once the server's byte arrives.
    return await new Promise((resolve, reject) => {
      sock.once('error', reject);
      sock.once('close', () => reject(new Error('closed by the server before it answered')));
      sock.once('data', () => resolve({ serverSaw, clientSaw: sock.getPeerCertificate().subjectaltname ?? '' }));
    });
  } finally {
    sock.destroy();
    srv.close();
  }
}

test('mutual TLS across datacenters: a dc2 leaf chain and a dc1 leaf, each side trusting its own agent\'s roots', async () => {
  const ca1 = (await ok<Roots>(http1, 'GET', '/v1/agent/connect/ca/roots')).Roots.map((r) => r.RootCert);
  const ca2 = (await ok<Roots>(http2, 'GET', '/v1/agent/connect/ca/roots')).Roots.map((r) => r.RootCert);
  const a2 = await ok<Leaf>(http2, 'GET', '/v1/agent/connect/ca/leaf/api');
  const w1 = await ok<Leaf>(http1, 'GET', '/v1/agent/connect/ca/leaf/web');
  const one = await handshake(a2, ca2, w1, ca1);
  assert.match(one.serverSaw, /\/dc\/dc1\/svc\/web/);
  assert.match(one.clientSaw, /\/dc\/dc2\/svc\/api/);
  const two = await handshake(w1, ca1, a2, ca2);
  assert.match(two.serverSaw, /\/dc\/dc2\/svc\/api/);
  // Without the intermediate in its chain the dc2 leaf is refused: the chain is what carries it.
  const bare = { ...a2, CertPEM: pems(a2.CertPEM)[0] as string };
  await assert.rejects(handshake(w1, ca1, bare, ca2));
});

test('?dc=dc2 on dc1 answers from dc2\'s catalog (blocking too); an unknown datacenter is "No path to datacenter"', async () => {
  assert.equal((await call(http2, 'PUT', '/v1/agent/service/register', { Name: 'ledger', ID: 'ledger-1', Port: 9100, Tags: ['v1'] })).status, 200);
  const services = await ok<Record<string, string[]>>(http1, 'GET', '/v1/catalog/services?dc=dc2');
  assert.deepEqual(services.ledger, ['v1']);
  assert.equal((await ok<Record<string, string[]>>(http1, 'GET', '/v1/catalog/services')).ledger, undefined, 'dc1\'s own catalog is separate');
  const health = await ok<{ Node: { Datacenter: string }; Service: { ID: string } }[]>(http1, 'GET', '/v1/health/service/ledger?dc=dc2');
  assert.deepEqual(health.map((h) => [h.Node.Datacenter, h.Service.ID]), [['dc2', 'ledger-1']]);
  const catalog = await ok<{ ServiceID: string; Datacenter: string; ServicePort: number }[]>(http1, 'GET', '/v1/catalog/service/ledger?dc=dc2');
  assert.deepEqual(catalog.map((c) => [c.ServiceID, c.Datacenter, c.ServicePort]), [['ledger-1', 'dc2', 9100]]);
  assert.deepEqual(await ok(http1, 'GET', '/v1/catalog/service/ledger'), []);
  assert.deepEqual(await ok(http1, 'GET', '/v1/health/connect/ledger?dc=dc2'), []);

  // A blocking query through ?dc= waits on dc2 and wakes with dc2's index.
  const first = await call(http1, 'GET', '/v1/health/service/ledger?dc=dc2');
  assert.ok(first.index > 0);
  const blocked = call(http1, 'GET', `/v1/health/service/ledger?dc=dc2&index=${first.index}&wait=10s`);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal((await call(http2, 'PUT', '/v1/agent/service/register', { Name: 'ledger', ID: 'ledger-2', Port: 9101 })).status, 200);
  const woke = await blocked;
  assert.ok(woke.index > first.index);
  assert.equal((woke.json() as unknown[]).length, 2);

  const unknown = await call(http1, 'GET', '/v1/catalog/services?dc=dc9');
  assert.equal(unknown.status, 500);
  assert.equal(unknown.text.trim(), 'No path to datacenter');
  // The own datacenter by name is served locally.
  assert.equal((await ok<Record<string, string[]>>(http2, 'GET', '/v1/catalog/services?dc=dc2')).ledger?.length, 1);
});

test('a root rotation on dc1 reaches dc2 with a new intermediate; dc2 leaves issued after it chain to the new root', async () => {
  const old = await ok<Roots>(http1, 'GET', '/v1/connect/ca/roots');
  const oldLeaf = await ok<Leaf>(http2, 'GET', '/v1/agent/connect/ca/leaf/rot');
  assert.equal(await ok(http1, 'PUT', '/v1/connect/ca/configuration', { Provider: 'consul', Config: { PrivateKeyType: 'rsa', PrivateKeyBits: 2048 } }), true);
  const now1 = await ok<Roots>(http1, 'GET', '/v1/connect/ca/roots');
  assert.notEqual(now1.ActiveRootID, old.ActiveRootID);
  // Every time dc2 serves the new ActiveRootID, its leaf already chains to the new root.
  const newRoot = now1.Roots.find((r) => r.ID === now1.ActiveRootID)?.RootCert as string;
  await waitFor('dc2 serves the new ActiveRootID', async () => ((await ok<Roots>(http2, 'GET', '/v1/connect/ca/roots')).ActiveRootID === now1.ActiveRootID ? true : undefined));
  const leaf = await ok<Leaf>(http2, 'GET', '/v1/agent/connect/ca/leaf/rot');
  assert.notEqual(leaf.CertPEM, oldLeaf.CertPEM, 'a new signer: the cached leaf is re-issued');
  assert.match(opensslVerify(newRoot, leaf.CertPEM), /OK/);
  const int = new X509Certificate(pems(leaf.CertPEM)[1] as string);
  assert.equal(int.publicKey.asymmetricKeyType, 'rsa', 'the intermediate key follows the primary\'s PrivateKeyType');
  // The old leaf still verifies against the old root, which stays in dc2's bundle.
  const r2 = await ok<Roots>(http2, 'GET', '/v1/connect/ca/roots');
  assert.ok(r2.Roots.some((r) => r.ID === old.ActiveRootID && !r.Active));
  assert.match(opensslVerify(old.Roots.find((r) => r.ID === old.ActiveRootID)?.RootCert as string, oldLeaf.CertPEM), /OK/);

  // A CA configuration write on dc2 goes to dc1 (and rotates there).
  assert.equal(await ok(http2, 'PUT', '/v1/connect/ca/configuration', { Provider: 'consul', Config: { PrivateKeyType: 'ec', PrivateKeyBits: 384 } }), true);
  const now2 = await ok<Roots>(http1, 'GET', '/v1/connect/ca/roots');
  assert.notEqual(now2.ActiveRootID, now1.ActiveRootID);
  await waitFor('dc2 follows the second rotation', async () => ((await ok<Roots>(http2, 'GET', '/v1/connect/ca/roots')).ActiveRootID === now2.ActiveRootID ? true : undefined));
  const cfg2 = await ok<{ Config: { PrivateKeyType: string; PrivateKeyBits: number } }>(http2, 'GET', '/v1/connect/ca/configuration');
  assert.deepEqual([cfg2.Config.PrivateKeyType, cfg2.Config.PrivateKeyBits], ['ec', 384], 'dc2 shows the primary\'s configuration');
});

test('a secondary started before its primary comes up once the primary does', async () => {
  const port = await freePort();
  const d = mkdtempSync(join(dir, 'early-'));
  const early = await startMeshd(secondaryArgs(`127.0.0.1:${port}`, join(d, 'dc2')));
  let primary: MeshdProcess | undefined;
  try {
    assert.equal(early.fields['trust-domain'], 'pending');
    const http = early.fields.http as string;
    const leaf = await call(http, 'GET', '/v1/agent/connect/ca/leaf/api');
    assert.equal(leaf.status, 503, leaf.text);
    await waitFor('the secondary logs why', () => Promise.resolve(/replicating the CA .* failed, retrying with backoff: unreachable \(ECONNREFUSED\)/.test(early.stderr()) ? true : undefined), 5000);
    assert.equal((await call(http, 'GET', '/v1/connect/ca/roots')).status, 503);

    primary = await startMeshd(['agent', '-dev', '-http-addr', `127.0.0.1:${port}`, '-data-dir', join(d, 'dc1')]);
    const roots = await waitFor('the secondary gets roots and an intermediate', async () => {
      const r = await call(http, 'GET', '/v1/connect/ca/roots');
      return r.status === 200 ? (r.json() as Roots) : undefined;
    });
    assert.equal(roots.TrustDomain, primary.fields['trust-domain']);
    const l = await ok<Leaf>(http, 'GET', '/v1/agent/connect/ca/leaf/api');
    assert.match(opensslVerify(roots.Roots[0]?.RootCert as string, l.CertPEM), /OK/);
    await waitFor('the primary lists the secondary', async () => (JSON.stringify(await ok(`127.0.0.1:${port}`, 'GET', '/v1/catalog/datacenters')) === '["dc1","dc2"]' ? true : undefined));
  } finally {
    await Promise.all([early.stop(), primary?.stop()]);
  }
});

test('federation flags: -join-wan is required on a secondary and refused on a primary', async () => {
  const secondary = await meshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-datacenter', 'dc2', '-primary-datacenter', 'dc1']);
  assert.equal(secondary.code, 2);
  assert.match(secondary.stderr, /-join-wan HOST:PORT is required/);
  const primary = await meshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-join-wan', '127.0.0.1:8500']);
  assert.equal(primary.code, 2);
  assert.match(primary.stderr, /-join-wan is for a secondary datacenter/);
  const token = await meshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-replication-token-file', '/nonexistent']);
  assert.equal(token.code, 2);
  assert.match(token.stderr, /-replication-token-file is for a secondary/);
});

test('against a primary with ACLs a secondary replicates with -replication-token-file, and without it says why', async () => {
  const d = mkdtempSync(join(dir, 'acl-'));
  const token = 'c0ffee00-1111-2222-3333-444455556666';
  writeFileSync(join(d, 'replication-token'), `${token}\n`, { mode: 0o600 });
  const primary = await startMeshd(['agent', '-http-addr', '127.0.0.1:0', '-data-dir', join(d, 'dc1'), '-initial-management-token', token]);
  const http = primary.fields.http as string;
  const withToken = await startMeshd([...secondaryArgs(http, join(d, 'dc2')), '-replication-token-file', join(d, 'replication-token')]);
  const without = await startMeshd(secondaryArgs(http, join(d, 'dc3')));
  try {
    const roots = await waitFor('the secondary with the token gets roots', async () => {
      const r = await call(withToken.fields.http as string, 'GET', '/v1/connect/ca/roots');
      return r.status === 200 ? (r.json() as Roots) : undefined;
    });
    assert.equal(roots.TrustDomain, primary.fields['trust-domain']);
    await waitFor('the one without a token logs the 403 and the flag', () => Promise.resolve(/HTTP 403 .*-replication-token-file/.test(without.stderr()) ? true : undefined), 5000);
    assert.equal((await call(without.fields.http as string, 'GET', '/v1/connect/ca/roots')).status, 503);
    // A forwarded write carries the caller's token: none is refused by the primary.
    assert.equal((await call(withToken.fields.http as string, 'PUT', '/v1/config', { Kind: 'service-defaults', Name: 'x' })).status, 403);
  } finally {
    await Promise.all([primary.stop(), withToken.stop(), without.stop()]);
  }
});
