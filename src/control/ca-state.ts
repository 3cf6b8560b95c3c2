// The agent's CA state machine: bootstrap, configuration, root rotation with cross-signing,
// pruning of rotated-out roots, automatic root renewal, and leaf signing through the pool.
// Runs on: the agent's control thread; signing (and CSR parsing) runs in the piscina pool.
//
// Consul's behaviour (consul-mesh.md §1.8, §1.12) with its known gaps closed (§6):
// - a config change that yields a new root (new key type/bits, or a supplied key+cert)
//   rotates: the old root cross-signs the new one (valid max(7 days, 2 × LeafCertTTL), not a
//   fixed 7 days that a long leaf TTL outlives), the cross-signed cert leads the new root's
//   IntermediateCerts, and every leaf issued afterwards carries it;
// - rotated-out roots stay trusted until 2 × LeafCertTTL after rotation, then are pruned;
// - the root renews itself (with cross-signing) when less than RootRenewalFraction of its
//   life remains — Consul has no automatic renewal and clusters die at RootCertTTL;
// - state that cannot be read stops the agent instead of silently minting a new root.

import { randomUUID } from 'node:crypto';
import type { Store } from './store.ts';
import { crossSignRoot, generateRoot, loadRoot, validateProvidedRoot, type IssuedCert, type RootMaterial } from '../ca/authority.ts';
import type { SigningPool } from '../ca/pool.ts';
import { trustDomainFor } from '../ca/spiffe.ts';
import { decodeCaConfiguration, defaultCaConfig, encodeCaConfiguration, type CaConfig } from './ca-config.ts';

export const CA_TABLE = 'connect/ca';
const STATE_KEY = 'state';

/** Consul's cross-sign validity is a fixed 7 days (§1.12 step 3); meshd takes the larger of that and 2 × LeafCertTTL. */
export const MIN_CROSS_SIGN_TTL_MS = 7 * 24 * 3_600_000;

interface StoredRoot {
  readonly certPem: string;
  readonly keyPem: string;
  readonly active: boolean;
  /** Cross-signed certificates for this root (oldest signer first). */
  readonly intermediatePems: readonly string[];
  /** Epoch ms when this root stopped being active; null while active. */
  readonly rotatedOutAt: number | null;
}

/** What is persisted: the config without secrets (the root key lives with its root). */
type StoredConfig = Omit<CaConfig, 'privateKey' | 'rootCert'>;

interface StoredCa {
  readonly version: 2;
  readonly clusterId: string;
  readonly config: StoredConfig;
  readonly roots: readonly StoredRoot[];
}

interface LiveRoot {
  readonly material: RootMaterial;
  readonly stored: StoredRoot;
}

export class CaStateError extends Error {
  override readonly name = 'CaStateError';
}

function publicConfig(cfg: CaConfig): StoredConfig {
  const { privateKey: _k, rootCert: _c, ...rest } = cfg;
  return rest;
}

export class CaState {
  readonly #store: Store;
  readonly #pool: SigningPool;
  readonly #datacenter: string;
  readonly #now: () => number;
  #clusterId = '';
  #config: CaConfig = defaultCaConfig();
  #roots: LiveRoot[] = [];
  #createIndex = 0;
  #modifyIndex = 0;
  /** Serialises state changes (Consul: one CA operation at a time, §1.13). */
  #busy: Promise<unknown> = Promise.resolve();

  constructor(store: Store, pool: SigningPool, opts: { datacenter: string; now: () => number }) {
    this.#store = store;
    this.#pool = pool;
    this.#datacenter = opts.datacenter;
    this.#now = opts.now;
  }

  /** Loads the persisted CA, or generates one (fresh cluster ID and EC P-256 root). */
  async bootstrap(): Promise<void> {
    const entry = this.#store.get<StoredCa | { clusterId: string; roots: { certPem: string; keyPem: string; active: boolean }[] }>(CA_TABLE, STATE_KEY);
    if (entry === undefined) {
      const clusterId = randomUUID();
      const cfg = defaultCaConfig();
      const root = await generateRoot({ clusterId, now: new Date(this.#now()), ttlMs: cfg.rootCertTtlMs, privateKeyType: cfg.privateKeyType, privateKeyBits: cfg.privateKeyBits });
      this.#save({ version: 2, clusterId, config: publicConfig(cfg), roots: [{ certPem: root.certPem, keyPem: root.keyPem, active: true, intermediatePems: [], rotatedOutAt: null }] });
      return;
    }
    this.#adopt(entry.value, entry.createIndex, entry.modifyIndex);
  }

  get trustDomain(): string {
    return trustDomainFor(this.#clusterId);
  }

  get clusterId(): string {
    return this.#clusterId;
  }

  get config(): CaConfig {
    return this.#config;
  }

  get activeRoot(): RootMaterial {
    return this.#active().material;
  }

  #active(): LiveRoot {
    const r = this.#roots.find((x) => x.stored.active);
    if (r === undefined) throw new CaStateError('CA is uninitialized and unable to sign certificates yet');
    return r;
  }

  /** `GET /v1/connect/ca/roots` body (Consul's CARoots; never a private key). */
  rootsResponse(): object {
    return {
      ActiveRootID: this.activeRoot.id,
      TrustDomain: this.trustDomain,
      Roots: this.#roots.map((r) => ({
        ID: r.material.id,
        Name: 'Consul CA Primary Cert',
        // Consul's serials come from a small counter; ours are 128-bit random (≥ 64 bits of
        // entropy as the Web PKI asks). A JSON number cannot carry that, so this field shows
        // the low 48 bits; the certificate has the full serial.
        SerialNumber: Number.parseInt(r.material.serialNumber.replaceAll(':', '').slice(-12), 16),
        SigningKeyID: r.material.signingKeyId,
        ExternalTrustDomain: this.#clusterId,
        NotBefore: rfc3339(r.material.notBefore),
        NotAfter: rfc3339(r.material.notAfter),
        RootCert: withNewline(r.material.certPem),
        IntermediateCerts: r.stored.intermediatePems.length === 0 ? null : r.stored.intermediatePems.map(withNewline),
        Active: r.stored.active,
        PrivateKeyType: r.material.privateKeyType,
        PrivateKeyBits: r.material.privateKeyBits,
        CreateIndex: this.#createIndex,
        ModifyIndex: this.#modifyIndex,
      })),
    };
  }

  /** `?pem=true`: every root and its intermediates, concatenated. */
  pemBundle(): string {
    return this.#roots.map((r) => [r.material.certPem, ...r.stored.intermediatePems].map(withNewline).join('')).join('');
  }

  /** `GET /v1/connect/ca/configuration` body: never the private key. */
  configResponse(): object {
    return encodeCaConfiguration(this.#config, { createIndex: this.#createIndex, modifyIndex: this.#modifyIndex });
  }

  /**
   * `PUT /v1/connect/ca/configuration`. Decoding errors throw FieldError (a 400, nothing
   * changed). Returns whether the root rotated.
   */
  setConfig(body: unknown): Promise<{ rotated: boolean }> {
    return this.#exclusive(async () => {
      let cfg = decodeCaConfiguration(body, this.#config);
      const now = new Date(this.#now());
      const active = this.#active();
      let next: RootMaterial | null = null;
      if (cfg.privateKey !== undefined && cfg.rootCert !== undefined) {
        const provided = validateProvidedRoot({ certPem: cfg.rootCert, keyPem: cfg.privateKey, clusterId: this.#clusterId, now });
        if (provided.id !== active.material.id) next = provided;
        // The stored config describes the active root; otherwise the next TTL-only change
        // would see a key-type mismatch and rotate away from the supplied root.
        cfg = { ...cfg, privateKeyType: provided.privateKeyType, privateKeyBits: provided.privateKeyBits };
      } else if (cfg.privateKeyType !== active.material.privateKeyType || cfg.privateKeyBits !== active.material.privateKeyBits) {
        next = await generateRoot({ clusterId: this.#clusterId, now, ttlMs: cfg.rootCertTtlMs, privateKeyType: cfg.privateKeyType, privateKeyBits: cfg.privateKeyBits });
      }
      if (next === null) {
        this.#save({ ...this.#snapshot(), config: publicConfig(cfg) });
        return { rotated: false };
      }
      await this.#rotateTo(next, cfg, now);
      return { rotated: true };
    });
  }

  /**
   * Periodic housekeeping (the agent calls it every minute; tests call it with an injected
   * clock): prunes roots rotated out more than 2 × LeafCertTTL ago, and renews the active
   * root when less than RootRenewalFraction of its lifetime remains.
   */
  tick(): Promise<{ pruned: number; renewed: boolean }> {
    return this.#exclusive(async () => {
      const now = this.#now();
      const keep = this.#roots.filter((r) => r.stored.active || r.stored.rotatedOutAt === null || now - r.stored.rotatedOutAt <= 2 * this.#config.leafCertTtlMs);
      const pruned = this.#roots.length - keep.length;
      if (pruned > 0) this.#save({ ...this.#snapshot(), roots: keep.map((r) => r.stored) });
      const a = this.#active().material;
      const life = a.notAfter.getTime() - a.notBefore.getTime();
      const fraction = this.#config.rootRenewalFraction;
      if (fraction > 0 && a.notAfter.getTime() - now < fraction * life) {
        const cfg = this.#config;
        const next = await generateRoot({ clusterId: this.#clusterId, now: new Date(now), ttlMs: cfg.rootCertTtlMs, privateKeyType: a.privateKeyType, privateKeyBits: a.privateKeyBits });
        await this.#rotateTo(next, { ...cfg, forceWithoutCrossSigning: false }, new Date(now));
        return { pruned, renewed: true };
      }
      return { pruned, renewed: false };
    });
  }

  /** Seconds until the active root expires (for the expiry gauge). */
  activeRootExpirySeconds(): number {
    return Math.round((this.activeRoot.notAfter.getTime() - this.#now()) / 1000);
  }

  /**
   * Signs a leaf CSR in the pool. `allowedServices` ('*' or a list) is enforced by the pool
   * after it has parsed the CSR, so the control thread never parses CSRs.
   */
  sign(csrPem: string, allowedServices: '*' | readonly string[]): Promise<IssuedCert> {
    const active = this.#active();
    return this.#pool.sign({
      csrPem,
      root: active.material,
      trustDomain: this.trustDomain,
      datacenter: this.#datacenter,
      now: new Date(this.#now()),
      ttlMs: this.#config.leafCertTtlMs,
      intermediatePems: [...active.stored.intermediatePems],
      ...(allowedServices === '*' ? {} : { allowedServices: [...allowedServices] }),
    });
  }

  async #rotateTo(next: RootMaterial, cfg: CaConfig, now: Date): Promise<void> {
    const old = this.#active();
    const crossTtl = Math.max(MIN_CROSS_SIGN_TTL_MS, 2 * cfg.leafCertTtlMs);
    // ForceWithoutCrossSigning (dangerous, as in Consul): peers that have not fetched the new
    // root refuse new leaves until they do.
    const cross = cfg.forceWithoutCrossSigning ? [] : [await crossSignRoot({ newRoot: next, oldRoot: old.material, now, ttlMs: crossTtl })];
    const roots: StoredRoot[] = this.#roots.map((r) => (r.stored.active ? { ...r.stored, active: false, rotatedOutAt: now.getTime() } : r.stored));
    roots.push({ certPem: next.certPem, keyPem: next.keyPem, active: true, intermediatePems: cross, rotatedOutAt: null });
    this.#save({ version: 2, clusterId: this.#clusterId, config: publicConfig(cfg), roots });
  }

  #snapshot(): StoredCa {
    return { version: 2, clusterId: this.#clusterId, config: publicConfig(this.#config), roots: this.#roots.map((r) => r.stored) };
  }

  #save(state: StoredCa): void {
    const index = this.#store.put<StoredCa>(CA_TABLE, STATE_KEY, state);
    const entry = this.#store.get<StoredCa>(CA_TABLE, STATE_KEY);
    this.#adopt(state, entry?.createIndex ?? index, index);
  }

  /** Validates persisted state; anything unreadable stops the agent (never a silent new root). */
  #adopt(raw: unknown, createIndex: number, modifyIndex: number): void {
    const fail = (why: string): never => {
      throw new CaStateError(`the CA state in the data directory is unusable (${why}); refusing to start rather than generate a new root that would cut every proxy off — restore the data directory from a backup`);
    };
    if (raw === null || typeof raw !== 'object') fail('not an object');
    const s = raw as Partial<StoredCa> & { roots?: unknown };
    if (typeof s.clusterId !== 'string' || s.clusterId === '') fail('no cluster ID');
    if (!Array.isArray(s.roots) || s.roots.length === 0) fail('no roots');
    // Version 1 (the foundation's layout) had no config and no intermediates.
    const config: CaConfig = { ...defaultCaConfig(), ...(s.version === 2 && s.config !== undefined ? s.config : {}) };
    const roots: LiveRoot[] = (s.roots as Partial<StoredRoot>[]).map((r, i) => {
      if (typeof r.certPem !== 'string' || typeof r.keyPem !== 'string') return fail(`root ${i} has no certificate or key`);
      let material: RootMaterial;
      try {
        material = loadRoot(r.certPem, r.keyPem);
      } catch (err) {
        return fail(`root ${i}: ${(err as Error).message}`);
      }
      const stored: StoredRoot = {
        certPem: r.certPem,
        keyPem: r.keyPem,
        active: r.active === true,
        intermediatePems: Array.isArray(r.intermediatePems) ? r.intermediatePems : [],
        rotatedOutAt: typeof r.rotatedOutAt === 'number' ? r.rotatedOutAt : r.active === true ? null : 0,
      };
      return { material, stored };
    });
    if (roots.filter((r) => r.stored.active).length !== 1) fail('there must be exactly one active root');
    this.#clusterId = s.clusterId as string;
    this.#config = config;
    this.#roots = roots;
    this.#createIndex = createIndex;
    this.#modifyIndex = modifyIndex;
  }

  #exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#busy.then(fn, fn);
    this.#busy = run.catch(() => undefined);
    return run;
  }
}

function withNewline(pem: string): string {
  return pem.endsWith('\n') ? pem : `${pem}\n`;
}

function rfc3339(d: Date): string {
  return d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}
