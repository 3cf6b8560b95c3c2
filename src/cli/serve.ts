// What the serving commands share: the data-plane flags of `connect proxy` and `connect
// gateway` (-drain-timeout, -worker-memory-limit) and the signals of every serving command
// (`agent`, `connect proxy`, `connect gateway`):
// - SIGINT / SIGTERM: graceful stop. The first resolves until(); a second one exits at once
//   (130 / 143), for an operator who does not want to wait for a drain.
// - SIGHUP: reload, whenever it arrives while the command serves. Before the command is ready,
//   and once it is stopping, SIGHUP is logged and ignored instead of killing the process
//   (Node's default action for SIGHUP), so a reload sent too early never takes a proxy down.

import { parseDuration } from '../control/decode.ts';
import type { ReloadReport } from '../control/agent-session.ts';
import { UsageError, type FlagSpecs, type ParsedFlags } from './flags.ts';

export const DATA_PLANE_SERVE_FLAGS: FlagSpecs = {
  'drain-timeout': {
    kind: 'string',
    help: 'On SIGTERM or SIGINT: deregister, stop accepting, and let requests in flight and open tcp connections finish for up to this long before closing what is left (0: close at once)',
    placeholder: 'DURATION',
    default: '10s',
  },
  'worker-memory-limit': {
    kind: 'string',
    help: 'V8 heap limit (old generation) of each data-plane worker thread, in MB: a worker that exceeds it dies alone and is replaced, instead of the process growing until it is killed',
    placeholder: 'MB',
    default: '512',
  },
};

/** Below this a worker cannot hold its TLS contexts, tables and WebAssembly instances. */
export const MIN_WORKER_MEMORY_LIMIT_MB = 32;
const MAX_WORKER_MEMORY_LIMIT_MB = 1 << 20;

export interface DataPlaneServeOptions {
  readonly drainTimeoutMs: number;
  readonly workerMemoryLimitMb: number;
}

export function parseDataPlaneServeFlags(f: ParsedFlags): DataPlaneServeOptions {
  const drainRaw = f.strings.get('drain-timeout') ?? '10s';
  let drainTimeoutMs: number;
  try {
    drainTimeoutMs = parseDuration(drainRaw, 'drain-timeout');
  } catch {
    throw new UsageError(`-drain-timeout must be a duration such as 10s or 500ms (0 to close at once), got ${JSON.stringify(drainRaw)}`);
  }
  if (drainTimeoutMs > 3_600_000) throw new UsageError(`-drain-timeout must be at most 1h, got ${JSON.stringify(drainRaw)}`);
  const memRaw = f.strings.get('worker-memory-limit') ?? '512';
  const mb = /^[0-9]{1,7}$/.test(memRaw) ? Number(memRaw) : NaN;
  if (!(mb >= MIN_WORKER_MEMORY_LIMIT_MB && mb <= MAX_WORKER_MEMORY_LIMIT_MB)) {
    throw new UsageError(`-worker-memory-limit must be a whole number of MB from ${MIN_WORKER_MEMORY_LIMIT_MB} to ${MAX_WORKER_MEMORY_LIMIT_MB}, got ${JSON.stringify(memRaw)}`);
  }
  return { drainTimeoutMs: Math.round(drainTimeoutMs), workerMemoryLimitMb: mb };
}

/** The log line of a proxy's or gateway's reload. */
export function describeReload(who: string, r: ReloadReport): string {
  const watches = r.failedWatches === 0 ? `re-read all ${r.watches} watches from the agent` : `re-read ${r.watches - r.failedWatches} of ${r.watches} watches (the others retry with backoff)`;
  const leaf = r.leaf ? 'issued a new leaf certificate' : 'could not renew the leaf (the current one keeps serving; retrying)';
  const registered = r.registered ? '' : '; registering again failed';
  return `[${r.failedWatches === 0 && r.leaf && r.registered ? 'INFO' : 'WARN'}] ${who}: reloaded: ${watches}, ${leaf}${registered}; listeners and open connections untouched`;
}

export interface ServeSignals {
  /** What SIGHUP does from now on (null: log and ignore). */
  onReload(fn: (() => void) | null): void;
  /** Resolves on the first SIGINT or SIGTERM; SIGHUP is ignored from then on. */
  until(): Promise<NodeJS.Signals>;
}

/** Takes over SIGHUP at once (call it before starting); `who` prefixes the log lines. */
export function serveSignals(who: string, log: (line: string) => void): ServeSignals {
  let reload: (() => void) | null = null;
  let stopping = false;
  process.on('SIGHUP', () => {
    if (reload === null || stopping) {
      log(`[WARN] ${who}: SIGHUP ignored: ${stopping ? 'shutting down' : 'not ready yet'}`);
      return;
    }
    log(`[INFO] ${who}: caught SIGHUP, reloading`);
    reload();
  });
  return {
    onReload: (fn) => {
      reload = fn;
    },
    until: () =>
      new Promise((resolve) => {
        const handler = (sig: NodeJS.Signals): void => {
          stopping = true;
          process.once('SIGINT', () => process.exit(130));
          process.once('SIGTERM', () => process.exit(143));
          resolve(sig);
        };
        process.once('SIGINT', handler);
        process.once('SIGTERM', handler);
      }),
  };
}
