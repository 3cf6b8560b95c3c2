// `npm start` runs `meshd demo`: an agent, three sidecars and two apps. The tour in the
// README must work as printed, and Ctrl-C must stop every process.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import { startMeshd } from '../../src/demo/procs.ts';
import { meshd } from '../helpers/cli.ts';

function refused(addr: string): Promise<boolean> {
  const [host, port] = addr.split(':');
  return new Promise((resolve) => {
    const s = net.connect({ host, port: Number(port) });
    s.on('connect', () => {
      s.destroy();
      resolve(false);
    });
    s.on('error', () => resolve(true));
  });
}

test('the demo mesh answers through web, refuses billing, and stops on SIGINT', async () => {
  const demo = await startMeshd(['demo', '-random-ports', '-workers', '1'], { timeoutMs: 40_000 });
  const agent = demo.fields.agent as string;
  const web = demo.fields.web as string;
  try {
    const r = await fetch(`http://${web}/`);
    assert.equal(r.status, 200);
    assert.match(await r.text(), /web -> api \(through the mesh\): .*hello from api/);
    await assert.rejects(fetch(`http://${demo.fields['upstream.billing']}/`), 'billing has no intention to api');
    const check = await meshd(['intention', 'check', '-http-addr', agent, 'billing', 'api']);
    assert.equal(check.stdout.trim(), 'Denied');
    const m = await (await fetch(`http://${demo.fields.metrics}/metrics`)).text();
    assert.match(m, /meshd_connections_accepted_total\{service="web",direction="outbound"\} [1-9]/);
  } finally {
    assert.equal(await demo.stop(20_000), 0);
  }
  for (const addr of [agent, web, demo.fields['upstream.api'], demo.fields.metrics]) {
    assert.ok(await refused(addr as string), `${addr} still listening after the demo stopped`);
  }
});
