// The edge of both HTTP hops (the upstream listener an app talks to, and the public listener a
// peer sidecar talks to): one node:http server configuration and one check of the request head
// before anything routes, authorizes or forwards it. What an ambiguous message means is decided
// here, once, by refusing it: a proxy and the server behind it must never read one byte stream
// as different requests (request smuggling), so every message with two readings is a 400 and
// the connection is closed, including requests already pipelined behind it.
//
// node:http's parser (llhttp, strict mode: insecureHTTPParser off) already refuses bare LF and
// CR, obs-fold, NUL and control characters, Content-Length with Transfer-Encoding, differing
// Content-Lengths and unknown transfer codings; its refusals arrive as 'clientError' and are
// answered here with a status instead of a silent reset. The head check adds what the parser
// lets through: repeated Host, Authorization, Content-Length or Transfer-Encoding headers, a
// Content-Length that is not one decimal number, header names with `_` (Consul's
// HeadersWithUnderscoresAction = REJECT_REQUEST), and more header fields than the limit.
// Runs on: data-plane workers, once per request (a loop over rawHeaders, no allocation).

import * as http from 'node:http';
import type { Duplex } from 'node:stream';

/** Header fields a request may carry (Envoy's default max_headers_count is 100). */
export const MAX_REQUEST_HEADERS = 100;
/** Bytes of the request line and headers together (node's default; Envoy's is 60 KiB). */
export const MAX_HEADER_BYTES = 16 * 1024;
/** Time a client has to send the whole request head (slowloris); Envoy's edge advice is 10 s. */
export const HEADERS_TIMEOUT_MS = 10_000;

const POISONED = Symbol('meshd.http.poisoned');

type Marked = { [POISONED]?: true };

export interface HeadProblem {
  readonly status: 400 | 431;
  readonly detail: string;
}

/**
 * An HTTP server for one hop: strict parsing, the size and time limits above, and parser
 * errors answered (431 for an oversized head, 408 for a head too slow, else 400) with the
 * connection closed. `onParseError` counts them (the request never existed, so no request
 * metric sees them).
 */
export function guardedServer(
  keepAliveTimeout: number,
  onRequest: (req: http.IncomingMessage, res: http.ServerResponse) => void,
  onParseError: (status: number) => void,
): http.Server {
  const server = http.createServer(
    {
      keepAliveTimeout,
      // Bodies stream for as long as they need (idle timeouts bound them); only the head is timed.
      requestTimeout: 0,
      headersTimeout: HEADERS_TIMEOUT_MS,
      maxHeaderSize: MAX_HEADER_BYTES,
      insecureHTTPParser: false,
      // checkRequestHead refuses a missing Host itself, and poisons the connection; node's own
      // check answers 400 but still parses and emits a request pipelined behind it.
      requireHostHeader: false,
      joinDuplicateHeaders: false,
    },
    onRequest,
  );
  // One more than allowed, so that "too many" is visible in rawHeaders rather than truncated.
  server.maxHeadersCount = MAX_REQUEST_HEADERS + 1;
  trackConnections(server);
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    const code = err.code ?? '';
    if (code === 'ECONNRESET' || code === 'EPIPE' || !socket.writable) {
      socket.destroy();
      return;
    }
    const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400;
    onParseError(status);
    // The parser fails on a body after it has emitted the request (e.g. an unknown transfer
    // coding), or on bytes pipelined behind a request still being answered: a response is
    // then already queued or under way, and a second status line would corrupt it. Let the
    // queued bytes go out and close.
    const inFlight = (socket as { _httpMessage?: unknown })._httpMessage;
    if ((socket as Marked)[POISONED] === true || (inFlight !== undefined && inFlight !== null)) {
      (socket as Marked)[POISONED] = true;
      socket.end();
      return;
    }
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
  });
  return server;
}

// ------------------------------------------------------------------------------ drain

/** The connections handed to a guarded server, and the drains waiting for them to end. */
interface OpenConnections {
  readonly sockets: Set<Duplex>;
  readonly drained: (() => void)[];
  draining: boolean;
}

const OPEN = new WeakMap<http.Server, OpenConnections>();

/** One Set entry and one 'close' listener per connection (not per request). */
function trackConnections(server: http.Server): void {
  const open: OpenConnections = { sockets: new Set(), drained: [], draining: false };
  OPEN.set(server, open);
  server.on('connection', (socket: Duplex) => {
    open.sockets.add(socket);
    socket.once('close', () => {
      open.sockets.delete(socket);
      if (open.draining && open.sockets.size === 0) for (const done of open.drained.splice(0)) done();
    });
  });
}

/**
 * Ends a guarded server's connections gracefully (a SIGTERM drain), without cutting a request:
 * a connection with no request in progress (idle keep-alive, or a request head still arriving)
 * is closed now; a request in progress is answered with `Connection: close` and its
 * connection closed after that response (one whose headers are already out is closed when it
 * finishes); a request that still arrives (pipelined, or on a connection accepted meanwhile)
 * is treated the same. Resolves when no connection is left; the caller bounds the wait (and
 * then calls closeAllConnections()).
 */
export function drainHttp(server: http.Server): Promise<void> {
  const open = OPEN.get(server);
  if (open === undefined) throw new Error('drainHttp: not a guardedServer');
  if (!open.draining) {
    open.draining = true;
    server.prependListener('request', (_req: http.IncomingMessage, res: http.ServerResponse) => {
      res.shouldKeepAlive = false;
    });
    for (const socket of open.sockets) {
      const res = (socket as { _httpMessage?: http.ServerResponse | null })._httpMessage;
      if (res === undefined || res === null) socket.destroy();
      else if (!res.headersSent) res.shouldKeepAlive = false;
      else res.once('finish', () => socket.end());
    }
  }
  if (open.sockets.size === 0) return Promise.resolve();
  return new Promise<void>((resolve) => open.drained.push(resolve));
}

/** What is wrong with a request head that parsed, or null. */
export function checkRequestHead(raw: readonly string[]): HeadProblem | null {
  if (raw.length > 2 * MAX_REQUEST_HEADERS) return { status: 431, detail: `more than ${MAX_REQUEST_HEADERS} header fields` };
  let host = 0;
  let authorization = 0;
  let contentLength = 0;
  let transferEncoding = 0;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string;
    // Fast reject on length before lower-casing: the names checked are 4, 13, 14 and 17 long.
    const n = name.length;
    if (name.includes('_')) return { status: 400, detail: `header names with underscores are refused: ${name}` };
    if (n !== 4 && n !== 13 && n !== 14 && n !== 17) continue;
    const lower = name.toLowerCase();
    const value = raw[i + 1] as string;
    if (lower === 'host') host++;
    else if (lower === 'authorization') authorization++;
    else if (lower === 'content-length') {
      contentLength++;
      if (!/^[0-9]{1,15}$/.test(value)) return { status: 400, detail: 'Content-Length is not one decimal number' };
    } else if (lower === 'transfer-encoding') {
      transferEncoding++;
      if (value.toLowerCase() !== 'chunked') return { status: 400, detail: `unsupported Transfer-Encoding ${JSON.stringify(value)}` };
    }
  }
  if (host !== 1) return { status: 400, detail: host === 0 ? 'no Host header' : 'more than one Host header' };
  if (authorization > 1) return { status: 400, detail: 'more than one Authorization header' };
  if (contentLength > 1) return { status: 400, detail: 'more than one Content-Length header' };
  if (transferEncoding > 1) return { status: 400, detail: 'more than one Transfer-Encoding header' };
  if (transferEncoding > 0 && contentLength > 0) return { status: 400, detail: 'both Content-Length and Transfer-Encoding' };
  return null;
}

/**
 * Marks the connection as no longer trusted: the refusal is its last response (Connection:
 * close), and any request already parsed behind it is dropped unanswered (see isPoisoned).
 */
export function poison(req: http.IncomingMessage, res: http.ServerResponse): void {
  (req.socket as Marked)[POISONED] = true;
  res.shouldKeepAlive = false;
  req.resume();
}

/** True for a request pipelined behind a refused one on the same connection: drop it. */
export function isPoisoned(req: http.IncomingMessage): boolean {
  return (req.socket as Marked)[POISONED] === true;
}
