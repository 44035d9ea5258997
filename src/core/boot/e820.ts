// The BIOS e820 memory map handed to Linux in the zero page, computed from
// the guest's RAM regions.
//
// Layout: RAM [0, EBDA_START); reserved [EBDA_START, 1 MiB) (EBDA with the MP
// table, the VGA window and the BIOS area: nothing Linux may allocate);
// RAM [1 MiB, top of low RAM); RAM above 4 GiB when the guest has any.
// The MMIO hole between the top of low RAM and 4 GiB is deliberately left
// out rather than marked reserved: Linux treats a gap in the map as a hole,
// and e820__setup_pci_gap() places PCI resources in the largest such gap
// below 4 GiB. Reserving it would hide it from that search.
import type { MemoryRegion } from '../memory.js';
import { EBDA_START, HIMEM_START } from './layout.js';

export const E820_RAM = 1;
export const E820_RESERVED = 2;
/** Bytes per entry in boot_params.e820_table (u64 addr, u64 size, u32 type, packed). */
export const E820_ENTRY_SIZE = 20;
/** Capacity of boot_params.e820_table (E820_MAX_ENTRIES_ZEROPAGE). */
export const E820_MAX_ENTRIES = 128;

export interface E820Entry {
  addr: number;
  size: number;
  type: number;
}

/** The e820 map for guest RAM laid out as `regions` (see ramLayout). */
export function e820Map(regions: readonly MemoryRegion[]): E820Entry[] {
  const map: E820Entry[] = [];
  for (const r of regions) {
    const end = r.gpa + r.size;
    if (r.gpa < HIMEM_START) {
      const lowTop = Math.min(end, EBDA_START);
      if (lowTop > r.gpa) map.push({ addr: r.gpa, size: lowTop - r.gpa, type: E820_RAM });
      map.push({ addr: EBDA_START, size: HIMEM_START - EBDA_START, type: E820_RESERVED });
      if (end > HIMEM_START) map.push({ addr: HIMEM_START, size: end - HIMEM_START, type: E820_RAM });
    } else {
      map.push({ addr: r.gpa, size: r.size, type: E820_RAM });
    }
  }
  if (map.length > E820_MAX_ENTRIES) throw new RangeError(`the e820 map has ${map.length} entries, more than the ${E820_MAX_ENTRIES} the zero page holds`);
  return map;
}

/** Encodes entries in the zero-page table format. */
export function encodeE820(entries: readonly E820Entry[]): Uint8Array {
  const out = new Uint8Array(entries.length * E820_ENTRY_SIZE);
  const view = new DataView(out.buffer);
  entries.forEach((e, i) => {
    const o = i * E820_ENTRY_SIZE;
    view.setBigUint64(o, BigInt(e.addr), true);
    view.setBigUint64(o + 8, BigInt(e.size), true);
    view.setUint32(o + 16, e.type, true);
  });
  return out;
}
