// `meshd services register|deregister`, as Consul's `consul services register FILE`: the file
// (HCL or JSON) holds `service { … }` blocks, a `services = [ … ]` list, or one bare definition;
// flags (-name, -id, -address, -port, -tag, -meta) describe one service without a file.
// Definitions are decoded here first, with the agent's own decoder, so a mistake is reported
// with the file and field before anything is registered.

import { readFileSync } from 'node:fs';
import { collapseBlocks, parseConfigText } from '../config/hcl.ts';
import { FieldError, type JsonObject } from '../control/decode.ts';
import { SERVICE_OBJECT_KEYS, decodeRegistration } from '../control/catalog.ts';
import type { AgentClient } from '../control/client.ts';
import { parseFlags, usageText, UsageError, type FlagSpecs, type ParsedFlags } from './flags.ts';
import { HTTP_API_FLAGS as HTTP_ADDR, apiClient } from './http-api.ts';

const REGISTER_FLAGS: FlagSpecs = {
  ...HTTP_ADDR,
  name: { kind: 'string', help: 'Service name (flags mode, without FILE)', placeholder: 'NAME' },
  id: { kind: 'string', help: 'Service ID (default: the name)', placeholder: 'ID' },
  address: { kind: 'string', help: 'Service address (default: the node address)', placeholder: 'ADDR' },
  port: { kind: 'string', help: 'Service port', placeholder: 'PORT' },
  tag: { kind: 'list', help: 'Service tag', placeholder: 'TAG' },
  meta: { kind: 'list', help: 'Service meta as KEY=VALUE', placeholder: 'KEY=VALUE' },
};

const DEREGISTER_FLAGS: FlagSpecs = {
  ...HTTP_ADDR,
  id: { kind: 'string', help: 'ID of the service to deregister (its sidecar_service goes too)', placeholder: 'ID' },
};

/** A file that cannot be read or holds an invalid definition; the CLI prints it and exits 1. */
export class ServicesFileError extends Error {
  override readonly name = 'ServicesFileError';
}

export interface ServiceDefinition {
  /** What is sent to PUT /v1/agent/service/register. */
  readonly body: JsonObject;
  readonly id: string;
  readonly name: string;
}

function isObject(v: unknown): v is JsonObject {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

function norm(key: string): string {
  return key.replaceAll('_', '').toLowerCase();
}

/**
 * The service definitions of a parsed file: `service` (one block, or several), `services`
 * (a list), or, when the document has neither key, the document itself. Each is validated with
 * the agent's decoder; errors name the file, the service and the field.
 */
export function definitionsFromDocument(doc: unknown, source: string): ServiceDefinition[] {
  const collapsed = collapseBlocks(doc, SERVICE_OBJECT_KEYS);
  if (!isObject(collapsed)) throw new ServicesFileError(`${source}: expected an object with a service or services key, or one service definition`);
  const keys = Object.keys(collapsed);
  const wrapped = keys.some((k) => norm(k) === 'service' || norm(k) === 'services');
  const raw: unknown[] = [];
  if (wrapped) {
    for (const k of keys) {
      const n = norm(k);
      if (n !== 'service' && n !== 'services') throw new ServicesFileError(`${source}: ${k}: unknown field (a services file holds service { ... } blocks or a services list)`);
      const v = collapsed[k];
      raw.push(...(Array.isArray(v) ? (v as unknown[]) : [v]));
    }
  } else {
    raw.push(collapsed);
  }
  if (raw.length === 0) throw new ServicesFileError(`${source}: no service definitions`);
  return raw.map((body, i) => {
    const label = isObject(body) && typeof (body.name ?? body.Name) === 'string' ? `service ${JSON.stringify(body.name ?? body.Name)}` : `service #${i + 1}`;
    if (!isObject(body)) throw new ServicesFileError(`${source}: ${label}: must be an object`);
    try {
      const reg = decodeRegistration(body);
      return { body, id: reg.service.ID, name: reg.service.Service };
    } catch (e) {
      if (e instanceof FieldError) throw new ServicesFileError(`${source}: ${label}: ${e.message}`);
      throw e;
    }
  });
}

export async function readDefinitions(file: string): Promise<ServiceDefinition[]> {
  let doc: unknown;
  try {
    const text = file === '-' ? readFileSync(0, 'utf8') : readFileSync(file, 'utf8');
    doc = await parseConfigText(text, file);
  } catch (e) {
    throw new ServicesFileError(`cannot read ${file}: ${(e as Error).message}`);
  }
  return definitionsFromDocument(doc, file);
}

function agent(f: ParsedFlags): AgentClient {
  return apiClient(f);
}

function fromFlags(f: ParsedFlags): ServiceDefinition[] {
  const name = f.strings.get('name');
  if (name === undefined) throw new UsageError('meshd services register needs FILE or -name');
  const body: JsonObject = { Name: name };
  const id = f.strings.get('id');
  if (id !== undefined) body.ID = id;
  const address = f.strings.get('address');
  if (address !== undefined) body.Address = address;
  const port = f.strings.get('port');
  if (port !== undefined) {
    if (!/^\d{1,5}$/.test(port) || Number(port) > 65535) throw new UsageError(`-port must be an integer 0..65535, got ${JSON.stringify(port)}`);
    body.Port = Number(port);
  }
  const tags = f.lists.get('tag');
  if (tags !== undefined) body.Tags = tags;
  const meta: Record<string, string> = {};
  for (const kv of f.lists.get('meta') ?? []) {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new UsageError(`-meta ${JSON.stringify(kv)} must be KEY=VALUE`);
    meta[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  if (Object.keys(meta).length > 0) body.Meta = meta;
  return definitionsFromDocument(body, 'flags');
}

type Print = (text: string) => void;

/** `meshd services <register|deregister>`; UsageError, AgentUnreachable and ApiError go to the caller. */
export async function cmdServices(argv: readonly string[], out: Print, err: Print): Promise<number> {
  const [sub, ...rest] = argv;
  const help = 'Usage: meshd services <register|deregister> [options] [FILE]\n';
  if (sub === undefined) return (err(help), 2);
  if (sub === '-help' || sub === '--help' || sub === '-h') return (out(help), 0);
  const wantsHelp = rest.some((a) => a === '-h' || a === '-help' || a === '--help');
  try {
    switch (sub) {
      case 'register': {
        if (wantsHelp) return (out(usageText('services register', '[options] FILE (HCL or JSON; - for stdin) | -name NAME [options]', REGISTER_FLAGS)), 0);
        const f = parseFlags(rest, REGISTER_FLAGS);
        if (f.positionals.length > 1) throw new UsageError('meshd services register takes at most one FILE');
        const file = f.positionals[0];
        if (file !== undefined && ['name', 'id', 'address', 'port'].some((k) => f.strings.has(k))) throw new UsageError('give either FILE or -name/-id/-address/-port flags, not both');
        const defs = file === undefined ? fromFlags(f) : await readDefinitions(file);
        const c = agent(f);
        for (const d of defs) {
          await c.request('PUT', '/v1/agent/service/register', { body: d.body });
          out(`Registered service: ${d.name}`);
        }
        return 0;
      }
      case 'deregister': {
        if (wantsHelp) return (out(usageText('services deregister', '-id ID | FILE', DEREGISTER_FLAGS)), 0);
        const f = parseFlags(rest, DEREGISTER_FLAGS);
        const id = f.strings.get('id');
        if (f.positionals.length > 1) throw new UsageError('meshd services deregister takes at most one FILE');
        const file = f.positionals[0];
        if ((id === undefined) === (file === undefined)) throw new UsageError('meshd services deregister needs exactly one of -id ID or FILE');
        const ids = id !== undefined ? [id] : (await readDefinitions(file as string)).map((d) => d.id);
        const c = agent(f);
        for (const x of ids) {
          await c.request('PUT', `/v1/agent/service/deregister/${encodeURIComponent(x)}`);
          out(`Deregistered service: ${x}`);
        }
        return 0;
      }
      default:
        throw new UsageError(`unknown services subcommand: ${sub} (register or deregister)`);
    }
  } catch (e) {
    if (e instanceof ServicesFileError) {
      err(`meshd: ${e.message}`);
      return 1;
    }
    throw e;
  }
}
