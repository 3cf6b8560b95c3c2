// Consul-style ?filter= expressions over intention objects.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { compileFilter, compileHealthFilter, FilterError, INTENTION_FILTER_FIELDS, type HealthFilterEntry } from '../../src/control/filter.ts';

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

const instances: HealthFilterEntry[] = [
  { Node: { Node: 'n1', Meta: { zone: 'a' } }, Service: { ID: 'web-1', Service: 'web', Tags: ['v1', 'primary'], Meta: { version: 'v1' }, Port: 8080 } },
  { Node: { Node: 'n2', Meta: {} }, Service: { ID: 'web-2', Service: 'web', Tags: ['v2', 'canary'], Meta: { version: 'v2', flavor: 'canary' }, Port: 8081 } },
  { Node: { Node: 'n3', Meta: { zone: 'b' } }, Service: { ID: 'web-3', Service: 'web', Tags: [], Meta: {}, Port: 8082 } },
];

function ids(expr: string): string[] {
  const p = compileHealthFilter(expr);
  return instances.filter((i) => p(i)).map((i) => i.Service.ID as string);
}

test('resolver subset filters over the health entry: Meta equality, Tags membership, bare and quoted values', () => {
  assert.deepEqual(ids('Service.Meta.version == v1'), ['web-1']);
  assert.deepEqual(ids('Service.Meta.version == "v2"'), ['web-2']);
  assert.deepEqual(ids('Service.Meta.version != v1'), ['web-2', 'web-3']);
  assert.deepEqual(ids('Service.Tags contains canary'), ['web-2']);
  assert.deepEqual(ids('Service.Tags contains "v1"'), ['web-1']);
  assert.deepEqual(ids('"canary" in Service.Tags'), ['web-2']);
  assert.deepEqual(ids('primary in Service.Tags'), ['web-1']);
  assert.deepEqual(ids('v2 not in Service.Tags'), ['web-1', 'web-3']);
  assert.deepEqual(ids('Service.Tags not contains v1'), ['web-2', 'web-3']);
  assert.deepEqual(ids('flavor in Service.Meta'), ['web-2']);
  assert.deepEqual(ids('Service.Meta.version == v1 or (Service.Tags contains canary and not Service.Meta.flavor != canary)'), ['web-1', 'web-2']);
  assert.deepEqual(ids('not Service.Meta.version == v1 and Node.Meta.zone == b'), ['web-3']);
  assert.deepEqual(ids('Service.Tags is empty'), ['web-3']);
  assert.deepEqual(ids('Service.Meta is not empty'), ['web-1', 'web-2']);
  assert.deepEqual(ids('Service.Meta.version matches "^v[0-9]+$"'), ['web-1', 'web-2']);
  assert.deepEqual(ids('Service.ID not matches "-[12]$"'), ['web-3']);
  assert.deepEqual(ids('Service.Port == 8081'), ['web-2']);
  // A missing Meta key is unequal to anything, and never a prototype property.
  assert.deepEqual(ids('Service.Meta.constructor == x'), []);
  assert.deepEqual(ids('constructor in Service.Meta'), []);
});

test('resolver subset filters: selectors are checked, regexes are RE2', () => {
  assert.throws(() => compileHealthFilter('Service.Metadata.version == v1'), (e: unknown) => e instanceof FilterError && /unknown selector "Service.Metadata.version"/.test(e.message));
  assert.throws(() => compileHealthFilter('Version == v1'), /unknown selector "Version"/);
  assert.throws(() => compileHealthFilter('Service.Meta. == v1'), FilterError);
  assert.throws(() => compileHealthFilter('Service.Meta.version'), /expected ==, !=, contains, matches or is after Service.Meta.version/);
  assert.throws(() => compileHealthFilter('Service.Tags is full'), /expected "empty"/);
  assert.throws(() => compileHealthFilter('Service.ID matches "[a"'), /invalid regular expression/);
  assert.throws(() => compileHealthFilter('Service.Meta.version == v1 and'), /unexpected end of filter/);
});

test('property: any input compiles as a health filter or throws FilterError', () => {
  fc.assert(
    fc.property(fc.string({ maxLength: 40 }), (src) => {
      try {
        compileHealthFilter(src)(instances[1] as HealthFilterEntry);
      } catch (e) {
        assert.ok(e instanceof FilterError, String(e));
      }
    }),
    { numRuns: 2000 },
  );
});
