// Reading Consul config-entry documents (JSON, or HCL1 after block collapsing) the way
// Consul's decoder does: keys match case-insensitively with underscores ignored (so
// `PathPrefix`, `pathprefix` and `path_prefix` are one key), unknown keys are an error
// (`invalid config key "X"`), and lists and single values convert both ways as Consul's
// weak decoding does: a one-element list stands for its element where the schema wants one
// value or object (lib/decode's HookWeakDecodeFromSlice, which is how HCL1 blocks, decoded
// as lists, become objects), an empty list for nothing, and a lone value for a one-element
// list where the schema wants a list (mapstructure's WeaklyTypedInput). So a JSON body sent
// to the API decodes like the same document read from an HCL file, and `Header`, an object
// under `Locations[]` but a list under `HTTP`, comes out right either way.
//
// Scalars are strict: a string field takes a string, a bool a boolean, an integer a whole
// number. Consul would also coerce "30" into 30; nobody writes config that way on purpose,
// and a typo that parses is worse than an error.
//
// Every failure is a FieldError naming the field by its canonical (PascalCase) path, such as
// `Sources[1].Permissions[0].HTTP.PathPrefix`, whatever spelling the document used.
// Runs on: the CLI and the control thread, at config write time only.

import { FieldError } from '../control/decode.ts';

export function normKey(key: string): string {
  return key.replaceAll('_', '').toLowerCase();
}

export function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** `a.b`, or `b` at the root. */
export function fieldPath(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`;
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  if (typeof v === 'object') return 'an object';
  if (typeof v !== 'string' && typeof v !== 'number' && typeof v !== 'boolean') return typeof v;
  const shown = JSON.stringify(v);
  return `${typeof v} ${shown.length > 64 ? `${shown.slice(0, 60)}...` : shown}`;
}

/** Sets a property as data even when it is named `__proto__`. */
export function defineData(obj: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
}

/**
 * One object of a config document, with its allowed keys. Absent and `null` read the same
 * (Go's zero value): an empty string, false, 0, an empty list, or no object.
 */
export class WireObject {
  readonly path: string;
  readonly #values = new Map<string, unknown>();
  readonly #canonical = new Map<string, string>();

  constructor(raw: unknown, path: string, keys: readonly string[]) {
    this.path = path;
    if (!isPlainObject(raw)) throw new FieldError(path === '' ? 'entry' : path, `must be an object, got ${describe(raw)}`);
    for (const k of keys) this.#canonical.set(normKey(k), k);
    const seen = new Map<string, string>();
    for (const [k, v] of Object.entries(raw)) {
      const n = normKey(k);
      const canonical = this.#canonical.get(n);
      if (canonical === undefined) throw new FieldError(fieldPath(path, k), `invalid config key "${k}"`);
      const first = seen.get(n);
      if (first !== undefined) throw new FieldError(fieldPath(path, canonical), `given twice, as "${first}" and "${k}" (keys match case-insensitively, "_" ignored)`);
      seen.set(n, k);
      this.#values.set(canonical, v);
    }
  }

  field(key: string): string {
    return fieldPath(this.path, key);
  }

  /** The raw value, undefined when absent or null. */
  raw(key: string): unknown {
    const v = this.#values.get(key);
    return v === null ? undefined : v;
  }

  /** The value where the schema wants one: `[x]` is x, `[]` is absent (undefined). */
  one(key: string): unknown {
    const v = this.raw(key);
    if (!Array.isArray(v) || v.length > 1) return v;
    return v.length === 0 || v[0] === null ? undefined : (v[0] as unknown);
  }

  has(key: string): boolean {
    return this.one(key) !== undefined;
  }

  string(key: string): string {
    const v = this.one(key);
    if (v === undefined) return '';
    if (typeof v !== 'string') throw new FieldError(this.field(key), `must be a string, got ${describe(v)}`);
    return v;
  }

  bool(key: string): boolean {
    const v = this.one(key);
    if (v === undefined) return false;
    if (typeof v !== 'boolean') throw new FieldError(this.field(key), `must be true or false, got ${describe(v)}`);
    return v;
  }

  /** A whole number in [min, max]; 0 when absent. */
  int(key: string, min = 0, max = Number.MAX_SAFE_INTEGER): number {
    const v = this.one(key);
    if (v === undefined) return 0;
    if (typeof v !== 'number' || !Number.isInteger(v)) throw new FieldError(this.field(key), `must be a whole number, got ${describe(v)}`);
    if (v < min || v > max) throw new FieldError(this.field(key), `must be between ${min} and ${max}, got ${v}`);
    return v;
  }

  /** A nested object, or null when absent. */
  object(key: string, keys: readonly string[]): WireObject | null {
    const v = this.one(key);
    return v === undefined ? null : new WireObject(v, this.field(key), keys);
  }

  /** A list; a lone value counts as a one-element list (Consul's weak decoding). */
  list(key: string): unknown[] {
    const v = this.raw(key);
    if (v === undefined) return [];
    return Array.isArray(v) ? v : [v];
  }

  /** Each element a WireObject at `Key[i]`. */
  objects(key: string, keys: readonly string[]): WireObject[] {
    return this.list(key).map((v, i) => new WireObject(v, `${this.field(key)}[${i}]`, keys));
  }

  strings(key: string): string[] {
    return this.list(key).map((v, i) => {
      if (typeof v !== 'string') throw new FieldError(`${this.field(key)}[${i}]`, `must be a string, got ${describe(v)}`);
      return v;
    });
  }

  /** A string→string map such as Meta. */
  stringMap(key: string): Record<string, string> {
    const v = this.one(key);
    const out: Record<string, string> = {};
    if (v === undefined) return out;
    if (!isPlainObject(v)) throw new FieldError(this.field(key), `must be an object of strings, got ${describe(v)}`);
    for (const [k, val] of Object.entries(v)) {
      if (typeof val !== 'string') throw new FieldError(`${this.field(key)}.${k}`, `must be a string, got ${describe(val)}`);
      defineData(out, k, val);
    }
    return out;
  }
}

// Consul's generic limits on config-entry Meta (structs.validateConfigEntryMeta). Lengths
// are in bytes, as Go's len() counts them.
export const META_MAX_PAIRS = 64;
export const META_KEY_MAX_BYTES = 128;
export const META_VALUE_MAX_BYTES = 512;

export function byteLength(s: string): number {
  return Buffer.byteLength(s, 'utf8');
}

export function decodeMeta(obj: WireObject): Record<string, string> {
  const meta = obj.stringMap('Meta');
  const field = obj.field('Meta');
  const keys = Object.keys(meta);
  if (keys.length > META_MAX_PAIRS) throw new FieldError(field, `exceeds maximum element count ${META_MAX_PAIRS}`);
  for (const k of keys) {
    if (byteLength(k) > META_KEY_MAX_BYTES) throw new FieldError(field, `key ${JSON.stringify(k)} exceeds maximum length ${META_KEY_MAX_BYTES}`);
    if (byteLength(meta[k] as string) > META_VALUE_MAX_BYTES) throw new FieldError(field, `value for key ${JSON.stringify(k)} exceeds maximum length ${META_VALUE_MAX_BYTES}`);
  }
  return meta;
}

/** Meta for Consul's JSON: omitted when empty (omitempty). */
export function encodeMeta(meta: Readonly<Record<string, string>>): Record<string, unknown> | undefined {
  const keys = Object.keys(meta);
  if (keys.length === 0) return undefined;
  const out: Record<string, unknown> = {};
  for (const k of keys) defineData(out, k, meta[k]);
  return out;
}

/**
 * Namespace and Partition are Consul Enterprise; meshd is CE, where the only namespace and
 * partition is "default". Empty or "default" is accepted (clients echo what they read);
 * anything else, the wildcard included, is an error rather than silently merged.
 */
export function rejectEnterpriseTenancy(obj: WireObject): void {
  for (const key of ['Namespace', 'Partition'] as const) {
    const v = obj.string(key);
    if (v !== '' && v !== 'default') {
      throw new FieldError(obj.field(key), `${key === 'Namespace' ? 'namespaces' : 'admin partitions'} are a Consul Enterprise feature; meshd only has "default" (got ${JSON.stringify(v)})`);
    }
  }
}

/** Keys every entry may carry: its kind, CE tenancy, and the read-only indexes a GET returns. */
export const ENTRY_COMMON_KEYS = ['Kind', 'Name', 'Namespace', 'Partition', 'Meta', 'CreateIndex', 'ModifyIndex', 'Hash'] as const;

/** A per-kind decoder called directly still refuses a document of another kind. */
export function expectKind(obj: WireObject, kind: string): void {
  const given = obj.string('Kind');
  if (given !== '' && given.toLowerCase() !== kind) throw new FieldError('Kind', `must be ${JSON.stringify(kind)}, got ${JSON.stringify(given)}`);
}

/** Checks (and otherwise ignores) the read-only fields a client may echo back from a GET. */
export function ignoreReadOnlyIndexes(obj: WireObject): void {
  obj.int('CreateIndex');
  obj.int('ModifyIndex');
  // Hash is a uint64 in Consul, beyond what a JSON number holds exactly: not even checked.
}

// RFC 9110 token characters; an optional leading ':' admits HTTP/2 pseudo-headers such as
// `:authority`, which Envoy's header matchers (and so Consul's intentions) can match.
const HEADER_NAME_RE = /^:?[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

export function validateHeaderName(name: string, field: string): void {
  if (!HEADER_NAME_RE.test(name)) throw new FieldError(field, `${JSON.stringify(name)} is not a valid HTTP header name`);
}
