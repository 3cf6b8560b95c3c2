// Who may obtain certificates for which service: management token, service tokens, and the
// -dev loopback allowance.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Acl, decodeTokenBody, isLoopback } from '../../src/control/acl.ts';
import { FileStore } from '../../src/control/store.ts';
import { FieldError } from '../../src/control/decode.ts';

test('service tokens act only for their services; the management token for all', () => {
  const acl = new Acl(new FileStore(null), { managementToken: 'root-secret', devLoopback: false });
  const web = acl.createServiceToken('web sidecar', ['web'], new Date(0));
  assert.deepEqual(acl.mayActFor('web', web.SecretID, '10.0.0.1'), { ok: true });
  const denied = acl.mayActFor('api', web.SecretID, '127.0.0.1');
  assert.equal(denied.ok, false);
  assert.match(!denied.ok ? denied.message : '', /lacks service:write on "api"/);
  assert.deepEqual(acl.mayActFor('api', 'root-secret', '10.0.0.1'), { ok: true });
  assert.equal(acl.mayActFor('api', 'root-secreT', '10.0.0.1').ok, false);
  assert.equal(acl.mayActFor('web', 'not-a-token', '127.0.0.1').ok, false);
  assert.deepEqual(acl.scopeFor(web.SecretID, undefined), { ok: true, services: ['web'] });
});

test('without a token: only -dev loopback callers', () => {
  const store = new FileStore(null);
  const dev = new Acl(store, { managementToken: null, devLoopback: true });
  assert.deepEqual(dev.mayActFor('api', null, '127.0.0.1'), { ok: true });
  assert.deepEqual(dev.mayActFor('api', null, '::ffff:127.0.0.1'), { ok: true });
  assert.equal(dev.mayActFor('api', null, '192.168.1.5').ok, false);
  const prod = new Acl(store, { managementToken: null, devLoopback: false });
  const r = prod.mayActFor('api', null, '127.0.0.1');
  assert.equal(r.ok, false);
  assert.equal(!r.ok && r.status, 403);
  assert.equal(prod.isManagement(null), false);
});

test('loopback detection and token body decoding', () => {
  assert.equal(isLoopback('127.8.9.1'), true);
  assert.equal(isLoopback('::1'), true);
  assert.equal(isLoopback('128.0.0.1'), false);
  assert.equal(isLoopback(undefined), false);
  assert.deepEqual(decodeTokenBody({ ServiceIdentities: [{ ServiceName: 'web' }], Description: 'd' }), { description: 'd', services: ['web'] });
  assert.deepEqual(decodeTokenBody({ service_identities: [{ service_name: 'api' }] }), { description: '', services: ['api'] });
  assert.throws(() => decodeTokenBody({}), (e: unknown) => e instanceof FieldError && e.field === 'ServiceIdentities');
  assert.throws(() => decodeTokenBody({ ServiceIdentities: [{ ServiceName: 'bad name' }] }), (e: unknown) => e instanceof FieldError && e.field === 'ServiceIdentities[0].ServiceName');
});
