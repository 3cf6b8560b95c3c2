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
import { checkIntermediate, crossSignRoot, generateRoot, loadRoot, signIntermediateCsr, validateProvidedRoot, type IssuedCert, type RootMaterial } from '../ca/authority.ts';
import type { SigningPool } from '../ca/pool.ts';
import { trustDomainFor } from '../ca/spiffe.ts';
import { decodeCaConfiguration, defaultCaConfig, encodeCaConfiguration, type CaConfig } from './ca-config.ts';

export const CA_TABLE = 'connect/ca';
const STATE_KEY = 'state';
const NO_INTERMEDIATE = 'CA is uninitialized and unable to sign certificates yet: this secondary datacenter has no intermediate from the primary yet (see the agent log for why)';
/** A secondary datacenter's CA (federation): the primary's roots and our intermediate. */
const SECONDARY_KEY = 'secondary';

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

/** One entry of the primary's `/v1/connect/ca/roots` Roots, as it served it. */
export interface PrimaryRootJson {
  readonly ID: string;
  readonly RootCert: string;
  readonly IntermediateCerts: readonly string[] | null;
  readonly Active: boolean;
  readonly NotAfter: string;
  readonly [field: string]: unknown;
}

/** The primary's `/v1/connect/ca/roots` body, replicated as it came (checked by decodePrimaryRoots). */
export interface PrimaryRoots {
  readonly ActiveRootID: string;
  readonly TrustDomain: string;
  readonly Roots: readonly PrimaryRootJson[];
}

/**
 * A secondary's persisted CA: the primary's roots and CA configuration as last replicated,
 * and the intermediate this datacenter signs leaves with (its key never leaves this agent;
 * it lives in state.json like a primary's root key).
 */
interface StoredSecondaryCa {
  readonly version: 1;
  readonly primaryRoots: PrimaryRoots;
  readonly config: StoredConfig;
  readonly intermediate: { readonly certPem: string; readonly keyPem: string; readonly rootId: string };
}

interface LiveSecondary {
  readonly stored: StoredSecondaryCa;
  readonly signer: RootMaterial;
}

/**
 * Checks the shape of a primary's roots body before it is stored or served: the fields a
 * proxy relies on (ActiveRootID naming one of Roots, TrustDomain, each RootCert) must be
 * there. Throws CaStateError naming the field.
 */
export function decodePrimaryRoots(raw: unknown): PrimaryRoots {
  const fail = (why: string): never => {
    throw new CaStateError(`the primary's CA roots are unusable: ${why}`);
  };
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return fail('not an object');
  const r = raw as Record<string, unknown>;
  if (typeof r.ActiveRootID !== 'string' || r.ActiveRootID === '') fail('ActiveRootID is missing');
  if (typeof r.TrustDomain !== 'string' || r.TrustDomain === '') fail('TrustDomain is missing');
  if (!Array.isArray(r.Roots) || r.Roots.length === 0) return fail('Roots is empty');
  const roots = (r.Roots as unknown[]).map((x, i): PrimaryRootJson => {
    if (x === null || typeof x !== 'object') return fail(`Roots[${i}] is not an object`);
    const e = x as Record<string, unknown>;
    if (typeof e.ID !== 'string' || typeof e.RootCert !== 'string' || typeof e.NotAfter !== 'string') return fail(`Roots[${i}] lacks ID, RootCert or NotAfter`);
    const ic = e.IntermediateCerts;
    if (ic !== null && ic !== undefined && !(Array.isArray(ic) && ic.every((p) => typeof p === 'string'))) return fail(`Roots[${i}].IntermediateCerts must be a list of PEMs`);
    return { ...e, ID: e.ID, RootCert: e.RootCert, NotAfter: e.NotAfter, Active: e.ID === r.ActiveRootID, IntermediateCerts: ic ?? null };
  });
  if (!roots.some((x) => x.ID === r.ActiveRootID)) fail(`ActiveRootID ${String(r.ActiveRootID)} is not one of Roots`);
  return { ActiveRootID: r.ActiveRootID as string, TrustDomain: r.TrustDomain as string, Roots: roots };
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

  /** Set in a secondary datacenter: it has no root of its own (see adoptSecondary). */
  readonly #secondaryMode: boolean;
  #secondary: LiveSecondary | null = null;

  constructor(store: Store, pool: SigningPool, opts: { datacenter: string; now: () => number; secondary?: boolean }) {
    this.#store = store;
    this.#pool = pool;
    this.#datacenter = opts.datacenter;
    this.#now = opts.now;
    this.#secondaryMode = opts.secondary === true;
  }

  /** True in a secondary datacenter (federation): roots come from the primary. */
  get isSecondary(): boolean {
    return this.#secondaryMode;
  }

  /**
   * True once leaves can be signed: always on a primary after bootstrap, on a secondary once
   * it holds the primary's roots and an intermediate.
   */
  get ready(): boolean {
    return this.#secondaryMode ? this.#secondary !== null : this.#roots.length > 0;
  }

  /**
   * Loads the persisted CA, or generates one (fresh cluster ID and EC P-256 root). A
   * secondary generates nothing: it waits for the primary (federation.ts), and refuses a
   * data directory that holds a primary's own root (and a primary one that holds a
   * secondary's state): switching roles would silently change the trust domain.
   */
  async bootstrap(): Promise<void> {
    const sec = this.#store.get<unknown>(CA_TABLE, SECONDARY_KEY);
    const own = this.#store.get<unknown>(CA_TABLE, STATE_KEY);
    if (this.#secondaryMode) {
      if (own !== undefined) {
        throw new CaStateError('the data directory holds a primary datacenter\'s own CA root, but this agent runs as a secondary (-primary-datacenter differs from -datacenter); use a fresh -data-dir for the secondary, or start it as the primary again');
      }
      if (sec !== undefined) this.#adoptSecondary(sec.value, sec.createIndex, sec.modifyIndex);
      return;
    }
    if (sec !== undefined) {
      throw new CaStateError('the data directory holds a secondary datacenter\'s CA (an intermediate of another primary), but this agent runs as the primary; use a fresh -data-dir, or start it with -primary-datacenter and -join-wan again');
    }
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

  /** The cluster's trust domain; on a secondary that has not reached the primary yet, "". */
  get trustDomain(): string {
    if (this.#secondaryMode) return this.#secondary?.stored.primaryRoots.TrustDomain.toLowerCase() ?? '';
    return trustDomainFor(this.#clusterId);
  }

  /** The primary's cluster ID: a secondary takes the trust domain's first label (§1.1). */
  get clusterId(): string {
    if (this.#secondaryMode) return this.trustDomain.split('.')[0] ?? '';
    return this.#clusterId;
  }

  get config(): CaConfig {
    return this.#config;
  }

  /** The primary's active root (a secondary does not hold its key: use signingCertId). */
  get activeRoot(): RootMaterial {
    if (this.#secondaryMode) throw new CaStateError('a secondary datacenter holds no root key: it signs with its intermediate');
    return this.#active().material;
  }

  /**
   * The ID of the certificate leaves are signed with now: the active root on a primary, the
   * intermediate on a secondary. A leaf cache re-issues when it changes (Consul's agent
   * compares the leaf's AKI with the active SigningKeyID).
   */
  get signingCertId(): string {
    if (this.#secondaryMode) return this.#secondaryState().signer.id;
    return this.#active().material.id;
  }

  /** The ActiveRootID this datacenter serves ("" on a secondary that has none yet). */
  get activeRootId(): string {
    if (this.#secondaryMode) return this.#secondary?.stored.primaryRoots.ActiveRootID ?? '';
    return this.#active().material.id;
  }

  /** A secondary's intermediate (certificate and signing material), or null. */
  get intermediate(): { readonly certPem: string; readonly material: RootMaterial; readonly rootId: string } | null {
    const s = this.#secondary;
    return s === null ? null : { certPem: s.stored.intermediate.certPem, material: s.signer, rootId: s.stored.intermediate.rootId };
  }

  /** A secondary's replicated primary roots, or null. */
  get primaryRoots(): PrimaryRoots | null {
    return this.#secondary?.stored.primaryRoots ?? null;
  }

  #secondaryState(): LiveSecondary {
    if (this.#secondary === null) throw new CaStateError(NO_INTERMEDIATE);
    return this.#secondary;
  }

  #active(): LiveRoot {
    const r = this.#roots.find((x) => x.stored.active);
    if (r === undefined) throw new CaStateError('CA is uninitialized and unable to sign certificates yet');
    return r;
  }

  /** `GET /v1/connect/ca/roots` body (Consul's CARoots; never a private key). */
  rootsResponse(): object {
    if (this.#secondaryMode) return this.#secondaryRoots();
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

  /**
   * A secondary serves the primary's roots (same TrustDomain, ActiveRootID and
   * certificates), as Consul's secondaries do, with two local changes: the active root's
   * IntermediateCerts end with this datacenter's intermediate (cross-signed certificates
   * first, local signer last, §1.7) and its SigningKeyID is the intermediate's.
   */
  #secondaryRoots(): object {
    const s = this.#secondary;
    if (s === null) return { ActiveRootID: '', TrustDomain: '', Roots: [] };
    const p = s.stored.primaryRoots;
    return {
      ActiveRootID: p.ActiveRootID,
      TrustDomain: p.TrustDomain,
      Roots: p.Roots.map((r) => {
        const base = { ...r, CreateIndex: this.#createIndex, ModifyIndex: this.#modifyIndex };
        if (r.ID !== p.ActiveRootID) return base;
        return { ...base, SigningKeyID: s.signer.signingKeyId, IntermediateCerts: [...(r.IntermediateCerts ?? []), withNewline(s.stored.intermediate.certPem)] };
      }),
    };
  }

  /** `?pem=true`: every root and its intermediates, concatenated. */
  pemBundle(): string {
    if (this.#secondaryMode) {
      const s = this.#secondary;
      if (s === null) return '';
      return s.stored.primaryRoots.Roots.map((r) => [r.RootCert, ...(r.IntermediateCerts ?? [])].map(withNewline).join('')).join('') + withNewline(s.stored.intermediate.certPem);
    }
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
    // The agent forwards a secondary's PUT to the primary; this is the last line of defence.
    if (this.#secondaryMode) return Promise.reject(new CaStateError('a secondary datacenter\'s CA configuration is the primary\'s: change it there'));
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
    // A secondary's roots are the primary's to prune and renew; its intermediate is renewed
    // by the federation loop (federation.ts), which can reach the primary.
    if (this.#secondaryMode) return Promise.resolve({ pruned: 0, renewed: false });
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
    if (this.#secondaryMode) {
      const p = this.#secondary?.stored.primaryRoots;
      const active = p?.Roots.find((r) => r.ID === p.ActiveRootID);
      return active === undefined ? 0 : Math.round((Date.parse(active.NotAfter) - this.#now()) / 1000);
    }
    return Math.round((this.activeRoot.notAfter.getTime() - this.#now()) / 1000);
  }

  /**
   * Signs a leaf CSR in the pool. `allowedServices` ('*' or a list) is enforced by the pool
   * after it has parsed the CSR, so the control thread never parses CSRs.
   */
  sign(csrPem: string, allowedServices: '*' | readonly string[]): Promise<IssuedCert> {
    if (this.#secondaryMode) {
      // Signed with the intermediate; CertPEM is leaf, intermediate, then the primary active
      // root's cross-signed certificates (issuer order, so a peer that only trusts the old
      // root can still build leaf → intermediate → new root → old root).
      const s = this.#secondary;
      if (s === null) return Promise.reject(new CaStateError(NO_INTERMEDIATE));
      const p = s.stored.primaryRoots;
      const active = p.Roots.find((r) => r.ID === p.ActiveRootID);
      return this.#pool.sign({
        csrPem,
        root: s.signer,
        trustDomain: this.trustDomain,
        datacenter: this.#datacenter,
        now: new Date(this.#now()),
        ttlMs: this.#config.leafCertTtlMs,
        intermediatePems: [s.stored.intermediate.certPem, ...(active?.IntermediateCerts ?? [])],
        ...(allowedServices === '*' ? {} : { allowedServices: [...allowedServices] }),
      });
    }
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

  /**
   * Primary: signs a secondary datacenter's intermediate CSR with the active root
   * (`POST /v1/internal/meshd/ca/sign-intermediate`), lifetime IntermediateCertTTL capped at
   * the root's NotAfter. Returns the certificate and the root that signed it, so the
   * secondary can tell a rotation that happened meanwhile.
   */
  signIntermediate(csrPem: string): Promise<{ CertPEM: string; RootID: string }> {
    if (this.#secondaryMode) return Promise.reject(new CaStateError('only the primary datacenter signs intermediates'));
    return this.#exclusive(async () => {
      const root = this.#active().material;
      const pem = await signIntermediateCsr({ csrPem, root, trustDomain: this.trustDomain, now: new Date(this.#now()), ttlMs: this.#config.intermediateCertTtlMs });
      return { CertPEM: pem, RootID: root.id };
    });
  }

  /**
   * Secondary: is a new intermediate needed for these primary roots? Yes when there is none,
   * when the primary's active root is not the one ours chains to (a rotation: a new
   * intermediate must come before the new ActiveRootID is served), or when more than half
   * of its life has passed (Consul's renewal point, §1.6).
   */
  needsIntermediate(roots: PrimaryRoots): boolean {
    const s = this.#secondary;
    if (s === null || s.stored.intermediate.rootId !== roots.ActiveRootID) return true;
    const { notBefore, notAfter } = s.signer;
    return this.#now() >= notBefore.getTime() + (notAfter.getTime() - notBefore.getTime()) / 2;
  }

  /** Secondary: when the current intermediate reaches half its life (epoch ms), or null. */
  intermediateRenewAt(): number | null {
    const s = this.#secondary;
    if (s === null) return null;
    const { notBefore, notAfter } = s.signer;
    return notBefore.getTime() + (notAfter.getTime() - notBefore.getTime()) / 2;
  }

  /**
   * Secondary: stores the primary's roots and CA configuration, with a new intermediate
   * (`intermediate`) or the current one (null: allowed only while it chains to the
   * primary's active root, so a new ActiveRootID is never served before an intermediate of
   * that root is in place). The intermediate is checked first (our key, CA, trust domain,
   * issued by the active root): nothing is stored when a check fails.
   */
  adoptPrimary(rootsRaw: unknown, configBody: unknown, intermediate: { certPem: string; keyPem: string } | null): Promise<void> {
    return this.#exclusive(async () => {
      await Promise.resolve();
      if (!this.#secondaryMode) throw new CaStateError('only a secondary datacenter adopts the primary\'s roots');
      const roots = decodePrimaryRoots(rootsRaw);
      const cfg = decodeCaConfiguration(configBody, defaultCaConfig());
      const active = roots.Roots.find((r) => r.ID === roots.ActiveRootID) as PrimaryRootJson;
      let int = this.#secondary?.stored.intermediate ?? null;
      if (intermediate !== null) {
        checkIntermediate({ certPem: intermediate.certPem, keyPem: intermediate.keyPem, root: { certPem: active.RootCert, id: active.ID }, trustDomain: roots.TrustDomain });
        int = { certPem: withNewline(intermediate.certPem), keyPem: intermediate.keyPem, rootId: active.ID };
      }
      if (int === null || int.rootId !== roots.ActiveRootID) throw new CaStateError(`no intermediate issued by the primary's active root ${roots.ActiveRootID} yet`);
      const state: StoredSecondaryCa = { version: 1, primaryRoots: roots, config: publicConfig(cfg), intermediate: int };
      const before = this.#store.get<unknown>(CA_TABLE, SECONDARY_KEY)?.value;
      // Unchanged replication (a blocking query that timed out) must not wake every watcher.
      if (before !== undefined && JSON.stringify(before) === JSON.stringify(state)) return;
      const index = this.#store.put<StoredSecondaryCa>(CA_TABLE, SECONDARY_KEY, state);
      const entry = this.#store.get<StoredSecondaryCa>(CA_TABLE, SECONDARY_KEY);
      this.#adoptSecondary(state, entry?.createIndex ?? index, index);
    });
  }

  /** Validates a secondary's persisted state (as #adopt does a primary's). */
  #adoptSecondary(raw: unknown, createIndex: number, modifyIndex: number): void {
    const fail = (why: string): never => {
      throw new CaStateError(`the secondary CA state in the data directory is unusable (${why}); move state.json away to fetch a new intermediate from the primary`);
    };
    if (raw === null || typeof raw !== 'object') fail('not an object');
    const s = raw as Partial<StoredSecondaryCa>;
    if (s.version !== 1 || s.intermediate === undefined || s.config === undefined) return fail('unknown layout');
    let roots: PrimaryRoots;
    let signer: RootMaterial;
    try {
      roots = decodePrimaryRoots(s.primaryRoots);
      signer = loadRoot(s.intermediate.certPem, s.intermediate.keyPem);
    } catch (err) {
      return fail((err as Error).message);
    }
    this.#secondary = { stored: { version: 1, primaryRoots: roots, config: s.config, intermediate: s.intermediate }, signer };
    this.#config = { ...defaultCaConfig(), ...s.config };
    this.#createIndex = createIndex;
    this.#modifyIndex = modifyIndex;
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
