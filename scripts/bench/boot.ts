// scripts/bench/boot.ts — owns the boot-time benchmark: wall time from
// process start to "Run /init as init process" on the serial console, for
// the default guest (vmlinux + initramfs.cpio from scripts/guest/build-kernel.sh)
// with 128 MiB and 1 vCPU, splitvm against `qemu-system-x86_64 -enable-kvm`
// booting the same files with the same command line (splitvm's default plus
// the quirk parameters it adds on a software-KVM host). QEMU is tried as
// microvm and as pc, and the faster is measured. If QEMU cannot boot the
// kernel here the reason is printed and splitvm's figure still is. Prints
// medians and the ratio splitvm/QEMU (target ≤ 1.0), and splitvm's boot
// with its core unsealed (--no-jail-core) beside its default, sealed one:
// what the seal, the core's namespaces and its launcher add to a boot.
// Never fails on figures.
import {
  BenchError, DEFAULT_CMDLINE, QEMU_FAILURE, defaultGuest, effectiveCmdline, ensureQemu, explainQemuFailure,
  hasPvhNote, killChild, median, printTable, qemuArgs, say, startQemu, startSplitvm, waitForLine,
  round, type Figures, type GuestFiles, type QemuMachine,
} from './lib.js';
import { isSoftwareKvmHost } from '../../src/core/quirks.js';

export const title = 'boot to "Run /init as init process", 128 MiB, 1 vCPU: splitvm vs QEMU';

const RUNS = 3;
const MEM_MIB = 128;
const INIT_LINE = /Run \/init as init process/;
const TIMEOUT_MS = 240_000;

/** One splitvm boot (sealed, or with --no-jail-core); returns seconds from spawn to the /init line. */
async function splitvmBoot(guest: GuestFiles, sealed = true): Promise<number> {
  // The default guest's files, named explicitly: the same guest as a bare
  // `splitvm run --mem 128`, without timing the build script's cache check.
  const vm = startSplitvm(['--mem', String(MEM_MIB), '--kernel', guest.kernel, '--initrd', guest.initrd, ...(sealed ? [] : ['--no-jail-core'])]);
  try {
    const seen = await waitForLine(vm.child, vm.t0, INIT_LINE, { timeoutMs: TIMEOUT_MS, what: 'splitvm' });
    return seen.ms / 1000;
  } finally {
    await killChild(vm.child);
  }
}

/**
 * One splitvm boot up to the kernel's INT3 self-test during alternatives
 * patching: where QEMU stops on this host. Seconds from spawn to the fixup.
 */
async function splitvmToInt3(guest: GuestFiles): Promise<number> {
  const vm = startSplitvm(['--mem', String(MEM_MIB), '--kernel', guest.kernel, '--initrd', guest.initrd, '--log-level', 'debug']);
  try {
    const seen = await waitForLine(vm.child, vm.t0, /"kind":"int3".*software-KVM fixup applied/, { timeoutMs: TIMEOUT_MS, what: 'splitvm', stream: 'err' });
    return seen.ms / 1000;
  } finally {
    await killChild(vm.child);
  }
}

type QemuResult = { ok: true; s: number } | { ok: false; reason: string; afterS: number };

async function qemuBoot(machine: QemuMachine, guest: GuestFiles, cmdline: string): Promise<QemuResult> {
  const vm = startQemu(qemuArgs(machine, guest, cmdline, MEM_MIB));
  try {
    const seen = await waitForLine(vm.child, vm.t0, INIT_LINE, {
      timeoutMs: TIMEOUT_MS,
      what: `QEMU -M ${machine}`,
      failure: QEMU_FAILURE,
      explain: (out) => explainQemuFailure(out, guest.kernel),
    });
    return { ok: true, s: seen.ms / 1000 };
  } catch (e) {
    if (!(e instanceof BenchError)) throw e;
    return { ok: false, reason: e.message, afterS: Number(process.hrtime.bigint() - vm.t0) / 1e9 };
  } finally {
    await killChild(vm.child);
  }
}

export async function run(): Promise<Figures> {
  const guest = defaultGuest();
  const cmdline = effectiveCmdline(DEFAULT_CMDLINE);
  say(`guest: ${guest.kernel} + initramfs.cpio, ${MEM_MIB} MiB, 1 vCPU`);
  say(`command line: ${cmdline}`);

  // QEMU first: a probe boot on each machine type picks the faster one.
  let qemu: { machine: QemuMachine; times: number[] } | undefined;
  let qemuProblem: string | undefined;
  /** Seconds QEMU took to stop on the INT3 self-test, per machine type that did. */
  const qemuInt3: number[] = [];
  try {
    ensureQemu();
    if (!hasPvhNote(guest.kernel)) {
      qemuProblem = 'the vmlinux has no PVH entry note (CONFIG_PVH), so QEMU -kernel cannot boot it as an ELF';
    } else {
      const probes: Partial<Record<QemuMachine, QemuResult>> = {};
      for (const m of ['microvm', 'pc'] as const) {
        probes[m] = await qemuBoot(m, guest, cmdline);
        const r = probes[m]!;
        say(`  QEMU -M ${m} probe: ${r.ok ? `${r.s.toFixed(2)} s to /init` : `failed after ${r.afterS.toFixed(1)} s: ${r.reason}`}`);
      }
      for (const r of Object.values(probes)) if (!r.ok && /INT3/.test(r.reason)) qemuInt3.push(r.afterS);
      const booted = (['microvm', 'pc'] as const).filter((m) => probes[m]!.ok);
      if (booted.length === 0) {
        const reasons = (['microvm', 'pc'] as const).map((m) => probes[m] as Extract<QemuResult, { ok: false }>);
        const same = reasons[0]!.reason.replace(/^QEMU -M \w+: /, '') === reasons[1]!.reason.replace(/^QEMU -M \w+: /, '');
        qemuProblem = same ? reasons[0]!.reason.replace(/^QEMU -M \w+: /, '') : reasons.map((r) => r.reason).join('; ');
        qemuProblem += `; the guest stopped there ${reasons[0]!.afterS.toFixed(1)} s after start as microvm, ${reasons[1]!.afterS.toFixed(1)} s as pc`;
      } else {
        const best = booted.sort((a, b) => (probes[a] as { s: number }).s - (probes[b] as { s: number }).s)[0]!;
        qemu = { machine: best, times: [(probes[best] as { s: number }).s] };
      }
    }
  } catch (e) {
    if (!(e instanceof BenchError)) throw e;
    qemuProblem = e.message;
  }

  const splitvm: number[] = [];
  const unsealed: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    splitvm.push(await splitvmBoot(guest));
    say(`  splitvm run ${i + 1}/${RUNS}: ${splitvm[i]!.toFixed(2)} s`);
    unsealed.push(await splitvmBoot(guest, false));
    say(`  splitvm --no-jail-core run ${i + 1}/${RUNS}: ${unsealed[i]!.toFixed(2)} s`);
    if (qemu && qemu.times.length < RUNS) {
      const r = await qemuBoot(qemu.machine, guest, cmdline);
      if (!r.ok) throw new BenchError(`QEMU -M ${qemu.machine} booted once, then failed: ${r.reason}`);
      qemu.times.push(r.s);
      say(`  QEMU -M ${qemu.machine} run ${qemu.times.length}/${RUNS}: ${r.s.toFixed(2)} s`);
    }
  }

  const s = median(splitvm);
  const rows: (string | number)[][] = [
    ['splitvm', RUNS, s.toFixed(2), Math.min(...splitvm).toFixed(2), Math.max(...splitvm).toFixed(2)],
    ['splitvm --no-jail-core', RUNS, median(unsealed).toFixed(2), Math.min(...unsealed).toFixed(2), Math.max(...unsealed).toFixed(2)],
  ];
  if (qemu) {
    rows.push([`QEMU -M ${qemu.machine}`, qemu.times.length, median(qemu.times).toFixed(2), Math.min(...qemu.times).toFixed(2), Math.max(...qemu.times).toFixed(2)]);
  } else {
    rows.push(['QEMU', 0, '-', '-', '-']);
  }
  say();
  printTable(['VMM', 'runs', 'median s', 'min s', 'max s'], rows);
  say(`the seal's cost to a boot, sealed against --no-jail-core: ${(s - median(unsealed)).toFixed(2)} s (${((100 * (s - median(unsealed))) / median(unsealed)).toFixed(1)}%)`);
  const figures: Figures = { splitvmS: round(s), splitvmMinS: round(Math.min(...splitvm)), unsealedS: round(median(unsealed)), qemuMachine: qemu?.machine ?? null, qemuS: qemu ? round(median(qemu.times)) : null };
  if (qemu) {
    const ratio = s / median(qemu.times);
    say(`ratio splitvm/QEMU: ${ratio.toFixed(3)} (target ≤ 1.0: ${ratio <= 1.0 ? 'met' : 'not met'})`);
    figures.ratio = round(ratio, 3);
  } else {
    figures.qemuProblem = qemuProblem ?? null;
    say(`QEMU: cannot boot this kernel on this host (reason: ${qemuProblem})`);
    say('ratio splitvm/QEMU: n/a');
    if (qemuInt3.length > 0 && isSoftwareKvmHost()) {
      // Both VMMs do reach the INT3 self-test: compare the boot up to there.
      const toInt3: number[] = [];
      for (let i = 0; i < RUNS; i++) toInt3.push(await splitvmToInt3(guest));
      const q = Math.min(...qemuInt3);
      say();
      printTable(['to the INT3 self-test', 'runs', 'median s'], [
        ['splitvm', RUNS, median(toInt3).toFixed(2)],
        ['QEMU (best machine)', qemuInt3.length, q.toFixed(2)],
      ]);
      say(`ratio splitvm/QEMU up to the point QEMU stops: ${(median(toInt3) / q).toFixed(3)}`);
      Object.assign(figures, { splitvmToInt3S: round(median(toInt3)), qemuToInt3S: round(q), ratioToInt3: round(median(toInt3) / q, 3) });
    }
  }
  return figures;
}
