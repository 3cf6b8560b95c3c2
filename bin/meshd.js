#!/usr/bin/env node
// Entry shim: meshd is TypeScript run by Node's own type stripping (Node >= 22.18 / 23.6),
// so this file only checks the runtime and hands over. `npm ci` installs a pinned Node
// (the `node` package) into node_modules/.bin, which npm scripts and npx put first on PATH.
const [major, minor] = process.versions.node.split('.').map(Number);
if (major < 22 || (major === 22 && minor < 18)) {
  process.stderr.write(
    `meshd needs Node.js >= 22.18 (found ${process.versions.node}). ` +
      'Run it through npm (`npx meshd`, `npm start`) so the pinned runtime from node_modules is used.\n',
  );
  process.exit(2);
}
await import('../src/cli/main.ts');
