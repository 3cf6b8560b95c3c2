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
import type { ServiceIntentionsEntry } from '../../src/control/intentions.ts';

function isFieldError(field: string, pattern?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof FieldError, `expected FieldError, got ${String(e)}`);
    assert.equal(e.field, field);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  };
}

const T0 = Date.parse('2026-03-01T12:00:00Z');

function fresh(): { store: FileStore; ixns: Intentions; clock: { now: number } } {
  const store = new FileStore(null);
  const clock = { now: T0 };
  return { store, ixns: new Intentions(store, () => clock.now), clock };
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

test('decodeExactBody: Action allow|deny required; SourceType defaults to consul; Description kept', () => {
  assert.deepEqual(decodeExactBody({ Action: 'allow' }), { action: 'allow', description: '' });
  assert.deepEqual(decodeExactBody({ action: 'deny', description: 'no', source_type: 'consul' }), { action: 'deny', description: 'no' });
  assert.deepEqual(decodeExactBody({ Action: 'allow', Description: 'd'.repeat(512) }), { action: 'allow', description: 'd'.repeat(512) });
  assert.deepEqual(decodeExactBody({ Action: 'allow', Permissions: null }), { action: 'allow', description: '' });
  assert.throws(() => decodeExactBody({}), isFieldError('Action', /"allow" or "deny"/));
  assert.throws(() => decodeExactBody({ Action: 'Allow' }), isFieldError('Action'));
  assert.throws(() => decodeExactBody({ Action: 'permit' }), isFieldError('Action'));
  assert.throws(() => decodeExactBody({ Action: 1 }), isFieldError('Action'));
});

test('decodeExactBody refuses other SourceTypes, long descriptions, Permissions and unknown keys', () => {
  assert.throws(() => decodeExactBody({ Action: 'allow', SourceType: 'external-uri' }), isFieldError('SourceType', /must be "consul"/));
  assert.throws(() => decodeExactBody({ Action: 'allow', Description: 'd'.repeat(513) }), isFieldError('Description', /at most 512/));
  assert.throws(
    () => decodeExactBody({ Permissions: [{ Action: 'deny', HTTP: { PathPrefix: '/admin' } }] }),
    isFieldError('Permissions', /not supported/),
  );
  assert.throws(() => decodeExactBody({ Action: 'allow', permissions: [] }), isFieldError('Permissions'));
  assert.throws(() => decodeExactBody({ Action: 'allow', Bogus: 1 }), isFieldError('Bogus', /unknown field/));
});

test(
  'decodeExactBody treats an empty SourceType as the default "consul"',
  () => {
    assert.deepEqual(decodeExactBody({ Action: 'allow', SourceType: '' }), { action: 'allow', description: '' });
  },
);

test('Intentions.upsert creates and then replaces a source rule in the destination entry', () => {
  const { store, ixns, clock } = fresh();
  const i1 = ixns.upsert('web', 'db', 'allow', 'first');
  assert.ok(i1 > 0);
  const e1 = store.get<ServiceIntentionsEntry>(INTENTIONS, 'db');
  assert.ok(e1 !== undefined);
  assert.equal(e1.value.Kind, 'service-intentions');
  assert.equal(e1.value.Name, 'db');
  assert.equal(e1.value.Sources.length, 1);
  assert.deepEqual(
    { ...e1.value.Sources[0] },
    {
      Name: 'web',
      Namespace: 'default',
      Action: 'allow',
      Type: 'consul',
      Description: 'first',
      Precedence: 9,
      LegacyCreateTime: new Date(T0).toISOString(),
      LegacyUpdateTime: new Date(T0).toISOString(),
    },
  );

  clock.now = T0 + 60_000;
  const i2 = ixns.upsert('web', 'db', 'deny', 'second');
  assert.ok(i2 > i1);
  const e2 = store.get<ServiceIntentionsEntry>(INTENTIONS, 'db');
  assert.ok(e2 !== undefined);
  assert.equal(e2.value.Sources.length, 1, 'replaced, not added');
  const s = e2.value.Sources[0];
  assert.equal(s?.Action, 'deny');
  assert.equal(s?.Description, 'second');
  assert.equal(s?.LegacyCreateTime, new Date(T0).toISOString(), 'create time survives a replace');
  assert.equal(s?.LegacyUpdateTime, new Date(T0 + 60_000).toISOString());
  assert.equal(e2.createIndex, e1.createIndex);

  const got = ixns.get('web', 'db');
  assert.equal(got?.Action, 'deny');
  assert.equal(got?.CreatedAt, new Date(T0).toISOString());
  assert.equal(got?.UpdatedAt, new Date(T0 + 60_000).toISOString());
  assert.equal(ixns.get('api', 'db'), undefined);
});

test('Intentions.upsert validates names before writing anything', () => {
  const { store, ixns } = fresh();
  assert.throws(() => ixns.upsert('web*', 'db', 'allow', ''), isFieldError('source', /partial wildcards/));
  assert.throws(() => ixns.upsert('web', 'd b', 'allow', ''), isFieldError('destination'));
  assert.equal(store.index, 0);
  assert.deepEqual(ixns.list(), []);
});

test('sources within an entry are kept sorted by precedence, then name', () => {
  const { store, ixns } = fresh();
  ixns.upsert('*', 'db', 'deny', '');
  ixns.upsert('zeta', 'db', 'allow', '');
  ixns.upsert('alpha', 'db', 'allow', '');
  const e = store.get<ServiceIntentionsEntry>(INTENTIONS, 'db');
  assert.deepEqual(
    e?.value.Sources.map((s) => [s.Name, s.Precedence]),
    [
      ['alpha', 9],
      ['zeta', 9],
      ['*', 8],
    ],
  );
});

test('delete removes one source; deleting the last source removes the entry', () => {
  const { store, ixns } = fresh();
  ixns.upsert('web', 'db', 'allow', '');
  ixns.upsert('api', 'db', 'allow', '');
  assert.equal(ixns.delete('nobody', 'db'), false);
  assert.equal(ixns.delete('web', 'nowhere'), false);
  assert.equal(ixns.delete('web', 'db'), true);
  assert.deepEqual(store.get<ServiceIntentionsEntry>(INTENTIONS, 'db')?.value.Sources.map((s) => s.Name), ['api']);
  assert.equal(ixns.delete('web', 'db'), false);
  assert.equal(ixns.delete('api', 'db'), true);
  assert.equal(store.get(INTENTIONS, 'db'), undefined);
  assert.deepEqual(store.list(INTENTIONS), []);
  assert.deepEqual(ixns.list(), []);
});

test('list() flattens entries in evaluation order: precedence desc, then source, then destination', () => {
  const { ixns } = fresh();
  ixns.upsert('*', '*', 'deny', '');
  ixns.upsert('web', '*', 'allow', '');
  ixns.upsert('*', 'db', 'deny', '');
  ixns.upsert('web', 'db', 'allow', '');
  ixns.upsert('api', 'db', 'deny', '');
  ixns.upsert('api', 'cache', 'allow', '');
  ixns.upsert('api', 'b-cache', 'allow', '');
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
  ixns.upsert('*', 'db', 'deny', '');
  ixns.upsert('web', 'db', 'allow', 'x');
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
        ixns.upsert(s, d, a, '');
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
