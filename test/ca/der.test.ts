import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { readCertIdentity, type CertIdentity } from '../../src/ca/der.ts';
import { makeCert, x509 } from './helpers.ts';

const U1 = 'spiffe://a.consul/ns/default/dc/dc1/svc/web';
const U2 = 'spiffe://a.consul/ns/default/dc/dc1/svc/api';

function san(names: { type: 'url' | 'dns' | 'ip' | 'email'; value: string }[], critical = false): x509.Extension {
  return new x509.SubjectAlternativeNameExtension(names, critical);
}

/** Independent reading of the same facts through @peculiar/x509 (a BER-tolerant parser). */
function peculiarIdentity(der: Uint8Array): CertIdentity | null {
  try {
    const cert = new x509.X509Certificate(der);
    const sans = cert.getExtensions(x509.SubjectAlternativeNameExtension);
    const uris = Array.from(sans).flatMap((e) => e.names.items.filter((n) => n.type === 'url').map((n) => n.value));
    const bc = cert.getExtension(x509.BasicConstraintsExtension);
    return { uris, isCA: bc?.ca ?? false };
  } catch {
    return null;
  }
}

/** Finds `needle` in `hay`; -1 if absent. */
function indexOfBytes(hay: Uint8Array, needle: number[]): number {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

// A fixed corpus, built once: the shapes the data plane meets.
const corpus = {
  noSan: await makeCert([]),
  dnsOnly: await makeCert([san([{ type: 'dns', value: 'web.example' }])]),
  oneUri: await makeCert([san([{ type: 'url', value: U1 }], true), new x509.BasicConstraintsExtension(false, undefined, true)]),
  twoUrisAndDns: await makeCert([
    san([
      { type: 'dns', value: 'localhost' },
      { type: 'url', value: U1 },
      { type: 'ip', value: '127.0.0.1' },
      { type: 'url', value: U2 },
    ]),
  ]),
  ca: await makeCert([
    new x509.BasicConstraintsExtension(true, 0, true),
    new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    san([{ type: 'url', value: 'spiffe://a.consul' }]),
  ]),
};

test('reads URI SANs and the CA flag from @peculiar-generated certificates', () => {
  assert.deepEqual(readCertIdentity(corpus.noSan), { uris: [], isCA: false });
  assert.deepEqual(readCertIdentity(corpus.dnsOnly), { uris: [], isCA: false });
  assert.deepEqual(readCertIdentity(corpus.oneUri), { uris: [U1], isCA: false });
  assert.deepEqual(readCertIdentity(corpus.twoUrisAndDns), { uris: [U1, U2], isCA: false });
  assert.deepEqual(readCertIdentity(corpus.ca), { uris: ['spiffe://a.consul'], isCA: true });
});

test('accepts a Buffer (what getPeerX509Certificate().raw is) as well as a Uint8Array', () => {
  assert.deepEqual(readCertIdentity(Buffer.from(corpus.oneUri)), { uris: [U1], isCA: false });
  // A view into a larger buffer, at an offset.
  const big = new Uint8Array(corpus.oneUri.length + 10);
  big.set(corpus.oneUri, 7);
  assert.deepEqual(readCertIdentity(big.subarray(7, 7 + corpus.oneUri.length)), { uris: [U1], isCA: false });
});

test('every truncation of a valid certificate is null; so is trailing data', () => {
  for (const der of Object.values(corpus)) {
    for (let n = 0; n < der.length; n++) assert.equal(readCertIdentity(der.subarray(0, n)), null, `prefix ${n}`);
    const padded = new Uint8Array(der.length + 1);
    padded.set(der);
    assert.equal(readCertIdentity(padded), null);
  }
});

test('rejects BER-isms and RFC 5280 violations', async () => {
  const der = corpus.oneUri;

  // Outer SEQUENCE length re-encoded in a non-minimal long form (0x82 00 LL).
  assert.equal(der[1], 0x82);
  const nonMinimal = new Uint8Array(der.length + 1);
  nonMinimal.set([0x30, 0x83, 0x00], 0);
  nonMinimal.set(der.subarray(2), 3);
  assert.equal(readCertIdentity(nonMinimal), null);

  // Indefinite length.
  const indefinite = Uint8Array.from(der);
  indefinite[1] = 0x80;
  assert.equal(readCertIdentity(indefinite), null);

  // BOOLEAN TRUE must be 0xFF in DER: basicConstraints critical flag `01 01 ff` -> `01 01 01`.
  const bcOid = indexOfBytes(der, [0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff]);
  assert.ok(bcOid > 0);
  const badBool = Uint8Array.from(der);
  badBool[bcOid + 7] = 0x01;
  assert.equal(readCertIdentity(badBool), null);

  // Duplicate SAN or basicConstraints extensions.
  assert.equal(readCertIdentity(await makeCert([san([{ type: 'url', value: U1 }]), san([{ type: 'url', value: U2 }])])), null);
  assert.equal(
    readCertIdentity(await makeCert([new x509.BasicConstraintsExtension(true), new x509.BasicConstraintsExtension(false)])),
    null,
  );

  // A URI SAN holding a space or a control character is not an IA5 URI we accept.
  const uriAt = indexOfBytes(der, [...Buffer.from(U1, 'latin1')]);
  for (const c of [0x20, 0x00, 0x7f, 0xc3]) {
    const m = Uint8Array.from(der);
    m[uriAt + 5] = c;
    assert.equal(readCertIdentity(m), null, `byte ${c}`);
  }

  // Not bytes at all.
  assert.equal(readCertIdentity('0\x82' as unknown as Uint8Array), null);
  assert.equal(readCertIdentity(undefined as unknown as Uint8Array), null);
});

test('property: random bytes never throw and yield null or a well-formed result', () => {
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 600 }), (bytes) => {
      const r = readCertIdentity(bytes);
      if (r !== null) {
        assert.ok(Array.isArray(r.uris) && typeof r.isCA === 'boolean');
        for (const u of r.uris) assert.match(u, /^[\x21-\x7e]+$/);
      }
    }),
    { numRuns: 20000 },
  );
  // Random bytes behind a plausible certificate header, so the walk gets further in.
  fc.assert(
    fc.property(fc.uint8Array({ minLength: 1, maxLength: 300 }), (body) => {
      const b = new Uint8Array(body.length + 4);
      b.set([0x30, 0x82, body.length >> 8, body.length & 0xff]);
      b.set(body, 4);
      readCertIdentity(b);
    }),
    { numRuns: 20000 },
  );
});

test('property: mutated certificates never throw, and when accepted agree with @peculiar/x509', () => {
  const certs = Object.values(corpus);
  const mutation = fc.record({
    which: fc.nat({ max: certs.length - 1 }),
    edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
  });
  let accepted = 0;
  fc.assert(
    fc.property(mutation, ({ which, edits }) => {
      const m = Uint8Array.from(certs[which] as Uint8Array);
      for (const [at, v] of edits) m[at % m.length] = v;
      const ours = readCertIdentity(m);
      if (ours === null) return;
      accepted++;
      for (const u of ours.uris) assert.match(u, /^[\x21-\x7e]+$/);
      const theirs = peculiarIdentity(m);
      // Where a full parser also reads it, both must see the same identity.
      if (theirs !== null) assert.deepEqual(ours, theirs);
    }),
    { numRuns: 5000 },
  );
  // Most single-byte edits land in key/signature bytes and stay structurally valid.
  assert.ok(accepted > 100, `only ${accepted} mutants were accepted; the property did not exercise much`);
});
