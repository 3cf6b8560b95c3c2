// Virtual hosts of an ingress gateway's http listener: which domains each exposed service
// answers (Consul's generateUpstreamIngressDomains, agent/xds/routes.go), and the Host-header
// match Envoy performs over them (route_config virtual_hosts.domains).
//
// Domains: the service's explicit Hosts, else `<service>.ingress.*`; every domain without a
// port is also added with `:<listener port>` (a Host header carries the port when it is not
// the scheme's default). A `*`-suffixed domain already matches any port, so it gets no copy.
//
// Matching (Envoy): case-insensitive; an exact domain first, then the longest suffix wildcard
// (`*.example.com`), then the longest prefix wildcard (`web.ingress.*`), then `*`; a wildcard
// never matches the empty string. Equal domains: the first service given wins (Consul refuses
// duplicate Hosts within a listener; defaults cannot collide).
// Runs on: the gateway's control thread (domains) and its data-plane workers (matching, once
// per request: one Map lookup, then a scan of the wildcards, of which there are few).

/** Consul's default virtual host of an exposed service (default namespace). */
export function defaultIngressHost(service: string): string {
  return `${service}.ingress.*`;
}

function hasPort(domain: string): boolean {
  return /:[0-9]+$/.test(domain);
}

/** The domains `service` answers on a listener bound to `port`, lower-case, without duplicates. */
export function ingressDomains(service: string, hosts: readonly string[], port: number): string[] {
  const base = (hosts.length > 0 ? hosts : [defaultIngressHost(service)]).map((h) => h.toLowerCase());
  const out = new Set(base);
  for (const h of base) {
    if (h === '*' || h.endsWith('*') || hasPort(h)) continue;
    out.add(`${h}:${port}`);
  }
  return [...out];
}

interface Wildcard<T> {
  readonly affix: string;
  readonly value: T;
}

/** Envoy's virtual-host selection over a fixed set of domains. */
export class HostTable<T> {
  readonly #exact = new Map<string, T>();
  /** `*.example.com` as `.example.com`, longest first. */
  readonly #suffixes: Wildcard<T>[] = [];
  /** `web.ingress.*` as `web.ingress.`, longest first. */
  readonly #prefixes: Wildcard<T>[] = [];
  #any: T | undefined;

  constructor(entries: Iterable<{ readonly domains: readonly string[]; readonly value: T }>) {
    for (const { domains, value } of entries) {
      for (const raw of domains) {
        const d = raw.toLowerCase();
        if (d === '*') this.#any ??= value;
        else if (d.startsWith('*')) this.#suffixes.push({ affix: d.slice(1), value });
        else if (d.endsWith('*')) this.#prefixes.push({ affix: d.slice(0, -1), value });
        else if (!this.#exact.has(d)) this.#exact.set(d, value);
      }
    }
    // Stable sorts: among equal lengths the first given stays first.
    this.#suffixes.sort((a, b) => b.affix.length - a.affix.length);
    this.#prefixes.sort((a, b) => b.affix.length - a.affix.length);
  }

  /** The value whose domain matches a Host header, or undefined (Envoy answers 404). */
  match(host: string): T | undefined {
    const h = host.toLowerCase();
    const exact = this.#exact.get(h);
    if (exact !== undefined) return exact;
    for (const s of this.#suffixes) if (h.length > s.affix.length && h.endsWith(s.affix)) return s.value;
    for (const p of this.#prefixes) if (h.length > p.affix.length && h.startsWith(p.affix)) return p.value;
    return this.#any;
  }
}
