// A small fault-injecting TCP proxy for the fault tests (`tc netem` is not available here).
// It forwards bytes between its clients and one target, and misbehaves on command:
//
//   pass                 forward both ways, untouched
//   slow                 forward requests at once; hold every chunk of the answer `delayMs`
//                        (in order), so the first byte of a response arrives late
//   reset-after-headers  forward the request, then the answer up to the end of its HTTP head
//                        (plus `bodyBytes` of body), then reset the client connection (RST)
//   blackhole            accept, read and drop everything, never answer, never close
//   reset                accept, then reset at once (the TCP connect succeeds; nothing else does)
//   refuse               nothing listens on the port (connects get ECONNREFUSED)
//
// Changing the mode closes every open connection (as a restarted app would), so that no
// connection kept alive by a pool carries the old behaviour into the next test; a pool may also
// reconnect ahead of its next request. Counters say how many connections were accepted and how
// many are open (a leak shows as connections that never close).

import * as net from 'node:net';
import type { AddressInfo } from 'node:net';

export type FaultMode = 'pass' | 'slow' | 'reset-after-headers' | 'blackhole' | 'reset' | 'refuse';

export interface FaultOptions {
  /** slow: delay of every answer chunk (ms). */
  readonly delayMs?: number;
  /** reset-after-headers: body bytes forwarded after the head before the reset. */
  readonly bodyBytes?: number;
}

export interface FaultProxy {
  readonly port: number;
  readonly mode: FaultMode;
  /** Changes the mode (and its options); open connections are closed first. */
  set(mode: FaultMode, opts?: FaultOptions): Promise<void>;
  /** Connections accepted since start. */
  accepted(): number;
  /** Client connections open now. */
  open(): number;
  /** Closes the listener and every connection. */
  close(): Promise<void>;
}

const HEAD_END = Buffer.from('\r\n\r\n');

export async function startFaultProxy(target: { readonly host: string; readonly port: number }, mode: FaultMode = 'pass', opts: FaultOptions = {}): Promise<FaultProxy> {
  let current: FaultMode = mode;
  let options: FaultOptions = opts;
  let accepted = 0;
  const clients = new Set<net.Socket>();
  const others = new Set<net.Socket>();
  let server: net.Server | null = null;
  let port = 0;

  const onClient = (client: net.Socket): void => {
    accepted++;
    clients.add(client);
    client.on('error', () => undefined);
    client.once('close', () => clients.delete(client));
    const m = current;
    const o = options;
    if (m === 'reset') {
      client.resetAndDestroy();
      return;
    }
    if (m === 'blackhole') {
      client.resume();
      return;
    }
    const upstream = net.connect({ host: target.host, port: target.port });
    others.add(upstream);
    upstream.on('error', () => undefined);
    upstream.once('close', () => {
      others.delete(upstream);
      if (!client.destroyed) client.destroy();
    });
    client.once('close', () => upstream.destroy());
    client.pipe(upstream);
    if (m === 'pass') {
      upstream.pipe(client);
      return;
    }
    if (m === 'slow') {
      const delay = o.delayMs ?? 1000;
      upstream.on('data', (chunk: Buffer) => {
        setTimeout(() => {
          if (!client.destroyed) client.write(chunk);
        }, delay);
      });
      upstream.once('end', () => setTimeout(() => client.end(), delay));
      return;
    }
    // reset-after-headers
    let seen = Buffer.alloc(0);
    const extra = o.bodyBytes ?? 0;
    upstream.on('data', (chunk: Buffer) => {
      seen = Buffer.concat([seen, chunk]);
      const end = seen.indexOf(HEAD_END);
      if (end < 0) return;
      const upTo = Math.min(seen.length, end + HEAD_END.length + extra);
      upstream.pause();
      client.write(seen.subarray(0, upTo), () => {
        // Let the bytes leave before the reset (a RST discards unsent data).
        setTimeout(() => {
          client.resetAndDestroy();
          upstream.destroy();
        }, 20);
      });
    });
  };

  const listen = (p: number): Promise<void> =>
    new Promise((resolve, reject) => {
      const s = net.createServer(onClient);
      s.once('error', reject);
      s.listen({ host: '127.0.0.1', port: p }, () => {
        s.off('error', reject);
        server = s;
        port = (s.address() as AddressInfo).port;
        resolve();
      });
    });
  const unlisten = (): Promise<void> =>
    new Promise((resolve) => {
      const s = server;
      server = null;
      if (s === null) return resolve();
      s.close(() => resolve());
    });

  if (mode !== 'refuse') await listen(0);
  else {
    await listen(0);
    await unlisten();
  }

  return {
    get port() {
      return port;
    },
    get mode() {
      return current;
    },
    async set(m: FaultMode, o: FaultOptions = {}) {
      current = m;
      options = o;
      if (m === 'refuse') await unlisten();
      else if (server === null) await listen(port);
      if (clients.size > 0) {
        for (const c of clients) c.destroy();
        // Give the peers' pools a moment to see those connections go.
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    accepted: () => accepted,
    open: () => clients.size,
    async close() {
      for (const s of [...clients, ...others]) s.destroy();
      await unlisten();
    },
  };
}
