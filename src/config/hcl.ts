// Config files as Consul reads them: JSON, or HCL version 1 (Consul's config entries and CLI
// files are HCL1; HCL2 parsers reject Consul's own examples). Parsing uses js-hcl-parser, a
// GopherJS build of hashicorp/hcl v1, loaded lazily (its first parse costs ~200 ms). Then
// Consul's decode rule that matters before schema decoding: HCL1 turns every block into a
// list of objects (`Config { … }` → `"Config": [{…}]`), so a one-element list becomes the
// object where the schema expects an object (Consul's HookWeakDecodeFromSlice). JSON text
// (a file's, or the HCL parser's output) goes through parseJson, not JSON.parse, which in
// Node 24 can misread an escaped key such as "\"" (see parseJson).
// Runs on: the CLI and the control thread, never per request.

import { parseJson } from '../control/decode.ts';
import { formatScanError, scanHcl, scanJson } from './scan.ts';

export class ConfigSyntaxError extends Error {
  override readonly name = 'ConfigSyntaxError';
}

function looksLikeJson(text: string): boolean {
  return /^\s*\{/.test(text);
}

/**
 * Parses a config file's text (JSON or HCL v1). Before any parser runs, ./scan.ts refuses
 * nesting deeper than 64 levels, keys given twice in one object and `__proto__` keys, with
 * the line and column.
 */
export async function parseConfigText(text: string, source: string): Promise<unknown> {
  if (looksLikeJson(text)) {
    const bad = scanJson(text);
    if (bad !== null) throw new ConfigSyntaxError(`${source}: invalid JSON: ${formatScanError(bad)}`);
    try {
      return parseJson(text);
    } catch (err) {
      throw new ConfigSyntaxError(`${source}: invalid JSON: ${(err as Error).message}`);
    }
  }
  const bad = scanHcl(text);
  if (bad !== null) throw new ConfigSyntaxError(`${source}: invalid HCL: ${formatScanError(bad)}`);
  const { default: hcl } = await import('js-hcl-parser');
  const out = hcl.parse(text);
  if (out.startsWith('unable to parse')) {
    throw new ConfigSyntaxError(`${source}: invalid HCL: ${out.replace(/^unable to parse JSON: /, '')}`);
  }
  try {
    return parseJson(out);
  } catch {
    throw new ConfigSyntaxError(`${source}: the HCL parser returned something that is not a document: ${out.slice(0, 200)}`);
  }
}

function norm(key: string): string {
  return key.replaceAll('_', '').toLowerCase();
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/**
 * Replaces `[obj]` by `obj` under keys named in `objectKeys` (matched case-insensitively,
 * underscores ignored), at any depth. A list of two or more objects under such a key is left
 * alone, so the schema decoder reports it as the wrong type rather than losing data.
 */
export function collapseBlocks(value: unknown, objectKeys: ReadonlySet<string>): unknown {
  if (Array.isArray(value)) return value.map((v) => collapseBlocks(v, objectKeys));
  if (!isPlainObject(value)) return value;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) {
    const one = objectKeys.has(norm(k)) && Array.isArray(v) && v.length === 1 && isPlainObject(v[0]) ? v[0] : v;
    // defineProperty, not assignment: a key named "__proto__" in a file must stay data,
    // never become this object's prototype.
    Object.defineProperty(out, k, { value: collapseBlocks(one, objectKeys), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** The object-valued keys of Consul's CA configuration (`Config { … }`). */
export const CA_CONFIG_OBJECT_KEYS: ReadonlySet<string> = new Set(['config']);
