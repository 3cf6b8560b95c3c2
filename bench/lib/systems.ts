// The processes a bench run measures: the app, one meshd agent, meshd sidecars (a server
// sidecar in front of the app and client sidecars with an upstream to it), and HAProxy set
// up as the same two sidecars with certificates from meshd's CA. All on loopback.

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as net from 'node:net';
import { join } from 'node:path';
import { createLeafCsr, generateRoot, signLeafCsr } from '../../src/ca/authority.ts';
import { serviceSpiffeId } from '../../src/ca/spiffe.ts';
import { freePort, startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';

/** A stoppable process the bench started, with the pid /proc readings use. */
export interface Proc {
  readonly pid: number;
  stop(): Promise<void>;
}

export interface App {
  /** 'node:http' or 'nginx'. */
  readonly kind: string;
  readonly port: number;
  /** The app's own process (nginx), or null when it runs in the bench process. */
  readonly pid: number | null;
  close(): Promise<void>;
}

/** Every request answers 'ok' (2 bytes), except /api/bulk: `bulkBytes` bytes. */
export async function startNodeApp(bulkBytes: number): Promise<App> {
  const bulk = Buffer.alloc(bulkBytes, 0x62);
  const s = createServer({ keepAliveTimeout: 60_000 }, (req, res) => {
    if (req.url === '/api/bulk') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': bulk.length });
      res.end(bulk);
      return;
    }
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 });
    res.end('ok');
  });
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return {
    kind: 'node:http',
    port: (s.address() as AddressInfo).port,
    pid: null,
    close: () => {
      s.closeAllConnections();
      return new Promise((r) => s.close(() => r()));
    },
  };
}

export function nginxInstalled(): boolean {
  try {
    execFileSync('nginx', ['-v'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** nginx, one process (no master), serving the same two answers from `dir`. */
export async function startNginxApp(dir: string, bulkBytes: number): Promise<App> {
  const port = await freePort();
  writeFileSync(join(dir, 'bulk.bin'), Buffer.alloc(bulkBytes, 0x62));
  const conf = join(dir, 'nginx.conf');
  writeFileSync(
    conf,
    `daemon off;\nmaster_process off;\nworker_processes 1;\npid ${join(dir, 'nginx.pid')};\nerror_log ${join(dir, 'nginx-error.log')} warn;\n` +
      `events { worker_connections 8192; }\n` +
      `http {\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 120s;\n` +
      `  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};\n` +
      `  server {\n    listen 127.0.0.1:${port};\n    location = /api/bulk { default_type application/octet-stream; alias ${join(dir, 'bulk.bin')}; }\n` +
      `    location / { default_type text/plain; return 200 "ok"; }\n  }\n}\n`,
  );
  const p = spawn('nginx', ['-p', dir, '-c', conf, '-e', join(dir, 'nginx-error.log')], { stdio: ['ignore', 'ignore', 'pipe'] });
  await waitExitOrPort(p, port, 'nginx');
  return { kind: 'nginx', port, pid: p.pid as number, close: () => stopChild(p) };
}

function waitExitOrPort(p: ChildProcess, port: number, what: string): Promise<void> {
  let err = '';
  p.stderr?.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    const started = performance.now();
    const exited = (code: number | null): void => reject(new Error(`${what} exited (${code ?? 'signal'}): ${err.trim()}`));
    p.once('exit', exited);
    const probe = (): void => {
      const s = net.connect({ host: '127.0.0.1', port });
      s.once('connect', () => {
        s.destroy();
        p.off('exit', exited);
        resolve();
      });
      s.once('error', () => {
        if (performance.now() - started > 5000) reject(new Error(`${what} did not listen on ${port} within 5 s: ${err.trim()}`));
        else setTimeout(probe, 50);
      });
    };
    probe();
  });
}

async function stopChild(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once('exit', () => r()));
  p.kill('SIGTERM');
  const t = setTimeout(() => p.kill('SIGKILL'), 3000);
  await exited;
  clearTimeout(t);
}

export interface Pems {
  readonly ca: string;
  readonly web: string;
  readonly api: string;
}

/** One root and SPIFFE leaves for web and api, as meshd's CA issues them, for HAProxy. */
export async function haproxyCerts(dir: string): Promise<Pems> {
  const clusterId = '6b3b2f8e-5a3c-4d0e-9c1a-3f1e2d4c5b6a';
  const td = `${clusterId}.consul`;
  const root = await generateRoot({ clusterId, now: new Date() });
  const leaf = async (svc: string): Promise<string> => {
    const { csrPem, keyPem } = await createLeafCsr(serviceSpiffeId(td, 'default', 'dc1', svc));
    const c = await signLeafCsr({ csrPem, root, trustDomain: td, datacenter: 'dc1', now: new Date() });
    const file = join(dir, `${svc}.pem`);
    writeFileSync(file, c.CertPEM + keyPem);
    return file;
  };
  writeFileSync(join(dir, 'ca.pem'), root.certPem);
  return { ca: join(dir, 'ca.pem'), web: await leaf('web'), api: await leaf('api') };
}

/** null when HAProxy is there (installed with apt by scripts/ensure-tools.sh if missing), else why not. */
export function ensureHaproxy(): string | null {
  try {
    execFileSync('bash', ['scripts/ensure-tools.sh', 'haproxy'], { stdio: ['ignore', 'ignore', 'inherit'] });
    execFileSync('haproxy', ['-v'], { stdio: 'ignore' });
    return null;
  } catch (err) {
    return `haproxy is not installed and could not be installed (${(err as Error).message.split('\n')[0] ?? ''})`;
  }
}

export function haproxyVersion(): string {
  try {
    return (execFileSync('haproxy', ['-v'], { encoding: 'utf8' }).split('\n')[0] ?? '').replace(/ - https?:.*$/, '');
  } catch {
    return 'unknown';
  }
}

let cfgSeq = 0;

async function startHaproxy(cfg: string, dir: string, port: number): Promise<Proc> {
  const file = join(dir, `haproxy-${++cfgSeq}.cfg`);
  writeFileSync(file, cfg);
  const p = spawn('haproxy', ['-db', '-f', file], { stdio: ['ignore', 'ignore', 'pipe'] });
  await waitExitOrPort(p, port, 'haproxy');
  return { pid: p.pid as number, stop: () => stopChild(p) };
}

function haproxyCommon(mode: 'tcp' | 'http', threads: number): string {
  return `global\n  nbthread ${threads}\n  maxconn 8000\ndefaults\n  mode ${mode}\n  timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n`;
}

/** HAProxy as the server sidecar: mTLS in (client certificate required), plaintext to the app. */
export async function haproxyServer(dir: string, pem: Pems, mode: 'tcp' | 'http', threads: number, appPort: number): Promise<{ port: number; proc: Proc }> {
  const port = await freePort();
  const reuse = mode === 'http' ? '  http-reuse always\n' : '';
  const proc = await startHaproxy(
    `${haproxyCommon(mode, threads)}frontend pub\n  bind 127.0.0.1:${port} ssl crt ${pem.api} ca-file ${pem.ca} verify required\n  default_backend app\nbackend app\n${reuse}  server app 127.0.0.1:${appPort}\n`,
    dir,
    port,
  );
  return { port, proc };
}

/**
 * HAProxy as the client sidecar: plaintext in, mTLS to the server sidecar. `sslReuse` false
 * adds `no-ssl-reuse` (HAProxy resumes TLS sessions to a server by default).
 */
export async function haproxyClient(dir: string, pem: Pems, mode: 'tcp' | 'http', threads: number, serverPort: number, sslReuse = true): Promise<{ port: number; proc: Proc }> {
  const port = await freePort();
  const reuse = mode === 'http' ? '  http-reuse always\n' : '';
  const proc = await startHaproxy(
    `${haproxyCommon(mode, threads)}frontend up\n  bind 127.0.0.1:${port}\n  default_backend api\nbackend api\n${reuse}  server api 127.0.0.1:${serverPort} ssl crt ${pem.web} ca-file ${pem.ca} verify required${sslReuse ? '' : ' no-ssl-reuse'}\n`,
    dir,
    port,
  );
  return { port, proc };
}

/**
 * HAProxy as an SNI router, the job of a mesh gateway: `mode tcp`, the ClientHello inspected
 * (not terminated) and the connection passed on by its server name. No certificate.
 */
export function haproxySniConfig(o: { readonly port: number; readonly threads: number; readonly sni: string; readonly target: { readonly host: string; readonly port: number } }): string {
  return (
    `${haproxyCommon('tcp', o.threads)}frontend gw\n  bind 127.0.0.1:${o.port}\n  tcp-request inspect-delay 5s\n  tcp-request content accept if { req_ssl_hello_type 1 }\n` +
    `  use_backend api if { req.ssl_sni -i ${o.sni} }\nbackend api\n  server api ${o.target.host}:${o.target.port}\n`
  );
}

export async function haproxySniRouter(dir: string, threads: number, sni: string, target: { readonly host: string; readonly port: number }): Promise<{ port: number; proc: Proc }> {
  const port = await freePort();
  const proc = await startHaproxy(haproxySniConfig({ port, threads, sni, target }), dir, port);
  return { port, proc };
}

function meshdProc(p: MeshdProcess): Proc {
  return {
    pid: p.child.pid as number,
    stop: async () => {
      await p.stop(20_000); // a CPU profile is written on the way out
    },
  };
}

export async function startAgent(dir: string): Promise<{ http: string; proc: Proc }> {
  const agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
  return { http: agent.fields.http as string, proc: meshdProc(agent) };
}

async function putConfig(http: string, e: object): Promise<void> {
  const r = await fetch(`http://${http}/v1/config`, { method: 'PUT', body: JSON.stringify(e) });
  if (r.status !== 200) throw new Error(`config write failed: ${await r.text()}`);
}

let serviceSeq = 0;

/**
 * A meshd server sidecar in front of the app, for a service of its own (so sidecars of
 * different scenarios never load-balance onto each other). tcp: an L4 allow intention from
 * web. http: Protocol http, an L7 intention (PathPrefix /api permission), a service-router
 * route and a 100/0 service-splitter, metrics on.
 */
export async function meshdServer(
  http: string,
  protocol: 'tcp' | 'http',
  workers: number,
  appPort: number,
  opts: { cpuProfDir?: string } = {},
): Promise<{ service: string; proc: Proc; metrics: string }> {
  const service = `api${++serviceSeq}-${protocol}`;
  if (protocol === 'http') {
    await putConfig(http, { Kind: 'service-defaults', Name: service, Protocol: 'http' });
    await putConfig(http, { Kind: 'service-intentions', Name: service, Sources: [{ Name: 'web', Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/api' } }] }] });
    await putConfig(http, { Kind: 'service-router', Name: service, Routes: [{ Match: { HTTP: { PathPrefix: '/admin' } }, Destination: { RequestTimeout: '2s' } }] });
    await putConfig(http, { Kind: 'service-defaults', Name: `${service}-canary`, Protocol: 'http' });
    await putConfig(http, { Kind: 'service-splitter', Name: service, Splits: [{ Weight: 100 }, { Weight: 0, Service: `${service}-canary` }] });
  } else {
    await putConfig(http, { Kind: 'service-intentions', Name: service, Sources: [{ Name: 'web', Action: 'allow' }] });
  }
  const env = opts.cpuProfDir === undefined ? undefined : { NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${opts.cpuProfDir}`.trim() };
  const p = await startMeshd(
    ['connect', 'proxy', '-service', service, '-service-addr', `127.0.0.1:${appPort}`, '-listen', '127.0.0.1:0', '-register', '-workers', String(workers), '-metrics-addr', '127.0.0.1:0', '-http-addr', http],
    env === undefined ? {} : { env },
  );
  return { service, proc: meshdProc(p), metrics: p.fields.metrics as string };
}

/** A meshd client sidecar (service web) with an upstream listener for `service`. */
export async function meshdClient(http: string, service: string, workers: number, opts: { resumption?: boolean } = {}): Promise<{ port: number; proc: Proc; metrics: string }> {
  const p = await startMeshd([
    'connect',
    'proxy',
    '-service',
    'web',
    '-upstream',
    `${service}:0`,
    '-workers',
    String(workers),
    '-metrics-addr',
    '127.0.0.1:0',
    '-http-addr',
    http,
    ...(opts.resumption === false ? ['-tls-session-resumption=false'] : []),
  ]);
  return { port: Number((p.fields[`upstream.${service}`] as string).split(':')[1]), proc: meshdProc(p), metrics: p.fields.metrics as string };
}

/** Waits until a GET through `port` answers 200 (config and endpoints have reached the sidecars). */
export async function waitReady(port: number, what: string, limitMs = 10_000): Promise<void> {
  const started = performance.now();
  let last = '';
  while (performance.now() - started < limitMs) {
    last = await new Promise<string>((resolve) => {
      const s = net.connect({ host: '127.0.0.1', port });
      let got = '';
      const t = setTimeout(() => {
        s.destroy();
        resolve(got || 'timeout');
      }, 1000);
      s.on('connect', () => s.write('GET /api/items HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n'));
      s.setEncoding('latin1');
      s.on('data', (d: string) => (got += d));
      s.on('error', (e) => (got ||= e.message));
      s.on('close', () => {
        clearTimeout(t);
        resolve(got || 'closed');
      });
    });
    if (last.startsWith('HTTP/1.1 200')) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: no 200 through port ${port} within ${limitMs} ms (last: ${JSON.stringify(last.split('\r\n')[0])})`);
}
