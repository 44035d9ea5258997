// A vCPU thread's own seccomp filter, narrower than the core's: each vCPU
// thread stacks policies/vcpu.policy on itself before its first KVM_RUN,
// once the main thread has sealed the process (a stacked filter must come
// after the core's TSYNC one, which fails if a thread has filters of its
// own). The main thread reads the policy before the seal (it is a file);
// each thread parses it with its own vCPU's fd (the only fd its ioctls may
// name), then waits for the main thread's word in the exit channel's SEAL
// slot: whether and how to seal itself. A vCPU thread also blocks every
// asynchronous signal but its kick, so that no process-wide signal (a
// SIGTERM, a SIGCHLD) runs its handler on a thread whose filter was not
// written for it: the kernel hands such a signal to another thread.
import fs from 'node:fs';
import path from 'node:path';
import { loadFilter } from '../../devices/seccomp/compile.js';
import { parsePolicy, policiesDir, type PolicyRule } from '../../devices/seccomp/index.js';
import { resolveSyscall } from '../../devices/seccomp/libseccomp.js';
import { blockSignalsExcept } from '../../sys/libc.js';
import type { SeccompMode } from '../jail/launch.js';
import * as k from '../kvm/ioctls.js';
import { Slot } from './exit-channel.js';

/** The SEAL slot's values: 0 while the main thread has not decided. */
const SealWord = { UNSEALED: 1, ENFORCE: 2, LOG: 3 } as const;

/** Signals a vCPU thread still takes: its kick (SIGUSR2), and the faults its own code may raise. */
const KEPT_SIGNALS = [12 /* SIGUSR2 */, 4 /* SIGILL */, 5 /* SIGTRAP */, 6 /* SIGABRT */, 7 /* SIGBUS */, 8 /* SIGFPE */, 11 /* SIGSEGV */, 31 /* SIGSYS */];

/** policies/vcpu.policy, read by the main thread while it may still read files. */
export function readVcpuPolicy(): string {
  return fs.readFileSync(path.join(policiesDir(), 'vcpu.policy'), 'utf8');
}

/** The rules of the thread whose vCPU is `vcpuFd`, parsed in that thread before the seal. */
export function vcpuThreadRules(text: string, vcpuFd: number): PolicyRule[] {
  return parsePolicy('vcpu.policy', {
    readFile: () => text,
    resolveSyscall,
    constants: {
      PID: process.pid, VCPU_FD: vcpuFd,
      KVM_RUN: k.KVM_RUN, KVM_GET_REGS: k.KVM_GET_REGS, KVM_SET_REGS: k.KVM_SET_REGS, KVM_TRANSLATE: k.KVM_TRANSLATE,
      KVM_GET_VCPU_EVENTS: k.KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS: k.KVM_SET_VCPU_EVENTS,
    },
  });
}

/** Main thread: lets a vCPU thread run, sealing itself with `mode` (undefined: the core is not sealed, nor is the thread). */
export function releaseVcpuThread(ch: Int32Array, mode: SeccompMode | undefined): void {
  const word = mode === 'enforce' ? SealWord.ENFORCE : mode === 'log' ? SealWord.LOG : SealWord.UNSEALED;
  Atomics.store(ch, Slot.SEAL, word);
  Atomics.notify(ch, Slot.SEAL);
}

/**
 * vCPU thread: blocks the signals it must not handle, waits for the main
 * thread's word (or a stop), then loads its own filter if told to. Returns
 * false when the VM stopped meanwhile.
 */
export function sealThisVcpuThread(ch: Int32Array, rules: readonly PolicyRule[]): boolean {
  blockSignalsExcept(KEPT_SIGNALS);
  while (Atomics.load(ch, Slot.SEAL) === 0) {
    if (Atomics.load(ch, Slot.STOP)) return false;
    Atomics.wait(ch, Slot.SEAL, 0, 100);
  }
  const word = Atomics.load(ch, Slot.SEAL);
  if (word !== SealWord.UNSEALED) loadFilter(rules, word === SealWord.LOG ? 'log' : 'kill', 'thread');
  return true;
}
