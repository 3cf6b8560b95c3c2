import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  formatSpiffeId,
  isValidSegment,
  isValidTrustDomain,
  parseSpiffeId,
  serviceSpiffeId,
  signingSpiffeId,
  trustDomainFor,
  type SpiffeId,
} from '../../src/ca/spiffe.ts';

const TD = '11111111-2222-3333-4444-555555555555.consul';

test('parses every Consul ID form (consul-mesh.md §1.2)', () => {
  const table: [string, SpiffeId][] = [
    [`spiffe://${TD}`, { kind: 'signing', trustDomain: TD }],
    [
      `spiffe://${TD}/ns/default/dc/dc1/svc/web`,
      { kind: 'service', trustDomain: TD, partition: 'default', namespace: 'default', datacenter: 'dc1', service: 'web' },
    ],
    [
      `spiffe://${TD}/ap/team-a/ns/ns1/dc/dc2/svc/api_v2.internal`,
      { kind: 'service', trustDomain: TD, partition: 'team-a', namespace: 'ns1', datacenter: 'dc2', service: 'api_v2.internal' },
    ],
    [
      `spiffe://${TD}/agent/client/dc/dc1/id/node-1`,
      { kind: 'agent', trustDomain: TD, partition: 'default', datacenter: 'dc1', node: 'node-1' },
    ],
    [
      `spiffe://${TD}/ap/p1/agent/client/dc/dc1/id/n`,
      { kind: 'agent', trustDomain: TD, partition: 'p1', datacenter: 'dc1', node: 'n' },
    ],
    [`spiffe://${TD}/agent/server/dc/dc1`, { kind: 'server', trustDomain: TD, datacenter: 'dc1' }],
    [`spiffe://${TD}/gateway/mesh/dc/dc1`, { kind: 'mesh-gateway', trustDomain: TD, partition: 'default', datacenter: 'dc1' }],
    [`spiffe://${TD}/ap/p1/gateway/mesh/dc/dc1`, { kind: 'mesh-gateway', trustDomain: TD, partition: 'p1', datacenter: 'dc1' }],
    // Upper case is allowed in path segments (Consul service names are case-sensitive).
    [
      `spiffe://a.consul/ns/Default/dc/DC1/svc/Web`,
      { kind: 'service', trustDomain: 'a.consul', partition: 'default', namespace: 'Default', datacenter: 'DC1', service: 'Web' },
    ],
  ];
  for (const [uri, want] of table) {
    assert.deepEqual(parseSpiffeId(uri), want, uri);
    assert.equal(formatSpiffeId(want), uri, `format ${uri}`);
  }
});

test('rejects non-canonical and malformed IDs', () => {
  const bad = [
    '',
    'spiffe://',
    'spiffe:///ns/default/dc/dc1/svc/web', // empty host
    'SPIFFE://a.consul/ns/default/dc/dc1/svc/web', // scheme case
    'spiffe:/a.consul/ns/default/dc/dc1/svc/web',
    'https://a.consul/ns/default/dc/dc1/svc/web',
    'spiffe://A.consul/ns/default/dc/dc1/svc/web', // upper-case host
    'spiffe://a.consul:8443/ns/default/dc/dc1/svc/web', // port
    'spiffe://user@a.consul/ns/default/dc/dc1/svc/web', // userinfo
    'spiffe://a.consul/ns/default/dc/dc1/svc/web?x=1', // query
    'spiffe://a.consul/ns/default/dc/dc1/svc/web#frag', // fragment
    'spiffe://a.consul/ns/default/dc/dc1/svc/web/', // trailing slash
    'spiffe://a.consul/', // trailing slash on signing ID
    'spiffe://a.consul//ns/default/dc/dc1/svc/web', // empty segment
    'spiffe://a.consul/ns//dc/dc1/svc/web',
    'spiffe://a.consul/ns/default/dc/dc1/svc/',
    'spiffe://a.consul/ns/./dc/dc1/svc/web', // dot segments
    'spiffe://a.consul/ns/default/dc/../svc/web',
    'spiffe://a.consul/ns/default/dc/dc1/svc/w%65b', // percent-encoding
    'spiffe://a%2econsul/ns/default/dc/dc1/svc/web',
    'spiffe://a.consul/ns/default/dc/dc1/svc/web server', // space
    'spiffe://a.consul/ns/default/dc/dc1/svc/wéb', // non-ASCII
    'spiffe://a.consul/ns/default/dc/dc1/svc/web+1',
    'spiffe://a.consul/ap/default/ns/default/dc/dc1/svc/web', // explicit default partition
    'spiffe://a.consul/ap/ns/default/dc/dc1/svc/web',
    'spiffe://a.consul/ns/default/dc/dc1', // truncated forms
    'spiffe://a.consul/ns/default/dc/dc1/svc',
    'spiffe://a.consul/ns/default/dc/dc1/svc/web/extra',
    'spiffe://a.consul/ns/default/svc/web/dc/dc1', // wrong order
    'spiffe://a.consul/ap/p1/agent/server/dc/dc1', // server IDs have no partition
    'spiffe://a.consul/agent/client/dc/dc1',
    'spiffe://a.consul/gateway/terminating/dc/dc1',
    'spiffe://consul', // signing ID host without a dot
    'spiffe://.consul',
    'spiffe://a..consul',
    'spiffe://a.consul.',
    'spiffe://a.consul\n',
    ` spiffe://${TD}`,
    `spiffe://${TD}/ns/default/dc/dc1/svc/${'x'.repeat(2048)}`, // over-long
  ];
  for (const uri of bad) assert.equal(parseSpiffeId(uri), null, JSON.stringify(uri));
});

test('never throws on non-string input', () => {
  for (const v of [undefined, null, 42, {}, [], Symbol('x')]) {
    assert.equal(parseSpiffeId(v as string), null);
  }
});

test('builders: canonical output and loud failure on bad segments', () => {
  assert.equal(serviceSpiffeId(TD, 'default', 'dc1', 'web'), `spiffe://${TD}/ns/default/dc/dc1/svc/web`);
  assert.equal(serviceSpiffeId(TD, 'default', 'dc1', 'web', ''), `spiffe://${TD}/ns/default/dc/dc1/svc/web`);
  assert.equal(serviceSpiffeId(TD, 'default', 'dc1', 'web', 'p1'), `spiffe://${TD}/ap/p1/ns/default/dc/dc1/svc/web`);
  assert.equal(signingSpiffeId(TD), `spiffe://${TD}`);
  assert.throws(() => serviceSpiffeId(TD, 'default', 'dc1', 'we/b'), RangeError);
  assert.throws(() => serviceSpiffeId('Upper.consul', 'default', 'dc1', 'web'), RangeError);
  assert.throws(() => serviceSpiffeId(TD, '..', 'dc1', 'web'), RangeError);
  assert.throws(() => signingSpiffeId('nodot'), RangeError);
});

test('trustDomainFor lower-cases <cluster-id>.consul (§1.1)', () => {
  assert.equal(trustDomainFor('7F42F496-FBC7-8692-05ED-334AA5340C1E'), '7f42f496-fbc7-8692-05ed-334aa5340c1e.consul');
  assert.equal(trustDomainFor(TD.split('.')[0] as string), TD);
});

// ---------------------------------------------------------------------------------------
// Properties.

const SEGMENT_CHARS = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-'.split('');
const segment = fc
  .array(fc.constantFrom(...SEGMENT_CHARS), { minLength: 1, maxLength: 20 })
  .map((cs) => cs.join(''))
  .filter((s) => s !== '.' && s !== '..');
const label = fc
  .array(fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz0123456789-_'.split('')), { minLength: 1, maxLength: 12 })
  .map((cs) => cs.join(''));
const trustDomain = fc.array(label, { minLength: 2, maxLength: 4 }).map((ls) => ls.join('.'));
const partition = fc.oneof(fc.constant('default'), segment);

test('property: parseSpiffeId never throws on arbitrary strings', () => {
  fc.assert(
    fc.property(fc.string({ unit: 'binary', maxLength: 300 }), (s) => {
      const r = parseSpiffeId(s);
      return r === null || typeof r.kind === 'string';
    }),
    { numRuns: 5000 },
  );
  // Strings that start right, so the scanner gets past the scheme.
  fc.assert(
    fc.property(fc.string({ unit: 'grapheme-ascii', maxLength: 200 }), (s) => {
      parseSpiffeId(`spiffe://${s}`);
      parseSpiffeId(`spiffe://${TD}/${s}`);
    }),
    { numRuns: 5000 },
  );
});

test('property: service IDs round-trip through the builder and the parser', () => {
  fc.assert(
    fc.property(trustDomain, segment, segment, segment, partition, (td, ns, dc, svc, ap) => {
      const uri = serviceSpiffeId(td, ns, dc, svc, ap);
      assert.deepEqual(parseSpiffeId(uri), {
        kind: 'service',
        trustDomain: td,
        partition: ap,
        namespace: ns,
        datacenter: dc,
        service: svc,
      });
    }),
    { numRuns: 2000 },
  );
});

test('property: every accepted string is canonical (format(parse(s)) === s)', () => {
  const validUri = fc.oneof(
    fc.tuple(trustDomain, segment, segment, segment, partition).map(([td, ns, dc, svc, ap]) => serviceSpiffeId(td, ns, dc, svc, ap)),
    trustDomain.map((td) => signingSpiffeId(td)),
    fc.tuple(trustDomain, segment).map(([td, dc]) => `spiffe://${td}/agent/server/dc/${dc}`),
  );
  // Mutate a valid ID: replace one character with any ASCII character, or cut it short.
  const mutated = fc.tuple(validUri, fc.nat(), fc.integer({ min: 0, max: 127 }), fc.boolean()).map(([u, i, c, cut]) => {
    const at = i % u.length;
    return cut ? u.slice(0, at) : u.slice(0, at) + String.fromCharCode(c) + u.slice(at + 1);
  });
  fc.assert(
    fc.property(mutated, (s) => {
      const id = parseSpiffeId(s);
      if (id !== null) assert.equal(formatSpiffeId(id), s);
    }),
    { numRuns: 10000 },
  );
});

test('segment and trust-domain predicates agree with the documented alphabets', () => {
  assert.equal(isValidSegment('a.b_c-D9'), true);
  assert.equal(isValidSegment('.'), false);
  assert.equal(isValidSegment('...'), true); // only `.` and `..` are path steps
  assert.equal(isValidSegment(''), false);
  assert.equal(isValidTrustDomain('a-b_c.consul'), true);
  assert.equal(isValidTrustDomain('a'.repeat(256)), false);
  assert.equal(isValidTrustDomain('A.consul'), false);
});
