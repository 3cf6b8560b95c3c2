import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate, createHash } from 'node:crypto';
import fc from 'fast-check';
import {
  SERIAL_BYTES,
  colonHex,
  keyId,
  pemDecode,
  pemDecodeAll,
  pemEncode,
  randomSerial,
  sha1Fingerprint,
} from '../../src/ca/certs.ts';
import { makeCert } from './helpers.ts';

test('colonHex is lower-case pairs joined by colons (Consul HexString)', () => {
  assert.equal(colonHex(new Uint8Array([])), '');
  assert.equal(colonHex(new Uint8Array([0x08])), '08');
  assert.equal(colonHex(new Uint8Array([0x2d, 0x09, 0x5d, 0xff])), '2d:09:5d:ff');
  // Respects the view's offset and length.
  const big = new Uint8Array([1, 2, 3, 4]);
  assert.equal(colonHex(big.subarray(1, 3)), '02:03');
});

test('keyId is SHA-256 of the SPKI DER (32 bytes), not the RFC 5280 SHA-1', () => {
  const spki = new Uint8Array([0x30, 0x00]);
  assert.deepEqual(Buffer.from(keyId(spki)), createHash('sha256').update(spki).digest());
  assert.equal(keyId(spki).length, 32);
});

test('sha1Fingerprint matches Node/OpenSSL fingerprint of the same certificate', async () => {
  const der = await makeCert([]);
  const node = new X509Certificate(der).fingerprint.toLowerCase();
  assert.equal(sha1Fingerprint(der), node);
  assert.equal(sha1Fingerprint(der).split(':').length, 20);
});

test('randomSerial: 16 bytes, positive, minimally encoded, not repeating', () => {
  const seen = new Set<string>();
  for (let i = 0; i < 2000; i++) {
    const s = randomSerial();
    assert.equal(s.length, SERIAL_BYTES);
    const first = s[0] as number;
    assert.ok(first >= 0x01 && first <= 0x7f, `first byte ${first}`);
    // >= 2^120 > 2^64: comfortably past the 64-bit entropy floor.
    assert.ok(BigInt(`0x${Buffer.from(s).toString('hex')}`) >= 1n << 64n);
    seen.add(colonHex(s));
  }
  assert.equal(seen.size, 2000);
});

test('PEM round-trip, 64-column lines, multiple blocks, strict bodies', () => {
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), (bytes) => {
      const pem = pemEncode('CERTIFICATE', bytes);
      assert.ok(pem.endsWith('-----END CERTIFICATE-----\n'));
      for (const line of pem.split('\n')) assert.ok(line.length <= 64 || line.startsWith('-----'));
      assert.deepEqual(pemDecode(pem, 'CERTIFICATE'), bytes);
    }),
  );
  const a = pemEncode('CERTIFICATE', new Uint8Array([1, 2, 3]));
  const k = pemEncode('PRIVATE KEY', new Uint8Array([9]));
  const b = pemEncode('CERTIFICATE', new Uint8Array([4, 5]));
  const bundle = `comment\n${a}${k}\r\n${b.replaceAll('\n', '\r\n')}`;
  assert.deepEqual(pemDecodeAll(bundle, 'CERTIFICATE'), [new Uint8Array([1, 2, 3]), new Uint8Array([4, 5])]);
  assert.deepEqual(pemDecode(bundle, 'PRIVATE KEY'), new Uint8Array([9]));
  assert.deepEqual(pemDecodeAll('nothing here', 'CERTIFICATE'), []);
  assert.throws(() => pemDecode('nothing here', 'CERTIFICATE'), /no PEM CERTIFICATE block/);
  assert.throws(() => pemDecode('-----BEGIN CERTIFICATE-----\nAAAA\n', 'CERTIFICATE'), /no END line/);
  assert.throws(() => pemDecode('-----BEGIN CERTIFICATE-----\nAA*A\n-----END CERTIFICATE-----\n', 'CERTIFICATE'), /malformed/);
  assert.throws(
    () => pemDecode('-----BEGIN CERTIFICATE-----\nProc-Type: 4,ENCRYPTED\nAAAA\n-----END CERTIFICATE-----\n', 'CERTIFICATE'),
    /malformed/,
  );
});
