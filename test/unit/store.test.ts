import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FileStore } from '../../src/control/store.ts';

function withTempDir(fn: (dir: string) => void | Promise<void>): () => Promise<void> {
  return async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshd-store-test-'));
    try {
      await fn(dir);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  };
}

/** Tracks whether a promise has settled yet. */
function track<T>(p: Promise<T>): { readonly settled: () => boolean; readonly promise: Promise<T> } {
  let done = false;
  const promise = p.then((v) => {
    done = true;
    return v;
  });
  return { settled: () => done, promise };
}

test('put/get/list/delete keep create and modify indexes, and every write gets a new, larger index', () => {
  const s = new FileStore(null);
  assert.equal(s.index, 0);
  assert.equal(s.get('t', 'a'), undefined);
  assert.deepEqual(s.list('t'), []);

  const i1 = s.put('t', 'a', { v: 1 });
  const i2 = s.put('t', 'b', { v: 2 });
  const i3 = s.put('t', 'a', { v: 3 });
  assert.ok(i1 > 0 && i2 > i1 && i3 > i2, `${i1} ${i2} ${i3}`);
  assert.equal(s.index, i3);
  assert.deepEqual(s.get('t', 'a'), { value: { v: 3 }, createIndex: i1, modifyIndex: i3 });
  assert.deepEqual(s.get('t', 'b'), { value: { v: 2 }, createIndex: i2, modifyIndex: i2 });
  assert.deepEqual(
    s.list<{ v: number }>('t').map((e) => e.value.v).sort(),
    [2, 3],
  );

  const i4 = s.delete('t', 'a');
  assert.ok(i4 > i3);
  assert.equal(s.get('t', 'a'), undefined);
  assert.equal(s.list('t').length, 1);
  // Deleting a missing key (or from a missing table) is not a write.
  assert.equal(s.delete('t', 'a'), 0);
  assert.equal(s.delete('nope', 'a'), 0);
  assert.equal(s.index, i4);

  // A re-created key gets a fresh create index.
  const i5 = s.put('t', 'a', { v: 5 });
  assert.deepEqual(s.get('t', 'a'), { value: { v: 5 }, createIndex: i5, modifyIndex: i5 });
});

test('tableIndex is per table: the index of that table\'s last write (deletes included)', () => {
  const s = new FileStore(null);
  assert.equal(s.tableIndex('a'), 0);
  const ia = s.put('a', 'k', 1);
  const ib = s.put('b', 'k', 1);
  assert.equal(s.tableIndex('a'), ia);
  assert.equal(s.tableIndex('b'), ib);
  const ib2 = s.put('b', 'k2', 2);
  assert.equal(s.tableIndex('a'), ia, 'a write to b must not move a');
  assert.equal(s.tableIndex('b'), ib2);
  const ia2 = s.delete('a', 'k');
  assert.equal(s.tableIndex('a'), ia2);
  assert.deepEqual(s.list('a'), []);
  assert.ok(s.tableIndex('a') > 0, 'an emptied table keeps its index');
});

test(
  'persistence round trip: a new FileStore on the same dir sees the same entries and indexes',
  withTempDir((dir) => {
    const data = join(dir, 'data');
    const a = new FileStore(data);
    a.put('catalog/services', 'web', { Port: 8080, Tags: ['x'] });
    a.put('catalog/services', 'api', { Port: 9090 });
    a.put('config/x', 'k', 'v');
    a.put('catalog/services', 'web', { Port: 8081 });
    a.delete('config/x', 'k');
    a.close();
    assert.ok(existsSync(join(data, 'state.json')));
    assert.equal(statSync(join(data, 'state.json')).mode & 0o777, 0o600);
    assert.equal(statSync(data).mode & 0o777, 0o700);

    const b = new FileStore(data);
    assert.equal(b.index, a.index);
    for (const t of ['catalog/services', 'config/x']) assert.equal(b.tableIndex(t), a.tableIndex(t), t);
    assert.deepEqual(b.get('catalog/services', 'web'), a.get('catalog/services', 'web'));
    assert.deepEqual(b.get('catalog/services', 'api'), a.get('catalog/services', 'api'));
    assert.equal(b.get('config/x', 'k'), undefined);
    // Writes continue from the persisted index.
    assert.equal(b.put('config/x', 'k2', 1), a.index + 1);
    b.close();
  }),
);

test(
  'a corrupt state.json is an error that names the file and says what to do',
  withTempDir((dir) => {
    const file = join(dir, 'state.json');
    writeFileSync(file, '{"version":1,"index":3,"tab');
    assert.throws(
      () => new FileStore(dir),
      (e: unknown) => {
        assert.ok(e instanceof Error);
        assert.ok(e.message.includes(file), e.message);
        assert.match(e.message, /move it away to start with empty state/);
        return true;
      },
    );
    // The corrupt file is left for the operator, not overwritten.
    assert.equal(readFileSync(file, 'utf8'), '{"version":1,"index":3,"tab');
  }),
);

test(
  'a state.json of another version is refused',
  withTempDir((dir) => {
    writeFileSync(join(dir, 'state.json'), JSON.stringify({ version: 2, index: 1, tables: {} }));
    assert.throws(() => new FileStore(dir), /unknown version 2/);
  }),
);

test(
  'a state.json that is valid JSON but not a state object gives a helpful error',
  withTempDir((dir) => {
    const file = join(dir, 'state.json');
    for (const text of ['null', '{"version":1}']) {
      writeFileSync(file, text);
      assert.throws(
        () => new FileStore(dir),
        (e: unknown) => {
          assert.ok(e instanceof Error);
          assert.ok(e.message.includes(file), `${text}: ${e.message}`);
          return true;
        },
      );
    }
  }),
);

test('waitForChange resolves at once when the index is already past', async () => {
  const s = new FileStore(null);
  const i = s.put('t', 'k', 1);
  const started = Date.now();
  assert.equal(await s.waitForChange(['t'], i - 1, 60_000), i);
  assert.equal(await s.waitForChange(['t', 'other'], 0, 60_000), i);
  assert.ok(Date.now() - started < 5_000);
});

test('waitForChange resolves on a write to a watched table with the new index', async () => {
  const s = new FileStore(null);
  const i = s.put('t', 'k', 1);
  s.put('u', 'k', 1);
  const w = track(s.waitForChange(['t', 'v'], s.tableIndex('t'), 60_000));
  await sleep(10);
  assert.equal(w.settled(), false, 'must block while nothing changed');
  const j = s.put('t', 'k', 2);
  assert.ok(j > i);
  assert.equal(await w.promise, j);
});

test('waitForChange does NOT resolve on a write to another table; it resolves at the timeout', async () => {
  const s = new FileStore(null);
  const i = s.put('watched', 'k', 1);
  const started = Date.now();
  const w = track(s.waitForChange(['watched'], i, 300));
  s.put('other', 'k', 1);
  s.put('other', 'k2', 1);
  await sleep(50);
  assert.equal(w.settled(), false, 'a write to another table woke the waiter');
  assert.equal(await w.promise, i, 'the timeout reports the unchanged table index');
  assert.ok(Date.now() - started >= 250, 'resolved well before its timeout');
});

test(
  'waitForChange on a never-written table is not woken by writes to other tables',
  async () => {
    const s = new FileStore(null);
    s.put('other', 'k', 1);
    // What a blocking client would have been told for the empty table.
    const since = await s.waitForChange(['empty'], Number.MAX_SAFE_INTEGER, 0);
    const w = track(s.waitForChange(['empty'], since, 300));
    s.put('other', 'k2', 1);
    await sleep(50);
    assert.equal(w.settled(), false, 'a write to another table woke a waiter on an empty table');
    assert.equal(await w.promise, since);
  },
);

test('waitForChange resolves when its signal aborts, with the current index', async () => {
  const s = new FileStore(null);
  const i = s.put('t', 'k', 1);
  const ac = new AbortController();
  const w = track(s.waitForChange(['t'], i, 60_000, ac.signal));
  await sleep(10);
  assert.equal(w.settled(), false);
  ac.abort();
  assert.equal(await w.promise, i);
  // An already-aborted signal resolves at once.
  assert.equal(await s.waitForChange(['t'], i, 60_000, ac.signal), i);
});

test('close() releases every waiter', async () => {
  const s = new FileStore(null);
  const i = s.put('t', 'k', 1);
  const a = track(s.waitForChange(['t'], i, 60_000));
  const b = track(s.waitForChange(['x', 't'], i, 60_000));
  await sleep(10);
  assert.equal(a.settled() || b.settled(), false);
  s.close();
  assert.deepEqual(await Promise.all([a.promise, b.promise]), [i, i]);
  // A released waiter does not fire again on a later write (no double resolve, no throw).
  s.put('t', 'k', 2);
});

test('a waiter removed after resolving is not resolved by later writes (no leaks between waits)', async () => {
  const s = new FileStore(null);
  const i = s.put('t', 'k', 1);
  const first = s.waitForChange(['t'], i, 60_000);
  const j = s.put('t', 'k', 2);
  assert.equal(await first, j);
  const second = track(s.waitForChange(['t'], j, 200));
  await sleep(20);
  assert.equal(second.settled(), false);
  assert.equal(await second.promise, j);
});
