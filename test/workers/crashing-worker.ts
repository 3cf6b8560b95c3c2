// The real data-plane worker, plus one fault: on {type: 'test-crash'} it throws from the
// event loop, as a bug in a worker would. Used to show that one worker's crash leaves the
// others serving and that the supervisor replaces it.
import { parentPort } from 'node:worker_threads';
import '../../src/workers/dataplane-worker.ts';

parentPort?.on('message', (m: { type: string }) => {
  if (m.type === 'test-crash') {
    setImmediate(() => {
      throw new Error('injected worker crash');
    });
  }
});
