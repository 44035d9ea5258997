// KVM ioctl request numbers, built from <linux/kvm.h>'s _IO/_IOR/_IOW/_IOWR
// definitions with struct sizes taken from abi.ts (checked against the C
// headers by the ABI test), plus the exit reasons, capability numbers and
// flags the core uses.
import koffi, { type TypeObject } from 'koffi';
import * as abi from './abi.js';

const KVMIO = 0xae;
const IOC_NONE = 0;
const IOC_WRITE = 1;
const IOC_READ = 2;

const ioc = (dir: number, nr: number, size: number): number => ((dir << 30) | (size << 16) | (KVMIO << 8) | nr) >>> 0;
const io = (nr: number) => ioc(IOC_NONE, nr, 0);
const ior = (nr: number, t: TypeObject | number) => ioc(IOC_READ, nr, typeof t === 'number' ? t : koffi.sizeof(t));
const iow = (nr: number, t: TypeObject | number) => ioc(IOC_WRITE, nr, typeof t === 'number' ? t : koffi.sizeof(t));
const iowr = (nr: number, t: TypeObject | number) => ioc(IOC_READ | IOC_WRITE, nr, typeof t === 'number' ? t : koffi.sizeof(t));

export const KVM_GET_API_VERSION = io(0x00);
export const KVM_CREATE_VM = io(0x01);
export const KVM_CHECK_EXTENSION = io(0x03);
export const KVM_GET_VCPU_MMAP_SIZE = io(0x04);
export const KVM_GET_SUPPORTED_CPUID = iowr(0x05, abi.kvm_cpuid2);
export const KVM_CREATE_VCPU = io(0x41);
export const KVM_SET_USER_MEMORY_REGION = iow(0x46, abi.kvm_userspace_memory_region);
export const KVM_SET_TSS_ADDR = io(0x47);
export const KVM_SET_IDENTITY_MAP_ADDR = iow(0x48, 8);
export const KVM_CREATE_IRQCHIP = io(0x60);
export const KVM_IRQ_LINE = iow(0x61, abi.kvm_irq_level);
export const KVM_SET_GSI_ROUTING = iow(0x6a, abi.kvm_irq_routing);
export const KVM_IRQFD = iow(0x76, abi.kvm_irqfd);
export const KVM_CREATE_PIT2 = iow(0x77, abi.kvm_pit_config);
export const KVM_IOEVENTFD = iow(0x79, abi.kvm_ioeventfd);
export const KVM_SIGNAL_MSI = iow(0xa5, abi.kvm_msi);
/** struct kvm_clock_data: u64 clock, u32 flags, u32 pad0, u64 realtime, u64 host_tsc, u32 pad[4]. */
export const KVM_CLOCK_DATA_BYTES = 48;
export const KVM_SET_CLOCK = iow(0x7b, KVM_CLOCK_DATA_BYTES);
export const KVM_GET_CLOCK = ior(0x7c, KVM_CLOCK_DATA_BYTES);
export const KVM_ENABLE_CAP = iow(0xa3, abi.kvm_enable_cap);
export const KVM_RUN = io(0x80);
export const KVM_GET_REGS = ior(0x81, abi.kvm_regs);
export const KVM_SET_REGS = iow(0x82, abi.kvm_regs);
export const KVM_GET_SREGS = ior(0x83, abi.kvm_sregs);
export const KVM_SET_SREGS = iow(0x84, abi.kvm_sregs);
export const KVM_TRANSLATE = iowr(0x85, abi.kvm_translation);
export const KVM_GET_MSRS = iowr(0x88, abi.kvm_msrs);
export const KVM_SET_MSRS = iow(0x89, abi.kvm_msrs);
export const KVM_SET_FPU = iow(0x8d, abi.kvm_fpu);
export const KVM_GET_LAPIC = ior(0x8e, abi.kvm_lapic_state);
export const KVM_SET_LAPIC = iow(0x8f, abi.kvm_lapic_state);
export const KVM_SET_CPUID2 = iow(0x90, abi.kvm_cpuid2);
export const KVM_GET_VCPU_EVENTS = ior(0x9f, abi.kvm_vcpu_events);
export const KVM_SET_VCPU_EVENTS = iow(0xa0, abi.kvm_vcpu_events);

export const KVM_API_VERSION = 12;

export const Exit = {
  IO: 2,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24,
} as const;

export const EXIT_IO_OUT = 1;
export const INTERNAL_ERROR_EMULATION = 1;
export const SYSTEM_EVENT_SHUTDOWN = 1;
export const SYSTEM_EVENT_RESET = 2;

export const Cap = {
  NR_VCPUS: 9,
  MAX_VCPUS: 66,
} as const;

export const KVM_PIT_SPEAKER_DUMMY = 1;
export const KVM_IRQ_ROUTING_IRQCHIP = 1;
export const KVM_IRQ_ROUTING_MSI = 2;
export const KVM_IRQCHIP_PIC_MASTER = 0;
export const KVM_IRQCHIP_PIC_SLAVE = 1;
export const KVM_IRQCHIP_IOAPIC = 2;
export const KVM_IRQFD_FLAG_DEASSIGN = 1;
export const KVM_IOEVENTFD_FLAG_DATAMATCH = 1;
export const KVM_IOEVENTFD_FLAG_PIO = 2;
export const KVM_IOEVENTFD_FLAG_DEASSIGN = 4;

/** The KVM requests a running VM makes, by name: what policies/core.policy and policies/vcpu.policy may allow. */
export const RUNNING_VM_REQUESTS = {
  KVM_RUN, KVM_GET_REGS, KVM_SET_REGS, KVM_GET_SREGS, KVM_SET_SREGS, KVM_TRANSLATE, KVM_GET_VCPU_EVENTS, KVM_SET_VCPU_EVENTS,
  KVM_IRQ_LINE, KVM_SIGNAL_MSI, KVM_IOEVENTFD, KVM_IRQFD, KVM_SET_GSI_ROUTING, KVM_GET_CLOCK, KVM_SET_CLOCK,
};
