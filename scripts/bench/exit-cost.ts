// scripts/bench/exit-cost.ts — owns the exit-cost benchmark: the cost of one
// port-I/O exit round trip (KVM_RUN → exit → answer → KVM_RUN) in splitvm
// against the smallest C VMM. Both run the same 64-bit guest
// (exit-cost/port-loop.S, entered in long mode; splitvm absorbs port 0x80 in
// the vCPU worker thread) at two loop counts, a few times each; the
// difference of the best times cancels start-up cost. Prints per-exit µs for
// both and the ratio splitvm/C (target ≤ 1.10), and splitvm once more with
// its core unsealed (--no-jail-core): the share of an exit its seccomp
// filters cost (the vCPU thread's KVM_RUN runs the core's and its own; the
// target is < 3%). Never fails on the figures.
import { join } from 'node:path';
import { makeTempDir, printTable, removeTempDir, repoRoot, round, runToEnd, say, splitvmBin, BenchError, type Figures } from './lib.js';

export const title = 'port-I/O exit round trip, splitvm vs a minimal C VMM (same 64-bit guest)';

const SMALL = 20_000;
const LARGE = 220_000;
/** Runs per loop count and VMM; the fastest counts (host noise only ever adds time). */
const REPEATS = 5;
const src = join(repoRoot, 'scripts/bench/exit-cost');

async function build(dir: string): Promise<{ vmm: string; elf: Record<number, string> }> {
  const vmm = join(dir, 'kvm-port-loop');
  await runToEnd('gcc', ['-O2', '-Wall', '-o', vmm, join(src, 'kvm-port-loop.c')], 'building kvm-port-loop.c');
  const elf: Record<number, string> = {};
  for (const loops of [SMALL, LARGE]) {
    elf[loops] = join(dir, `loop-${loops}.elf`);
    await runToEnd(
      'gcc',
      ['-nostdlib', '-static', '-no-pie', '-Wl,--build-id=none', '-Wl,-Ttext-segment=0x1000000', `-DLOOPS=${loops}`, '-o', elf[loops]!, join(src, 'port-loop.S')],
      `building port-loop.S (LOOPS=${loops})`,
    );
  }
  return { vmm, elf };
}

export async function run(): Promise<Figures> {
  const dir = makeTempDir('exit-cost');
  try {
    const { vmm, elf } = await build(dir);
    const times: Record<'splitvm' | 'unsealed' | 'c', Record<number, number[]>> = {
      splitvm: { [SMALL]: [], [LARGE]: [] },
      unsealed: { [SMALL]: [], [LARGE]: [] },
      c: { [SMALL]: [], [LARGE]: [] },
    };
    // Interleaved, so that drifting host load hits both alike.
    for (let r = 0; r < REPEATS; r++) {
      for (const loops of [SMALL, LARGE]) {
        const c = await runToEnd(vmm, [elf[loops]!], `the C VMM (LOOPS=${loops})`);
        const exits = Number(c.stdout.trim());
        if (exits !== loops + 1) throw new BenchError(`the C VMM counted ${c.stdout.trim()} port exits, expected ${loops + 1}`);
        times.c[loops]!.push(c.ms);
        const s = await runToEnd(process.execPath, [splitvmBin, 'run', '--kernel', elf[loops]!], `splitvm (LOOPS=${loops})`);
        times.splitvm[loops]!.push(s.ms);
        const u = await runToEnd(process.execPath, [splitvmBin, 'run', '--no-jail-core', '--kernel', elf[loops]!], `splitvm --no-jail-core (LOOPS=${loops})`);
        times.unsealed[loops]!.push(u.ms);
      }
      process.stdout.write(`  round ${r + 1}/${REPEATS} done\n`);
    }

    const n = LARGE - SMALL;
    const fig = (who: 'splitvm' | 'unsealed' | 'c') => {
      const small = Math.min(...times[who][SMALL]!);
      const large = Math.min(...times[who][LARGE]!);
      const perExitUs = ((large - small) * 1000) / n;
      return { small, large, perExitUs, startMs: small - (perExitUs * (SMALL + 1)) / 1000 };
    };
    const s = fig('splitvm');
    const u = fig('unsealed');
    const c = fig('c');
    say(`best wall time of ${REPEATS} runs per loop count (spawn to exit); per exit = (t(${LARGE}) - t(${SMALL})) / ${n}`);
    printTable(
      ['VMM', `t(${SMALL / 1000}k) ms`, `t(${LARGE / 1000}k) ms`, 'per exit µs', 'start-up ms'],
      [
        ['splitvm', s.small.toFixed(0), s.large.toFixed(0), s.perExitUs.toFixed(2), s.startMs.toFixed(0)],
        ['splitvm --no-jail-core', u.small.toFixed(0), u.large.toFixed(0), u.perExitUs.toFixed(2), u.startMs.toFixed(0)],
        ['C (kvm-port-loop)', c.small.toFixed(0), c.large.toFixed(0), c.perExitUs.toFixed(2), c.startMs.toFixed(0)],
      ],
    );
    const ratio = s.perExitUs / c.perExitUs;
    say(`ratio splitvm/C per exit: ${ratio.toFixed(3)} (target ≤ 1.10: ${ratio <= 1.1 ? 'met' : 'not met'})`);
    const sealCost = (s.perExitUs - u.perExitUs) / u.perExitUs;
    say(`the seal's cost per exit, sealed against --no-jail-core: ${(100 * sealCost).toFixed(1)}% (target < 3%: ${sealCost < 0.03 ? 'met' : 'not met'})`);
    return {
      perExitUs: round(s.perExitUs), unsealedPerExitUs: round(u.perExitUs), sealCostPercent: round(100 * sealCost, 1), cPerExitUs: round(c.perExitUs), ratio: round(ratio, 3),
      startupMs: round(s.startMs, 0), unsealedStartupMs: round(u.startMs, 0), cStartupMs: round(c.startMs, 0),
    };
  } finally {
    removeTempDir(dir);
  }
}
