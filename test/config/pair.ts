// Shared by the per-kind config tests: a document given as HCL and as JSON must decode to the
// same entry, of the expected kind, and survive encode -> decode unchanged.

import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FieldError } from '../../src/control/decode.ts';
import { decodeConfigEntry, encodeConfigEntry, parseConfigEntryText, type ConfigEntry } from '../../src/config/entries.ts';

export async function decodePair<E extends ConfigEntry>(kind: E['kind'], hcl: string, json: unknown): Promise<E> {
  const stem = kind.replace(/^service-/, '');
  const a = await parseConfigEntryText(hcl, `${stem}.hcl`);
  const b = await parseConfigEntryText(JSON.stringify(json), `${stem}.json`);
  assert.deepEqual(a, b, 'HCL and JSON decode differently');
  assert.equal(a.kind, kind);
  assert.deepEqual(decodeConfigEntry(encodeConfigEntry(a, { createIndex: 3, modifyIndex: 4 })), a, 'encode -> decode changed the entry');
  return a as E;
}

/**
 * One test per [what, document, field, message] case: decoding must throw a FieldError that
 * names `field`, with exactly `message` (a string) or a message matching it (a RegExp).
 */
export function rejectsEach(cases: readonly (readonly [string, unknown, string, string | RegExp])[]): void {
  for (const [what, doc, field, message] of cases) {
    test(`rejects: ${what}`, () => {
      assert.throws(
        () => decodeConfigEntry(doc),
        (e: unknown) => {
          assert.ok(e instanceof FieldError, `expected a FieldError, got ${String(e)}`);
          assert.equal(e.field, field, e.message);
          if (typeof message === 'string') assert.equal(e.message, `${field}: ${message}`);
          else assert.match(e.message.slice(field.length + 2), message);
          return true;
        },
      );
    });
  }
}
