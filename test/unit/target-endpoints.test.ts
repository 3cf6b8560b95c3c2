import { test } from 'node:test';
import assert from 'node:assert/strict';
import { compileHealthFilter } from '../../src/control/filter.ts';
import { targetEndpoints, type HealthEntry } from '../../src/control/proxy.ts';

function entry(port: number, statuses: string[], meta: Record<string, string> = {}, address = ''): HealthEntry {
  return {
    Node: { Address: '10.0.0.1' },
    Service: { Address: address, Port: port, Tags: [], Meta: meta, Proxy: { DestinationServiceName: 'api' } },
    Checks: statuses.map((Status) => ({ Status })),
  };
}

const all = (): boolean => true;

test('a target takes passing and warning instances, never critical; OnlyPassing drops warning ones', () => {
  const entries = [entry(1, ['passing', 'passing']), entry(2, ['passing', 'warning']), entry(3, ['warning', 'critical']), entry(4, [])];
  assert.deepEqual(targetEndpoints(entries, { service: 'api', onlyPassing: false }, all).map((e) => e.port), [1, 2, 4]);
  assert.deepEqual(targetEndpoints(entries, { service: 'api', onlyPassing: true }, all).map((e) => e.port), [1, 4]);
});

test('the subset filter applies on top of health; the node address stands in for an empty service address', () => {
  const entries = [entry(1, ['passing'], { version: 'v1' }), entry(2, ['passing'], { version: 'v2' }, '10.9.9.9'), entry(3, ['critical'], { version: 'v2' })];
  const v2 = targetEndpoints(entries, { service: 'api', onlyPassing: false }, compileHealthFilter('Service.Meta.version == v2'));
  assert.deepEqual(v2, [{ host: '10.9.9.9', port: 2, service: 'api' }]);
  assert.deepEqual(targetEndpoints(entries, { service: 'api', onlyPassing: false }, compileHealthFilter('Service.Meta.version == v1')), [{ host: '10.0.0.1', port: 1, service: 'api' }]);
});
