// Reads the server name (SNI, RFC 6066 §3) out of the first bytes of a TLS connection, for the
// mesh gateway (./mesh-listener.ts), which routes on it without terminating TLS.
//
// The parser is stateless: it is given every byte received so far and answers with the name,
// with "need more" (and how many bytes in total it needs before it can say anything new, so a
// peer dribbling one byte at a time does not make the caller re-parse on every byte), or with a
// reason to refuse. It reassembles the ClientHello across TLS records (RFC 8446 §5.1 allows a
// handshake message to span several records, and TCP may cut anywhere), bounds what it will wait
// for, and checks every length against the bytes that hold it: garbage gives an error, never an
// exception or a read past the buffer.
// Runs on: data-plane workers (per connection, before any byte is forwarded).

/** Why a connection's first bytes are not a ClientHello with a usable server name. */
export type SniError = 'not_tls' | 'no_sni' | 'malformed' | 'too_large';

export type SniResult =
  | { readonly kind: 'sni'; readonly name: string }
  /** `need`: the total number of bytes to have before calling again (more is fine). */
  | { readonly kind: 'more'; readonly need: number }
  | { readonly kind: 'error'; readonly reason: SniError };

/** Largest ClientHello (handshake header included) waited for by default. */
export const MAX_CLIENT_HELLO = 16 * 1024;
/** More records than this before the ClientHello is complete: refused (too_large). */
export const MAX_RECORDS = 64;

const RECORD_HEADER = 5;
const CT_HANDSHAKE = 22;
const HT_CLIENT_HELLO = 1;
const EXT_SERVER_NAME = 0;
const NAME_TYPE_HOST = 0;
/** RFC 8446 §5.1: a record's plaintext is at most 2^14 bytes. */
const MAX_RECORD_PAYLOAD = 16384;
/** A DNS name (RFC 1035): at most 253 characters in text form (255 octets on the wire). */
const MAX_HOST_NAME = 253;

const NOT_TLS: SniResult = { kind: 'error', reason: 'not_tls' };
const NO_SNI: SniResult = { kind: 'error', reason: 'no_sni' };
const MALFORMED: SniResult = { kind: 'error', reason: 'malformed' };
const TOO_LARGE: SniResult = { kind: 'error', reason: 'too_large' };

/**
 * Parses the ClientHello at the start of `buf` (every byte of the connection so far).
 * `maxHello` bounds the handshake message (its 4-byte header included).
 */
export function parseClientHello(buf: Uint8Array, maxHello = MAX_CLIENT_HELLO): SniResult {
  // The handshake bytes, concatenated from the records' payloads (copied only when the
  // ClientHello spans more than one record).
  let hs: Uint8Array | null = null;
  const parts: Uint8Array[] = [];
  let hsLen = 0;
  /** Length of the ClientHello with its header, once the header is known. */
  let want = -1;
  let off = 0;
  for (let records = 0; ; records++) {
    if (records >= MAX_RECORDS) return TOO_LARGE;
    if (buf.length < off + RECORD_HEADER) {
      // Judge what is there already: a first byte that cannot start TLS is refused at once.
      if (off === 0 && buf.length > 0 && buf[0] !== CT_HANDSHAKE) return NOT_TLS;
      if (off === 0 && buf.length > 1 && buf[1] !== 3) return NOT_TLS;
      return { kind: 'more', need: off + RECORD_HEADER };
    }
    const type = buf[off] as number;
    const major = buf[off + 1] as number;
    const len = ((buf[off + 3] as number) << 8) | (buf[off + 4] as number);
    if (type !== CT_HANDSHAKE) return records === 0 ? NOT_TLS : MALFORMED;
    if (major !== 3) return records === 0 ? NOT_TLS : MALFORMED;
    // A zero-length handshake fragment is forbidden (RFC 8446 §5.1).
    if (len === 0 || len > MAX_RECORD_PAYLOAD) return MALFORMED;
    const start = off + RECORD_HEADER;
    const end = start + len;
    const avail = Math.min(end, buf.length);
    const payload = buf.subarray(start, avail);
    parts.push(payload);
    hsLen += payload.length;
    if (want < 0 && hsLen >= 4) {
      const head = parts.length === 1 ? payload : concat(parts, hsLen);
      if (head[0] !== HT_CLIENT_HELLO) return MALFORMED;
      want = 4 + (((head[1] as number) << 16) | ((head[2] as number) << 8) | (head[3] as number));
      if (want > maxHello) return TOO_LARGE;
    }
    if (want >= 0 && hsLen >= want) {
      hs = parts.length === 1 ? payload : concat(parts, hsLen);
      break;
    }
    if (avail < end) {
      // This record is not all here; what it will bring may complete the ClientHello.
      return { kind: 'more', need: end };
    }
    off = end;
  }
  return readHello(hs.subarray(4, want));
}

function concat(parts: readonly Uint8Array[], total: number): Uint8Array {
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The ClientHello body (RFC 8446 §4.1.2; RFC 5246 §7.4.1.2 has the same layout). */
function readHello(b: Uint8Array): SniResult {
  let p = 0;
  const u8 = (): number => (p < b.length ? (b[p++] as number) : -1);
  const u16 = (): number => {
    if (p + 2 > b.length) return -1;
    const v = ((b[p] as number) << 8) | (b[p + 1] as number);
    p += 2;
    return v;
  };
  // legacy_version, random
  p += 2 + 32;
  if (p > b.length) return MALFORMED;
  const session = u8();
  if (session < 0 || session > 32 || p + session > b.length) return MALFORMED;
  p += session;
  const suites = u16();
  if (suites < 2 || suites % 2 !== 0 || p + suites > b.length) return MALFORMED;
  p += suites;
  const compression = u8();
  if (compression < 1 || p + compression > b.length) return MALFORMED;
  p += compression;
  // No extensions at all (an SSL 3.0-style hello): no name to route on.
  if (p === b.length) return NO_SNI;
  const extLen = u16();
  if (extLen < 0 || p + extLen !== b.length) return MALFORMED;
  let name: string | null = null;
  const seen = new Set<number>();
  while (p < b.length) {
    const type = u16();
    const len = u16();
    if (type < 0 || len < 0 || p + len > b.length) return MALFORMED;
    // RFC 8446 §4.2: an extension type appears at most once.
    if (seen.has(type)) return MALFORMED;
    seen.add(type);
    if (type === EXT_SERVER_NAME) {
      const r = readServerName(b.subarray(p, p + len));
      if (typeof r !== 'string') return r;
      name = r;
    }
    p += len;
  }
  return name === null ? NO_SNI : { kind: 'sni', name };
}

/** The server_name extension's body: the host_name, lower-cased, or why there is none. */
function readServerName(b: Uint8Array): string | SniResult {
  if (b.length === 0) return NO_SNI; // a server's empty echo; a client never sends it
  if (b.length < 2) return MALFORMED;
  const listLen = ((b[0] as number) << 8) | (b[1] as number);
  if (listLen + 2 !== b.length || listLen === 0) return MALFORMED;
  let p = 2;
  let host: string | null = null;
  while (p < b.length) {
    if (p + 3 > b.length) return MALFORMED;
    const type = b[p] as number;
    const len = ((b[p + 1] as number) << 8) | (b[p + 2] as number);
    p += 3;
    if (p + len > b.length) return MALFORMED;
    if (type === NAME_TYPE_HOST) {
      // RFC 6066: at most one name of each type.
      if (host !== null) return MALFORMED;
      host = hostName(b.subarray(p, p + len));
      if (host === null) return MALFORMED;
    }
    p += len;
  }
  return host ?? NO_SNI;
}

/** A DNS host name in ASCII (LDH labels, `_` tolerated), lower-cased; null when it is not one. */
function hostName(b: Uint8Array): string | null {
  if (b.length === 0 || b.length > MAX_HOST_NAME) return null;
  let out = '';
  let label = 0;
  for (let i = 0; i < b.length; i++) {
    let c = b[i] as number;
    if (c === 0x2e) {
      // No empty label; RFC 6066 forbids the trailing dot too.
      if (label === 0 || i === b.length - 1) return null;
      label = 0;
    } else {
      const lower = c >= 0x61 && c <= 0x7a;
      const upper = c >= 0x41 && c <= 0x5a;
      const digit = c >= 0x30 && c <= 0x39;
      if (!(lower || upper || digit || c === 0x2d || c === 0x5f)) return null;
      if (++label > 63) return null;
      if (upper) c += 0x20;
    }
    out += String.fromCharCode(c);
  }
  return out;
}
