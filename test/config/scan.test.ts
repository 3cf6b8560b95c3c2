// The structural pre-checks of config text (src/config/scan.ts): what JSON.parse and the HCL
// parser would accept silently (duplicate keys, __proto__) or crash on (deep nesting) is
// refused with a line and column; everything valid passes untouched.

import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import fc from 'fast-check';
import { MAX_CONFIG_DEPTH, scanHcl, scanJson } from '../../src/config/scan.ts';
import { ConfigSyntaxError, parseConfigText } from '../../src/config/hcl.ts';
import { FieldError, parseJsonObject } from '../../src/control/decode.ts';

const FIXTURES = new URL('./fixtures/', import.meta.url);

test('property: any JSON.stringify output passes scanJson, compact or indented', () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 8 }), fc.constantFrom(undefined, 2, '\t'), (v, indent) => {
      const text = JSON.stringify(v, null, indent);
      // fast-check may generate a "__proto__" key (as an own property): that one is refused by design.
      if (/"__proto__"\s*:/.test(text)) return;
      assert.equal(scanJson(text), null, text);
    }),
    { seed: 4242, numRuns: 500 },
  );
});

test('property: whatever scanJson accepts, JSON.parse accepts (truncations and random edits of valid documents)', () => {
  fc.assert(
    fc.property(fc.jsonValue({ maxDepth: 5 }), fc.nat(), fc.string({ maxLength: 3 }), (v, cut, insert) => {
      const text = JSON.stringify(v);
      const at = cut % (text.length + 1);
      for (const mutated of [text.slice(0, at), text.slice(0, at) + insert + text.slice(at)]) {
        if (scanJson(mutated) !== null) continue;
        assert.doesNotThrow(() => JSON.parse(mutated), `scanJson accepted ${JSON.stringify(mutated)}`);
      }
    }),
    { seed: 4243, numRuns: 1000 },
  );
});

test('JSON: duplicate keys (also written with escapes) and __proto__ are refused with line and column', () => {
  assert.deepEqual(scanJson('{\n  "Kind": "service-defaults",\n  "Protocol": "http",\n  "Protocol": "tcp"\n}'), {
    line: 4, column: 3, message: 'duplicate key "Protocol" (first given on line 3)',
  });
  assert.match(scanJson('{"ab": 1, "a\\u0062": 2}')?.message ?? '', /duplicate key "ab"/);
  assert.match(scanJson('{"Meta": {"__proto__": "x"}}')?.message ?? '', /__proto__/);
  // The same key in two different objects is fine.
  assert.equal(scanJson('{"a": {"x": 1}, "b": {"x": 2}, "c": [{"x": 1}, {"x": 2}]}'), null);
});

test('JSON: nesting up to the limit passes, one level deeper is refused, 100,000 levels do not overflow the stack', () => {
  const nest = (d: number): string => '{"a":'.repeat(d - 1) + '{}' + '}'.repeat(d - 1);
  assert.equal(scanJson(nest(MAX_CONFIG_DEPTH)), null);
  assert.match(scanJson(nest(MAX_CONFIG_DEPTH + 1))?.message ?? '', /nesting deeper than 64 levels/);
  assert.match(scanJson('['.repeat(100_000) + ']'.repeat(100_000))?.message ?? '', /nesting deeper/);
});

test('JSON: syntax errors carry the line JSON.parse does not give', () => {
  assert.deepEqual(scanJson('{\n  "Kind": "x",\n  "Name": \n}'), { line: 4, column: 1, message: 'unexpected "}"' });
  assert.equal(scanJson('{"a": 1,}')?.message, 'expected a quoted key');
  assert.equal(scanJson('{"a": 1} x')?.message, 'unexpected text after the document');
  assert.equal(scanJson('{"a": "x')?.message, 'unterminated string');
  assert.equal(scanJson('{"a": 01}')?.message, 'expected "," or "}"');
});

test('API bodies: parseJsonObject refuses the same, naming the body and the line', () => {
  assert.throws(() => parseJsonObject('{"Name": "a",\n"Name": "b"}'), (e: unknown) => e instanceof FieldError && /^body: invalid JSON: line 2, column 1: duplicate key "Name"/.test(e.message));
  assert.deepEqual(parseJsonObject('{"Name": "a\\"b"}'), { Name: 'a"b' });
});

test('HCL: an attribute assigned twice is refused; repeated blocks (HCL lists) are not', () => {
  const dup = 'Kind = "service-defaults"\nName = "x"\nProtocol = "http"\n\nProtocol = "tcp"\n';
  assert.deepEqual(scanHcl(dup), { line: 5, column: 1, message: 'duplicate key "Protocol" (first given on line 3)' });
  const lists = 'Kind = "service-intentions"\nName = "api"\nSources {\n  Name = "web"\n  Action = "allow"\n}\nSources {\n  Name = "ops"\n  Action = "deny"\n}\n';
  assert.equal(scanHcl(lists), null);
  assert.match(scanHcl('Sources {\n  Name = "web"\n  name2 = 1\n  Name = "x"\n}\n')?.message ?? '', /duplicate key "Name" \(first given on line 2\)/);
  assert.match(scanHcl('"Name" = "a"\nName = "b"\n')?.message ?? '', /duplicate key "Name"/);
  assert.match(scanHcl('Meta {\n  __proto__ = "x"\n}\n')?.message ?? '', /__proto__/);
});

test('HCL: values, comments, heredocs and interpolations are not mistaken for keys', () => {
  const text = [
    '# Name = "in a comment"',
    '// Name = "again"',
    '/* Name = "block comment" { */',
    'Name = "x" # trailing',
    'Description = <<EOF',
    'Name = "inside a heredoc" {',
    'EOF',
    'Meta = { Name = "a map key, not the top-level Name" }',
    'Methods = ["GET", "Name", "POST"]',
    'Path = "/${var.Name}/{x}"',
    'Weight = -1.5',
    'Other = Name',
  ].join('\n');
  assert.equal(scanHcl(text), null);
});

test('HCL: deep nesting is refused before the parser (which would overflow its stack)', async () => {
  const deep = 'Kind = "service-defaults"\nName = "x"\nMeta ' + '{ a '.repeat(5000) + '= 1' + '}'.repeat(5000) + '\n';
  assert.match(scanHcl(deep)?.message ?? '', /nesting deeper than 64 levels/);
  await assert.rejects(parseConfigText(deep, 'deep.hcl'), (e: unknown) => e instanceof ConfigSyntaxError && /^deep\.hcl: invalid HCL: line 3, column \d+: nesting deeper/.test(e.message));
});

test('every HCL and JSON fixture (Consul documentation examples) passes the scan', () => {
  for (const f of readdirSync(FIXTURES)) {
    const text = readFileSync(new URL(f, FIXTURES), 'utf8');
    assert.equal(f.endsWith('.json') ? scanJson(text) : scanHcl(text), null, f);
  }
});
