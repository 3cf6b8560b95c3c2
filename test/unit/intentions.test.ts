import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { FieldError } from '../../src/control/decode.ts';
import { FileStore } from '../../src/control/store.ts';
import {
  INTENTIONS,
  Intentions,
  decodeExactBody,
  legacyToRule,
  precedence,
  validateIntentionName,
} from '../../src/control/intentions.ts';
import type { ServiceIntentionsEntry } from '../../src/config/entries.ts';

function isFieldError(field: string, pattern?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof FieldError, `expected FieldError, got ${String(e)}`);
    assert.equal(e.field, field);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  };
}

function fresh(): { store: FileStore; ixns: Intentions } {
  const store = new FileStore(null);
  return { store, ixns: new Intentions(store) };
}

test('precedence is 9/8/6/5 for exact→exact, *→exact, exact→*, *→* (consul-mesh.md §2.2, CE)', () => {
  assert.equal(precedence('web', 'db'), 9);
  assert.equal(precedence('*', 'db'), 8);
  assert.equal(precedence('web', '*'), 6);
  assert.equal(precedence('*', '*'), 5);
});

test('validateIntentionName: exact names and * pass; partial wildcards and bad characters fail naming the field', () => {
  for (const ok of ['*', 'web', 'api-v2', 'a.b_c', 'A1']) validateIntentionName(ok, 'source');
  assert.throws(() => validateIntentionName('web*', 'source'), isFieldError('source', /partial wildcards are not allowed: "web\*"/));
  assert.throws(() => validateIntentionName('*web', 'destination'), isFieldError('destination', /partial wildcards/));
  assert.throws(() => validateIntentionName('**', 'destination'), isFieldError('destination', /partial wildcards/));
  assert.throws(() => validateIntentionName('', 'source'), isFieldError('source', /is required/));
  for (const bad of ['we b', 'ns/web', 'web:1', '-web', '.web', 'wéb', 'a'.repeat(129)]) {
    assert.throws(() => validateIntentionName(bad, 'source'), isFieldError('source', /is not a valid service name/), bad);
  }
});

test('decodeExactBody: Action allow|deny, or Permissions; SourceType defaults to consul; Description kept', () => {
  assert.deepEqual(decodeExactBody({ Action: 'allow' }), { Action: 'allow', Description: '' });
  assert.deepEqual(decodeExactBody({ action: 'deny', description: 'no', source_type: 'consul' }), { Action: 'deny', Description: 'no' });
  assert.deepEqual(decodeExactBody({ Action: 'allow', Description: 'd'.repeat(512) }), { Action: 'allow', Description: 'd'.repeat(512) });
  assert.deepEqual(decodeExactBody({ Action: 'allow', Permissions: null }), { Action: 'allow', Description: '' });
  assert.deepEqual(decodeExactBody({ Action: 'allow', SourceType: '' }), { Action: 'allow', Description: '' });
  const perms = [{ Action: 'deny', HTTP: { PathPrefix: '/admin' } }];
  assert.deepEqual(decodeExactBody({ Permissions: perms }), { Permissions: perms, Description: '' });
  assert.throws(() => decodeExactBody({}), isFieldError('Action', /"allow" or "deny"/));
  assert.throws(() => decodeExactBody({ Action: 'Allow' }), isFieldError('Action'));
  assert.throws(() => decodeExactBody({ Action: 1 }), isFieldError('Action'));
  assert.throws(() => decodeExactBody({ Action: 'allow', Permissions: perms }), isFieldError('Action', /omitted when Permissions/));
});

test('decodeExactBody refuses other SourceTypes, long descriptions and unknown keys', () => {
  assert.throws(() => decodeExactBody({ Action: 'allow', SourceType: 'external-uri' }), isFieldError('SourceType', /must be "consul"/));
  assert.throws(() => decodeExactBody({ Action: 'allow', Description: 'd'.repeat(513) }), isFieldError('Description', /at most 512/));
  assert.throws(() => decodeExactBody({ Action: 'allow', Permissions: 'x' }), isFieldError('Permissions'));
  assert.throws(() => decodeExactBody({ Action: 'allow', Bogus: 1 }), isFieldError('Bogus', /unknown field/));
});

test('Intentions.upsert creates and then replaces a source rule in the destination entry', () => {
  const { store, ixns } = fresh();
  const i1 = ixns.upsert('web', 'db', { Action: 'allow', Description: 'first' });
  assert.ok(i1 > 0);
  const e1 = store.get<ServiceIntentionsEntry>(INTENTIONS, 'db');
  assert.ok(e1 !== undefined);
  assert.equal(e1.value.kind, 'service-intentions');
  assert.equal(e1.value.name, 'db');
  assert.deepEqual(e1.value.sources, [{ name: 'web', type: 'consul', description: 'first', precedence: 9, layer: 'l4', action: 'allow' }]);

  const i2 = ixns.upsert('web', 'db', { Action: 'deny', Description: 'second' });
  assert.ok(i2 > i1);
  const e2 = store.get<ServiceIntentionsEntry>(INTENTIONS, 'db');
  assert.ok(e2 !== undefined);
  assert.equal(e2.value.sources.length, 1, 'replaced, not added');
  assert.equal(e2.createIndex, e1.createIndex);
  const got = ixns.get('web', 'db');
  assert.equal(got?.Action, 'deny');
  assert.equal(got?.Description, 'second');
  assert.equal(ixns.get('api', 'db'), undefined);
});

test('an L7 source through the exact API is stored with its permissions and compiles as l7', () => {
  const { ixns } = fresh();
  ixns.upsert('web', 'db', { Permissions: [{ Action: 'allow', HTTP: { PathPrefix: '/v1', Methods: ['get'] } }], Description: '' });
  const got = ixns.get('web', 'db');
  assert.equal(got?.Action, '');
  assert.deepEqual(got?.Permissions, [{ Action: 'allow', HTTP: { PathPrefix: '/v1', Methods: ['GET'] } }]);
  assert.deepEqual(ixns.rules(), [{ source: 'web', destination: 'db', action: 'l7' }]);
  // An invalid permission is refused with the entry's field path, and nothing is stored.
  assert.throws(() => ixns.upsert('api', 'db', { Permissions: [{ Action: 'allow', HTTP: { PathPrefix: 'v1' } }], Description: '' }), (e: unknown) => e instanceof FieldError && /PathPrefix/.test(e.field));
  assert.equal(ixns.get('api', 'db'), undefined);
});

test('entries written by the first storage layout are read back', () => {
  const store = new FileStore(null);
  store.put(INTENTIONS, 'db', { Kind: 'service-intentions', Name: 'db', Meta: {}, Sources: [{ Name: 'web', Action: 'allow', Description: 'old', Precedence: 9 }] });
  const ixns = new Intentions(store);
  assert.deepEqual(ixns.rules(), [{ source: 'web', destination: 'db', action: 'allow' }]);
  assert.equal(ixns.get('web', 'db')?.Description, 'old');
});

test('Intentions.upsert validates names before writing anything', () => {
  const { store, ixns } = fresh();
  assert.throws(() => ixns.upsert('web*', 'db', { Action: 'allow', Description: '' }), isFieldError('source', /partial wildcards/));
  assert.throws(() => ixns.upsert('web', 'd b', { Action: 'allow', Description: '' }), isFieldError('destination'));
  assert.equal(store.index, 0);
  assert.deepEqual(ixns.list(), []);
});

test('sources within an entry are kept sorted by precedence, then name', () => {
  const { store, ixns } = fresh();
  ixns.upsert('*', 'db', { Action: 'deny', Description: '' });
  ixns.upsert('zeta', 'db', { Action: 'allow', Description: '' });
  ixns.upsert('alpha', 'db', { Action: 'allow', Description: '' });
  const e = store.get<ServiceIntentionsEntry>(INTENTIONS, 'db');
  assert.deepEqual(
    e?.value.sources.map((s) => [s.name, s.precedence]),
    [
      ['alpha', 9],
      ['zeta', 9],
      ['*', 8],
    ],
  );
});

test('delete removes one source; deleting the last source removes the entry', () => {
  const { store, ixns } = fresh();
  ixns.upsert('web', 'db', { Action: 'allow', Description: '' });
  ixns.upsert('api', 'db', { Action: 'allow', Description: '' });
  assert.equal(ixns.delete('nobody', 'db'), false);
  assert.equal(ixns.delete('web', 'nowhere'), false);
  assert.equal(ixns.delete('web', 'db'), true);
  assert.deepEqual(store.get<ServiceIntentionsEntry>(INTENTIONS, 'db')?.value.sources.map((s) => s.name), ['api']);
  assert.equal(ixns.delete('web', 'db'), false);
  assert.equal(ixns.delete('api', 'db'), true);
  assert.equal(store.get(INTENTIONS, 'db'), undefined);
  assert.deepEqual(store.list(INTENTIONS), []);
  assert.deepEqual(ixns.list(), []);
});

test('list() flattens entries in evaluation order: precedence desc, then source, then destination', () => {
  const { ixns } = fresh();
  ixns.upsert('*', '*', { Action: 'deny', Description: '' });
  ixns.upsert('web', '*', { Action: 'allow', Description: '' });
  ixns.upsert('*', 'db', { Action: 'deny', Description: '' });
  ixns.upsert('web', 'db', { Action: 'allow', Description: '' });
  ixns.upsert('api', 'db', { Action: 'deny', Description: '' });
  ixns.upsert('api', 'cache', { Action: 'allow', Description: '' });
  ixns.upsert('api', 'b-cache', { Action: 'allow', Description: '' });
  const got = ixns.list().map((i) => `${i.SourceName}->${i.DestinationName}:${i.Precedence}`);
  assert.deepEqual(got, [
    'api->b-cache:9',
    'api->cache:9',
    'api->db:9',
    'web->db:9',
    '*->db:8',
    'web->*:6',
    '*->*:5',
  ]);
  const one = ixns.list()[0];
  assert.ok(one !== undefined);
  assert.equal(one.SourceNS, 'default');
  assert.equal(one.DestinationNS, 'default');
  assert.equal(one.SourceType, 'consul');
  assert.equal(one.Permissions, null);
  assert.deepEqual(one.Meta, {});
  assert.ok(one.CreateIndex > 0 && one.ModifyIndex >= one.CreateIndex);
});

test('rules() maps the list to {source, destination, action} in the same order', () => {
  const { ixns } = fresh();
  ixns.upsert('*', 'db', { Action: 'deny', Description: '' });
  ixns.upsert('web', 'db', { Action: 'allow', Description: 'x' });
  assert.deepEqual(ixns.rules(), [
    { source: 'web', destination: 'db', action: 'allow' },
    { source: '*', destination: 'db', action: 'deny' },
  ]);
});

test('legacyToRule maps non-empty Permissions to l7 and otherwise keeps the Action', () => {
  assert.deepEqual(legacyToRule({ SourceName: 'a', DestinationName: 'b', Action: 'allow', Permissions: null }), { source: 'a', destination: 'b', action: 'allow' });
  assert.deepEqual(legacyToRule({ SourceName: 'a', DestinationName: 'b', Action: 'deny', Permissions: [] }), { source: 'a', destination: 'b', action: 'deny' });
  assert.deepEqual(legacyToRule({ SourceName: 'a', DestinationName: 'b', Action: 'allow', Permissions: [{ Action: 'deny' }] }), { source: 'a', destination: 'b', action: 'l7' });
});

test('property: list() is sorted by (precedence desc, source, destination) for any set of upserts', () => {
  const name = fc.constantFrom('*', 'web', 'api', 'db', 'cache');
  fc.assert(
    fc.property(fc.array(fc.tuple(name, name, fc.constantFrom('allow' as const, 'deny' as const)), { maxLength: 20 }), (ops) => {
      const { ixns } = fresh();
      const expected = new Map<string, string>();
      for (const [s, d, a] of ops) {
        ixns.upsert(s, d, { Action: a, Description: '' });
        expected.set(`${s}->${d}`, a);
      }
      const list = ixns.list();
      assert.equal(list.length, expected.size);
      for (const i of list) {
        assert.equal(expected.get(`${i.SourceName}->${i.DestinationName}`), i.Action);
        assert.equal(i.Precedence, precedence(i.SourceName, i.DestinationName));
      }
      for (let k = 1; k < list.length; k++) {
        const a = list[k - 1];
        const b = list[k];
        assert.ok(a !== undefined && b !== undefined);
        const key = (x: typeof a): [number, string, string] => [-x.Precedence, x.SourceName, x.DestinationName];
        const [pa, sa, da] = key(a);
        const [pb, sb, db] = key(b);
        assert.ok(pa < pb || (pa === pb && (sa < sb || (sa === sb && da < db))), `${sa}->${da} before ${sb}->${db}`);
      }
    }),
  );
});
