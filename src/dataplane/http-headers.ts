// Header handling for the HTTP proxy, done once per message on flat [name, value, ...] arrays
// (node:http's rawHeaders format, which it also accepts for outgoing messages, so duplicate
// headers and Set-Cookie lists pass through intact).
//
// RFC 9110 §7.6.1: a proxy removes the Connection header, every header it names, and the
// hop-by-hop headers (Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade,
// Proxy-Authenticate/Authorization), then frames the message itself. node:http re-frames
// (Content-Length kept, chunked chosen when needed), so the outgoing side never forwards the
// peer's framing headers. Trailer is dropped too: trailers are not forwarded.

import type { IncomingMessage } from 'node:http';
import { isEmptyHeaderModifiers, type HeaderModifiers } from '../chain/types.ts';

const HOP_BY_HOP: ReadonlySet<string> = new Set([
  'connection',
  'keep-alive',
  'proxy-connection',
  'te',
  'transfer-encoding',
  'upgrade',
  'trailer',
  'proxy-authenticate',
  'proxy-authorization',
  // Not hop-by-hop in RFC 9110, but each hop answers it itself: node's server sends
  // 100 Continue to the downstream, and the next hop gets the body without asking.
  'expect',
]);

/** The identity header meshd sets towards the local app (Envoy's name and format). */
export const XFCC = 'x-forwarded-client-cert';

/**
 * Copies `raw` without hop-by-hop headers, the ones `Connection` names, and any in `drop`
 * (lower-case names).
 */
export function forwardHeaders(raw: readonly string[], drop: ReadonlySet<string> | null = null): string[] {
  let named: Set<string> | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    if ((raw[i] as string).toLowerCase() === 'connection') {
      for (const token of (raw[i + 1] as string).split(',')) {
        const t = token.trim().toLowerCase();
        if (t !== '') (named ??= new Set()).add(t);
      }
    }
  }
  const out: string[] = [];
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    const lower = name.toLowerCase();
    if (HOP_BY_HOP.has(lower) || named?.has(lower) === true || drop?.has(lower) === true) continue;
    out.push(name, raw[i + 1] as string);
  }
  return out;
}

/** Consul's HTTPHeaderModifiers on a copy: Remove, then Set (replaces), then Add (appends). */
export function applyModifiers(headers: string[], m: HeaderModifiers): string[] {
  if (isEmptyHeaderModifiers(m)) return headers;
  const removed = new Set(m.remove.map((n) => n.toLowerCase()));
  for (const n of Object.keys(m.set)) removed.add(n.toLowerCase());
  const out: string[] = [];
  for (let i = 0; i < headers.length; i += 2) if (!removed.has((headers[i] as string).toLowerCase())) out.push(headers[i] as string, headers[i + 1] as string);
  for (const [n, v] of Object.entries(m.set)) out.push(n, v);
  for (const [n, v] of Object.entries(m.add)) out.push(n, v);
  return out;
}

/** True if the request carries a body (RFC 9112 §6.3: Transfer-Encoding or Content-Length > 0). */
export function hasBody(headers: Readonly<Record<string, string | string[] | undefined>>): boolean {
  if (headers['transfer-encoding'] !== undefined) return true;
  const cl = headers['content-length'];
  // "00" is a valid zero length too (node passes it through as written).
  return cl !== undefined && !/^0+$/.test(String(cl));
}

/** Runs `fn` once the request body has been read whole (at once for a request without one). */
export function afterRequestBody(req: IncomingMessage, fn: () => void): void {
  if (req.complete || !hasBody(req.headers)) fn();
  else req.once('end', fn);
}
