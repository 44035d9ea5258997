// The boot page tables: an identity map of the first 4 GiB of guest-physical
// space in 2 MiB pages (PML4 → one PDPT → four page directories), which is
// what a 64-bit direct entry needs until Linux builds its own. Covers RAM
// below the MMIO hole and the hole itself (LAPIC/IOAPIC, PCI BARs).
import type { GuestMemory } from '../memory.js';
import { PD_ADDR, PD_COUNT, PDPT_ADDR, PML4_ADDR, PAGE_SIZE } from './layout.js';

export const PTE_PRESENT = 0x1n;
export const PTE_WRITABLE = 0x2n;
/** Page size bit in a page-directory entry: the entry maps a 2 MiB page. */
export const PTE_PS = 0x80n;
const ENTRIES_PER_TABLE = 512;
const TWO_MIB = 0x200000n;

/** Writes PML4, PDPT and the page directories; returns the CR3 value (the PML4 address). */
export function writePageTables(mem: GuestMemory): number {
  const pml4 = new Uint8Array(PAGE_SIZE);
  new DataView(pml4.buffer).setBigUint64(0, BigInt(PDPT_ADDR) | PTE_PRESENT | PTE_WRITABLE, true);

  const pdpt = new Uint8Array(PAGE_SIZE);
  const pdptView = new DataView(pdpt.buffer);
  for (let i = 0; i < PD_COUNT; i++) {
    pdptView.setBigUint64(i * 8, BigInt(PD_ADDR + i * PAGE_SIZE) | PTE_PRESENT | PTE_WRITABLE, true);
  }

  const pds = new Uint8Array(PD_COUNT * PAGE_SIZE);
  const pdView = new DataView(pds.buffer);
  for (let i = 0; i < PD_COUNT * ENTRIES_PER_TABLE; i++) {
    pdView.setBigUint64(i * 8, (BigInt(i) * TWO_MIB) | PTE_PRESENT | PTE_WRITABLE | PTE_PS, true);
  }

  mem.write(PML4_ADDR, pml4);
  mem.write(PDPT_ADDR, pdpt);
  mem.write(PD_ADDR, pds);
  return PML4_ADDR;
}
