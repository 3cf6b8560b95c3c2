// Who may call which part of the agent API (issue 7, "Config and control plane"). Consul's
// model, cut down to the two token kinds meshd has:
//
// - the management token (Consul's acl.tokens.initial_management; `meshd agent` bootstraps one
//   into DATA_DIR/acl-management-token on first start, or takes `-token-file` /
//   `-initial-management-token`) may do everything;
// - a service token (`PUT /v1/acl/token` with ServiceIdentities, Consul's shape) acts only for
//   the services it names — their certificates, registrations, TTL checks, sidecar config —
//   and reads what Consul's service identities read (catalog, health, intentions, config
//   entries other than jwt-provider);
// - without a token (Consul's anonymous token under default_policy "deny") only the public
//   reads answer: `/v1/status/leader` and the CA roots (public certificates).
//
// `-dev` runs open, as Consul's dev agent with ACLs off: a request without a token may do
// everything except manage tokens, and obtains certificates only from a loopback address.
// A token presented to a dev agent is still checked (so scoping can be tried out there).
//
// The access class of every route is declared where the route is registered (agent.ts); this
// file answers the questions. Tokens arrive as `X-Consul-Token`, `Authorization: Bearer` or
// `?token=`, Consul's three ways; two different ones in one request are refused (400).

import { randomUUID, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { IncomingMessage } from 'node:http';
import type { Store } from './store.ts';
import { FieldError, type JsonObject, pick, optString } from './decode.ts';
import { SERVICE_NAME_RE } from './catalog.ts';

export const TOKENS = 'acl/tokens';

/** The bootstrapped management token's file, inside the data directory. */
export const MANAGEMENT_TOKEN_FILE = 'acl-management-token';

export interface ServiceToken {
  readonly AccessorID: string;
  readonly SecretID: string;
  readonly Description: string;
  readonly ServiceIdentities: readonly { readonly ServiceName: string }[];
  readonly CreateTime: string;
}

export type Refusal = { readonly ok: false; readonly status: 400 | 403; readonly message: string };
export type Decision = { readonly ok: true } | Refusal;
export type Scope = { readonly ok: true; readonly services: '*' | readonly string[] } | Refusal;

/** Who is calling, once its token (or the lack of one) has been resolved. */
export type Caller =
  | { readonly kind: 'management' }
  | { readonly kind: 'service'; readonly token: ServiceToken; readonly services: readonly string[] }
  /** No token. `open`: a -dev agent; `loopback`: the request came from this machine. */
  | { readonly kind: 'anonymous'; readonly open: boolean; readonly loopback: boolean };

/**
 * The access class a route declares (docs/ARCHITECTURE.md, "API authorization"):
 * - `public`: anyone (status, CA roots: public certificates);
 * - `read`: any valid token (catalog, health, intentions, config entries, agent self/metrics);
 * - `token`: a valid token must be presented, even to a -dev agent (`/v1/acl/token/self`);
 * - `service`: a valid token; the handler then checks the service it acts for (leaf, CSR,
 *   registration, TTL checks, authorize, a sidecar's proxy-config);
 * - `operator`: the management token (intention, config entry and CA writes, CA configuration);
 * - `acl`: the management token, even on a -dev agent (creating and deleting tokens).
 * Every class but `token` and `acl` is open to a -dev agent's callers without a token.
 */
export type Access = 'public' | 'read' | 'token' | 'service' | 'operator' | 'acl';

const NO_TOKEN_HINT = 'send a token as X-Consul-Token or Authorization: Bearer (meshd commands: -token, -token-file, MESHD_HTTP_TOKEN or MESHD_HTTP_TOKEN_FILE)';

/** Consul's Authorization header parsing: `<scheme> <value>`, scheme case-insensitive. */
function bearer(value: string): string | null {
  const sp = value.indexOf(' ');
  if (sp <= 0) return null;
  if (value.slice(0, sp).toLowerCase() !== 'bearer') return null;
  const token = value.slice(sp + 1).trim();
  return token === '' ? null : token;
}

/**
 * The request's token: `?token=`, `X-Consul-Token` or `Authorization: Bearer`, or null for
 * none. A header given twice, or two sources that disagree, is a 400: a request must not be
 * read one way by a proxy in front and another way here.
 */
export function extractToken(req: IncomingMessage, url: URL): { ok: true; token: string | null } | Refusal {
  const found = new Set<string>();
  const q = url.searchParams.getAll('token').filter((t) => t !== '');
  const x = (req.headersDistinct['x-consul-token'] ?? []).filter((t) => t !== '');
  const auth = req.headersDistinct.authorization ?? [];
  if (q.length > 1 || x.length > 1 || auth.length > 1) return { ok: false, status: 400, message: 'Bad request: the token was given more than once' };
  for (const t of [...q, ...x]) found.add(t);
  const b = auth[0] === undefined ? null : bearer(auth[0]);
  if (b !== null) found.add(b);
  if (found.size > 1) return { ok: false, status: 400, message: 'Bad request: conflicting tokens (?token=, X-Consul-Token and Authorization: Bearer differ)' };
  const [token] = found;
  return { ok: true, token: token ?? null };
}

/** The request's token, or null (a conflict counts as none: callers that care use extractToken). */
export function requestToken(req: IncomingMessage, url: URL): string | null {
  const t = extractToken(req, url);
  return t.ok ? t.token : null;
}

export function isLoopback(addr: string | undefined): boolean {
  if (addr === undefined) return false;
  return addr === '::1' || addr.startsWith('127.') || addr.startsWith('::ffff:127.');
}

/** A listen host that only this machine can reach (`-http-addr`'s warning). */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || isLoopback(host);
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

/** A token file's secret: the file's text, trimmed (Consul's -token-file). */
export function readTokenFile(path: string): string {
  const token = readFileSync(path, 'utf8').trim();
  if (token === '') throw new Error(`token file ${path} is empty`);
  if (/\s/.test(token)) throw new Error(`token file ${path} must hold one token (no spaces or newlines inside it)`);
  return token;
}

/** True when group or others may read the file (the agent warns about such a token file). */
export function tokenFileIsShared(path: string): boolean {
  return (statSync(path).mode & 0o077) !== 0;
}

/**
 * The management token of a data directory: read from DIR/acl-management-token, or, on first
 * start, generated (a random UUID, like Consul's SecretID) and written there with mode 0600.
 * The file is created exclusively, so two agents racing on one directory cannot both win.
 */
export function loadOrBootstrapManagementToken(dataDir: string): { token: string; path: string; created: boolean } {
  const path = join(dataDir, MANAGEMENT_TOKEN_FILE);
  try {
    return { token: readTokenFile(path), path, created: false };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const token = randomUUID();
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  writeFileSync(path, `${token}\n`, { mode: 0o600, flag: 'wx' });
  return { token, path, created: true };
}

export class Acl {
  readonly #store: Store;
  #management: string | null;
  readonly #dev: boolean;

  constructor(store: Store, opts: { managementToken: string | null; devLoopback: boolean }) {
    this.#store = store;
    this.#management = opts.managementToken;
    this.#dev = opts.devLoopback;
  }

  /** Replaces the management token (an agent reload re-read its file); the old one is refused from now on. */
  setManagementToken(token: string | null): void {
    this.#management = token;
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

  /** Deletes a service token by AccessorID; false when there is none. */
  deleteServiceToken(accessorId: string): boolean {
    return this.#store.delete(TOKENS, accessorId) > 0;
  }

  /** Resolves a request's token: unknown tokens are refused (Consul's 403 "ACL not found"). */
  resolve(token: string | null, remoteAddress: string | undefined): { ok: true; caller: Caller } | Refusal {
    if (token === null) return { ok: true, caller: { kind: 'anonymous', open: this.#dev, loopback: isLoopback(remoteAddress) } };
    if (this.isManagement(token)) return { ok: true, caller: { kind: 'management' } };
    for (const e of this.#store.list<ServiceToken>(TOKENS)) {
      if (sameSecret(e.value.SecretID, token)) return { ok: true, caller: { kind: 'service', token: e.value, services: e.value.ServiceIdentities.map((s) => s.ServiceName) } };
    }
    return { ok: false, status: 403, message: 'ACL not found' };
  }

  /** May the caller pass a route of this access class? (`service` routes check further.) */
  admits(caller: Caller, access: Access): Decision {
    if (access === 'public' || caller.kind === 'management') return { ok: true };
    if (caller.kind === 'service') {
      if (access === 'operator' || access === 'acl') return { ok: false, status: 403, message: `Permission denied: a service token lacks ${access === 'acl' ? "'acl:write'" : "'operator:write'"}: this needs the management token` };
      return { ok: true };
    }
    if (caller.open && access !== 'token' && access !== 'acl') return { ok: true };
    if (access === 'acl') return { ok: false, status: 403, message: `Permission denied: managing tokens needs the management token; ${NO_TOKEN_HINT}` };
    return { ok: false, status: 403, message: `Permission denied: this agent requires a token; ${NO_TOKEN_HINT}` };
  }

  /**
   * May the caller write service `name` (register or deregister an instance, update its TTL
   * checks, read its sidecar's config, authorize connections to it)? Consul's service
   * identity grants `<svc>` and `<svc>-sidecar-proxy`; meshd's `connect proxy -register` names
   * its sidecar `<svc>-proxy`, so that is granted too.
   */
  mayWrite(caller: Caller, name: string): Decision {
    if (caller.kind === 'management') return { ok: true };
    if (caller.kind === 'anonymous') return caller.open ? { ok: true } : { ok: false, status: 403, message: `Permission denied: this agent requires a token; ${NO_TOKEN_HINT}` };
    for (const s of caller.services) if (name === s || name === `${s}-sidecar-proxy` || name === `${s}-proxy`) return { ok: true };
    return { ok: false, status: 403, message: `Permission denied: token lacks permission 'service:write' on "${name}"` };
  }

  /**
   * The services a caller may obtain certificates for: '*' for any, a list for a service
   * token, or a refusal. A -dev agent's caller without a token gets '*' only from a loopback
   * address: the machine's own processes are trusted, nothing off the box is.
   */
  certificateScope(caller: Caller): Scope {
    if (caller.kind === 'management') return { ok: true, services: '*' };
    if (caller.kind === 'service') return { ok: true, services: caller.services };
    if (caller.open && caller.loopback) return { ok: true, services: '*' };
    return { ok: false, status: 403, message: `Permission denied: a token with service:write on the service is required; ${NO_TOKEN_HINT}` };
  }

  /** certificateScope from a raw token (kept for the signing endpoint's callers and tests). */
  scopeFor(token: string | null, remoteAddress: string | undefined): Scope {
    const r = this.resolve(token, remoteAddress);
    return r.ok ? this.certificateScope(r.caller) : r;
  }

  /** May the caller obtain a certificate for `service`? */
  mayActFor(service: string, token: string | null, remoteAddress: string | undefined): Decision {
    const scope = this.scopeFor(token, remoteAddress);
    if (!scope.ok) return scope;
    if (scope.services === '*' || scope.services.includes(service)) return { ok: true };
    return { ok: false, status: 403, message: `Permission denied: token lacks service:write on "${service}"` };
  }
}
