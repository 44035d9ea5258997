// Runs one fuzz target (scripts/fuzz/TARGET.ts) briefly with a fixed seed,
// for the fuzzers' smoke tests: it must exit 0 (no finding); the caller
// checks the counts in its summary line.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

/** The fuzzer's output after `seconds` from seed 7; fails the test on a finding or a crash. */
export function runFuzzSmoke(target: string, seconds: number): string {
  const script = fileURLToPath(new URL(`../../scripts/fuzz/${target}.ts`, import.meta.url));
  const r = spawnSync(process.execPath, ['--import', 'tsx', script, '--seconds', String(seconds), '--seed', '7'], { encoding: 'utf8' });
  assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
  return r.stdout;
}
