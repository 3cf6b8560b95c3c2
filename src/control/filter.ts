// Consul's `?filter=` expressions (go-bexpr), the subset meshd needs: `Sel == value`,
// `Sel != value`, `value in Sel` / `value not in Sel` (map keys, list members, substrings),
// `Sel contains value` / `not contains` (the same test written the other way round),
// `Sel matches "re"` / `not matches` (RE2), `Sel is empty` / `is not empty`, `and`, `or`,
// `not`, parentheses. Values are double-quoted strings, or bare numbers and words (as
// go-bexpr reads an unquoted value). Selectors are checked when the filter is compiled, so a
// typo is an error naming it instead of an empty result. Two users: the intention list
// endpoints (compileFilter, top-level fields) and service-resolver subsets
// (compileHealthFilter, over the health endpoint's entry shape). Compiled once into a
// predicate; regexes go through re2js, never `new RegExp`.

import { RE2JS } from 're2js';

export class FilterError extends Error {
  override readonly name = 'FilterError';
}

type Pred = (obj: Record<string, unknown>) => boolean;

interface Token {
  readonly kind: 'word' | 'string' | 'op' | 'lparen' | 'rparen';
  readonly text: string;
  readonly at: number;
}

function tokenize(src: string): Token[] {
  const out: Token[] = [];
  let i = 0;
  while (i < src.length) {
    const c = src[i] as string;
    if (c === ' ' || c === '\t' || c === '\n') {
      i++;
    } else if (c === '(' || c === ')') {
      out.push({ kind: c === '(' ? 'lparen' : 'rparen', text: c, at: i });
      i++;
    } else if (c === '"') {
      let j = i + 1;
      let text = '';
      while (j < src.length && src[j] !== '"') {
        if (src[j] === '\\' && j + 1 < src.length) j++;
        text += src[j] as string;
        j++;
      }
      if (j >= src.length) throw new FilterError(`unterminated string starting at ${i}`);
      out.push({ kind: 'string', text, at: i });
      i = j + 1;
    } else if (src.startsWith('==', i) || src.startsWith('!=', i)) {
      out.push({ kind: 'op', text: src.slice(i, i + 2), at: i });
      i += 2;
    } else {
      const m = /^[A-Za-z0-9_.\-*/]+/.exec(src.slice(i));
      if (m === null) throw new FilterError(`unexpected ${JSON.stringify(c)} at ${i}`);
      out.push({ kind: 'word', text: m[0], at: i });
      i += m[0].length;
    }
  }
  return out;
}

function fieldValue(obj: Record<string, unknown>, selector: string): unknown {
  let v: unknown = obj;
  for (const part of selector.split('.')) {
    if (v === null || typeof v !== 'object' || !Object.hasOwn(v, part)) return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

function equals(v: unknown, want: string): boolean {
  if (typeof v === 'number') return String(v) === want;
  if (typeof v === 'boolean') return String(v) === want;
  return v === want;
}

function isEmptyValue(v: unknown): boolean {
  if (v === undefined || v === null || v === '') return true;
  if (Array.isArray(v)) return v.length === 0;
  if (typeof v === 'object') return Object.keys(v).length === 0;
  return false;
}

function contains(v: unknown, needle: string): boolean {
  if (typeof v === 'string') return v.includes(needle);
  if (Array.isArray(v)) return v.includes(needle);
  if (v !== null && typeof v === 'object') return Object.hasOwn(v, needle);
  return false;
}

function compileRegex(pattern: string): RE2JS {
  try {
    return RE2JS.compile(pattern);
  } catch (err) {
    throw new FilterError(`invalid regular expression ${JSON.stringify(pattern)}: ${(err as Error).message}`);
  }
}

/** Checks a selector (throws FilterError for one the caller does not allow) and returns it. */
type SelectorCheck = (selector: string, at: number) => string;

function compileWith(src: string, checkSelector: SelectorCheck): Pred {
  const tokens = tokenize(src);
  let pos = 0;
  const peek = (): Token | undefined => tokens[pos];
  const word = (t: Token | undefined, w: string): boolean => t?.kind === 'word' && t.text.toLowerCase() === w;
  const selector = (t: Token | undefined): string => {
    if (t === undefined) throw new FilterError('expected a field at the end');
    if (t.kind !== 'word') throw new FilterError(`expected a field at ${t.at}, got ${JSON.stringify(t.text)}`);
    return checkSelector(t.text, t.at);
  };
  const value = (): string => {
    const t = tokens[pos++];
    if (t === undefined || (t.kind !== 'string' && t.kind !== 'word')) throw new FilterError(`expected a value${t === undefined ? ' at the end' : ` at ${t.at}`}`);
    return t.text;
  };
  const negated = (inner: Pred, negate: boolean): Pred => (negate ? (o) => !inner(o) : inner);

  const primary = (): Pred => {
    const t = peek();
    if (t === undefined) throw new FilterError('unexpected end of filter');
    if (word(t, 'not') && !word(tokens[pos + 1], 'in')) {
      pos++;
      const inner = primary();
      return (o) => !inner(o);
    }
    if (t.kind === 'lparen') {
      pos++;
      const inner = or();
      if (peek()?.kind !== 'rparen') throw new FilterError(`missing ")" for "(" at ${t.at}`);
      pos++;
      return inner;
    }
    // value in Selector / value not in Selector
    const next = tokens[pos + 1];
    if ((t.kind === 'string' || t.kind === 'word') && (word(next, 'in') || (word(next, 'not') && word(tokens[pos + 2], 'in')))) {
      const needle = value();
      const negate = word(peek(), 'not');
      pos += negate ? 2 : 1;
      const sel = selector(tokens[pos++]);
      return negated((o) => contains(fieldValue(o, sel), needle), negate);
    }
    pos++;
    const sel = selector(t);
    const op = tokens[pos++];
    if (op?.kind === 'op') {
      const want = value();
      return op.text === '==' ? (o) => equals(fieldValue(o, sel), want) : (o) => !equals(fieldValue(o, sel), want);
    }
    if (word(op, 'is')) {
      const negate = word(peek(), 'not');
      if (negate) pos++;
      if (!word(tokens[pos++], 'empty')) throw new FilterError(`expected "empty" after "is" following ${sel}`);
      return negated((o) => isEmptyValue(fieldValue(o, sel)), negate);
    }
    const negate = word(op, 'not');
    const verb = negate ? tokens[pos++] : op;
    if (word(verb, 'contains')) {
      const needle = value();
      return negated((o) => contains(fieldValue(o, sel), needle), negate);
    }
    if (word(verb, 'matches')) {
      const re = compileRegex(value());
      return negated((o) => {
        const v = fieldValue(o, sel);
        return typeof v === 'string' && re.matcher(v).find();
      }, negate);
    }
    throw new FilterError(`expected ==, !=, contains, matches or is after ${sel}`);
  };
  const and = (): Pred => {
    let left = primary();
    while (word(peek(), 'and')) {
      pos++;
      const l = left;
      const r = primary();
      left = (o) => l(o) && r(o);
    }
    return left;
  };
  const or = (): Pred => {
    let left = and();
    while (word(peek(), 'or')) {
      pos++;
      const l = left;
      const r = and();
      left = (o) => l(o) || r(o);
    }
    return left;
  };
  const pred = or();
  const rest = peek();
  if (rest !== undefined) throw new FilterError(`unexpected ${JSON.stringify(rest.text)} at ${rest.at}`);
  return pred;
}

/**
 * Compiles a filter. `fields` are the allowed top-level selectors (`Meta` allows `Meta.<key>`).
 */
export function compileFilter(src: string, fields: readonly string[]): Pred {
  return compileWith(src, (sel) => {
    const root = sel.split('.')[0] as string;
    if (!fields.includes(root)) throw new FilterError(`unknown field ${JSON.stringify(sel)}: use one of ${fields.join(', ')}`);
    return sel;
  });
}

/**
 * The selectors of a health entry (`GET /v1/health/service/:name`) a filter may use: plain
 * fields, and maps whose keys follow (`Service.Meta.<key>`). `Checks`, a list of objects, is
 * not selectable here.
 */
const HEALTH_FIELDS: readonly string[] = [
  'Node.ID', 'Node.Node', 'Node.Address', 'Node.Datacenter',
  'Service.ID', 'Service.Service', 'Service.Tags', 'Service.Address', 'Service.Port', 'Service.Kind', 'Service.EnableTagOverride',
  'Service.Weights.Passing', 'Service.Weights.Warning',
];
const HEALTH_MAPS: readonly string[] = ['Node.Meta', 'Node.TaggedAddresses', 'Service.Meta'];

/** The shape compileHealthFilter's predicate reads (extra fields are ignored). */
export type HealthFilterEntry = {
  readonly Node?: Readonly<Record<string, unknown>>;
  readonly Service: { readonly Tags: readonly string[]; readonly Meta: Readonly<Record<string, string>>; readonly [k: string]: unknown };
  readonly [k: string]: unknown;
};

/**
 * Compiles a service-resolver subset filter (go-bexpr over the health entry, such as
 * `Service.Meta.version == v1 and "canary" in Service.Tags`). Throws FilterError for a syntax
 * error or a selector the health entry does not have.
 */
export function compileHealthFilter(src: string): (entry: HealthFilterEntry) => boolean {
  const pred = compileWith(src, (sel, at) => {
    if (HEALTH_FIELDS.includes(sel)) return sel;
    for (const m of HEALTH_MAPS) {
      if (sel === m) return sel;
      if (sel.startsWith(`${m}.`) && sel.length > m.length + 1) return sel;
    }
    throw new FilterError(`unknown selector ${JSON.stringify(sel)} at ${at}: use Service.Tags, Service.Meta.<key>, Service.ID, Service.Service, Service.Address, Service.Port, Node.Node, Node.Meta.<key>, ...`);
  });
  return (entry) => pred(entry);
}

/** The selectors Consul documents for `/v1/connect/intentions?filter=`. */
export const INTENTION_FILTER_FIELDS = ['Action', 'Description', 'DestinationNS', 'DestinationName', 'ID', 'Meta', 'Precedence', 'SourceNS', 'SourceName', 'SourceType'] as const;
