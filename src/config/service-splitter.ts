// The `service-splitter` config entry (consul-mesh.md §3.3): weighted splits of one
// service's HTTP traffic across subsets or other services. Decoding applies Consul's
// normalisation and validation and yields a domain value; encoding gives back Consul's JSON.
//
// Weights are kept as integer basis points (1/10000): Consul's scaleWeight, which rounds
// float32(weight) * 100 to the nearest integer, emulated with Math.fround so that a weight
// rounds here exactly as it does in Consul. The basis points must sum to exactly 10000. The
// API JSON gives the weight back as basis points / 100 (Consul's normalised float).
//
// Stricter than Consul: each weight must lie in [0, 100] (Consul only checks the sum, so -10
// and 110 would pass there); ServiceSubset must be a valid subset name; header names must be
// HTTP tokens. CE only: Namespace/Partition must be empty or "default".

import { FieldError, type JsonObject } from '../control/decode.ts';
import type { HeaderModifiers } from '../chain/types.ts';
import {
  decodeEntryName,
  decodeHeaderModifiers,
  encodeHeaderModifiers,
  validateServiceRef,
  validateSubsetName,
} from './service-router.ts';
import { ENTRY_COMMON_KEYS, WireObject, decodeMeta, encodeMeta, expectKind, ignoreReadOnlyIndexes, rejectEnterpriseTenancy } from './wire.ts';

export type ServiceSplit = {
  /** 0..10000 basis points. */
  readonly weightBp: number;
  /** '' = the splitter's own service. */
  readonly service: string;
  /** '' = the resolver's DefaultSubset. Set: no further splitting. */
  readonly serviceSubset: string;
  readonly requestHeaders: HeaderModifiers;
  readonly responseHeaders: HeaderModifiers;
};

export type ServiceSplitterEntry = {
  readonly kind: 'service-splitter';
  readonly name: string;
  readonly meta: Readonly<Record<string, string>>;
  /** At least one; weights sum to exactly 10000 basis points. */
  readonly splits: readonly ServiceSplit[];
};

export const TOTAL_WEIGHT_BP = 10_000;

const ENTRY_KEYS = [...ENTRY_COMMON_KEYS, 'Splits'];
const SPLIT_KEYS = ['Weight', 'Service', 'ServiceSubset', 'Namespace', 'Partition', 'RequestHeaders', 'ResponseHeaders'];

/** Consul's scaleWeight: a percentage (float32) to basis points, rounded half away from zero. */
export function weightToBasisPoints(weight: number): number {
  return Math.round(Math.fround(Math.fround(weight) * 100));
}

/** Basis points as a percentage for Consul's JSON (2 decimal places at most). */
export function basisPointsToWeight(bp: number): number {
  return Number((bp / 100).toFixed(2));
}

function decodeWeight(s: WireObject): number {
  const v = s.one('Weight');
  if (v === undefined) return 0;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new FieldError(s.field('Weight'), `must be a number between 0 and 100, got ${JSON.stringify(v)}`);
  if (v < 0 || v > 100) throw new FieldError(s.field('Weight'), `must be between 0 and 100, got ${v}`);
  return weightToBasisPoints(v);
}

/** Decodes a `service-splitter` document (its Kind, if given, must say so). */
export function decodeServiceSplitter(raw: unknown): ServiceSplitterEntry {
  const e = new WireObject(raw, '', ENTRY_KEYS);
  expectKind(e, 'service-splitter');
  ignoreReadOnlyIndexes(e);
  const name = decodeEntryName(e);
  rejectEnterpriseTenancy(e);
  const meta = decodeMeta(e);
  const objs = e.objects('Splits', SPLIT_KEYS);
  if (objs.length === 0) throw new FieldError('Splits', 'no splits configured');
  const seen = new Set<string>();
  const splits = objs.map((s): ServiceSplit => {
    rejectEnterpriseTenancy(s);
    const weightBp = decodeWeight(s);
    const service = s.string('Service');
    if (service !== '') validateServiceRef(service, s.field('Service'));
    const serviceSubset = s.string('ServiceSubset');
    if (serviceSubset !== '') validateSubsetName(serviceSubset, s.field('ServiceSubset'));
    const key = JSON.stringify([service === '' ? name : service, serviceSubset]);
    if (seen.has(key)) {
      throw new FieldError(s.path, `split destination occurs more than once: service ${JSON.stringify(service === '' ? name : service)}, subset ${JSON.stringify(serviceSubset)}`);
    }
    seen.add(key);
    return { weightBp, service, serviceSubset, requestHeaders: decodeHeaderModifiers(s, 'RequestHeaders'), responseHeaders: decodeHeaderModifiers(s, 'ResponseHeaders') };
  });
  const sum = splits.reduce((acc, s) => acc + s.weightBp, 0);
  if (sum !== TOTAL_WEIGHT_BP) throw new FieldError('Splits', `the sum of all split weights must be 100, not ${basisPointsToWeight(sum)}`);
  return { kind: 'service-splitter', name, meta, splits };
}

export function encodeServiceSplit(s: ServiceSplit): JsonObject {
  const out: JsonObject = { Weight: basisPointsToWeight(s.weightBp) };
  if (s.service !== '') out.Service = s.service;
  if (s.serviceSubset !== '') out.ServiceSubset = s.serviceSubset;
  const req = encodeHeaderModifiers(s.requestHeaders);
  if (req !== undefined) out.RequestHeaders = req;
  const res = encodeHeaderModifiers(s.responseHeaders);
  if (res !== undefined) out.ResponseHeaders = res;
  return out;
}

/** The body fields of Consul's JSON after Kind and Name (the caller adds the indexes). */
export function encodeServiceSplitterBody(e: ServiceSplitterEntry): JsonObject {
  const out: JsonObject = { Splits: e.splits.map(encodeServiceSplit) };
  const meta = encodeMeta(e.meta);
  if (meta !== undefined) out.Meta = meta;
  return out;
}
