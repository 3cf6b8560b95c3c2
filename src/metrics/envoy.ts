// `-metrics-format envoy`: the proxy's counters under the names Envoy's Prometheus exporter
// uses, with the labels Consul's bootstrap stats tags add (docs: consul-mesh.md §5), so the
// Consul UI's queries and Envoy/Consul Grafana dashboards read a meshd sidecar unchanged.
// Runs on: the control thread, on scrape. Same data as the meshd format, renamed:
//
// - HTTP connection manager (every listener; `envoy_http_conn_manager_prefix` is
//   `public_listener` inbound and `upstream` on an upstream listener, which also carries
//   `consul_upstream_*`): envoy_http_downstream_rq_xx / envoy_listener_http_downstream_rq_xx
//   (`envoy_response_code_class` 1..5), _rq_completed, _rq_total, _rq_time (histogram, ms).
// - Inbound authorization: envoy_http_rbac_denied (L4 and L7 intention denials answered 403),
//   envoy_http_jwt_authn_denied (401), envoy_connect_authz_rbac_denied (connections refused).
// - Clusters (one per upstream listener; `envoy_cluster_name` and `consul_destination_*` name
//   the upstream): envoy_cluster_upstream_rq_xx, _rq_completed, _rq_total, _rq_time (ms),
//   _rq_retry, _rq_timeout, _rq_rx_reset, _cx_connect_fail, _cx_overflow,
//   _rq_pending_overflow (pending and concurrent-request limits, as Envoy counts them),
//   envoy_cluster_outlier_detection_ejections_enforced_total and _ejections_active.
// - Inbound connections and bytes: envoy_http_downstream_cx_total/_active/_rx_bytes_total/
//   _tx_bytes_total for an HTTP service, envoy_tcp_downstream_cx_* (`envoy_tcp_prefix`
//   public_listener) for a TCP one.
//
// Not emitted, because meshd does not measure them (the meshd format has what it does):
// connections to upstream clusters (envoy_cluster_upstream_cx_total, _cx_active,
// _cx_connect_ms, _cx_length_ms, _cx_rx/tx_bytes_total: meshd counts connections and bytes per
// direction, not per upstream, so outbound L4 counters have no Envoy series at all);
// per-code counts (envoy_cluster_upstream_rq{envoy_response_code}: classes only); allowed
// decisions (rbac_allowed, jwt_authn_allowed); retry_success/_overflow/_limit_exceeded,
// per_try_timeout, tx_reset; the per-limit circuit_breakers_default_*_open gauges (meshd keeps
// one combined gauge); membership_*; no_route; TLS handshake failures.
//
// A cluster here is an upstream listener, not a discovery-chain target: requests a splitter
// or a failover sends to another service are counted under the upstream's own name.
// Envoy histograms are in milliseconds, so the buckets are meshd's bounds times 1000 (0.5 ms
// to 10 s), counted from the same merged HDR histograms (./latency.ts). Envoy declares its counters without `_total` as counters; promtool rejects that
// (`counter metrics should have "_total" suffix`), so those are typed `untyped` here: the
// names are Envoy's exactly, and rate()/irate() treat both types alike.

import { S, deniedSlot } from './counters.ts';
import { CODE_CLASSES, L, L7_DENY_REASONS, OVERFLOW_KINDS, RESPONSE_FLAGS, type OverflowKind, type ResponseFlag } from './l7.ts';
import { DURATION_BUCKETS, EMPTY_DURATIONS, type DurationHistogram } from './latency.ts';
import { labelText, sumBlocks } from './prometheus.ts';

type Labels = Readonly<Record<string, string>>;
type Kind = 'counter' | 'untyped' | 'gauge' | 'histogram';

export interface EnvoyView {
  readonly service: string;
  readonly datacenter: string;
  /** Per-worker L4 counter blocks (./counters.ts). */
  readonly counters: readonly Float64Array[];
  /** L7 blocks summed over workers: index 0 the public listener, then `upstreams` in order. */
  readonly l7: readonly Float64Array[];
  /** Merged request-duration histograms, indexed as `l7` (./latency.ts). */
  readonly durations: readonly DurationHistogram[];
  readonly upstreams: readonly string[];
  readonly hasInbound: boolean;
  /** The local service's protocol (service-defaults); anything but 'tcp' is HTTP. */
  readonly inboundProtocol: string;
}

/** The static labels Consul puts on every stat of a proxy (its own identity). */
export function envoySourceLabels(service: string, datacenter: string): Labels {
  return { consul_source_service: service, consul_source_namespace: 'default', consul_source_partition: 'default', consul_source_datacenter: datacenter };
}

class Families {
  readonly #order: string[] = [];
  readonly #fams = new Map<string, { help: string; type: Kind; lines: string[] }>();
  readonly #base: Labels;

  constructor(base: Labels) {
    this.#base = base;
  }

  add(name: string, type: Kind, help: string, labels: Labels, value: number, suffix = ''): void {
    let f = this.#fams.get(name);
    if (f === undefined) {
      f = { help, type, lines: [] };
      this.#fams.set(name, f);
      this.#order.push(name);
    }
    f.lines.push(`${name}${suffix}${labelText({ ...this.#base, ...labels })} ${value}`);
  }

  /** A classic histogram in milliseconds from meshd's merged duration histogram (seconds). */
  histogramMs(name: string, help: string, labels: Labels, d: DurationHistogram): void {
    DURATION_BUCKETS.forEach((le, i) => {
      this.add(name, 'histogram', help, { ...labels, le: String(Math.round(le * 1e6) / 1e3) }, d.buckets[i] as number, '_bucket');
    });
    this.add(name, 'histogram', help, { ...labels, le: '+Inf' }, d.count, '_bucket');
    this.add(name, 'histogram', help, labels, d.sum * 1000, '_sum');
    this.add(name, 'histogram', help, labels, d.count, '_count');
  }

  text(): string {
    const out: string[] = [];
    for (const name of this.#order) {
      const f = this.#fams.get(name);
      if (f === undefined) continue;
      out.push(`# HELP ${name} ${f.help}`, `# TYPE ${name} ${f.type}`, ...f.lines);
    }
    return out.length === 0 ? '' : out.join('\n') + '\n';
  }
}

const flag = (t: Float64Array, f: ResponseFlag): number => t[L.FLAGS + RESPONSE_FLAGS.indexOf(f)] as number;
const overflow = (t: Float64Array, k: OverflowKind): number => t[L.OVERFLOWS + OVERFLOW_KINDS.indexOf(k)] as number;
const completed = (t: Float64Array): number => CODE_CLASSES.reduce((sum, _c, i) => sum + (t[L.REQUESTS + i] as number), 0);

/** The Envoy-named families (without the proxy's own meshd_* gauges, which the caller adds). */
export function renderEnvoy(v: EnvoyView): string {
  const fams = new Families(envoySourceLabels(v.service, v.datacenter));
  const public_ = { envoy_http_conn_manager_prefix: 'public_listener' };
  const hcm: { labels: Labels; t: Float64Array; d: DurationHistogram }[] = [];
  const inboundT = v.l7[0];
  if (v.hasInbound && inboundT !== undefined) hcm.push({ labels: public_, t: inboundT, d: v.durations[0] ?? EMPTY_DURATIONS });
  const clusters: { labels: Labels; t: Float64Array; d: DurationHistogram }[] = [];
  v.upstreams.forEach((u, i) => {
    const t = v.l7[1 + i];
    if (t === undefined) return;
    const d = v.durations[1 + i] ?? EMPTY_DURATIONS;
    hcm.push({ labels: { envoy_http_conn_manager_prefix: 'upstream', consul_upstream_service: u, consul_upstream_namespace: 'default', consul_upstream_partition: 'default', consul_upstream_datacenter: v.datacenter }, t, d });
    clusters.push({ labels: { envoy_cluster_name: u, consul_destination_service: u, consul_destination_namespace: 'default', consul_destination_partition: 'default', consul_destination_datacenter: v.datacenter }, t, d });
  });

  const byClass = (name: string, help: string, list: typeof hcm): void => {
    for (const { labels, t } of list) CODE_CLASSES.forEach((_c, i) => fams.add(name, 'untyped', help, { ...labels, envoy_response_code_class: String(i + 1) }, t[L.REQUESTS + i] as number));
  };
  const each = (name: string, type: Kind, help: string, list: typeof hcm, value: (t: Float64Array) => number): void => {
    for (const { labels, t } of list) fams.add(name, type, help, labels, value(t));
  };

  byClass('envoy_http_downstream_rq_xx', 'Requests answered by the HTTP connection manager, by response code class.', hcm);
  byClass('envoy_listener_http_downstream_rq_xx', 'Requests answered on the listener, by response code class.', hcm);
  each('envoy_http_downstream_rq_completed', 'untyped', 'Requests answered by the HTTP connection manager.', hcm, completed);
  each('envoy_http_downstream_rq_total', 'counter', 'Requests handled by the HTTP connection manager (meshd counts them when answered).', hcm, completed);
  for (const { labels, d } of hcm) fams.histogramMs('envoy_http_downstream_rq_time', 'Time from the request headers to the end of the response, in milliseconds.', labels, d);

  if (v.hasInbound && inboundT !== undefined) {
    const denied = (r: (typeof L7_DENY_REASONS)[number]): number => inboundT[L.L7_DENIED + L7_DENY_REASONS.indexOf(r)] as number;
    fams.add('envoy_http_rbac_denied', 'untyped', 'Requests an intention denied (403), L4 or L7.', public_, denied('l4_deny') + denied('permission_deny') + denied('default_deny'));
    fams.add('envoy_http_jwt_authn_denied', 'untyped', 'Requests refused for a missing or invalid JWT (401).', public_, denied('jwt_invalid'));
  }

  byClass('envoy_cluster_upstream_rq_xx', 'Upstream requests, by response code class.', clusters);
  each('envoy_cluster_upstream_rq_completed', 'untyped', 'Upstream requests answered.', clusters, completed);
  each('envoy_cluster_upstream_rq_total', 'counter', 'Upstream requests (meshd counts them when answered).', clusters, completed);
  for (const { labels, d } of clusters) fams.histogramMs('envoy_cluster_upstream_rq_time', 'Upstream request time, headers to end of response, in milliseconds.', labels, d);
  each('envoy_cluster_upstream_rq_retry', 'untyped', 'Request attempts retried.', clusters, (t) => t[L.RETRIES] as number);
  each('envoy_cluster_upstream_rq_timeout', 'untyped', 'Requests that ran past their route timeout (504).', clusters, (t) => flag(t, 'request_timeout'));
  each('envoy_cluster_upstream_rq_rx_reset', 'untyped', 'Requests whose upstream connection broke before the response began.', clusters, (t) => flag(t, 'reset'));
  each('envoy_cluster_upstream_cx_connect_fail', 'untyped', 'Upstream connections that failed to open.', clusters, (t) => flag(t, 'connect_failure'));
  each('envoy_cluster_upstream_cx_overflow', 'untyped', 'Requests refused by the max-connections circuit breaker.', clusters, (t) => overflow(t, 'connections'));
  each('envoy_cluster_upstream_rq_pending_overflow', 'untyped', 'Requests refused by the pending or concurrent-request circuit breakers.', clusters, (t) => overflow(t, 'pending') + overflow(t, 'requests'));
  each('envoy_cluster_outlier_detection_ejections_enforced_total', 'counter', 'Instances ejected by outlier detection.', clusters, (t) => t[L.EJECTIONS] as number);
  each('envoy_cluster_outlier_detection_ejections_active', 'gauge', 'Instances ejected now.', clusters, (t) => t[L.EJECTED_NOW] as number);

  if (v.hasInbound) {
    const total = sumBlocks(v.counters);
    const accepted = total[S.ACCEPTED_IN] as number;
    const rx = total[S.RX_IN] as number;
    const tx = total[S.TX_IN] as number;
    if (v.inboundProtocol === 'tcp') {
      const tcp = { envoy_tcp_prefix: 'public_listener' };
      fams.add('envoy_tcp_downstream_cx_total', 'counter', 'Connections accepted on the public listener (after mTLS).', tcp, accepted);
      fams.add('envoy_tcp_downstream_cx_rx_bytes_total', 'counter', 'Bytes received from downstream peers.', tcp, rx);
      fams.add('envoy_tcp_downstream_cx_tx_bytes_total', 'counter', 'Bytes sent to downstream peers.', tcp, tx);
    } else {
      fams.add('envoy_http_downstream_cx_total', 'counter', 'Connections accepted on the public listener (after mTLS).', public_, accepted);
      fams.add('envoy_http_downstream_cx_active', 'gauge', 'Connections open on the public listener.', public_, accepted - (total[S.CLOSED_IN] as number));
      fams.add('envoy_http_downstream_cx_rx_bytes_total', 'counter', 'Bytes received from downstream peers.', public_, rx);
      fams.add('envoy_http_downstream_cx_tx_bytes_total', 'counter', 'Bytes sent to downstream peers.', public_, tx);
    }
    fams.add('envoy_connect_authz_rbac_denied', 'untyped', 'Connections an intention refused.', {}, total[deniedSlot('intention')] as number);
  }
  return fams.text();
}
