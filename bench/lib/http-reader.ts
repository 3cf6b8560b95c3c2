// The load generators' HTTP/1.1 response reader (./load-worker.ts, ./overload-worker.ts). A
// module of its own: both of those files start a job when loaded in a worker thread, so neither
// may import the other.

const CRLF2 = Buffer.from('\r\n\r\n');

/**
 * A streaming HTTP/1.1 response reader: headers, then Content-Length or chunked body (trailers
 * skipped), never buffering a body (a 64 MiB answer is only counted).
 */
export class ResponseReader {
  #head: Buffer | null = null;
  #left = 0;
  #state: 'head' | 'body' | 'chunk-size' | 'chunk-data' | 'chunk-end' | 'trailer' = 'head';
  #status = 0;
  #line = '';
  /** Body bytes seen (all responses). */
  bodyBytes = 0;

  /** Feeds a chunk; calls `done(status)` for every response completed by it. */
  feed(d: Buffer, done: (status: number) => void): void {
    let off = 0;
    while (off < d.length) {
      switch (this.#state) {
        case 'body': {
          const take = Math.min(this.#left, d.length - off);
          this.#left -= take;
          this.bodyBytes += take;
          off += take;
          if (this.#left === 0) {
            this.#state = 'head';
            done(this.#status);
          }
          break;
        }
        case 'chunk-size':
        case 'chunk-end':
        case 'trailer': {
          const nl = d.indexOf(0x0a, off);
          const end = nl < 0 ? d.length : nl + 1;
          this.#line += d.toString('latin1', off, end);
          off = end;
          if (nl < 0) return;
          const line = this.#line.trim();
          this.#line = '';
          if (this.#state === 'chunk-end') {
            // The CRLF after a chunk's data.
            this.#state = 'chunk-size';
            break;
          }
          if (this.#state === 'trailer') {
            // Trailer fields after the last chunk, until the empty line that ends the response.
            if (line === '') {
              this.#state = 'head';
              done(this.#status);
            }
            break;
          }
          const size = parseInt(line.split(';')[0] ?? '', 16);
          if (!Number.isFinite(size)) throw new Error(`bad chunk size line ${JSON.stringify(line)}`);
          if (size === 0) {
            this.#state = 'trailer';
          } else {
            this.#left = size;
            this.#state = 'chunk-data';
          }
          break;
        }
        case 'chunk-data': {
          const take = Math.min(this.#left, d.length - off);
          this.#left -= take;
          this.bodyBytes += take;
          off += take;
          if (this.#left === 0) this.#state = 'chunk-end';
          break;
        }
        case 'head': {
          const rest = off === 0 ? d : d.subarray(off);
          const buf = this.#head === null ? rest : Buffer.concat([this.#head, rest]);
          const end = buf.indexOf(CRLF2);
          if (end < 0) {
            this.#head = Buffer.from(buf);
            return;
          }
          off += end + 4 - (this.#head?.length ?? 0);
          this.#head = null;
          const head = buf.toString('latin1', 0, end);
          this.#status = Number(head.slice(9, 12));
          const cl = /\r\ncontent-length:\s*(\d+)/i.exec(head);
          if (cl !== null) {
            this.#left = Number(cl[1]);
            if (this.#left === 0) done(this.#status);
            else this.#state = 'body';
          } else if (/\r\ntransfer-encoding:[^\r]*chunked/i.test(head)) {
            this.#state = 'chunk-size';
          } else {
            done(this.#status);
          }
          break;
        }
      }
    }
  }
}
