// The agent goes away and comes back (hardening issue, "Faults and overload"): sidecars keep
// serving with their last table, certificates and endpoints while it is down (new connections
// included), and catch up when it returns on the same data directory — a policy change made
// after the restart reaches the data plane. Nothing the agent stored is lost.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort, startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { echoOnce, startEchoApp, waitUntilEchoes, waitUntilRefused, type EchoApp } from '../helpers/net.ts';

let dir: string;
let agent: MeshdProcess;
let api: MeshdProcess;
let web: MeshdProcess;
let app: EchoApp;
let http: string;
let upstreamPort: number;

const agentArgs = (): string[] => ['agent', '-dev', '-http-addr', http, '-data-dir', join(dir, 'agent')];

async function intention(action: 'allow' | 'deny'): Promise<void> {
  const r = await fetch(`http://${http}/v1/connect/intentions/exact?source=web&destination=api`, { method: 'PUT', body: JSON.stringify({ Action: action }) });
  assert.equal(r.status, 200, await r.text());
}

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshd-outage-'));
  http = `127.0.0.1:${await freePort()}`;
  agent = await startMeshd(agentArgs());
  app = await startEchoApp();
  api = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', '1', '-http-addr', http]);
  web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', '1', '-http-addr', http]);
  upstreamPort = Number((web.fields['upstream.api'] as string).split(':')[1]);
  await intention('allow');
  await waitUntilEchoes(upstreamPort, 10_000);
});

after(async () => {
  await Promise.all([web?.stop(), api?.stop()]);
  await agent?.stop();
  await app?.close();
  rmSync(dir, { recursive: true, force: true });
});

test('with the agent killed, new connections keep flowing; after its restart a new policy reaches the sidecars', async () => {
  const intentionsBefore = await (await fetch(`http://${http}/v1/connect/intentions`)).json();
  agent.child.kill('SIGKILL');
  await new Promise<void>((resolve) => agent.child.once('exit', () => resolve()));

  // Down for 4 s: every new connection through both sidecars still gets its echo.
  const until = Date.now() + 4000;
  let ok = 0;
  while (Date.now() < until) {
    assert.equal(await echoOnce(upstreamPort, `ping ${ok}`), `ping ${ok}`, `connection ${ok} failed while the agent was down`);
    ok++;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(ok >= 10, `only ${ok} connections tried`);
  assert.equal(web.child.exitCode, null, 'web exited without its agent');
  assert.equal(api.child.exitCode, null, 'api exited without its agent');

  agent = await startMeshd(agentArgs());
  assert.deepEqual(await (await fetch(`http://${http}/v1/connect/intentions`)).json(), intentionsBefore, 'intentions lost across the restart');
  // The sidecars reconnect their watches; a change made now must reach the data plane.
  await intention('deny');
  await waitUntilRefused(upstreamPort, 15_000);
  await intention('allow');
  await waitUntilEchoes(upstreamPort, 15_000);
});
