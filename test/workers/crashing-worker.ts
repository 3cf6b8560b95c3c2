// The real data-plane worker, plus two faults: on {type: 'test-crash'} it throws from the
// event loop, as a bug in a worker would; on {type: 'test-oom'} it leaks until its heap limit. Used to show that one worker's crash leaves the
// others serving and that the supervisor replaces it.
import { parentPort } from 'node:worker_threads';
import '../../src/workers/dataplane-worker.ts';

parentPort?.on('message', (m: { type: string }) => {
  if (m.type === 'test-oom') {
    const hoard: number[][] = [];
    const grow = (): void => {
      for (let i = 0; i < 200; i++) hoard.push(new Array<number>(100_000).fill(i));
      setImmediate(grow);
    };
    grow();
  }
  if (m.type === 'test-crash') {
    setImmediate(() => {
      throw new Error('injected worker crash');
    });
  }
});
