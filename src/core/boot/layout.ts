// The fixed guest-physical addresses of the x86-64 Linux boot structures
// (64-bit direct entry, the Firecracker/crosvm layout). Everything the VMM
// writes into guest RAM before the first KVM_RUN lives at one of these.

/** Global descriptor table: 4 entries of 8 bytes (null, code, data, TSS). */
export const GDT_ADDR = 0x500;
/** Number of GDT entries written at GDT_ADDR. */
export const GDT_ENTRIES = 4;
/** Interrupt descriptor table: one empty 8-byte entry (Linux installs its own). */
export const IDT_ADDR = 0x520;
/** struct boot_params, "the zero page": 4096 bytes. */
export const ZERO_PAGE_ADDR = 0x7000;
export const ZERO_PAGE_SIZE = 0x1000;
/** Initial RSP/RBP: top of the boot stack, below the page tables. */
export const BOOT_STACK_TOP = 0x8ff0;
/** Identity page tables: PML4, one PDPT, four page directories (4 GiB in 2 MiB pages). */
export const PML4_ADDR = 0x9000;
export const PDPT_ADDR = 0xa000;
export const PD_ADDR = 0xb000;
export const PD_COUNT = 4;
/** Kernel command line, NUL-terminated. */
export const CMDLINE_ADDR = 0x20000;
/** Largest command line in bytes including its NUL (x86 COMMAND_LINE_SIZE). */
export const CMDLINE_MAX = 2048;
/** Start of the EBDA (639 KiB): the first place Linux scans for the MP floating pointer. */
export const EBDA_START = 0x9fc00;
/** Intel MP table: floating pointer, then the configuration table right after it. */
export const MPTABLE_ADDR = EBDA_START;
/** End (exclusive) of the space the MP table may use: the legacy VGA window. */
export const MPTABLE_LIMIT = 0xa0000;
/** First byte above the legacy real-mode area (1 MiB). */
export const HIMEM_START = 0x100000;
/** Where the protected-mode part of a bzImage is loaded. */
export const BZIMAGE_LOAD_ADDR = HIMEM_START;
/** Local APIC and IOAPIC MMIO bases. */
export const LAPIC_ADDR = 0xfee00000;
export const IOAPIC_ADDR = 0xfec00000;
export const PAGE_SIZE = 0x1000;
