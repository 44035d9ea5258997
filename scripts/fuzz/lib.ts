// What every fuzz target shares: a seeded random source (so a finding
// replays from its seed) and the command line of a target — `--seconds N
// --seed S`, one line saying what runs, one summary line or a FINDING line
// with the seed, exit status 0, 1 (a finding) or 2 (bad arguments).
import { parseArgs } from 'node:util';

/** How long a device may take to answer a request, a reset or a stats request before it counts as hung (long enough for a loaded CI host). */
export const ANSWER_MS = 10_000;

/** xorshift32: small, fast, and the same sequence for the same seed. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>>= 0) / 2 ** 32;
  };
}

/**
 * Runs one target from the command line: `run` fuzzes for `seconds` from
 * `seed` and returns its summary, or throws (a finding). Resolves with the
 * exit status.
 */
export async function fuzzMain(target: string, what: string, run: (seconds: number, seed: number) => Promise<string>): Promise<number> {
  const { values } = parseArgs({ args: process.argv.slice(2), options: { seconds: { type: 'string', default: '20' }, seed: { type: 'string' } } });
  const seconds = Number(values.seconds);
  const seed = values.seed !== undefined ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
  if (!(seconds > 0) || !Number.isInteger(seed)) {
    process.stderr.write(`fuzz ${target}: --seconds must be a positive number and --seed an integer\n`);
    return 2;
  }
  process.stdout.write(`${target} fuzz: seed ${seed}, ${seconds} s, ${what}\n`);
  try {
    process.stdout.write(`${await run(seconds, seed)}, no finding\n`);
    return 0;
  } catch (e) {
    process.stdout.write(`FINDING (seed ${seed}) ${(e as Error).message}\n`);
    return 1;
  }
}
