// Linux boot for x86-64 by 64-bit direct entry: detects the kernel format,
// loads the kernel and initrd, writes every boot structure (command line,
// zero page with e820, page tables, GDT/IDT, MP table) and returns the
// initial register state of the boot vCPU as plain data.
import type { GuestMemory } from '../memory.js';
import { loadBzImage, hasSetupHeader } from './bzimage.js';
import { e820Map } from './e820.js';
import { BootError, KernelFormatError } from './errors.js';
import { isElf, loadElf } from './elf.js';
import { writeGdt, type BootSegments, type DescriptorTable } from './gdt.js';
import { BOOT_STACK_TOP, CMDLINE_ADDR, CMDLINE_MAX, MPTABLE_ADDR, PAGE_SIZE } from './layout.js';
import { buildMptable } from './mptable.js';
import { writePageTables } from './page-tables.js';
import { DEFAULT_INITRD_ADDR_MAX, writeZeroPage } from './zero-page.js';

export { BootError, KernelFormatError };
export type { BootSegments, DescriptorTable, Segment } from './gdt.js';

export type KernelFormat = 'elf' | 'bzimage';

export const CR0_PE = 0x1;
export const CR0_MP = 0x2;
export const CR0_ET = 0x10;
export const CR0_NE = 0x20;
export const CR0_WP = 0x10000;
export const CR0_PG = 0x80000000;
export const CR4_PAE = 0x20;
export const EFER_LME = 0x100;
export const EFER_LMA = 0x400;
/** RFLAGS bit 1 is reserved and always set; interrupts start disabled. */
export const RFLAGS_RESERVED = 0x2;

/**
 * CR0 at entry. Long mode requires PE and PG. The rest is what Linux itself
 * loads into CR0 shortly after (CR0_STATE minus AM): MP and NE so x87 errors
 * are reported as #MF exceptions rather than through the legacy IRQ 13 path,
 * ET (hard-wired on modern CPUs), WP so that read-only pages are read-only
 * for the kernel too. CD and NW stay clear: caching on.
 */
export const BOOT_CR0 = (CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG) >>> 0;

export interface LinuxBootOptions {
  kernel: Uint8Array;
  initrd?: Uint8Array;
  cmdline: string;
  cpus: number;
}

/** Register state of the boot vCPU (KVM_SET_REGS + KVM_SET_SREGS). */
export interface BootCpuState {
  rip: number;
  rsp: number;
  rbp: number;
  /** Guest-physical address of boot_params. */
  rsi: number;
  rflags: number;
  cr0: number;
  cr3: number;
  cr4: number;
  efer: number;
  segments: BootSegments;
  gdt: DescriptorTable;
  idt: DescriptorTable;
}

export interface LinuxBootResult {
  format: KernelFormat;
  cpu: BootCpuState;
  /** Guest-physical end (exclusive) of the memory the kernel occupies. */
  kernelEnd: number;
  /** The initrd's guest-physical placement, when one was given. */
  initrd?: { addr: number; size: number };
}

/** Tells an ELF vmlinux from a bzImage; throws KernelFormatError for anything else. */
export function detectKernelFormat(bytes: Uint8Array): KernelFormat {
  if (isElf(bytes)) return 'elf';
  if (hasSetupHeader(bytes)) return 'bzimage';
  throw new KernelFormatError('the kernel file is not a Linux kernel (neither an ELF vmlinux nor a bzImage)');
}

/** Encodes and validates the command line; returns its bytes with the NUL. */
export function encodeCmdline(cmdline: string, max = CMDLINE_MAX): Uint8Array {
  if (cmdline.includes('\0')) throw new BootError('the kernel command line contains a NUL character');
  const text = new TextEncoder().encode(cmdline);
  if (text.length + 1 > max) {
    throw new BootError(`the kernel command line is ${text.length} bytes; at most ${max - 1} fit`);
  }
  const out = new Uint8Array(text.length + 1);
  out.set(text);
  return out;
}

/**
 * Where the initrd goes: the highest page-aligned address that keeps it in
 * low RAM, at or below `addrMax` (its last byte), and above the kernel.
 */
export function placeInitrd(size: number, kernelEnd: number, lowEnd: number, addrMax: number): number {
  const limit = Math.min(lowEnd, addrMax + 1);
  const addr = Math.floor((limit - size) / PAGE_SIZE) * PAGE_SIZE;
  const lowest = Math.ceil(kernelEnd / PAGE_SIZE) * PAGE_SIZE;
  if (size > limit || addr < lowest) {
    throw new BootError(
      `the initrd (${size} bytes) does not fit in guest RAM between the kernel's end (0x${lowest.toString(16)}) ` +
        `and 0x${limit.toString(16)}; give the guest more memory or use a smaller initrd`,
    );
  }
  return addr;
}

/** Loads Linux and writes every boot structure; returns the boot vCPU's state. */
export function loadLinux(mem: GuestMemory, opts: LinuxBootOptions): LinuxBootResult {
  const cmdline = encodeCmdline(opts.cmdline);
  const mptable = buildMptable(opts.cpus); // validates the CPU count before anything is written

  const format = detectKernelFormat(opts.kernel);
  let entry: number;
  let kernelEnd: number;
  let setupHeader: Uint8Array | undefined;
  let initrdAddrMax = DEFAULT_INITRD_ADDR_MAX;
  if (format === 'elf') {
    ({ entry, end: kernelEnd } = loadElf(mem, opts.kernel));
  } else {
    const bz = loadBzImage(mem, opts.kernel);
    ({ entry, end: kernelEnd, setupHeader } = bz);
    if (bz.initrdAddrMax !== 0) initrdAddrMax = bz.initrdAddrMax;
  }

  let initrd: { addr: number; size: number } | undefined;
  if (opts.initrd && opts.initrd.length > 0) {
    const addr = placeInitrd(opts.initrd.length, kernelEnd, mem.lowEnd, initrdAddrMax);
    mem.write(addr, opts.initrd);
    initrd = { addr, size: opts.initrd.length };
  }

  mem.write(CMDLINE_ADDR, cmdline);
  const zeroPage = writeZeroPage(mem, {
    setupHeader,
    cmdlineAddr: CMDLINE_ADDR,
    cmdlineSize: cmdline.length,
    initrd,
    e820: e820Map(mem.regions),
  });
  const cr3 = writePageTables(mem);
  const { segments, gdt, idt } = writeGdt(mem);
  mem.write(MPTABLE_ADDR, mptable);

  return {
    format,
    kernelEnd,
    initrd,
    cpu: {
      rip: entry,
      rsp: BOOT_STACK_TOP,
      rbp: BOOT_STACK_TOP,
      rsi: zeroPage,
      rflags: RFLAGS_RESERVED,
      cr0: BOOT_CR0,
      cr3,
      cr4: CR4_PAE,
      efer: EFER_LME | EFER_LMA,
      segments,
      gdt,
      idt,
    },
  };
}
