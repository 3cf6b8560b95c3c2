// service-splitter: Consul's documented examples (HCL and JSON twins decode alike), every
// validation rule, weight normalisation to basis points, and encode -> decode round trips.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import {
  basisPointsToWeight,
  decodeConfigEntry,
  encodeConfigEntry,
  weightToBasisPoints,
  type ServiceSplitterEntry,
} from '../../src/config/entries.ts';
import { decodePair, rejectsEach } from './pair.ts';

function pair(hcl: string, json: unknown): Promise<ServiceSplitterEntry> {
  return decodePair<ServiceSplitterEntry>('service-splitter', hcl, json);
}

const NONE = { add: {}, set: {}, remove: [] };

test('docs: two subsets 90/10', async () => {
  const e = await pair(
    `
Kind = "service-splitter"
Name = "web"
Splits = [
  {
    Weight        = 90
    ServiceSubset = "v1"
  },
  {
    Weight        = 10
    ServiceSubset = "v2"
  },
]
`,
    { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 90, ServiceSubset: 'v1' }, { Weight: 10, ServiceSubset: 'v2' }] },
  );
  assert.deepEqual(e, {
    kind: 'service-splitter',
    name: 'web',
    meta: {},
    splits: [
      { weightBp: 9000, service: '', serviceSubset: 'v1', requestHeaders: NONE, responseHeaders: NONE },
      { weightBp: 1000, service: '', serviceSubset: 'v2', requestHeaders: NONE, responseHeaders: NONE },
    ],
  });
  assert.deepEqual(encodeConfigEntry(e, { createIndex: 5, modifyIndex: 6 }), {
    Kind: 'service-splitter',
    Name: 'web',
    Splits: [{ Weight: 90, ServiceSubset: 'v1' }, { Weight: 10, ServiceSubset: 'v2' }],
    CreateIndex: 5,
    ModifyIndex: 6,
  });
});

test('docs: migrate to another service 50/50 (snake_case)', async () => {
  const e = await pair(
    `
kind = "service-splitter"
name = "billing-api"
splits = [
  {
    weight  = 50
    service = "billing-api"
  },
  {
    weight  = 50
    service = "billing-api-v2"
  },
]
`,
    { Kind: 'service-splitter', Name: 'billing-api', Splits: [{ Weight: 50, Service: 'billing-api' }, { Weight: 50, Service: 'billing-api-v2' }] },
  );
  assert.deepEqual(e.splits.map((s) => [s.weightBp, s.service]), [[5000, 'billing-api'], [5000, 'billing-api-v2']]);
});

test('reference §3.3: fractional weights and per-split header modifiers', async () => {
  const e = await pair(
    `
Kind = "service-splitter"
Name = "web"
Splits = [
  { Weight = 90, ServiceSubset = "v1" },
  {
    Weight = 9.99
    ServiceSubset = "v2"
    RequestHeaders {
      Set { "x-web-version" = "v2" }
    }
    ResponseHeaders {
      Add { "x-served-by" = "v2" }
      Remove = ["x-internal"]
    }
  },
  { Weight = 0.01, Service = "web-next" },
]
`,
    {
      Kind: 'service-splitter',
      Name: 'web',
      Splits: [
        { Weight: 90, ServiceSubset: 'v1' },
        { Weight: 9.99, ServiceSubset: 'v2', RequestHeaders: { Set: { 'x-web-version': 'v2' } }, ResponseHeaders: { Add: { 'x-served-by': 'v2' }, Remove: ['x-internal'] } },
        { Weight: 0.01, Service: 'web-next' },
      ],
    },
  );
  assert.deepEqual(e.splits.map((s) => s.weightBp), [9000, 999, 1]);
  assert.deepEqual(e.splits[1]?.requestHeaders, { add: {}, set: { 'x-web-version': 'v2' }, remove: [] });
  assert.deepEqual(e.splits[1]?.responseHeaders, { add: { 'x-served-by': 'v2' }, set: {}, remove: ['x-internal'] });
  const wire = encodeConfigEntry(e, { createIndex: 1, modifyIndex: 1 });
  assert.deepEqual((wire.Splits as Record<string, unknown>[]).map((s) => s.Weight), [90, 9.99, 0.01]);
});

test('weights normalise like Consul: round(float32(w) * 100) basis points; 33.33 * 3 + 0.01 is 100', () => {
  assert.equal(weightToBasisPoints(33.33), 3333);
  assert.equal(weightToBasisPoints(33.334), 3333);
  assert.equal(weightToBasisPoints(33.336), 3334);
  assert.equal(weightToBasisPoints(0.005), 1);
  assert.equal(weightToBasisPoints(100), 10000);
  const e = decodeConfigEntry({
    Kind: 'service-splitter',
    Name: 'web',
    Splits: [{ Weight: 33.34, ServiceSubset: 'a' }, { Weight: 33.33, ServiceSubset: 'b' }, { Weight: 33.33, ServiceSubset: 'c' }, { Weight: 0, ServiceSubset: 'd' }],
  }) as ServiceSplitterEntry;
  assert.deepEqual(e.splits.map((s) => s.weightBp), [3334, 3333, 3333, 0]);
  // A weight 0 split stays (it keeps a route defined) and encodes as Weight 0.
  assert.equal((encodeConfigEntry(e, { createIndex: 1, modifyIndex: 1 }).Splits as Record<string, unknown>[])[3]?.Weight, 0);
});

test('property: every basis-point weight survives encode (percent) -> decode', () => {
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 10000 }), (bp) => {
      assert.equal(weightToBasisPoints(basisPointsToWeight(bp)), bp);
    }),
    { numRuns: 10000 },
  );
});

// ---------------------------------------------------------------------------------------
// Validation

const CASES: [string, unknown, string, string | RegExp][] = [
  ['no Name', { Kind: 'service-splitter', Splits: [{ Weight: 100 }] }, 'Name', 'is required'],
  ['no splits', { Kind: 'service-splitter', Name: 'web' }, 'Splits', 'no splits configured'],
  ['empty splits', { Kind: 'service-splitter', Name: 'web', Splits: [] }, 'Splits', 'no splits configured'],
  ['sum 99.5', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 50, ServiceSubset: 'a' }, { Weight: 49.5, ServiceSubset: 'b' }] }, 'Splits', 'the sum of all split weights must be 100, not 99.5'],
  ['sum 100.01', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 50.01, ServiceSubset: 'a' }, { Weight: 50, ServiceSubset: 'b' }] }, 'Splits', 'the sum of all split weights must be 100, not 100.01'],
  ['sum 99.99 after rounding', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 33.333 }, { Weight: 33.333, Service: 'b' }, { Weight: 33.333, Service: 'c' }] }, 'Splits', 'the sum of all split weights must be 100, not 99.99'],
  ['negative weight', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: -10, ServiceSubset: 'a' }, { Weight: 110, ServiceSubset: 'b' }] }, 'Splits[0].Weight', 'must be between 0 and 100, got -10'],
  ['weight over 100', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 100.5 }] }, 'Splits[0].Weight', 'must be between 0 and 100, got 100.5'],
  ['weight as a string', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: '100' }] }, 'Splits[0].Weight', 'must be a number between 0 and 100, got "100"'],
  ['duplicate target (service defaulted)', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 50, ServiceSubset: 'v1' }, { Weight: 50, Service: 'web', ServiceSubset: 'v1' }] }, 'Splits[1]', 'split destination occurs more than once: service "web", subset "v1"'],
  ['duplicate target (other service)', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 50, Service: 'api' }, { Weight: 50, Service: 'api' }] }, 'Splits[1]', 'split destination occurs more than once: service "api", subset ""'],
  ['split Namespace', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 100, Namespace: 'other' }] }, 'Splits[0].Namespace', /^namespaces are a Consul Enterprise feature/],
  ['split Partition', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 100, Partition: 'other' }] }, 'Splits[0].Partition', /^admin partitions are a Consul Enterprise feature/],
  ['split Service wildcard', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 100, Service: 'a*' }] }, 'Splits[0].Service', /is not a valid service name/],
  ['split subset too long', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 100, ServiceSubset: 'a'.repeat(64) }] }, 'Splits[0].ServiceSubset', /must be non-empty and 63 characters or fewer/],
  ['split header pseudo', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 100, RequestHeaders: { Remove: [':method'] } }] }, 'Splits[0].RequestHeaders.Remove[0]', /is a pseudo-header/],
  ['unknown split key', { Kind: 'service-splitter', Name: 'web', Splits: [{ Weight: 100, Subset: 'v1' }] }, 'Splits[0].Subset', 'invalid config key "Subset"'],
];

rejectsEach(CASES);
