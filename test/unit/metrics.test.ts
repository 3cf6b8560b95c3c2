import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  BLOCK_SLOTS,
  DENY_REASONS,
  DIRECTIONS,
  FAMILIES,
  HANDSHAKE_REASONS,
  S,
  SLOTS,
  allocateCounters,
  counterBlock,
  deniedSlot,
  handshakeSlot,
} from '../../src/metrics/counters.ts';
import { renderPrometheus, sumBlocks } from '../../src/metrics/prometheus.ts';

interface Sample {
  readonly name: string;
  readonly labels: Record<string, string>;
  readonly value: number;
  readonly line: number;
}

interface Exposition {
  readonly samples: Sample[];
  readonly types: Map<string, { type: string; line: number }>;
  readonly helps: Map<string, number>;
}

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

/** A strict reader for Prometheus text format 0.0.4: throws on anything malformed. */
function parseExposition(text: string): Exposition {
  assert.ok(text.endsWith('\n'), 'exposition must end with a newline');
  const samples: Sample[] = [];
  const types = new Map<string, { type: string; line: number }>();
  const helps = new Map<string, number>();
  const lines = text.slice(0, -1).split('\n');
  lines.forEach((line, n) => {
    if (line.startsWith('# HELP ')) {
      const m = /^# HELP (\S+) (.*)$/.exec(line);
      assert.ok(m !== null, `bad HELP line ${n}: ${line}`);
      const name = m[1] as string;
      assert.ok(!helps.has(name), `duplicate HELP for ${name}`);
      helps.set(name, n);
      return;
    }
    if (line.startsWith('# TYPE ')) {
      const m = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      assert.ok(m !== null, `bad TYPE line ${n}: ${line}`);
      const name = m[1] as string;
      assert.ok(!types.has(name), `duplicate TYPE for ${name}`);
      assert.ok(!samples.some((s) => s.name === name), `TYPE for ${name} after its samples`);
      types.set(name, { type: m[2] as string, line: n });
      return;
    }
    assert.ok(!line.startsWith('#'), `unexpected comment line ${n}: ${line}`);
    assert.notEqual(line, '', `empty line ${n}`);
    // name{labels} value
    let i = 0;
    while (i < line.length && line[i] !== '{' && line[i] !== ' ') i++;
    const name = line.slice(0, i);
    assert.match(name, NAME_RE, `bad metric name on line ${n}: ${line}`);
    const labels: Record<string, string> = {};
    if (line[i] === '{') {
      i++;
      while (line[i] !== '}') {
        let j = i;
        while (j < line.length && line[j] !== '=') j++;
        const lname = line.slice(i, j);
        assert.match(lname, LABEL_NAME_RE, `bad label name on line ${n}: ${line}`);
        assert.equal(line[j + 1], '"', `label value not quoted on line ${n}`);
        j += 2;
        let value = '';
        for (;;) {
          const c = line[j];
          assert.ok(c !== undefined, `unterminated label value on line ${n}`);
          if (c === '"') break;
          if (c === '\\') {
            const e = line[j + 1];
            if (e === '\\') value += '\\';
            else if (e === '"') value += '"';
            else if (e === 'n') value += '\n';
            else assert.fail(`bad escape \\${String(e)} on line ${n}`);
            j += 2;
            continue;
          }
          value += c;
          j++;
        }
        assert.ok(!(lname in labels), `duplicate label ${lname} on line ${n}`);
        labels[lname] = value;
        j++;
        if (line[j] === ',') j++;
        else assert.equal(line[j], '}', `expected , or } on line ${n}`);
        i = j;
      }
      i++;
    }
    assert.equal(line[i], ' ', `expected a space before the value on line ${n}: ${line}`);
    const raw = line.slice(i + 1);
    assert.match(raw, /^(?:[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|NaN|[+-]Inf)$/, `bad value on line ${n}: ${line}`);
    samples.push({ name, labels, value: Number(raw), line: n });
  });
  return { samples, types, helps };
}

function seriesKey(s: Pick<Sample, 'name' | 'labels'>): string {
  return `${s.name}${JSON.stringify(Object.entries(s.labels).sort())}`;
}

function block(fill: (i: number) => number): Float64Array {
  const b = new Float64Array(BLOCK_SLOTS);
  for (let i = 0; i < BLOCK_SLOTS; i++) b[i] = fill(i);
  return b;
}

function familyKeyOf(metric: string): string | undefined {
  return Object.entries(FAMILIES).find(([, f]) => f.name === metric)?.[0];
}

test('every slot belongs to a family, and each family\'s slots have distinct label sets', () => {
  assert.equal(SLOTS.length, BLOCK_SLOTS);
  const seen = new Set<string>();
  for (const s of SLOTS) {
    assert.ok(s.family in FAMILIES, `slot family ${s.family} has no FAMILIES entry`);
    const key = `${s.family}${JSON.stringify(Object.entries(s.labels).sort())}`;
    assert.ok(!seen.has(key), `two slots for ${key}`);
    seen.add(key);
  }
  // Every family has at least one slot.
  for (const key of Object.keys(FAMILIES)) assert.ok(SLOTS.some((s) => s.family === key), key);
});

test('named slot indexes are unique, in range, and label-correct', () => {
  const named: [number, string, Record<string, string>][] = [
    [S.ACCEPTED_IN, 'accepted', { direction: 'inbound' }],
    [S.ACCEPTED_OUT, 'accepted', { direction: 'outbound' }],
    [S.CLOSED_IN, 'closed', { direction: 'inbound' }],
    [S.CLOSED_OUT, 'closed', { direction: 'outbound' }],
    [S.RX_IN, 'rx', { direction: 'inbound' }],
    [S.TX_IN, 'tx', { direction: 'inbound' }],
    [S.RX_OUT, 'rx', { direction: 'outbound' }],
    [S.TX_OUT, 'tx', { direction: 'outbound' }],
    [S.IDLE_IN, 'idle', { direction: 'inbound' }],
    [S.IDLE_OUT, 'idle', { direction: 'outbound' }],
    ...DENY_REASONS.map((r): [number, string, Record<string, string>] => [deniedSlot(r), 'denied', { reason: r }]),
    ...HANDSHAKE_REASONS.map((r): [number, string, Record<string, string>] => [handshakeSlot(r), 'handshake', { reason: r }]),
  ];
  const indexes = named.map(([i]) => i);
  assert.equal(new Set(indexes).size, indexes.length, 'slot indexes collide');
  assert.deepEqual([...indexes].sort((a, b) => a - b), Array.from({ length: BLOCK_SLOTS }, (_, i) => i), 'named slots cover the block exactly');
  for (const [i, family, labels] of named) {
    assert.equal(SLOTS[i]?.family, family, `slot ${i}`);
    assert.deepEqual(SLOTS[i]?.labels, labels, `slot ${i}`);
  }
  assert.throws(() => deniedSlot('nope' as never), /no metric slot/);
});

test('counter blocks of different workers do not overlap', () => {
  const buf = allocateCounters(3);
  assert.equal(buf.byteLength, 3 * BLOCK_SLOTS * 8);
  const blocks = [0, 1, 2].map((w) => counterBlock(buf, w));
  (blocks[1] as Float64Array)[S.ACCEPTED_IN] = 7;
  (blocks[2] as Float64Array)[BLOCK_SLOTS - 1] = 9;
  assert.equal(blocks[0]?.[S.ACCEPTED_IN], 0);
  assert.equal(blocks[0]?.[BLOCK_SLOTS - 1], 0);
  assert.equal(blocks[1]?.[BLOCK_SLOTS - 1], 0);
  assert.equal(blocks[2]?.[0], 0);
  const total = sumBlocks(blocks);
  assert.equal(total[S.ACCEPTED_IN], 7);
  assert.equal(total[BLOCK_SLOTS - 1], 9);
  assert.equal([...total].filter((v) => v !== 0).length, 2);
});

test('renderPrometheus sums two blocks slot by slot', () => {
  const a = block((i) => i + 1);
  const b = block((i) => 1000 * (i + 1));
  const exp = parseExposition(renderPrometheus([a, b], {}));
  SLOTS.forEach((s, i) => {
    const fam = FAMILIES[s.family];
    assert.ok(fam !== undefined);
    const found = exp.samples.filter((x) => x.name === fam.name && JSON.stringify(x.labels) === JSON.stringify(s.labels));
    assert.equal(found.length, 1, `${fam.name}${JSON.stringify(s.labels)}`);
    assert.equal(found[0]?.value, 1001 * (i + 1), `${fam.name}${JSON.stringify(s.labels)}`);
  });
});

test('renderPrometheus output is valid text format 0.0.4 with one HELP/TYPE per family and no duplicate series', () => {
  const exp = parseExposition(renderPrometheus([block(() => 1), block(() => 2), block(() => 3)], { node: 'n1' }));
  const seen = new Set<string>();
  for (const s of exp.samples) {
    const t = exp.types.get(s.name);
    assert.ok(t !== undefined, `${s.name} has no # TYPE line`);
    assert.ok(t.line < s.line, `${s.name}: TYPE after the sample`);
    assert.ok(exp.helps.has(s.name), `${s.name} has no # HELP line`);
    if (t.type === 'counter') assert.ok(s.name.endsWith('_total'), `counter ${s.name} does not end in _total`);
    const key = seriesKey(s);
    assert.ok(!seen.has(key), `duplicate series ${key}`);
    seen.add(key);
    assert.equal(s.labels.node, 'n1', 'extra labels are on every sample');
  }
  // Every declared family has samples, and the families from FAMILIES keep their type.
  for (const name of exp.types.keys()) assert.ok(exp.samples.some((s) => s.name === name), `${name} declared without samples`);
  for (const f of Object.values(FAMILIES)) assert.equal(exp.types.get(f.name)?.type, f.type);
  assert.equal(exp.types.get('meshd_connections_active')?.type, 'gauge');
  // Samples of one family are contiguous (a family is not split by another family's lines).
  const order = exp.samples.map((s) => s.name).filter((n, i, arr) => i === 0 || arr[i - 1] !== n);
  assert.equal(new Set(order).size, order.length, `families are interleaved: ${order.join(', ')}`);
});

test('meshd_connections_active is accepted - closed per direction over all blocks', () => {
  const a = new Float64Array(BLOCK_SLOTS);
  const b = new Float64Array(BLOCK_SLOTS);
  a[S.ACCEPTED_IN] = 10;
  a[S.CLOSED_IN] = 4;
  b[S.ACCEPTED_IN] = 5;
  b[S.CLOSED_IN] = 5;
  a[S.ACCEPTED_OUT] = 3;
  b[S.CLOSED_OUT] = 1;
  a[S.RX_IN] = 999; // bytes must not leak into the gauge
  const exp = parseExposition(renderPrometheus([a, b], {}));
  const active = exp.samples.filter((s) => s.name === 'meshd_connections_active');
  assert.deepEqual(
    active.map((s) => [s.labels.direction, s.value]),
    [
      ['inbound', 6],
      ['outbound', 2],
    ],
  );
});

test('the per-worker family has one series per block with that block\'s accepted (in + out)', () => {
  const blocks = [0, 1, 2, 3].map((w) => {
    const b = new Float64Array(BLOCK_SLOTS);
    b[S.ACCEPTED_IN] = w * 10;
    b[S.ACCEPTED_OUT] = w;
    b[S.CLOSED_IN] = 100; // not part of this family
    return b;
  });
  const exp = parseExposition(renderPrometheus(blocks, {}));
  const per = exp.samples.filter((s) => s.name === 'meshd_worker_connections_accepted_total');
  assert.deepEqual(
    per.map((s) => [s.labels.worker, s.value]),
    [
      ['0', 0],
      ['1', 11],
      ['2', 22],
      ['3', 33],
    ],
  );
  // No blocks: no per-worker series, but the output is still valid.
  const empty = parseExposition(renderPrometheus([], {}));
  assert.equal(empty.samples.filter((s) => s.name === 'meshd_worker_connections_accepted_total').length, 0);
  assert.ok(empty.samples.every((s) => s.value === 0));
});

test('label values escape " and \\ (and newlines) and round-trip through a strict reader', () => {
  const tricky = 'a"b\\c\nd\\"';
  const text = renderPrometheus([new Float64Array(BLOCK_SLOTS)], { node: tricky });
  assert.ok(text.includes('node="a\\"b\\\\c\\nd\\\\\\""'), 'escaped form');
  const exp = parseExposition(text);
  for (const s of exp.samples) assert.equal(s.labels.node, tricky);
});

test('extra gauges are rendered with HELP/TYPE and extra labels', () => {
  const exp = parseExposition(
    renderPrometheus([new Float64Array(BLOCK_SLOTS)], { node: 'n' }, [
      { name: 'meshd_policy_generation', help: 'Table generation.', type: 'gauge', samples: [{ labels: {}, value: 7 }] },
      { name: 'meshd_upstreams', help: 'Upstreams.', type: 'gauge', samples: [{ labels: { upstream: 'a' }, value: 1 }, { labels: { upstream: 'b' }, value: 2 }] },
    ]),
  );
  assert.deepEqual(exp.samples.filter((s) => s.name === 'meshd_policy_generation').map((s) => [s.labels, s.value]), [[{ node: 'n' }, 7]]);
  assert.deepEqual(exp.samples.filter((s) => s.name === 'meshd_upstreams').map((s) => s.labels.upstream), ['a', 'b']);
});

test('property: for random counter values the exposition is valid and sums match', () => {
  const counter = fc.nat({ max: 2 ** 40 });
  fc.assert(
    fc.property(fc.array(fc.array(counter, { minLength: BLOCK_SLOTS, maxLength: BLOCK_SLOTS }), { minLength: 1, maxLength: 4 }), (raw) => {
      const blocks = raw.map((vals) => Float64Array.from(vals));
      const exp = parseExposition(renderPrometheus(blocks, {}));
      const keys = new Set(exp.samples.map(seriesKey));
      assert.equal(keys.size, exp.samples.length);
      SLOTS.forEach((s, i) => {
        const fam = FAMILIES[s.family];
        const sample = exp.samples.find((x) => x.name === fam?.name && JSON.stringify(x.labels) === JSON.stringify(s.labels));
        assert.equal(sample?.value, raw.reduce((acc, vals) => acc + (vals[i] as number), 0));
        assert.equal(familyKeyOf(sample?.name ?? ''), s.family);
      });
      for (const d of DIRECTIONS) {
        const acc = raw.reduce((t, v) => t + (v[d === 'inbound' ? S.ACCEPTED_IN : S.ACCEPTED_OUT] as number), 0);
        const clo = raw.reduce((t, v) => t + (v[d === 'inbound' ? S.CLOSED_IN : S.CLOSED_OUT] as number), 0);
        assert.equal(exp.samples.find((x) => x.name === 'meshd_connections_active' && x.labels.direction === d)?.value, acc - clo);
      }
    }),
    { numRuns: 50 },
  );
});
