// HalfSipHash-2-4 with a 32-bit tag: the 32-bit-word variant of SipHash (Aumasson & Bernstein),
// as specified by the authors' reference implementation (github.com/veorq/SipHash, halfsiphash.c).
// Runs on: any thread (the control thread when compiling, workers on every lookup).
//
// Why this hash: the names we hash arrive in peer certificates, i.e. an attacker chooses them.
// With an unkeyed hash (FNV, xxHash with a fixed seed) an attacker can precompute thousands of
// names that land in one bucket and turn each lookup into a linear scan. A keyed PRF makes that
// precomputation useless without the 64-bit key, which the control thread draws at random and
// never sends anywhere but the shared table. The 32-bit-word variant is used because every
// operation (add, xor, rotate) maps onto JS int32 arithmetic with no BigInt and no allocation,
// and onto i32 WebAssembly instructions for the later WASM twin.
//
// 2-4 = 2 compression rounds per 4-byte word, 4 finalisation rounds (the reference defaults).
//
// Key convention: the 8 key bytes k[0..7] are read little-endian as two words,
// key0 = k[0] | k[1]<<8 | k[2]<<16 | k[3]<<24 and key1 = k[4..7] likewise; the reference test
// vectors use k = 00 01 .. 07, i.e. key0 = 0x03020100, key1 = 0x07060504.
//
// Output convention: the reference writes the tag little-endian; we return it as a signed int32
// (`| 0`), which is what an Int32Array slot stores, so table code compares hashes with `===`
// without ever creating a heap number. Use `>>> 0` for the unsigned value.

// Initial state constants from the reference: "lyge" and "tedb" as little-endian words (the
// 32-bit halves of SipHash's "somepseudorandomlygeneratedbytes").
const INIT_V2 = 0x6c796765;
const INIT_V3 = 0x74656462;

/**
 * HalfSipHash-2-4, 32-bit tag, over `data[start .. end)`.
 * Allocation-free; `start`/`end` must lie within `data` (not checked: this is a hot-path helper).
 * Returns the tag as a signed int32.
 */
export function halfSipHash24(
  key0: number,
  key1: number,
  data: Uint8Array,
  start: number,
  end: number,
): number {
  let v0 = key0 | 0;
  let v1 = key1 | 0;
  let v2 = (INIT_V2 ^ key0) | 0;
  let v3 = (INIT_V3 ^ key1) | 0;
  const len = end - start;
  const wordsEnd = start + (len & ~3);
  // The message is absorbed as whole little-endian words, then one final word holding the
  // 0..3 tail bytes in its low bytes and (length mod 256) in its top byte. Both kinds go through
  // the same compression, so the loop runs once more than the number of whole words.
  let i = start;
  for (;;) {
    let m: number;
    if (i < wordsEnd) {
      m = data[i]! | (data[i + 1]! << 8) | (data[i + 2]! << 16) | (data[i + 3]! << 24);
      i += 4;
    } else {
      m = len << 24;
      const tail = end - i;
      if (tail >= 3) m |= data[i + 2]! << 16;
      if (tail >= 2) m |= data[i + 1]! << 8;
      if (tail >= 1) m |= data[i]!;
      i = end + 1; // marks "final word absorbed"
    }
    v3 ^= m;
    for (let r = 0; r < 2; r++) {
      v0 = (v0 + v1) | 0; v1 = (v1 << 5) | (v1 >>> 27); v1 ^= v0; v0 = (v0 << 16) | (v0 >>> 16);
      v2 = (v2 + v3) | 0; v3 = (v3 << 8) | (v3 >>> 24); v3 ^= v2;
      v0 = (v0 + v3) | 0; v3 = (v3 << 7) | (v3 >>> 25); v3 ^= v0;
      v2 = (v2 + v1) | 0; v1 = (v1 << 13) | (v1 >>> 19); v1 ^= v2; v2 = (v2 << 16) | (v2 >>> 16);
    }
    v0 ^= m;
    if (i > end) break;
  }
  // 0xff marks the 32-bit-tag finalisation (the 64-bit variant uses 0xee and a second pass).
  v2 ^= 0xff;
  for (let r = 0; r < 4; r++) {
    v0 = (v0 + v1) | 0; v1 = (v1 << 5) | (v1 >>> 27); v1 ^= v0; v0 = (v0 << 16) | (v0 >>> 16);
    v2 = (v2 + v3) | 0; v3 = (v3 << 8) | (v3 >>> 24); v3 ^= v2;
    v0 = (v0 + v3) | 0; v3 = (v3 << 7) | (v3 >>> 25); v3 ^= v0;
    v2 = (v2 + v1) | 0; v1 = (v1 << 13) | (v1 >>> 19); v1 ^= v2; v2 = (v2 << 16) | (v2 >>> 16);
  }
  return v1 ^ v3;
}

/**
 * HalfSipHash-2-4 of the 8-byte message `le32(a) ‖ le32(b)`, without a byte buffer.
 * Used for the rule table's (source id, destination id) key; equal by construction to
 * `halfSipHash24(key0, key1, bytes, 0, 8)` over those 8 bytes (a test checks this).
 */
export function halfSipHash24Pair(key0: number, key1: number, a: number, b: number): number {
  let v0 = key0 | 0;
  let v1 = key1 | 0;
  let v2 = (INIT_V2 ^ key0) | 0;
  let v3 = (INIT_V3 ^ key1) | 0;
  // Three absorbed words: a, b, and the final word (length 8 in the top byte, no tail bytes).
  for (let w = 0; w < 3; w++) {
    const m = w === 0 ? a | 0 : w === 1 ? b | 0 : 8 << 24;
    v3 ^= m;
    for (let r = 0; r < 2; r++) {
      v0 = (v0 + v1) | 0; v1 = (v1 << 5) | (v1 >>> 27); v1 ^= v0; v0 = (v0 << 16) | (v0 >>> 16);
      v2 = (v2 + v3) | 0; v3 = (v3 << 8) | (v3 >>> 24); v3 ^= v2;
      v0 = (v0 + v3) | 0; v3 = (v3 << 7) | (v3 >>> 25); v3 ^= v0;
      v2 = (v2 + v1) | 0; v1 = (v1 << 13) | (v1 >>> 19); v1 ^= v2; v2 = (v2 << 16) | (v2 >>> 16);
    }
    v0 ^= m;
  }
  v2 ^= 0xff;
  for (let r = 0; r < 4; r++) {
    v0 = (v0 + v1) | 0; v1 = (v1 << 5) | (v1 >>> 27); v1 ^= v0; v0 = (v0 << 16) | (v0 >>> 16);
    v2 = (v2 + v3) | 0; v3 = (v3 << 8) | (v3 >>> 24); v3 ^= v2;
    v0 = (v0 + v3) | 0; v3 = (v3 << 7) | (v3 >>> 25); v3 ^= v0;
    v2 = (v2 + v1) | 0; v1 = (v1 << 13) | (v1 >>> 19); v1 ^= v2; v2 = (v2 << 16) | (v2 >>> 16);
  }
  return v1 ^ v3;
}
