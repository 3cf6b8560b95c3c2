// service-router: Consul's documented examples (HCL and JSON twins decode alike), every
// validation rule (the FieldError names the field), and encode -> decode round trips.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { parseDuration } from '../../src/control/decode.ts';
import {
  decodeConfigEntry,
  encodeConfigEntry,
  formatDuration,
  type RouteDestination,
  type ServiceRouterEntry,
} from '../../src/config/entries.ts';
import { decodePair, rejectsEach } from './pair.ts';

function pair(hcl: string, json: unknown): Promise<ServiceRouterEntry> {
  return decodePair<ServiceRouterEntry>('service-router', hcl, json);
}

const NONE = { add: {}, set: {}, remove: [] };
function dest(over: Partial<RouteDestination>): RouteDestination {
  return {
    service: '', serviceSubset: '', prefixRewrite: '', requestTimeoutMs: 0, idleTimeoutMs: 0, numRetries: 0, retryOnConnectFailure: false,
    retryOn: [], retryOnStatusCodes: [], requestHeaders: NONE, responseHeaders: NONE, ...over,
  };
}

test('docs: path prefix matching (HCL blocks inside a list of routes)', async () => {
  const e = await pair(
    `
Kind = "service-router"
Name = "web"
Routes = [
  {
    Match {
      HTTP {
        PathPrefix = "/admin"
      }
    }

    Destination {
      Service = "admin"
    }
  },
  # NOTE: a default catch-all will send unmatched traffic to "web"
]
`,
    { Kind: 'service-router', Name: 'web', Routes: [{ Match: { HTTP: { PathPrefix: '/admin' } }, Destination: { Service: 'admin' } }] },
  );
  assert.deepEqual(e, {
    kind: 'service-router',
    name: 'web',
    meta: {},
    routes: [{ match: { path: { kind: 'prefix', value: '/admin' }, headers: [], queryParams: [], methods: [] }, destination: dest({ service: 'admin' }) }],
  });
  assert.deepEqual(encodeConfigEntry(e, { createIndex: 1, modifyIndex: 2 }), {
    Kind: 'service-router',
    Name: 'web',
    Routes: [{ Match: { HTTP: { PathPrefix: '/admin' } }, Destination: { Service: 'admin' } }],
    CreateIndex: 1,
    ModifyIndex: 2,
  });
});

test('docs: header and query parameter matching to a canary subset', async () => {
  const e = await pair(
    `
Kind = "service-router"
Name = "web"
Routes = [
  {
    Match {
      HTTP {
        Header = [
          {
            Name  = "x-debug"
            Exact = "1"
          },
        ]
      }
    }
    Destination {
      Service       = "web"
      ServiceSubset = "canary"
    }
  },
  {
    Match {
      HTTP {
        QueryParam = [
          {
            Name  = "x-debug"
            Exact = "1"
          },
        ]
      }
    }
    Destination {
      Service       = "web"
      ServiceSubset = "canary"
    }
  },
]
`,
    {
      Kind: 'service-router',
      Name: 'web',
      Routes: [
        { Match: { HTTP: { Header: [{ Name: 'x-debug', Exact: '1' }] } }, Destination: { Service: 'web', ServiceSubset: 'canary' } },
        { Match: { HTTP: { QueryParam: [{ Name: 'x-debug', Exact: '1' }] } }, Destination: { Service: 'web', ServiceSubset: 'canary' } },
      ],
    },
  );
  assert.deepEqual(e.routes[0]?.match?.headers, [{ name: 'x-debug', kind: 'exact', value: '1', invert: false }]);
  assert.deepEqual(e.routes[1]?.match?.queryParams, [{ name: 'x-debug', kind: 'exact', value: '1' }]);
  assert.deepEqual(e.routes[1]?.destination, dest({ service: 'web', serviceSubset: 'canary' }));
});

test('docs: gRPC method routing with PathExact', async () => {
  const e = await pair(
    `
Kind = "service-router"
Name = "billing"
Routes = [
  {
    Match {
      HTTP {
        PathExact = "/mycompany.BillingService/GenerateInvoice"
      }
    }

    Destination {
      Service = "invoice-generator"
    }
  },
]
`,
    { Kind: 'service-router', Name: 'billing', Routes: [{ Match: { HTTP: { PathExact: '/mycompany.BillingService/GenerateInvoice' } }, Destination: { Service: 'invoice-generator' } }] },
  );
  assert.deepEqual(e.routes[0]?.match?.path, { kind: 'exact', value: '/mycompany.BillingService/GenerateInvoice' });
});

test('docs (discovery-chain API): snake_case keys, retries, timeouts, prefix rewrite', async () => {
  const e = await pair(
    `
kind = "service-router"
name = "web"
routes = [
  {
    match {
      http {
        path_prefix = "/admin"
      }
    }
    destination {
      service         = "admin"
      prefix_rewrite  = "/"
      request_timeout = "15s"
    }
  },
  {
    match {
      http {
        header = [
          {
            name  = "x-debug"
            exact = "1"
          },
        ]
      }
    }
    destination {
      service                  = "web"
      service_subset           = "canary"
      num_retries              = 5
      retry_on_connect_failure = true
      retry_on_status_codes    = [401, 409]
    }
  },
]
`,
    {
      Kind: 'service-router',
      Name: 'web',
      Routes: [
        { Match: { HTTP: { PathPrefix: '/admin' } }, Destination: { Service: 'admin', PrefixRewrite: '/', RequestTimeout: '15s' } },
        {
          Match: { HTTP: { Header: [{ Name: 'x-debug', Exact: '1' }] } },
          Destination: { Service: 'web', ServiceSubset: 'canary', NumRetries: 5, RetryOnConnectFailure: true, RetryOnStatusCodes: [401, 409] },
        },
      ],
    },
  );
  assert.deepEqual(e.routes[0]?.destination, dest({ service: 'admin', prefixRewrite: '/', requestTimeoutMs: 15000 }));
  assert.deepEqual(e.routes[1]?.destination, dest({ service: 'web', serviceSubset: 'canary', numRetries: 5, retryOnConnectFailure: true, retryOnStatusCodes: [401, 409] }));
  const wire = encodeConfigEntry(e, { createIndex: 1, modifyIndex: 1 });
  assert.deepEqual((wire.Routes as unknown[])[0], { Match: { HTTP: { PathPrefix: '/admin' } }, Destination: { Service: 'admin', PrefixRewrite: '/', RequestTimeout: '15s' } });
});

test('every match kind, methods upper-cased, header modifiers, RetryOn, IdleTimeout; empty Match is match-all', async () => {
  const json = {
    Kind: 'service-router',
    Name: 'api',
    Meta: { team: 'core' },
    Routes: [
      {
        Match: {
          HTTP: {
            PathRegex: '/v[0-9]+/users/.*',
            Header: [
              { Name: 'x-present', Present: true },
              { Name: 'x-prefix', Prefix: 'ab', Invert: true },
              { Name: 'x-suffix', Suffix: 'yz' },
              { Name: ':authority', Regex: '.*\\.example\\.com' },
            ],
            QueryParam: [{ Name: 'debug', Present: true }, { Name: 'v', Regex: '[0-9]+' }],
            Methods: ['get', 'Post'],
          },
        },
        Destination: {
          IdleTimeout: '1m30s',
          RetryOn: ['5xx', 'reset', '5xx'],
          RequestHeaders: { Add: { 'x-added': 'a' }, Set: { 'x-set': 'b' }, Remove: ['x-drop', 'X-Drop'] },
          ResponseHeaders: { Remove: ['server'] },
        },
      },
      { Match: {}, Destination: { Service: 'fallback' } },
      { Match: { HTTP: { PathPrefix: '', Methods: [] } } },
    ],
  };
  const hcl = `
Kind = "service-router"
Name = "api"
Meta { team = "core" }
Routes = [
  {
    Match {
      HTTP {
        PathRegex = "/v[0-9]+/users/.*"
        Header { Name = "x-present" Present = true }
        Header { Name = "x-prefix" Prefix = "ab" Invert = true }
        Header { Name = "x-suffix" Suffix = "yz" }
        Header { Name = ":authority" Regex = ".*\\\\.example\\\\.com" }
        QueryParam = [{ Name = "debug", Present = true }, { Name = "v", Regex = "[0-9]+" }]
        Methods = ["get", "Post"]
      }
    }
    Destination {
      IdleTimeout = "1m30s"
      RetryOn = ["5xx", "reset", "5xx"]
      RequestHeaders {
        Add { x-added = "a" }
        Set { x-set = "b" }
        Remove = ["x-drop", "X-Drop"]
      }
      ResponseHeaders { Remove = ["server"] }
    }
  },
  { Match {} Destination { Service = "fallback" } },
  { Match { HTTP { PathPrefix = "" Methods = [] } } },
]
`;
  const e = await pair(hcl, json);
  const r0 = e.routes[0];
  assert.deepEqual(r0?.match, {
    path: { kind: 'regex', value: '/v[0-9]+/users/.*' },
    headers: [
      { name: 'x-present', kind: 'present', value: '', invert: false },
      { name: 'x-prefix', kind: 'prefix', value: 'ab', invert: true },
      { name: 'x-suffix', kind: 'suffix', value: 'yz', invert: false },
      { name: ':authority', kind: 'regex', value: '.*\\.example\\.com', invert: false },
    ],
    queryParams: [{ name: 'debug', kind: 'present', value: '' }, { name: 'v', kind: 'regex', value: '[0-9]+' }],
    methods: ['GET', 'POST'],
  });
  assert.deepEqual(
    r0?.destination,
    dest({ idleTimeoutMs: 90_000, retryOn: ['5xx', 'reset'], requestHeaders: { add: { 'x-added': 'a' }, set: { 'x-set': 'b' }, remove: ['x-drop'] }, responseHeaders: { add: {}, set: {}, remove: ['server'] } }),
  );
  assert.equal(e.routes[1]?.match, null);
  assert.equal(e.routes[2]?.match, null);
  assert.deepEqual(e.routes[2]?.destination, dest({}));
  const wire = encodeConfigEntry(e, { createIndex: 1, modifyIndex: 1 });
  assert.deepEqual((wire.Routes as unknown[])[2], {});
  assert.deepEqual(((wire.Routes as Record<string, unknown>[])[0]?.Destination as Record<string, unknown>).IdleTimeout, '1m30s');
});

test('Go duration formatting and parsing agree (property)', () => {
  for (const [ms, s] of [[0, '0s'], [0.0005, '500ns'], [1.5, '1.5ms'], [15000, '15s'], [1500, '1.5s'], [90_000, '1m30s'], [3_600_000, '1h0m0s'], [0.0015, '1.5µs']] as const) {
    assert.equal(formatDuration(ms), s);
  }
  fc.assert(
    fc.property(fc.integer({ min: 0, max: 2 ** 31 - 1 }), fc.integer({ min: 0, max: 999_999 }), (ms, ns) => {
      const total = ms + ns / 1e6;
      assert.equal(Math.round(parseDuration(formatDuration(total), 'x') * 1e6), Math.round(total * 1e6));
    }),
    { numRuns: 2000 },
  );
});

// ---------------------------------------------------------------------------------------
// Validation: one broken thing per case.

const BASE = { Kind: 'service-router', Name: 'web', Routes: [{ Match: { HTTP: { PathPrefix: '/a' } }, Destination: { Service: 'api' } }] };
const withRoute = (route: unknown): unknown => ({ ...BASE, Routes: [BASE.Routes[0], route] });
const M = 'Routes[1].Match.HTTP';
const D = 'Routes[1].Destination';

const CASES: [string, unknown, string, string | RegExp][] = [
  ['no Name', { Kind: 'service-router' }, 'Name', 'is required'],
  ['wildcard Name', { Kind: 'service-router', Name: '*' }, 'Name', /is not a valid service name/],
  ['ENT namespace', { ...BASE, Namespace: 'ns1' }, 'Namespace', /^namespaces are a Consul Enterprise feature/],
  ['unknown route key', withRoute({ Matches: {} }), 'Routes[1].Matches', 'invalid config key "Matches"'],
  ['PathExact without /', withRoute({ Match: { HTTP: { PathExact: 'x' } } }), `${M}.PathExact`, `doesn't start with '/': "x"`],
  ['PathPrefix without /', withRoute({ Match: { HTTP: { path_prefix: 'x' } } }), `${M}.PathPrefix`, `doesn't start with '/': "x"`],
  ['two path fields', withRoute({ Match: { HTTP: { PathExact: '/x', PathRegex: '/y' } } }), M, 'should only contain at most one of PathExact, PathPrefix, or PathRegex'],
  ['PathRegex not RE2', withRoute({ Match: { HTTP: { PathRegex: '/(?=a)' } } }), `${M}.PathRegex`, /^is not a valid RE2 regular expression/],
  ['header without Name', withRoute({ Match: { HTTP: { Header: [{ Exact: 'a' }] } } }), `${M}.Header[0].Name`, 'missing required Name field'],
  ['header name not a token', withRoute({ Match: { HTTP: { Header: [{ Name: 'a b', Exact: 'a' }] } } }), `${M}.Header[0].Name`, '"a b" is not a valid HTTP header name'],
  ['header with two matchers', withRoute({ Match: { HTTP: { Header: [{ Name: 'a', Exact: 'a', Suffix: 'b' }] } } }), `${M}.Header[0]`, 'should only contain one of Present, Exact, Prefix, Suffix, or Regex'],
  ['header with no matcher', withRoute({ Match: { HTTP: { Header: [{ Name: 'a', Invert: true }] } } }), `${M}.Header[0]`, 'should only contain one of Present, Exact, Prefix, Suffix, or Regex'],
  ['header Contains (intentions only)', withRoute({ Match: { HTTP: { Header: [{ Name: 'a', Contains: 'b' }] } } }), `${M}.Header[0].Contains`, 'invalid config key "Contains"'],
  ['header Regex not RE2', withRoute({ Match: { HTTP: { Header: [{ Name: 'a', Regex: '(a)\\1' }] } } }), `${M}.Header[0].Regex`, /^is not a valid RE2 regular expression/],
  ['query param without Name', withRoute({ Match: { HTTP: { QueryParam: [{ Exact: 'a' }] } } }), `${M}.QueryParam[0].Name`, 'missing required Name field'],
  ['query param with two matchers', withRoute({ Match: { HTTP: { QueryParam: [{ Name: 'a', Present: true, Exact: 'b' }] } } }), `${M}.QueryParam[0]`, 'should only contain one of Present, Exact, or Regex'],
  ['query param with no matcher', withRoute({ Match: { HTTP: { QueryParam: [{ Name: 'a' }] } } }), `${M}.QueryParam[0]`, 'should only contain one of Present, Exact, or Regex'],
  ['query param Prefix', withRoute({ Match: { HTTP: { QueryParam: [{ Name: 'a', Prefix: 'b' }] } } }), `${M}.QueryParam[0].Prefix`, 'invalid config key "Prefix"'],
  ['query param Regex not RE2', withRoute({ Match: { HTTP: { QueryParam: [{ Name: 'a', Regex: '[' }] } } }), `${M}.QueryParam[0].Regex`, /^is not a valid RE2 regular expression/],
  ['invalid method', withRoute({ Match: { HTTP: { Methods: ['GET', 'FETCH'] } } }), `${M}.Methods`, 'contains an invalid method "FETCH"'],
  ['duplicate method', withRoute({ Match: { HTTP: { Methods: ['get', 'GET'] } } }), `${M}.Methods`, 'contains "GET" more than once'],
  ['PrefixRewrite with PathRegex', withRoute({ Match: { HTTP: { PathRegex: '/a.*' } }, Destination: { PrefixRewrite: '/' } }), `${D}.PrefixRewrite`, 'cannot make use of PrefixRewrite without configuring either PathExact or PathPrefix'],
  ['PrefixRewrite without a path match', withRoute({ Match: { HTTP: { Methods: ['GET'] } }, Destination: { PrefixRewrite: '/' } }), `${D}.PrefixRewrite`, 'cannot make use of PrefixRewrite without configuring either PathExact or PathPrefix'],
  ['PrefixRewrite without Match', withRoute({ Destination: { PrefixRewrite: '/' } }), `${D}.PrefixRewrite`, 'cannot make use of PrefixRewrite without configuring either PathExact or PathPrefix'],
  ['invalid retry condition', withRoute({ Destination: { RetryOn: ['5xx', 'always'] } }), `${D}.RetryOn[1]`, /^contains an invalid retry condition: "always"/],
  ['status code out of range', withRoute({ Destination: { RetryOnStatusCodes: [503, 700] } }), `${D}.RetryOnStatusCodes[1]`, 'must be an HTTP status code (100-599), got 700'],
  ['NumRetries negative', withRoute({ Destination: { NumRetries: -1 } }), `${D}.NumRetries`, 'must be between 0 and 4294967295, got -1'],
  ['bad RequestTimeout', withRoute({ Destination: { RequestTimeout: '15 seconds' } }), `${D}.RequestTimeout`, /^invalid duration "15 seconds"/],
  ['RequestTimeout as a number', withRoute({ Destination: { RequestTimeout: 15 } }), `${D}.RequestTimeout`, /^must be a duration string such as "15s"/],
  ['IdleTimeout too long', withRoute({ Destination: { IdleTimeout: '1000h' } }), `${D}.IdleTimeout`, /^must be at most 2147483647ms/],
  ['destination service wildcard', withRoute({ Destination: { Service: '*' } }), `${D}.Service`, /is not a valid service name/],
  ['destination subset upper-case', withRoute({ Destination: { ServiceSubset: 'V1' } }), `${D}.ServiceSubset`, /^subset name "V1" must begin and end with a lower case letter or digit/],
  ['destination Namespace', withRoute({ Destination: { Namespace: 'other' } }), `${D}.Namespace`, /^namespaces are a Consul Enterprise feature/],
  ['destination Partition', withRoute({ Destination: { Partition: 'p' } }), `${D}.Partition`, /^admin partitions are a Consul Enterprise feature/],
  ['modifier on a pseudo-header', withRoute({ Destination: { RequestHeaders: { Set: { ':path': '/' } } } }), `${D}.RequestHeaders.Set.:path`, '":path" is a pseudo-header, which cannot be added, set or removed'],
  ['modifier header name not a token', withRoute({ Destination: { ResponseHeaders: { Remove: ['bad header'] } } }), `${D}.ResponseHeaders.Remove[0]`, '"bad header" is not a valid HTTP header name'],
  ['modifier value not a string', withRoute({ Destination: { RequestHeaders: { Add: { 'x-a': 1 } } } }), `${D}.RequestHeaders.Add.x-a`, 'must be a string, got number 1'],
  ['unknown modifier key', withRoute({ Destination: { RequestHeaders: { Append: {} } } }), `${D}.RequestHeaders.Append`, 'invalid config key "Append"'],
  ['unknown destination key', withRoute({ Destination: { Timeout: '1s' } }), `${D}.Timeout`, 'invalid config key "Timeout"'],
];

rejectsEach(CASES);

test('a route without Destination, and a router without routes, decode', () => {
  const e = decodeConfigEntry({ Kind: 'service-router', Name: 'web', Routes: [{ Match: { HTTP: { PathExact: '/x' } } }] }) as ServiceRouterEntry;
  assert.deepEqual(e.routes[0]?.destination, dest({}));
  const empty = decodeConfigEntry({ Kind: 'service-router', Name: 'web' }) as ServiceRouterEntry;
  assert.deepEqual(empty.routes, []);
  assert.deepEqual(encodeConfigEntry(empty, { createIndex: 1, modifyIndex: 1 }), { Kind: 'service-router', Name: 'web', CreateIndex: 1, ModifyIndex: 1 });
});
