// The agent's CA state: bootstraps the root on first start, persists it (with its key) in
// the store, serves `/v1/connect/ca/roots`, and signs leaf CSRs through the signing pool.
// Runs on: the agent's control thread; the CPU-heavy signing runs in the piscina pool.

import { randomUUID } from 'node:crypto';
import type { Store } from './store.ts';
import { generateRoot, loadRoot, type RootMaterial, type IssuedCert } from '../ca/authority.ts';
import type { SigningPool } from '../ca/pool.ts';
import { trustDomainFor } from '../ca/spiffe.ts';

export const CA_TABLE = 'connect/ca';
const STATE_KEY = 'state';

/** Consul's defaults (§1.8): leaves live 72h, roots 87600h (10 years). */
export const DEFAULT_LEAF_TTL_MS = 72 * 3_600_000;
export const DEFAULT_ROOT_TTL_MS = 87_600 * 3_600_000;

interface StoredRoot {
  readonly certPem: string;
  readonly keyPem: string;
  readonly active: boolean;
}

interface StoredCa {
  readonly clusterId: string;
  readonly roots: StoredRoot[];
}

export class CaState {
  readonly #store: Store;
  readonly #pool: SigningPool;
  readonly #datacenter: string;
  readonly #now: () => number;
  #clusterId = '';
  #roots: { material: RootMaterial; active: boolean; createIndex: number; modifyIndex: number }[] = [];

  constructor(store: Store, pool: SigningPool, opts: { datacenter: string; now: () => number }) {
    this.#store = store;
    this.#pool = pool;
    this.#datacenter = opts.datacenter;
    this.#now = opts.now;
  }

  /** Loads the persisted root, or generates one (a fresh cluster ID and EC P-256 root). */
  async bootstrap(): Promise<void> {
    let entry = this.#store.get<StoredCa>(CA_TABLE, STATE_KEY);
    if (entry === undefined) {
      const clusterId = randomUUID();
      const root = await generateRoot({ clusterId, now: new Date(this.#now()), ttlMs: DEFAULT_ROOT_TTL_MS });
      this.#store.put<StoredCa>(CA_TABLE, STATE_KEY, { clusterId, roots: [{ certPem: root.certPem, keyPem: root.keyPem, active: true }] });
      entry = this.#store.get<StoredCa>(CA_TABLE, STATE_KEY);
    }
    if (entry === undefined) throw new Error('CA state vanished right after it was written');
    this.#clusterId = entry.value.clusterId;
    this.#roots = entry.value.roots.map((r) => ({
      material: loadRoot(r.certPem, r.keyPem),
      active: r.active,
      createIndex: entry.createIndex,
      modifyIndex: entry.modifyIndex,
    }));
  }

  get trustDomain(): string {
    return trustDomainFor(this.#clusterId);
  }

  get activeRoot(): RootMaterial {
    const r = this.#roots.find((x) => x.active);
    if (r === undefined) throw new Error('CA is uninitialized and unable to sign certificates yet');
    return r.material;
  }

  /** `GET /v1/connect/ca/roots` body (Consul's CARoots shape; never a private key). */
  rootsResponse(): object {
    return {
      ActiveRootID: this.activeRoot.id,
      TrustDomain: this.trustDomain,
      Roots: this.#roots.map((r) => ({
        ID: r.material.id,
        Name: 'Consul CA Primary Cert',
        SerialNumber: Number.parseInt(r.material.serialNumber.replaceAll(':', '').slice(-12), 16),
        SigningKeyID: r.material.signingKeyId,
        ExternalTrustDomain: this.#clusterId,
        NotBefore: r.material.notBefore.toISOString().replace(/\.\d{3}Z$/, 'Z'),
        NotAfter: r.material.notAfter.toISOString().replace(/\.\d{3}Z$/, 'Z'),
        RootCert: r.material.certPem.endsWith('\n') ? r.material.certPem : `${r.material.certPem}\n`,
        IntermediateCerts: null,
        Active: r.active,
        PrivateKeyType: 'ec',
        PrivateKeyBits: 256,
        CreateIndex: r.createIndex,
        ModifyIndex: r.modifyIndex,
      })),
    };
  }

  /** `?pem=true`: every root, concatenated. */
  pemBundle(): string {
    return this.#roots.map((r) => (r.material.certPem.endsWith('\n') ? r.material.certPem : `${r.material.certPem}\n`)).join('');
  }

  sign(csrPem: string): Promise<IssuedCert> {
    return this.#pool.sign({
      csrPem,
      root: this.activeRoot,
      trustDomain: this.trustDomain,
      datacenter: this.#datacenter,
      now: new Date(this.#now()),
      ttlMs: DEFAULT_LEAF_TTL_MS,
    });
  }
}
