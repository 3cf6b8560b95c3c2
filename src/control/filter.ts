// Consul's `?filter=` expressions (go-bexpr) for list endpoints, the subset intention lists
// need: `Field == "value"`, `Field != "value"`, `"value" in Field` / `not in` for maps and
// strings, `and`, `or`, `not`, parentheses. Values are double-quoted strings, or bare numbers
// and words. Selectors are checked against a list of allowed fields, so a typo is a 400
// naming it instead of an empty result. Compiled once per request into a predicate.

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
    if (v === null || typeof v !== 'object') return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

function equals(v: unknown, want: string): boolean {
  if (typeof v === 'number') return String(v) === want;
  if (typeof v === 'boolean') return String(v) === want;
  return v === want;
}

/**
 * Compiles a filter. `fields` are the allowed top-level selectors (`Meta` allows `Meta.<key>`).
 */
export function compileFilter(src: string, fields: readonly string[]): Pred {
  const tokens = tokenize(src);
  let pos = 0;
  const peek = (): Token | undefined => tokens[pos];
  const word = (t: Token | undefined, w: string): boolean => t?.kind === 'word' && t.text.toLowerCase() === w;
  const checkSelector = (t: Token): string => {
    if (t.kind !== 'word') throw new FilterError(`expected a field at ${t.at}, got ${JSON.stringify(t.text)}`);
    const root = t.text.split('.')[0] as string;
    if (!fields.includes(root)) throw new FilterError(`unknown field ${JSON.stringify(t.text)}: use one of ${fields.join(', ')}`);
    return t.text;
  };
  const value = (): string => {
    const t = tokens[pos++];
    if (t === undefined || (t.kind !== 'string' && t.kind !== 'word')) throw new FilterError(`expected a value${t === undefined ? ' at the end' : ` at ${t.at}`}`);
    return t.text;
  };

  const primary = (): Pred => {
    const t = peek();
    if (t === undefined) throw new FilterError('unexpected end of filter');
    if (word(t, 'not')) {
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
    // "value" in Field / "value" not in Field
    if (t.kind === 'string' && (word(tokens[pos + 1], 'in') || (word(tokens[pos + 1], 'not') && word(tokens[pos + 2], 'in')))) {
      const needle = value();
      const negate = word(peek(), 'not');
      pos += negate ? 2 : 1;
      const sel = checkSelector(tokens[pos++] ?? t);
      const p: Pred = (o) => {
        const v = fieldValue(o, sel);
        if (typeof v === 'string') return v.includes(needle);
        if (Array.isArray(v)) return v.includes(needle);
        if (v !== null && typeof v === 'object') return Object.hasOwn(v, needle);
        return false;
      };
      return negate ? (o) => !p(o) : p;
    }
    pos++;
    const sel = checkSelector(t);
    const op = tokens[pos++];
    if (op?.kind !== 'op') throw new FilterError(`expected == or != after ${sel}`);
    const want = value();
    return op.text === '==' ? (o) => equals(fieldValue(o, sel), want) : (o) => !equals(fieldValue(o, sel), want);
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

/** The selectors Consul documents for `/v1/connect/intentions?filter=`. */
export const INTENTION_FILTER_FIELDS = ['Action', 'Description', 'DestinationNS', 'DestinationName', 'ID', 'Meta', 'Precedence', 'SourceNS', 'SourceName', 'SourceType'] as const;
