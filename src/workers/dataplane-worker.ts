// Data-plane worker thread entry. Receives its configuration from the control thread,
// binds every listener with reusePort, and then only moves bytes: it never parses config,
// builds a regex or formats a metric label (those stay on the control thread).

import { parentPort } from 'node:worker_threads';
import { PolicyTableReader } from '../authz/table.ts';
import { WasmPolicyProbe } from '../wasm/policy.ts';
import { counterBlock } from '../metrics/counters.ts';
import { l7Block, l7BlockNumber } from '../metrics/l7.ts';
import { LatencyRecorder, installLatencyRecorder } from '../metrics/latency.ts';
import { closeAccessLog, openAccessLog } from '../metrics/access-log.ts';
import { startLagMonitor, workerGaugeBlock } from '../metrics/runtime.ts';
import { InboundListener, configureTls } from '../dataplane/inbound.ts';
import { UpstreamListener } from '../dataplane/outbound.ts';
import { IngressHttpListener } from '../gateway/ingress-listener.ts';
import { MeshGatewayListener } from '../gateway/mesh-listener.ts';
import { meshMetricsRegion } from '../metrics/mesh-gateway.ts';
import { ConnectionCounts, withDefaults } from '../dataplane/limits.ts';
import { LoadPressure, NO_PRESSURE } from '../dataplane/pressure.ts';
import type { FromWorker, RoutingSnapshot, ToWorker, WorkerInit } from './messages.ts';

if (parentPort === null) throw new Error('dataplane-worker.ts must run as a worker thread');
const port = parentPort;

let inbound: InboundListener | null = null;
const upstreams = new Map<string, UpstreamListener>();
/** An ingress gateway's http listeners (../gateway/ingress-listener.ts), by name. */
const ingress = new Map<string, IngressHttpListener>();
/** A mesh gateway's SNI-routed listeners (../gateway/mesh-listener.ts), by name. */
const mesh = new Map<string, MeshGatewayListener>();
let routingVersion = -1;
let pressure: LoadPressure = NO_PRESSURE;
let stopLagMonitor: (() => void) | null = null;
/** This worker's request-duration histograms (WebAssembly), one per listener. */
let latency: LatencyRecorder | null = null;

function applyRouting(r: RoutingSnapshot): void {
  // Snapshots are whole and versioned: an older one arriving late is ignored.
  if (r.version <= routingVersion) return;
  routingVersion = r.version;
  inbound?.updateRouting(r.inbound);
  for (const [name, u] of upstreams) {
    const ur = r.upstreams[name];
    if (ur !== undefined) u.updateRouting(ur);
  }
  for (const [name, l] of ingress) {
    const ir = r.ingress?.[name];
    if (ir !== undefined) l.updateRouting(ir);
  }
  if (r.mesh !== undefined) for (const l of mesh.values()) l.updateRouting(r.mesh);
}

function send(msg: FromWorker): void {
  port.postMessage(msg);
}

async function init(msg: WorkerInit): Promise<void> {
  const counters = counterBlock(msg.counters, msg.index);
  if (msg.accessLog !== undefined) openAccessLog(msg.accessLog);
  // One libuv timer and a write every window: no cost per request or connection.
  if (msg.workerGauges !== undefined) stopLagMonitor = startLagMonitor(workerGaugeBlock(msg.workerGauges, msg.index));
  const listeners = msg.l7Listeners ?? 1 + msg.upstreams.length;
  configureTls(msg.tlsMinVersion === undefined ? {} : { minVersion: msg.tlsMinVersion });
  latency = new LatencyRecorder(l7BlockNumber(msg.index, listeners, 0), listeners);
  installLatencyRecorder(latency);
  routingVersion = msg.routing.version;
  // The WebAssembly probe is the default: 0.52-0.68x the TypeScript reader's time per decision
  // (docs/BENCHMARKS.md). MESHD_POLICY_PROBE=ts selects the reference implementation.
  const policy = process.env.MESHD_POLICY_PROBE === 'ts' ? new PolicyTableReader(msg.policy, msg.policySlot) : new WasmPolicyProbe(msg.policy, msg.policySlot);
  let inboundPort: number | null = null;
  // Connection and request limits (../dataplane/limits.ts): listener 0 public, 1 + i upstream i.
  const limits = withDefaults(msg.limits);
  const workers = msg.workers ?? 1;
  const conns = new ConnectionCounts(msg.connectionCounts ?? null, msg.index, workers, 1 + msg.upstreams.length, limits.maxConnections);
  // Shedding by event-loop delay (-max-event-loop-delay, ../dataplane/pressure.ts): one judge per worker.
  pressure.stop();
  pressure = new LoadPressure(limits.maxEventLoopDelayMs);
  pressure.start();
  if (msg.inbound !== null) {
    inbound = new InboundListener(
      { spec: msg.inbound, service: msg.service, policy, counters, connectTimeoutMs: msg.connectTimeoutMs, handshakeTimeoutMs: msg.handshakeTimeoutMs, ...(msg.maxConcurrentHandshakes === undefined ? {} : { maxConcurrentHandshakes: msg.maxConcurrentHandshakes }), l7: l7Block(msg.l7Metrics, msg.index, listeners, 0), limits, workers, pressure, connections: conns.gate(0, limits.maxInboundConnections, pressure) },
      msg.tls,
      msg.routing.inbound,
    );
    inboundPort = await inbound.listen(msg.inbound.port);
  }
  const ports: Record<string, number> = {};
  for (const [i, spec] of msg.upstreams.entries()) {
    const mg = msg.meshGateway;
    if (mg?.listeners.includes(spec.name) === true) {
      const l = new MeshGatewayListener(
        {
          spec,
          counters,
          mesh: meshMetricsRegion(mg.metrics, msg.index, mg.destinations),
          connectTimeoutMs: msg.connectTimeoutMs,
          sniTimeoutMs: mg.sniTimeoutMs,
          tcpIdleTimeoutMs: limits.tcpIdleTimeoutMs,
          connections: conns.gate(1 + i, limits.maxInboundConnections),
        },
        msg.routing.mesh ?? { datacenter: '', trustDomain: '', services: {}, datacenters: {} },
      );
      mesh.set(spec.name, l);
      ports[spec.name] = await l.listen(spec.port);
      continue;
    }
    if (msg.ingress?.includes(spec.name) === true) {
      const ir = msg.routing.ingress?.[spec.name] ?? { services: [] };
      const block = (b: number): Float64Array => l7Block(msg.l7Metrics, msg.index, listeners, b);
      const minVersion = msg.ingressTls?.[spec.name];
      const cert = msg.ingressCertificate;
      // A TLS listener never falls back to plain HTTP (the control thread refuses to start without a certificate).
      if (minVersion !== undefined && cert === undefined) throw new Error(`ingress listener ${spec.name} terminates TLS but no certificate was given`);
      const tlsOpts = minVersion === undefined || cert === undefined ? {} : { tls: { minVersion, certificate: cert, handshakeTimeoutMs: msg.handshakeTimeoutMs } };
      const l = new IngressHttpListener({ spec, counters, l7: block(1 + i), block, ...tlsOpts }, msg.tls, ir);
      ingress.set(spec.name, l);
      ports[spec.name] = await l.listen(spec.port);
      continue;
    }
    const routing = msg.routing.upstreams[spec.name];
    if (routing === undefined) throw new Error(`no routing for upstream ${spec.name}`);
    const l = new UpstreamListener({ spec, counters, connectTimeoutMs: msg.connectTimeoutMs, tlsSessionResumption: msg.tlsSessionResumption !== false, l7: l7Block(msg.l7Metrics, msg.index, listeners, 1 + i), limits, workers, pressure, connections: conns.gate(1 + i, limits.maxUpstreamConnections, pressure) }, msg.tls, routing);
    upstreams.set(spec.name, l);
    ports[spec.name] = await l.listen(spec.port);
  }
  send({ type: 'listening', ports: { inbound: inboundPort, upstreams: ports } });
}

/**
 * Shutdown: every listener stops accepting now and drains (HTTP requests in flight finish with
 * `Connection: close`, idle connections close, tcp connections run until they end) for up to
 * `timeoutMs`; then HTTP connections still open are closed, and the supervisor terminates
 * this thread on `drained`, which cuts any tcp connection left.
 */
async function drain(timeoutMs: number): Promise<void> {
  const listeners = [...(inbound === null ? [] : [inbound]), ...upstreams.values(), ...ingress.values(), ...mesh.values()];
  const drained = Promise.all(listeners.map((l) => l.drain()));
  let deadline: NodeJS.Timeout | undefined;
  const late = await Promise.race([drained.then(() => false), new Promise<boolean>((resolve) => (deadline = setTimeout(() => resolve(true), timeoutMs)))]);
  clearTimeout(deadline);
  // The deadline passed: close what HTTP still holds (their close() waits for tcp connections,
  // which the thread's end cuts, so it is not awaited).
  if (late) for (const l of listeners) void l.close();
  stopLagMonitor?.();
  stopLagMonitor = null;
  closeAccessLog();
  installLatencyRecorder(null);
  latency?.destroy();
  latency = null;
  send({ type: 'drained' });
}

port.on('message', (msg: ToWorker) => {
  switch (msg.type) {
    case 'init':
      init(msg).catch((err: Error & { code?: string }) => {
        send({ type: 'fatal', code: err.code ?? 'ERR_WORKER_INIT', message: err.message });
      });
      break;
    case 'tls':
      inbound?.updateTls(msg.tls);
      for (const u of upstreams.values()) u.updateTls(msg.tls);
      for (const l of ingress.values()) l.updateTls(msg.tls);
      break;
    case 'ingress-certificate':
      for (const l of ingress.values()) l.updateCertificate(msg.certificate);
      break;
    case 'routing':
      applyRouting(msg.routing);
      break;
    case 'latency':
      // A scrape: hand over what was recorded since the last one (the histograms reset).
      send({ type: 'latency', seq: msg.seq, delta: latency?.takeDelta() ?? null });
      break;
    case 'drain':
      void drain(msg.timeoutMs);
      break;
  }
});
