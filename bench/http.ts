// `npm run bench:http`: the HTTP scenarios of `npm run bench` (l4 and l7: keep-alive through
// two sidecars against direct and HAProxy in the same run). Kept because the docs and scripts
// use it; every flag of `npm run bench` works here too (./lib/suite.ts).

import { runSuite } from './lib/suite.ts';

process.exitCode = await runSuite(process.argv.slice(2), { command: 'npm run bench:http --', scenario: 'l4,l7' });
