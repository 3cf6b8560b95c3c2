// service-resolver: Consul's documented examples (HCL and JSON twins decode alike, the
// Enterprise and peering ones refused clearly), every validation rule, the single-datacenter
// check, and encode -> decode round trips.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { FieldError } from '../../src/control/decode.ts';
import {
  decodeConfigEntry,
  encodeConfigEntry,
  parseConfigEntryText,
  type ServiceResolverEntry,
} from '../../src/config/entries.ts';
import { decodePair, rejectsEach } from './pair.ts';

function pair(hcl: string, json: unknown): Promise<ServiceResolverEntry> {
  return decodePair<ServiceResolverEntry>('service-resolver', hcl, json);
}

const BLANK: Omit<ServiceResolverEntry, 'name'> = {
  kind: 'service-resolver',
  meta: {},
  defaultSubset: '',
  subsets: {},
  redirect: null,
  failover: {},
  connectTimeoutMs: 0,
  requestTimeoutMs: 0,
  loadBalancer: null,
};

test('docs: filter on service version (map syntax, and the block syntax alike)', async () => {
  const json = {
    Kind: 'service-resolver',
    Name: 'web',
    DefaultSubset: 'v1',
    Subsets: { v1: { Filter: 'Service.Meta.version == v1' }, v2: { Filter: 'Service.Meta.version == v2' } },
  };
  const e = await pair(
    `
Kind          = "service-resolver"
Name          = "web"
DefaultSubset = "v1"
Subsets = {
  v1 = {
    Filter = "Service.Meta.version == v1"
  }
  v2 = {
    Filter = "Service.Meta.version == v2"
  }
}
`,
    json,
  );
  assert.deepEqual(e, {
    ...BLANK,
    name: 'web',
    defaultSubset: 'v1',
    subsets: { v1: { filter: 'Service.Meta.version == v1', onlyPassing: false }, v2: { filter: 'Service.Meta.version == v2', onlyPassing: false } },
  });
  const blocks = await parseConfigEntryText(
    `
kind           = "service-resolver"
name           = "web"
default_subset = "v1"
subsets {
  v2 {
    filter = "Service.Meta.version == v2"
  }
  v1 {
    filter = "Service.Meta.version == v1"
  }
}
`,
    'blocks.hcl',
  );
  assert.deepEqual(blocks, e);
  assert.deepEqual(encodeConfigEntry(e, { createIndex: 1, modifyIndex: 2 }), { ...json, CreateIndex: 1, ModifyIndex: 2 });
});

test('docs: redirect to another datacenter decodes, and is refused for a single-datacenter meshd', async () => {
  const e = await pair(
    `
Kind = "service-resolver"
Name = "web-dc2"
Redirect {
  Service    = "web"
  Datacenter = "dc2"
}
`,
    { Kind: 'service-resolver', Name: 'web-dc2', Redirect: { Service: 'web', Datacenter: 'dc2' } },
  );
  assert.deepEqual(e.redirect, { service: 'web', serviceSubset: '', datacenter: 'dc2' });
  assert.throws(
    () => decodeConfigEntry({ Kind: 'service-resolver', Name: 'web-dc2', Redirect: { Service: 'web', Datacenter: 'DC2.x' } }),
    (err: unknown) => err instanceof FieldError && err.field === 'Redirect.Datacenter' && /"DC2\.x" is not a valid datacenter name/.test(err.message),
  );
});

test('docs: failover by subset to other datacenters; datacenter names are SNI labels', async () => {
  const e = await pair(
    `
Kind           = "service-resolver"
Name           = "web"
ConnectTimeout = "15s"
Subsets = { v2 = { Filter = "Service.Meta.version == v2" } }
Failover = {
  v2 = {
    Datacenters = ["dc2"]
  }
  "*" = {
    Datacenters = ["dc3", "dc4"]
  }
}
`,
    {
      Kind: 'service-resolver',
      Name: 'web',
      ConnectTimeout: '15s',
      Subsets: { v2: { Filter: 'Service.Meta.version == v2' } },
      Failover: { v2: { Datacenters: ['dc2'] }, '*': { Datacenters: ['dc3', 'dc4'] } },
    },
  );
  assert.equal(e.connectTimeoutMs, 15000);
  assert.deepEqual(e.failover['*'], { service: '', serviceSubset: '', datacenters: ['dc3', 'dc4'], targets: [], policyMode: '' });
  assert.throws(
    () => decodeConfigEntry({ Kind: 'service-resolver', Name: 'web', Failover: { '*': { Datacenters: ['dc2', 'dc 3'] } } }),
    (err: unknown) => err instanceof FieldError && err.field === 'Failover.*.Datacenters[1]',
  );
  assert.throws(
    () => decodeConfigEntry({ Kind: 'service-resolver', Name: 'web', Failover: { '*': { Targets: [{ Service: 'api', Datacenter: '-dc' }] } } }),
    (err: unknown) => err instanceof FieldError && err.field === 'Failover.*.Targets[0].Datacenter',
  );
});

test('docs: failover Targets with a cluster peer is refused; without the peer it decodes', async () => {
  await assert.rejects(
    parseConfigEntryText(
      `
Kind           = "service-resolver"
Name           = "web"
ConnectTimeout = "15s"
Failover = {
  "*" = {
    Targets = [
      {Datacenter = "dc3"},
      {Peer = "peer-01"}
    ]
  }
}
`,
      'peer.hcl',
    ),
    (err: unknown) => err instanceof FieldError && err.field === 'Failover.*.Targets[1].Peer' && /cluster peering is not supported by meshd/.test(err.message),
  );
  const e = await pair(
    `
Kind = "service-resolver"
Name = "web"
Failover = {
  "*" = {
    Targets = [
      {Datacenter = "dc1"},
      {Service = "web-backup"},
    ]
    Policy { Mode = "default" }
  }
}
`,
    { Kind: 'service-resolver', Name: 'web', Failover: { '*': { Targets: [{ Datacenter: 'dc1' }, { Service: 'web-backup' }], Policy: { Mode: 'default' } } } },
  );
  assert.deepEqual(e.failover['*']?.targets, [{ service: '', serviceSubset: '', datacenter: 'dc1' }, { service: 'web-backup', serviceSubset: '', datacenter: '' }]);
  assert.equal(e.failover['*']?.policyMode, 'default');
});

test('docs (Enterprise): failover to another namespace is refused as Enterprise', async () => {
  await assert.rejects(
    parseConfigEntryText(
      `
Kind           = "service-resolver"
Name           = "product-api"
Namespace      = "primary"
ConnectTimeout = "0s"
Failover = {
  "*" = {
    Service = "product-api-backup"
    Namespace = "secondary"
  }
}
`,
      'ent.hcl',
    ),
    (err: unknown) => err instanceof FieldError && err.field === 'Namespace' && /Consul Enterprise/.test(err.message),
  );
});

test('docs: consistent load balancing with maglev on a header', async () => {
  const e = await pair(
    `
Kind = "service-resolver"
Name = "web"

LoadBalancer = {
  Policy = "maglev"
  HashPolicies = [
    {
      Field = "header"
      FieldValue = "x-user-id"
    }
  ]
}
`,
    { Kind: 'service-resolver', Name: 'web', LoadBalancer: { Policy: 'maglev', HashPolicies: [{ Field: 'header', FieldValue: 'x-user-id' }] } },
  );
  assert.deepEqual(e.loadBalancer, {
    policy: 'maglev',
    ringHashConfig: null,
    leastRequestConfig: null,
    hashPolicies: [{ field: 'header', fieldValue: 'x-user-id', cookieConfig: null, sourceIp: false, terminal: false }],
  });
});

test('reference §3.4: ring_hash with ring sizes, source IP and cookie policies, timeouts', async () => {
  const json = {
    Kind: 'service-resolver',
    Name: 'web',
    DefaultSubset: 'v1',
    Subsets: { v1: { Filter: 'Service.Meta.version == v1' }, v2: { Filter: 'Service.Meta.version == v2', OnlyPassing: true } },
    ConnectTimeout: '5s',
    RequestTimeout: '15s',
    LoadBalancer: {
      Policy: 'ring_hash',
      RingHashConfig: { MinimumRingSize: 1024, MaximumRingSize: 8192 },
      HashPolicies: [
        { Field: 'header', FieldValue: 'x-user-id' },
        { Field: 'cookie', FieldValue: 'sid', CookieConfig: { TTL: '1h0m0s', Path: '/' } },
        { SourceIP: true, Terminal: true },
      ],
    },
  };
  const e = await pair(
    `
Kind = "service-resolver"
Name = "web"
DefaultSubset = "v1"
Subsets = {
  v1 = { Filter = "Service.Meta.version == v1" }
  v2 = { Filter = "Service.Meta.version == v2", OnlyPassing = true }
}
ConnectTimeout = "5s"
RequestTimeout = "15s"
LoadBalancer {
  Policy = "ring_hash"
  RingHashConfig {
    MinimumRingSize = 1024
    MaximumRingSize = 8192
  }
  HashPolicies = [
    { Field = "header", FieldValue = "x-user-id" },
    { Field = "cookie", FieldValue = "sid", CookieConfig { TTL = "1h0m0s", Path = "/" } },
    { SourceIP = true, Terminal = true },
  ]
}
`,
    json,
  );
  assert.equal(e.requestTimeoutMs, 15000);
  assert.deepEqual(e.subsets.v2, { filter: 'Service.Meta.version == v2', onlyPassing: true });
  assert.deepEqual(e.loadBalancer?.ringHashConfig, { minimumRingSize: 1024, maximumRingSize: 8192 });
  assert.deepEqual(e.loadBalancer?.hashPolicies[1]?.cookieConfig, { session: false, ttlMs: 3_600_000, path: '/' });
  assert.deepEqual(encodeConfigEntry(e, { createIndex: 1, modifyIndex: 1 }), { ...json, CreateIndex: 1, ModifyIndex: 1 });
});

test('least_request with ChoiceCount, a session cookie, redirect to a subset of itself', () => {
  const lr = decodeConfigEntry({ Kind: 'service-resolver', Name: 'web', LoadBalancer: { Policy: 'least_request', LeastRequestConfig: { ChoiceCount: 5 } } }) as ServiceResolverEntry;
  assert.deepEqual(lr.loadBalancer?.leastRequestConfig, { choiceCount: 5 });
  const cookie = decodeConfigEntry({
    Kind: 'service-resolver',
    Name: 'web',
    LoadBalancer: { Policy: 'ring_hash', HashPolicies: [{ Field: 'cookie', FieldValue: 'sid', CookieConfig: { Session: true } }] },
  }) as ServiceResolverEntry;
  assert.deepEqual(cookie.loadBalancer?.hashPolicies[0]?.cookieConfig, { session: true, ttlMs: 0, path: '' });
  const self = decodeConfigEntry({ Kind: 'service-resolver', Name: 'web', Subsets: { v1: {} }, Redirect: { Service: 'web', ServiceSubset: 'v1' } }) as ServiceResolverEntry;
  assert.deepEqual(self.redirect, { service: 'web', serviceSubset: 'v1', datacenter: '' });
  for (const e of [lr, cookie, self]) assert.deepEqual(decodeConfigEntry(encodeConfigEntry(e, { createIndex: 1, modifyIndex: 1 })), e);
  // Consul's GET output is accepted back unchanged.
  const none = decodeConfigEntry({ Kind: 'service-resolver', Name: 'web', PrioritizeByLocality: { Mode: 'none' }, ConnectTimeout: '0s', CreateIndex: 4, ModifyIndex: 9 }) as ServiceResolverEntry;
  assert.deepEqual(none, { ...BLANK, name: 'web' });
});

// ---------------------------------------------------------------------------------------
// Validation

const R = (over: Record<string, unknown>): unknown => ({ Kind: 'service-resolver', Name: 'web', Subsets: { v1: {}, v2: {} }, ...over });

const CASES: [string, unknown, string, string | RegExp][] = [
  ['no Name', { Kind: 'service-resolver' }, 'Name', 'is required'],
  ['subset name upper-case', R({ Subsets: { V1: {} } }), 'Subsets.V1', /^subset name "V1" must begin and end with a lower case letter or digit/],
  ['subset name ends with -', R({ Subsets: { 'v1-': {} } }), 'Subsets.v1-', /^subset name "v1-" must begin and end/],
  ['subset name too long', R({ Subsets: { ['a'.repeat(64)]: {} } }), `Subsets.${'a'.repeat(64)}`, /must be non-empty and 63 characters or fewer/],
  ['empty subset name', R({ Subsets: { '': {} } }), 'Subsets.', /must be non-empty/],
  ['subset filter syntax', R({ Subsets: { v1: { Filter: 'Service.Meta.version ==' } } }), 'Subsets.v1.Filter', /^is not a valid expression: expected a value at the end/],
  ['subset filter unknown selector', R({ Subsets: { v1: { Filter: 'Service.Metadata.version == v1' } } }), 'Subsets.v1.Filter', /^is not a valid expression: unknown selector "Service.Metadata.version"/],
  ['subset unknown key', R({ Subsets: { v1: { Filters: 'x' } } }), 'Subsets.v1.Filters', 'invalid config key "Filters"'],
  ['Subsets not a map', R({ Subsets: 'v1' }), 'Subsets', 'must be an object keyed by subset name'],
  ['DefaultSubset missing', R({ DefaultSubset: 'v3' }), 'DefaultSubset', '"v3" is not a valid subset'],
  ['Redirect with Failover', R({ Redirect: { Service: 'api' }, Failover: { '*': { Service: 'backup' } } }), 'Redirect', 'Redirect and Failover cannot both be set'],
  ['Redirect empty', R({ Redirect: {} }), 'Redirect', 'Redirect is empty'],
  ['Redirect subset without Service', R({ Redirect: { ServiceSubset: 'v1' } }), 'Redirect.ServiceSubset', 'defined without Redirect.Service'],
  ['Redirect to a missing subset of itself', R({ Redirect: { Service: 'web', ServiceSubset: 'v9' } }), 'Redirect.ServiceSubset', '"v9" is not a valid subset of "web"'],
  ['Redirect Peer', R({ Redirect: { Service: 'web', Peer: 'p1' } }), 'Redirect.Peer', 'cluster peering is not supported by meshd'],
  ['Redirect SamenessGroup', R({ Redirect: { SamenessGroup: 'sg' } }), 'Redirect.SamenessGroup', /^sameness groups are a Consul Enterprise feature/],
  ['Redirect Partition', R({ Redirect: { Service: 'api', Partition: 'p1' } }), 'Redirect.Partition', /^admin partitions are a Consul Enterprise feature/],
  ['Redirect Namespace', R({ Redirect: { Service: 'api', Namespace: 'n1' } }), 'Redirect.Namespace', /^namespaces are a Consul Enterprise feature/],
  ['Failover for a missing subset', R({ Failover: { v3: { Service: 'backup' } } }), 'Failover.v3', '"v3" is not a subset of "web" (use a name from Subsets, or "*")'],
  ['Failover empty', R({ Failover: { '*': {} } }), 'Failover.*', 'one of Service, ServiceSubset, Targets, or Datacenters is required'],
  ['Failover ServiceSubset missing on itself', R({ Failover: { v1: { ServiceSubset: 'v9' } } }), 'Failover.v1.ServiceSubset', '"v9" is not a valid subset of "web"'],
  ['Failover Targets with Datacenters', R({ Failover: { '*': { Datacenters: ['dc1'], Targets: [{ Service: 'a' }] } } }), 'Failover.*.Targets', 'Targets cannot be set with Datacenters'],
  ['Failover Targets with ServiceSubset', R({ Failover: { '*': { ServiceSubset: 'v1', Targets: [{ Service: 'a' }] } } }), 'Failover.*.Targets', 'Targets cannot be set with ServiceSubset'],
  ['Failover Targets with Service', R({ Failover: { '*': { Service: 'b', Targets: [{ Service: 'a' }] } } }), 'Failover.*.Targets', 'Targets cannot be set with Service'],
  ['Failover empty datacenter', R({ Failover: { '*': { Datacenters: ['dc1', ''] } } }), 'Failover.*.Datacenters[1]', 'found empty datacenter'],
  ['Failover target Peer', R({ Failover: { '*': { Targets: [{ Peer: 'p' }] } } }), 'Failover.*.Targets[0].Peer', 'cluster peering is not supported by meshd'],
  ['Failover target Partition with Datacenter', R({ Failover: { '*': { Targets: [{ Partition: 'default', Datacenter: 'dc1' }] } } }), 'Failover.*.Targets[0]', 'Partition cannot be set with Datacenter'],
  ['Failover target missing subset of itself', R({ Failover: { '*': { Targets: [{ ServiceSubset: 'v9' }] } } }), 'Failover.*.Targets[0].ServiceSubset', '"v9" is not a valid subset of "web"'],
  ['Failover target empty', R({ Failover: { '*': { Targets: [{}] } } }), 'Failover.*.Targets[0]', 'must set at least one of Service, ServiceSubset or Datacenter'],
  ['Failover Namespace', R({ Failover: { '*': { Service: 'a', Namespace: 'ns2' } } }), 'Failover.*.Namespace', /^namespaces are a Consul Enterprise feature/],
  ['Failover SamenessGroup', R({ Failover: { '*': { SamenessGroup: 'sg' } } }), 'Failover.*.SamenessGroup', /^sameness groups are a Consul Enterprise feature/],
  ['Failover order-by-locality', R({ Failover: { '*': { Service: 'a', Policy: { Mode: 'order-by-locality' } } } }), 'Failover.*.Policy.Mode', /^"order-by-locality" is not supported by meshd/],
  ['Failover Policy bad mode', R({ Failover: { '*': { Service: 'a', Policy: { Mode: 'fastest' } } } }), 'Failover.*.Policy.Mode', /^must be one of '', 'default', or 'order-by-locality'/],
  ['PrioritizeByLocality failover', R({ PrioritizeByLocality: { Mode: 'failover' } }), 'PrioritizeByLocality.Mode', /^"failover" is not supported by meshd/],
  ['bad ConnectTimeout', R({ ConnectTimeout: '-5s' }), 'ConnectTimeout', /^invalid duration "-5s"/],
  ['bad RequestTimeout', R({ RequestTimeout: 'soon' }), 'RequestTimeout', /^invalid duration "soon"/],
  ['unknown LB policy', R({ LoadBalancer: { Policy: 'fastest' } }), 'LoadBalancer.Policy', /^"fastest" is not supported/],
  ['RingHashConfig with round_robin', R({ LoadBalancer: { Policy: 'round_robin', RingHashConfig: { MinimumRingSize: 8 } } }), 'LoadBalancer.RingHashConfig', 'RingHashConfig specified for incompatible load balancing policy "round_robin"'],
  ['RingHashConfig with no policy', R({ LoadBalancer: { RingHashConfig: {} } }), 'LoadBalancer.RingHashConfig', 'RingHashConfig specified for incompatible load balancing policy ""'],
  ['LeastRequestConfig with maglev', R({ LoadBalancer: { Policy: 'maglev', LeastRequestConfig: { ChoiceCount: 3 } } }), 'LoadBalancer.LeastRequestConfig', 'LeastRequestConfig specified for incompatible load balancing policy "maglev"'],
  ['ChoiceCount 1', R({ LoadBalancer: { Policy: 'least_request', LeastRequestConfig: { ChoiceCount: 1 } } }), 'LoadBalancer.LeastRequestConfig.ChoiceCount', 'must be at least 2 (or 0 for the default, 2)'],
  ['ring min > max', R({ LoadBalancer: { Policy: 'ring_hash', RingHashConfig: { MinimumRingSize: 4096, MaximumRingSize: 1024 } } }), 'LoadBalancer.RingHashConfig', 'MinimumRingSize (4096) must not exceed MaximumRingSize (1024)'],
  ['ring too big', R({ LoadBalancer: { Policy: 'ring_hash', RingHashConfig: { MaximumRingSize: 8388609 } } }), 'LoadBalancer.RingHashConfig.MaximumRingSize', 'must be between 0 and 8388608, got 8388609'],
  ['HashPolicies with least_request', R({ LoadBalancer: { Policy: 'least_request', HashPolicies: [{ SourceIP: true }] } }), 'LoadBalancer.HashPolicies', 'HashPolicies specified for non-hash-based Policy: "least_request"'],
  ['hash field unknown', R({ LoadBalancer: { Policy: 'maglev', HashPolicies: [{ Field: 'path', FieldValue: 'x' }] } }), 'LoadBalancer.HashPolicies[0].Field', /^"path" is not a supported field/],
  ['hash SourceIP and Field', R({ LoadBalancer: { Policy: 'maglev', HashPolicies: [{ Field: 'header', FieldValue: 'x', SourceIP: true }] } }), 'LoadBalancer.HashPolicies[0]', 'A single hash policy cannot hash both a source address and a "header"'],
  ['hash SourceIP and FieldValue', R({ LoadBalancer: { Policy: 'maglev', HashPolicies: [{ FieldValue: 'x', SourceIP: true }] } }), 'LoadBalancer.HashPolicies[0].FieldValue', 'A FieldValue cannot be specified when hashing SourceIP'],
  ['hash Field without FieldValue', R({ LoadBalancer: { Policy: 'ring_hash', HashPolicies: [{ Field: 'header' }] } }), 'LoadBalancer.HashPolicies[0].FieldValue', 'Field "header" was specified without a FieldValue'],
  ['hash FieldValue without Field', R({ LoadBalancer: { Policy: 'ring_hash', HashPolicies: [{ FieldValue: 'x' }] } }), 'LoadBalancer.HashPolicies[0].Field', 'FieldValue requires a Field to apply to'],
  ['hash policy hashing nothing', R({ LoadBalancer: { Policy: 'ring_hash', HashPolicies: [{ Terminal: true }] } }), 'LoadBalancer.HashPolicies[0]', 'must hash something: set Field and FieldValue, or SourceIP'],
  ['CookieConfig on a header', R({ LoadBalancer: { Policy: 'ring_hash', HashPolicies: [{ Field: 'header', FieldValue: 'x', CookieConfig: { Path: '/' } }] } }), 'LoadBalancer.HashPolicies[0].CookieConfig', 'cookie_config provided for "header"'],
  ['session cookie with TTL', R({ LoadBalancer: { Policy: 'ring_hash', HashPolicies: [{ Field: 'cookie', FieldValue: 'x', CookieConfig: { Session: true, TTL: '10s' } }] } }), 'LoadBalancer.HashPolicies[0].CookieConfig.TTL', 'a session cookie cannot have an associated TTL'],
  ['unknown top-level key', R({ Subset: {} }), 'Subset', 'invalid config key "Subset"'],
];

rejectsEach(CASES);
