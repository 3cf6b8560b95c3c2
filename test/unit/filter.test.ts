// Consul-style ?filter= expressions over intention objects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compileFilter, FilterError, INTENTION_FILTER_FIELDS } from '../../src/control/filter.ts';

const rows = [
  { SourceName: 'web', DestinationName: 'db', Action: 'allow', Precedence: 9, Meta: { team: 'a' }, Description: 'web to db' },
  { SourceName: '*', DestinationName: 'db', Action: 'deny', Precedence: 8, Meta: {}, Description: '' },
  { SourceName: 'api', DestinationName: 'cache', Action: 'allow', Precedence: 9, Meta: { team: 'b' }, Description: 'cache' },
];

function names(expr: string): string[] {
  const p = compileFilter(expr, INTENTION_FILTER_FIELDS);
  return rows.filter((r) => p(r)).map((r) => `${r.SourceName}->${r.DestinationName}`);
}

test('==, !=, and, or, not, parentheses', () => {
  assert.deepEqual(names('SourceName == "web"'), ['web->db']);
  assert.deepEqual(names('DestinationName == db and Action == "deny"'), ['*->db']);
  assert.deepEqual(names('Action != allow'), ['*->db']);
  assert.deepEqual(names('SourceName == "api" or SourceName == "web"'), ['web->db', 'api->cache']);
  assert.deepEqual(names('not (DestinationName == "db")'), ['api->cache']);
  assert.deepEqual(names('Precedence == 9 and (SourceName == "api" or Action == "deny")'), ['api->cache']);
  assert.deepEqual(names('SourceName == "*"'), ['*->db']);
});

test('in / not in over maps and strings, and Meta.<key> selectors', () => {
  assert.deepEqual(names('"team" in Meta'), ['web->db', 'api->cache']);
  assert.deepEqual(names('"team" not in Meta'), ['*->db']);
  assert.deepEqual(names('Meta.team == "b"'), ['api->cache']);
  assert.deepEqual(names('"to" in Description'), ['web->db']);
});

test('errors name what is wrong', () => {
  assert.throws(() => compileFilter('Source == "web"', INTENTION_FILTER_FIELDS), (e: unknown) => e instanceof FilterError && /unknown field "Source"/.test(e.message));
  assert.throws(() => compileFilter('SourceName = "web"', INTENTION_FILTER_FIELDS), FilterError);
  assert.throws(() => compileFilter('(SourceName == "web"', INTENTION_FILTER_FIELDS), /missing "\)"/);
  assert.throws(() => compileFilter('SourceName == "web', INTENTION_FILTER_FIELDS), /unterminated/);
  assert.throws(() => compileFilter('SourceName == web extra', INTENTION_FILTER_FIELDS), /unexpected "extra"/);
});

test('property: any input compiles or throws FilterError, never anything else', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 40 }), (src) => {
      try {
        compileFilter(src, INTENTION_FILTER_FIELDS)(rows[0] as Record<string, unknown>);
      } catch (e) {
        assert.ok(e instanceof FilterError, String(e));
      }
    }),
    { numRuns: 2000 },
  );
});
