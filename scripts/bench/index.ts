// scripts/bench/index.ts — owns the benchmark runner behind `npm run bench`:
// runs every benchmark in order, or the ones named on the command line
// (`npm run bench -- exit-cost memory`). A benchmark is a module
// scripts/bench/NAME.ts exporting `title` and `run()`, which prints its
// tables for people and returns its figures; with `--json` the runner prints
// them all as one JSON object on the last line (lib.ts printJson). The known ones run in
// the order below, any other such module found here (e.g. blk) after them.
// Each failure is one line; the runner goes on with the next benchmark and
// exits with status 1 at the end. Children and temp files are always cleaned up.
import { readdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cleanupSync, isPlainFailure, jsonRequested, killAll, printJson, say, type Figures } from './lib.js';

const ORDER = ['exit-cost', 'boot', 'memory'];
const NOT_BENCHMARKS = new Set(['index', 'lib']);

interface Benchmark {
  title: string;
  run: () => Promise<Figures | void>;
}

const here = dirname(fileURLToPath(import.meta.url));

function available(): string[] {
  const found = readdirSync(here)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.d.ts'))
    .map((f) => f.slice(0, -3))
    .filter((n) => !NOT_BENCHMARKS.has(n));
  return [...ORDER.filter((n) => found.includes(n)), ...found.filter((n) => !ORDER.includes(n)).sort()];
}

async function main(): Promise<number> {
  const all = available();
  const argv = process.argv.slice(2);
  const json = jsonRequested(argv);
  const args = argv.filter((a) => a !== '--json');
  if (args.includes('-h') || args.includes('--help')) {
    say(`usage: npm run bench [-- NAME...] [--json]   benchmarks: ${all.join(', ')}`);
    say('  --json: the figures of every benchmark run, as one JSON object on the last line');
    return 0;
  }
  const unknown = args.filter((a) => !all.includes(a));
  if (unknown.length) {
    process.stderr.write(`bench: unknown benchmark ${unknown.join(', ')} (have: ${all.join(', ')})\n`);
    return 2;
  }
  const names = args.length ? args : all;
  let failed = 0;
  const figures = new Map<string, Figures>();
  for (const name of names) {
    let mod: Benchmark;
    try {
      mod = (await import(pathToFileURL(`${here}/${name}.ts`).href)) as Benchmark;
    } catch (e) {
      const msg = `cannot load: ${(e as Error).message.split('\n')[0]}`;
      process.stderr.write(`bench ${name}: ${msg}\n`);
      figures.set(name, { error: msg });
      failed++;
      continue;
    }
    if (typeof mod.run !== 'function') continue;
    say(`\n=== ${name}: ${mod.title} ===`);
    try {
      figures.set(name, (await mod.run()) ?? {});
    } catch (e) {
      failed++;
      const msg = isPlainFailure(e) ? e.message : `internal error: ${(e as Error).stack ?? e}`;
      process.stderr.write(`bench ${name}: ${msg}\n`);
      figures.set(name, { error: isPlainFailure(e) ? e.message : `internal error: ${(e as Error).message}` });
    } finally {
      await killAll();
      cleanupSync();
    }
  }
  if (json) printJson(figures);
  return failed ? 1 : 0;
}

process.on('exit', cleanupSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.on(sig, () => {
    cleanupSync();
    process.exit(130);
  });
}

process.exitCode = await main();
