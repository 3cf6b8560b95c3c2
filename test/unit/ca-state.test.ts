// The CA state machine with an injected clock: bootstrap and reload, config-only changes,
// rotation with cross-signing (a peer holding only the old root accepts new leaves through
// the chain), pruning after 2 × LeafCertTTL, automatic root renewal, bring-your-own root,
// refusal of unusable state, and the leaf endpoint's cache.

import { after, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CaState, CA_TABLE } from '../../src/control/ca-state.ts';
import { LeafCache } from '../../src/control/leaf-cache.ts';
import { FileStore } from '../../src/control/store.ts';
import { SigningPool } from '../../src/ca/pool.ts';
import { createLeafCsr, generateRoot } from '../../src/ca/authority.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import { FieldError } from '../../src/control/decode.ts';

const HOUR = 3_600_000;
const pool = new SigningPool();
after(() => pool.close());

function clock(start = Date.UTC(2026, 10, 23, 12)): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => void (t += ms) };
}

async function leafFor(ca: CaState, service: string): Promise<string> {
  const { csrPem } = await createLeafCsr(serviceSpiffeId(ca.trustDomain, 'default', 'dc1', service));
  return (await ca.sign(csrPem, '*')).CertPEM;
}

function opensslVerify(caPem: string, chainPem: string, atMs: number): string {
  const d = mkdtempSync(join(tmpdir(), 'meshd-ca-state-'));
  try {
    writeFileSync(join(d, 'ca.pem'), caPem);
    const certs = chainPem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g) ?? [];
    writeFileSync(join(d, 'leaf.pem'), certs[0] ?? '');
    // openssl checks validity at -attime: the test's injected clock, not the wall clock.
    const args = ['verify', '-attime', String(Math.floor(atMs / 1000)), '-CAfile', join(d, 'ca.pem')];
    const rest = certs.slice(1).join('\n');
    if (rest !== '') {
      writeFileSync(join(d, 'untrusted.pem'), rest);
      args.push('-untrusted', join(d, 'untrusted.pem'));
    }
    args.push(join(d, 'leaf.pem'));
    try {
      return execFileSync('openssl', args, { stdio: ['ignore', 'pipe', 'pipe'] }).toString();
    } catch (e) {
      return `FAILED ${String((e as { stderr?: Buffer }).stderr ?? e)}`;
    }
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
}

test('bootstrap persists; a reload keeps the root; a config-only change does not rotate', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-ca-'));
  try {
    const c = clock();
    const ca = new CaState(new FileStore(dir), pool, { datacenter: 'dc1', now: c.now });
    await ca.bootstrap();
    const id = ca.activeRoot.id;
    assert.equal((await ca.setConfig({ Provider: 'consul', Config: { LeafCertTTL: '24h' } })).rotated, false);
    assert.equal(ca.config.leafCertTtlMs, 24 * HOUR);
    const again = new CaState(new FileStore(dir), pool, { datacenter: 'dc1', now: c.now });
    await again.bootstrap();
    assert.equal(again.activeRoot.id, id);
    assert.equal(again.trustDomain, ca.trustDomain);
    assert.equal(again.config.leafCertTtlMs, 24 * HOUR);
    const cfg = JSON.stringify(again.configResponse());
    assert.match(cfg, /"LeafCertTTL":"24h"/);
    assert.doesNotMatch(cfg, /PRIVATE KEY/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('a bad config is refused with the rule named and nothing changes', async () => {
  const ca = new CaState(new FileStore(null), pool, { datacenter: 'dc1', now: clock().now });
  await ca.bootstrap();
  const before = JSON.stringify(ca.rootsResponse());
  await assert.rejects(ca.setConfig({ Provider: 'consul', Config: { LeafCertTTL: '10m' } }), (e: unknown) => e instanceof FieldError && /LeafCertTTL/.test(e.message));
  await assert.rejects(ca.setConfig({ Provider: 'vault', Config: {} }), (e: unknown) => e instanceof FieldError);
  assert.equal(JSON.stringify(ca.rootsResponse()), before);
});

test('rotation cross-signs: a peer holding only the old root accepts a new leaf through the chain', async () => {
  const c = clock();
  const ca = new CaState(new FileStore(null), pool, { datacenter: 'dc1', now: c.now });
  await ca.bootstrap();
  const oldRoot = ca.activeRoot;
  const oldLeaf = await leafFor(ca, 'web');
  assert.equal((await ca.setConfig({ Provider: 'consul', Config: { PrivateKeyType: 'ec', PrivateKeyBits: 384 } })).rotated, true);
  const newRoot = ca.activeRoot;
  assert.notEqual(newRoot.id, oldRoot.id);
  assert.equal(newRoot.privateKeyBits, 384);
  const roots = ca.rootsResponse() as { Roots: { ID: string; Active: boolean; IntermediateCerts: string[] | null }[] };
  assert.deepEqual(roots.Roots.map((r) => r.Active), [false, true]);
  const cross = roots.Roots[1]?.IntermediateCerts?.[0];
  assert.ok(cross !== undefined);

  const newLeaf = await leafFor(ca, 'web');
  assert.equal((newLeaf.match(/BEGIN CERTIFICATE/g) ?? []).length, 2, 'new leaves carry the cross-signed certificate');
  assert.match(opensslVerify(oldRoot.certPem, newLeaf, c.now()), /leaf\.pem: OK/, 'old-root-only peer, via the cross-signed cert');
  assert.match(opensslVerify(newRoot.certPem, newLeaf.split(/(?<=-----END CERTIFICATE-----\n?)/)[0] as string, c.now()), /leaf\.pem: OK/, 'new root alone');
  assert.match(opensslVerify(oldRoot.certPem, oldLeaf, c.now()), /leaf\.pem: OK/);
  assert.match(opensslVerify(newRoot.certPem, oldLeaf, c.now()), /FAILED/);
  // The bundle a proxy trusts holds both roots and the cross-signed cert.
  assert.equal((ca.pemBundle().match(/BEGIN CERTIFICATE/g) ?? []).length, 3);
});

test('ForceWithoutCrossSigning rotates without a cross-signed certificate', async () => {
  const ca = new CaState(new FileStore(null), pool, { datacenter: 'dc1', now: clock().now });
  await ca.bootstrap();
  await ca.setConfig({ Provider: 'consul', Config: { PrivateKeyType: 'ec', PrivateKeyBits: 521 }, ForceWithoutCrossSigning: true });
  const roots = ca.rootsResponse() as { Roots: { IntermediateCerts: string[] | null }[] };
  assert.equal(roots.Roots[1]?.IntermediateCerts, null);
  assert.equal(((await leafFor(ca, 'web')).match(/BEGIN CERTIFICATE/g) ?? []).length, 1);
});

test('rotated-out roots are pruned once 2 × LeafCertTTL has passed', async () => {
  const c = clock();
  const ca = new CaState(new FileStore(null), pool, { datacenter: 'dc1', now: c.now });
  await ca.bootstrap();
  await ca.setConfig({ Provider: 'consul', Config: { PrivateKeyType: 'ec', PrivateKeyBits: 384 } });
  c.advance(2 * 72 * HOUR);
  assert.equal((await ca.tick()).pruned, 0, 'exactly 2 × TTL: still kept');
  c.advance(1000);
  assert.equal((await ca.tick()).pruned, 1);
  assert.equal((ca.rootsResponse() as { Roots: unknown[] }).Roots.length, 1);
});

test('the root renews itself, cross-signed, when less than RootRenewalFraction of its life remains', async () => {
  const c = clock();
  const ca = new CaState(new FileStore(null), pool, { datacenter: 'dc1', now: c.now });
  await ca.bootstrap();
  await ca.setConfig({ Provider: 'consul', Config: { RootCertTTL: '1000h', IntermediateCertTTL: '300h', LeafCertTTL: '72h', RootRenewalFraction: 0.25 } });
  // The bootstrap root has the default 87600h life; renewal depends on the active root's life.
  const first = ca.activeRoot;
  const life = first.notAfter.getTime() - first.notBefore.getTime();
  c.advance(life * 0.74);
  assert.equal((await ca.tick()).renewed, false);
  c.advance(life * 0.02);
  assert.equal((await ca.tick()).renewed, true);
  const renewed = ca.activeRoot;
  assert.notEqual(renewed.id, first.id);
  assert.equal(renewed.notAfter.getTime() - renewed.notBefore.getTime(), 1000 * HOUR, 'the new root takes RootCertTTL');
  assert.match(opensslVerify(first.certPem, await leafFor(ca, 'api'), c.now()), /leaf\.pem: OK/);
  assert.ok(ca.activeRootExpirySeconds() > 999 * 3600);
});

test('bring your own root: a valid one rotates to it; bad ones are refused with the rule', async () => {
  const ca = new CaState(new FileStore(null), pool, { datacenter: 'dc1', now: clock().now });
  await ca.bootstrap();
  const mine = await generateRoot({ clusterId: ca.clusterId, now: new Date(clock().now() - HOUR), privateKeyType: 'rsa', privateKeyBits: 2048 });
  assert.equal((await ca.setConfig({ Provider: 'consul', Config: { PrivateKey: mine.keyPem, RootCert: mine.certPem } })).rotated, true);
  assert.equal(ca.activeRoot.id, mine.id);
  // Same key+cert again: nothing to do.
  assert.equal((await ca.setConfig({ Provider: 'consul', Config: { PrivateKey: mine.keyPem, RootCert: mine.certPem } })).rotated, false);
  // A later TTL-only change keeps the supplied root.
  assert.equal((await ca.setConfig({ Provider: 'consul', Config: { LeafCertTTL: '48h' } })).rotated, false);
  assert.equal(ca.activeRoot.id, mine.id);
  const foreign = await generateRoot({ clusterId: '99999999-2222-3333-4444-555555555555', now: new Date(clock().now() - HOUR) });
  await assert.rejects(ca.setConfig({ Provider: 'consul', Config: { PrivateKey: foreign.keyPem, RootCert: foreign.certPem } }), /spiffe:\/\//);
  await assert.rejects(ca.setConfig({ Provider: 'consul', Config: { PrivateKey: foreign.keyPem, RootCert: mine.certPem } }), /match/i);
  assert.equal(ca.activeRoot.id, mine.id);
});

test('unusable CA state refuses to start instead of minting a new root', async () => {
  const store = new FileStore(null);
  store.put(CA_TABLE, 'state', { version: 2, clusterId: 'x', roots: [{ certPem: 'garbage', keyPem: 'garbage', active: true }] });
  const ca = new CaState(store, pool, { datacenter: 'dc1', now: clock().now });
  await assert.rejects(ca.bootstrap(), /refusing to start rather than generate a new root/);
  const none = new FileStore(null);
  none.put(CA_TABLE, 'state', { version: 2, clusterId: 'x', roots: [] });
  await assert.rejects(new CaState(none, pool, { datacenter: 'dc1', now: clock().now }).bootstrap(), /no roots/);
});

test('the leaf endpoint cache re-issues after a rotation and blocks until then', async () => {
  const c = clock();
  const store = new FileStore(null);
  const ca = new CaState(store, pool, { datacenter: 'dc1', now: c.now });
  await ca.bootstrap();
  const leaves = new LeafCache(ca, store, { datacenter: 'dc1', now: c.now, random: () => 0.5 });
  const signal = new AbortController().signal;
  const first = await leaves.get('web', null, 0, signal);
  assert.match(first.PrivateKeyPEM, /PRIVATE KEY/);
  assert.equal((await leaves.get('web', null, 0, signal)).SerialNumber, first.SerialNumber, 'cached');
  const blocked = leaves.get('web', first.ModifyIndex, 10_000, signal);
  await new Promise((r) => setTimeout(r, 50));
  await ca.setConfig({ Provider: 'consul', Config: { PrivateKeyType: 'ec', PrivateKeyBits: 384 } });
  const next = await blocked;
  assert.ok(next.ModifyIndex > first.ModifyIndex);
  assert.notEqual(next.SerialNumber, first.SerialNumber);
  assert.match(opensslVerify(ca.activeRoot.certPem, next.CertPEM.split(/(?<=-----END CERTIFICATE-----\n?)/)[0] as string, c.now()), /OK/);
});
