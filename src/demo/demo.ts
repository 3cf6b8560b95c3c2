// `meshd demo` (what `npm start` runs): an agent and a small mesh of real processes.
//
//   curl ──▶ web app ──▶ web sidecar (upstream api on :9191) ══mTLS══▶ api sidecar ──▶ api app
//                         billing sidecar (upstream api on :9192) ══mTLS══▶ api sidecar  (no intention: denied)
//
// The two apps are tiny HTTP servers in this process; the agent and the three sidecars are
// child processes started through the real CLI. Ctrl-C stops all of them.

import { createServer, type Server } from 'node:http';
import { request } from 'node:http';
import { parseFlags, parseHostPort, usageText, UsageError, type FlagSpecs } from '../cli/flags.ts';
import { AgentClient } from '../control/client.ts';
import { freePort, startMeshd, type MeshdProcess } from './procs.ts';

const FLAGS: FlagSpecs = {
  'http-addr': { kind: 'string', help: 'Address for the demo agent API', placeholder: 'HOST:PORT', default: '127.0.0.1:8500' },
  'random-ports': { kind: 'bool', help: 'Use free ports instead of the fixed demo ports (for tests and busy machines)' },
  workers: { kind: 'string', help: 'Worker threads per sidecar', placeholder: 'N', default: '2' },
};

interface Ports {
  agent: number;
  apiApp: number;
  webApp: number;
  apiProxy: number;
  webProxy: number;
  billingProxy: number;
  webUpstream: number;
  billingUpstream: number;
  metrics: number;
}

const FIXED: Omit<Ports, 'agent'> = {
  apiApp: 19090,
  webApp: 19091,
  apiProxy: 21000,
  webProxy: 21001,
  billingProxy: 21002,
  webUpstream: 9191,
  billingUpstream: 9192,
  metrics: 9102,
};

function listen(server: Server, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (e: Error & { code?: string }) =>
      reject(e.code === 'EADDRINUSE' ? new Error(`port ${port} is in use: stop what uses it, or run \`npm start -- -random-ports\``) : e),
    );
    server.listen({ host: '127.0.0.1', port }, resolve);
  });
}

function apiApp(): Server {
  return createServer((req, res) => {
    const body = JSON.stringify({ service: 'api', path: req.url, message: 'hello from api' }) + '\n';
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(body);
  });
}

/** The web app calls api through its sidecar's upstream listener, as a meshed app does. */
function webApp(upstreamPort: number): Server {
  return createServer((_req, res) => {
    const up = request({ host: '127.0.0.1', port: upstreamPort, path: '/from-web', agent: false }, (r) => {
      let text = '';
      r.setEncoding('utf8');
      r.on('data', (d: string) => (text += d));
      r.on('end', () => {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end(`web -> api (through the mesh): ${text}`);
      });
    });
    up.on('error', (e) => {
      res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`web could not reach api through the mesh: ${e.message} (is there an intention allowing web -> api?)\n`);
    });
    up.end();
  });
}

export async function runDemo(argv: readonly string[]): Promise<number> {
  if (argv.some((a) => a === '-help' || a === '--help' || a === '-h')) {
    process.stdout.write(usageText('demo', '[options]', FLAGS));
    return 0;
  }
  const f = parseFlags(argv, FLAGS);
  if (f.positionals.length > 0) throw new UsageError(`unexpected argument: ${f.positionals[0]}`);
  const random = f.bools.get('random-ports') === true;
  const agentAddr = parseHostPort(f.strings.get('http-addr') ?? '', 'http-addr');
  const workers = f.strings.get('workers') ?? '2';
  const ports: Ports = random
    ? {
        agent: await freePort(),
        apiApp: await freePort(),
        webApp: await freePort(),
        apiProxy: await freePort(),
        webProxy: await freePort(),
        billingProxy: await freePort(),
        webUpstream: await freePort(),
        billingUpstream: await freePort(),
        metrics: await freePort(),
      }
    : { agent: agentAddr.port, ...FIXED };

  const procs: MeshdProcess[] = [];
  const servers: Server[] = [];
  const shutdown = async (): Promise<void> => {
    await Promise.all(procs.reverse().map((p) => p.stop()));
    for (const s of servers) s.closeAllConnections();
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  };
  const say = (line: string): void => void process.stdout.write(`${line}\n`);

  try {
    const api = apiApp();
    const web = webApp(ports.webUpstream);
    servers.push(api, web);
    await listen(api, ports.apiApp);
    await listen(web, ports.webApp);

    const http = `127.0.0.1:${ports.agent}`;
    const opts = { inheritStderr: true };
    const agent = await startMeshd(['agent', '-dev', '-http-addr', http], opts);
    procs.push(agent);
    const common = ['-http-addr', http, '-workers', workers];
    procs.push(await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${ports.apiApp}`, '-listen', `127.0.0.1:${ports.apiProxy}`, '-register', ...common], opts));
    procs.push(
      await startMeshd(
        ['connect', 'proxy', '-service', 'web', '-service-addr', `127.0.0.1:${ports.webApp}`, '-listen', `127.0.0.1:${ports.webProxy}`, '-upstream', `api:${ports.webUpstream}`, '-metrics-addr', `127.0.0.1:${ports.metrics}`, '-register', ...common],
        opts,
      ),
    );
    procs.push(await startMeshd(['connect', 'proxy', '-service', 'billing', '-upstream', `api:${ports.billingUpstream}`, ...common], opts));
    const client = new AgentClient(new URL(`http://${http}`));
    await client.request('PUT', '/v1/connect/intentions/exact', { query: { source: 'web', destination: 'api' }, body: { Action: 'allow', Description: 'demo: web may call api' } });

    const flag = ports.agent === 8500 ? '' : ` -http-addr ${http}`;
    say('');
    say('meshd demo is running. Processes: agent, sidecars for api, web and billing; apps api and web.');
    say(`  agent API              http://${http}   (trust domain ${agent.fields['trust-domain'] ?? '?'})`);
    say(`  web app                http://127.0.0.1:${ports.webApp}/   calls api through its sidecar`);
    say(`  web sidecar metrics    http://127.0.0.1:${ports.metrics}/metrics`);
    say('');
    say('Try:');
    say(`  curl http://127.0.0.1:${ports.webApp}/                    # web -> api through the mesh (intention web -> api: allow)`);
    say(`  curl http://127.0.0.1:${ports.webUpstream}/                     # straight into web's upstream listener for api`);
    say(`  curl http://127.0.0.1:${ports.billingUpstream}/                     # billing -> api: no intention, default deny: connection closed`);
    say(`  npx meshd intention check${flag} billing api       # prints Denied (exit 1)`);
    say(`  npx meshd intention create${flag} -deny -replace web api   # now web -> api is refused too (within a second)`);
    say(`  npx meshd intention create${flag} -allow -replace web api  # and allowed again`);
    say(`  npx meshd intention list${flag}`);
    say(`  curl -s http://127.0.0.1:${ports.metrics}/metrics | grep meshd_connections   # accepted, denied (by reason), bytes`);
    say('');
    say('Press Ctrl-C to stop every process.');
    say('meshd demo ready: ' + `agent=${http} web=127.0.0.1:${ports.webApp} upstream.api=127.0.0.1:${ports.webUpstream} upstream.billing=127.0.0.1:${ports.billingUpstream} metrics=127.0.0.1:${ports.metrics}`);

    await new Promise<void>((resolve) => {
      process.once('SIGINT', () => resolve());
      process.once('SIGTERM', () => resolve());
      // A child that dies on its own ends the demo: a half-running mesh would mislead.
      for (const p of procs) p.child.once('exit', () => resolve());
    });
    say('meshd demo: stopping...');
    await shutdown();
    say('meshd demo: stopped.');
    return 0;
  } catch (e) {
    await shutdown();
    throw e;
  }
}
