// A vCPU thread's own seccomp filter, narrower than the core's: each vCPU
// thread stacks policies/vcpu.policy on itself before its first KVM_RUN,
// once the main thread has sealed the process (a stacked filter must come
// after the core's TSYNC one, which fails if a thread has filters of its
// own). The main thread parses the policy before the seal (it is a file)
// and hands the rules to each thread; it then says through the exit
// channel's SEAL slot whether and how the thread seals itself.
import { loadFilter } from '../../devices/seccomp/compile.js';
import { readPolicy, type PolicyRule } from '../../devices/seccomp/index.js';
import type { SeccompMode } from '../jail/launch.js';
import * as k from '../kvm/ioctls.js';
import { Slot } from './exit-channel.js';

/** The SEAL slot's values: 0 while the main thread has not decided. */
const SealWord = { UNSEALED: 1, ENFORCE: 2, LOG: 3 } as const;

/** The vCPU thread's rules, parsed in the main thread while it may still read files. */
export function readVcpuPolicy(): PolicyRule[] {
  return readPolicy('vcpu', {
    KVM_RUN: k.KVM_RUN, KVM_GET_REGS: k.KVM_GET_REGS, KVM_SET_REGS: k.KVM_SET_REGS, KVM_TRANSLATE: k.KVM_TRANSLATE,
    KVM_GET_VCPU_EVENTS: k.KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS: k.KVM_SET_VCPU_EVENTS,
  });
}

/** Main thread: lets a vCPU thread run, sealing itself with `mode` (undefined: the core is not sealed, nor is the thread). */
export function releaseVcpuThread(ch: Int32Array, mode: SeccompMode | undefined): void {
  const word = mode === 'enforce' ? SealWord.ENFORCE : mode === 'log' ? SealWord.LOG : SealWord.UNSEALED;
  Atomics.store(ch, Slot.SEAL, word);
  Atomics.notify(ch, Slot.SEAL);
}

/**
 * vCPU thread: waits for the main thread's word (or a stop), then loads its
 * own filter if told to. Returns false when the VM stopped meanwhile.
 */
export function sealThisVcpuThread(ch: Int32Array, rules: readonly PolicyRule[]): boolean {
  while (Atomics.load(ch, Slot.SEAL) === 0) {
    if (Atomics.load(ch, Slot.STOP)) return false;
    Atomics.wait(ch, Slot.SEAL, 0, 100);
  }
  const word = Atomics.load(ch, Slot.SEAL);
  if (word !== SealWord.UNSEALED) loadFilter(rules, word === SealWord.LOG ? 'log' : 'kill', 'thread');
  return true;
}
