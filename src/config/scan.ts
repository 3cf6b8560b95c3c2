// Structural checks of config text before anything parses it, so a hostile file or request
// body is refused with a line and column instead of being half-understood:
// - nesting deeper than MAX_CONFIG_DEPTH (the parsers and the block-collapsing pass recurse;
//   no Consul config entry nests more than ~8 levels),
// - a key given twice in one object (JSON.parse and the HCL v1 parser both keep the last one
//   silently, so which value wins would be an accident),
// - a key named `__proto__` (meshd never assigns parsed keys onto objects, but a config key
//   of that name is never meant and is refused rather than carried along),
// - for JSON, any syntax error (JSON.parse's own message has no line number).
// Both scanners are single passes with an explicit stack (no recursion, so depth cannot
// overflow the JS stack) and allocate one small record per open object.
// Runs on: the CLI (files) and the control thread (request bodies), never per data-plane request.

/** Deepest nesting of objects and lists a config document may have. */
export const MAX_CONFIG_DEPTH = 64;

export interface ScanError {
  readonly line: number;
  readonly column: number;
  readonly message: string;
}

/** "line L, column C: message" */
export function formatScanError(e: ScanError): string {
  return `line ${e.line}, column ${e.column}: ${e.message}`;
}

interface Frame {
  readonly kind: 'object' | 'list';
  /** Keys seen in this object, with the line they were first given on. */
  readonly keys: Map<string, number> | null;
}

/** Line and column (1-based) of offset `at`. */
function position(text: string, at: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < at && i < text.length; i++) {
    if (text.charCodeAt(i) === 0x0a) {
      line++;
      lineStart = i + 1;
    }
  }
  return { line, column: at - lineStart + 1 };
}

function errorAt(text: string, at: number, message: string): ScanError {
  return { ...position(text, at), message };
}

function checkKey(text: string, frame: Frame | undefined, key: string, at: number): ScanError | null {
  if (key === '__proto__') return errorAt(text, at, 'a key named "__proto__" is not allowed');
  if (frame?.keys === null || frame === undefined) return null;
  const first = frame.keys.get(key);
  if (first !== undefined) return errorAt(text, at, `duplicate key ${JSON.stringify(key)} (first given on line ${first})`);
  frame.keys.set(key, position(text, at).line);
  return null;
}

const WS = (c: number): boolean => c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d;

/**
 * Checks JSON text: syntax (RFC 8259), depth, duplicate and `__proto__` keys. Returns the
 * first problem, or null when JSON.parse will accept the text and it is safe to use.
 */
export function scanJson(text: string): ScanError | null {
  const stack: Frame[] = [];
  let i = 0;
  const n = text.length;
  const skip = (): void => {
    while (i < n && WS(text.charCodeAt(i))) i++;
  };
  /** Reads a string at i (which is a quote); returns its decoded value or an error. */
  const str = (): string | ScanError => {
    const start = i;
    i++;
    let plain = true;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x22) {
        i++;
        const raw = text.slice(start, i);
        if (plain) return raw.slice(1, -1);
        try {
          return JSON.parse(raw) as string;
        } catch {
          return errorAt(text, start, 'invalid escape in string');
        }
      }
      if (c === 0x5c) {
        plain = false;
        i += 2;
        continue;
      }
      if (c < 0x20) return errorAt(text, i, 'control character in string');
      i++;
    }
    return errorAt(text, start, 'unterminated string');
  };
  const scalar = (): ScanError | null => {
    const m = /^(?:-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|true|false|null)/.exec(text.slice(i, i + 400));
    if (m === null || m[0] === '') return errorAt(text, i, i >= n ? 'unexpected end of input' : `unexpected ${JSON.stringify(text[i])}`);
    i += m[0].length;
    return null;
  };
  /** Parses one value at i; containers push a frame and return (their content is read by the loop). */
  const value = (): ScanError | null => {
    skip();
    const c = text.charCodeAt(i);
    if (c === 0x7b || c === 0x5b) {
      if (stack.length >= MAX_CONFIG_DEPTH) return errorAt(text, i, `nesting deeper than ${MAX_CONFIG_DEPTH} levels`);
      stack.push({ kind: c === 0x7b ? 'object' : 'list', keys: c === 0x7b ? new Map() : null });
      i++;
      skip();
      const close = c === 0x7b ? 0x7d : 0x5d;
      if (text.charCodeAt(i) === close) {
        stack.pop();
        i++;
        return null;
      }
      return c === 0x7b ? member() : value();
    }
    if (c === 0x22) {
      const s = str();
      return typeof s === 'string' ? null : s;
    }
    return scalar();
  };
  /** `"key": value` inside the innermost object. */
  const member = (): ScanError | null => {
    skip();
    if (text.charCodeAt(i) !== 0x22) return errorAt(text, i, i >= n ? 'unexpected end of input' : 'expected a quoted key');
    const at = i;
    const k = str();
    if (typeof k !== 'string') return k;
    const bad = checkKey(text, stack.at(-1), k, at);
    if (bad !== null) return bad;
    skip();
    if (text.charCodeAt(i) !== 0x3a) return errorAt(text, i, 'expected ":" after the key');
    i++;
    return value();
  };

  let err = value();
  while (err === null && stack.length > 0) {
    skip();
    const top = stack.at(-1) as Frame;
    const c = text.charCodeAt(i);
    if (c === 0x2c) {
      i++;
      err = top.kind === 'object' ? member() : value();
    } else if ((top.kind === 'object' && c === 0x7d) || (top.kind === 'list' && c === 0x5d)) {
      stack.pop();
      i++;
    } else {
      err = errorAt(text, i, i >= n ? 'unexpected end of input' : `expected "," or "${top.kind === 'object' ? '}' : ']'}"`);
    }
  }
  if (err !== null) return err;
  skip();
  return i < n ? errorAt(text, i, 'unexpected text after the document') : null;
}

/**
 * Checks HCL v1 text for depth, attributes assigned twice in one block, and `__proto__`
 * keys. Repeated blocks (`Sources { … } Sources { … }`) are HCL's list syntax and stay
 * allowed. Syntax errors are left to the HCL parser, which reports them with positions.
 */
export function scanHcl(text: string): ScanError | null {
  const stack: Frame[] = [{ kind: 'object', keys: new Map() }];
  // At the current object level: the key read for the item being parsed (labels after it are
  // ignored), and whether an `=` was read so the next token is that attribute's value.
  let pending: { key: string; at: number } | null = null;
  let expectValue = false;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (WS(c) || c === 0x2c) {
      i++;
      continue;
    }
    // comments: #, //, /* */
    if (c === 0x23 || (c === 0x2f && text.charCodeAt(i + 1) === 0x2f)) {
      while (i < n && text.charCodeAt(i) !== 0x0a) i++;
      continue;
    }
    if (c === 0x2f && text.charCodeAt(i + 1) === 0x2a) {
      const end = text.indexOf('*/', i + 2);
      i = end < 0 ? n : end + 2;
      continue;
    }
    // heredoc: <<EOF or <<-EOF, up to a line holding only the marker
    if (c === 0x3c && text.charCodeAt(i + 1) === 0x3c) {
      const m = /^<<-?([A-Za-z_][A-Za-z0-9_]*)\r?\n/.exec(text.slice(i, i + 200));
      if (m === null) return errorAt(text, i, 'malformed heredoc');
      const marker = m[1] as string;
      i += m[0].length;
      const re = new RegExp(`^[ \\t]*${marker}[ \\t]*\\r?$`, 'm');
      const rest = re.exec(text.slice(i));
      if (rest === null) return errorAt(text, i, `heredoc not closed by ${marker}`);
      i += rest.index + rest[0].length;
      pending = null;
      expectValue = false;
      continue;
    }
    const top = stack.at(-1) as Frame;
    if (c === 0x22) {
      const start = i;
      i++;
      let interp = 0;
      while (i < n) {
        const d = text.charCodeAt(i);
        if (d === 0x5c) {
          i += 2;
          continue;
        }
        if (d === 0x24 && text.charCodeAt(i + 1) === 0x7b) {
          interp++;
          i += 2;
          continue;
        }
        if (interp > 0 && d === 0x7d) interp--;
        else if (interp === 0 && d === 0x22) break;
        else if (d === 0x0a && interp === 0) return errorAt(text, start, 'unterminated string');
        i++;
      }
      if (i >= n) return errorAt(text, start, 'unterminated string');
      i++;
      if (expectValue) {
        expectValue = false;
        pending = null;
      } else if (top.kind === 'object' && pending === null) {
        let key: string;
        try {
          key = JSON.parse(text.slice(start, i)) as string;
        } catch {
          key = text.slice(start + 1, i - 1);
        }
        pending = { key, at: start };
      }
      continue;
    }
    if (c === 0x3d) {
      // `key = value`: an attribute; the value follows (scalars are skipped as tokens).
      if (top.kind === 'object' && pending !== null) {
        const bad = checkKey(text, top, pending.key, pending.at);
        if (bad !== null) return bad;
      }
      pending = null;
      expectValue = true;
      i++;
      continue;
    }
    if (c === 0x7b || c === 0x5b) {
      if (stack.length > MAX_CONFIG_DEPTH) return errorAt(text, i, `nesting deeper than ${MAX_CONFIG_DEPTH} levels`);
      // A block `key [labels] {`: repeating it is a list, not a duplicate; only its name is checked.
      if (c === 0x7b && pending !== null && pending.key === '__proto__') return errorAt(text, pending.at, 'a key named "__proto__" is not allowed');
      stack.push({ kind: c === 0x7b ? 'object' : 'list', keys: c === 0x7b ? new Map() : null });
      pending = null;
      expectValue = false;
      i++;
      continue;
    }
    if (c === 0x7d || c === 0x5d) {
      if (stack.length > 1) stack.pop();
      pending = null;
      expectValue = false;
      i++;
      continue;
    }
    // identifiers, numbers, booleans, other punctuation: an identifier may be a key
    const m = /^[A-Za-z0-9_.\-:+]+/.exec(text.slice(i, i + 256));
    if (m === null) {
      i++;
      continue;
    }
    if (expectValue) {
      expectValue = false;
      pending = null;
    } else if (top.kind === 'object' && pending === null) {
      pending = { key: m[0], at: i };
    }
    i += m[0].length;
  }
  return null;
}
