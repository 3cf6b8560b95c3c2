// `npm run overload`: a sidecar driven at twice the rate it can serve (bench/lib/overload.ts).
// Prints the per-second windows and a summary; `-json FILE` writes the report. Flags:
//   -overload 10s -baseline 3s -recovery 12s -capacity 3s -factor 2 -low 0.2
//   -max-connections 512 (the generator's) -workers 1
//   -web-flag FLAG=VALUE (repeatable; default -max-concurrent-requests=64), -api-flag FLAG=VALUE

import { writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { parseFlags, type FlagSpecs } from '../src/cli/flags.ts';
import { parseDuration } from '../src/control/decode.ts';
import { DEFAULT_OVERLOAD, formatWindows, runOverloadScenario } from './lib/overload.ts';

const FLAGS: FlagSpecs = {
  overload: { kind: 'string', help: 'overload phase', default: '10s' },
  baseline: { kind: 'string', help: 'baseline phase', default: '3s' },
  recovery: { kind: 'string', help: 'recovery phase', default: '12s' },
  capacity: { kind: 'string', help: 'capacity measurement', default: '3s' },
  factor: { kind: 'string', help: 'offered load × capacity', default: '2' },
  low: { kind: 'string', help: 'baseline and recovery rate × capacity', default: '0.2' },
  'max-connections': { kind: 'string', help: "the generator's connection cap", default: '512' },
  workers: { kind: 'string', help: 'workers per sidecar', default: '1' },
  'web-flag': { kind: 'list', help: 'extra flag for web as FLAG=VALUE' },
  'api-flag': { kind: 'list', help: 'extra flag for the api sidecar as FLAG=VALUE' },
  json: { kind: 'string', help: 'write the report to FILE' },
};

const f = parseFlags(process.argv.slice(2), FLAGS);
const dur = (k: string): number => parseDuration(f.strings.get(k) ?? '', k);
const split = (list: readonly string[] | undefined): string[] | undefined =>
  list?.flatMap((kv) => {
    const eq = kv.indexOf('=');
    return eq < 0 ? [`-${kv.replace(/^-+/, '')}`] : [`-${kv.slice(0, eq).replace(/^-+/, '')}`, kv.slice(eq + 1)];
  });
const log = (line: string): void => void process.stderr.write(`${new Date().toISOString()} ${line}\n`);

const before = loadavg().map((x) => x.toFixed(2)).join(' ');
const report = await runOverloadScenario({
  ...DEFAULT_OVERLOAD,
  capacityMs: dur('capacity'),
  baselineMs: dur('baseline'),
  overloadMs: dur('overload'),
  recoveryMs: dur('recovery'),
  factor: Number(f.strings.get('factor')),
  lowFraction: Number(f.strings.get('low')),
  maxConnections: Number(f.strings.get('max-connections')),
  workers: Number(f.strings.get('workers')),
  webFlags: split(f.lists.get('web-flag')) ?? DEFAULT_OVERLOAD.webFlags,
  apiFlags: split(f.lists.get('api-flag')) ?? DEFAULT_OVERLOAD.apiFlags,
  log,
});
const ms = (us: number): string => `${(us / 1000).toFixed(1)} ms`;
const o = report.overload;
process.stdout.write(`${formatWindows(report.windows)}\n\n`);
process.stdout.write(
  [
    `load average at start: ${before}`,
    `capacity: ${report.capacityRps} req/s (closed loop p99 ${ms(report.capacityP99Us)})`,
    `baseline: ${report.lowRps} req/s, p99 ${ms(report.baselineP99Us)}`,
    `overload: ${report.offeredRps} req/s offered for ${dur('overload') / 1000} s: ${o.ok} 2xx, ${o.shed} shed (503/429), ${o.other} other, ${o.errors} errors; worst window p50 ${ms(o.p50Us)}, p99 ${ms(o.p99Us)} (2xx ${ms(o.okP99Us)}, shed ${ms(o.shedP99Us)}), last window p99 ${ms(o.lastWindowP99Us)}; generator connections ≤ ${o.maxConnections}, queued ≤ ${o.maxQueued}`,
    `web answered ${report.webOverflow} × 503 overflow itself, refused ${report.webConnectionRefusals} connections at accept`,
    `recovery: p99 within ${ms(report.recoveryBoundUs)} (1.5 × baseline + 5 ms, two seconds in a row) ${report.recoveryMs < 0 ? 'never' : `after ${(report.recoveryMs / 1000).toFixed(0)} s`}`,
    `peak RSS: web ${report.peakRssMb.web} MB, api sidecar ${report.peakRssMb.api} MB`,
  ].join('\n') + '\n',
);
const out = f.strings.get('json');
if (out !== undefined) writeFileSync(out, JSON.stringify(report, null, 2));
