// What the main thread gives a vCPU worker at start, and what the worker
// posts back (its thread id once running, and why its run loop ended).
import type { CpuidEntry, RegName, Sregs } from '../kvm/abi.js';
import type { MemoryRegion } from '../memory.js';

export interface VcpuBootState {
  regs: Partial<Record<RegName, bigint>>;
  sregs: Partial<Sregs>;
}

export interface VcpuInit {
  id: number;
  vmFd: number;
  mmapSize: number;
  cpuid: CpuidEntry[];
  /** Only the boot CPU has a boot state; the others wait for INIT/SIPI in the in-kernel LAPIC. */
  boot?: VcpuBootState;
  channel: Int32Array;
  /** Apply the software-KVM fixups (see quirks.ts). */
  quirks: boolean;
  /** Guest RAM, to read the instruction at RIP when the emulator fails. */
  memory: { hostAddr: bigint; size: number; regions: MemoryRegion[] };
}

export type ExitReason = 'reset' | 'poweroff' | 'stopped' | 'error';

export type VcpuMessage =
  | { type: 'ready'; tid: number; runAddr: bigint }
  /** A software-KVM fixup was applied (rare: a handful per boot). */
  | { type: 'fixup'; kind: string; rip: bigint }
  | { type: 'exit'; reason: ExitReason; fixups: number; message?: string };
