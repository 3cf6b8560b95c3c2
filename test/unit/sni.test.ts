// The mesh gateway's ClientHello parser (src/gateway/sni.ts): real ClientHellos captured from
// node:tls, cut at random points and re-framed into several TLS records; synthetic ClientHellos
// with extensions in random order; random bytes, truncations and mutations. The parser must give
// the name the client sent (lower-cased) or "need more" or an error, never a wrong name or an
// exception.

import { before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import * as net from 'node:net';
import * as tls from 'node:tls';
import fc from 'fast-check';
import { MAX_CLIENT_HELLO, parseClientHello, type SniResult } from '../../src/gateway/sni.ts';

const RUNS = Number(process.env.MESHD_FUZZ_RUNS ?? 300);

interface Capture {
  readonly servername: string;
  /** The first TLS record(s) the client sent: exactly its ClientHello. */
  readonly bytes: Buffer;
}

/**
 * Connects with node:tls to a plain TCP socket and keeps the bytes of the first flight up to the
 * end of the first record: node sends its ClientHello in one record.
 */
async function capture(servername: string, opts: tls.ConnectionOptions = {}): Promise<Capture> {
  let done!: (b: Buffer) => void;
  const got = new Promise<Buffer>((resolve) => (done = resolve));
  const server = net.createServer((s) => {
    let buf = Buffer.alloc(0);
    s.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.length < 5) return;
      const end = 5 + buf.readUInt16BE(3);
      if (buf.length < end) return;
      done(buf.subarray(0, end));
      s.destroy();
    });
    s.on('error', () => undefined);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const c = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, servername, ...opts });
  c.on('error', () => undefined);
  const bytes = await got;
  c.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  // Self-check of the capture: one handshake record holding one whole ClientHello.
  assert.equal(bytes[0], 22);
  assert.equal(bytes[5], 1);
  assert.equal(bytes.readUIntBE(6, 3) + 4, bytes.readUInt16BE(3));
  return { servername, bytes };
}

/** The handshake message (without record headers) of a one-record ClientHello. */
function handshakeOf(record: Buffer): Buffer {
  return record.subarray(5);
}

/** Frames a handshake message into TLS records, cut at `cuts` (offsets into the message). */
function frame(hs: Uint8Array, cuts: readonly number[], version = 0x0301): Buffer {
  const points = [...new Set(cuts.filter((c) => c > 0 && c < hs.length))].sort((a, b) => a - b);
  const out: Buffer[] = [];
  let prev = 0;
  for (const p of [...points, hs.length]) {
    const frag = hs.subarray(prev, p);
    const h = Buffer.alloc(5);
    h[0] = 22;
    h.writeUInt16BE(version, 1);
    h.writeUInt16BE(frag.length, 3);
    out.push(h, Buffer.from(frag));
    prev = p;
  }
  return Buffer.concat(out);
}

/** Feeds `bytes` to the parser as a connection would: growing prefixes, cut at `cuts`. */
function feed(bytes: Buffer, cuts: readonly number[]): SniResult[] {
  const points = [...new Set(cuts.filter((c) => c > 0 && c < bytes.length))].sort((a, b) => a - b);
  return [...points, bytes.length].map((p) => parseClientHello(bytes.subarray(0, p)));
}

// ----------------------------------------------------------------------- synthetic ClientHellos

interface Ext {
  readonly type: number;
  readonly data: Buffer;
}

function u16(n: number): Buffer {
  const b = Buffer.alloc(2);
  b.writeUInt16BE(n);
  return b;
}

function sniExt(name: string): Ext {
  const host = Buffer.from(name, 'latin1');
  const entry = Buffer.concat([Buffer.from([0]), u16(host.length), host]);
  return { type: 0, data: Buffer.concat([u16(entry.length), entry]) };
}

function helloMessage(opts: { session: Buffer; suites: number; exts: readonly Ext[] | null }): Buffer {
  const suites = Buffer.alloc(opts.suites * 2, 0x13);
  const parts = [Buffer.from([3, 3]), Buffer.alloc(32, 7), Buffer.from([opts.session.length]), opts.session, u16(suites.length), suites, Buffer.from([1, 0])];
  if (opts.exts !== null) {
    const body = Buffer.concat(opts.exts.map((e) => Buffer.concat([u16(e.type), u16(e.data.length), e.data])));
    parts.push(u16(body.length), body);
  }
  const body = Buffer.concat(parts);
  const head = Buffer.from([1, 0, 0, 0]);
  head.writeUIntBE(body.length, 1, 3);
  return Buffer.concat([head, body]);
}

const label = fc.stringMatching(/^[a-zA-Z0-9]([a-zA-Z0-9-]{0,20}[a-zA-Z0-9])?$/);
const hostname = fc.array(label, { minLength: 1, maxLength: 6 }).map((ls) => ls.join('.')).filter((h) => h.length <= 253);
/** Node refuses to send an IP address as SNI; names with a letter in the last label are kept. */
const tlsHostname = hostname.filter((h) => /[a-z]/i.test(h.split('.').at(-1) ?? '') && !/^\d+(\.\d+){3}$/.test(h));

describe('SNI parser', () => {
  const captures: Capture[] = [];

  before(async () => {
    const names = fc.sample(tlsHostname, { numRuns: 12, seed: 42 });
    names.push('api.default.dc1.internal.11111111-2222-3333-4444-555555555555.consul', 'V1.Web.Default.DC2.Internal.ABC.consul', 'a');
    const variants: tls.ConnectionOptions[] = [{}, { minVersion: 'TLSv1.2', maxVersion: 'TLSv1.2' }, { ALPNProtocols: ['h2', 'http/1.1'] }];
    for (const [i, n] of names.entries()) captures.push(await capture(n, variants[i % variants.length]));
  });

  test('a real ClientHello gives its servername, lower-cased', () => {
    for (const c of captures) assert.deepEqual(parseClientHello(c.bytes), { kind: 'sni', name: c.servername.toLowerCase() });
  });

  test('property: a real ClientHello split at random TCP points: "more" until complete, then the name', () => {
    fc.assert(
      fc.property(fc.constantFrom(...captures), fc.array(fc.nat(), { maxLength: 12 }), (c, raw) => {
        const cuts = raw.map((x) => x % c.bytes.length);
        const results = feed(c.bytes, cuts);
        const last = results.at(-1);
        assert.deepEqual(last, { kind: 'sni', name: c.servername.toLowerCase() });
        for (const r of results.slice(0, -1)) assert.equal(r.kind, 'more');
      }),
      { numRuns: RUNS },
    );
  });

  test('property: every strict prefix asks for more, and `need` never overshoots the ClientHello', () => {
    fc.assert(
      fc.property(fc.constantFrom(...captures), fc.nat(), (c, n) => {
        const len = n % c.bytes.length;
        const r = parseClientHello(c.bytes.subarray(0, len));
        assert.equal(r.kind, 'more');
        if (r.kind === 'more') {
          assert.ok(r.need > len, `need ${r.need} after ${len} bytes`);
          assert.ok(r.need <= c.bytes.length, `need ${r.need} of a ${c.bytes.length}-byte ClientHello`);
        }
      }),
      { numRuns: RUNS },
    );
  });

  test('property: a real ClientHello re-framed into several TLS records, then split, still gives its name', () => {
    fc.assert(
      fc.property(fc.constantFrom(...captures), fc.array(fc.nat(), { maxLength: 20 }), fc.array(fc.nat(), { maxLength: 8 }), fc.constantFrom(0x0301, 0x0303), (c, rawRecordCuts, rawTcpCuts, version) => {
        const hs = handshakeOf(c.bytes);
        const framed = frame(hs, rawRecordCuts.map((x) => x % hs.length), version);
        const results = feed(framed, rawTcpCuts.map((x) => x % framed.length));
        assert.deepEqual(results.at(-1), { kind: 'sni', name: c.servername.toLowerCase() });
        for (const r of results.slice(0, -1)) assert.equal(r.kind, 'more');
      }),
      { numRuns: RUNS },
    );
  });

  test('property: synthetic ClientHellos, extensions in any order with extra ones, give the name or no_sni', () => {
    const other = fc.record({ type: fc.integer({ min: 1, max: 0xffff }), data: fc.uint8Array({ maxLength: 64 }).map((a) => Buffer.from(a)) });
    fc.assert(
      fc.property(
        fc.option(hostname, { nil: null }),
        fc.uniqueArray(other, { maxLength: 10, selector: (e) => e.type }),
        fc.nat(),
        fc.uint8Array({ maxLength: 32 }),
        fc.integer({ min: 1, max: 40 }),
        fc.array(fc.nat(), { maxLength: 6 }),
        (name, extras, pos, session, suites, cuts) => {
          const exts: Ext[] = [...extras];
          if (name !== null) exts.splice(pos % (exts.length + 1), 0, sniExt(name));
          const hs = helloMessage({ session: Buffer.from(session), suites, exts });
          const framed = frame(hs, cuts.map((x) => x % hs.length));
          const r = parseClientHello(framed);
          if (name === null) assert.deepEqual(r, { kind: 'error', reason: 'no_sni' });
          else assert.deepEqual(r, { kind: 'sni', name: name.toLowerCase() });
        },
      ),
      { numRuns: RUNS },
    );
  });

  test('property: random bytes never throw and never give a name', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 600 }), fc.boolean(), (bytes, tlsLike) => {
        // Half the cases start like a handshake record, so the parser gets past the first check.
        const b = Buffer.from(bytes);
        if (tlsLike && b.length >= 3) {
          b[0] = 22;
          b[1] = 3;
        }
        const r = parseClientHello(b);
        assert.notEqual(r.kind, 'sni');
        if (r.kind === 'more') assert.ok(r.need > b.length);
      }),
      { numRuns: RUNS * 3 },
    );
  });

  test('property: a mutated real ClientHello never throws; a name it gives is a well-formed host name', () => {
    fc.assert(
      fc.property(fc.constantFrom(...captures), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), (c, edits) => {
        const b = Buffer.from(c.bytes);
        for (const [at, v] of edits) b[at % b.length] = v;
        const r = parseClientHello(b);
        if (r.kind === 'sni') assert.match(r.name, /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/);
        if (r.kind === 'more') assert.ok(r.need > b.length);
      }),
      { numRuns: RUNS },
    );
  });

  test('errors: not TLS, no SNI, malformed, too large', () => {
    const err = (reason: string): SniResult => ({ kind: 'error', reason }) as SniResult;
    assert.deepEqual(parseClientHello(Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')), err('not_tls'));
    assert.deepEqual(parseClientHello(Buffer.from('G')), err('not_tls'), 'judged on the first byte');
    assert.deepEqual(parseClientHello(Buffer.from([0x16, 0x02])), err('not_tls'), 'record version major must be 3');
    // SSLv2-compatible hello (high bit set in the first byte).
    assert.deepEqual(parseClientHello(Buffer.from([0x80, 0x2e, 0x01, 0x03, 0x01])), err('not_tls'));
    assert.deepEqual(parseClientHello(Buffer.alloc(0)), { kind: 'more', need: 5 });
    assert.deepEqual(parseClientHello(frame(helloMessage({ session: Buffer.alloc(0), suites: 2, exts: [] }), [])), err('no_sni'));
    assert.deepEqual(parseClientHello(frame(helloMessage({ session: Buffer.alloc(0), suites: 2, exts: null }), [])), err('no_sni'));
    // An alert record after the first fragment: not a ClientHello.
    const hs = helloMessage({ session: Buffer.alloc(0), suites: 2, exts: [sniExt('a.b')] });
    const first = frame(hs.subarray(0, 10), []);
    assert.deepEqual(parseClientHello(Buffer.concat([first, Buffer.from([21, 3, 3, 0, 2, 2, 40])])), err('malformed'));
    // A ServerHello (type 2) where a ClientHello belongs.
    const server = Buffer.from(hs);
    server[0] = 2;
    assert.deepEqual(parseClientHello(frame(server, [])), err('malformed'));
    // Two server_name extensions; two host names; a bad character; an empty label; a trailing dot.
    assert.deepEqual(parseClientHello(frame(helloMessage({ session: Buffer.alloc(0), suites: 2, exts: [sniExt('a.b'), sniExt('c.d')] }), [])), err('malformed'));
    for (const bad of ['a b', 'a..b', 'a.b.', 'é.x', '.a']) {
      assert.deepEqual(parseClientHello(frame(helloMessage({ session: Buffer.alloc(0), suites: 2, exts: [sniExt(bad)] }), [])), err('malformed'), bad);
    }
    // Extensions' length one byte short of the body.
    const short = Buffer.from(hs);
    short.writeUInt16BE(short.readUInt16BE(4 + 2 + 32 + 1 + 2 + 4 + 2) - 1, 4 + 2 + 32 + 1 + 2 + 4 + 2);
    assert.deepEqual(parseClientHello(frame(short, [])), err('malformed'));
    // A zero-length handshake record.
    assert.deepEqual(parseClientHello(Buffer.from([22, 3, 1, 0, 0])), err('malformed'));
    // A ClientHello announcing more than the cap is refused from its header alone.
    assert.deepEqual(parseClientHello(Buffer.from([22, 3, 1, 0, 4, 1, 0, 0x40, 0x01])), err('too_large'));
    assert.deepEqual(parseClientHello(Buffer.from([22, 3, 1, 0, 4, 1, 0, 0x01, 0x00]), 200), err('too_large'));
    // A big but allowed ClientHello (padding extension) across several records parses.
    const big = helloMessage({ session: Buffer.alloc(32), suites: 30, exts: [{ type: 21, data: Buffer.alloc(MAX_CLIENT_HELLO - 500) }, sniExt('big.example')] });
    assert.ok(big.length > 16384 - 500 && big.length <= MAX_CLIENT_HELLO);
    assert.deepEqual(parseClientHello(frame(big, [4000, 8000, 12000])), { kind: 'sni', name: 'big.example' });
    // One-byte records without end: refused once too many records came.
    const padded = helloMessage({ session: Buffer.alloc(0), suites: 2, exts: [{ type: 21, data: Buffer.alloc(100) }, sniExt('a.b')] });
    const dribble = frame(padded, Array.from({ length: padded.length }, (_v, i) => i));
    assert.deepEqual(parseClientHello(dribble), err('too_large'));
  });
});
