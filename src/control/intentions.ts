// Intentions as Consul stores them since 1.9: one `service-intentions` config entry per
// destination holding every source rule for it (src/config/service-intentions.ts decodes and
// validates them). The legacy name-based API (`/v1/connect/intentions/exact`) edits one source
// inside that entry — by re-encoding the entry, changing the source and decoding it again, so
// both APIs go through one validation path; the list API flattens entries back into legacy
// intention objects. Semantics: ../shared/reference/consul-mesh.md §2.
// Runs on: the control thread (agent). The data plane never sees these objects: it reads the
// compiled table (src/authz).

import { randomUUID } from 'node:crypto';
import type { Store } from './store.ts';
import { FieldError, type JsonObject, optString, pick, rejectUnknown } from './decode.ts';
import { SERVICE_NAME_RE } from './catalog.ts';
import { decodeConfigEntry, encodeConfigEntry, intentionRules, type ServiceIntentionsEntry } from '../config/entries.ts';
import { LEGACY_SOURCE_FIELDS, type LegacyIntentionInfo, type SourceIntention } from '../config/service-intentions.ts';
import { WireObject, decodeMeta } from '../config/wire.ts';

export const INTENTIONS = 'config/service-intentions';

export type Action = 'allow' | 'deny';

/** The legacy flattened intention object of `/v1/connect/intentions*`. */
export interface LegacyIntention {
  /** Only for intentions created through the legacy ID API (with CreatedAt and UpdatedAt). */
  ID?: string;
  SourcePeer: string;
  SourcePartition: string;
  SourceNS: string;
  SourceName: string;
  DestinationPartition: string;
  DestinationNS: string;
  DestinationName: string;
  SourceType: string;
  /** Empty for an L7 intention (its permissions decide). */
  Action: Action | '';
  Permissions: unknown[] | null;
  Description: string;
  Meta: Record<string, string>;
  Precedence: number;
  CreatedAt?: string;
  UpdatedAt?: string;
  CreateIndex: number;
  ModifyIndex: number;
}

/** Rule model handed to the table compiler. */
export interface IntentionRule {
  readonly source: string;
  readonly destination: string;
  readonly action: 'allow' | 'deny' | 'l7';
}

/**
 * Consul's precedence (§2.2), CE form: exact→exact 9, *→exact 8, exact→* 6, *→* 5.
 * count(name) = 1 for "*" and 2 for an exact name; max = {2: 9, 1: 6}[count(dst)];
 * precedence = max - (2 - count(source)).
 */
export function precedence(source: string, destination: string): number {
  const count = (n: string): number => (n === '*' ? 1 : 2);
  const max = count(destination) === 2 ? 9 : 6;
  return max - (2 - count(source));
}

/** A service name in an intention: an exact name or the whole-value wildcard `*`. */
export function validateIntentionName(name: string, field: string): void {
  if (name === '') throw new FieldError(field, 'is required');
  if (name === '*') return;
  if (name.includes('*')) throw new FieldError(field, `partial wildcards are not allowed: ${JSON.stringify(name)} (use "*" or an exact name)`);
  if (!SERVICE_NAME_RE.test(name)) throw new FieldError(field, `${JSON.stringify(name)} is not a valid service name`);
}

/** The source fields of a `PUT /v1/connect/intentions/exact` body, in Consul's wire shape. */
export interface ExactSource {
  readonly Action?: Action;
  readonly Permissions?: unknown[];
  readonly Description: string;
}

/**
 * Body of `PUT /v1/connect/intentions/exact`: `{SourceType, Action | Permissions, Description}`.
 * Checks the envelope here; the source itself is validated with the whole entry.
 */
export function decodeExactBody(body: JsonObject): ExactSource {
  rejectUnknown(body, ['SourceType', 'Action', 'Description', 'SourceName', 'DestinationName', 'SourceNS', 'DestinationNS', 'Permissions'], '');
  const type = optString(body, 'SourceType') || 'consul';
  if (type !== 'consul') throw new FieldError('SourceType', 'must be "consul"');
  const description = optString(body, 'Description') ?? '';
  if (description.length > 512) throw new FieldError('Description', 'must be at most 512 characters');
  const perms = pick(body, 'Permissions');
  const hasPerms = Array.isArray(perms) && perms.length > 0;
  if (perms !== undefined && perms !== null && !Array.isArray(perms)) throw new FieldError('Permissions', 'must be a list');
  const action = optString(body, 'Action');
  if (hasPerms) {
    if (action !== undefined && action !== '') throw new FieldError('Action', 'must be omitted when Permissions are given');
    return { Permissions: perms, Description: description };
  }
  if (action !== 'allow' && action !== 'deny') throw new FieldError('Action', 'must be "allow" or "deny" (or give Permissions)');
  return { Action: action, Description: description };
}

/** A legacy ID-API intention body (`POST /v1/connect/intentions`, `PUT /v1/connect/intentions/:id`). */
export interface LegacyBody {
  readonly source: string;
  readonly destination: string;
  readonly rule: ExactSource;
  readonly meta: Readonly<Record<string, string>>;
}

/**
 * Body of the deprecated ID API: `{SourceName, SourceNS, DestinationName, DestinationNS,
 * SourceType, Action | Permissions, Description, Meta}` (read-only fields a client echoes
 * back — ID, Precedence, times, indexes — are accepted and ignored). Meta follows Consul's
 * generic limits (64 pairs, keys ≤ 128 bytes, values ≤ 512 bytes).
 */
export function decodeLegacyBody(body: JsonObject): LegacyBody {
  const readOnly = ['ID', 'Precedence', 'CreatedAt', 'UpdatedAt', 'CreateIndex', 'ModifyIndex', 'SourcePeer', 'SourcePartition', 'DestinationPartition', 'Hash'];
  rejectUnknown(body, ['SourceType', 'Action', 'Description', 'SourceName', 'DestinationName', 'SourceNS', 'DestinationNS', 'Permissions', 'Meta', ...readOnly], '');
  for (const k of ['SourceNS', 'DestinationNS']) {
    const ns = optString(body, k);
    if (ns !== undefined && ns !== '' && ns !== 'default') throw new FieldError(k, `namespaces are a Consul Enterprise feature; meshd only has "default" (got ${JSON.stringify(ns)})`);
  }
  const source = optString(body, 'SourceName') ?? '';
  const destination = optString(body, 'DestinationName') ?? '';
  validateIntentionName(source, 'SourceName');
  validateIntentionName(destination, 'DestinationName');
  const meta = decodeMeta(new WireObject({ Meta: pick(body, 'Meta') ?? {} }, '', ['Meta']));
  const { Meta: _m, ...rest } = body;
  for (const k of readOnly) delete rest[k];
  return { source, destination, rule: decodeExactBody(rest), meta };
}

export class IntentionExistsError extends Error {}

export class Intentions {
  readonly #store: Store;

  constructor(store: Store) {
    this.#store = store;
  }

  /** The entry for a destination, or undefined. */
  entry(destination: string): { value: ServiceIntentionsEntry; createIndex: number; modifyIndex: number } | undefined {
    const e = this.#store.get<unknown>(INTENTIONS, destination);
    return e === undefined ? undefined : { value: upgrade(e.value), createIndex: e.createIndex, modifyIndex: e.modifyIndex };
  }

  #all(): { value: ServiceIntentionsEntry; createIndex: number; modifyIndex: number }[] {
    return this.#store.list<unknown>(INTENTIONS).map((e) => ({ value: upgrade(e.value), createIndex: e.createIndex, modifyIndex: e.modifyIndex }));
  }

  /**
   * Upserts one source→destination rule (the legacy exact API); returns the store index.
   * Throws FieldError (nothing stored) when the resulting entry is invalid.
   */
  upsert(source: string, destination: string, rule: ExactSource): number {
    validateIntentionName(source, 'source');
    validateIntentionName(destination, 'destination');
    return this.#put(source, destination, rule, undefined);
  }

  /**
   * Sets one source of `destination`'s entry: re-encodes the entry, replaces the source and
   * decodes it again (one validation path). The other sources keep their legacy ID-API
   * fields; the written source gets `legacy` (the exact API passes none: Consul's upsert by
   * name replaces a legacy intention with a plain one).
   */
  #put(source: string, destination: string, rule: ExactSource, legacy: LegacyIntentionInfo | undefined): number {
    const prev = this.entry(destination);
    const body: JsonObject = prev === undefined ? { Kind: 'service-intentions', Name: destination, Sources: [] } : encodeConfigEntry(prev.value, prev);
    const sources = ((body.Sources as JsonObject[] | undefined) ?? []).filter((s) => s.Name !== source);
    sources.push({ Name: source, Type: 'consul', ...rule });
    // Precedence, indexes and the legacy fields are read-only on decode; drop the encoded copies.
    const strip = ({ Precedence: _p, ...s }: JsonObject): JsonObject => {
      for (const k of LEGACY_SOURCE_FIELDS) delete s[k];
      return s;
    };
    const entry = decodeConfigEntry({ ...body, Sources: sources.map(strip) }) as ServiceIntentionsEntry;
    const kept = new Map<string, LegacyIntentionInfo>();
    for (const s of prev?.value.sources ?? []) if (s.legacy !== undefined && s.name !== source) kept.set(s.name, s.legacy);
    if (legacy !== undefined) kept.set(source, legacy);
    const withLegacy: ServiceIntentionsEntry = {
      ...entry,
      sources: entry.sources.map((s): SourceIntention => {
        const l = kept.get(s.name);
        return l === undefined ? s : { ...s, legacy: l };
      }),
    };
    return this.#store.put(INTENTIONS, destination, withLegacy);
  }

  /**
   * The deprecated ID API's create: refuses a pair that exists (Consul: "duplicate
   * intention found"), stores the source with a new ID, its Meta and times; returns the ID.
   */
  createLegacy(b: LegacyBody, now: Date = new Date()): string {
    if (this.entry(b.destination)?.value.sources.some((s) => s.name === b.source) === true) {
      throw new IntentionExistsError(`duplicate intention found: ${b.source} => ${b.destination}`);
    }
    const id = randomUUID();
    const t = now.toISOString();
    this.#put(b.source, b.destination, b.rule, { id, meta: { ...b.meta }, createTime: t, updateTime: t });
    return id;
  }

  /** The source carrying a legacy ID, with its destination. */
  #byId(id: string): { destination: string; source: SourceIntention & { legacy: LegacyIntentionInfo } } | undefined {
    for (const e of this.#all()) {
      for (const s of e.value.sources) if (s.legacy?.id === id) return { destination: e.value.name, source: s as SourceIntention & { legacy: LegacyIntentionInfo } };
    }
    return undefined;
  }

  getById(id: string): LegacyIntention | undefined {
    return this.list().find((i) => i.ID === id);
  }

  /**
   * The deprecated ID API's update: the same ID keeps its source and destination (changing
   * them is a delete and a create here; Consul moves the intention). Returns false when no
   * intention has that ID.
   */
  updateLegacy(id: string, b: LegacyBody, now: Date = new Date()): boolean {
    const found = this.#byId(id);
    if (found === undefined) return false;
    if (found.source.name !== b.source) throw new FieldError('SourceName', `cannot change an intention's source (${JSON.stringify(found.source.name)}); delete it and create another`);
    if (found.destination !== b.destination) throw new FieldError('DestinationName', `cannot change an intention's destination (${JSON.stringify(found.destination)}); delete it and create another`);
    this.#put(b.source, b.destination, b.rule, { ...found.source.legacy, meta: { ...b.meta }, updateTime: now.toISOString() });
    return true;
  }

  deleteById(id: string): boolean {
    const found = this.#byId(id);
    return found !== undefined && this.delete(found.source.name, found.destination);
  }

  /** Writes a whole entry (`PUT /v1/config`). */
  write(entry: ServiceIntentionsEntry): number {
    return this.#store.put(INTENTIONS, entry.name, entry);
  }

  /** Removes one rule; returns false when there was none. */
  delete(source: string, destination: string): boolean {
    const entry = this.entry(destination);
    if (entry === undefined || !entry.value.sources.some((s) => s.name === source)) return false;
    const sources = entry.value.sources.filter((s) => s.name !== source);
    if (sources.length === 0) this.#store.delete(INTENTIONS, destination);
    else this.#store.put<ServiceIntentionsEntry>(INTENTIONS, destination, { ...entry.value, sources });
    return true;
  }

  get(source: string, destination: string): LegacyIntention | undefined {
    return this.list().find((i) => i.SourceName === source && i.DestinationName === destination);
  }

  entries(): ServiceIntentionsEntry[] {
    return this.#all().map((e) => e.value);
  }

  /** Flattened legacy view, in evaluation order (precedence descending, then names). */
  list(): LegacyIntention[] {
    const out: LegacyIntention[] = [];
    for (const e of this.#all()) {
      const wire = encodeConfigEntry(e.value, e);
      const wireSources = (wire.Sources as JsonObject[] | undefined) ?? [];
      e.value.sources.forEach((s, i) => {
        const perms = wireSources[i]?.Permissions;
        out.push({
          ...(s.legacy === undefined ? {} : { ID: s.legacy.id }),
          SourcePeer: '',
          SourcePartition: '',
          SourceNS: 'default',
          SourceName: s.name,
          DestinationPartition: '',
          DestinationNS: 'default',
          DestinationName: e.value.name,
          SourceType: s.type,
          Action: s.layer === 'l4' ? s.action : '',
          Permissions: s.layer === 'l7' && Array.isArray(perms) ? perms : null,
          Description: s.description,
          Meta: { ...(s.legacy?.meta ?? e.value.meta) },
          Precedence: s.precedence,
          ...(s.legacy === undefined ? {} : { CreatedAt: s.legacy.createTime, UpdatedAt: s.legacy.updateTime }),
          CreateIndex: e.createIndex,
          ModifyIndex: e.modifyIndex,
        });
      });
    }
    out.sort((a, b) => b.Precedence - a.Precedence || cmp(a.SourceName, b.SourceName) || cmp(a.DestinationName, b.DestinationName));
    return out;
  }

  rules(): IntentionRule[] {
    return intentionRules(this.entries());
  }
}

/** Legacy intention (as a proxy reads `/v1/connect/intentions`) → compiler rule. */
export function legacyToRule(i: Pick<LegacyIntention, 'SourceName' | 'DestinationName'> & { readonly Action: string; readonly Permissions: unknown }): IntentionRule {
  const hasPermissions = Array.isArray(i.Permissions) && i.Permissions.length > 0;
  return { source: i.SourceName, destination: i.DestinationName, action: hasPermissions ? 'l7' : i.Action === 'allow' ? 'allow' : 'deny' };
}

/**
 * Entries written by meshd 0.1's first layout (Consul-cased `Sources` with L4 actions only)
 * are read through the decoder once more, so an old data directory keeps its intentions.
 */
function upgrade(value: unknown): ServiceIntentionsEntry {
  const v = value as { Sources?: { Name: string; Action: string; Description?: string }[]; Name?: string; Meta?: Record<string, string> };
  if (v.Sources === undefined) return value as ServiceIntentionsEntry;
  const entry = decodeConfigEntry({
    Kind: 'service-intentions',
    Name: v.Name,
    Meta: v.Meta ?? {},
    Sources: v.Sources.map((x) => ({ Name: x.Name, Action: x.Action, Description: x.Description ?? '' })),
  });
  return entry as ServiceIntentionsEntry;
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
