// scripts/bench/seal.ts — owns the benchmark of the core's seal
// (src/core/jail/seal.ts, policies/core.policy):
//   filter cost: what the core's seccomp filter adds to each system call a
//     vCPU makes per exit. A child process makes the KVM_RUN ioctl 2 million
//     times on an eventfd (the kernel answers ENOTTY at once, so the call is
//     almost all entry, filter and exit): unsealed, sealed, and sealed with a
//     vCPU thread's own filter stacked on the core's (policies/vcpu.policy,
//     as every vCPU thread runs), alternated over 9 rounds; each filter's
//     cost is the difference of the fastest rounds (the least disturbed by
//     the rest of the host). A port-I/O exit makes two system calls on its vCPU thread
//     (KVM_RUN, and the futex wait for the main thread's answer): twice the
//     difference per call is set against the 9.3 µs an exit costs splitvm on
//     these hosts (`npm run bench -- exit-cost`, with KVM, which this
//     benchmark does not need).
//   memory and start: the private memory (Private_Clean + Private_Dirty) of a
//     sealed `splitvm device blk --socket` front process and of its
//     launcher, against the same front unsealed (--no-jail-core: no
//     launcher), and the time from its spawn to listening (sealed and started
//     as root, that includes its re-execution into its own namespaces, the
//     launcher's start and the pivot), median of 3 alternated starts.
//   npm run bench -- seal [--json]
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { sealCore } from '../../src/core/jail/seal.js';
import { KVM_RUN } from '../../src/core/kvm/ioctls.js';
import { vcpuThreadRules } from '../../src/core/vcpu/thread-seal.js';
import { loadFilter } from '../../src/devices/seccomp/compile.js';
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

type Seal = 'open' | 'sealed' | 'vcpu';

/** In the child: ns per KVM_RUN ioctl on an eventfd, unsealed, sealed, or sealed as a vCPU thread is. */
function childLoop(seal: Seal): void {
  const fd = libc.eventfd();
  const vcpuRules = seal === 'vcpu' ? vcpuThreadRules(fd) : []; // the eventfd stands for the thread's vCPU; read before the seal
  if (seal !== 'open') sealCore('enforce', pino({ level: 'silent' }));
  if (seal === 'vcpu') loadFilter(vcpuRules, 'kill', 'thread');
  for (let i = 0; i < 10_000; i++) libc.ioctlRaw(fd, KVM_RUN); // warm up (JIT)
  const t0 = process.hrtime.bigint();
  for (let i = 0; i < CALLS; i++) libc.ioctlRaw(fd, KVM_RUN);
  const ns = Number(process.hrtime.bigint() - t0) / CALLS;
  fs.writeSync(1, `${JSON.stringify({ ns })}\n`);
  libc.exitNow(0); // Node's own exit makes calls a vCPU thread's filter does not allow
}

function nsPerCall(seal: Seal): number {
  const r = spawnSync(process.execPath, ['--import', 'tsx', here, 'child', seal], { encoding: 'utf8', timeout: 120_000 });
  if (r.status !== 0) throw new BenchError(`the ${seal} child failed (${r.signal ?? r.status}): ${r.stderr.slice(-300)}`);
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

const STARTS = 3;

async function frontRun(dir: string, sealed: boolean): Promise<{ front: number; launcher: number | null; listeningMs: number }> {
  const image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, Buffer.alloc(1 << 20));
  const sock = path.join(dir, `front-${sealed}.sock`);
  const t0 = process.hrtime.bigint();
  const child = spawnTracked(process.execPath, [splitvmBin, 'device', 'blk', '--socket', sock, '--disk', image, ...(sealed ? [] : ['--no-jail-core'])]);
  try {
    const { ms } = await waitForLine(child, t0, /waiting for a vhost-user frontend/, { timeoutMs: 30_000, what: 'the front listening', stream: 'err' });
    await new Promise((r) => setTimeout(r, 500)); // settled
    const launcher = launcherOf(child.pid!);
    if (sealed && launcher === null) throw new BenchError('the sealed front has no launcher');
    return { front: privateMiB(child.pid!), launcher: launcher === null ? null : privateMiB(launcher), listeningMs: ms };
  } finally {
    await killChild(child);
  }
}

export async function run(): Promise<Figures> {
  const open: number[] = [];
  const sealed: number[] = [];
  const vcpu: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    open.push(nsPerCall('open'));
    sealed.push(nsPerCall('sealed'));
    vcpu.push(nsPerCall('vcpu'));
  }
  const added = Math.min(...sealed) - Math.min(...open);
  const addedVcpu = Math.min(...vcpu) - Math.min(...open);
  printTable(
    ['KVM_RUN ioctl on an eventfd (ENOTTY), ns per call', 'median', 'min'],
    [
      ['unsealed', round(median(open), 0)!, round(Math.min(...open), 0)!],
      ['sealed (policies/core.policy)', round(median(sealed), 0)!, round(Math.min(...sealed), 0)!],
      ['sealed, on a vCPU thread (core.policy + vcpu.policy)', round(median(vcpu), 0)!, round(Math.min(...vcpu), 0)!],
      ['added by the core filter, per call (min against min)', '', round(added, 0)!],
      ['added by both filters of a vCPU thread, per call', '', round(addedVcpu, 0)!],
      [`per exit (${CALLS_PER_EXIT} calls on a vCPU thread), as a share of a ${EXIT_NS / 1000} µs port-I/O exit`, `${round((100 * CALLS_PER_EXIT * addedVcpu) / EXIT_NS, 2)}%`, ''],
    ],
  );
  const dir = makeTempDir('splitvm-bench-seal-');
  try {
    const sealedRuns = [];
    const openRuns = [];
    for (let i = 0; i < STARTS; i++) {
      sealedRuns.push(await frontRun(dir, true));
      openRuns.push(await frontRun(dir, false));
    }
    const s = sealedRuns.at(-1)!;
    const o = openRuns.at(-1)!;
    const sealedMs = median(sealedRuns.map((r) => r.listeningMs));
    const openMs = median(openRuns.map((r) => r.listeningMs));
    say();
    printTable(
      ['splitvm device blk --socket, waiting', 'front MiB', 'launcher MiB', 'together MiB', 'listening after, ms'],
      [
        [`sealed (default${process.getuid!() === 0 ? ', as root: own namespaces' : ''})`, round(s.front, 1)!, round(s.launcher ?? 0, 1)!, round(s.front + (s.launcher ?? 0), 1)!, round(sealedMs, 0)!],
        ['--no-jail-core', round(o.front, 1)!, '-', round(o.front, 1)!, round(openMs, 0)!],
      ],
    );
    return {
      nsPerCallUnsealed: round(median(open), 1), nsPerCallSealed: round(median(sealed), 1), nsPerCallVcpuThread: round(median(vcpu), 1), filterNsPerCall: round(added, 1),
      vcpuFiltersNsPerCall: round(addedVcpu, 1), shareOfExitPercent: round((100 * CALLS_PER_EXIT * addedVcpu) / EXIT_NS, 2), frontMiB: round(s.front, 1), launcherMiB: round(s.launcher ?? 0, 1), unsealedFrontMiB: round(o.front, 1),
      listeningMsSealed: round(sealedMs, 0), listeningMsUnsealed: round(openMs, 0),
    };
  } finally {
    removeTempDir(dir);
  }
}

if (isMain(import.meta.url)) {
  if (process.argv[2] === 'child') childLoop(process.argv[3] as Seal);
  else await runStandalone('seal', run);
}
