// Data-plane worker thread entry. Receives its configuration from the control thread,
// binds every listener with reusePort, and then only moves bytes: it never parses config,
// builds a regex or formats a metric label (those stay on the control thread).

import { parentPort } from 'node:worker_threads';
import { PolicyTableReader } from '../authz/table.ts';
import { WasmPolicyProbe } from '../wasm/policy.ts';
import { counterBlock } from '../metrics/counters.ts';
import { l7Block } from '../metrics/l7.ts';
import { closeAccessLog, openAccessLog } from '../metrics/access-log.ts';
import { startLagMonitor, workerGaugeBlock } from '../metrics/runtime.ts';
import { InboundListener } from '../dataplane/inbound.ts';
import { UpstreamListener } from '../dataplane/outbound.ts';
import type { FromWorker, RoutingSnapshot, ToWorker, WorkerInit } from './messages.ts';

if (parentPort === null) throw new Error('dataplane-worker.ts must run as a worker thread');
const port = parentPort;

let inbound: InboundListener | null = null;
const upstreams = new Map<string, UpstreamListener>();
let routingVersion = -1;
let stopLagMonitor: (() => void) | null = null;

function applyRouting(r: RoutingSnapshot): void {
  // Snapshots are whole and versioned: an older one arriving late is ignored.
  if (r.version <= routingVersion) return;
  routingVersion = r.version;
  inbound?.updateRouting(r.inbound);
  for (const [name, u] of upstreams) {
    const ur = r.upstreams[name];
    if (ur !== undefined) u.updateRouting(ur);
  }
}

function send(msg: FromWorker): void {
  port.postMessage(msg);
}

async function init(msg: WorkerInit): Promise<void> {
  const counters = counterBlock(msg.counters, msg.index);
  if (msg.accessLog !== undefined) openAccessLog(msg.accessLog);
  // One libuv timer and a write every window: no cost per request or connection.
  if (msg.workerGauges !== undefined) stopLagMonitor = startLagMonitor(workerGaugeBlock(msg.workerGauges, msg.index));
  const listeners = 1 + msg.upstreams.length;
  routingVersion = msg.routing.version;
  // The WebAssembly probe is the default: 0.52-0.68x the TypeScript reader's time per decision
  // (docs/BENCHMARKS.md). MESHD_POLICY_PROBE=ts selects the reference implementation.
  const policy = process.env.MESHD_POLICY_PROBE === 'ts' ? new PolicyTableReader(msg.policy, msg.policySlot) : new WasmPolicyProbe(msg.policy, msg.policySlot);
  let inboundPort: number | null = null;
  if (msg.inbound !== null) {
    inbound = new InboundListener(
      { spec: msg.inbound, service: msg.service, policy, counters, connectTimeoutMs: msg.connectTimeoutMs, handshakeTimeoutMs: msg.handshakeTimeoutMs, l7: l7Block(msg.l7Metrics, msg.index, listeners, 0) },
      msg.tls,
      msg.routing.inbound,
    );
    inboundPort = await inbound.listen(msg.inbound.port);
  }
  const ports: Record<string, number> = {};
  for (const [i, spec] of msg.upstreams.entries()) {
    const routing = msg.routing.upstreams[spec.name];
    if (routing === undefined) throw new Error(`no routing for upstream ${spec.name}`);
    const l = new UpstreamListener({ spec, counters, connectTimeoutMs: msg.connectTimeoutMs, l7: l7Block(msg.l7Metrics, msg.index, listeners, 1 + i) }, msg.tls, routing);
    upstreams.set(spec.name, l);
    ports[spec.name] = await l.listen(spec.port);
  }
  send({ type: 'listening', ports: { inbound: inboundPort, upstreams: ports } });
}

async function drain(): Promise<void> {
  stopLagMonitor?.();
  stopLagMonitor = null;
  await Promise.all([inbound?.close(), ...[...upstreams.values()].map((u) => u.close())]);
  closeAccessLog();
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
      break;
    case 'routing':
      applyRouting(msg.routing);
      break;
    case 'drain':
      // Stop accepting; open connections finish on their own (or the process exits).
      void drain();
      break;
  }
});
