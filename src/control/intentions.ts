// Intentions as Consul stores them since 1.9: one `service-intentions` config entry per
// destination holding every source rule for it. The legacy name-based API
// (`/v1/connect/intentions/exact`) edits one source inside that entry; the list API flattens
// entries back into legacy intention objects. Semantics: ../shared/reference/consul-mesh.md §2.
// Runs on: the control thread (agent). The data plane never sees these objects: it reads
// the compiled table (src/authz).

import type { Store } from './store.ts';
import { FieldError, type JsonObject, optString, pick, rejectUnknown } from './decode.ts';
import { SERVICE_NAME_RE } from './catalog.ts';

export const INTENTIONS = 'config/service-intentions';

export type Action = 'allow' | 'deny';

export interface SourceIntention {
  readonly Name: string;
  readonly Namespace: 'default';
  readonly Action: Action;
  readonly Type: 'consul';
  readonly Description: string;
  readonly Precedence: number;
  readonly LegacyCreateTime: string;
  readonly LegacyUpdateTime: string;
}

export interface ServiceIntentionsEntry {
  readonly Kind: 'service-intentions';
  readonly Name: string;
  readonly Namespace: 'default';
  readonly Meta: Record<string, string>;
  readonly Sources: SourceIntention[];
}

/** The legacy flattened intention object of `/v1/connect/intentions*`. */
export interface LegacyIntention {
  SourcePeer: string;
  SourcePartition: string;
  SourceNS: string;
  SourceName: string;
  DestinationPartition: string;
  DestinationNS: string;
  DestinationName: string;
  SourceType: string;
  Action: Action;
  Permissions: null;
  Description: string;
  Meta: Record<string, string>;
  Precedence: number;
  CreatedAt: string;
  UpdatedAt: string;
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
 * precedence = max - (2 - count(src)).
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

/** Body of `PUT /v1/connect/intentions/exact`: `{SourceType, Action, Description}`. */
export function decodeExactBody(body: JsonObject): { action: Action; description: string } {
  if (pick(body, 'Permissions') !== undefined && pick(body, 'Permissions') !== null) {
    throw new FieldError('Permissions', 'L7 permissions are not supported by this agent yet; use Action');
  }
  rejectUnknown(body, ['SourceType', 'Action', 'Description', 'SourceName', 'DestinationName', 'SourceNS', 'DestinationNS', 'Meta', 'Permissions'], '');
  const action = optString(body, 'Action');
  if (action !== 'allow' && action !== 'deny') throw new FieldError('Action', 'must be "allow" or "deny"');
  const type = optString(body, 'SourceType') || 'consul';
  if (type !== 'consul') throw new FieldError('SourceType', 'must be "consul"');
  const description = optString(body, 'Description') ?? '';
  if (description.length > 512) throw new FieldError('Description', 'must be at most 512 characters');
  return { action, description };
}

export class Intentions {
  readonly #store: Store;
  readonly #now: () => number;

  constructor(store: Store, now: () => number) {
    this.#store = store;
    this.#now = now;
  }

  /** Upserts one source→destination rule; returns the store index of the write. */
  upsert(source: string, destination: string, action: Action, description: string): number {
    validateIntentionName(source, 'source');
    validateIntentionName(destination, 'destination');
    const stamp = new Date(this.#now()).toISOString();
    const prev = this.#store.get<ServiceIntentionsEntry>(INTENTIONS, destination)?.value;
    const sources = (prev?.Sources ?? []).filter((s) => s.Name !== source);
    const old = prev?.Sources.find((s) => s.Name === source);
    sources.push({
      Name: source,
      Namespace: 'default',
      Action: action,
      Type: 'consul',
      Description: description,
      Precedence: precedence(source, destination),
      LegacyCreateTime: old?.LegacyCreateTime ?? stamp,
      LegacyUpdateTime: stamp,
    });
    // Consul stores sources sorted by descending precedence (stable), then by name.
    sources.sort((a, b) => b.Precedence - a.Precedence || (a.Name < b.Name ? -1 : a.Name > b.Name ? 1 : 0));
    return this.#store.put<ServiceIntentionsEntry>(INTENTIONS, destination, {
      Kind: 'service-intentions',
      Name: destination,
      Namespace: 'default',
      Meta: prev?.Meta ?? {},
      Sources: sources,
    });
  }

  /** Removes one rule; returns false when there was none. */
  delete(source: string, destination: string): boolean {
    const entry = this.#store.get<ServiceIntentionsEntry>(INTENTIONS, destination);
    if (entry === undefined || !entry.value.Sources.some((s) => s.Name === source)) return false;
    const sources = entry.value.Sources.filter((s) => s.Name !== source);
    if (sources.length === 0) this.#store.delete(INTENTIONS, destination);
    else this.#store.put<ServiceIntentionsEntry>(INTENTIONS, destination, { ...entry.value, Sources: sources });
    return true;
  }

  get(source: string, destination: string): LegacyIntention | undefined {
    return this.list().find((i) => i.SourceName === source && i.DestinationName === destination);
  }

  /** Flattened legacy view, in evaluation order (precedence descending, then names). */
  list(): LegacyIntention[] {
    const out: LegacyIntention[] = [];
    for (const e of this.#store.list<ServiceIntentionsEntry>(INTENTIONS)) {
      for (const s of e.value.Sources) {
        out.push({
          SourcePeer: '',
          SourcePartition: '',
          SourceNS: 'default',
          SourceName: s.Name,
          DestinationPartition: '',
          DestinationNS: 'default',
          DestinationName: e.value.Name,
          SourceType: s.Type,
          Action: s.Action,
          Permissions: null,
          Description: s.Description,
          Meta: e.value.Meta,
          Precedence: s.Precedence,
          CreatedAt: s.LegacyCreateTime,
          UpdatedAt: s.LegacyUpdateTime,
          CreateIndex: e.createIndex,
          ModifyIndex: e.modifyIndex,
        });
      }
    }
    out.sort(
      (a, b) =>
        b.Precedence - a.Precedence ||
        cmp(a.SourceName, b.SourceName) ||
        cmp(a.DestinationName, b.DestinationName),
    );
    return out;
  }

  rules(): IntentionRule[] {
    return this.list().map(legacyToRule);
  }
}

export function legacyToRule(i: Pick<LegacyIntention, 'SourceName' | 'DestinationName' | 'Action'> & { readonly Permissions: unknown }): IntentionRule {
  const hasPermissions = Array.isArray(i.Permissions) && i.Permissions.length > 0;
  return { source: i.SourceName, destination: i.DestinationName, action: hasPermissions ? 'l7' : i.Action };
}

function cmp(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
