// Wire decoding at the edge: HTTP bodies are untrusted JSON. Consul decodes keys
// case-insensitively and accepts snake_case aliases (lib/decode in Consul; third-party
// clients send `name`, `Name` or `destination_name`), so lookups here normalise a key by
// lower-casing it and dropping underscores. Every failure is a FieldError that names the
// field, which the API turns into a 400 and which never reaches the store.

import { formatScanError, scanJson } from '../config/scan.ts';

export class FieldError extends Error {
  override readonly name = 'FieldError';
  readonly field: string;
  constructor(field: string, message: string) {
    super(`${field}: ${message}`);
    this.field = field;
  }
}

export type JsonObject = Record<string, unknown>;

/** A UUID in its canonical text form (Consul's IDs: legacy intention IDs, token accessors). */
/** A datacenter name: one lower-case SNI label (it appears in SPIFFE IDs, SNI names and target IDs). */
export const DATACENTER_RE = /^[a-z0-9][a-z0-9_-]{0,62}$/;

export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function norm(key: string): string {
  return key.replaceAll('_', '').toLowerCase();
}

/**
 * JSON.parse without V8's escaped-key bug (nodejs/node#63785, crbug.com/521080746; present in
 * Node 24's V8 13.6 and still in V8 14.6). When an earlier parse left a map transition from
 * the object built so far to a key K, a key written with an escape whose first K.length
 * source characters spell K is read back as K: after `{"\\":0}`, `{"\"":1}` parses as
 * `{"\\":1}`, and so does `{"\n":1}`. Which keys go wrong depends on what the isolate parsed
 * before, so a Meta key such as `"` or a newline could silently change on its way in.
 *
 * Text without a backslash has no escaped key and is parsed natively. Otherwise JSON.parse
 * still checks the syntax (its errors and messages are kept), and the structure is then
 * rebuilt here, with every key and string decoded on its own by JSON.parse (a lone string
 * literal never goes through the key cache).
 */
export function parseJson(text: string): unknown {
  const value: unknown = JSON.parse(text);
  return text.includes('\\') ? rebuildJson(text) : value;
}

type JsonFrame = { readonly target: unknown[] | Record<string, unknown>; key: string };

/** Text JSON.parse has accepted, rebuilt without JSON.parse building objects (no recursion, so any depth). */
function rebuildJson(text: string): unknown {
  let i = 0;
  const fail = (): never => {
    throw new SyntaxError(`Unexpected JSON at position ${i}`);
  };
  const skipSpace = (): void => {
    for (let c = text.charCodeAt(i); c === 0x20 || c === 0x09 || c === 0x0a || c === 0x0d; c = text.charCodeAt(++i));
  };
  const string = (): string => {
    const start = i;
    if (text.charCodeAt(i) !== 0x22) fail();
    for (i++; text.charCodeAt(i) !== 0x22; i += text.charCodeAt(i) === 0x5c ? 2 : 1) if (i >= text.length) fail();
    i++;
    return JSON.parse(text.slice(start, i)) as string;
  };
  const key = (): string => {
    skipSpace();
    const k = string();
    skipSpace();
    if (text[i++] !== ':') fail();
    return k;
  };
  const stack: JsonFrame[] = [];
  for (;;) {
    skipSpace();
    const c = text[i];
    let value: unknown;
    if (c === '{' || c === '[') {
      i++;
      skipSpace();
      const target = c === '{' ? {} : [];
      if (text[i] === (c === '{' ? '}' : ']')) {
        i++;
        value = target;
      } else {
        stack.push({ target, key: c === '{' ? key() : '' });
        continue;
      }
    } else if (c === '"') {
      value = string();
    } else {
      const start = i;
      while (i < text.length && !',]} \t\n\r'.includes(text[i] as string)) i++;
      value = JSON.parse(text.slice(start, i));
    }
    // Store the value, and every container it completes.
    for (;;) {
      const top = stack.at(-1);
      if (top === undefined) {
        skipSpace();
        if (i !== text.length) fail();
        return value;
      }
      const { target } = top;
      if (Array.isArray(target)) target.push(value);
      // As JSON.parse does: a later duplicate wins, and `__proto__` is an own data property.
      else Object.defineProperty(target, top.key, { value, enumerable: true, writable: true, configurable: true });
      skipSpace();
      const d = text[i++];
      if (d === ',') {
        if (!Array.isArray(target)) top.key = key();
        break;
      }
      if (d !== (Array.isArray(target) ? ']' : '}')) fail();
      stack.pop();
      value = target;
    }
  }
}

export function parseJsonObject(text: string, what = 'body'): JsonObject {
  // Depth, duplicate and __proto__ keys, and syntax with a line number (src/config/scan.ts).
  const bad = text.trim() === '' ? null : scanJson(text);
  if (bad !== null) throw new FieldError(what, `invalid JSON: ${formatScanError(bad)}`);
  let value: unknown;
  try {
    value = text.trim() === '' ? {} : parseJson(text);
  } catch (err) {
    throw new FieldError(what, `invalid JSON (${(err as Error).message})`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) throw new FieldError(what, 'must be a JSON object');
  return value as JsonObject;
}

/** Reads a key case-insensitively (and ignoring underscores). */
export function pick(obj: JsonObject, key: string): unknown {
  if (key in obj) return obj[key];
  const want = norm(key);
  for (const k of Object.keys(obj)) if (norm(k) === want) return obj[k];
  return undefined;
}

/** Rejects keys that are not in `allowed` (Consul rejects unknown config keys too). */
export function rejectUnknown(obj: JsonObject, allowed: readonly string[], path: string): void {
  const ok = new Set(allowed.map(norm));
  for (const k of Object.keys(obj)) {
    if (!ok.has(norm(k))) throw new FieldError(path === '' ? k : `${path}.${k}`, 'unknown field');
  }
}

export function optString(obj: JsonObject, key: string, path = key): string | undefined {
  const v = pick(obj, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new FieldError(path, `must be a string, got ${typeof v}`);
  return v;
}

export function reqString(obj: JsonObject, key: string, path = key): string {
  const v = optString(obj, key, path);
  if (v === undefined || v === '') throw new FieldError(path, 'is required');
  return v;
}

export function optNumber(obj: JsonObject, key: string, path = key): number | undefined {
  const v = pick(obj, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new FieldError(path, `must be a number`);
  return v;
}

export function optObject(obj: JsonObject, key: string, path = key): JsonObject | undefined {
  const v = pick(obj, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'object' || Array.isArray(v)) throw new FieldError(path, 'must be an object');
  return v as JsonObject;
}

export function optStringMap(obj: JsonObject, key: string, path = key): Record<string, string> | undefined {
  const o = optObject(obj, key, path);
  if (o === undefined) return undefined;
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(o)) {
    if (typeof v !== 'string') throw new FieldError(`${path}.${k}`, 'must be a string');
    out[k] = v;
  }
  return out;
}

/** Go duration strings as Consul writes them: "10s", "1m30s", "72h", "500ms". */
export function parseDuration(text: string, path: string): number {
  const units: Record<string, number> = { ns: 1e-6, us: 1e-3, µs: 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };
  if (text === '0') return 0;
  const re = /(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)/gy;
  let total = 0;
  let consumed = 0;
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    total += Number(m[1]) * (units[m[2] as string] as number);
    consumed = re.lastIndex;
  }
  if (consumed === 0 || consumed !== text.length) throw new FieldError(path, `invalid duration ${JSON.stringify(text)} (use Go syntax such as "10s", "72h")`);
  return total;
}
