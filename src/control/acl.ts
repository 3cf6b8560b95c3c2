// Who may obtain a certificate for which service. A leaf is an identity, so the endpoints
// that grant one (`/v1/connect/ca/sign`, `/v1/agent/connect/ca/leaf/:service`) check the
// caller, as Consul requires `service:write` on the service (§1.11 step 3):
//
// - the management token (`-initial-management-token`, Consul's acl.tokens.initial_management)
//   may act for every service and create service tokens;
// - a service token (`PUT /v1/acl/token` with ServiceIdentities, Consul's shape) may act
//   only for the services it names;
// - in `-dev` mode a request from a loopback address without a token may act for any
//   service: the machine's own processes are trusted, nothing off the box is.
//
// Tokens arrive as `X-Consul-Token` or `?token=` (the two ways Consul clients send them).
// Only identity-granting endpoints enforce this today; the rest of the API is open, as with
// Consul's ACLs disabled.

import { randomUUID, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import type { Store } from './store.ts';
import { FieldError, type JsonObject, pick, optString } from './decode.ts';
import { SERVICE_NAME_RE } from './catalog.ts';

export const TOKENS = 'acl/tokens';

export interface ServiceToken {
  readonly AccessorID: string;
  readonly SecretID: string;
  readonly Description: string;
  readonly ServiceIdentities: readonly { readonly ServiceName: string }[];
  readonly CreateTime: string;
}

export type Refusal = { readonly ok: false; readonly status: 403; readonly message: string };
export type Decision = { readonly ok: true } | Refusal;
export type Scope = { readonly ok: true; readonly services: '*' | readonly string[] } | Refusal;

export function requestToken(req: IncomingMessage, url: URL): string | null {
  const h = req.headers['x-consul-token'];
  const fromHeader = Array.isArray(h) ? h[0] : h;
  if (fromHeader !== undefined && fromHeader !== '') return fromHeader;
  const q = url.searchParams.get('token');
  return q === null || q === '' ? null : q;
}

export function isLoopback(addr: string | undefined): boolean {
  if (addr === undefined) return false;
  return addr === '::1' || addr.startsWith('127.') || addr.startsWith('::ffff:127.');
}

function sameSecret(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

export function decodeTokenBody(body: JsonObject): { description: string; services: string[] } {
  const ids = pick(body, 'ServiceIdentities');
  if (!Array.isArray(ids) || ids.length === 0) throw new FieldError('ServiceIdentities', 'must list at least one {"ServiceName": ...}');
  const services = ids.map((x: unknown, i) => {
    if (x === null || typeof x !== 'object') throw new FieldError(`ServiceIdentities[${i}]`, 'must be an object');
    const name = optString(x as JsonObject, 'ServiceName', `ServiceIdentities[${i}].ServiceName`);
    if (name === undefined || !SERVICE_NAME_RE.test(name)) throw new FieldError(`ServiceIdentities[${i}].ServiceName`, 'must be a valid service name');
    return name;
  });
  return { description: optString(body, 'Description') ?? '', services };
}

export class Acl {
  readonly #store: Store;
  readonly #management: string | null;
  readonly #devLoopback: boolean;

  constructor(store: Store, opts: { managementToken: string | null; devLoopback: boolean }) {
    this.#store = store;
    this.#management = opts.managementToken;
    this.#devLoopback = opts.devLoopback;
  }

  isManagement(token: string | null): boolean {
    return token !== null && this.#management !== null && sameSecret(token, this.#management);
  }

  createServiceToken(description: string, services: readonly string[], now: Date): ServiceToken {
    const token: ServiceToken = {
      AccessorID: randomUUID(),
      SecretID: randomUUID(),
      Description: description,
      ServiceIdentities: services.map((ServiceName) => ({ ServiceName })),
      CreateTime: now.toISOString(),
    };
    this.#store.put(TOKENS, token.AccessorID, token);
    return token;
  }

  /**
   * The services the caller may obtain certificates for: '*' for any, a list for a service
   * token, or a refusal. Resolved before the CSR is parsed, so the CSR itself is only ever
   * parsed in the signing pool (which enforces the list), never on the control thread.
   */
  scopeFor(token: string | null, remoteAddress: string | undefined): Scope {
    if (token === null) {
      if (this.#devLoopback && isLoopback(remoteAddress)) return { ok: true, services: '*' };
      return { ok: false, status: 403, message: 'Permission denied: a token with service:write on the service is required (send X-Consul-Token)' };
    }
    if (this.isManagement(token)) return { ok: true, services: '*' };
    for (const e of this.#store.list<ServiceToken>(TOKENS)) {
      if (sameSecret(e.value.SecretID, token)) return { ok: true, services: e.value.ServiceIdentities.map((s) => s.ServiceName) };
    }
    return { ok: false, status: 403, message: 'ACL not found' };
  }

  /** May the caller obtain a certificate for `service`? */
  mayActFor(service: string, token: string | null, remoteAddress: string | undefined): Decision {
    const scope = this.scopeFor(token, remoteAddress);
    if (!scope.ok) return scope;
    if (scope.services === '*' || scope.services.includes(service)) return { ok: true };
    return { ok: false, status: 403, message: `Permission denied: token lacks service:write on "${service}"` };
  }
}
