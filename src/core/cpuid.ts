// The CPUID a vCPU shows its guest: KVM_GET_SUPPORTED_CPUID, with each
// vCPU's APIC id and the topology (one thread per core, one package) filled
// in, and the hypervisor bit set. Pure: unit-tested without KVM.
import type { CpuidEntry } from './kvm/abi.js';

const LEAF1_ECX_HYPERVISOR = 1 << 31;
const LEAF1_EDX_HTT = 1 << 28;

export function cpuidFor(supported: readonly CpuidEntry[], cpu: number, cpus: number): CpuidEntry[] {
  return supported.map((src) => {
    const e = { ...src };
    switch (e.function) {
      case 0x1:
        // EBX[31:24] initial APIC id, [23:16] logical processors per package, [15:8] CLFLUSH size.
        e.ebx = ((cpu << 24) | (cpus << 16) | (e.ebx & 0xffff)) >>> 0;
        e.ecx = (e.ecx | LEAF1_ECX_HYPERVISOR) >>> 0;
        e.edx = (cpus > 1 ? e.edx | LEAF1_EDX_HTT : e.edx & ~LEAF1_EDX_HTT) >>> 0;
        break;
      case 0x4:
        // EAX[31:26] cores per package - 1, [25:14] threads sharing this cache - 1.
        e.eax = ((e.eax & 0x3fff) | ((cpus - 1) << 26)) >>> 0;
        break;
      case 0xb:
      case 0x1f:
        // Extended topology: level 0 = SMT (1 thread), level 1 = core (`cpus` cores).
        if (e.index === 0) {
          e.eax = 0;
          e.ebx = 1;
          e.ecx = (1 << 8) | e.index;
        } else if (e.index === 1) {
          e.eax = Math.ceil(Math.log2(cpus)) || 0;
          e.ebx = cpus;
          e.ecx = (2 << 8) | e.index;
        } else {
          e.eax = 0;
          e.ebx = 0;
          e.ecx = e.index;
        }
        e.edx = cpu;
        break;
      default:
    }
    return e;
  });
}
