import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  FieldError,
  optNumber,
  optObject,
  optString,
  optStringMap,
  parseDuration,
  parseJsonObject,
  pick,
  rejectUnknown,
  reqString,
} from '../../src/control/decode.ts';

function isFieldError(field: string, pattern?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof FieldError, `expected FieldError, got ${String(e)}`);
    assert.equal(e.field, field);
    assert.ok(e.message.startsWith(`${field}: `), e.message);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  };
}

test('pick is case-insensitive and ignores underscores', () => {
  assert.equal(pick({ DestinationServiceName: 'api' }, 'destination_service_name'), 'api');
  assert.equal(pick({ destination_service_name: 'api' }, 'DestinationServiceName'), 'api');
  assert.equal(pick({ name: 'web' }, 'Name'), 'web');
  assert.equal(pick({ NAME: 'web' }, 'Name'), 'web');
  assert.equal(pick({ Name: 'web' }, 'Name'), 'web');
  assert.equal(pick({ Other: 'web' }, 'Name'), undefined);
  // An exact key wins over a differently spelled one.
  assert.equal(pick({ name: 'a', Name: 'b' }, 'Name'), 'b');
  // A present-but-null value is returned as null, not skipped.
  assert.equal(pick({ port: null }, 'Port'), null);
  // Underscores are dropped, other characters are not.
  assert.equal(pick({ 'destination-service-name': 'x' }, 'DestinationServiceName'), undefined);
});

test('parseJsonObject accepts objects and treats an empty body as {}', () => {
  assert.deepEqual(parseJsonObject('{"a":1}'), { a: 1 });
  assert.deepEqual(parseJsonObject(''), {});
  assert.deepEqual(parseJsonObject('  \n'), {});
});

test('parseJsonObject errors name the field: not JSON, array, null, scalars', () => {
  assert.throws(() => parseJsonObject('{"a":'), isFieldError('body', /invalid JSON/));
  assert.throws(() => parseJsonObject('nope', 'Check'), isFieldError('Check', /invalid JSON/));
  assert.throws(() => parseJsonObject('[]'), isFieldError('body', /must be a JSON object/));
  assert.throws(() => parseJsonObject('[{"a":1}]'), isFieldError('body', /must be a JSON object/));
  assert.throws(() => parseJsonObject('null'), isFieldError('body', /must be a JSON object/));
  assert.throws(() => parseJsonObject('42', 'payload'), isFieldError('payload', /must be a JSON object/));
  assert.throws(() => parseJsonObject('"s"'), isFieldError('body', /must be a JSON object/));
});

test('rejectUnknown allows known keys in any spelling and names the unknown one with its path', () => {
  rejectUnknown({ Name: 1, port: 2, destination_service_name: 3 }, ['Name', 'Port', 'DestinationServiceName'], '');
  assert.throws(() => rejectUnknown({ Name: 1, Bogus: 2 }, ['Name'], ''), isFieldError('Bogus', /unknown field/));
  assert.throws(() => rejectUnknown({ Extra: 1 }, ['Name'], 'Proxy'), isFieldError('Proxy.Extra', /unknown field/));
  rejectUnknown({}, [], '');
});

test('opt/req helpers type-check values and name the path', () => {
  assert.equal(optString({ a: 'x' }, 'A'), 'x');
  assert.equal(optString({ a: null }, 'A'), undefined);
  assert.throws(() => optString({ a: 1 }, 'A', 'X.A'), isFieldError('X.A', /must be a string, got number/));
  assert.throws(() => reqString({}, 'Name'), isFieldError('Name', /is required/));
  assert.throws(() => reqString({ Name: '' }, 'Name'), isFieldError('Name', /is required/));
  assert.equal(optNumber({ Port: 5 }, 'port'), 5);
  assert.throws(() => optNumber({ Port: '5' }, 'Port'), isFieldError('Port'));
  assert.deepEqual(optObject({ p: { a: 1 } }, 'P'), { a: 1 });
  assert.throws(() => optObject({ p: [1] }, 'P'), isFieldError('P', /must be an object/));
  assert.deepEqual(optStringMap({ Meta: { a: 'b' } }, 'Meta'), { a: 'b' });
  assert.throws(() => optStringMap({ Meta: { a: 1 } }, 'Meta'), isFieldError('Meta.a', /must be a string/));
});

test('parseDuration reads Go durations into milliseconds', () => {
  const cases: [string, number][] = [
    ['10s', 10_000],
    ['1m30s', 90_000],
    ['1.5h', 5_400_000],
    ['500ms', 500],
    ['72h', 259_200_000],
    ['0', 0],
    ['0s', 0],
    ['2m', 120_000],
    ['1h2m3s4ms', 3_723_004],
    ['1500us', 1.5],
    ['1500µs', 1.5],
    ['2000000ns', 2],
  ];
  for (const [text, ms] of cases) assert.equal(parseDuration(text, 'TTL'), ms, text);
});

test('parseDuration rejects malformed durations, naming the field', () => {
  for (const bad of ['', '10', '10x', 's', '1h2', 'h1', '1 h', ' 1h', '1h ', '-1s', '1..5s', 'abc', '1hh']) {
    assert.throws(() => parseDuration(bad, 'Check.TTL'), isFieldError('Check.TTL', /invalid duration/), JSON.stringify(bad));
  }
});

test('property: `${h}h${m}m${s}s` parses to the right number of milliseconds', () => {
  fc.assert(
    fc.property(fc.nat({ max: 100_000 }), fc.nat({ max: 100_000 }), fc.nat({ max: 100_000 }), (h, m, s) => {
      assert.equal(parseDuration(`${h}h${m}m${s}s`, 'd'), h * 3_600_000 + m * 60_000 + s * 1000);
    }),
  );
});

test('property: any single-unit duration round-trips', () => {
  const units: [string, number][] = [['ms', 1], ['s', 1000], ['m', 60_000], ['h', 3_600_000]];
  fc.assert(
    fc.property(fc.nat({ max: 1_000_000 }), fc.constantFrom(...units), (n, [unit, scale]) => {
      assert.equal(parseDuration(`${n}${unit}`, 'd'), n * scale);
    }),
  );
});
