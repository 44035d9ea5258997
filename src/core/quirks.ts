// Host quirks. On a host whose /dev/kvm is the kvm_pvm software backend, the
// instruction emulator cannot run a few instructions a Linux kernel uses:
// the VMM skips or emulates them itself, and hides the CPU features whose
// instructions it cannot fix with kernel parameters. Other hosts get none.
import { existsSync } from 'node:fs';

export function isSoftwareKvmHost(): boolean {
  return existsSync('/sys/module/kvm_pvm');
}

/** Kernel parameters that keep a guest away from what kvm_pvm cannot emulate. */
export const SOFTWARE_KVM_KERNEL_PARAMS = 'noxsave nofsgsbase nopku noinvpcid clearcpuid=308,141,151';

/** The command line a guest boots with on this host: `cmdline`, plus the parameters a software-KVM host needs. */
export function withHostKernelParams(cmdline: string, softwareKvm = isSoftwareKvmHost()): string {
  return softwareKvm ? `${cmdline} ${SOFTWARE_KVM_KERNEL_PARAMS}` : cmdline;
}

export type Fixup =
  /** INT3: step over it and deliver #BP, as the CPU would have. */
  | { kind: 'int3'; length: 1 }
  /** CLAC / STAC: clear or set RFLAGS.AC and step over. */
  | { kind: 'clac' | 'stac'; length: 3 }
  /** FWAIT with no pending x87 exception is a no-op. */
  | { kind: 'skip'; length: number };

/** The fixup for the instruction starting with `insn`, or null when there is none. */
export function fixupFor(insn: Uint8Array): Fixup | null {
  if (insn[0] === 0xcc) return { kind: 'int3', length: 1 };
  if (insn[0] === 0x9b) return { kind: 'skip', length: 1 };
  if (insn[0] === 0x0f && insn[1] === 0x01 && insn[2] === 0xca) return { kind: 'clac', length: 3 };
  if (insn[0] === 0x0f && insn[1] === 0x01 && insn[2] === 0xcb) return { kind: 'stac', length: 3 };
  return null;
}

export const RFLAGS_AC = 1n << 18n;
