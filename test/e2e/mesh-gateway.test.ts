// The mesh gateway end to end in one datacenter, with real processes from the CLI: an agent;
// two `api` instances (version v1 and v2, each an HTTP app behind its sidecar, registered with
// -register) and a service-resolver with a subset per version; and
// `meshd connect gateway -mesh -service mesh-gateway -register`. The test plays a `web` sidecar:
// it takes web's leaf from the agent and connects through the gateway with api's SNI. The
// gateway routes on the SNI without terminating TLS; api's sidecar alone authorizes. A packet
// capture (tcpdump, when it can run) shows only TLS records on both legs.

import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import * as net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tls from 'node:tls';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { putConfig, startApp, type HttpApp } from '../helpers/http-app.ts';
import { scrape, scrapeUntil, total } from '../helpers/net.ts';
import { checkTlsRecords, readPcapStreams } from '../helpers/pcap.ts';
import { assertStrictMetrics } from '../helpers/prom-check.ts';
import { until } from '../helpers/until.ts';

interface Leaf {
  readonly CertPEM: string;
  readonly PrivateKeyPEM: string;
}

interface Outcome {
  /** The TLS handshake with the far end finished. */
  readonly secure: boolean;
  /** The SPIFFE ID in the server's certificate ('' when none was seen). */
  readonly peer: string;
  /** Everything the server sent after the handshake. */
  readonly text: string;
  readonly error: string | null;
}

async function getJson<T>(url: string): Promise<T> {
  const r = await fetch(url);
  assert.equal(r.status, 200, `${url}: ${r.status}`);
  return (await r.json()) as T;
}

describe('mesh gateway: SNI routing with TLS passed through (one datacenter)', () => {
  let dir: string;
  let agent: MeshdProcess;
  let gateway: MeshdProcess;
  const procs: MeshdProcess[] = [];
  const apps: HttpApp[] = [];
  let http: string;
  let td: string;
  let gwHost: string;
  let gwPort: number;
  let metrics: string;
  let leaf: Leaf;
  let roots: string[];
  let sidecarPorts: number[];

  const sni = (service: string, subset = ''): string => `${subset === '' ? '' : `${subset}.`}${service}.default.dc1.internal.${td}`;

  /** A `web` client through the gateway: TLS with servername `servername`, one HTTP request. */
  function viaGateway(servername: string, path = '/hello', opts: { leaf?: Leaf } = {}): Promise<Outcome> {
    const l = opts.leaf ?? leaf;
    return new Promise((resolve) => {
      let text = '';
      let secure = false;
      let peer = '';
      const s = tls.connect({
        host: gwHost,
        port: gwPort,
        servername,
        key: l.PrivateKeyPEM,
        cert: l.CertPEM,
        ca: roots,
        // The server's leaf carries only a URI SAN: it is checked below, not as a host name.
        checkServerIdentity: () => undefined,
      });
      const timer = setTimeout(() => s.destroy(new Error('timeout')), 8000);
      s.setEncoding('utf8');
      s.on('secureConnect', () => {
        secure = true;
        peer = /URI:(spiffe:\/\/\S+?)(,|$)/.exec(s.getPeerCertificate().subjectaltname ?? '')?.[1] ?? '';
        s.write(`GET ${path} HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n`);
      });
      s.on('data', (d: string) => {
        text += d;
        // The app keeps the connection alive whatever the request says: stop at the response's end.
        const head = text.indexOf('\r\n\r\n');
        const len = /content-length: (\d+)/i.exec(text.slice(0, head))?.[1];
        const chunkedEnd = head >= 0 && /transfer-encoding: chunked/i.test(text.slice(0, head)) && text.endsWith('\r\n0\r\n\r\n');
        if (chunkedEnd || (head >= 0 && len !== undefined && Buffer.byteLength(text.slice(head + 4)) >= Number(len))) s.destroy();
      });
      const done = (error: string | null): void => {
        clearTimeout(timer);
        resolve({ secure, peer, text, error });
      };
      s.on('error', (e: Error & { code?: string }) => done(e.code ?? e.message));
      s.on('close', () => done(null));
    });
  }

  /** Raw bytes to the gateway; resolves when the gateway closes the connection (and with what it sent). */
  function rawToGateway(bytes: Buffer): Promise<string> {
    return new Promise((resolve) => {
      const s = net.connect({ host: gwHost, port: gwPort }, () => s.write(bytes));
      let got = '';
      s.on('data', (d: Buffer) => (got += d.toString('latin1')));
      s.on('error', () => undefined);
      const t = setTimeout(() => s.destroy(), 5000);
      s.on('close', () => {
        clearTimeout(t);
        resolve(got);
      });
    });
  }

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshd-mesh-gw-'));
    agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0', '-data-dir', join(dir, 'agent')]);
    http = agent.fields.http as string;
    td = agent.fields['trust-domain'] as string;
    await putConfig(http, {
      Kind: 'service-resolver',
      Name: 'api',
      Subsets: { v1: { Filter: 'Service.Meta.version == v1' }, v2: { Filter: 'Service.Meta.version == v2' } },
    });
    await putConfig(http, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] });
    for (const v of ['v1', 'v2']) {
      const app = await startApp(`api-${v}`);
      apps.push(app);
      procs.push(
        await startMeshd(['connect', 'proxy', '-service', 'api', '-service-addr', `127.0.0.1:${app.port}`, '-listen', '127.0.0.1:0', '-register', '-register-id', v, '-service-meta', `version=${v}`, '-workers', '1', '-http-addr', http]),
      );
    }
    sidecarPorts = procs.map((p) => Number((p.fields.inbound as string).split(':').at(-1)));
    gateway = await startMeshd(['connect', 'gateway', '-mesh', '-service', 'mesh-gateway', '-address', '127.0.0.1:0', '-register', '-workers', '2', '-metrics-addr', '127.0.0.1:0', '-http-addr', http]);
    const lan = gateway.fields.lan as string;
    gwHost = lan.slice(0, lan.lastIndexOf(':'));
    gwPort = Number(lan.slice(lan.lastIndexOf(':') + 1));
    metrics = gateway.fields.metrics as string;
    leaf = await getJson<Leaf>(`http://${http}/v1/agent/connect/ca/leaf/web`);
    roots = (await getJson<{ Roots: { RootCert: string }[] }>(`http://${http}/v1/agent/connect/ca/roots`)).Roots.map((r) => r.RootCert);
  });

  after(async () => {
    await gateway?.stop();
    for (const p of procs) await p.stop();
    for (const a of apps) await a.close();
    await agent?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('the ready line: the identity is the gateway\'s SPIFFE ID, one listener serves lan and wan', () => {
    assert.equal(gateway.fields.identity, `spiffe://${td}/gateway/mesh/dc/dc1`);
    assert.equal(gateway.fields.lan, gateway.fields.wan);
    assert.notEqual(gwPort, 0);
  });

  test('the registration: Kind mesh-gateway, Port the LAN port, TaggedAddresses lan and wan', async () => {
    const svc = await getJson<Record<string, unknown>>(`http://${http}/v1/agent/service/mesh-gateway`);
    assert.equal(svc.Kind, 'mesh-gateway');
    assert.equal(svc.Port, gwPort);
    assert.deepEqual(svc.TaggedAddresses, { lan: { Address: gwHost, Port: gwPort }, wan: { Address: gwHost, Port: gwPort } });
    const health = await getJson<{ Service: { Kind: string; TaggedAddresses?: unknown }; Checks: { Status: string }[] }[]>(`http://${http}/v1/health/service/mesh-gateway`);
    assert.equal(health.length, 1);
    assert.equal(health[0]?.Service.Kind, 'mesh-gateway');
    assert.deepEqual((health[0]?.Service.TaggedAddresses as Record<string, unknown>).wan, { Address: gwHost, Port: gwPort });
    assert.ok(health[0]?.Checks.every((c) => c.Status === 'passing'));
  });

  test('the routing endpoint: api and each subset map to the right sidecars', async () => {
    const cfg = await getJson<{ Datacenter: string; TrustDomain: string; Services: Record<string, { Address: string; Port: number }[]>; Datacenters: Record<string, unknown> }>(
      `http://${http}/v1/internal/meshd/mesh-gateway-config/mesh-gateway`,
    );
    assert.equal(cfg.Datacenter, 'dc1');
    assert.equal(cfg.TrustDomain, td);
    assert.deepEqual(cfg.Services[sni('api')]?.map((a) => a.Port).sort(), [...sidecarPorts].sort());
    assert.deepEqual(cfg.Services[sni('api', 'v1')], [{ Address: '127.0.0.1', Port: sidecarPorts[0] }]);
    assert.deepEqual(cfg.Services[sni('api', 'v2')], [{ Address: '127.0.0.1', Port: sidecarPorts[1] }]);
    assert.deepEqual(cfg.Datacenters, {});
  });

  test('web → api through the gateway: end-to-end mTLS with api\'s sidecar, the app answers', async () => {
    const r = await viaGateway(sni('api'));
    assert.equal(r.error, null, r.error ?? '');
    assert.ok(r.secure);
    // The certificate seen is api's sidecar's: the gateway did not terminate TLS.
    assert.match(r.peer, new RegExp(`^spiffe://${td.replaceAll('.', '\\.')}/ns/default/dc/dc1/svc/api$`));
    assert.match(r.text, /^HTTP\/1\.1 200/);
    assert.match(r.text, /"instance":"api-v[12]"/);
    // Round robin: a few more connections reach both instances.
    const seen = new Set<string>();
    for (let i = 0; i < 6; i++) seen.add(/"instance":"(api-v[12])"/.exec((await viaGateway(sni('api'))).text)?.[1] ?? '?');
    assert.deepEqual([...seen].sort(), ['api-v1', 'api-v2']);
    const s = await scrapeUntil(metrics, (x) => total(x, 'meshd_mesh_gateway_destination_connections_total', { destination: 'api' }) >= 7);
    assert.ok(total(s, 'meshd_mesh_gateway_destination_connections_total', { kind: 'service', destination: 'api' }) >= 7);
    assert.ok(total(s, 'meshd_mesh_gateway_bytes_received_total') > 0);
  });

  test('a subset SNI reaches only that subset\'s instance', async () => {
    const before = apps.map((a) => a.hits);
    for (let i = 0; i < 4; i++) {
      const r = await viaGateway(sni('api', 'v2'));
      assert.match(r.text, /"instance":"api-v2"/);
    }
    assert.equal(apps[0]?.hits, before[0], 'v1 got none of the v2 subset traffic');
    assert.equal(apps[1]?.hits, (before[1] ?? 0) + 4);
    const s = await scrape(metrics);
    assert.ok(total(s, 'meshd_mesh_gateway_destination_connections_total', { destination: 'v2.api' }) >= 4);
  });

  test('unknown service, another trust domain, no SNI and non-TLS bytes are closed and counted by reason', async () => {
    const s0 = await scrape(metrics);
    const refused = (s: Map<string, number>, reason: string): number => total(s, 'meshd_mesh_gateway_connections_refused_total', { reason });
    const hits = apps.map((a) => a.hits);
    const unknown = await viaGateway(sni('nope'));
    assert.equal(unknown.secure, false);
    const foreign = await viaGateway('api.default.dc1.internal.11111111-2222-3333-4444-555555555555.consul');
    assert.equal(foreign.secure, false);
    const plain = await rawToGateway(Buffer.from('GET / HTTP/1.1\r\nHost: api\r\n\r\n'));
    assert.equal(plain, '', 'nothing is answered to a non-TLS client');
    // A ClientHello without a server name (an IP address as the host sends none).
    const noSni = await new Promise<boolean>((resolve) => {
      const s = tls.connect({ host: gwHost, port: gwPort, ca: roots, checkServerIdentity: () => undefined });
      s.on('secureConnect', () => resolve(true));
      s.on('error', () => resolve(false));
      s.on('close', () => resolve(false));
    });
    assert.equal(noSni, false);
    const s = await scrapeUntil(metrics, (x) => refused(x, 'no_sni') > refused(s0, 'no_sni') && refused(x, 'not_tls') > refused(s0, 'not_tls'));
    assert.equal(refused(s, 'unknown_service') - refused(s0, 'unknown_service'), 1);
    assert.equal(refused(s, 'foreign_trust_domain') - refused(s0, 'foreign_trust_domain'), 1);
    assert.equal(refused(s, 'not_tls') - refused(s0, 'not_tls'), 1);
    assert.equal(refused(s, 'no_sni') - refused(s0, 'no_sni'), 1);
    assert.deepEqual(
      apps.map((a) => a.hits),
      hits,
      'no refused connection reached an app',
    );
    // No label carries a name a client made up.
    const text = await (await fetch(`http://${metrics}/metrics`)).text();
    assert.doesNotMatch(text, /nope|11111111-2222/);
    assertStrictMetrics(text);
  });

  test('a deny intention: the gateway forwards, api\'s sidecar refuses (the gateway has no say)', async () => {
    await putConfig(http, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'deny' }] });
    const hits = apps.map((a) => a.hits);
    const s0 = await scrape(metrics);
    await until('the deny reaches the sidecars', async () => !/^HTTP\/1\.1 200/.test((await viaGateway(sni('api'))).text));
    const r = await viaGateway(sni('api'));
    assert.doesNotMatch(r.text, /HTTP\/1\.1/);
    assert.equal(
      apps.reduce((n, a) => n + a.hits, 0),
      hits.reduce((n, h) => n + h, 0),
      'the app saw none of the denied connections',
    );
    // The gateway forwarded them (it cannot tell), and refused none.
    const s = await scrape(metrics);
    assert.ok(total(s, 'meshd_mesh_gateway_destination_connections_total', { destination: 'api' }) > total(s0, 'meshd_mesh_gateway_destination_connections_total', { destination: 'api' }));
    assert.equal(total(s, 'meshd_mesh_gateway_connections_refused_total'), total(s0, 'meshd_mesh_gateway_connections_refused_total'));
    await putConfig(http, { Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Action: 'allow' }] });
    await until('the allow is back', async () => /^HTTP\/1\.1 200/.test((await viaGateway(sni('api'))).text));
  });

  test('a packet capture shows only TLS records on both legs, and never the plaintext', async (t) => {
    const probe = spawnSync('tcpdump', ['--version'], { encoding: 'utf8' });
    if (probe.error !== undefined || probe.status !== 0) {
      t.skip(`tcpdump cannot run here (${probe.error?.message ?? probe.stderr.trim()}): install it (npm run pretest does)`);
      return;
    }
    const raw = join(dir, 'lo.pcap');
    const pcap = join(dir, 'gw.pcap');
    const filter = `tcp and (port ${gwPort} or port ${sidecarPorts[0]} or port ${sidecarPorts[1]})`;
    // --immediate-mode: without it libpcap hands packets over in ring-buffer blocks, retired on a
    // timeout, and the packets of a block not yet retired when tcpdump is stopped are lost
    // ("N packets received by filter", 0 captured). The filter is applied offline (tcpdump -r),
    // so the live capture takes all of lo for the second this test runs.
    // The capture takes every packet on lo while other tests may be busy there too; a kernel
    // buffer overrun drops packets, so a capture that missed the connections is taken again
    // (each attempt makes new connections), up to three times.
    const marker = `plaintext-marker-${Math.random().toString(36).slice(2)}`;
    const capture = async (): Promise<{ skip: string } | { file: Buffer; stderr: string }> => {
      const dump: ChildProcess = spawn('tcpdump', ['-i', 'lo', '-U', '-n', '-s', '0', '--immediate-mode', '-w', raw], { stdio: ['ignore', 'ignore', 'pipe'] });
      let err = '';
      const started = await new Promise<boolean>((resolve) => {
        dump.stderr?.setEncoding('utf8');
        dump.stderr?.on('data', (d: string) => {
          err += d;
          if (/listening on/.test(err)) resolve(true);
        });
        dump.once('exit', () => resolve(false));
        dump.once('error', () => resolve(false));
        setTimeout(() => resolve(false), 5000);
      });
      if (!started) {
        dump.kill('SIGKILL');
        return { skip: `tcpdump could not capture on lo (needs CAP_NET_RAW): ${err.trim()}` };
      }
      // One connection to each instance (by subset: the plain name's round robin is per worker).
      const results = [await viaGateway(sni('api', 'v1'), `/${marker}`), await viaGateway(sni('api', 'v2'), `/${marker}`)];
      for (const r of results) assert.match(r.text, new RegExp(`^HTTP/1\\.1 200[\\s\\S]*${marker}`), 'the app saw the marker (so it crossed the capture)');
      // Let the last segments reach the capture, then stop it (SIGINT flushes the file).
      await new Promise((r) => setTimeout(r, 300));
      const exited = new Promise<void>((resolve) => dump.once('exit', () => resolve()));
      dump.kill('SIGINT');
      await exited;
      const offline = spawnSync('tcpdump', ['-r', raw, '-w', pcap, filter], { encoding: 'utf8' });
      assert.equal(offline.status, 0, `tcpdump -r: ${offline.stderr}`);
      return { file: readFileSync(pcap), stderr: err };
    };
    const complete = (f: Buffer): boolean => {
      const all = readPcapStreams(f).filter((x) => x.data.length > 0);
      return all.filter((x) => x.dstPort === gwPort || x.srcPort === gwPort).length >= 4 && all.every((x) => x.gaps === 0 && x.fromStart);
    };
    let got = await capture();
    for (let attempt = 1; attempt < 3 && 'file' in got && !complete(got.file); attempt++) got = await capture();
    if ('skip' in got) {
      t.skip(got.skip);
      return;
    }
    t.diagnostic(`tcpdump: ${got.stderr.trim().split('\n').slice(-3).join('; ')}`);
    const file = got.file;
    assert.equal(file.indexOf(marker), -1, 'the plaintext marker appears in the capture');
    const streams = readPcapStreams(file).filter((s) => s.data.length > 0);
    const legs = (port: number): typeof streams => streams.filter((s) => s.dstPort === port || s.srcPort === port);
    // Client ↔ gateway, and gateway ↔ each sidecar: both directions each.
    assert.ok(legs(gwPort).length >= 4, `client↔gateway streams: ${legs(gwPort).length}`);
    assert.ok(legs(sidecarPorts[0] as number).length >= 2 && legs(sidecarPorts[1] as number).length >= 2, 'gateway↔sidecar streams');
    for (const s of streams) {
      assert.equal(s.gaps, 0, `${s.key}: bytes missing from the capture`);
      assert.ok(s.fromStart, `${s.key}: the capture missed the connection's start`);
      const check = checkTlsRecords(s.data);
      assert.equal(check.problem, null, `${s.key}: ${check.problem}`);
      // Upstream directions start with the ClientHello; everything after it is records too.
      if (s.dstPort === gwPort || sidecarPorts.includes(s.dstPort)) assert.equal(s.data[0], 22, `${s.key}: starts with a handshake record`);
      assert.ok(check.types.includes(23), `${s.key}: carries application data records`);
    }
    // The gateway forwarded the client's bytes unchanged: each client→gateway stream equals a gateway→sidecar one.
    const upstreamPayloads = streams.filter((s) => sidecarPorts.includes(s.dstPort)).map((s) => s.data.toString('hex'));
    for (const s of streams.filter((x) => x.dstPort === gwPort)) assert.ok(upstreamPayloads.includes(s.data.toString('hex')), `${s.key}: no byte-identical stream to a sidecar`);
  });
});
