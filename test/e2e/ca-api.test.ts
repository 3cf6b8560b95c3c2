// The CA's HTTP API and CLI on real agent processes: configuration get/set (secrets never
// returned, rules named on refusal), who may obtain certificates (tokens on a non-dev agent,
// loopback in -dev), CSR rate limiting (429 + Retry-After), the Consul-style leaf endpoint,
// and `meshd connect ca get-config|set-config`.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { createLeafCsr } from '../../src/ca/authority.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import { meshd } from '../helpers/cli.ts';

async function csrFor(trustDomain: string, service: string): Promise<string> {
  return (await createLeafCsr(serviceSpiffeId(trustDomain, 'default', 'dc1', service))).csrPem;
}

function sign(http: string, csr: string, token?: string): Promise<Response> {
  return fetch(`http://${http}/v1/connect/ca/sign`, { method: 'POST', body: JSON.stringify({ CSR: csr }), headers: token === undefined ? {} : { 'X-Consul-Token': token } });
}

describe('CA API on a -dev agent', () => {
  let dir: string;
  let agent: MeshdProcess;
  let http: string;
  let td: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-ca-api-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0']);
    http = agent.fields.http as string;
    td = agent.fields['trust-domain'] as string;
  });
  after(async () => {
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('configuration: Consul defaults, never a private key, and refusals that name the rule', async () => {
    const cfg = (await (await fetch(`http://${http}/v1/connect/ca/configuration`)).json()) as { Provider: string; Config: Record<string, unknown> };
    assert.equal(cfg.Provider, 'consul');
    assert.equal(cfg.Config.LeafCertTTL, '72h');
    assert.equal(cfg.Config.RootCertTTL, '87600h');
    assert.equal(cfg.Config.PrivateKeyType, 'ec');
    assert.equal(cfg.Config.PrivateKeyBits, 256);
    assert.equal('PrivateKey' in cfg.Config, false);
    const bad = await fetch(`http://${http}/v1/connect/ca/configuration`, { method: 'PUT', body: JSON.stringify({ Provider: 'consul', Config: { LeafCertTTL: '9000h' } }) });
    assert.equal(bad.status, 400);
    assert.match(await bad.text(), /LeafCertTTL/);
    const snake = await fetch(`http://${http}/v1/connect/ca/configuration`, { method: 'PUT', body: JSON.stringify({ provider: 'consul', config: { leaf_cert_ttl: '24h' } }) });
    assert.equal(snake.status, 200, await snake.text());
    const after = (await (await fetch(`http://${http}/v1/connect/ca/configuration`)).json()) as { Config: Record<string, unknown> };
    assert.equal(after.Config.LeafCertTTL, '24h');
  });

  test('meshd connect ca get-config and set-config', async () => {
    const get = await meshd(['connect', 'ca', 'get-config', '-http-addr', http]);
    assert.equal(get.code, 0, get.stderr);
    assert.match(get.stdout, /"Provider": "consul"/);
    const file = join(dir, 'ca.json');
    writeFileSync(file, JSON.stringify({ Provider: 'consul', Config: { LeafCertTTL: '48h', CSRMaxPerSecond: 2 } }));
    const set = await meshd(['connect', 'ca', 'set-config', '-http-addr', http, '-config-file', file]);
    assert.equal(set.code, 0, set.stderr);
    assert.match((await meshd(['connect', 'ca', 'get-config', '-http-addr', http])).stdout, /"LeafCertTTL": "48h"/);
    const hclFile = join(dir, 'ca.hcl');
    writeFileSync(hclFile, 'Provider = "consul"\nConfig {\n  LeafCertTTL = "36h"\n  CSRMaxPerSecond = 2\n}\n');
    const hcl = await meshd(['connect', 'ca', 'set-config', '-http-addr', http, '-config-file', hclFile]);
    assert.equal(hcl.code, 0, hcl.stderr);
    assert.match((await meshd(['connect', 'ca', 'get-config', '-http-addr', http])).stdout, /"LeafCertTTL": "36h"/);
    writeFileSync(hclFile, 'Config {\n');
    const broken = await meshd(['connect', 'ca', 'set-config', '-http-addr', http, '-config-file', hclFile]);
    assert.equal(broken.code, 1);
    assert.match(broken.stderr, /invalid HCL: At \d+:\d+/);
    writeFileSync(file, JSON.stringify({ Provider: 'consul', Config: { PrivateKeyType: 'dsa' } }));
    const refused = await meshd(['connect', 'ca', 'set-config', '-http-addr', http, '-config-file', file]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /PrivateKeyType/);
  });

  test('CSRs beyond CSRMaxPerSecond get 429 with Retry-After', async () => {
    // The previous test set CSRMaxPerSecond = 2 (burst 2).
    const csr = await csrFor(td, 'web');
    const statuses: number[] = [];
    let retryAfter: string | null = null;
    for (let i = 0; i < 6; i++) {
      const r = await sign(http, csr);
      statuses.push(r.status);
      if (r.status === 429) retryAfter = r.headers.get('retry-after');
      await r.text();
    }
    assert.ok(statuses.includes(200) && statuses.includes(429), statuses.join(','));
    assert.ok(retryAfter !== null && Number(retryAfter) >= 1);
    const reset = await fetch(`http://${http}/v1/connect/ca/configuration`, { method: 'PUT', body: JSON.stringify({ Provider: 'consul', Config: { CSRMaxPerSecond: 0 } }) });
    assert.equal(reset.status, 200);
  });

  test('the leaf endpoint returns Consul\'s IssuedCert with a key, and blocks until a rotation', async () => {
    const first = await fetch(`http://${http}/v1/agent/connect/ca/leaf/web`);
    assert.equal(first.status, 200);
    const leaf = (await first.json()) as { CertPEM: string; PrivateKeyPEM: string; ServiceURI: string; ModifyIndex: number };
    assert.match(leaf.PrivateKeyPEM, /PRIVATE KEY/);
    assert.equal(leaf.ServiceURI, serviceSpiffeId(td, 'default', 'dc1', 'web'));
    const index = Number(first.headers.get('x-consul-index'));
    assert.ok(index > 0);
    const started = performance.now();
    const blocked = fetch(`http://${http}/v1/agent/connect/ca/leaf/web?index=${index}&wait=20s`);
    await new Promise((r) => setTimeout(r, 300));
    const rot = await fetch(`http://${http}/v1/connect/ca/configuration`, { method: 'PUT', body: JSON.stringify({ Provider: 'consul', Config: { PrivateKeyType: 'ec', PrivateKeyBits: 384 } }) });
    assert.equal(rot.status, 200, await rot.text());
    const next = await blocked;
    assert.ok(performance.now() - started < 15_000, 'returned on the rotation, not the wait timeout');
    assert.ok(Number(next.headers.get('x-consul-index')) > index);
    const body = (await next.json()) as { CertPEM: string };
    assert.notEqual(body.CertPEM, leaf.CertPEM);
  });
});

describe('CA API on an agent with tokens (no -dev)', () => {
  let dir: string;
  let agent: MeshdProcess;
  let http: string;
  let td: string;
  const management = 'd9a4c6bb-5c2b-4a55-9a52-6a7c1c2d3e4f';
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-ca-acl-'));
    agent = await startMeshd(['agent', '-http-addr', '127.0.0.1:0', '-data-dir', dir, '-initial-management-token', management]);
    http = agent.fields.http as string;
    td = agent.fields['trust-domain'] as string;
  });
  after(async () => {
    await agent.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('no token: 403 even from loopback; a service token signs only its own service', async () => {
    const csr = await csrFor(td, 'web');
    const anon = await sign(http, csr);
    assert.equal(anon.status, 403);
    assert.match(await anon.text(), /token/);
    const denied = await fetch(`http://${http}/v1/acl/token`, { method: 'PUT', body: JSON.stringify({ ServiceIdentities: [{ ServiceName: 'web' }] }) });
    assert.equal(denied.status, 403, 'creating tokens needs the management token');
    const t = await fetch(`http://${http}/v1/acl/token`, { method: 'PUT', headers: { 'X-Consul-Token': management }, body: JSON.stringify({ ServiceIdentities: [{ ServiceName: 'web' }] }) });
    assert.equal(t.status, 200);
    const { SecretID } = (await t.json()) as { SecretID: string };
    assert.equal((await sign(http, csr, SecretID)).status, 200);
    const other = await sign(http, await csrFor(td, 'api'), SecretID);
    assert.equal(other.status, 403);
    assert.match(await other.text(), /api/);
    assert.equal((await fetch(`http://${http}/v1/agent/connect/ca/leaf/api?token=${SecretID}`)).status, 403);
    assert.equal((await fetch(`http://${http}/v1/agent/connect/ca/leaf/web?token=${SecretID}`)).status, 200);
    assert.equal((await sign(http, await csrFor(td, 'api'), management)).status, 200);
  });

  test('a proxy with a service token (-token) gets its leaf and serves', async () => {
    const t = await fetch(`http://${http}/v1/acl/token`, { method: 'PUT', headers: { 'X-Consul-Token': management }, body: JSON.stringify({ ServiceIdentities: [{ ServiceName: 'billing' }] }) });
    const { SecretID } = (await t.json()) as { SecretID: string };
    const p = await startMeshd(['connect', 'proxy', '-service', 'billing', '-upstream', 'api:0', '-workers', '1', '-http-addr', http, '-token', SecretID]);
    await p.stop();
    const wrong = await meshd(['connect', 'proxy', '-service', 'api', '-upstream', 'web:0', '-workers', '1', '-http-addr', http, '-token', SecretID]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /403|Permission denied/);
  });
});
