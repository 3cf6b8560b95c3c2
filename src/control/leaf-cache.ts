// `GET /v1/agent/connect/ca/leaf/:service` for Consul-style consumers: the agent generates
// the key, signs, caches, and answers blocking queries until a new certificate is needed
// (renewal point reached, or the active root changed), as Consul's agent cache does (§1.10).
// meshd's own proxies do not use it: they send CSRs so their keys never travel.
// Runs on: the agent's control thread (signing in the pool).

import { createLeafCsr, type IssuedCert } from '../ca/authority.ts';
import { serviceSpiffeId } from '../ca/spiffe.ts';
import type { CaState } from './ca-state.ts';
import { CA_TABLE } from './ca-state.ts';
import type { Store } from './store.ts';
import { renewalDelayMs } from './renewal.ts';

export type LeafWithKey = IssuedCert & { readonly PrivateKeyPEM: string; readonly CreateIndex: number; readonly ModifyIndex: number };

interface Cached {
  readonly cert: LeafWithKey;
  /** The certificate that signed it (root, or a secondary's intermediate): CaState.signingCertId. */
  readonly rootId: string;
  readonly renewAt: number;
}

export class LeafCache {
  readonly #ca: CaState;
  readonly #store: Store;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #datacenter: string;
  readonly #cache = new Map<string, Cached>();
  readonly #pending = new Map<string, Promise<Cached>>();
  #index = 0;

  constructor(ca: CaState, store: Store, opts: { datacenter: string; now: () => number; random?: () => number }) {
    this.#ca = ca;
    this.#store = store;
    this.#now = opts.now;
    this.#random = opts.random ?? Math.random;
    this.#datacenter = opts.datacenter;
  }

  /** Returns the current leaf; with `sinceIndex`, blocks until a newer one exists or `waitMs` passes. */
  async get(service: string, sinceIndex: number | null, waitMs: number, signal: AbortSignal): Promise<LeafWithKey> {
    let c = await this.#current(service);
    if (sinceIndex === null || c.cert.ModifyIndex > sinceIndex) return c.cert;
    const deadline = this.#now() + waitMs;
    while (!signal.aborted && this.#now() < deadline) {
      const until = Math.min(deadline, c.renewAt) - this.#now();
      await this.#store.waitForChange([CA_TABLE], this.#store.tableIndex(CA_TABLE), Math.max(0, until), signal);
      c = await this.#current(service);
      if (c.cert.ModifyIndex > sinceIndex) break;
    }
    return c.cert;
  }

  #current(service: string): Promise<Cached> {
    const c = this.#cache.get(service);
    if (c !== undefined && c.rootId === this.#ca.signingCertId && this.#now() < c.renewAt) return Promise.resolve(c);
    let p = this.#pending.get(service);
    if (p === undefined) {
      p = this.#issue(service).finally(() => this.#pending.delete(service));
      this.#pending.set(service, p);
    }
    return p;
  }

  async #issue(service: string): Promise<Cached> {
    // Read before signing: a leaf signed while the signer changes is re-issued on next read.
    const signedWith = this.#ca.signingCertId;
    const uri = serviceSpiffeId(this.#ca.trustDomain, 'default', this.#datacenter, service);
    const { csrPem, keyPem } = await createLeafCsr(uri);
    const issued = await this.#ca.sign(csrPem, [service]);
    const index = ++this.#index;
    const cert: LeafWithKey = { ...issued, PrivateKeyPEM: keyPem, CreateIndex: index, ModifyIndex: index };
    const renewIn = renewalDelayMs(Date.parse(issued.ValidAfter), Date.parse(issued.ValidBefore), this.#now(), this.#random());
    const cached: Cached = { cert, rootId: signedWith, renewAt: this.#now() + renewIn };
    this.#cache.set(service, cached);
    return cached;
  }
}
