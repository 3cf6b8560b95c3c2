// The CA's DER reader and writer (src/ca/asn1.ts): strictness on input, canonical output,
// and round trips through each other, through openssl and through Node's X509Certificate.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  DerError,
  TAG_INTEGER,
  TAG_SEQUENCE,
  childrenOf,
  contentOf,
  expectElement,
  oid,
  readElement,
  readOid,
  readTime,
  sequence,
  time,
  tlv,
  unsignedInteger,
} from '../../src/ca/asn1.ts';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

test('writer: known encodings (X.690, RFC 5280)', () => {
  assert.equal(hex(oid('1.2.840.10045.4.3.2')), '06082a8648ce3d040302'); // ecdsa-with-SHA256
  assert.equal(hex(oid('2.5.29.17')), '0603551d11');
  assert.equal(hex(oid('1.3.6.1.5.5.7.3.1')), '06082b06010505070301');
  assert.equal(hex(unsignedInteger(Uint8Array.of(0x7f))), '02017f');
  assert.equal(hex(unsignedInteger(Uint8Array.of(0x80))), '02020080'); // sign bit needs a zero octet
  assert.equal(hex(unsignedInteger(Uint8Array.of(0, 0, 1))), '020101'); // leading zeros dropped
  assert.equal(hex(unsignedInteger(Uint8Array.of(0))), '020100');
  assert.equal(hex(sequence()), '3000');
  assert.equal(hex(tlv(0x04, new Uint8Array(127))).slice(0, 4), '047f');
  assert.equal(hex(tlv(0x04, new Uint8Array(128))).slice(0, 6), '048180');
  assert.equal(hex(tlv(0x04, new Uint8Array(256))).slice(0, 8), '04820100');
  assert.equal(hex(tlv(0x04, new Uint8Array(65536))).slice(0, 10), '0483010000');
  assert.equal(Buffer.from(time(Date.UTC(2049, 11, 31, 23, 59, 59))).toString('latin1', 2), '491231235959Z');
  assert.equal(time(Date.UTC(2049, 11, 31, 23, 59, 59))[0], 0x17);
  assert.equal(Buffer.from(time(Date.UTC(2050, 0, 1))).toString('latin1', 2), '20500101000000Z');
  assert.equal(time(Date.UTC(2050, 0, 1))[0], 0x18);
  assert.equal(Buffer.from(time(Date.UTC(1949, 11, 31, 23, 59, 59))).toString('latin1', 2), '19491231235959Z');
  assert.equal(Buffer.from(time(Date.UTC(1950, 0, 1))).toString('latin1', 2), '500101000000Z');
  assert.throws(() => time(Date.UTC(2026, 0, 1) + 1), RangeError); // no fractions in X.509
});

test('reader: strict DER only', () => {
  const bad: [string, number[]][] = [
    ['truncated header', [0x30]],
    ['runs past the end', [0x04, 0x03, 1, 2]],
    ['indefinite length', [0x30, 0x80, 0, 0]],
    ['non-minimal long form', [0x04, 0x81, 0x05, 1, 2, 3, 4, 5]],
    ['leading zero length octet', [0x04, 0x82, 0x00, 0x80, ...new Array<number>(128).fill(0)]],
    ['multi-byte tag', [0x1f, 0x81, 0x01, 0x00]],
    ['too many length octets', [0x04, 0x85, 1, 0, 0, 0, 0]],
  ];
  for (const [name, bytes] of bad) {
    const b = Uint8Array.from(bytes);
    assert.throws(() => readElement(b, 0, b.length), DerError, name);
  }
  // A child that overruns its parent (but not the buffer) is caught at the parent's limit.
  const nested = Uint8Array.from([0x30, 0x02, 0x04, 0x03, 1, 2, 3]);
  assert.throws(() => childrenOf(nested, readElement(nested, 0, nested.length)), DerError);
  assert.throws(() => expectElement(Uint8Array.of(0x02, 0x01, 0x00), 0, 3, TAG_SEQUENCE, 'thing'), /thing: expected tag 0x30/);
  // OIDs: a non-minimal arc (leading 0x80) and a truncated arc.
  assert.throws(() => readOid(Uint8Array.of(0x06, 0x02, 0x80, 0x01), { tag: 0x06, at: 0, start: 2, end: 4 }), DerError);
  assert.throws(() => readOid(Uint8Array.of(0x06, 0x02, 0x2a, 0x86), { tag: 0x06, at: 0, start: 2, end: 4 }), DerError);
});

test('readTime: RFC 5280 forms only, real calendar dates', () => {
  const el = (tag: number, s: string) => {
    const b = tlv(tag, Buffer.from(s, 'latin1'));
    return { b, e: readElement(b, 0, b.length) };
  };
  const ok = (tag: number, s: string) => {
    const { b, e } = el(tag, s);
    return readTime(b, e);
  };
  assert.equal(ok(0x17, '500101000000Z'), Date.UTC(1950, 0, 1));
  assert.equal(ok(0x17, '491231235959Z'), Date.UTC(2049, 11, 31, 23, 59, 59));
  assert.equal(ok(0x18, '00010101000000Z'), new Date('0001-01-01T00:00:00Z').getTime());
  for (const [tag, s] of [
    [0x17, '490230000000Z'], // 30 February
    [0x17, '491231240000Z'],
    [0x17, '491231235960Z'],
    [0x17, '4912312359Z'], // no seconds
    [0x17, '491231235959+0000'],
    [0x18, '20500101000000.5Z'], // fraction
    [0x18, '2050010100000aZ'],
    [0x04, '20500101000000Z'], // not a time tag
  ] as const) {
    const { b, e } = el(tag, s);
    assert.throws(() => readTime(b, e), DerError, s);
  }
});

test('property: time() and readTime() round-trip every whole second from year 1 to 9999', () => {
  fc.assert(
    fc.property(fc.integer({ min: -62135596800, max: 253402300799 }), (sec) => {
      const ms = sec * 1000;
      const b = time(ms);
      assert.equal(readTime(b, readElement(b, 0, b.length)), ms);
      const year = new Date(ms).getUTCFullYear();
      assert.equal(b[0], year >= 1950 && year <= 2049 ? 0x17 : 0x18);
    }),
    { numRuns: 5000 },
  );
});

test('property: unsignedInteger is minimal, positive and the same number', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 40 }), (bytes) => {
      const enc = unsignedInteger(bytes);
      const el = readElement(enc, 0, enc.length);
      assert.equal(el.tag, TAG_INTEGER);
      const c = contentOf(enc, el);
      assert.equal(c[0]! & 0x80, 0, 'positive');
      if (c.length > 1) assert.ok(!(c[0] === 0 && (c[1]! & 0x80) === 0), 'minimal');
      assert.equal(BigInt(`0x${hex(c) || '0'}`), BigInt(`0x${hex(bytes)}`));
    }),
    { numRuns: 2000 },
  );
});

test('property: oid() and readOid() round-trip; openssl agrees on the encoding', () => {
  const dotted = fc
    .tuple(fc.integer({ min: 0, max: 2 }), fc.integer({ min: 0, max: 39 }), fc.array(fc.integer({ min: 0, max: 2 ** 40 }), { maxLength: 8 }))
    .map(([a, b, rest]) => [a, b, ...rest].join('.'));
  fc.assert(
    fc.property(dotted, (d) => {
      const enc = oid(d);
      assert.equal(readOid(enc, readElement(enc, 0, enc.length)), d);
    }),
    { numRuns: 2000 },
  );
  // openssl's own encoder for a few arcs, including multi-byte ones.
  const dir = mkdtempSync(join(tmpdir(), 'meshd-asn1-'));
  try {
    for (const d of ['1.2.840.113549.1.9.14', '2.999.1', '1.3.6.1.4.1.311.20.2.3']) {
      const out = join(dir, 'oid.der');
      execFileSync('openssl', ['asn1parse', '-genstr', `OID:${d}`, '-noout', '-out', out]);
      assert.equal(hex(oid(d)), readFileSync(out).toString('hex'), d);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
