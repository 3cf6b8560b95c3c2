// Load shedding by event-loop delay: the admission signal a request limit cannot see.
// Runs on: each data-plane worker (one LoadPressure per worker, shared by its listeners).
//
// -max-concurrent-requests bounds what a worker holds, but a worker saturated by more
// connections than it can serve never reaches that limit: requests wait in socket buffers,
// unparsed, and each one parsed late is a late answer (docs/BENCHMARKS.md, "Overload"). The one
// signal that sees that queue is the worker's own event-loop delay: how late a timer fires is how
// long everything else waits. fastify's under-pressure and Envoy's overload manager shed on
// signals of this kind; meshd samples the delay with perf_hooks.monitorEventLoopDelay (a libuv
// timer, no JavaScript per sample) and, every `windowMs`, compares the window's p90 with
// -max-event-loop-delay. Over it, the worker is under pressure until a window's p90 falls below
// half of it (hysteresis, so a busy worker does not flap); meanwhile its HTTP listeners answer new
// requests with 503 `overflow` at once (cheaper than serving them, and the caller can go
// elsewhere) and its listeners close new connections at accept. Requests already admitted finish.

import { monitorEventLoopDelay } from 'node:perf_hooks';

/** How often the delay is judged; short enough to react within a few hundred ms. */
export const PRESSURE_WINDOW_MS = 100;
/** Delay sampling resolution (Node's default). */
const RESOLUTION_MS = 10;

export class LoadPressure {
  readonly #maxDelayMs: number;
  #under = false;
  #windows = 0;
  #h: ReturnType<typeof monitorEventLoopDelay> | null = null;
  #timer: NodeJS.Timeout | null = null;

  /** `maxDelayMs` 0 disables it: never under pressure. */
  constructor(maxDelayMs: number) {
    this.#maxDelayMs = maxDelayMs;
  }

  /** True while the worker sheds new work. One property read per request. */
  get underPressure(): boolean {
    return this.#under;
  }

  /** Windows spent under pressure since start (for the worker's counters). */
  get windows(): number {
    return this.#windows;
  }

  /** Judges one window's p90 delay (ms): entering above the limit, leaving below half of it. */
  judge(p90Ms: number): boolean {
    if (this.#maxDelayMs <= 0) return false;
    if (this.#under) this.#under = p90Ms >= this.#maxDelayMs / 2;
    else this.#under = p90Ms > this.#maxDelayMs;
    if (this.#under) this.#windows++;
    return this.#under;
  }

  start(windowMs = PRESSURE_WINDOW_MS): void {
    if (this.#maxDelayMs <= 0 || this.#h !== null) return;
    const h = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    h.enable();
    this.#h = h;
    let last = performance.now();
    this.#timer = setInterval(() => {
      // The timer itself firing late is a sample too: a loop stuck for the whole window has
      // few histogram samples, but this one shows how stuck it was.
      const now = performance.now();
      const late = Math.max(0, now - last - windowMs);
      last = now;
      const p90 = h.count > 0 ? h.percentile(90) / 1e6 : 0;
      h.reset();
      this.judge(Math.max(p90, late));
    }, windowMs);
    this.#timer.unref();
  }

  stop(): void {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#h?.disable();
    this.#timer = null;
    this.#h = null;
    this.#under = false;
  }
}

/** A pressure that never sheds (unit tests, listeners built without limits). */
export const NO_PRESSURE = new LoadPressure(0);
