// Weighted choice among a route's splits (a service-splitter, flattened by the chain compiler),
// once per HTTP request. Weights are integer basis points that sum to 10000; a pick draws a
// uniform integer r in [0, 10000) and returns the split whose cumulative range holds r, so split
// i is chosen for exactly weightBp[i] of the 10000 values of r and a zero-weight split never is.
//
// Health (a meshd choice; Consul does not do this). Consul's splitters ignore health: a split to a
// subset with no healthy instance still gets its share, and those requests fail with 503
// (hashicorp/consul#10857). A SplitPicker behaves the same until the caller marks a split
// unhealthy (setHealthy / withHealthy: its target has no healthy instance, failover included).
// Then:
//   - each unhealthy split's weight becomes 0;
//   - the healthy splits share the 10000 bp in proportion to their configured weights, with
//     integer apportionment by largest remainder (ties to the earlier split), so the effective
//     weights still sum to exactly 10000;
//   - a healthy split with weight 0 stays at 0 (it was configured never to be chosen);
//   - if no healthy split has a positive weight (all unhealthy), the configured weights apply
//     unchanged: the request then fails as it would in Consul.
//
// Configured weights that do not sum to 10000 (the compiler should not produce them) are
// apportioned to 10000 the same way; if they are all 0, the first split takes everything.

import type { ChainSplit } from '../chain/types.ts';

export const TOTAL_BP = 10000;

/** Above this many splits a pick is a binary search instead of a scan. */
const LINEAR_MAX = 8;

export interface SplitPickerOptions {
  /** Uniform in [0, 1), used when pick() is given no r; Math.random by default. */
  readonly random?: () => number;
}

export class SplitPicker {
  readonly splits: readonly ChainSplit[];
  private readonly configured: Int32Array;
  private readonly healthy: Uint8Array;
  /** cum[i] = sum of effective weights 0..i; split i owns [cum[i-1], cum[i]). */
  private readonly cum: Int32Array;
  private readonly random: () => number;
  private last = 0;

  constructor(splits: readonly ChainSplit[], opts?: SplitPickerOptions) {
    if (splits.length === 0) throw new RangeError('SplitPicker needs at least one split');
    this.splits = splits.slice();
    const n = splits.length;
    this.configured = new Int32Array(n);
    for (let i = 0; i < n; i++) {
      const w = (splits[i] as ChainSplit).weightBp;
      this.configured[i] = Number.isFinite(w) && w > 0 ? Math.round(w) : 0;
    }
    this.healthy = new Uint8Array(n).fill(1);
    this.cum = new Int32Array(n);
    this.random = opts?.random ?? Math.random;
    this.rebuild();
  }

  get size(): number {
    return this.cum.length;
  }

  /**
   * Index of the chosen split. `r` is an integer in [0, 10000); by default a uniform draw.
   * Values of r outside that range are clamped.
   */
  pick(r: number = Math.floor(this.random() * TOTAL_BP)): number {
    const cum = this.cum;
    const n = cum.length;
    if (!(r >= 0)) return this.firstPositive();
    if (r >= TOTAL_BP) return this.last;
    if (n <= LINEAR_MAX) {
      for (let i = 0; i < n; i++) if (r < (cum[i] as number)) return i;
      return this.last;
    }
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((cum[mid] as number) > r) hi = mid;
      else lo = mid + 1;
    }
    return lo;
  }

  /** The split's effective weight in basis points (after health redistribution). */
  weightBp(index: number): number {
    const c = this.cum[index];
    if (c === undefined) return 0;
    return index === 0 ? c : c - (this.cum[index - 1] as number);
  }

  isHealthy(index: number): boolean {
    return this.healthy[index] === 1;
  }

  /** Marks one split's target healthy or not; rebuilds the table when that changes anything. */
  setHealthy(index: number, healthy: boolean): void {
    if (index < 0 || index >= this.healthy.length) throw new RangeError(`no split ${index}`);
    const v = healthy ? 1 : 0;
    if (this.healthy[index] === v) return;
    this.healthy[index] = v;
    this.rebuild();
  }

  /** Re-evaluates every split's target at once (one rebuild). Returns this. */
  withHealthy(healthy: (targetId: string) => boolean): this {
    let changed = false;
    for (let i = 0; i < this.splits.length; i++) {
      const v = healthy((this.splits[i] as ChainSplit).targetId) ? 1 : 0;
      if (this.healthy[i] !== v) {
        this.healthy[i] = v;
        changed = true;
      }
    }
    if (changed) this.rebuild();
    return this;
  }

  private firstPositive(): number {
    for (let i = 0; i < this.cum.length; i++) if (this.weightBp(i) > 0) return i;
    return 0;
  }

  private rebuild(): void {
    const n = this.configured.length;
    const w = new Float64Array(n);
    let healthySum = 0;
    for (let i = 0; i < n; i++) if (this.healthy[i] === 1) healthySum += this.configured[i] as number;
    for (let i = 0; i < n; i++) {
      w[i] = healthySum > 0 ? (this.healthy[i] === 1 ? (this.configured[i] as number) : 0) : (this.configured[i] as number);
    }
    const eff = apportion(w, TOTAL_BP);
    let acc = 0;
    for (let i = 0; i < n; i++) {
      acc += eff[i] as number;
      this.cum[i] = acc;
      if ((eff[i] as number) > 0) this.last = i;
    }
  }
}

/**
 * Integer shares of `total` proportional to `weights` (largest remainder; ties to the lower
 * index); they sum to exactly `total`. All-zero weights give everything to index 0.
 */
export function apportion(weights: ArrayLike<number>, total: number): Int32Array {
  const n = weights.length;
  const out = new Int32Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += weights[i] as number;
  if (n === 0) return out;
  if (sum <= 0) {
    out[0] = total;
    return out;
  }
  const rem = new Float64Array(n);
  let given = 0;
  for (let i = 0; i < n; i++) {
    const exact = ((weights[i] as number) * total) / sum;
    const f = Math.floor(exact);
    out[i] = f;
    rem[i] = exact - f;
    given += f;
  }
  for (let left = total - given; left > 0; left--) {
    let best = -1;
    for (let i = 0; i < n; i++) {
      if ((weights[i] as number) > 0 && (best < 0 || (rem[i] as number) > (rem[best] as number))) best = i;
    }
    if (best < 0) break;
    out[best] = (out[best] as number) + 1;
    rem[best] = -1;
  }
  return out;
}
