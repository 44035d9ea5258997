// scripts/bench/seal.ts — owns the benchmark of the core's seal
// (src/core/jail/seal.ts, policies/core.policy):
//   filter cost: what the core's seccomp filter adds to each system call a
//     vCPU makes per exit. A child process makes the KVM_RUN ioctl 2 million
//     times on an eventfd (the kernel answers ENOTTY at once, so the call is
//     almost all entry, filter and exit), sealed and not, alternated over 9
//     rounds; the filter's cost is the difference of the fastest rounds (the
//     least disturbed by the rest of the host). A port-I/O exit makes two system calls on its vCPU thread
//     (KVM_RUN, and the futex wait for the main thread's answer): twice the
//     difference per call is set against the 9.3 µs an exit costs splitvm on
//     these hosts (`npm run bench -- exit-cost`, with KVM, which this
//     benchmark does not need).
//   memory: the private memory (Private_Clean + Private_Dirty) of a sealed
//     `splitvm device blk --socket` front process and of its launcher,
//     against the same front unsealed (--no-jail-core: no launcher).
//   npm run bench -- seal [--json]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { sealCore } from '../../src/core/jail/seal.js';
import { KVM_RUN } from '../../src/core/kvm/ioctls.js';
import * as libc from '../../src/sys/libc.js';
import { BenchError, isMain, killChild, makeTempDir, median, printTable, removeTempDir, round, runStandalone, say, spawnTracked, splitvmBin, waitForLine, type Figures } from './lib.js';

export const title = "the core's seal: its seccomp filter's cost per system call, and the memory of the sealed front and its launcher";

const here = fileURLToPath(import.meta.url);
const CALLS = 2_000_000;
const ROUNDS = 9;
/** A port-I/O exit's cost to splitvm on these hosts (the exit-cost benchmark, with KVM: README). */
const EXIT_NS = 9300;
/** System calls on the vCPU thread per port-I/O exit: KVM_RUN, and the futex wait for the answer. */
const CALLS_PER_EXIT = 2;

/** In the child: ns per KVM_RUN ioctl on an eventfd, sealed or not. */
function childLoop(sealed: boolean): void {
  const fd = libc.eventfd();
  if (sealed) sealCore('enforce', pino({ level: 'silent' }));
  for (let i = 0; i < 10_000; i++) libc.ioctlRaw(fd, KVM_RUN); // warm up (JIT)
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CALLS; i++) libc.ioctlRaw(fd, KVM_RUN);
  const ns = Number(process.hrtime.bigint() - t0) / CALLS;
  process.stdout.write(`${JSON.stringify({ ns })}\n`);
}

function nsPerCall(sealed: boolean): number {
  const r = spawnSync(process.execPath, ['--import', 'tsx', here, 'child', sealed ? 'sealed' : 'open'], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new BenchError(`the ${sealed ? 'sealed' : 'unsealed'} child failed (${r.signal ?? r.status}): ${r.stderr.slice(-300)}`);
  return (JSON.parse(r.stdout.trim().split('\n').pop()!) as { ns: number }).ns;
}

function privateMiB(pid: number): number {
  const t = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const kb = (f: string) => Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(t)?.[1] ?? 0);
  return (kb('Private_Clean') + kb('Private_Dirty')) / 1024;
}

/** The launcher: the core's child running launcher/main.js. */
function launcherOf(corePid: number): number | null {
  for (const p of fs.readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const stat = fs.readFileSync(`/proc/${p}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === corePid && fs.readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('launcher/main.js')) return Number(p);
    } catch {
      // gone meanwhile
    }
  }
  return null;
}

async function frontMemory(dir: string, sealed: boolean): Promise<{ front: number; launcher: number | null }> {
  const image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, Buffer.alloc(1 << 20));
  const sock = path.join(dir, `front-${sealed}.sock`);
  const child = spawnTracked(process.execPath, [splitvmBin, 'device', 'blk', '--socket', sock, '--disk', image, ...(sealed ? [] : ['--no-jail-core'])]);
  try {
    await waitForLine(child, process.hrtime.bigint(), /waiting for a vhost-user frontend/, { timeoutMs: 30_000, what: 'the front listening', stream: 'err' });
    await new Promise((r) => setTimeout(r, 500)); // settled
    const launcher = launcherOf(child.pid!);
    if (sealed && launcher === null) throw new BenchError('the sealed front has no launcher');
    return { front: privateMiB(child.pid!), launcher: launcher === null ? null : privateMiB(launcher) };
  } finally {
    await killChild(child);
  }
}

export async function run(): Promise<Figures> {
  const open: number[] = [];
  const sealed: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    open.push(nsPerCall(false));
    sealed.push(nsPerCall(true));
  }
  const added = Math.min(...sealed) - Math.min(...open);
  printTable(
    ['KVM_RUN ioctl on an eventfd (ENOTTY), ns per call', 'median', 'min'],
    [
      ['unsealed', round(median(open), 0)!, round(Math.min(...open), 0)!],
      ['sealed (policies/core.policy)', round(median(sealed), 0)!, round(Math.min(...sealed), 0)!],
      ['added by the filter, per call (min against min)', '', round(added, 0)!],
      [`per exit (${CALLS_PER_EXIT} calls), as a share of a ${EXIT_NS / 1000} µs port-I/O exit`, `${round((100 * CALLS_PER_EXIT * added) / EXIT_NS, 2)}%`, ''],
    ],
  );
  const dir = makeTempDir('splitvm-bench-seal-');
  try {
    const s = await frontMemory(dir, true);
    const o = await frontMemory(dir, false);
    say();
    printTable(
      ['splitvm device blk --socket, waiting, private MiB', 'front', 'launcher', 'together'],
      [
        ['sealed (default)', round(s.front, 1)!, round(s.launcher ?? 0, 1)!, round(s.front + (s.launcher ?? 0), 1)!],
        ['--no-jail-core', round(o.front, 1)!, '-', round(o.front, 1)!],
      ],
    );
    return {
      nsPerCallUnsealed: round(median(open), 1), nsPerCallSealed: round(median(sealed), 1), filterNsPerCall: round(added, 1),
      shareOfExitPercent: round((100 * CALLS_PER_EXIT * added) / EXIT_NS, 2), frontMiB: round(s.front, 1), launcherMiB: round(s.launcher ?? 0, 1), unsealedFrontMiB: round(o.front, 1),
    };
  } finally {
    removeTempDir(dir);
  }
}

if (isMain(import.meta.url)) {
  if (process.argv[2] === 'child') childLoop(process.argv[3] === 'sealed');
  else await runStandalone('seal', run);
}
