// CA configuration: the wire format of `GET`/`PUT /v1/connect/ca/configuration`
// (consul-mesh.md §1.8) decoded into a domain type, and encoded back. The wire format stops
// here: the CA state machine only ever sees a validated CaConfig.
//
// Runs on: the agent's control thread. Pure: no clock, no I/O, no key parsing (a supplied
// PrivateKey/RootCert pair is checked against the cluster and the clock by
// validateProvidedRoot in src/ca/authority.ts, which has both).
//
// Keys are accepted in PascalCase and snake_case (decode.ts's `pick`), durations as Go
// duration strings ("72h", "1h30m"). Each violation is a FieldError that names the field
// and the rule. JSON only: the CLI turns HCL files into JSON before they get here.

import { FieldError, parseDuration, pick } from './decode.ts';
import type { JsonObject } from './decode.ts';
import { DEFAULT_EC_KEY_BITS, GENERATED_KEY_BITS } from '../ca/types.ts';
import type { CaKeyType } from '../ca/types.ts';

export type CaConfig = {
  provider: 'consul';
  leafCertTtlMs: number;
  /** Lifetime of the intermediates the primary signs for secondary datacenters (federation), capped at the root's NotAfter; a primary signs its own leaves with the root. */
  intermediateCertTtlMs: number;
  rootCertTtlMs: number;
  /** Type and bits of keys meshd generates; a supplied PrivateKey wins (§1.3). */
  privateKeyType: CaKeyType;
  privateKeyBits: number;
  /** A user-supplied root key (PEM); always together with rootCert. Never encoded back. */
  privateKey?: string;
  /** A user-supplied root certificate (PEM); always together with privateKey. Never encoded back. */
  rootCert?: string;
  /** Token-bucket rate of CSRs per second; 0 disables it (then csrMaxConcurrent applies). */
  csrMaxPerSecond: number;
  /** CSRs signed at once when csrMaxPerSecond is 0; 0 means no limit. */
  csrMaxConcurrent: number;
  /** Rotate without cross-signing (dangerous: peers that lack the new root refuse new leaves until they fetch it). */
  forceWithoutCrossSigning: boolean;
  /**
   * meshd's own: renew the root (with cross-signing) when less than this fraction of its
   * lifetime remains. 0 disables automatic renewal. Consul has none (§6 #4).
   */
  rootRenewalFraction: number;
};

// ---------------------------------------------------------------------------------------
// Limits and defaults, each from §1.8 unless it says otherwise.

const HOUR_MS = 3_600_000;

export const DEFAULT_LEAF_CERT_TTL_MS = 72 * HOUR_MS;
export const DEFAULT_INTERMEDIATE_CERT_TTL_MS = 8760 * HOUR_MS;
export const DEFAULT_ROOT_CERT_TTL_MS = 87_600 * HOUR_MS;
export const DEFAULT_CSR_MAX_PER_SECOND = 50;
export const DEFAULT_CSR_MAX_CONCURRENT = 0;
/** 0.2 of a 10-year root is 2 years of warning: ample for a human to notice a failed renewal. */
export const DEFAULT_ROOT_RENEWAL_FRACTION = 0.2;

export const MIN_LEAF_CERT_TTL_MS = 1 * HOUR_MS;
export const MAX_LEAF_CERT_TTL_MS = 8760 * HOUR_MS;
export const MIN_INTERMEDIATE_CERT_TTL_MS = 3 * HOUR_MS;
/** IntermediateCertTTL must cover three leaf lifetimes (Consul's rule). */
export const INTERMEDIATE_TO_LEAF_RATIO = 3;
/**
 * RootRenewalFraction must stay below one half: a root renewed before half its life is
 * spent would spend more time being replaced than in service, and every renewal costs a
 * cross-signed chain and a mesh-wide leaf re-issue.
 */
export const MAX_ROOT_RENEWAL_FRACTION = 0.5;

export function defaultCaConfig(): CaConfig {
  return {
    provider: 'consul',
    leafCertTtlMs: DEFAULT_LEAF_CERT_TTL_MS,
    intermediateCertTtlMs: DEFAULT_INTERMEDIATE_CERT_TTL_MS,
    rootCertTtlMs: DEFAULT_ROOT_CERT_TTL_MS,
    privateKeyType: 'ec',
    privateKeyBits: DEFAULT_EC_KEY_BITS,
    csrMaxPerSecond: DEFAULT_CSR_MAX_PER_SECOND,
    csrMaxConcurrent: DEFAULT_CSR_MAX_CONCURRENT,
    forceWithoutCrossSigning: false,
    rootRenewalFraction: DEFAULT_ROOT_RENEWAL_FRACTION,
  };
}

// ---------------------------------------------------------------------------------------
// Durations.

const DURATION_UNITS: readonly [string, number][] = [
  ['h', HOUR_MS],
  ['m', 60_000],
  ['s', 1000],
  ['ms', 1],
];

/**
 * Formats whole milliseconds as a Go duration string without zero parts, the way Consul's
 * docs and GET responses show them: `72h`, `8760h`, `1h30m`, `1m0.5s` is written `1m500ms`.
 * Go's ParseDuration and decode.ts's parseDuration both read every output back.
 */
export function formatDuration(ms: number): string {
  if (!Number.isSafeInteger(ms) || ms < 0) throw new RangeError(`cannot format ${ms} ms as a duration`);
  if (ms === 0) return '0s';
  let rest = ms;
  let out = '';
  for (const [unit, size] of DURATION_UNITS) {
    const n = Math.floor(rest / size);
    if (n > 0) out += `${n}${unit}`;
    rest -= n * size;
  }
  return out;
}

// ---------------------------------------------------------------------------------------
// Decoding.

const TOP_LEVEL_KEYS = ['Provider', 'Config', 'ForceWithoutCrossSigning', 'State', 'ClusterID', 'CreateIndex', 'ModifyIndex'] as const;

const CONFIG_KEYS = [
  'LeafCertTTL',
  'IntermediateCertTTL',
  'RootCertTTL',
  'PrivateKeyType',
  'PrivateKeyBits',
  'PrivateKey',
  'RootCert',
  'CSRMaxPerSecond',
  'CSRMaxConcurrent',
  'RootRenewalFraction',
] as const;

/** decode.ts's key normalisation: `leaf_cert_ttl`, `LeafCertTTL` and `leafcertttl` are one key. */
function norm(key: string): string {
  return key.replaceAll('_', '').toLowerCase();
}

/**
 * Rejects keys outside `allowed` and keys given twice under two spellings
 * (`LeafCertTTL` and `leaf_cert_ttl`), which would otherwise be decided by key order.
 */
function checkKeys(obj: JsonObject, allowed: readonly string[], path: string): void {
  const known = new Map(allowed.map((k) => [norm(k), k]));
  const seen = new Map<string, string>();
  for (const k of Object.keys(obj)) {
    const field = path === '' ? k : `${path}.${k}`;
    const canonical = known.get(norm(k));
    if (canonical === undefined) throw new FieldError(field, `unknown field; allowed: ${allowed.join(', ')}`);
    const before = seen.get(canonical);
    if (before !== undefined) throw new FieldError(field, `given twice (also as ${JSON.stringify(before)})`);
    seen.set(canonical, k);
  }
}

function asObject(v: unknown, path: string): JsonObject {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new FieldError(path, 'must be a JSON object');
  return v as JsonObject;
}

/** A Go duration string as whole milliseconds, or undefined when absent. */
function durationField(cfg: JsonObject, key: string): number | undefined {
  const path = `Config.${key}`;
  const v = pick(cfg, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new FieldError(path, `must be a Go duration string such as "72h", got ${typeof v}`);
  const ms = parseDuration(v, path);
  if (!Number.isSafeInteger(ms)) throw new FieldError(path, `must be a whole number of milliseconds, got ${JSON.stringify(v)}`);
  return ms;
}

function numberField(cfg: JsonObject, key: string, path: string): number | undefined {
  const v = pick(cfg, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new FieldError(path, `must be a number, got ${JSON.stringify(v)}`);
  return v;
}

function pemField(cfg: JsonObject, key: string): string | undefined {
  const path = `Config.${key}`;
  const v = pick(cfg, key);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') throw new FieldError(path, 'must be a PEM string');
  return v;
}

/**
 * Decodes a `PUT /v1/connect/ca/configuration` body.
 *
 * Fields the body leaves out keep their value from `current` (the stored configuration;
 * Consul's defaults when there is none), so a GET → edit one field → PUT round trip never
 * changes anything else. That matters for the key: GET never returns PrivateKey, so its
 * absence cannot mean "drop my root". PrivateKey and RootCert come together or not at
 * all; both given as "" return to a generated root. Two exceptions to keeping values:
 * ForceWithoutCrossSigning is false unless this body says true (it is a per-change
 * override, dangerous to leave armed), and changing PrivateKeyType without PrivateKeyBits
 * takes the new type's default (256 for ec; rsa has none, so bits are then required).
 *
 * `State` must be absent, null or {} (meshd's provider keeps no state; Consul requires it
 * to equal the stored one). `ClusterID`, `CreateIndex` and `ModifyIndex` are accepted and
 * ignored, so a GET body can be PUT back; the cluster ID never changes (as in Consul).
 *
 * Rules, each a FieldError naming the field and the rule (§1.8):
 * Provider "consul"; 1h ≤ LeafCertTTL ≤ 8760h; IntermediateCertTTL ≥ 3h and
 * ≥ 3 × LeafCertTTL; RootCertTTL ≥ IntermediateCertTTL; PrivateKeyType ec|rsa;
 * PrivateKeyBits 256|384|521 for ec, 2048|4096 for rsa (required for rsa);
 * CSRMaxPerSecond a number ≥ 0; CSRMaxConcurrent an integer ≥ 0;
 * 0 ≤ RootRenewalFraction < 0.5; ForceWithoutCrossSigning boolean; no unknown keys.
 */
export function decodeCaConfiguration(body: unknown, current?: CaConfig): CaConfig {
  const base = current ?? defaultCaConfig();
  const top = asObject(body, 'body');
  checkKeys(top, TOP_LEVEL_KEYS, '');

  const provider = pick(top, 'Provider');
  if (provider === undefined || provider === null || provider === '') throw new FieldError('Provider', 'is required and must be "consul"');
  if (provider !== 'consul') {
    throw new FieldError('Provider', `must be "consul" (meshd's built-in CA), got ${JSON.stringify(provider)}; vault and aws-pca are not supported`);
  }

  const state = pick(top, 'State');
  if (state !== undefined && state !== null && !(typeof state === 'object' && !Array.isArray(state) && Object.keys(state).length === 0)) {
    throw new FieldError('State', 'is read-only and must be omitted (meshd keeps no provider state)');
  }

  const force = pick(top, 'ForceWithoutCrossSigning');
  if (force !== undefined && force !== null && typeof force !== 'boolean') {
    throw new FieldError('ForceWithoutCrossSigning', 'must be true or false');
  }

  const rawConfig = pick(top, 'Config');
  const cfg = rawConfig === undefined || rawConfig === null ? {} : asObject(rawConfig, 'Config');
  checkKeys(cfg, CONFIG_KEYS, 'Config');

  // TTLs and their relations.
  const leaf = durationField(cfg, 'LeafCertTTL') ?? base.leafCertTtlMs;
  const intermediate = durationField(cfg, 'IntermediateCertTTL') ?? base.intermediateCertTtlMs;
  const root = durationField(cfg, 'RootCertTTL') ?? base.rootCertTtlMs;
  if (leaf < MIN_LEAF_CERT_TTL_MS) {
    throw new FieldError('Config.LeafCertTTL', `must be at least ${formatDuration(MIN_LEAF_CERT_TTL_MS)}, got ${formatDuration(leaf)}`);
  }
  if (leaf > MAX_LEAF_CERT_TTL_MS) {
    throw new FieldError('Config.LeafCertTTL', `must be at most ${formatDuration(MAX_LEAF_CERT_TTL_MS)}, got ${formatDuration(leaf)}`);
  }
  if (intermediate < MIN_INTERMEDIATE_CERT_TTL_MS) {
    throw new FieldError(
      'Config.IntermediateCertTTL',
      `must be at least ${formatDuration(MIN_INTERMEDIATE_CERT_TTL_MS)}, got ${formatDuration(intermediate)}`,
    );
  }
  if (intermediate < INTERMEDIATE_TO_LEAF_RATIO * leaf) {
    throw new FieldError(
      'Config.IntermediateCertTTL',
      `must be at least ${INTERMEDIATE_TO_LEAF_RATIO} × LeafCertTTL (${formatDuration(INTERMEDIATE_TO_LEAF_RATIO * leaf)}), got ${formatDuration(intermediate)}`,
    );
  }
  if (root < intermediate) {
    throw new FieldError(
      'Config.RootCertTTL',
      `must be at least IntermediateCertTTL (${formatDuration(intermediate)}), got ${formatDuration(root)}`,
    );
  }

  // Key type and size.
  const rawType = pick(cfg, 'PrivateKeyType');
  let type: CaKeyType = base.privateKeyType;
  if (rawType !== undefined && rawType !== null) {
    if (rawType !== 'ec' && rawType !== 'rsa') throw new FieldError('Config.PrivateKeyType', `must be "ec" or "rsa", got ${JSON.stringify(rawType)}`);
    type = rawType;
  }
  const givenBits = numberField(cfg, 'PrivateKeyBits', 'Config.PrivateKeyBits');
  let bits: number;
  if (givenBits !== undefined) bits = givenBits;
  else if (type === base.privateKeyType) bits = base.privateKeyBits;
  else if (type === 'ec') bits = DEFAULT_EC_KEY_BITS;
  else throw new FieldError('Config.PrivateKeyBits', `is required when PrivateKeyType is "rsa" (${GENERATED_KEY_BITS.rsa.join(' or ')})`);
  if (!GENERATED_KEY_BITS[type].includes(bits)) {
    throw new FieldError('Config.PrivateKeyBits', `must be one of ${GENERATED_KEY_BITS[type].join(', ')} for PrivateKeyType "${type}", got ${bits}`);
  }

  // A supplied root: both or neither.
  const privateKey = pemField(cfg, 'PrivateKey');
  const rootCert = pemField(cfg, 'RootCert');
  if ((privateKey === undefined) !== (rootCert === undefined) || (privateKey === '') !== (rootCert === '')) {
    throw new FieldError(privateKey === undefined || privateKey === '' ? 'Config.PrivateKey' : 'Config.RootCert', 'PrivateKey and RootCert must be given together, or both left out');
  }
  if (privateKey !== undefined && privateKey !== '' && !/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(privateKey)) {
    throw new FieldError('Config.PrivateKey', 'must be a PEM private key (PKCS#8, EC or RSA)');
  }
  if (rootCert !== undefined && rootCert !== '' && !rootCert.includes('-----BEGIN CERTIFICATE-----')) {
    throw new FieldError('Config.RootCert', 'must be a PEM certificate');
  }
  const secrets: Pick<CaConfig, 'privateKey' | 'rootCert'> =
    privateKey === undefined || rootCert === undefined
      ? base.privateKey !== undefined && base.rootCert !== undefined
        ? { privateKey: base.privateKey, rootCert: base.rootCert }
        : {}
      : privateKey === ''
        ? {}
        : { privateKey, rootCert };

  // Rate limits.
  const perSecond = numberField(cfg, 'CSRMaxPerSecond', 'Config.CSRMaxPerSecond') ?? base.csrMaxPerSecond;
  if (perSecond < 0) throw new FieldError('Config.CSRMaxPerSecond', `must be >= 0 (0 disables the rate and uses CSRMaxConcurrent), got ${perSecond}`);
  const concurrent = numberField(cfg, 'CSRMaxConcurrent', 'Config.CSRMaxConcurrent') ?? base.csrMaxConcurrent;
  if (!Number.isSafeInteger(concurrent) || concurrent < 0) {
    throw new FieldError('Config.CSRMaxConcurrent', `must be a whole number >= 0 (0 means no limit), got ${concurrent}`);
  }

  const fraction = numberField(cfg, 'RootRenewalFraction', 'Config.RootRenewalFraction') ?? base.rootRenewalFraction;
  if (fraction < 0 || fraction >= MAX_ROOT_RENEWAL_FRACTION) {
    throw new FieldError(
      'Config.RootRenewalFraction',
      `must be at least 0 and below ${MAX_ROOT_RENEWAL_FRACTION} (0 disables automatic root renewal), got ${fraction}`,
    );
  }

  return {
    provider: 'consul',
    leafCertTtlMs: leaf,
    intermediateCertTtlMs: intermediate,
    rootCertTtlMs: root,
    privateKeyType: type,
    privateKeyBits: bits,
    ...secrets,
    csrMaxPerSecond: perSecond,
    csrMaxConcurrent: concurrent,
    forceWithoutCrossSigning: force === true,
    rootRenewalFraction: fraction,
  };
}

// ---------------------------------------------------------------------------------------
// Encoding.

/** Consul's `GET /v1/connect/ca/configuration` body (§1.8). */
export type CaConfigurationBody = {
  Provider: 'consul';
  Config: {
    LeafCertTTL: string;
    IntermediateCertTTL: string;
    RootCertTTL: string;
    PrivateKeyType: CaKeyType;
    PrivateKeyBits: number;
    CSRMaxPerSecond: number;
    CSRMaxConcurrent: number;
    RootRenewalFraction: number;
  };
  State: null;
  ForceWithoutCrossSigning: boolean;
  CreateIndex: number;
  ModifyIndex: number;
};

/**
 * Encodes a configuration as Consul's GET body. Never includes PrivateKey or RootCert:
 * the key must not leave the agent, and the root certificate is published by
 * `/v1/connect/ca/roots` instead.
 */
export function encodeCaConfiguration(cfg: CaConfig, indexes: { createIndex: number; modifyIndex: number }): CaConfigurationBody {
  return {
    Provider: cfg.provider,
    Config: {
      LeafCertTTL: formatDuration(cfg.leafCertTtlMs),
      IntermediateCertTTL: formatDuration(cfg.intermediateCertTtlMs),
      RootCertTTL: formatDuration(cfg.rootCertTtlMs),
      PrivateKeyType: cfg.privateKeyType,
      PrivateKeyBits: cfg.privateKeyBits,
      CSRMaxPerSecond: cfg.csrMaxPerSecond,
      CSRMaxConcurrent: cfg.csrMaxConcurrent,
      RootRenewalFraction: cfg.rootRenewalFraction,
    },
    State: null,
    ForceWithoutCrossSigning: cfg.forceWithoutCrossSigning,
    CreateIndex: indexes.createIndex,
    ModifyIndex: indexes.modifyIndex,
  };
}
