// A mesh gateway's own counters, in one SharedArrayBuffer (one Float64Array region per worker,
// one writer per slot, summed on scrape like ./counters.ts). Each worker's region holds:
//   - the gateway-wide slots (G below): connections opened, closed, routed, refused by reason,
//     bytes, upstream connect failures;
//   - one block of DEST slots per destination (a local service or subset, or another
//     datacenter), numbered by the control thread and fixed for the process's life; block 0
//     takes destinations past the capacity. Labels name the destination from the agent's
//     routing data, never a name a client sent, so an unknown SNI cannot add a series.
// Runs on: data-plane workers (counting) and the control thread (allocation, rendering).

import type { Gauge } from './prometheus.ts';

/**
 * Why a mesh gateway closed a connection without forwarding it. Stable codes, metric labels.
 * - not_tls / no_sni / malformed / too_large: the first bytes are not a usable ClientHello
 *   (../gateway/sni.ts)
 * - incomplete: the client closed before its ClientHello was complete
 * - sni_timeout: no complete ClientHello within the SNI timeout (10 s)
 * - unknown_service: a name of this datacenter and trust domain that no local service has
 * - unknown_datacenter: a name of another datacenter that has no known mesh gateway
 * - foreign_trust_domain: a name outside this mesh's trust domain
 * - no_healthy_upstream: a known destination with no instance to forward to
 * - upstream_connect_failed: every instance tried refused or timed out
 * - listener_connection_limit / proxy_connection_limit: over a connection limit at accept
 */
export const MESH_REFUSE_REASONS = [
  'not_tls',
  'no_sni',
  'malformed',
  'too_large',
  'incomplete',
  'sni_timeout',
  'unknown_service',
  'unknown_datacenter',
  'foreign_trust_domain',
  'no_healthy_upstream',
  'upstream_connect_failed',
  'listener_connection_limit',
  'proxy_connection_limit',
] as const;
export type MeshRefuseReason = (typeof MESH_REFUSE_REASONS)[number];

/** Gateway-wide slots. */
export const G = {
  OPENED: 0,
  CLOSED: 1,
  /** A destination was chosen and connected: the bytes are being forwarded. */
  ROUTED: 2,
  RX: 3,
  TX: 4,
  CONNECT_FAILURES: 5,
  /** REFUSED + index in MESH_REFUSE_REASONS. */
  REFUSED: 6,
} as const;
export const GLOBAL_SLOTS = G.REFUSED + MESH_REFUSE_REASONS.length;

export function refusedSlot(reason: MeshRefuseReason): number {
  return G.REFUSED + MESH_REFUSE_REASONS.indexOf(reason);
}

/** Per-destination slots (offsets in a destination block). */
export const D = { FORWARDED: 0, CLOSED: 1, RX: 2, TX: 3, CONNECT_FAILURES: 4 } as const;
export const DEST_SLOTS = 5;

/** Destination blocks per worker: room for a large mesh; past it, block 0 counts the rest. */
export const MESH_DESTINATION_BLOCKS = 1024;

function regionSlots(destinations: number): number {
  return GLOBAL_SLOTS + destinations * DEST_SLOTS;
}

export function allocateMeshMetrics(workers: number, destinations = MESH_DESTINATION_BLOCKS): SharedArrayBuffer {
  return new SharedArrayBuffer(workers * regionSlots(destinations) * Float64Array.BYTES_PER_ELEMENT);
}

/** One worker's region: the gateway-wide slots, then the destination blocks. */
export function meshMetricsRegion(buffer: SharedArrayBuffer, worker: number, destinations = MESH_DESTINATION_BLOCKS): Float64Array {
  const n = regionSlots(destinations);
  return new Float64Array(buffer, worker * n * Float64Array.BYTES_PER_ELEMENT, n);
}

/** Index in a region of a destination block's slot. */
export function destSlot(block: number, slot: number): number {
  return GLOBAL_SLOTS + block * DEST_SLOTS + slot;
}

/** Labels of a destination block: its kind and name. */
export interface DestinationLabels {
  readonly kind: 'service' | 'datacenter' | 'other';
  readonly destination: string;
}

/**
 * The mesh gateway's families, summed over workers. `destinations[b]` labels block b (blocks
 * without a label, never assigned, are left out).
 */
export function meshGatewayFamilies(buffer: SharedArrayBuffer, workers: number, destinations: readonly (DestinationLabels | undefined)[], capacity = MESH_DESTINATION_BLOCKS): Gauge[] {
  const n = regionSlots(capacity);
  const total = new Float64Array(n);
  for (let w = 0; w < workers; w++) {
    const r = meshMetricsRegion(buffer, w, capacity);
    for (let i = 0; i < n; i++) total[i] = (total[i] as number) + (r[i] as number);
  }
  const v = (i: number): number => total[i] as number;
  const perDest = (slot: number | ((b: number) => number)): { labels: Record<string, string>; value: number }[] =>
    destinations.flatMap((l, b) => (l === undefined ? [] : [{ labels: { kind: l.kind, destination: l.destination }, value: typeof slot === 'number' ? v(destSlot(b, slot)) : slot(b) }]));
  return [
    { name: 'meshd_mesh_gateway_connections_opened_total', help: 'Connections accepted by the mesh gateway listeners.', type: 'counter', samples: [{ labels: {}, value: v(G.OPENED) }] },
    {
      name: 'meshd_mesh_gateway_connections_active',
      help: 'Connections open on the mesh gateway listeners (reading the ClientHello, connecting or forwarding).',
      type: 'gauge',
      samples: [{ labels: {}, value: v(G.OPENED) - v(G.CLOSED) }],
    },
    { name: 'meshd_mesh_gateway_connections_closed_total', help: 'Mesh gateway connections that have closed (whatever their result).', type: 'counter', samples: [{ labels: {}, value: v(G.CLOSED) }] },
    {
      name: 'meshd_mesh_gateway_connections_total',
      help: 'Mesh gateway connections by result, counted when decided: routed (a destination was connected and the bytes forwarded) or refused (closed without forwarding; meshd_mesh_gateway_connections_refused_total says why).',
      type: 'counter',
      samples: [
        { labels: { result: 'routed' }, value: v(G.ROUTED) },
        { labels: { result: 'refused' }, value: MESH_REFUSE_REASONS.reduce((n, r) => n + v(refusedSlot(r)), 0) },
      ],
    },
    {
      name: 'meshd_mesh_gateway_connections_refused_total',
      help: 'Mesh gateway connections closed without forwarding, by reason.',
      type: 'counter',
      samples: MESH_REFUSE_REASONS.map((reason) => ({ labels: { reason }, value: v(refusedSlot(reason)) })),
    },
    { name: 'meshd_mesh_gateway_bytes_received_total', help: 'Bytes received from downstream clients by the mesh gateway.', type: 'counter', samples: [{ labels: {}, value: v(G.RX) }] },
    { name: 'meshd_mesh_gateway_bytes_sent_total', help: 'Bytes sent to downstream clients by the mesh gateway.', type: 'counter', samples: [{ labels: {}, value: v(G.TX) }] },
    { name: 'meshd_mesh_gateway_upstream_connect_failures_total', help: 'Failed connection attempts to an instance or remote gateway (each attempt counts).', type: 'counter', samples: [{ labels: {}, value: v(G.CONNECT_FAILURES) }] },
    { name: 'meshd_mesh_gateway_destination_connections_total', help: 'Connections forwarded, by destination (a local service or subset, or a datacenter).', type: 'counter', samples: perDest(D.FORWARDED) },
    {
      name: 'meshd_mesh_gateway_destination_connections_active',
      help: 'Connections being forwarded now, by destination.',
      type: 'gauge',
      samples: perDest((b) => v(destSlot(b, D.FORWARDED)) - v(destSlot(b, D.CLOSED))),
    },
    { name: 'meshd_mesh_gateway_destination_bytes_received_total', help: 'Bytes received from downstream clients, by destination.', type: 'counter', samples: perDest(D.RX) },
    { name: 'meshd_mesh_gateway_destination_bytes_sent_total', help: 'Bytes sent to downstream clients, by destination.', type: 'counter', samples: perDest(D.TX) },
    { name: 'meshd_mesh_gateway_destination_connect_failures_total', help: 'Failed connection attempts, by destination.', type: 'counter', samples: perDest(D.CONNECT_FAILURES) },
  ];
}
