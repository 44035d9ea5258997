// The boot GDT and IDT: encodes the flat 64-bit descriptors, writes them to
// guest memory, and derives from the very same entry bits the segment
// registers (KVM struct kvm_segment semantics) and the GDTR/IDTR values the
// vCPU is started with, so the two can never disagree.
import type { DTable as DescriptorTable, Segment } from '../kvm/abi.js';
import type { GuestMemory } from '../memory.js';
import { GDT_ADDR, GDT_ENTRIES, IDT_ADDR } from './layout.js';

/** A segment register and a descriptor-table register, as KVM_SET_SREGS takes them. */
export type { Segment, DTable as DescriptorTable } from '../kvm/abi.js';

export const GDT_SELECTOR_CODE = 0x08;
export const GDT_SELECTOR_DATA = 0x10;
export const GDT_SELECTOR_TSS = 0x18;

/** Flags word: access byte in bits 0–7, G/DB/L/AVL nibble in bits 12–15. */
export const GDT_FLAGS_CODE64 = 0xa09b; // P, S, type 0xb (exec/read, accessed); G, L
export const GDT_FLAGS_DATA = 0xc093; // P, S, type 0x3 (read/write, accessed); G, DB
export const GDT_FLAGS_TSS = 0x808b; // P, type 0xb (busy 64-bit TSS); G

/** Encodes one 8-byte segment descriptor. */
export function gdtEntry(flags: number, base: number, limit: number): bigint {
  const b = BigInt(base >>> 0);
  const l = BigInt(limit >>> 0);
  const f = BigInt(flags & 0xf0ff);
  return (
    ((b & 0xff000000n) << 32n) |
    (f << 40n) |
    ((l & 0xf0000n) << 32n) |
    ((b & 0x00ffffffn) << 16n) |
    (l & 0xffffn)
  );
}

/**
 * The boot GDT: null, 64-bit code, data, TSS. The TSS entry is the 8-byte
 * form, as Firecracker writes it: TR is loaded through KVM_SET_SREGS, never by
 * LTR, and Linux replaces the GDT and TSS before it needs either.
 */
export function bootGdtEntries(): bigint[] {
  return [
    0n,
    gdtEntry(GDT_FLAGS_CODE64, 0, 0xfffff),
    gdtEntry(GDT_FLAGS_DATA, 0, 0xfffff),
    gdtEntry(GDT_FLAGS_TSS, 0, 0xfffff),
  ];
}

/** Decodes a descriptor into the segment register KVM should hold for `selector`. */
export function segmentFromEntry(entry: bigint, selector: number): Segment {
  const bits = (shift: bigint, mask: bigint): number => Number((entry >> shift) & mask);
  const g = bits(55n, 1n);
  const rawLimit = bits(0n, 0xffffn) | (bits(48n, 0xfn) << 16);
  return {
    base: bits(16n, 0xffffffn) + bits(56n, 0xffn) * 0x1000000,
    limit: g ? rawLimit * 0x1000 + 0xfff : rawLimit,
    selector,
    type: bits(40n, 0xfn),
    present: bits(47n, 1n),
    dpl: bits(45n, 3n),
    db: bits(54n, 1n),
    s: bits(44n, 1n),
    l: bits(53n, 1n),
    g,
    avl: bits(52n, 1n),
  };
}

export interface BootSegments {
  cs: Segment;
  ds: Segment;
  es: Segment;
  fs: Segment;
  gs: Segment;
  ss: Segment;
  tr: Segment;
  ldt: Segment;
}

export interface GdtSetup {
  segments: BootSegments;
  gdt: DescriptorTable;
  idt: DescriptorTable;
}

/**
 * LDTR as KVM resets it: selector 0, an LDT type, present. Linux never uses an
 * LDT during boot; this only has to pass the VM-entry checks.
 */
const LDT_SEGMENT: Segment = {
  base: 0, limit: 0xffff, selector: 0, type: 2, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0, avl: 0,
};

/** Writes the GDT at GDT_ADDR and an empty IDT at IDT_ADDR; returns the vCPU's segment state. */
export function writeGdt(mem: GuestMemory): GdtSetup {
  const entries = bootGdtEntries();
  const gdtBytes = new Uint8Array(GDT_ENTRIES * 8);
  const view = new DataView(gdtBytes.buffer);
  entries.forEach((e, i) => view.setBigUint64(i * 8, e, true));
  mem.write(GDT_ADDR, gdtBytes);
  // One zero entry: no handlers. A fault before Linux loads its IDT triple-faults,
  // which the VMM sees as a shutdown exit.
  mem.write(IDT_ADDR, new Uint8Array(8));

  const code = segmentFromEntry(entries[1]!, GDT_SELECTOR_CODE);
  const data = segmentFromEntry(entries[2]!, GDT_SELECTOR_DATA);
  const tss = segmentFromEntry(entries[3]!, GDT_SELECTOR_TSS);
  return {
    segments: {
      cs: code,
      ds: { ...data },
      es: { ...data },
      fs: { ...data },
      gs: { ...data },
      ss: { ...data },
      tr: tss,
      ldt: { ...LDT_SEGMENT },
    },
    gdt: { base: GDT_ADDR, limit: GDT_ENTRIES * 8 - 1 },
    idt: { base: IDT_ADDR, limit: 8 - 1 },
  };
}
