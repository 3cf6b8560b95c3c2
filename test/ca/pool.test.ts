import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { CaError, CsrError, createLeafCsr, crossSignRoot, generateRoot, signLeafCsr, type RootMaterial } from '../../src/ca/authority.ts';
import { SigningPool } from '../../src/ca/pool.ts';
import { readCertIdentity } from '../../src/ca/der.ts';
import { pemDecode } from '../../src/ca/certs.ts';
import { CLUSTER_ID, DC, NOW, TD, WEB_URI, makeCsr, pemBlocks } from './helpers.ts';

let root: RootMaterial;
let pool: SigningPool;

before(async () => {
  root = await generateRoot({ clusterId: CLUSTER_ID, now: NOW });
  pool = new SigningPool();
});
after(async () => {
  await pool.close();
});

test('the pool loads sign-task.ts under type stripping and returns the in-thread result shape', async () => {
  const { csrPem } = await createLeafCsr(WEB_URI);
  const req = { csrPem, root, trustDomain: TD, datacenter: DC, now: NOW };
  const [viaPool, inThread] = await Promise.all([pool.sign(req), signLeafCsr(req)]);
  assert.deepEqual(Object.keys(viaPool).sort(), Object.keys(inThread).sort());
  // Everything but the random serial (and so the PEM) is identical.
  assert.deepEqual({ ...viaPool, SerialNumber: '', CertPEM: '' }, { ...inThread, SerialNumber: '', CertPEM: '' });
  assert.deepEqual(readCertIdentity(pemDecode(viaPool.CertPEM, 'CERTIFICATE')), { uris: [WEB_URI], isCA: false });
});

test('a burst of CSRs is signed, each with its own serial', async () => {
  const csrs = await Promise.all(Array.from({ length: 12 }, (_, i) => createLeafCsr(WEB_URI.replace('web', `svc${i}`))));
  const issued = await Promise.all(csrs.map(({ csrPem }) => pool.sign({ csrPem, root, trustDomain: TD, datacenter: DC, now: NOW })));
  assert.deepEqual(
    issued.map((c) => c.Service),
    csrs.map((_, i) => `svc${i}`),
  );
  assert.equal(new Set(issued.map((c) => c.SerialNumber)).size, issued.length);
});

test('CsrError and CaError cross the thread boundary with class and code intact', async () => {
  const twoUris = await makeCsr([
    { type: 'url', value: WEB_URI },
    { type: 'url', value: WEB_URI.replace('web', 'api') },
  ]);
  const cases: [string, string, string][] = [
    [twoUris, DC, 'CSR_INVALID_URI_COUNT'],
    [await makeCsr([{ type: 'url', value: `spiffe://${TD}` }]), DC, 'CSR_INVALID_ID_KIND'],
    [await makeCsr([{ type: 'url', value: WEB_URI.replace(TD, 'other.consul') }]), DC, 'CSR_WRONG_TRUST_DOMAIN'],
    [await makeCsr([{ type: 'url', value: WEB_URI }]), 'dc9', 'CSR_WRONG_DATACENTER'],
    [await makeCsr([{ type: 'url', value: WEB_URI }]), 'deny', 'CSR_PERMISSION_DENIED'],
    ['garbage', DC, 'CSR_MALFORMED'],
  ];
  for (const [csrPem, datacenter, code] of cases) {
    const allowed = datacenter === 'deny' ? { allowedServices: ['api'] } : {};
    const dc = datacenter === 'deny' ? DC : datacenter;
    await assert.rejects(pool.sign({ csrPem, root, trustDomain: TD, datacenter: dc, now: NOW, ...allowed }), (e: unknown) => {
      assert.ok(e instanceof CsrError, `${code}: got ${String(e)}`);
      assert.equal(e.code, code);
      return true;
    });
  }
  const { csrPem } = await createLeafCsr(WEB_URI);
  await assert.rejects(
    pool.sign({ csrPem, root, trustDomain: TD, datacenter: DC, now: new Date(root.notAfter.getTime() + 1000) }),
    (e: unknown) => e instanceof CaError && e.code === 'CA_ROOT_EXPIRED',
  );
  // A caller bug (invalid clock) is not a coded refusal: it arrives as a plain error.
  await assert.rejects(pool.sign({ csrPem, root, trustDomain: TD, datacenter: DC, now: new Date(NaN) }), /valid Date/);
});

test('maxThreads is configurable and close() stops the pool', async () => {
  const p = new SigningPool({ maxThreads: 2 });
  const { csrPem } = await createLeafCsr(WEB_URI);
  const r = await p.sign({ csrPem, root, trustDomain: TD, datacenter: DC, now: NOW });
  assert.equal(r.Service, 'web');
  await p.close();
  await assert.rejects(p.sign({ csrPem, root, trustDomain: TD, datacenter: DC, now: NOW }), /SigningPool is closed/);
});

test('the pool carries intermediates and allowedServices, and signs with an RSA root', async () => {
  const rsa = await generateRoot({ clusterId: CLUSTER_ID, now: NOW, privateKeyType: 'rsa', privateKeyBits: 2048 });
  const cross = await crossSignRoot({ newRoot: rsa, oldRoot: root, now: NOW, ttlMs: 7 * 24 * 3_600_000 });
  const { csrPem } = await createLeafCsr(WEB_URI);
  const issued = await pool.sign({ csrPem, root: rsa, trustDomain: TD, datacenter: DC, now: NOW, intermediatePems: [cross], allowedServices: ['web'] });
  const blocks = pemBlocks(issued.CertPEM);
  assert.equal(blocks.length, 2);
  assert.equal(blocks[1], cross);
  assert.ok(new X509Certificate(blocks[0]!).verify(new X509Certificate(rsa.certPem).publicKey));
});

test('a signing thread never loads @peculiar/x509 (sign-task.ts imports the fast path only)', () => {
  // reflect-metadata, which @peculiar/x509 needs first, installs Reflect.getMetadata.
  const out = execFileSync(
    process.execPath,
    ['--input-type=module', '-e', "await import('./src/ca/sign-task.ts'); console.log(typeof Reflect.getMetadata)"],
    { encoding: 'utf8' },
  );
  assert.equal(out.trim(), 'undefined');
});
