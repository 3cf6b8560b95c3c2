import { availableParallelism } from 'node:os';
import { DATACENTER_RE } from '../control/decode.ts';

// Consul-style flag parsing: `-service web`, `--service web`, `-service=web`, repeatable
// list flags (`-upstream a:1 -upstream b:2`) and booleans (`-dev`, `-dev=false`).
// node:util parseArgs only knows `--long`/`-s` short flags, so it cannot read Consul's
// single-dash long flags; this parser is small and strict instead: an unknown flag or a
// missing value is a UsageError, which the CLI turns into usage text and exit code 2.

export type FlagKind = 'string' | 'bool' | 'list';

export interface FlagSpec {
  readonly kind: FlagKind;
  readonly help: string;
  readonly placeholder?: string;
  readonly default?: string;
  readonly env?: string;
}

export type FlagSpecs = Readonly<Record<string, FlagSpec>>;

export interface ParsedFlags {
  readonly strings: Map<string, string>;
  readonly bools: Map<string, boolean>;
  readonly lists: Map<string, string[]>;
  readonly positionals: string[];
}

export class UsageError extends Error {
  override readonly name = 'UsageError';
}

export function parseFlags(argv: readonly string[], specs: FlagSpecs, env: NodeJS.ProcessEnv = process.env): ParsedFlags {
  const strings = new Map<string, string>();
  const bools = new Map<string, boolean>();
  const lists = new Map<string, string[]>();
  const positionals: string[] = [];

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] as string;
    if (arg === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (!arg.startsWith('-') || arg === '-') {
      positionals.push(arg);
      continue;
    }
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq === -1 ? body : body.slice(0, eq);
    const inline = eq === -1 ? undefined : body.slice(eq + 1);
    const spec = specs[name];
    if (spec === undefined) throw new UsageError(`unknown flag: -${name}`);

    if (spec.kind === 'bool') {
      if (inline === undefined) bools.set(name, true);
      else if (inline === 'true' || inline === '1') bools.set(name, true);
      else if (inline === 'false' || inline === '0') bools.set(name, false);
      else throw new UsageError(`flag -${name} takes true or false, not ${JSON.stringify(inline)}`);
      continue;
    }
    let value = inline;
    if (value === undefined) {
      const next = argv[i + 1];
      if (next === undefined) throw new UsageError(`flag -${name} needs a value (${spec.placeholder ?? 'VALUE'})`);
      value = next;
      i++;
    }
    if (spec.kind === 'list') {
      const list = lists.get(name) ?? [];
      list.push(value);
      lists.set(name, list);
    } else {
      strings.set(name, value);
    }
  }

  // Environment and defaults fill what the command line left out (flag > env > default).
  for (const [name, spec] of Object.entries(specs)) {
    if (spec.kind !== 'string' || strings.has(name)) continue;
    const fromEnv = spec.env === undefined ? undefined : env[spec.env];
    if (fromEnv !== undefined && fromEnv !== '') strings.set(name, fromEnv);
    else if (spec.default !== undefined) strings.set(name, spec.default);
  }
  return { strings, bools, lists, positionals };
}

export function usageText(command: string, synopsis: string, specs: FlagSpecs): string {
  const lines = [`Usage: meshd ${command} ${synopsis}`.trimEnd(), ''];
  const names = Object.keys(specs).sort();
  for (const name of names) {
    const spec = specs[name] as FlagSpec;
    const head = spec.kind === 'bool' ? `  -${name}` : `  -${name}=${spec.placeholder ?? 'VALUE'}`;
    lines.push(head);
    const extra: string[] = [];
    if (spec.default !== undefined) extra.push(`default: ${spec.default}`);
    if (spec.env !== undefined) extra.push(`env: ${spec.env}`);
    if (spec.kind === 'list') extra.push('repeatable');
    lines.push(`      ${spec.help}${extra.length > 0 ? ` (${extra.join('; ')})` : ''}`);
  }
  return lines.join('\n') + '\n';
}

/** `HOST:PORT` with a numeric port 0..65535; `[::1]:80` for IPv6. */
export function parseHostPort(value: string, flag: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m === null ? NaN : Number(m[3]);
  if (m === null || port > 65535) {
    throw new UsageError(`-${flag} must be HOST:PORT (for example 127.0.0.1:8500), got ${JSON.stringify(value)}`);
  }
  return { host: (m[1] ?? m[2]) as string, port };
}

/** Consul's `-http-addr`: `127.0.0.1:8500`, `http://127.0.0.1:8500` or `https://...`. */
export function parseHttpAddr(value: string): URL {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new UsageError(`-http-addr must be HOST:PORT or a URL, got ${JSON.stringify(value)}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new UsageError(`-http-addr must use http or https, got ${url.protocol}`);
  }
  return url;
}

export interface ParsedUpstream {
  /** The upstream's key: NAME, or NAME@DC for one in another datacenter. */
  name: string;
  host: string;
  port: number;
  /** Only with @DC: the destination service and its datacenter. */
  service?: string;
  datacenter?: string;
}

export function parseUpstream(value: string): ParsedUpstream {
  // NAME[.service][@DC]:[HOST:]PORT: Consul's -upstream, plus meshd's @DC for a service in
  // another (federated) datacenter.
  const m = /^([A-Za-z0-9][A-Za-z0-9._-]*?)(?:\.(service|query))?(?:@([^:@]*))?:(?:(.+):)?(\d{1,5})$/.exec(value);
  if (m === null || Number(m[5]) > 65535) throw new UsageError(`-upstream must be NAME[@DC]:PORT or NAME[@DC]:HOST:PORT, got ${JSON.stringify(value)}`);
  if (m[2] === 'query') throw new UsageError('-upstream: prepared queries are not supported; use a service name');
  const name = m[1] as string;
  const out: ParsedUpstream = { name, host: m[4] ?? '127.0.0.1', port: Number(m[5]) };
  const dc = m[3];
  if (dc === undefined) return out;
  if (!DATACENTER_RE.test(dc)) throw new UsageError(`-upstream ${JSON.stringify(value)}: ${JSON.stringify(dc)} is not a datacenter name (lower-case letters, digits, "-" or "_")`);
  return { ...out, name: `${name}@${dc}`, service: name, datacenter: dc };
}

export function parseWorkers(value: string | undefined): number {
  if (value === undefined || value === 'auto') return availableParallelism();
  if (!/^\d+$/.test(value) || Number(value) < 1 || Number(value) > 256) throw new UsageError(`-workers must be an integer 1..256 or "auto", got ${JSON.stringify(value)}`);
  return Number(value);
}
