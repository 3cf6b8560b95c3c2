// A small HTTP app for the L7 end-to-end tests, and a config-entry writer.

import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startMeshd } from '../../src/demo/procs.ts';

export interface HttpApp {
  readonly name: string;
  readonly port: number;
  hits: number;
  /** While true, every request gets 500. */
  broken: boolean;
  last: { method: string; url: string; headers: IncomingHttpHeaders } | null;
  close(): Promise<void>;
}

/** A small app: echoes what it saw as JSON; /slow waits 2 s, /hold 300 ms; `flaky` instances answer /flaky with 503. */
export async function startApp(name: string, opts: { flaky?: boolean } = {}): Promise<HttpApp> {
  const app: HttpApp = { name, port: 0, hits: 0, broken: false, last: null, close: () => Promise.resolve() };
  const server: Server = createServer((req, res) => {
    app.hits++;
    app.last = { method: req.method ?? '', url: req.url ?? '', headers: req.headers };
    req.resume();
    const reply = (status: number): void => {
      const body = JSON.stringify({ instance: name, method: req.method, url: req.url, xfcc: req.headers['x-forwarded-client-cert'] ?? null });
      res.writeHead(status, { 'content-type': 'application/json', 'x-instance': name, connection: 'keep-alive, x-secret', 'x-secret': 'hop' });
      res.end(body);
    };
    const url = req.url ?? '';
    if (app.broken) reply(500);
    else if (url.startsWith('/slow')) setTimeout(() => reply(200), 2000);
    else if (url.startsWith('/hold')) setTimeout(() => reply(200), 300);
    else if (url.startsWith('/flaky') && opts.flaky === true) reply(503);
    else reply(200);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  (app as { port: number }).port = (server.address() as AddressInfo).port;
  app.close = () => {
    server.closeAllConnections();
    return new Promise((r) => server.close(() => r()));
  };
  return app;
}

export async function putConfig(http: string, entry: object): Promise<void> {
  const r = await fetch(`http://${http}/v1/config`, { method: 'PUT', body: JSON.stringify(entry) });
  assert.equal(r.status, 200, await r.text());
}

export interface HttpMesh {
  readonly http: string;
  readonly app: HttpApp;
  /** web's plaintext upstream listener for api. */
  readonly port: number;
  stop(): Promise<void>;
}

/**
 * The common end-to-end topology of the HTTP tests: an agent, `api` (Protocol http) behind its
 * sidecar in front of an HttpApp, and a `web` sidecar with an upstream listener for api; resolves
 * once a request through both sidecars gets its 200 (the chain and `intentions` have arrived).
 */
export async function startHttpMesh(intentions: object, opts: { readonly apiWorkers?: number } = {}): Promise<HttpMesh> {
  const dir = mkdtempSync(join(tmpdir(), 'meshd-http-'));
  const agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
  const http = agent.fields.http as string;
  await putConfig(http, { Kind: 'service-defaults', Name: 'api', Protocol: 'http' });
  await putConfig(http, intentions);
  const app = await startApp('api');
  const workers = String(opts.apiWorkers ?? 1);
  const api = await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-workers', workers, '-http-addr', http]);
  const web = await startMeshd(['connect', 'proxy', '-service', 'web', '-upstream', 'api:0', '-workers', '1', '-http-addr', http]);
  const port = Number((web.fields['upstream.api'] as string).split(':')[1]);
  for (let i = 0; i < 100; i++) {
    if (await fetch(`http://127.0.0.1:${port}/ok`).then((r) => r.status === 200, () => false)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    http,
    app,
    port,
    stop: async () => {
      await Promise.all([web.stop(), api.stop()]);
      await agent.stop();
      await app.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
