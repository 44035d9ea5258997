// The KVM ABI from <linux/kvm.h> (x86-64): struct layouts as koffi types and
// the field offsets the vCPU loop reads from the shared kvm_run page.
// test/unit/kvm/abi.spec.ts checks every size and offset against a C program
// compiled with the host's kernel headers.
import koffi, { type TypeObject } from 'koffi';

const u8 = 'uint8_t';
const u16 = 'uint16_t';
const u32 = 'uint32_t';
const s32 = 'int32_t';
const u64 = 'uint64_t';
const arr = (t: string | TypeObject, n: number) => koffi.array(t, n, 'Array');

export const kvm_regs = koffi.struct('kvm_regs', {
  rax: u64, rbx: u64, rcx: u64, rdx: u64, rsi: u64, rdi: u64, rsp: u64, rbp: u64,
  r8: u64, r9: u64, r10: u64, r11: u64, r12: u64, r13: u64, r14: u64, r15: u64,
  rip: u64, rflags: u64,
});
/** kvm_regs is 18 consecutive u64: their order, for BigUint64Array access. */
export const REG_NAMES = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags',
] as const;
export type RegName = (typeof REG_NAMES)[number];

export const kvm_segment = koffi.struct('kvm_segment', {
  base: u64, limit: u32, selector: u16, type: u8, present: u8, dpl: u8, db: u8, s: u8, l: u8, g: u8, avl: u8,
  unusable: u8, padding: u8,
});

export const kvm_dtable = koffi.struct('kvm_dtable', { base: u64, limit: u16, padding: arr(u16, 3) });

export const kvm_sregs = koffi.struct('kvm_sregs', {
  cs: kvm_segment, ds: kvm_segment, es: kvm_segment, fs: kvm_segment, gs: kvm_segment, ss: kvm_segment,
  tr: kvm_segment, ldt: kvm_segment, gdt: kvm_dtable, idt: kvm_dtable,
  cr0: u64, cr2: u64, cr3: u64, cr4: u64, cr8: u64, efer: u64, apic_base: u64, interrupt_bitmap: arr(u64, 4),
});

export const kvm_fpu = koffi.struct('kvm_fpu', {
  fpr: arr(u8, 128), fcw: u16, fsw: u16, ftwx: u8, pad1: u8, last_opcode: u16, last_ip: u64, last_dp: u64,
  xmm: arr(u8, 256), mxcsr: u32, pad2: u32,
});

export const kvm_userspace_memory_region = koffi.struct('kvm_userspace_memory_region', {
  slot: u32, flags: u32, guest_phys_addr: u64, memory_size: u64, userspace_addr: u64,
});

export const kvm_cpuid_entry2 = koffi.struct('kvm_cpuid_entry2', {
  function: u32, index: u32, flags: u32, eax: u32, ebx: u32, ecx: u32, edx: u32, padding: arr(u32, 3),
});
/** Header of kvm_cpuid2; `entries` follow it. */
export const kvm_cpuid2 = koffi.struct('kvm_cpuid2', { nent: u32, padding: u32 });

export const kvm_msr_entry = koffi.struct('kvm_msr_entry', { index: u32, reserved: u32, data: u64 });
/** Header of kvm_msrs; `entries` follow it. */
export const kvm_msrs = koffi.struct('kvm_msrs', { nmsrs: u32, pad: u32 });

export const kvm_lapic_state = koffi.struct('kvm_lapic_state', { regs: arr(u8, 1024) });

export const kvm_irq_level = koffi.struct('kvm_irq_level', { irq: u32, level: u32 });

export const kvm_pit_config = koffi.struct('kvm_pit_config', { flags: u32, pad: arr(u32, 15) });

export const kvm_irqfd = koffi.struct('kvm_irqfd', { fd: u32, gsi: u32, flags: u32, resamplefd: u32, pad: arr(u8, 16) });

export const kvm_ioeventfd = koffi.struct('kvm_ioeventfd', {
  datamatch: u64, addr: u64, len: u32, fd: s32, flags: u32, pad: arr(u8, 36),
});

export const kvm_irq_routing_msi = koffi.struct('kvm_irq_routing_msi', { address_lo: u32, address_hi: u32, data: u32, devid: u32 });
export const kvm_irq_routing_entry = koffi.struct('kvm_irq_routing_entry', {
  gsi: u32, type: u32, flags: u32, pad: u32,
  u: koffi.union('kvm_irq_routing_entry_u', {
    irqchip: koffi.struct('kvm_irq_routing_irqchip', { irqchip: u32, pin: u32 }),
    msi: kvm_irq_routing_msi,
    pad: arr(u32, 8),
  }),
});
/** Header of kvm_irq_routing; `entries` follow it. */
export const kvm_irq_routing = koffi.struct('kvm_irq_routing', { nr: u32, flags: u32 });

export const kvm_msi = koffi.struct('kvm_msi', { address_lo: u32, address_hi: u32, data: u32, flags: u32, devid: u32, pad: arr(u8, 12) });

export const kvm_translation = koffi.struct('kvm_translation', {
  linear_address: u64, physical_address: u64, valid: u8, writeable: u8, usermode: u8, pad: arr(u8, 5),
});

export const kvm_vcpu_events = koffi.struct('kvm_vcpu_events', {
  exception: koffi.struct({ injected: u8, nr: u8, has_error_code: u8, pending: u8, error_code: u32 }),
  interrupt: koffi.struct({ injected: u8, nr: u8, soft: u8, shadow: u8 }),
  nmi: koffi.struct({ injected: u8, pending: u8, masked: u8, pad: u8 }),
  sipi_vector: u32,
  flags: u32,
  smi: koffi.struct({ smm: u8, pending: u8, smm_inside_nmi: u8, latched_init: u8 }),
  triple_fault: koffi.struct({ pending: u8 }),
  reserved: arr(u8, 26),
  exception_has_payload: u8,
  exception_payload: u64,
});

export const kvm_enable_cap = koffi.struct('kvm_enable_cap', { cap: u32, flags: u32, args: arr(u64, 4), pad: arr(u8, 64) });

/** Offsets in `struct kvm_run` (the page mmap'ed from a vCPU fd). */
export const RUN = {
  request_interrupt_window: 0,
  immediate_exit: 1,
  exit_reason: 8,
  ready_for_interrupt_injection: 12,
  if_flag: 13,
  flags: 14,
  cr8: 16,
  apic_base: 24,
  /** The exit union starts here. */
  exit: 32,
  io: { direction: 32, size: 33, port: 34, count: 36, data_offset: 40 },
  mmio: { phys_addr: 32, data: 40, len: 48, is_write: 52 },
  internal: { suberror: 32, ndata: 36, data: 40 },
  fail_entry: { hardware_entry_failure_reason: 32, cpu: 40 },
  system_event: { type: 32, ndata: 36, data: 40 },
} as const;

/** Byte image of a koffi struct value. */
export function encode(type: TypeObject, value: object, extra = 0): Uint8Array {
  const buf = new Uint8Array(koffi.sizeof(type) + extra);
  koffi.encode(buf, type, value);
  return buf;
}

export function decode<T>(type: TypeObject, buf: Uint8Array, offset = 0): T {
  return koffi.decode(buf, offset, type) as T;
}

export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

/** One segment register (struct kvm_segment); `limit` is in bytes, already scaled when g = 1. */
export interface Segment {
  base: number;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
  avl: number;
  unusable?: number;
}

export interface DTable {
  base: number;
  limit: number;
}

export interface Sregs {
  cs: Segment; ds: Segment; es: Segment; fs: Segment; gs: Segment; ss: Segment; tr: Segment; ldt: Segment;
  gdt: DTable; idt: DTable;
  cr0: number; cr2: number; cr3: number; cr4: number; cr8: number; efer: number; apic_base: number;
  interrupt_bitmap: number[];
}
