// L4 piping between two sockets, with half-close passed through (a FIN from one side ends
// the other side's writes; the connection closes when both directions are done) and an
// error or full close on either side tearing down the other.

import type { Socket } from 'node:net';

export function splice(a: Socket, b: Socket, onClose: () => void): void {
  a.pipe(b);
  b.pipe(a);
  let closed = 0;
  const close = (): void => {
    a.destroy();
    b.destroy();
    if (++closed === 2) onClose();
  };
  a.once('close', close);
  b.once('close', close);
  // Errors (resets, timeouts) are expected on live traffic: the 'close' that follows
  // tears the pair down; listening here keeps them from becoming uncaught exceptions.
  a.on('error', noop);
  b.on('error', noop);
}

function noop(): void {}
