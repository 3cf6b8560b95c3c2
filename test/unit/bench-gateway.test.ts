// The pure parts of `npm run bench:gateway` (bench/gateway.ts): reading utime/stime from a
// /proc/<pid>/stat line, the per-phase figures (medians, ratios against direct, the hop's CPU
// per connection and per KiB), the gateway-vs-HAProxy verdict, and HAProxy's SNI-routing config.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { hopSummary, phaseRows, type PathName, type PhaseReport, type Sample } from '../../bench/lib/gateway-figures.ts';
import { procStatCpuTicks } from '../../bench/lib/load.ts';
import { haproxySniConfig } from '../../bench/lib/systems.ts';

/** A stat line as the kernel writes it: pid (comm) state, then fields 4..52. */
function statLine(pid: number, comm: string, utime: number, stime: number): string {
  const rest = Array.from({ length: 49 }, (_v, i) => String(i + 4));
  rest[14 - 4] = String(utime);
  rest[15 - 4] = String(stime);
  return `${pid} (${comm}) S ${rest.join(' ')}\n`;
}

test('procStatCpuTicks reads fields 14 and 15 whatever the command name holds', () => {
  assert.deepEqual(procStatCpuTicks(statLine(42, 'haproxy', 1234, 56)), { utime: 1234, stime: 56 });
  // A name with spaces and parentheses: counting from the first ')' would shift every field.
  assert.deepEqual(procStatCpuTicks(statLine(7, 'we ird) (name', 9, 10)), { utime: 9, stime: 10 });
  fc.assert(
    fc.property(fc.integer({ min: 1, max: 4_194_304 }), fc.string({ maxLength: 15 }), fc.nat(), fc.nat(), (pid, comm, u, s) => {
      assert.deepEqual(procStatCpuTicks(statLine(pid, comm.replace(/\n/g, ' '), u, s)), { utime: u, stime: s });
    }),
  );
  assert.throws(() => procStatCpuTicks('garbage'), /no "\)"/);
  assert.throws(() => procStatCpuTicks('1 (x) S 2 3'), /not integers/);
});

function sample(over: Partial<Sample>): Sample {
  return { answers: 1000, bytes: 0, seconds: 1, p50Us: 100, p99Us: 200, errors: 0, hopCpuMs: null, sidecarCpuMs: 500, ...over };
}

test('phaseRows: medians of the rounds, ratios and added latency against direct, hop CPU per connection', () => {
  const rows = phaseRows(
    'connect',
    new Map<PathName, Sample[]>([
      ['direct', [sample({ answers: 1000 }), sample({ answers: 3000 }), sample({ answers: 2000, p50Us: 50 })]],
      // 1000 connections in 2 s with 300 ms of hop CPU: 500 conn/s, 300 µs per connection.
      ['gateway', [sample({ answers: 1000, seconds: 2, hopCpuMs: 300, p50Us: 400, p99Us: 900 })]],
      ['haproxy', [sample({ answers: 1500, seconds: 2, hopCpuMs: 150, p50Us: 150 })]],
    ]),
  );
  const by = new Map(rows.map((r) => [r.path, r]));
  assert.equal(by.get('direct')?.rate, 2000);
  assert.deepEqual(by.get('direct')?.runs, [1000, 3000, 2000]);
  assert.equal(by.get('direct')?.hopUsPerAnswer, null);
  assert.equal(by.get('gateway')?.rate, 500);
  assert.equal(by.get('gateway')?.ratioDirect, 0.25);
  assert.equal(by.get('gateway')?.hopUsPerAnswer, 300);
  assert.equal(by.get('gateway')?.hopNsPerKiB, null);
  assert.equal(by.get('gateway')?.addedP50Us, 300);
  assert.equal(by.get('gateway')?.addedP99Us, 700);
  assert.equal(by.get('haproxy')?.hopUsPerAnswer, 100);
});

test('phaseRows bulk: MB/s of body and the hop\'s ns per KiB', () => {
  const rows = phaseRows(
    'bulk',
    new Map<PathName, Sample[]>([
      ['direct', [sample({ bytes: 400e6, seconds: 2 })]],
      // 102.4 ms of CPU for 102,400 KiB (100 MiB): 1000 ns per KiB.
      ['gateway', [sample({ bytes: 100 * 1024 * 1024, seconds: 1, hopCpuMs: 102.4 })]],
    ]),
  );
  const gw = rows.find((r) => r.path === 'gateway');
  assert.equal(rows.find((r) => r.path === 'direct')?.rate, 200);
  assert.ok(Math.abs((gw?.rate ?? 0) - 104.8576) < 1e-9);
  assert.ok(Math.abs((gw?.hopNsPerKiB ?? 0) - 1000) < 1e-6, String(gw?.hopNsPerKiB));
  assert.equal(gw?.hopUsPerAnswer, null);
});

function report(phase: PhaseReport['phase'], gateway: number, haproxy: number): PhaseReport {
  const row = (path: PathName, v: number) => ({
    path,
    rate: 1,
    p50Us: 0,
    p99Us: 0,
    errors: 0,
    ratioDirect: null,
    addedP50Us: null,
    addedP99Us: null,
    hopUsPerAnswer: phase === 'bulk' ? null : v,
    hopNsPerKiB: phase === 'bulk' ? v : null,
    sidecarPerUnit: 0,
    runs: [],
  });
  return { phase, title: '', unit: '', rows: [row('gateway', gateway), row('haproxy', haproxy)] };
}

test('hopSummary: the target needs less CPU per connection AND per KiB than HAProxy', () => {
  const met = hopSummary([report('connect', 100, 200), report('keepalive', 50, 10), report('bulk', 300, 400)]);
  assert.equal(met.meetsTarget, true);
  assert.match(met.verdict, /^target met: .*50 % less CPU per connection and 25 % less per KiB/);
  assert.deepEqual(
    met.figures.map((f) => [f.figure, f.ratio]),
    [
      ['us_per_connection', 0.5],
      ['us_per_request', 5],
      ['ns_per_kib', 0.75],
    ],
  );
  const notMet = hopSummary([report('connect', 100, 200), report('bulk', 600, 400)]);
  assert.equal(notMet.meetsTarget, false);
  assert.match(notMet.verdict, /^target NOT met: .*50 % more per KiB/);
  assert.equal(hopSummary([report('keepalive', 1, 2)]).meetsTarget, null);
});

test('haproxySniConfig: mode tcp, the ClientHello inspected, routed only on the exact SNI', () => {
  const sni = 'api.default.dc1.internal.6b3b2f8e-5a3c-4d0e-9c1a-3f1e2d4c5b6a.consul';
  const cfg = haproxySniConfig({ port: 18443, threads: 1, sni, target: { host: '127.0.0.1', port: 21000 } });
  assert.match(cfg, /^\s*nbthread 1$/m);
  assert.match(cfg, /^\s*mode tcp$/m);
  assert.match(cfg, /^\s*bind 127\.0\.0\.1:18443$/m);
  assert.match(cfg, /^\s*tcp-request inspect-delay 5s$/m);
  assert.match(cfg, /^\s*tcp-request content accept if \{ req_ssl_hello_type 1 \}$/m);
  assert.ok(cfg.includes(`use_backend api if { req.ssl_sni -i ${sni} }`));
  assert.match(cfg, /^\s*server api 127\.0\.0\.1:21000$/m);
  // No certificate (TLS passes through) and no default backend (another SNI goes nowhere).
  assert.doesNotMatch(cfg, /ssl crt|default_backend/);
});
