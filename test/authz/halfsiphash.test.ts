import assert from 'node:assert/strict';
import { test } from 'node:test';
import { halfSipHash24, halfSipHash24Pair } from '../../src/authz/halfsiphash.ts';
import { xorshift32 } from './fixtures.ts';

// The reference test vectors of HalfSipHash-2-4 with a 32-bit tag: `vectors_hsip32` in
// vectors.h of the authors' reference implementation (github.com/veorq/SipHash), key bytes
// 00 01 .. 07, message i = bytes 00 01 .. (i-1) for i = 0..63, tag bytes little-endian.
const VECTORS_HSIP32: readonly (readonly [number, number, number, number])[] = [
  [0xa9, 0x35, 0x9f, 0x5b], [0x27, 0x47, 0x5a, 0xb8], [0xfa, 0x62, 0xa6, 0x03], [0x8a, 0xfe, 0xe7, 0x04],
  [0x2a, 0x6e, 0x46, 0x89], [0xc5, 0xfa, 0xb6, 0x69], [0x58, 0x63, 0xfc, 0x23], [0x8b, 0xcf, 0x63, 0xc5],
  [0xd0, 0xb8, 0x84, 0x8f], [0xf8, 0x06, 0xe7, 0x79], [0x94, 0xb0, 0x79, 0x34], [0x08, 0x08, 0x30, 0x50],
  [0x57, 0xf0, 0x87, 0x2f], [0x77, 0xe6, 0x63, 0xff], [0xd6, 0xff, 0xf8, 0x7c], [0x74, 0xfe, 0x2b, 0x97],
  [0xd9, 0xb5, 0xac, 0x84], [0xc4, 0x74, 0x64, 0x5b], [0x46, 0x5b, 0x8d, 0x9b], [0x7b, 0xef, 0xe3, 0x87],
  [0xe3, 0x4d, 0x10, 0x45], [0x61, 0x3f, 0x62, 0xb3], [0x70, 0xf3, 0x67, 0xfe], [0xe6, 0xad, 0xb8, 0xbd],
  [0x27, 0x40, 0x0c, 0x63], [0x26, 0x78, 0x78, 0x75], [0x4f, 0x56, 0x7b, 0x5f], [0x3a, 0xb0, 0xe6, 0x69],
  [0xb0, 0x64, 0x40, 0x00], [0xff, 0x67, 0x0f, 0xb4], [0x50, 0x9e, 0x33, 0x8b], [0x5d, 0x58, 0x9f, 0x1a],
  [0xfe, 0xe7, 0x21, 0x12], [0x33, 0x75, 0x32, 0x59], [0x6a, 0x43, 0x4f, 0x8c], [0xfe, 0x28, 0xb7, 0x29],
  [0xe7, 0x5c, 0xc6, 0xec], [0x69, 0x7e, 0x8d, 0x54], [0x63, 0x68, 0x8b, 0x0f], [0x65, 0x0b, 0x62, 0xb4],
  [0xb6, 0xbc, 0x18, 0x40], [0x5d, 0x07, 0x45, 0x05], [0x24, 0x42, 0xfd, 0x2e], [0x7b, 0xb7, 0x86, 0x3a],
  [0x77, 0x05, 0xd5, 0x48], [0xd7, 0x52, 0x08, 0xb1], [0xb6, 0xd4, 0x99, 0xc8], [0x08, 0x92, 0x20, 0x2e],
  [0x69, 0xe1, 0x2c, 0xe3], [0x8d, 0xb5, 0x80, 0xe5], [0x36, 0x97, 0x64, 0xc6], [0x01, 0x6e, 0x02, 0x04],
  [0x3b, 0x85, 0xf3, 0xd4], [0xfe, 0xdb, 0x66, 0xbe], [0x1e, 0x69, 0x2a, 0x3a], [0xc6, 0x89, 0x84, 0xc0],
  [0xa5, 0xc5, 0xb9, 0x40], [0x9b, 0xe9, 0xe8, 0x8c], [0x7d, 0xbc, 0x81, 0x40], [0x7c, 0x07, 0x8e, 0xc5],
  [0xd4, 0xe7, 0x6c, 0x73], [0x42, 0x8f, 0xcb, 0xb9], [0xbd, 0x83, 0x99, 0x7a], [0x59, 0xea, 0x4a, 0x74],
];

// Key bytes 00..07 read little-endian (see halfsiphash.ts, "Key convention").
const REF_K0 = 0x03020100;
const REF_K1 = 0x07060504;

function le32(bytes: readonly number[]): number {
  return (bytes[0]! | (bytes[1]! << 8) | (bytes[2]! << 16) | (bytes[3]! << 24)) >>> 0;
}

test('HalfSipHash-2-4 matches all 64 reference vectors (vectors_hsip32)', () => {
  const message = Uint8Array.from({ length: 64 }, (_, i) => i);
  assert.equal(VECTORS_HSIP32.length, 64);
  for (let len = 0; len < 64; len++) {
    const got = halfSipHash24(REF_K0, REF_K1, message, 0, len) >>> 0;
    assert.equal(got, le32(VECTORS_HSIP32[len]!), `message length ${len}`);
  }
});

test('hashes a sub-range in place, independent of the bytes around it', () => {
  const message = Uint8Array.from({ length: 64 }, (_, i) => i);
  for (let len = 0; len < 40; len++) {
    const padded = new Uint8Array(len + 24).fill(0xee);
    padded.set(message.subarray(0, len), 11);
    assert.equal(halfSipHash24(REF_K0, REF_K1, padded, 11, 11 + len) >>> 0, le32(VECTORS_HSIP32[len]!));
  }
});

test('halfSipHash24Pair equals the byte hash of le32(a) ‖ le32(b)', () => {
  const next = xorshift32(0x5eed);
  const bytes = new Uint8Array(8);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < 2000; i++) {
    const k0 = next() | 0;
    const k1 = next() | 0;
    const a = i < 10 ? i : next() | 0;
    const b = i < 10 ? 0 : next() | 0;
    view.setInt32(0, a, true);
    view.setInt32(4, b, true);
    assert.equal(halfSipHash24Pair(k0, k1, a, b), halfSipHash24(k0, k1, bytes, 0, 8));
  }
});

test('collision smoke test: a 32-bit collision found under one key does not survive a key change', () => {
  // Birthday bound: a full 32-bit collision among n names is likely once n ≈ 2^16 × 1.18 ≈ 77k,
  // so searching 400k names finds one with overwhelming probability. This is exactly what an
  // attacker could do against a fixed key; under a second key the same two names must differ.
  const keyA: [number, number] = [0x01234567, 0x89abcdef];
  const keyB: [number, number] = [0x0badf00d, 0x12345678];
  const enc = new TextEncoder();
  const seen = new Map<number, string>();
  let pair: [string, string] | undefined;
  for (let i = 0; i < 400_000 && pair === undefined; i++) {
    const name = `svc-${i}`;
    const b = enc.encode(name);
    const h = halfSipHash24(keyA[0], keyA[1], b, 0, b.length);
    const prior = seen.get(h);
    if (prior !== undefined) pair = [prior, name];
    else seen.set(h, name);
  }
  assert.ok(pair, 'expected a birthday collision under key A within 400k names');
  const [x, y] = pair.map((s) => enc.encode(s)) as [Uint8Array, Uint8Array];
  assert.equal(halfSipHash24(keyA[0], keyA[1], x, 0, x.length), halfSipHash24(keyA[0], keyA[1], y, 0, y.length));
  assert.notEqual(halfSipHash24(keyB[0], keyB[1], x, 0, x.length), halfSipHash24(keyB[0], keyB[1], y, 0, y.length));

  // Bucket level (what a table of 1024 slots sees): names crowding one bucket under key A spread
  // out under key B. 64 names sharing bucket 0 under A should hit ≈ 62 distinct buckets under B
  // (1024 × (1 − (1 − 1/1024)^64)); demand at least 48.
  const crowd: Uint8Array[] = [];
  for (let i = 0; crowd.length < 64; i++) {
    const b = enc.encode(`attacker-${i}`);
    if ((halfSipHash24(keyA[0], keyA[1], b, 0, b.length) & 1023) === 0) crowd.push(b);
  }
  const bucketsB = new Set(crowd.map((b) => halfSipHash24(keyB[0], keyB[1], b, 0, b.length) & 1023));
  assert.ok(bucketsB.size >= 48, `only ${bucketsB.size} distinct buckets under key B`);
});
