// The strict exposition checker (test/helpers/prom-check.ts): a clean text passes, and each
// rule it adds to promtool's is caught in a hand-made broken text.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkMetrics } from '../helpers/prom-check.ts';

const GOOD = `# HELP app_requests_total Requests.
# TYPE app_requests_total counter
app_requests_total{code="200"} 5
app_requests_total{code="500"} 1
# HELP app_duration_seconds Duration.
# TYPE app_duration_seconds histogram
app_duration_seconds_bucket{path="a",le="0.1"} 1
app_duration_seconds_bucket{path="a",le="1"} 3
app_duration_seconds_bucket{path="a",le="+Inf"} 4
app_duration_seconds_sum{path="a"} 2.5
app_duration_seconds_count{path="a"} 4
app_duration_seconds_bucket{path="b",le="0.1"} 0
app_duration_seconds_bucket{path="b",le="1"} 0
app_duration_seconds_bucket{path="b",le="+Inf"} 0
app_duration_seconds_sum{path="b"} 0
app_duration_seconds_count{path="b"} 0
# HELP app_lag_seconds Lag.
# TYPE app_lag_seconds summary
app_lag_seconds{quantile="0.99"} 0.01
app_lag_seconds_sum 1
app_lag_seconds_count 100
# HELP app_info Build.
# TYPE app_info gauge
app_info{version="1.0",note="a \\"quoted\\" \\\\ value\\n"} 1
`;

/** GOOD with `from` replaced by `to` (the replacement must apply). */
function broken(from: string, to: string): string {
  assert.ok(GOOD.includes(from), from);
  return GOOD.replace(from, to);
}

function expectCaught(text: string, pattern: RegExp, opts = {}): void {
  const problems = checkMetrics(text, opts);
  assert.ok(
    problems.some((p) => pattern.test(p)),
    `expected a problem matching ${pattern}, got:\n${problems.join('\n')}`,
  );
}

test('a clean exposition has no problems, with or without the _total rule', () => {
  assert.deepEqual(checkMetrics(GOOD), []);
  assert.deepEqual(checkMetrics(GOOD, { countersEndInTotal: true }), []);
});

test('histogram: +Inf bucket different from _count', () => {
  expectCaught(broken('app_duration_seconds_count{path="a"} 4', 'app_duration_seconds_count{path="a"} 5'), /\+Inf bucket 4 != _count 5/);
});

test('histogram: no +Inf bucket', () => {
  expectCaught(broken('app_duration_seconds_bucket{path="b",le="+Inf"} 0\n', ''), /path="b".*no le="\+Inf" bucket/);
});

test('histogram: le out of order, and le repeated', () => {
  const swapped = broken('app_duration_seconds_bucket{path="a",le="0.1"} 1\napp_duration_seconds_bucket{path="a",le="1"} 3', 'app_duration_seconds_bucket{path="a",le="1"} 1\napp_duration_seconds_bucket{path="a",le="0.1"} 3');
  expectCaught(swapped, /le 0\.1 does not increase after 1/);
  // 1 and 1.0 are the same bound written twice: not a duplicate label set, still not increasing.
  expectCaught(broken('app_duration_seconds_bucket{path="a",le="+Inf"} 4', 'app_duration_seconds_bucket{path="a",le="1.0"} 3\napp_duration_seconds_bucket{path="a",le="+Inf"} 4'), /le 1\.0 does not increase after 1/);
});

test('histogram: a bucket below the one before it (not cumulative)', () => {
  expectCaught(broken('app_duration_seconds_bucket{path="a",le="1"} 3', 'app_duration_seconds_bucket{path="a",le="1"} 0'), /bucket le=1 \(0\) is below le=0\.1 \(1\)/);
});

test('histogram: missing _sum or _count, and a bad le', () => {
  expectCaught(broken('app_duration_seconds_sum{path="a"} 2.5\n', ''), /path="a".*no _sum/);
  expectCaught(broken('app_duration_seconds_count{path="b"} 0\n', ''), /path="b".*no _count/);
  expectCaught(broken('le="0.1"} 1', 'le="fast"} 1'), /no valid le \("fast"\)/);
});

test('duplicate series: the same name and label set twice, whatever the label order', () => {
  expectCaught(broken('app_requests_total{code="500"} 1', 'app_requests_total{code="500"} 1\napp_requests_total{code="200"} 7'), /duplicate series app_requests_total\{code="200"\} \(first at line 3\)/);
  const reordered = GOOD.replace('app_info{version="1.0",note="a \\"quoted\\" \\\\ value\\n"} 1', 'app_info{version="1.0",note="x"} 1\napp_info{note="x",version="1.0"} 2');
  expectCaught(reordered, /duplicate series app_info/);
});

test('a family split into two groups, by samples or by a second HELP block', () => {
  expectCaught(`${GOOD}app_requests_total{code="404"} 2\n`, /family app_requests_total continues after another family began/);
  expectCaught(broken('# HELP app_info Build.\n# TYPE app_info gauge\n', '# HELP app_info Build.\n# TYPE app_info gauge\napp_info{v="0"} 1\n# HELP app_other Other.\n# TYPE app_other gauge\napp_other 1\n'), /family app_info continues/);
});

test('a sample without a TYPE before it, and a second TYPE', () => {
  expectCaught(`app_orphan 1\n${GOOD}`, /sample app_orphan has no TYPE before it/);
  expectCaught(`${GOOD}# TYPE app_info gauge\n`, /second TYPE for app_info/);
});

test('counters must end in _total only when asked (the meshd format; Envoy names do not)', () => {
  const text = '# HELP envoy_cluster_upstream_rq_xx x\n# TYPE envoy_cluster_upstream_rq_xx counter\nenvoy_cluster_upstream_rq_xx 1\n';
  assert.deepEqual(checkMetrics(text), []);
  expectCaught(text, /counter envoy_cluster_upstream_rq_xx does not end in _total/, { countersEndInTotal: true });
});

test('reserved labels on plain families, bad quantiles, malformed lines', () => {
  expectCaught(broken('app_info{version="1.0",', 'app_info{le="1",version="1.0",'), /gauge app_info uses a reserved label/);
  expectCaught(broken('quantile="0.99"', 'quantile="99"'), /needs a quantile in \[0, 1\]/);
  expectCaught(broken('app_requests_total{code="500"} 1', 'app_requests_total{code="500} 1'), /line 4: unterminated label value/);
  expectCaught(broken('app_requests_total{code="500"} 1', 'app_requests_total{code="500"} one'), /bad value one/);
  expectCaught(GOOD.slice(0, -1), /does not end with a newline/);
});
