// A strict checker for Prometheus text format 0.0.4, for the rules `promtool check metrics`
// (2.42) lets through: histogram invariants, duplicate series, families split into several
// groups, samples without a TYPE, and (optionally) counters without `_total`.
// It returns every problem found, one line each; `assertStrictMetrics` fails on any.

import assert from 'node:assert/strict';

export interface CheckOptions {
  /** Every counter's name must end in `_total` (the meshd format; Envoy's names do not). */
  readonly countersEndInTotal?: boolean;
}

interface Sample {
  readonly name: string;
  readonly labels: ReadonlyMap<string, string>;
  readonly value: number;
  readonly line: number;
}

const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL_RE = /^[a-zA-Z_][a-zA-Z0-9_]*$/;
const TYPES = new Set(['counter', 'gauge', 'histogram', 'summary', 'untyped']);

/** Parses one sample line; throws a message on malformed text. */
function parseSample(text: string, line: number): Sample {
  const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(text);
  if (m === null) throw new Error('bad metric name');
  const name = m[1] as string;
  let i = name.length;
  const labels = new Map<string, string>();
  if (text[i] === '{') {
    i++;
    while (text[i] !== '}') {
      const lm = /^([a-zA-Z_][a-zA-Z0-9_]*)="/.exec(text.slice(i));
      if (lm === null) throw new Error('bad label');
      const key = lm[1] as string;
      i += lm[0].length;
      let value = '';
      for (;;) {
        const c = text[i];
        if (c === undefined) throw new Error('unterminated label value');
        if (c === '"') break;
        if (c === '\\') {
          const e = text[i + 1];
          if (e === '\\') value += '\\';
          else if (e === '"') value += '"';
          else if (e === 'n') value += '\n';
          else throw new Error(`bad escape \\${e ?? ''}`);
          i += 2;
        } else {
          value += c;
          i++;
        }
      }
      i++;
      if (labels.has(key)) throw new Error(`label ${key} twice`);
      labels.set(key, value);
      if (text[i] === ',') i++;
      else if (text[i] !== '}') throw new Error('expected , or } after a label');
    }
    i++;
  }
  const rest = text.slice(i);
  const vm = /^ (\S+)( -?\d+)?$/.exec(rest);
  if (vm === null) throw new Error('expected " value [timestamp]"');
  const raw = vm[1] as string;
  const value = raw === '+Inf' ? Infinity : raw === '-Inf' ? -Infinity : raw === 'NaN' ? NaN : Number(raw);
  if (Number.isNaN(value) && raw !== 'NaN') throw new Error(`bad value ${raw}`);
  return { name, labels, value, line };
}

function seriesKey(name: string, labels: ReadonlyMap<string, string>, without?: string): string {
  const parts = [...labels].filter(([k]) => k !== without).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `${name}{${parts.map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(',')}}`;
}

function parseLe(v: string | undefined): number {
  if (v === undefined) return NaN;
  if (v === '+Inf') return Infinity;
  return /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v) ? Number(v) : NaN;
}

/** Every rule broken by `text`, as readable lines (empty when clean). */
export function checkMetrics(text: string, opts: CheckOptions = {}): string[] {
  const problems: string[] = [];
  if (text !== '' && !text.endsWith('\n')) problems.push('the text does not end with a newline');
  const types = new Map<string, string>();
  const helps = new Set<string>();
  const closed = new Set<string>();
  const samples = new Map<string, Sample[]>();
  const seen = new Map<string, number>();
  let current: string | null = null;

  const enter = (family: string, line: number): void => {
    if (family === current) return;
    if (closed.has(family)) problems.push(`line ${line}: family ${family} continues after another family began (split into two groups)`);
    if (current !== null) closed.add(current);
    current = family;
  };
  /** The family a sample name belongs to, by the TYPE lines seen so far. */
  const familyOf = (name: string): string | null => {
    if (types.has(name)) return name;
    for (const suffix of ['_bucket', '_sum', '_count']) {
      if (!name.endsWith(suffix)) continue;
      const stem = name.slice(0, -suffix.length);
      const t = types.get(stem);
      if (t === 'histogram' || (t === 'summary' && suffix !== '_bucket')) return stem;
    }
    return null;
  };

  text.split('\n').forEach((raw, idx) => {
    const line = idx + 1;
    if (raw === '') return;
    if (raw.startsWith('#')) {
      const m = /^# (HELP|TYPE) (\S+)(?: (.*))?$/.exec(raw);
      if (m === null) return; // a plain comment
      const [, kind, name = '', arg = ''] = m;
      if (!NAME_RE.test(name)) problems.push(`line ${line}: bad metric name ${JSON.stringify(name)}`);
      if (kind === 'HELP') {
        if (helps.has(name)) problems.push(`line ${line}: second HELP for ${name}`);
        helps.add(name);
        enter(name, line);
        return;
      }
      if (types.has(name)) problems.push(`line ${line}: second TYPE for ${name}`);
      if (!TYPES.has(arg)) problems.push(`line ${line}: unknown type ${JSON.stringify(arg)} for ${name}`);
      if (samples.has(name)) problems.push(`line ${line}: TYPE for ${name} comes after its samples`);
      types.set(name, arg);
      enter(name, line);
      if (opts.countersEndInTotal === true && arg === 'counter' && !name.endsWith('_total')) problems.push(`line ${line}: counter ${name} does not end in _total`);
      return;
    }
    let s: Sample;
    try {
      s = parseSample(raw, line);
    } catch (err) {
      problems.push(`line ${line}: ${(err as Error).message}: ${raw}`);
      return;
    }
    for (const k of s.labels.keys()) if (!LABEL_RE.test(k) || k.startsWith('__')) problems.push(`line ${line}: bad label name ${k}`);
    const family = familyOf(s.name);
    if (family === null) {
      problems.push(`line ${line}: sample ${s.name} has no TYPE before it`);
      return;
    }
    enter(family, line);
    const key = seriesKey(s.name, s.labels);
    const dup = seen.get(key);
    if (dup !== undefined) problems.push(`line ${line}: duplicate series ${key} (first at line ${dup})`);
    else seen.set(key, line);
    const list = samples.get(family) ?? [];
    list.push(s);
    samples.set(family, list);
  });

  for (const [family, type] of types) {
    const list = samples.get(family) ?? [];
    if (type === 'histogram') problems.push(...checkHistogram(family, list));
    else if (type === 'summary') {
      for (const s of list) {
        if (s.name !== family) continue;
        const q = parseLe(s.labels.get('quantile'));
        if (!(q >= 0 && q <= 1)) problems.push(`line ${s.line}: summary ${family} sample needs a quantile in [0, 1]`);
      }
    } else {
      for (const s of list) if (s.labels.has('le') || s.labels.has('quantile')) problems.push(`line ${s.line}: ${type} ${family} uses a reserved label (le/quantile)`);
    }
    if (type === 'counter') for (const s of list) if (s.value < 0) problems.push(`line ${s.line}: counter ${family} is negative`);
  }
  return problems;
}

function checkHistogram(family: string, list: readonly Sample[]): string[] {
  const problems: string[] = [];
  interface Group {
    buckets: { le: number; raw: string; value: number; line: number }[];
    sum?: number;
    count?: number;
    line: number;
  }
  const groups = new Map<string, Group>();
  const group = (s: Sample): Group => {
    const key = seriesKey(family, s.labels, 'le');
    let g = groups.get(key);
    if (g === undefined) {
      g = { buckets: [], line: s.line };
      groups.set(key, g);
    }
    return g;
  };
  for (const s of list) {
    if (s.name === `${family}_bucket`) {
      const raw = s.labels.get('le');
      const le = parseLe(raw);
      if (Number.isNaN(le)) {
        problems.push(`line ${s.line}: ${family}_bucket has no valid le (${JSON.stringify(raw ?? null)})`);
        continue;
      }
      group(s).buckets.push({ le, raw: raw ?? '', value: s.value, line: s.line });
    } else if (s.name === `${family}_sum`) group(s).sum = s.value;
    else if (s.name === `${family}_count`) group(s).count = s.value;
    else problems.push(`line ${s.line}: histogram ${family} has a sample named ${s.name}`);
  }
  for (const [key, g] of groups) {
    const b = g.buckets;
    for (let i = 1; i < b.length; i++) {
      const prev = b[i - 1] as (typeof b)[number];
      const cur = b[i] as (typeof b)[number];
      if (!(cur.le > prev.le)) problems.push(`line ${cur.line}: ${key}: le ${cur.raw} does not increase after ${prev.raw}`);
      if (cur.value < prev.value) problems.push(`line ${cur.line}: ${key}: bucket le=${cur.raw} (${cur.value}) is below le=${prev.raw} (${prev.value})`);
    }
    const inf = b.find((x) => x.le === Infinity);
    if (inf === undefined) problems.push(`line ${g.line}: ${key}: no le="+Inf" bucket`);
    if (g.count === undefined) problems.push(`line ${g.line}: ${key}: no _count`);
    if (g.sum === undefined) problems.push(`line ${g.line}: ${key}: no _sum`);
    if (inf !== undefined && g.count !== undefined && inf.value !== g.count) problems.push(`line ${inf.line}: ${key}: +Inf bucket ${inf.value} != _count ${g.count}`);
  }
  return problems;
}

export function assertStrictMetrics(text: string, opts: CheckOptions = {}): void {
  const problems = checkMetrics(text, opts);
  assert.deepEqual(problems, [], `strict metrics check:\n${problems.join('\n')}`);
}
