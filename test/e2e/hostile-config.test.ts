// Hostile config through the real CLI and a real agent: every class the hardening issue lists
// is refused with a line-numbered or field-named error, and afterwards the agent's state is
// exactly what it was: config entries, intentions, the published table's generation, the CA
// roots and the store index.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startMeshd, type MeshdProcess } from '../../src/demo/procs.ts';
import { meshd } from '../helpers/cli.ts';

let dir: string;
let agent: MeshdProcess;
let http: string;

function file(name: string, text: string): string {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
}

async function get(path: string): Promise<{ body: string; index: string | null }> {
  const r = await fetch(`http://${http}${path}`);
  return { body: await r.text(), index: r.headers.get('x-consul-index') };
}

/** Everything a refused write must leave untouched. */
async function snapshot(): Promise<string> {
  const parts = await Promise.all([
    get('/v1/config/service-defaults'),
    get('/v1/config/service-intentions'),
    get('/v1/config/service-splitter'),
    get('/v1/config/service-resolver'),
    get('/v1/connect/intentions'),
    get('/v1/connect/ca/roots'),
  ]);
  const explain = JSON.parse((await get('/v1/connect/intentions/explain?source=web&destination=api')).body) as { Generation: number };
  return JSON.stringify({ parts, generation: explain.Generation });
}

const intentions = (regex: string): string =>
  JSON.stringify({ Kind: 'service-intentions', Name: 'api', Sources: [{ Name: 'web', Permissions: [{ Action: 'allow', HTTP: { PathRegex: regex } }] }] });

before(async () => {
  dir = mkdtempSync(join(tmpdir(), 'meshd-hostile-'));
  agent = await startMeshd(['agent', '-dev', '-http-addr', '127.0.0.1:0']);
  http = agent.fields.http as string;
  // Some state worth keeping: an http service with a subset-less resolver and an L7 intention.
  for (const [name, text] of [
    ['defaults.hcl', 'Kind = "service-defaults"\nName = "api"\nProtocol = "http"\n'],
    ['resolver.hcl', 'Kind = "service-resolver"\nName = "api"\nSubsets = {\n  v1 = { Filter = "Service.Meta.version == v1" }\n}\n'],
    ['intentions.json', intentions('^/ok/.*$')],
  ] as const) {
    const r = await meshd(['config', 'write', '-http-addr', http, file(name, text)]);
    assert.equal(r.code, 0, r.stderr);
  }
});

after(async () => {
  await agent?.stop();
  rmSync(dir, { recursive: true, force: true });
});

const deepJson = '{"Kind":"service-defaults","Name":"api","Meta":' + '{"a":'.repeat(10_000) + '"x"' + '}'.repeat(10_000) + '}';
const deepHcl = 'Kind = "service-defaults"\nName = "api"\nMeta ' + '{ a '.repeat(5000) + '= 1' + '}'.repeat(5000) + '\n';

// [what, file name, text, error the CLI must print]
const CLI_CASES: readonly [string, string, string, RegExp][] = [
  ['a file over the 1 MiB body limit', 'huge.json', JSON.stringify({ Kind: 'service-defaults', Name: 'api', Meta: { a: 'x'.repeat(2 << 20) } }), /HTTP 413.*larger than 1048576 bytes/],
  ['JSON nested 10,000 deep', 'deep.json', deepJson, /deep\.json: invalid JSON: line 1, column \d+: nesting deeper than 64 levels/],
  ['HCL nested 5,000 deep', 'deep.hcl', deepHcl, /deep\.hcl: invalid HCL: line 3, column \d+: nesting deeper than 64 levels/],
  ['a duplicate JSON key', 'dup.json', '{\n  "Kind": "service-defaults",\n  "Name": "api",\n  "Protocol": "tcp",\n  "Protocol": "http"\n}\n', /dup\.json: invalid JSON: line 5, column 3: duplicate key "Protocol" \(first given on line 4\)/],
  ['a duplicate HCL attribute', 'dup.hcl', 'Kind = "service-defaults"\nName = "api"\nProtocol = "tcp"\nProtocol = "http"\n', /dup\.hcl: invalid HCL: line 4, column 1: duplicate key "Protocol"/],
  ['the same key in two spellings', 'case.hcl', 'Kind = "service-defaults"\nName = "api"\nProtocol = "tcp"\nprotocol = "http"\n', /Protocol: given twice, as "Protocol" and "protocol"/],
  ['a __proto__ key (JSON)', 'proto.json', '{"Kind": "service-defaults", "Name": "api", "__proto__": {"Protocol": "tcp"}}', /proto\.json: invalid JSON: line 1, column \d+: a key named "__proto__" is not allowed/],
  ['a __proto__ key (HCL)', 'proto.hcl', 'Kind = "service-defaults"\nName = "api"\nMeta {\n  __proto__ = "x"\n}\n', /proto\.hcl: invalid HCL: line 4, column 3: a key named "__proto__"/],
  ['an unknown key', 'unknown.hcl', 'Kind = "service-defaults"\nName = "api"\nProtocl = "tcp"\n', /Protocl: invalid config key "Protocl"/],
  ['an RE2-incompatible regex (backreference)', 'backref.json', intentions('^/(a)\\1$'), /Sources\[0\]\.Permissions\[0\]\.HTTP\.PathRegex: .*invalid escape sequence/],
  ['an RE2-incompatible regex (lookahead)', 'look.json', intentions('^/(?=admin)'), /PathRegex: .*unsupported Perl syntax/],
  ['an over-large repetition', 'rep.json', intentions('^/(a{1000}){1000}$'), /PathRegex: .*invalid repeat count/],
  ['split weights summing to 90', 'split.hcl', 'Kind = "service-splitter"\nName = "api"\nSplits = [\n  { Weight = 50 },\n  { Weight = 40, ServiceSubset = "v1" },\n]\n', /Splits: the sum of all split weights must be 100, not 90/],
  ['a split to a subset the resolver does not define', 'subset.hcl', 'Kind = "service-splitter"\nName = "api"\nSplits = [\n  { Weight = 50, ServiceSubset = "v9" },\n  { Weight = 50 },\n]\n', /v9/],
  ['an HCL syntax error', 'syntax.hcl', 'Kind = "service-defaults"\nName = "api"\nMeta {\n  a = "1"\n', /syntax\.hcl: invalid HCL: .*(At|line) \d+/],
  ['a JSON syntax error', 'syntax.json', '{\n  "Kind": "service-defaults",\n  "Name": "api",\n  "Protocol": \n}\n', /syntax\.json: invalid JSON: line 5, column 1: unexpected "}"/],
];

for (const [what, name, text, error] of CLI_CASES) {
  test(`refused and nothing changes: ${what}`, async () => {
    const before = await snapshot();
    const r = await meshd(['config', 'write', '-http-addr', http, file(name, text)]);
    assert.notEqual(r.code, 0, `${what} was accepted: ${r.stdout}`);
    assert.match(r.stderr, error);
    assert.equal(await snapshot(), before, 'the agent state changed');
  });
}

test('the API refuses the same bodies sent directly, with a 4xx naming the line or field, and stays usable', async () => {
  const before = await snapshot();
  for (const [body, status, error] of [
    [deepJson, 400, /body: invalid JSON: line 1, column \d+: nesting deeper than 64 levels/],
    ['{"Kind": "service-defaults", "Name": "api",\n "Name": "web"}', 400, /line 2, column 2: duplicate key "Name"/],
    ['{"Kind": "service-defaults", "Name": "api", "Meta": {"__proto__": "x"}}', 400, /"__proto__" is not allowed/],
    [JSON.stringify({ Kind: 'service-defaults', Name: 'api', Meta: { a: 'x'.repeat(2 << 20) } }), 413, /larger than 1048576 bytes/],
  ] as const) {
    const r = await fetch(`http://${http}/v1/config`, { method: 'PUT', body });
    assert.equal(r.status, status);
    assert.match(await r.text(), error);
  }
  // After a 413 the connection is closed, not reused with the unread body as the next request.
  assert.equal(await snapshot(), before);
});

test('a catastrophic-for-backtracking regex is linear under RE2: accepted, and an 8,000-character path is decided at once', async () => {
  const r = await meshd(['config', 'write', '-http-addr', http, file('redos.json', intentions('^/(a+)+$'))]);
  assert.equal(r.code, 0, r.stderr);
  const t0 = performance.now();
  const ex = await fetch(`http://${http}/v1/connect/intentions/explain?source=web&destination=api&path=${'/' + 'a'.repeat(8_000) + '!'}`);
  const decision = (await ex.json()) as { Allowed: boolean; Reason: string };
  assert.equal(decision.Allowed, false);
  assert.match(decision.Reason, /default intention policy/);
  assert.ok(performance.now() - t0 < 2000, 'a generous bound: a backtracking engine takes far longer than the age of the universe here');
  assert.equal((await meshd(['config', 'write', '-http-addr', http, file('restore.json', intentions('^/ok/.*$'))])).code, 0);
});
