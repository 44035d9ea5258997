// scripts/bench/memory.ts — owns the memory benchmark: boots the default
// guest with 128 MiB under splitvm (command line `console=ttyS0 reboot=k
// panic=0`, so the guest stays up after init dies), and once "Run /init as
// init process" appears reads the process's /proc/PID/smaps_rollup and
// /proc/PID/smaps. Prints RSS, PSS and private memory (Private_Clean +
// Private_Dirty) in MiB, the guest-RAM mapping's share of each (splitvm: the
// memfd mapping /memfd:splitvm-guest-ram), and the VMM's own private memory
// with guest RAM excluded. Does the same for QEMU (-M microvm, guest RAM in a
// memfd backend, mapped as /memfd:memory-backend-memfd) for comparison; if
// QEMU cannot boot the kernel it says why and, clearly labelled, shows QEMU
// where it stopped.
import { readFileSync, readdirSync } from 'node:fs';
import {
  BenchError, QEMU_FAILURE, defaultGuest, effectiveCmdline, ensureQemu, explainQemuFailure, hasPvhNote, killChild,
  printTable, qemuArgs, round, say, startQemu, startSplitvm, waitForLine, type Figures, type GuestFiles, type StartedVm,
} from './lib.js';

export const title = 'memory of a booted 128 MiB guest (RSS, PSS, private; guest RAM vs the VMM itself)';

const MEM_MIB = 128;
const CMDLINE = 'console=ttyS0 reboot=k panic=0';
const INIT_LINE = /Run \/init as init process/;
const TIMEOUT_MS = 240_000;
/** Let the guest reach its steady state (init dies, the kernel panics and idles) before reading. */
const SETTLE_MS = 2000;

interface Mem {
  rss: number;
  pss: number;
  priv: number;
  size: number;
}

const zero = (): Mem => ({ rss: 0, pss: 0, priv: 0, size: 0 });

function fields(block: string): Mem {
  const kb = (name: string) => Number(new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(block)?.[1] ?? 0);
  return { rss: kb('Rss'), pss: kb('Pss'), priv: kb('Private_Clean') + kb('Private_Dirty'), size: kb('Size') };
}

/** Whole-process totals and the totals of the mappings whose name matches `ram`, in kB. */
function readMemory(pid: number, ram: RegExp): { total: Mem; ram: Mem; ramMappings: number; rest: Record<string, number> } {
  let rollup: string;
  let smaps: string;
  try {
    rollup = readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
    smaps = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch (e) {
    throw new BenchError(`cannot read /proc/${pid}/smaps: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const total = fields(rollup);
  const guest = zero();
  let ramMappings = 0;
  /** Private kB outside guest RAM, by kind of mapping. */
  const rest: Record<string, number> = { anonymous: 0, '[heap]': 0, '[stack]': 0, files: 0, other: 0 };
  // A mapping's block starts with its header line "start-end perms offset dev inode  name".
  for (const block of smaps.split(/^(?=[0-9a-f]+-[0-9a-f]+ )/m)) {
    const header = block.slice(0, block.indexOf('\n'));
    if (!header) continue;
    if (!ram.test(header)) {
      const name = header.split(/\s+/).slice(5).join(' ');
      const kind = !name || name.startsWith('[anon') ? 'anonymous' : name in rest ? name : name.startsWith('/') ? 'files' : 'other';
      rest[kind]! += fields(block).priv;
      continue;
    }
    ramMappings++;
    const f = fields(block);
    guest.rss += f.rss;
    guest.pss += f.pss;
    guest.priv += f.priv;
    guest.size += f.size;
  }
  return { total, ram: guest, ramMappings, rest };
}

/** Descendant processes of `pid` (e.g. tsx's esbuild, device processes), with their command names. */
function descendants(pid: number): { pid: number; comm: string }[] {
  const out: { pid: number; comm: string }[] = [];
  const walk = (p: number) => {
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${p}/task`);
    } catch {
      return;
    }
    for (const t of tasks) {
      let kids: string;
      try {
        kids = readFileSync(`/proc/${p}/task/${t}/children`, 'utf8');
      } catch {
        continue;
      }
      for (const k of kids.trim().split(/\s+/).filter(Boolean).map(Number)) {
        let comm = '?';
        try {
          comm = readFileSync(`/proc/${k}/comm`, 'utf8').trim();
        } catch {
          /* gone */
        }
        out.push({ pid: k, comm });
        walk(k);
      }
    }
  };
  walk(pid);
  return out;
}

interface Sample {
  label: string;
  total: Mem;
  ram: Mem;
  ramMappings: number;
  rest: Record<string, number>;
  helpers: { comm: string; mem: Mem }[];
}

async function sample(label: string, vm: StartedVm, ram: RegExp, what: string, explain?: (o: string) => string): Promise<Sample> {
  await waitForLine(vm.child, vm.t0, INIT_LINE, { timeoutMs: TIMEOUT_MS, what, failure: explain ? /KVM internal error/ : undefined, explain });
  await new Promise((r) => setTimeout(r, SETTLE_MS));
  return read(label, vm, ram);
}

function read(label: string, vm: StartedVm, ram: RegExp): Sample {
  const pid = vm.child.pid!;
  const { total, ram: g, ramMappings, rest } = readMemory(pid, ram);
  const helpers = descendants(pid).map((d) => {
    try {
      return { comm: d.comm, mem: fields(readFileSync(`/proc/${d.pid}/smaps_rollup`, 'utf8')) };
    } catch {
      return { comm: d.comm, mem: zero() };
    }
  });
  return { label, total, ram: g, ramMappings, rest, helpers };
}

async function measureSplitvm(guest: GuestFiles): Promise<Sample> {
  const vm = startSplitvm(['--mem', String(MEM_MIB), '--kernel', guest.kernel, '--initrd', guest.initrd, '--cmdline', CMDLINE]);
  try {
    const s = await sample('splitvm', vm, /\/memfd:splitvm-guest-ram/, 'splitvm');
    if (s.ramMappings === 0) throw new BenchError('splitvm is running but no /memfd:splitvm-guest-ram mapping is in its smaps');
    return s;
  } finally {
    await killChild(vm.child);
  }
}

/** QEMU's figures, or why it has none plus (labelled) its figures where it stopped. */
async function measureQemu(guest: GuestFiles, cmdline: string): Promise<{ sample?: Sample; problem?: string }> {
  ensureQemu();
  if (!hasPvhNote(guest.kernel)) return { problem: 'the vmlinux has no PVH entry note, so QEMU -kernel cannot boot it as an ELF' };
  const args = qemuArgs('microvm,memory-backend=ram', guest, cmdline, MEM_MIB, ['-object', `memory-backend-memfd,id=ram,size=${MEM_MIB}M`]);
  const vm = startQemu(args);
  const ram = /\/memfd:memory-backend-memfd\b/;
  try {
    try {
      return { sample: await sample('QEMU -M microvm', vm, ram, 'QEMU', (o) => explainQemuFailure(o, guest.kernel)) };
    } catch (e) {
      if (!(e instanceof BenchError) || !QEMU_FAILURE.test(e.message) || vm.child.exitCode !== null) throw e;
      // The guest is stopped, QEMU itself still runs: its memory there is still worth a look.
      const afterS = Number(process.hrtime.bigint() - vm.t0) / 1e9;
      const s = read(`QEMU -M microvm (stopped)`, vm, ram);
      return { sample: s.ramMappings ? s : undefined, problem: `${e.message.replace(/^QEMU: /, '')}; the guest stopped there ${afterS.toFixed(1)} s after start` };
    }
  } finally {
    await killChild(vm.child);
  }
}

const mib = (kb: number) => (kb / 1024).toFixed(1);
const pct = (part: number, whole: number) => (whole ? `${((100 * part) / whole).toFixed(0)}%` : '-');

export async function run(): Promise<Figures> {
  const guest = defaultGuest();
  const cmdline = effectiveCmdline(CMDLINE);
  say(`guest: ${guest.kernel} + initramfs.cpio, ${MEM_MIB} MiB; command line: ${cmdline}`);
  say(`read ${SETTLE_MS / 1000} s after "Run /init as init process" (init has died; panic=0 keeps the guest up)`);
  const samples: Sample[] = [await measureSplitvm(guest)];
  let qemuProblem: string | undefined;
  try {
    const q = await measureQemu(guest, cmdline);
    if (q.sample) samples.push(q.sample);
    qemuProblem = q.problem;
  } catch (e) {
    if (!(e instanceof BenchError)) throw e;
    qemuProblem = e.message;
  }

  say();
  printTable(
    ['process (MiB)', 'RSS', 'PSS', 'private', 'guest RAM RSS', 'PSS', 'private', 'VMM private w/o guest RAM'],
    samples.map((s) => [
      s.label,
      mib(s.total.rss),
      mib(s.total.pss),
      mib(s.total.priv),
      `${mib(s.ram.rss)} (${pct(s.ram.rss, s.total.rss)})`,
      `${mib(s.ram.pss)} (${pct(s.ram.pss, s.total.pss)})`,
      `${mib(s.ram.priv)} (${pct(s.ram.priv, s.total.priv)})`,
      mib(s.total.priv - s.ram.priv),
    ]),
  );
  for (const s of samples) {
    say(`${s.label}: guest RAM = ${s.ramMappings} mapping(s), ${mib(s.ram.size)} MiB mapped, ${pct(s.ram.rss, s.ram.size)} of it resident`);
    const parts = Object.entries(s.rest).filter(([, kb]) => kb >= 102);
    say(`  private w/o guest RAM by mapping: ${parts.map(([k, kb]) => `${k} ${mib(kb)}`).join(', ')} MiB`);
    for (const h of s.helpers) say(`  child process ${h.comm}: RSS ${mib(h.mem.rss)}, PSS ${mib(h.mem.pss)}, private ${mib(h.mem.priv)} MiB (not in the row above)`);
  }
  if (qemuProblem) {
    say(`QEMU: cannot boot this kernel on this host (reason: ${qemuProblem})`);
    if (samples.length > 1) say('  its row shows QEMU where the guest stopped, before /init: not a like-for-like comparison of guest RAM.');
  }
  const mibOf = (kb: number) => round(kb / 1024, 1);
  return {
    processes: samples.map((s) => ({ label: s.label, rssMiB: mibOf(s.total.rss), pssMiB: mibOf(s.total.pss), privateMiB: mibOf(s.total.priv), privateWithoutGuestRamMiB: mibOf(s.total.priv - s.ram.priv) })),
    qemuProblem: qemuProblem ?? null,
  };
}
