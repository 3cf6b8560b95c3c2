// Shared by the per-kind config tests: a document given as HCL and as JSON must decode to the
// same entry, of the expected kind, and survive encode -> decode unchanged.

import assert from 'node:assert/strict';
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
