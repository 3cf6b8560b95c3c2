// What a process holds, read from /proc (Linux): its sockets (with the TCP peer of each, to
// tell data-plane sockets from the proxy's connections to the agent), open file descriptors
// and resident memory. For leak checks and soak reports.

import { readFileSync, readdirSync, readlinkSync } from 'node:fs';

export interface TcpSocket {
  readonly localPort: number;
  readonly remotePort: number;
  /** /proc/net/tcp state: 0A listening, 01 established, 06 time-wait, ... */
  readonly state: string;
}

/** Socket inodes of a process's open file descriptors. */
export function socketInodes(pid: number): string[] {
  const out: string[] = [];
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m !== null) out.push(m[1] as string);
    } catch {
      // closed meanwhile
    }
  }
  return out;
}

/** Every TCP socket of the process's network namespace, by inode. */
export function tcpSockets(pid: number): Map<string, TcpSocket> {
  const out = new Map<string, TcpSocket>();
  for (const file of ['tcp', 'tcp6']) {
    let text: string;
    try {
      text = readFileSync(`/proc/${pid}/net/${file}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 10) continue;
      const port = (a: string): number => parseInt(a.slice(a.lastIndexOf(':') + 1), 16);
      out.set(f[9] as string, { localPort: port(f[1] as string), remotePort: port(f[2] as string), state: f[3] as string });
    }
  }
  return out;
}

/**
 * The process's sockets, less its TCP sockets with either end on one of `excludePorts` (e.g.
 * the agent's HTTP port: blocking queries come and go with the control plane, not with
 * traffic; or its own metrics port, which the test's scrapes keep alive).
 */
export function dataPlaneSockets(pid: number, excludePorts: readonly number[] = []): number {
  const tcp = tcpSockets(pid);
  let n = 0;
  for (const ino of socketInodes(pid)) {
    const t = tcp.get(ino);
    if (t !== undefined && (excludePorts.includes(t.remotePort) || excludePorts.includes(t.localPort))) continue;
    n++;
  }
  return n;
}

/** Open file descriptors of a process (0 when it is gone). */
export function fdCount(pid: number): number {
  try {
    return readdirSync(`/proc/${pid}/fd`).length;
  } catch {
    return 0;
  }
}

/** Resident set size in MB (VmRSS), and its peak (VmHWM). */
export function rssMb(pid: number): { rss: number; peak: number } {
  try {
    const s = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (k: string): number => Number(new RegExp(`${k}:\\s+(\\d+) kB`).exec(s)?.[1] ?? 0);
    return { rss: Math.round(kb('VmRSS') / 1024), peak: Math.round(kb('VmHWM') / 1024) };
  } catch {
    return { rss: 0, peak: 0 };
  }
}
