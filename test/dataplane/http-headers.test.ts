// Proxy header handling: hop-by-hop stripping (RFC 9110 §7.6.1), Consul's header modifiers,
// and the has-a-body test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import type { IncomingMessage } from 'node:http';
import fc from 'fast-check';
import { NO_HEADER_MODIFIERS as NO_MODIFIERS, isEmptyHeaderModifiers as isEmptyModifiers } from '../../src/chain/types.ts';
import { XFCC, afterRequestBody, applyModifiers, forwardHeaders, hasBody } from '../../src/dataplane/http-headers.ts';
import type { HeaderModifiers } from '../../src/chain/types.ts';

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'te', 'transfer-encoding', 'upgrade', 'trailer', 'proxy-authenticate', 'proxy-authorization', 'expect'];

function mods(partial: Partial<HeaderModifiers>): HeaderModifiers {
  return { ...NO_MODIFIERS, ...partial };
}

/** Random upper/lower casing of `s`, driven by a bit mask. */
function recase(s: string, mask: number): string {
  let out = '';
  for (let i = 0; i < s.length; i++) out += (mask >> i % 31) & 1 ? s.charAt(i).toUpperCase() : s.charAt(i);
  return out;
}

// ---- forwardHeaders ----

test('forwardHeaders removes every hop-by-hop header, in any case', () => {
  for (const h of HOP_BY_HOP) {
    for (const name of [h, h.toUpperCase(), recase(h, 0b10101010101)]) {
      const raw = ['Host', 'a', name, 'v', 'Accept', '*/*'];
      assert.deepEqual(forwardHeaders(raw), ['Host', 'a', 'Accept', '*/*'], name);
    }
  }
});

test('forwardHeaders removes the headers that Connection names (trimmed, case-insensitive, every Connection header)', () => {
  const raw = [
    'Host', 'h',
    'Connection', 'close, X-Foo ,  x-BAR,,',
    'x-foo', '1',
    'X-Keep', '2',
    'X-Bar', '3',
    'connection', 'x-later',
    'X-Later', '4',
    'X-Earlier-Named-Later', '5',
    'CONNECTION', 'x-earlier-named-later',
  ];
  assert.deepEqual(forwardHeaders(raw), ['Host', 'h', 'X-Keep', '2']);
});

test('forwardHeaders: a Connection token names the header only, not headers it is a prefix of', () => {
  assert.deepEqual(forwardHeaders(['Connection', 'x-a', 'x-a', '1', 'x-ab', '2', 'x', '3']), ['x-ab', '2', 'x', '3']);
});

test('forwardHeaders keeps order, duplicates, original name case and values (Set-Cookie lists)', () => {
  const raw = ['Set-Cookie', 'a=1', 'X-Dup', 'one', 'set-cookie', 'b=2', 'X-Dup', 'two', 'Content-Length', '5', 'Via', ''];
  const out = forwardHeaders(raw);
  assert.deepEqual(out, raw);
  assert.notEqual(out, raw, 'a copy, not the input');
});

test('forwardHeaders does not modify its input', () => {
  const raw = ['Connection', 'x-a', 'x-a', '1', 'TE', 'trailers', 'b', '2'];
  const copy = [...raw];
  forwardHeaders(raw, new Set(['b']));
  assert.deepEqual(raw, copy);
});

test('forwardHeaders also removes the names in drop (lower-case names, any header case)', () => {
  const raw = ['X-Forwarded-Client-Cert', 'By=spiffe://x', 'x-jwt-payload', 'e30', 'X-Other', 'k', 'x-forwarded-client-cert', 'dup'];
  assert.deepEqual(forwardHeaders(raw, new Set([XFCC, 'x-jwt-payload'])), ['X-Other', 'k']);
  assert.deepEqual(forwardHeaders(raw, new Set()), raw);
  assert.deepEqual(forwardHeaders(raw, null), raw);
  assert.equal(XFCC, 'x-forwarded-client-cert');
});

test('forwardHeaders on empty input, and input made only of hop-by-hop headers', () => {
  assert.deepEqual(forwardHeaders([]), []);
  assert.deepEqual(forwardHeaders(['Connection', 'Upgrade', 'Upgrade', 'websocket', 'Transfer-Encoding', 'chunked']), []);
});

// Property: generated from a pool mixing hop-by-hop names, Connection headers, and ordinary names
// (some of which a Connection header may name) in random case.
const ORDINARY = ['host', 'accept', 'x-a', 'x-b', 'x-c', 'set-cookie', 'content-length', 'cookie'];
const arbName = fc.tuple(fc.constantFrom(...HOP_BY_HOP, ...ORDINARY, ...ORDINARY), fc.nat()).map(([n, mask]) => recase(n, mask));
const arbConnectionValue = fc
  .array(fc.tuple(fc.constantFrom(...ORDINARY, 'close', 'keep-alive', ''), fc.nat(), fc.constantFrom('', ' ', '  ')), { maxLength: 3 })
  .map((ts) => ts.map(([t, mask, pad]) => pad + recase(t, mask) + pad).join(','));
const arbValue = fc.string({ maxLength: 6 });
const arbRaw = fc
  .array(
    fc.oneof(
      { weight: 4, arbitrary: fc.tuple(arbName, arbValue) },
      { weight: 1, arbitrary: fc.tuple(fc.nat().map((mask) => recase('connection', mask)), arbConnectionValue) },
    ),
    { maxLength: 12 },
  )
  .map((pairs) => pairs.flat());
const arbDrop = fc.option(fc.subarray(ORDINARY).map((a) => new Set(a)), { nil: null });

test('property: forwardHeaders drops exactly the hop-by-hop, Connection-named and dropped headers, keeping the rest in order; idempotent', () => {
  fc.assert(
    fc.property(arbRaw, arbDrop, (raw, drop) => {
      const named = new Set<string>();
      for (let i = 0; i < raw.length; i += 2) {
        if ((raw[i] as string).toLowerCase() === 'connection') {
          for (const t of (raw[i + 1] as string).split(',')) if (t.trim() !== '') named.add(t.trim().toLowerCase());
        }
      }
      const gone = (n: string): boolean => HOP_BY_HOP.includes(n.toLowerCase()) || named.has(n.toLowerCase()) || (drop?.has(n.toLowerCase()) ?? false);
      const expected: string[] = [];
      for (let i = 0; i < raw.length; i += 2) if (!gone(raw[i] as string)) expected.push(raw[i] as string, raw[i + 1] as string);

      const out = forwardHeaders(raw, drop);
      assert.equal(out.length % 2, 0);
      for (let i = 0; i < out.length; i += 2) assert.ok(!gone(out[i] as string), `kept ${String(out[i])}`);
      assert.deepEqual(out, expected);
      assert.deepEqual(forwardHeaders(out, drop), out);
      // No Connection header is left, so the output is a fixed point even without `drop`.
      assert.deepEqual(forwardHeaders(out), out);
    }),
    { numRuns: 1000 },
  );
});

// ---- applyModifiers ----

test('isEmptyModifiers / NO_MODIFIERS', () => {
  assert.equal(isEmptyModifiers(NO_MODIFIERS), true);
  assert.equal(isEmptyModifiers(mods({ add: { a: '1' } })), false);
  assert.equal(isEmptyModifiers(mods({ set: { a: '1' } })), false);
  assert.equal(isEmptyModifiers(mods({ remove: ['a'] })), false);
});

test('applyModifiers with no modifiers returns the headers unchanged', () => {
  const h = ['A', '1', 'a', '2'];
  assert.equal(applyModifiers(h, NO_MODIFIERS), h);
  assert.deepEqual(h, ['A', '1', 'a', '2']);
});

test('applyModifiers: Remove drops every value of a name, case-insensitively', () => {
  const h = ['X-A', '1', 'Host', 'h', 'x-a', '2', 'X-B', '3'];
  assert.deepEqual(applyModifiers(h, mods({ remove: ['x-A', 'missing'] })), ['Host', 'h', 'X-B', '3']);
});

test('applyModifiers: Set replaces all existing values (any case) with one', () => {
  const h = ['X-A', '1', 'Host', 'h', 'x-a', '2'];
  assert.deepEqual(applyModifiers(h, mods({ set: { 'x-a': 'new' } })), ['Host', 'h', 'x-a', 'new']);
  assert.deepEqual(applyModifiers(['Host', 'h'], mods({ set: { 'X-New': 'v' } })), ['Host', 'h', 'X-New', 'v']);
});

test('applyModifiers: Add appends, keeping existing values', () => {
  const h = ['X-A', '1', 'Host', 'h'];
  assert.deepEqual(applyModifiers(h, mods({ add: { 'x-a': '2', 'X-C': '3' } })), ['X-A', '1', 'Host', 'h', 'x-a', '2', 'X-C', '3']);
});

test('applyModifiers order: Remove, then Set, then Add', () => {
  const h = ['x-a', 'old', 'x-b', 'old', 'x-c', 'old'];
  const out = applyModifiers(h, mods({ remove: ['x-a', 'x-b'], set: { 'x-a': 's', 'x-c': 's' }, add: { 'x-b': 'a', 'x-c': 'a' } }));
  // x-a removed then set; x-b removed then added; x-c replaced by set, then added to.
  assert.deepEqual(out, ['x-a', 's', 'x-c', 's', 'x-b', 'a', 'x-c', 'a']);
});

test('applyModifiers composes (route modifiers, then split modifiers)', () => {
  const route = mods({ set: { 'x-route': 'r' }, add: { 'x-trace': '1' } });
  const split = mods({ set: { 'x-route': 's' }, remove: ['x-trace'] });
  assert.deepEqual(applyModifiers(applyModifiers(['Host', 'h'], route), split), ['Host', 'h', 'x-route', 's']);
});

const MOD_NAMES = ['x-a', 'X-A', 'x-b', 'host'];
const arbHeaders = fc.array(fc.tuple(fc.constantFrom(...MOD_NAMES, 'x-c'), fc.string({ maxLength: 3 })), { maxLength: 8 }).map((p) => p.flat());
const arbRecord = fc.dictionary(fc.constantFrom(...MOD_NAMES), fc.string({ maxLength: 3 }), { maxKeys: 3 });
const arbMods: fc.Arbitrary<HeaderModifiers> = fc.record({ add: arbRecord, set: arbRecord, remove: fc.subarray(MOD_NAMES) });

test('property: applyModifiers = kept headers in order, then Set entries, then Add entries', () => {
  fc.assert(
    fc.property(arbHeaders, arbMods, (headers, m) => {
      const before = [...headers];
      const out = applyModifiers(headers, m);
      assert.deepEqual(headers, before, 'input untouched');
      if (isEmptyModifiers(m)) {
        assert.equal(out, headers);
        return;
      }
      const gone = new Set([...m.remove, ...Object.keys(m.set)].map((n) => n.toLowerCase()));
      const kept: string[] = [];
      for (let i = 0; i < headers.length; i += 2) if (!gone.has((headers[i] as string).toLowerCase())) kept.push(headers[i] as string, headers[i + 1] as string);
      assert.deepEqual(out, [...kept, ...Object.entries(m.set).flat(), ...Object.entries(m.add).flat()]);
      // Every Set name ends up with exactly the Set value(s) plus what Add appends.
      for (const [n, v] of Object.entries(m.set)) {
        const values: string[] = [];
        for (let i = 0; i < out.length; i += 2) if ((out[i] as string).toLowerCase() === n.toLowerCase()) values.push(out[i + 1] as string);
        assert.ok(values.includes(v));
      }
    }),
    { numRuns: 500 },
  );
});

// ---- hasBody / afterRequestBody ----

test('hasBody: Transfer-Encoding or a non-zero Content-Length', () => {
  const cases: [Record<string, string | string[] | undefined>, boolean][] = [
    [{}, false],
    [{ host: 'h' }, false],
    [{ 'content-length': '0' }, false],
    [{ 'content-length': '1' }, true],
    [{ 'content-length': '12345' }, true],
    [{ 'transfer-encoding': 'chunked' }, true],
    [{ 'transfer-encoding': 'chunked', 'content-length': '0' }, true],
    [{ 'transfer-encoding': undefined, 'content-length': undefined }, false],
  ];
  for (const [h, expected] of cases) assert.equal(hasBody(h), expected, JSON.stringify(h));
});

function fakeRequest(complete: boolean, headers: Record<string, string>): IncomingMessage & EventEmitter {
  return Object.assign(new EventEmitter(), { complete, headers }) as unknown as IncomingMessage & EventEmitter;
}

test('afterRequestBody: at once without a body or when already complete, else on end', () => {
  let calls = 0;
  afterRequestBody(fakeRequest(false, {}), () => calls++);
  assert.equal(calls, 1);
  afterRequestBody(fakeRequest(true, { 'content-length': '5' }), () => calls++);
  assert.equal(calls, 2);
  const pending = fakeRequest(false, { 'transfer-encoding': 'chunked' });
  afterRequestBody(pending, () => calls++);
  assert.equal(calls, 2);
  pending.emit('end');
  pending.emit('end');
  assert.equal(calls, 3, 'once');
});
