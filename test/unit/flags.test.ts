import { test } from 'node:test';
import assert from 'node:assert/strict';
import { availableParallelism } from 'node:os';
import fc from 'fast-check';
import {
  UsageError,
  parseFlags,
  parseHostPort,
  parseHttpAddr,
  parseUpstream,
  parseWorkers,
} from '../../src/cli/flags.ts';
import type { FlagSpecs, ParsedFlags } from '../../src/cli/flags.ts';

const SPECS: FlagSpecs = {
  service: { kind: 'string', help: 'service name', placeholder: 'NAME' },
  'http-addr': { kind: 'string', help: 'agent address', env: 'MESHD_HTTP_ADDR', default: '127.0.0.1:8500' },
  dev: { kind: 'bool', help: 'dev mode' },
  upstream: { kind: 'list', help: 'upstreams' },
};

const NO_ENV: NodeJS.ProcessEnv = {};

function isUsageError(pattern?: RegExp): (e: unknown) => boolean {
  return (e: unknown) => {
    assert.ok(e instanceof UsageError, `expected UsageError, got ${String(e)}`);
    if (pattern !== undefined) assert.match(e.message, pattern);
    return true;
  };
}

test('parseFlags reads single-dash, double-dash and -x=v forms', () => {
  for (const argv of [
    ['-service', 'web'],
    ['--service', 'web'],
    ['-service=web'],
    ['--service=web'],
  ]) {
    const f = parseFlags(argv, SPECS, NO_ENV);
    assert.equal(f.strings.get('service'), 'web', argv.join(' '));
    assert.deepEqual(f.positionals, []);
  }
  // The value after `=` is taken whole, including further `=` and leading dashes.
  assert.equal(parseFlags(['-service=a=b'], SPECS, NO_ENV).strings.get('service'), 'a=b');
  assert.equal(parseFlags(['-service', '-dev'], SPECS, NO_ENV).strings.get('service'), '-dev');
  assert.equal(parseFlags(['-service='], SPECS, NO_ENV).strings.get('service'), '');
  // The last occurrence of a string flag wins.
  assert.equal(parseFlags(['-service', 'a', '-service', 'b'], SPECS, NO_ENV).strings.get('service'), 'b');
});

test('parseFlags handles bool flags: bare, =true/1, =false/0, and rejects other values', () => {
  assert.equal(parseFlags(['-dev'], SPECS, NO_ENV).bools.get('dev'), true);
  assert.equal(parseFlags(['--dev'], SPECS, NO_ENV).bools.get('dev'), true);
  assert.equal(parseFlags(['-dev=true'], SPECS, NO_ENV).bools.get('dev'), true);
  assert.equal(parseFlags(['-dev=1'], SPECS, NO_ENV).bools.get('dev'), true);
  assert.equal(parseFlags(['-dev=false'], SPECS, NO_ENV).bools.get('dev'), false);
  assert.equal(parseFlags(['-dev=0'], SPECS, NO_ENV).bools.get('dev'), false);
  assert.equal(parseFlags([], SPECS, NO_ENV).bools.has('dev'), false);
  // A bool never swallows the next argument.
  const f = parseFlags(['-dev', 'false'], SPECS, NO_ENV);
  assert.equal(f.bools.get('dev'), true);
  assert.deepEqual(f.positionals, ['false']);
  assert.throws(() => parseFlags(['-dev=yes'], SPECS, NO_ENV), isUsageError(/-dev takes true or false/));
});

test('parseFlags collects repeated list flags in order', () => {
  const f = parseFlags(['-upstream', 'a:1', '--upstream=b:2', '-upstream', 'c:3'], SPECS, NO_ENV);
  assert.deepEqual(f.lists.get('upstream'), ['a:1', 'b:2', 'c:3']);
  assert.equal(parseFlags([], SPECS, NO_ENV).lists.has('upstream'), false);
});

test('parseFlags: `--` ends flags, and `-` alone and non-flags are positionals', () => {
  const f = parseFlags(['pos1', '-dev', '-', '--', '-service', 'x', '--', 'y'], SPECS, NO_ENV);
  assert.equal(f.bools.get('dev'), true);
  assert.deepEqual(f.positionals, ['pos1', '-', '-service', 'x', '--', 'y']);
  assert.equal(f.strings.has('service'), false);
});

test('parseFlags: unknown flag and missing value are UsageErrors that name the flag', () => {
  assert.throws(() => parseFlags(['-nope'], SPECS, NO_ENV), isUsageError(/unknown flag: -nope/));
  assert.throws(() => parseFlags(['--nope=1'], SPECS, NO_ENV), isUsageError(/unknown flag: -nope/));
  // Three dashes is not a spelling of a known flag.
  assert.throws(() => parseFlags(['---service', 'x'], SPECS, NO_ENV), isUsageError(/unknown flag/));
  assert.throws(() => parseFlags(['-service'], SPECS, NO_ENV), isUsageError(/-service needs a value \(NAME\)/));
  assert.throws(() => parseFlags(['-upstream'], SPECS, NO_ENV), isUsageError(/-upstream needs a value/));
});

test('parseFlags precedence is flag > env > default; an empty env var counts as unset', () => {
  const env: NodeJS.ProcessEnv = { MESHD_HTTP_ADDR: '10.0.0.1:8500' };
  assert.equal(parseFlags(['-http-addr', '1.2.3.4:1'], SPECS, env).strings.get('http-addr'), '1.2.3.4:1');
  assert.equal(parseFlags([], SPECS, env).strings.get('http-addr'), '10.0.0.1:8500');
  assert.equal(parseFlags([], SPECS, NO_ENV).strings.get('http-addr'), '127.0.0.1:8500');
  assert.equal(parseFlags([], SPECS, { MESHD_HTTP_ADDR: '' }).strings.get('http-addr'), '127.0.0.1:8500');
  // An explicitly empty flag value still beats env and default.
  assert.equal(parseFlags(['-http-addr='], SPECS, env).strings.get('http-addr'), '');
  // A string flag without a default or env stays absent.
  assert.equal(parseFlags([], SPECS, env).strings.has('service'), false);
});

const flagName = fc.stringMatching(/^[a-z][a-z0-9-]{0,10}$/);

function snapshot(f: ParsedFlags): unknown {
  return {
    strings: [...f.strings].sort(),
    bools: [...f.bools].sort(),
    lists: [...f.lists].sort(),
    positionals: f.positionals,
  };
}

test('property: -name value, --name value and -name=value parse to the same result', () => {
  const arb = fc
    .uniqueArray(fc.record({ name: flagName, kind: fc.constantFrom('string' as const, 'list' as const, 'bool' as const) }), {
      minLength: 1,
      maxLength: 5,
      selector: (s) => s.name,
    })
    .chain((specList) =>
      fc.tuple(
        fc.constant(specList),
        fc.array(
          fc.tuple(
            fc.constantFrom(...specList),
            fc.string({ maxLength: 8 }),
            fc.boolean(),
          ),
          { maxLength: 8 },
        ),
      ),
    );
  fc.assert(
    fc.property(arb, ([specList, uses]) => {
      const specs: Record<string, { kind: 'string' | 'list' | 'bool'; help: string }> = {};
      for (const s of specList) specs[s.name] = { kind: s.kind, help: '' };
      const forms: string[][] = [[], [], []];
      for (const [s, value, b] of uses) {
        if (s.kind === 'bool') {
          const v = b ? 'true' : 'false';
          forms[0]?.push(b ? `-${s.name}` : `-${s.name}=${v}`);
          forms[1]?.push(b ? `--${s.name}` : `--${s.name}=${v}`);
          forms[2]?.push(`-${s.name}=${v}`);
        } else {
          forms[0]?.push(`-${s.name}`, value);
          forms[1]?.push(`--${s.name}`, value);
          forms[2]?.push(`-${s.name}=${value}`);
        }
      }
      const results = forms.map((argv) => snapshot(parseFlags(argv, specs, NO_ENV)));
      assert.deepEqual(results[1], results[0]);
      assert.deepEqual(results[2], results[0]);
      // And the result is what was written: the last value per string flag, all list values.
      const parsed = parseFlags(forms[2] ?? [], specs, NO_ENV);
      for (const s of specList) {
        const mine = uses.filter(([u]) => u.name === s.name);
        if (s.kind === 'list') assert.deepEqual(parsed.lists.get(s.name), mine.length === 0 ? undefined : mine.map(([, v]) => v));
        if (s.kind === 'string') assert.equal(parsed.strings.get(s.name), mine.at(-1)?.[1]);
        if (s.kind === 'bool') assert.equal(parsed.bools.get(s.name), mine.at(-1)?.[2]);
      }
    }),
  );
});

test('parseHostPort accepts IPv4, names and bracketed IPv6', () => {
  assert.deepEqual(parseHostPort('127.0.0.1:8500', 'addr'), { host: '127.0.0.1', port: 8500 });
  assert.deepEqual(parseHostPort('localhost:0', 'addr'), { host: 'localhost', port: 0 });
  assert.deepEqual(parseHostPort('[::1]:80', 'addr'), { host: '::1', port: 80 });
  assert.deepEqual(parseHostPort('0.0.0.0:65535', 'addr'), { host: '0.0.0.0', port: 65535 });
});

test('parseHostPort rejects bad ports, missing ports and unbracketed IPv6, naming the flag', () => {
  for (const bad of ['127.0.0.1:65536', '127.0.0.1:99999', '127.0.0.1:123456', '127.0.0.1', '127.0.0.1:', ':80', '::1:80', 'host:-1', 'host:8o', '']) {
    assert.throws(() => parseHostPort(bad, 'listen'), isUsageError(/^-listen must be HOST:PORT/), bad);
  }
});

test('parseHttpAddr adds http:// when the scheme is missing and keeps http/https', () => {
  const a = parseHttpAddr('127.0.0.1:8500');
  assert.equal(a.protocol, 'http:');
  assert.equal(a.hostname, '127.0.0.1');
  assert.equal(a.port, '8500');
  const b = parseHttpAddr('https://consul.example:8501');
  assert.equal(b.protocol, 'https:');
  assert.equal(b.hostname, 'consul.example');
  assert.equal(b.port, '8501');
  assert.equal(parseHttpAddr('http://[::1]:8500').hostname, '[::1]');
  assert.equal(parseHttpAddr('HTTP://127.0.0.1:1').protocol, 'http:');
});

test('parseHttpAddr rejects non-http schemes and unparseable values', () => {
  assert.throws(() => parseHttpAddr('ftp://127.0.0.1:21'), isUsageError(/http or https, got ftp:/));
  assert.throws(() => parseHttpAddr('unix:///tmp/consul.sock'), isUsageError(/http or https/));
  assert.throws(() => parseHttpAddr('http://'), isUsageError(/HOST:PORT or a URL/));
  assert.throws(() => parseHttpAddr('a b:80'), isUsageError());
});

test('parseUpstream reads NAME:PORT, NAME:HOST:PORT and NAME.service:PORT', () => {
  assert.deepEqual(parseUpstream('api:9191'), { name: 'api', host: '127.0.0.1', port: 9191 });
  assert.deepEqual(parseUpstream('api:10.0.0.1:80'), { name: 'api', host: '10.0.0.1', port: 80 });
  assert.deepEqual(parseUpstream('api.service:80'), { name: 'api', host: '127.0.0.1', port: 80 });
  // meshd's @DC: the key names the datacenter, the service is kept apart.
  assert.deepEqual(parseUpstream('api@dc2:9191'), { name: 'api@dc2', service: 'api', datacenter: 'dc2', host: '127.0.0.1', port: 9191 });
  assert.deepEqual(parseUpstream('api.service@dc2:10.0.0.1:80'), { name: 'api@dc2', service: 'api', datacenter: 'dc2', host: '10.0.0.1', port: 80 });
  assert.throws(() => parseUpstream('api@DC2:80'), /not a datacenter name/);
  assert.throws(() => parseUpstream('api@:80'), /not a datacenter name/);
  assert.deepEqual(parseUpstream('api.service:0.0.0.0:81'), { name: 'api', host: '0.0.0.0', port: 81 });
  assert.deepEqual(parseUpstream('my-api_v2:1'), { name: 'my-api_v2', host: '127.0.0.1', port: 1 });
  // A dotted name that is not the .service suffix keeps its dots.
  assert.deepEqual(parseUpstream('api.v2:80'), { name: 'api.v2', host: '127.0.0.1', port: 80 });
});

test('parseUpstream rejects prepared queries and junk', () => {
  assert.throws(() => parseUpstream('api.query:80'), isUsageError(/prepared queries are not supported/));
  for (const bad of ['api', 'api:', ':80', 'api:port', 'api:65536', '-api:80', 'a pi:80', '', 'api:1.2.3.4:', 'api:123456']) {
    assert.throws(() => parseUpstream(bad), isUsageError(/-upstream must be NAME\[@DC\]:PORT/), bad);
  }
});

test('parseWorkers: auto (or absent) is availableParallelism, 1..256 accepted, others rejected', () => {
  assert.equal(parseWorkers('auto'), availableParallelism());
  assert.equal(parseWorkers(undefined), availableParallelism());
  assert.equal(parseWorkers('1'), 1);
  assert.equal(parseWorkers('256'), 256);
  assert.equal(parseWorkers('8'), 8);
  for (const bad of ['0', '-1', '1.5', 'abc', '257', '', ' 4', '4 ', '1e2', 'AUTO']) {
    assert.throws(() => parseWorkers(bad), isUsageError(/-workers must be an integer 1\.\.256 or "auto"/), bad);
  }
});
