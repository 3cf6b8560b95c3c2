// Data-plane counters: one block of float64 slots per worker in a SharedArrayBuffer.
// Workers count with a plain `c[S.X] += n` (no message per connection, no label formatting
// on the hot path); the control thread sums the blocks when Prometheus scrapes.
//
// Each slot has exactly one writer (its worker), so no Atomics are needed for correctness
// of the sum; float64 keeps integers exact up to 2^53 (9 PB of bytes). A reader may see a
// value a few increments old, which a scrape tolerates.
//
// Layout of one worker's block (Float64Array, BLOCK_SLOTS entries): slot i = SLOTS[i] below.
// The table is the single source of slot numbers and of the labels that go with them.

export const DIRECTIONS = ['inbound', 'outbound'] as const;
export type Direction = (typeof DIRECTIONS)[number];

/**
 * Why a connection was refused. Each value is a stable code and a metric label.
 * - intention: the intention table denied source -> destination (default deny included)
 * - bad_identity: the peer certificate has no single, well-formed SPIFFE service ID
 * - foreign_trust_domain: a valid chain, but a SPIFFE ID from another trust domain
 * - bad_key_usage: a valid chain, but the leaf is not a workload leaf (CA:TRUE, KeyUsage
 *   missing digitalSignature or carrying keyCertSign/cRLSign, no clientAuth EKU)
 * - local_app_unreachable: allowed, but the local app refused or timed out
 * - no_healthy_upstream: no passing instance of the upstream in the catalog
 * - upstream_connect_failed: TCP/TLS to the chosen instance failed
 * - upstream_identity_mismatch: the server presented a valid chain with another service's ID
 * - not_ready: no certificate or table yet
 * - late_rejection: an open connection that a newer intention table denies, closed by the
 *   worker (Consul leaves such connections open until they end on their own)
 * - listener_connection_limit: the listener already had its maximum of connections open
 *   (-max-inbound-connections for the public listener, -max-upstream-connections for each
 *   upstream listener); closed at accept, before any TLS or HTTP work
 * - proxy_connection_limit: the proxy already had -max-connections open over all its
 *   listeners; closed at accept
 * - overload: the worker's event loop ran later than -max-event-loop-delay
 *   (src/dataplane/pressure.ts); closed at accept
 */
export const DENY_REASONS = [
  'intention',
  'bad_identity',
  'foreign_trust_domain',
  'bad_key_usage',
  'local_app_unreachable',
  'no_healthy_upstream',
  'upstream_connect_failed',
  'upstream_identity_mismatch',
  'not_ready',
  'late_rejection',
  'listener_connection_limit',
  'proxy_connection_limit',
  'overload',
] as const;
export type DenyReason = (typeof DENY_REASONS)[number];

/**
 * TLS handshake failures on the public listener, by reason (src/dataplane/tls-errors.ts).
 * - no_certificate: the client sent no certificate
 * - unknown_ca: the client chain does not verify against the trust bundle
 * - expired / not_yet_valid: a certificate of the chain is outside its validity period
 * - bad_key_usage: OpenSSL refused the leaf's purpose (an EKU without clientAuth, a
 *   KeyUsage with neither digitalSignature nor keyAgreement)
 * - timeout: the handshake did not finish within -handshake-timeout
 * - overloaded: refused before the handshake, -max-concurrent-handshakes were in progress
 * - protocol: not TLS, no common version or cipher, a malformed handshake, or the client
 *   aborted it (alert or reset)
 */
export const HANDSHAKE_REASONS = ['no_certificate', 'unknown_ca', 'expired', 'not_yet_valid', 'bad_key_usage', 'timeout', 'overloaded', 'protocol', 'other'] as const;
export type HandshakeReason = (typeof HANDSHAKE_REASONS)[number];

export interface SlotInfo {
  readonly family: string;
  readonly labels: Readonly<Record<string, string>>;
}

export interface FamilyInfo {
  readonly name: string;
  readonly help: string;
  readonly type: 'counter' | 'gauge';
}

export const FAMILIES: Readonly<Record<string, FamilyInfo>> = {
  accepted: { name: 'meshd_connections_accepted_total', help: 'Connections accepted by a listener (inbound: after the mTLS handshake).', type: 'counter' },
  closed: { name: 'meshd_connections_closed_total', help: 'Accepted connections that have closed.', type: 'counter' },
  denied: { name: 'meshd_connections_denied_total', help: 'Connections refused, by reason.', type: 'counter' },
  handshake: { name: 'meshd_tls_handshake_failures_total', help: 'Failed TLS handshakes on the public listener, by reason.', type: 'counter' },
  rx: { name: 'meshd_bytes_received_total', help: 'Bytes received from the downstream peer.', type: 'counter' },
  tx: { name: 'meshd_bytes_sent_total', help: 'Bytes sent to the downstream peer.', type: 'counter' },
  idle: { name: 'meshd_tcp_idle_timeouts_total', help: 'tcp (L4) connections closed after -tcp-idle-timeout without a byte either way.', type: 'counter' },
};

function buildSlots(): { slots: SlotInfo[]; index: Record<string, number> } {
  const slots: SlotInfo[] = [];
  const index: Record<string, number> = {};
  const add = (key: string, family: string, labels: Record<string, string>): void => {
    index[key] = slots.length;
    slots.push({ family, labels });
  };
  for (const d of DIRECTIONS) {
    add(`accepted_${d}`, 'accepted', { direction: d });
    add(`closed_${d}`, 'closed', { direction: d });
    add(`rx_${d}`, 'rx', { direction: d });
    add(`tx_${d}`, 'tx', { direction: d });
    add(`idle_${d}`, 'idle', { direction: d });
  }
  for (const r of DENY_REASONS) add(`denied_${r}`, 'denied', { reason: r });
  for (const r of HANDSHAKE_REASONS) add(`handshake_${r}`, 'handshake', { reason: r });
  return { slots, index };
}

const built = buildSlots();
export const SLOTS: readonly SlotInfo[] = built.slots;
export const BLOCK_SLOTS = SLOTS.length;

function slot(key: string): number {
  const i = built.index[key];
  if (i === undefined) throw new Error(`no metric slot ${key}`);
  return i;
}

/** Named slot numbers for the hot path. */
export const S = {
  ACCEPTED_IN: slot('accepted_inbound'),
  ACCEPTED_OUT: slot('accepted_outbound'),
  CLOSED_IN: slot('closed_inbound'),
  CLOSED_OUT: slot('closed_outbound'),
  RX_IN: slot('rx_inbound'),
  TX_IN: slot('tx_inbound'),
  RX_OUT: slot('rx_outbound'),
  TX_OUT: slot('tx_outbound'),
  IDLE_IN: slot('idle_inbound'),
  IDLE_OUT: slot('idle_outbound'),
} as const;

export function deniedSlot(reason: DenyReason): number {
  return slot(`denied_${reason}`);
}

export function handshakeSlot(reason: HandshakeReason): number {
  return slot(`handshake_${reason}`);
}

/** Allocates the shared counter blocks for `workers` workers. */
export function allocateCounters(workers: number): SharedArrayBuffer {
  return new SharedArrayBuffer(workers * BLOCK_SLOTS * Float64Array.BYTES_PER_ELEMENT);
}

export function counterBlock(buffer: SharedArrayBuffer, worker: number): Float64Array {
  return new Float64Array(buffer, worker * BLOCK_SLOTS * Float64Array.BYTES_PER_ELEMENT, BLOCK_SLOTS);
}

// ---------------------------------------------------------------------------------------------
// Open connections per listener, shared by the workers (src/dataplane/limits.ts enforces the
// connection limits with them).
//
// One Int32Array block per worker: slot 0 the worker's connections over all its listeners,
// slot 1 + l its connections on listener l (0 the public listener, 1..n the upstream listeners
// in -upstream order, the L7 numbering). Each slot has one writer, its worker; a worker deciding
// whether to accept sums the slot over every block. A restarted worker zeroes its block: the
// connections it counted died with its predecessor.

export function connectionStride(listeners: number): number {
  return 1 + listeners;
}

export function allocateConnectionCounts(workers: number, listeners: number): SharedArrayBuffer {
  return new SharedArrayBuffer(workers * connectionStride(listeners) * Int32Array.BYTES_PER_ELEMENT);
}

/** Open connections per listener (index = listener), summed over workers. */
export function openConnections(buffer: SharedArrayBuffer, workers: number, listeners: number): number[] {
  const a = new Int32Array(buffer);
  const stride = connectionStride(listeners);
  const out = new Array<number>(listeners).fill(0);
  for (let w = 0; w < workers; w++) for (let l = 0; l < listeners; l++) out[l] = (out[l] as number) + Atomics.load(a, w * stride + 1 + l);
  return out;
}
