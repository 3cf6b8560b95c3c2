// CSR admission control, as Consul's CA config describes it (§1.8, §1.11): a token bucket
// of `CSRMaxPerSecond`, or, when that is 0, a concurrency cap of `CSRMaxConcurrent`; both 0
// means unlimited. Consul queues a refused CSR for up to 500 ms and then fails it; meshd
// answers at once with 429 and a Retry-After, so a proxy's retry is scheduled by the agent
// instead of by a blocked connection. Pure apart from the injected clock.

export type Admission = { readonly ok: true; readonly release: () => void } | { readonly ok: false; readonly retryAfterMs: number };

export class CsrLimiter {
  readonly #now: () => number;
  #rate = 0;
  #burst = 0;
  #maxConcurrent = 0;
  #tokens = 0;
  #last = 0;
  #inFlight = 0;

  constructor(now: () => number, perSecond: number, maxConcurrent: number) {
    this.#now = now;
    this.configure(perSecond, maxConcurrent);
  }

  /**
   * Burst: one second's worth of tokens (at least 1), so a fleet renewing after a root
   * rotation drains at the configured rate instead of failing in lockstep.
   */
  configure(perSecond: number, maxConcurrent: number): void {
    this.#rate = perSecond;
    this.#burst = Math.max(1, Math.ceil(perSecond));
    this.#maxConcurrent = maxConcurrent;
    this.#tokens = this.#burst;
    this.#last = this.#now();
  }

  admit(): Admission {
    if (this.#rate > 0) {
      const now = this.#now();
      this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.#rate);
      this.#last = now;
      if (this.#tokens < 1) return { ok: false, retryAfterMs: Math.ceil(((1 - this.#tokens) / this.#rate) * 1000) };
      this.#tokens -= 1;
      return { ok: true, release: noop };
    }
    if (this.#maxConcurrent > 0) {
      if (this.#inFlight >= this.#maxConcurrent) return { ok: false, retryAfterMs: 1000 };
      this.#inFlight++;
      let released = false;
      return {
        ok: true,
        release: () => {
          if (!released) {
            released = true;
            this.#inFlight--;
          }
        },
      };
    }
    return { ok: true, release: noop };
  }
}

function noop(): void {}
