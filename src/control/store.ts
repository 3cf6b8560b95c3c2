// The authority's state store: tables of JSON values with Consul-style raft-like indexes
// (every write bumps one global index; each table remembers the index of its last change,
// which is what blocking queries compare against and what X-Consul-Index reports).
//
// Runs on: the agent's control thread. The interface is deliberately small (get, list, put,
// delete, watch) so that a distributed store (etcd, see DESIGN.md) can replace the embedded
// one later without touching the HTTP API or the compile steps.

import { closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { parseJson } from './decode.ts';

export interface Entry<T> {
  readonly value: T;
  readonly createIndex: number;
  readonly modifyIndex: number;
}

export interface Store {
  /** The highest index handed out so far. */
  readonly index: number;
  tableIndex(table: string): number;
  get<T>(table: string, key: string): Entry<T> | undefined;
  list<T>(table: string): Entry<T>[];
  /** Writes a value and returns the index of the write. */
  put<T>(table: string, key: string, value: T): number;
  /** Deletes a key; returns the index of the write, or 0 when the key did not exist. */
  delete(table: string, key: string): number;
  /**
   * Resolves with the table's index once it is greater than `sinceIndex`, or after `timeoutMs`
   * with the current index (Consul's blocking-query contract: the caller re-reads either way).
   */
  waitForChange(tables: readonly string[], sinceIndex: number, timeoutMs: number, signal?: AbortSignal): Promise<number>;
  /** The index a read of these tables reports (X-Consul-Index): the latest change, at least 1. */
  maxIndex(tables: readonly string[]): number;
  close(): void;
}

interface Persisted {
  readonly version: 1;
  readonly index: number;
  readonly tables: Record<string, { index: number; entries: Record<string, Entry<unknown>> }>;
}

interface Waiter {
  readonly tables: readonly string[];
  readonly since: number;
  readonly resolve: (index: number) => void;
}

/**
 * An in-memory store that persists a snapshot to `<dataDir>/state.json` on every write
 * (write to a temporary file, then rename: a crash leaves the old or the new file, never half
 * of one). Writes are rare (config changes, registrations), so a full snapshot is cheap.
 */
export class FileStore implements Store {
  #index = 0;
  readonly #tables = new Map<string, { index: number; entries: Map<string, Entry<unknown>> }>();
  readonly #waiters = new Set<Waiter>();
  readonly #file: string | null;

  constructor(dataDir: string | null) {
    this.#file = dataDir === null ? null : join(dataDir, 'state.json');
    if (dataDir !== null) mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    if (this.#file !== null && existsSync(this.#file)) this.#load(this.#file);
  }

  get index(): number {
    return this.#index;
  }

  tableIndex(table: string): number {
    return this.#tables.get(table)?.index ?? 0;
  }

  get<T>(table: string, key: string): Entry<T> | undefined {
    return this.#tables.get(table)?.entries.get(key) as Entry<T> | undefined;
  }

  list<T>(table: string): Entry<T>[] {
    const t = this.#tables.get(table);
    return t === undefined ? [] : ([...t.entries.values()] as Entry<T>[]);
  }

  put<T>(table: string, key: string, value: T): number {
    const t = this.#table(table);
    const index = ++this.#index;
    const prev = t.entries.get(key);
    t.entries.set(key, { value, createIndex: prev?.createIndex ?? index, modifyIndex: index });
    t.index = index;
    this.#committed();
    return index;
  }

  delete(table: string, key: string): number {
    const t = this.#tables.get(table);
    if (t === undefined || !t.entries.has(key)) return 0;
    const index = ++this.#index;
    t.entries.delete(key);
    t.index = index;
    this.#committed();
    return index;
  }

  waitForChange(tables: readonly string[], sinceIndex: number, timeoutMs: number, signal?: AbortSignal): Promise<number> {
    const current = this.maxIndex(tables);
    if (current > sinceIndex || timeoutMs <= 0 || signal?.aborted === true) return Promise.resolve(current);
    return new Promise((resolve) => {
      const finish = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', finish);
        this.#waiters.delete(waiter);
        resolve(this.maxIndex(tables));
      };
      const waiter: Waiter = { tables, since: sinceIndex, resolve: finish };
      const timer = setTimeout(finish, timeoutMs);
      signal?.addEventListener('abort', finish, { once: true });
      this.#waiters.add(waiter);
    });
  }

  close(): void {
    for (const w of [...this.#waiters]) w.resolve(this.maxIndex(w.tables));
  }

  maxIndex(tables: readonly string[]): number {
    let max = 0;
    for (const t of tables) max = Math.max(max, this.tableIndex(t));
    // A never-written table reports 1, not 0 (blocking clients treat 0 as "no index"), and
    // not the global index: a write to another table must not wake its watchers.
    return Math.max(1, max);
  }

  #table(name: string): { index: number; entries: Map<string, Entry<unknown>> } {
    let t = this.#tables.get(name);
    if (t === undefined) {
      t = { index: 0, entries: new Map() };
      this.#tables.set(name, t);
    }
    return t;
  }

  #committed(): void {
    this.#persist();
    for (const w of [...this.#waiters]) {
      if (this.maxIndex(w.tables) > w.since) w.resolve(0);
    }
  }

  #persist(): void {
    if (this.#file === null) return;
    const tables: Persisted['tables'] = {};
    for (const [name, t] of this.#tables) tables[name] = { index: t.index, entries: Object.fromEntries(t.entries) };
    const snapshot: Persisted = { version: 1, index: this.#index, tables };
    // write, fsync, rename, fsync the directory: after a crash the file is the old state or
    // the new one, never a torn mix, and a completed write survives power loss.
    const tmp = `${this.#file}.tmp`;
    const fd = openSync(tmp, 'w', 0o600);
    try {
      writeFileSync(fd, JSON.stringify(snapshot));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, this.#file);
    const dirFd = openSync(dirname(this.#file), 'r');
    try {
      fsyncSync(dirFd);
    } finally {
      closeSync(dirFd);
    }
  }

  #load(file: string): void {
    let raw: unknown;
    try {
      raw = parseJson(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new Error(`cannot read ${file}: ${(err as Error).message}; restore it from a backup, or move it away to start with empty state (a new CA root: existing proxies must fetch new certificates)`, { cause: err });
    }
    const parsed = raw as Partial<Persisted> | null;
    const version: unknown = parsed?.version;
    if (typeof version === 'number' && version !== 1) {
      throw new Error(`${file} has unknown version ${version}: it was written by another meshd; restore it from a backup, or move it away to start with empty state (a new CA root: existing proxies must fetch new certificates)`);
    }
    const valid = parsed !== null && typeof parsed === 'object' && version === 1 && Number.isInteger(parsed.index) && typeof parsed.tables === 'object' && parsed.tables !== null;
    if (!valid || parsed.index === undefined || parsed.tables === undefined) throw new Error(`${file} is not a meshd state file (version 1): restore it from a backup, or move it away to start with empty state (a new CA root: existing proxies must fetch new certificates)`);
    this.#index = parsed.index;
    for (const [name, t] of Object.entries(parsed.tables)) {
      this.#tables.set(name, { index: t.index, entries: new Map(Object.entries(t.entries)) });
    }
  }
}
