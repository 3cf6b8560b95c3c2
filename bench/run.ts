// `npm run bench`: the benchmark suite of the observability issue (./lib/suite.ts): meshd's
// two-sidecar path against a direct connection and HAProxy, scenarios l4, l7, handshake,
// bulk, latency and scaling. `npm run bench -- -help` lists the flags; docs/BENCHMARKS.md
// explains the figures.

import { runSuite } from './lib/suite.ts';

process.exitCode = await runSuite(process.argv.slice(2), { command: 'npm run bench --' });
