// Strict DER reading and DER writing for the CA's own certificate code: CSR parsing, leaf
// and cross-signed certificate assembly, root inspection.
//
// Runs on: the control thread and the signing worker; never on the data plane (der.ts is
// the allocation-free walker the data plane uses on every handshake). Here each call
// creates a few small objects, which is noise next to the 40 µs to 1 ms of public-key
// crypto that follows every parse or build.
//
// Reading is DER only, like der.ts: definite, minimally encoded lengths, single-byte tags,
// every element inside its parent. Any violation throws DerError, which callers turn into
// their own coded error (CSR_MALFORMED, CA_ROOT_MALFORMED).

export class DerError extends Error {
  override readonly name = 'DerError';
}

// Universal tags (X.690 §8.1.2) and the context-specific ones X.509 uses.
export const TAG_BOOLEAN = 0x01;
export const TAG_INTEGER = 0x02;
export const TAG_BIT_STRING = 0x03;
export const TAG_OCTET_STRING = 0x04;
export const TAG_NULL = 0x05;
export const TAG_OID = 0x06;
export const TAG_UTC_TIME = 0x17;
export const TAG_GENERALIZED_TIME = 0x18;
export const TAG_SEQUENCE = 0x30;
export const TAG_SET = 0x31;
export const TAG_CTX0_CONSTRUCTED = 0xa0;
export const TAG_CTX3_CONSTRUCTED = 0xa3;

/** Lengths we accept fit in 4 octets (certificates and CSRs are far below 4 GiB). */
const MAX_LENGTH_OCTETS = 4;

/** One DER element in a buffer: its tag, where its header starts (`at`), its content span. */
export type Element = { readonly tag: number; readonly at: number; readonly start: number; readonly end: number };

/** Reads the element whose header starts at `pos`; it must end at or before `limit`. */
export function readElement(b: Uint8Array, pos: number, limit: number): Element {
  if (pos + 2 > limit) throw new DerError(`truncated element at offset ${pos}`);
  const tag = b[pos]!;
  if ((tag & 0x1f) === 0x1f) throw new DerError(`multi-byte tag at offset ${pos}`);
  const first = b[pos + 1]!;
  let len = first;
  let hdr = 2;
  if (first >= 0x80) {
    const n = first & 0x7f;
    if (n === 0) throw new DerError(`indefinite length at offset ${pos}`);
    if (n > MAX_LENGTH_OCTETS || pos + 2 + n > limit) throw new DerError(`bad length at offset ${pos}`);
    if (b[pos + 2] === 0) throw new DerError(`non-minimal length at offset ${pos}`);
    len = 0;
    for (let i = 0; i < n; i++) len = len * 256 + b[pos + 2 + i]!;
    if (len < 0x80) throw new DerError(`non-minimal length at offset ${pos}`);
    hdr = 2 + n;
  }
  const start = pos + hdr;
  const end = start + len;
  if (end > limit) throw new DerError(`element at offset ${pos} runs past its parent`);
  return { tag, at: pos, start, end };
}

/** Reads an element and requires its tag; `what` names it in the error. */
export function expectElement(b: Uint8Array, pos: number, limit: number, tag: number, what: string): Element {
  const el = readElement(b, pos, limit);
  if (el.tag !== tag) {
    throw new DerError(`${what}: expected tag 0x${tag.toString(16)}, found 0x${el.tag.toString(16)} at offset ${pos}`);
  }
  return el;
}

/** The children of a constructed element, which must exactly fill it. */
export function childrenOf(b: Uint8Array, parent: Element): Element[] {
  const out: Element[] = [];
  let p = parent.start;
  while (p < parent.end) {
    const el = readElement(b, p, parent.end);
    out.push(el);
    p = el.end;
  }
  return out;
}

/** The whole element (header and content) as a view, no copy. */
export function rawOf(b: Uint8Array, el: Element): Uint8Array {
  return b.subarray(el.at, el.end);
}

/** The content as a view, no copy. */
export function contentOf(b: Uint8Array, el: Element): Uint8Array {
  return b.subarray(el.start, el.end);
}

/** A DER BOOLEAN's value; only 0x00 and 0xFF are DER. */
export function readBoolean(b: Uint8Array, el: Element): boolean {
  if (el.tag !== TAG_BOOLEAN || el.end - el.start !== 1) throw new DerError('malformed BOOLEAN');
  const v = b[el.start];
  if (v === 0xff) return true;
  if (v === 0x00) return false;
  throw new DerError('BOOLEAN is neither 0x00 nor 0xFF');
}

/** A BIT STRING with no unused bits (signatures, keys), as a view of its bytes. */
export function readOctetAlignedBits(b: Uint8Array, el: Element): Uint8Array {
  if (el.tag !== TAG_BIT_STRING || el.end - el.start < 1 || b[el.start] !== 0) {
    throw new DerError('BIT STRING must have zero unused bits');
  }
  return b.subarray(el.start + 1, el.end);
}

/** Dotted-decimal text of an OBJECT IDENTIFIER's content. */
export function readOid(b: Uint8Array, el: Element): string {
  if (el.tag !== TAG_OID || el.end === el.start) throw new DerError('malformed OBJECT IDENTIFIER');
  const arcs: number[] = [];
  let v = 0;
  for (let i = el.start; i < el.end; i++) {
    const c = b[i]!;
    // A leading 0x80 octet is a non-minimal arc encoding.
    if (v === 0 && c === 0x80) throw new DerError('non-minimal OBJECT IDENTIFIER arc');
    v = v * 128 + (c & 0x7f);
    if (v > Number.MAX_SAFE_INTEGER / 128) throw new DerError('OBJECT IDENTIFIER arc too large');
    if ((c & 0x80) === 0) {
      arcs.push(v);
      v = 0;
    } else if (i === el.end - 1) {
      throw new DerError('truncated OBJECT IDENTIFIER');
    }
  }
  const first = arcs[0]!;
  const head = first < 40 ? [0, first] : first < 80 ? [1, first - 40] : [2, first - 80];
  return [...head, ...arcs.slice(1)].join('.');
}

const DIGITS = /^\d+$/;

/**
 * Reads a UTCTime or GeneralizedTime in RFC 5280's profile (§4.1.2.5): whole seconds,
 * `Z`, UTCTime years 50..99 meaning 19xx. Returns epoch milliseconds.
 */
export function readTime(b: Uint8Array, el: Element): number {
  const s = Buffer.from(b.buffer, b.byteOffset + el.start, el.end - el.start).toString('latin1');
  let year: number;
  let rest: string;
  if (el.tag === TAG_UTC_TIME && s.length === 13) {
    const yy = Number(s.slice(0, 2));
    year = yy >= 50 ? 1900 + yy : 2000 + yy;
    rest = s.slice(2);
  } else if (el.tag === TAG_GENERALIZED_TIME && s.length === 15) {
    year = Number(s.slice(0, 4));
    rest = s.slice(4);
  } else {
    throw new DerError('time is not YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ');
  }
  const digits = s.slice(0, s.length - 1);
  if (!rest.endsWith('Z') || !DIGITS.test(digits)) throw new DerError(`malformed time ${JSON.stringify(s)}`);
  const [mo, d, h, mi, se] = [0, 2, 4, 6, 8].map((i) => Number(rest.slice(i, i + 2))) as [number, number, number, number, number];
  // setUTCFullYear, not Date.UTC, which would read years 0..99 as 1900..1999.
  const t = new Date(0);
  t.setUTCFullYear(year, mo - 1, d);
  t.setUTCHours(h, mi, se, 0);
  // Date rolls 31 Feb over into March; a real time reads back field by field.
  if (t.getUTCFullYear() !== year || t.getUTCMonth() !== mo - 1 || t.getUTCDate() !== d || h > 23 || mi > 59 || se > 59) {
    throw new DerError(`malformed time ${JSON.stringify(s)}`);
  }
  return t.getTime();
}

// ---------------------------------------------------------------------------------------
// Writing.

/** Header (tag and length octets) for a content of `len` bytes. */
function header(tag: number, len: number): Uint8Array {
  if (len < 0x80) return Uint8Array.of(tag, len);
  if (len < 0x100) return Uint8Array.of(tag, 0x81, len);
  if (len < 0x10000) return Uint8Array.of(tag, 0x82, len >> 8, len & 0xff);
  if (len < 0x1000000) return Uint8Array.of(tag, 0x83, len >> 16, (len >> 8) & 0xff, len & 0xff);
  throw new RangeError(`DER content of ${len} bytes is too large`);
}

/** One element: `tag`, then the concatenation of `parts` as its content. */
export function tlv(tag: number, ...parts: Uint8Array[]): Uint8Array {
  let len = 0;
  for (const p of parts) len += p.length;
  const h = header(tag, len);
  const out = new Uint8Array(h.length + len);
  out.set(h, 0);
  let o = h.length;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

export function sequence(...parts: Uint8Array[]): Uint8Array {
  return tlv(TAG_SEQUENCE, ...parts);
}

/** An OBJECT IDENTIFIER element from dotted-decimal text. */
export function oid(dotted: string): Uint8Array {
  const arcs = dotted.split('.').map(Number);
  if (arcs.length < 2 || arcs.some((a) => !Number.isSafeInteger(a) || a < 0)) throw new RangeError(`bad OID ${dotted}`);
  const out: number[] = [];
  const push = (v: number): void => {
    const tmp = [v & 0x7f];
    for (let x = Math.floor(v / 128); x > 0; x = Math.floor(x / 128)) tmp.unshift((x & 0x7f) | 0x80);
    out.push(...tmp);
  };
  push(arcs[0]! * 40 + arcs[1]!);
  for (const a of arcs.slice(2)) push(a);
  return tlv(TAG_OID, Uint8Array.from(out));
}

/** A positive INTEGER element from unsigned big-endian bytes (minimal two's complement). */
export function unsignedInteger(bytes: Uint8Array): Uint8Array {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const v = bytes.subarray(i);
  if (v.length === 0) return Uint8Array.of(TAG_INTEGER, 1, 0);
  return (v[0]! & 0x80) !== 0 ? tlv(TAG_INTEGER, Uint8Array.of(0), v) : tlv(TAG_INTEGER, v);
}

export function octetString(bytes: Uint8Array): Uint8Array {
  return tlv(TAG_OCTET_STRING, bytes);
}

/** A BIT STRING of whole octets (zero unused bits): signatures. */
export function bitString(bytes: Uint8Array): Uint8Array {
  return tlv(TAG_BIT_STRING, Uint8Array.of(0), bytes);
}

const TRUE = Uint8Array.of(TAG_BOOLEAN, 1, 0xff);

/**
 * One Extension (RFC 5280 §4.1): `critical` is written only when true (DER omits a
 * DEFAULT FALSE), `value` is the already-encoded extnValue content.
 */
export function extension(oidElement: Uint8Array, critical: boolean, value: Uint8Array): Uint8Array {
  return critical ? sequence(oidElement, TRUE, octetString(value)) : sequence(oidElement, octetString(value));
}

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/**
 * A Time element for epoch milliseconds (whole seconds): UTCTime for years 1950 to 2049
 * and GeneralizedTime outside that range, as RFC 5280 §4.1.2.5 requires.
 */
export function time(ms: number): Uint8Array {
  const d = new Date(ms);
  const y = d.getUTCFullYear();
  if (y < 0 || y > 9999 || ms % 1000 !== 0) throw new RangeError(`cannot encode ${d.toISOString()} as an X.509 time`);
  const tail = `${pad2(d.getUTCMonth() + 1)}${pad2(d.getUTCDate())}${pad2(d.getUTCHours())}${pad2(d.getUTCMinutes())}${pad2(d.getUTCSeconds())}Z`;
  if (y >= 1950 && y <= 2049) return tlv(TAG_UTC_TIME, Buffer.from(`${pad2(y % 100)}${tail}`, 'latin1'));
  return tlv(TAG_GENERALIZED_TIME, Buffer.from(`${String(y).padStart(4, '0')}${tail}`, 'latin1'));
}

export function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(b);
}
