// Starting real meshd processes (the CLI, on this same Node runtime) and waiting for their
// "ready" line. Used by the demo (`npm start`) and by the end-to-end tests.

import { spawn, type ChildProcess } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';

export const CLI = fileURLToPath(new URL('../cli/main.ts', import.meta.url));

export interface MeshdProcess {
  readonly child: ChildProcess;
  /** key=value pairs of the ready line, e.g. `http`, `inbound`, `upstream.api`, `metrics`. */
  readonly fields: Readonly<Record<string, string>>;
  /** Everything the process wrote to stderr so far (for test failure messages). */
  stderr(): string;
  /** SIGINT, then waits for exit (SIGKILL after `graceMs`); resolves with the exit code. */
  stop(graceMs?: number): Promise<number | null>;
}

export interface StartOptions {
  readonly env?: NodeJS.ProcessEnv;
  readonly timeoutMs?: number;
  /** Forward the child's stderr to ours (the demo does; tests keep it). */
  readonly inheritStderr?: boolean;
}

export function startMeshd(args: readonly string[], opts: StartOptions = {}): Promise<MeshdProcess> {
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...opts.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let err = '';
  let out = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    err += d;
    if (opts.inheritStderr === true) process.stderr.write(d);
  });
  child.stdout.setEncoding('utf8');
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const stop = async (graceMs = 5000): Promise<number | null> => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
    child.kill('SIGINT');
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    const code = await exited;
    clearTimeout(t);
    return code;
  };
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`meshd ${args.join(' ')} not ready within ${opts.timeoutMs ?? 20000} ms\nstdout: ${out}\nstderr: ${err}`));
    }, opts.timeoutMs ?? 20_000);
    child.stdout.on('data', (d: string) => {
      out += d;
      const line = out.split('\n').find((l) => / ready: /.test(l));
      if (line === undefined) return;
      clearTimeout(timer);
      const fields: Record<string, string> = {};
      for (const m of line.matchAll(/(\S+)=(\S+)/g)) fields[m[1] as string] = m[2] as string;
      resolve({ child, fields, stderr: () => err, stop });
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`meshd ${args.join(' ')} exited with code ${String(code)} before it was ready\nstderr: ${err}`));
    });
  });
}

/** A port that was free a moment ago (for fixed-port listeners in tests and the demo). */
export async function freePort(host = '127.0.0.1'): Promise<number> {
  const s = createServer();
  await new Promise<void>((resolve) => s.listen({ host, port: 0 }, resolve));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((resolve) => s.close(() => resolve()));
  return port;
}
