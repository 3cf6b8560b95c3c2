// An intention that changes between L4 and L7 under load must not refuse an allowed request.
// The shared table (which intention decides) and the L7 permissions (in the routing snapshot)
// reach a worker by different paths a few ms apart; a request that sees "L7" in the table
// before the permissions arrive waits for them rather than being denied (found by npm run soak).

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { Agent as UndiciAgent, request } from 'undici';
import { putConfig, startHttpMesh, type HttpMesh } from '../helpers/http-app.ts';

let mesh: HttpMesh;
let http: string;
let port: number;

const L4 = { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] };
const L7 = { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/' } }] }] };

before(async () => {
  mesh = await startHttpMesh(L4, { apiWorkers: 2 });
  http = mesh.http;
  port = mesh.port;
});

after(async () => {
  await mesh?.stop();
});

test('L4 allow ⇄ L7 allow swapped 12 times under continuous requests: every request gets 200', async () => {
  const dispatcher = new UndiciAgent({ connections: 8 });
  let stop = false;
  const statuses = new Map<number, number>();
  const loop = async (): Promise<void> => {
    while (!stop) {
      const r = await request(`http://127.0.0.1:${port}/ok`, { dispatcher });
      await r.body.text();
      statuses.set(r.statusCode, (statuses.get(r.statusCode) ?? 0) + 1);
    }
  };
  const loops = Array.from({ length: 8 }, loop);
  for (let i = 0; i < 12; i++) {
    await putConfig(http, i % 2 === 0 ? L7 : L4);
    await new Promise((r) => setTimeout(r, 250));
  }
  stop = true;
  await Promise.all(loops);
  await dispatcher.close();
  const total = [...statuses.values()].reduce((a, b) => a + b, 0);
  assert.ok(total > 200, `only ${total} requests`);
  assert.deepEqual([...statuses.keys()], [200], `statuses: ${JSON.stringify([...statuses])}`);
});
