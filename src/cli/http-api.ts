// The flags every command that calls the agent API takes, as Consul's "HTTP API options":
// `-http-addr` (MESHD_HTTP_ADDR), `-token` (MESHD_HTTP_TOKEN) and `-token-file`
// (MESHD_HTTP_TOKEN_FILE), Consul's CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN and
// CONSUL_HTTP_TOKEN_FILE. The token goes to the agent as X-Consul-Token.
//
// Which token: a flag beats the environment; `-token` and `-token-file` together are a usage
// error; between the two variables MESHD_HTTP_TOKEN wins. No token at all is fine for a -dev
// agent; any other agent answers 403 and says how to send one.

import { readTokenFile } from '../control/acl.ts';
import { AgentClient } from '../control/client.ts';
import { parseHttpAddr, UsageError, type FlagSpecs, type ParsedFlags } from './flags.ts';

export const HTTP_API_FLAGS: FlagSpecs = {
  'http-addr': { kind: 'string', help: 'Address of the meshd agent API', placeholder: 'HOST:PORT', default: '127.0.0.1:8500', env: 'MESHD_HTTP_ADDR' },
  // No `env` here: the variables are read by apiToken, after the flags (a flag always wins).
  token: { kind: 'string', help: 'ACL token sent as X-Consul-Token (env: MESHD_HTTP_TOKEN)', placeholder: 'TOKEN' },
  'token-file': { kind: 'string', help: 'File holding the ACL token, e.g. DATA_DIR/acl-management-token (env: MESHD_HTTP_TOKEN_FILE)', placeholder: 'FILE' },
};

/** A token file named by -token-file or MESHD_HTTP_TOKEN_FILE that cannot be used (exit 1). */
export class TokenFileError extends Error {
  override readonly name = 'TokenFileError';
}

function fromFile(path: string, via: string): string {
  try {
    return readTokenFile(path);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new TokenFileError(`${via} ${path}: ${err.code === 'ENOENT' ? 'no such file' : err.code === 'EACCES' ? 'permission denied' : err.message}`);
  }
}

/** The token a command sends, or null for none. */
export function apiToken(f: ParsedFlags, env: NodeJS.ProcessEnv = process.env): string | null {
  const token = f.strings.get('token');
  const file = f.strings.get('token-file');
  if (token !== undefined && file !== undefined) throw new UsageError('give -token or -token-file, not both');
  if (token !== undefined) {
    if (token.trim() === '') throw new UsageError('-token is empty');
    return token.trim();
  }
  if (file !== undefined) return fromFile(file, '-token-file');
  const envToken = env.MESHD_HTTP_TOKEN?.trim();
  if (envToken !== undefined && envToken !== '') return envToken;
  const envFile = env.MESHD_HTTP_TOKEN_FILE;
  if (envFile !== undefined && envFile !== '') return fromFile(envFile, 'MESHD_HTTP_TOKEN_FILE');
  return null;
}

/** The agent client of a command, from its HTTP API flags and the environment. */
export function apiClient(f: ParsedFlags, env: NodeJS.ProcessEnv = process.env): AgentClient {
  return new AgentClient(parseHttpAddr(f.strings.get('http-addr') ?? '127.0.0.1:8500'), apiToken(f, env));
}
