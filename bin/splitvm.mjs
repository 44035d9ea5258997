#!/usr/bin/env node
// The splitvm command: runs the core as compiled by `npm run build` (npm ci,
// npm start and npm test build it), without a TypeScript loader in the VMM.
import { existsSync } from 'node:fs';

const entry = new URL('../dist/src/core/cli.js', import.meta.url);
if (!existsSync(entry)) {
  process.stderr.write('splitvm: not built yet: run "npm run build" first\n');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv.slice(2));
// vCPU threads and the console may hold the event loop: the VM is over.
process.exit();
