// A vCPU thread's own seccomp filter, narrower than the core's: each vCPU
// thread stacks policies/vcpu.policy on itself before its first KVM_RUN,
// once the main thread has sealed the process (a stacked filter must come
// after the core's TSYNC one, which fails if a thread has filters of its
// own). Each thread parses the policy with its own vCPU's fd (the only fd
// its ioctls may name) while it may still read files, then waits for the
// main thread's word in the exit channel's SEAL slot: whether and how to
// seal itself, or that the VM stopped. A vCPU thread also blocks every
// asynchronous signal but its kick, so that no process-wide signal (a
// SIGTERM, a SIGCHLD) runs its handler on a thread whose filter was not
// written for it: the kernel hands such a signal to another thread.
import { constants } from 'node:os';
import { loadFilter } from '../../devices/seccomp/compile.js';
import { readPolicy, type PolicyRule } from '../../devices/seccomp/index.js';
import { blockSignalsExcept } from '../../sys/libc.js';
import type { SeccompMode } from '../jail/launch.js';
import { RUNNING_VM_REQUESTS } from '../kvm/ioctls.js';
import { Slot } from './exit-channel.js';

/** The SEAL slot's values: 0 while the main thread has not decided. */
const SealWord = { UNSEALED: 1, ENFORCE: 2, LOG: 3, STOPPED: 4 } as const;

/** Signals a vCPU thread still takes: its kick (SIGUSR2), and the faults its own code may raise. */
const { SIGUSR2, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS } = constants.signals;
const KEPT_SIGNALS = [SIGUSR2, SIGILL, SIGTRAP, SIGABRT, SIGBUS, SIGFPE, SIGSEGV, SIGSYS];

/** The rules of the thread whose vCPU is `vcpuFd`, parsed in that thread before the seal. */
export function vcpuThreadRules(vcpuFd: number): PolicyRule[] {
  return readPolicy('vcpu', { ...RUNNING_VM_REQUESTS, VCPU_FD: vcpuFd });
}

/** Main thread: lets a vCPU thread run, sealing itself with `mode` (undefined: the core is not sealed, nor is the thread). */
export function releaseVcpuThread(ch: Int32Array, mode: SeccompMode | undefined): void {
  const word = mode === 'enforce' ? SealWord.ENFORCE : mode === 'log' ? SealWord.LOG : SealWord.UNSEALED;
  Atomics.store(ch, Slot.SEAL, word);
  Atomics.notify(ch, Slot.SEAL);
}

/** Main thread: the VM stops; a thread not yet released leaves without running the guest. */
export function stopUnreleasedVcpuThread(ch: Int32Array): void {
  Atomics.compareExchange(ch, Slot.SEAL, 0, SealWord.STOPPED);
  Atomics.notify(ch, Slot.SEAL);
}

/**
 * vCPU thread: blocks the signals it must not handle, waits for the main
 * thread's word, then loads its own filter if told to. Returns false when
 * the VM stopped meanwhile.
 */
export function sealThisVcpuThread(ch: Int32Array, rules: readonly PolicyRule[]): boolean {
  blockSignalsExcept(KEPT_SIGNALS);
  while (Atomics.load(ch, Slot.SEAL) === 0) Atomics.wait(ch, Slot.SEAL, 0);
  const word = Atomics.load(ch, Slot.SEAL);
  if (word === SealWord.STOPPED) return false;
  if (word !== SealWord.UNSEALED) loadFilter(rules, word === SealWord.LOG ? 'log' : 'kill', 'thread');
  return true;
}
