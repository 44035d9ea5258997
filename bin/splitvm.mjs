#!/usr/bin/env node
// The splitvm command: runs the TypeScript sources through tsx.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../src/core/cli.ts');
process.exitCode = await main(process.argv.slice(2));
// vCPU threads and the console may hold the event loop: the VM is over.
process.exit();
