// Prometheus text exposition (format 0.0.4) of the summed worker counters.
// Runs on: the control thread, on scrape. All label strings are fixed at module load, so
// nothing here depends on traffic content (no peer addresses, no paths).

import { FAMILIES, SLOTS, BLOCK_SLOTS, S } from './counters.ts';

export interface Gauge {
  readonly name: string;
  readonly help: string;
  readonly type: 'gauge' | 'counter';
  readonly samples: readonly { readonly labels: Readonly<Record<string, string>>; readonly value: number }[];
}

/** `{k="v",…}` with the text format's escapes; '' for no labels. */
export function labelText(labels: Readonly<Record<string, string>>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${v.replaceAll('\\', '\\\\').replaceAll('"', '\\"').replaceAll('\n', '\\n')}"`);
  return parts.length === 0 ? '' : `{${parts.join(',')}}`;
}

/** Sums every worker block slot by slot. */
export function sumBlocks(blocks: readonly Float64Array[]): Float64Array {
  const total = new Float64Array(BLOCK_SLOTS);
  for (const b of blocks) for (let i = 0; i < BLOCK_SLOTS; i++) total[i] = (total[i] as number) + (b[i] as number);
  return total;
}

export function renderPrometheus(blocks: readonly Float64Array[], extraLabels: Readonly<Record<string, string>>, gauges: readonly Gauge[] = []): string {
  const total = sumBlocks(blocks);
  const out: string[] = [];
  for (const [key, fam] of Object.entries(FAMILIES)) {
    out.push(`# HELP ${fam.name} ${fam.help}`, `# TYPE ${fam.name} ${fam.type}`);
    SLOTS.forEach((s, i) => {
      if (s.family === key) out.push(`${fam.name}${labelText({ ...extraLabels, ...s.labels })} ${total[i] as number}`);
    });
  }
  out.push('# HELP meshd_connections_active Connections currently open, by direction.', '# TYPE meshd_connections_active gauge');
  out.push(`meshd_connections_active${labelText({ ...extraLabels, direction: 'inbound' })} ${(total[S.ACCEPTED_IN] as number) - (total[S.CLOSED_IN] as number)}`);
  out.push(`meshd_connections_active${labelText({ ...extraLabels, direction: 'outbound' })} ${(total[S.ACCEPTED_OUT] as number) - (total[S.CLOSED_OUT] as number)}`);
  out.push('# HELP meshd_worker_connections_accepted_total Connections accepted per data-plane worker (shows the kernel spreading them).', '# TYPE meshd_worker_connections_accepted_total counter');
  blocks.forEach((b, i) => {
    out.push(`meshd_worker_connections_accepted_total${labelText({ ...extraLabels, worker: String(i) })} ${(b[S.ACCEPTED_IN] as number) + (b[S.ACCEPTED_OUT] as number)}`);
  });
  return out.join('\n') + '\n' + renderFamilies(gauges, extraLabels);
}

/** Families computed on the control thread (the agent's, and a proxy's own gauges). */
export function renderFamilies(families: readonly Gauge[], extraLabels: Readonly<Record<string, string>> = {}): string {
  const out: string[] = [];
  for (const g of families) {
    out.push(`# HELP ${g.name} ${g.help}`, `# TYPE ${g.name} ${g.type}`);
    for (const s of g.samples) out.push(`${g.name}${labelText({ ...extraLabels, ...s.labels })} ${s.value}`);
  }
  return out.length === 0 ? '' : out.join('\n') + '\n';
}
