// The Intel MultiProcessor Specification 1.4 table that tells Linux how many
// CPUs there are and where the IOAPIC is (the guest gets no ACPI). Written at
// the start of the EBDA, where Linux looks first; without it Linux scans the
// BIOS area, which costs seconds on an emulating host (HOST-KVM.md).
//
// Layout: 16-byte floating pointer "_MP_", then right after it the
// configuration table "PCMP" with, in order: one processor entry per vCPU,
// one ISA bus, one IOAPIC, 16 I/O interrupt entries, 2 local interrupt entries.
//
// ISA IRQ n is routed to IOAPIC pin n for n = 0..15, IRQ 0 included, as
// Firecracker and crosvm do. KVM's in-kernel PIT raises GSI 0 and KVM's
// default routing sends GSI n to IOAPIC pin n, so the timer arrives on pin 0;
// the PC convention of IRQ 0 on pin 2 (an ACPI interrupt override) would not
// match what the in-kernel irqchip does.
import type { GuestMemory } from '../memory.js';
import { IOAPIC_ADDR, LAPIC_ADDR, MPTABLE_ADDR, MPTABLE_LIMIT } from './layout.js';

export const MPF_SIZE = 16;
export const MPC_HEADER_SIZE = 44;
export const MPC_CPU_SIZE = 20;
export const MPC_BUS_SIZE = 8;
export const MPC_IOAPIC_SIZE = 8;
export const MPC_INTSRC_SIZE = 8;
export const MPC_LINTSRC_SIZE = 8;

export const MP_PROCESSOR = 0;
export const MP_BUS = 1;
export const MP_IOAPIC = 2;
export const MP_INTSRC = 3;
export const MP_LINTSRC = 4;

/** Interrupt types of I/O and local interrupt entries. */
export const MP_INT = 0;
export const MP_NMI = 1;
export const MP_EXTINT = 3;

export const CPU_ENABLED = 0x01;
export const CPU_BOOTPROCESSOR = 0x02;
/** Version of KVM's local APIC (integrated xAPIC). */
export const LAPIC_VERSION = 0x14;
export const IOAPIC_VERSION = 0x11;
/** CPU signature in processor entries: family 6, model 0, stepping 0. */
export const CPU_SIGNATURE = 0x600;
/** CPUID.1:EDX features in processor entries: FPU and APIC. */
export const CPU_FEATURES = 0x001 | 0x200;
export const ISA_BUS_ID = 0;
export const ISA_IRQS = 16;
export const MP_SPEC_REV = 4;

const FIXED_SIZE =
  MPF_SIZE + MPC_HEADER_SIZE + MPC_BUS_SIZE + MPC_IOAPIC_SIZE + ISA_IRQS * MPC_INTSRC_SIZE + 2 * MPC_LINTSRC_SIZE;

/** Bytes the whole table takes for `cpus` processors. */
export function mptableSize(cpus: number): number {
  return FIXED_SIZE + cpus * MPC_CPU_SIZE;
}

/** Most CPUs whose table fits between MPTABLE_ADDR and MPTABLE_LIMIT (40). */
export const MPTABLE_MAX_CPUS = Math.floor((MPTABLE_LIMIT - MPTABLE_ADDR - FIXED_SIZE) / MPC_CPU_SIZE);

/** The IOAPIC's APIC id: the first one after the CPUs' 0..cpus-1. */
export const ioapicId = (cpus: number): number => cpus;

function checksum(bytes: Uint8Array): number {
  let sum = 0;
  for (const b of bytes) sum = (sum + b) & 0xff;
  return (0x100 - sum) & 0xff;
}

function ascii(view: Uint8Array, at: number, text: string, len: number): void {
  const padded = text.padEnd(len, ' ');
  for (let i = 0; i < len; i++) view[at + i] = padded.charCodeAt(i);
}

/** Builds the MP floating pointer and configuration table as they sit at `base`. */
export function buildMptable(cpus: number, base = MPTABLE_ADDR): Uint8Array {
  if (!Number.isInteger(cpus) || cpus < 1 || cpus > MPTABLE_MAX_CPUS) {
    throw new RangeError(`the MP table below 0xa0000 has room for 1 to ${MPTABLE_MAX_CPUS} CPUs, not ${cpus}`);
  }
  const out = new Uint8Array(mptableSize(cpus));
  const v = new DataView(out.buffer);

  // Floating pointer.
  ascii(out, 0, '_MP_', 4);
  v.setUint32(4, base + MPF_SIZE, true); // physptr
  out[8] = 1; // length in 16-byte units
  out[9] = MP_SPEC_REV;
  // feature1 = 0: a configuration table is present; feature2 = 0: virtual wire mode, no IMCR.

  // Configuration table.
  const mpc = MPF_SIZE;
  let at = mpc + MPC_HEADER_SIZE;
  let count = 0;
  for (let cpu = 0; cpu < cpus; cpu++, at += MPC_CPU_SIZE, count++) {
    out[at] = MP_PROCESSOR;
    out[at + 1] = cpu; // APIC id
    out[at + 2] = LAPIC_VERSION;
    out[at + 3] = CPU_ENABLED | (cpu === 0 ? CPU_BOOTPROCESSOR : 0);
    v.setUint32(at + 4, CPU_SIGNATURE, true);
    v.setUint32(at + 8, CPU_FEATURES, true);
  }
  out[at] = MP_BUS;
  out[at + 1] = ISA_BUS_ID;
  ascii(out, at + 2, 'ISA', 6);
  at += MPC_BUS_SIZE;
  count++;

  const ioapic = ioapicId(cpus);
  out[at] = MP_IOAPIC;
  out[at + 1] = ioapic;
  out[at + 2] = IOAPIC_VERSION;
  out[at + 3] = 1; // enabled
  v.setUint32(at + 4, IOAPIC_ADDR, true);
  at += MPC_IOAPIC_SIZE;
  count++;

  for (let irq = 0; irq < ISA_IRQS; irq++, at += MPC_INTSRC_SIZE, count++) {
    out[at] = MP_INTSRC;
    out[at + 1] = MP_INT;
    v.setUint16(at + 2, 0, true); // polarity and trigger: conforming to the ISA bus
    out[at + 4] = ISA_BUS_ID;
    out[at + 5] = irq;
    out[at + 6] = ioapic;
    out[at + 7] = irq; // IOAPIC pin
  }

  // LINT0 is ExtINT (the 8259 in virtual wire mode), LINT1 is NMI, on every local APIC.
  for (const [type, lint] of [[MP_EXTINT, 0], [MP_NMI, 1]] as const) {
    out[at] = MP_LINTSRC;
    out[at + 1] = type;
    v.setUint16(at + 2, 0, true);
    out[at + 4] = ISA_BUS_ID;
    out[at + 5] = 0;
    out[at + 6] = 0xff; // all local APICs
    out[at + 7] = lint;
    at += MPC_LINTSRC_SIZE;
    count++;
  }

  ascii(out, mpc, 'PCMP', 4);
  v.setUint16(mpc + 4, at - mpc, true); // base table length
  out[mpc + 6] = MP_SPEC_REV;
  ascii(out, mpc + 8, 'SPLITVM', 8); // OEM id
  ascii(out, mpc + 16, 'SPLITVM', 12); // product id
  v.setUint16(mpc + 34, count, true); // entry count
  v.setUint32(mpc + 36, LAPIC_ADDR, true);
  out[mpc + 7] = checksum(out.subarray(mpc, at));

  out[10] = checksum(out.subarray(0, MPF_SIZE));
  return out;
}

/** Writes the MP table for `cpus` processors at MPTABLE_ADDR. */
export function writeMptable(mem: GuestMemory, cpus: number): void {
  mem.write(MPTABLE_ADDR, buildMptable(cpus));
}
