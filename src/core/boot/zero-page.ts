// struct boot_params ("the zero page") for the Linux/x86 boot protocol: the
// field offsets (Documentation/arch/x86/boot.rst, uapi asm/bootparam.h) and
// the writer that fills in what a 64-bit direct entry needs — the setup
// header (the bzImage's own, or one built for a vmlinux), command line,
// initrd and the e820 map.
import type { GuestMemory } from '../memory.js';
import { encodeE820, E820_MAX_ENTRIES, type E820Entry } from './e820.js';
import { ZERO_PAGE_ADDR, ZERO_PAGE_SIZE } from './layout.js';

// boot_params fields outside the setup header.
export const BP_EXT_RAMDISK_IMAGE = 0x0c0;
export const BP_EXT_RAMDISK_SIZE = 0x0c4;
export const BP_EXT_CMD_LINE_PTR = 0x0c8;
export const BP_E820_ENTRIES = 0x1e8;
export const BP_E820_TABLE = 0x2d0;

// struct setup_header, as offsets in boot_params (and in a bzImage's first sector).
export const SETUP_HEADER_OFFSET = 0x1f1;
export const HDR_SETUP_SECTS = 0x1f1; // u8
export const HDR_SYSSIZE = 0x1f4; // u32, 16-byte units
export const HDR_BOOT_FLAG = 0x1fe; // u16 = 0xaa55
export const HDR_JUMP = 0x200; // u16; byte 0x201 = header length past 0x202
export const HDR_HEADER = 0x202; // u32 = "HdrS"
export const HDR_VERSION = 0x206; // u16
export const HDR_TYPE_OF_LOADER = 0x210; // u8
export const HDR_LOADFLAGS = 0x211; // u8
export const HDR_CODE32_START = 0x214; // u32
export const HDR_RAMDISK_IMAGE = 0x218; // u32
export const HDR_RAMDISK_SIZE = 0x21c; // u32
export const HDR_HEAP_END_PTR = 0x224; // u16
export const HDR_CMD_LINE_PTR = 0x228; // u32
export const HDR_INITRD_ADDR_MAX = 0x22c; // u32
export const HDR_KERNEL_ALIGNMENT = 0x230; // u32
export const HDR_RELOCATABLE_KERNEL = 0x234; // u8
export const HDR_XLOADFLAGS = 0x236; // u16
export const HDR_CMDLINE_SIZE = 0x238; // u32
export const HDR_PREF_ADDRESS = 0x258; // u64
export const HDR_INIT_SIZE = 0x260; // u32
/** End (exclusive) of the setup header as of protocol 2.15. */
export const SETUP_HEADER_END = 0x26c;

export const BOOT_FLAG_MAGIC = 0xaa55;
/** "HdrS" read as a little-endian u32. */
export const HDRS_MAGIC = 0x53726448;
/** The protocol version this VMM writes into a header it builds. */
export const BOOT_PROTOCOL_VERSION = 0x020f;
/** type_of_loader: "undefined" boot loader. */
export const LOADER_TYPE_UNDEFINED = 0xff;
export const LOADFLAG_LOADED_HIGH = 0x01;
export const LOADFLAG_CAN_USE_HEAP = 0x80;
export const XLF_KERNEL_64 = 0x01;
export const XLF_CAN_BE_LOADED_ABOVE_4G = 0x02;
/**
 * heap_end_ptr: end of the setup stack/heap minus 0x200, with the heap ending
 * at 0xe000 as boot.rst's sample loader does for protocol >= 2.02. Only the
 * real-mode setup code (never run on a 64-bit direct entry) reads it.
 */
export const HEAP_END_PTR = 0xe000 - 0x200;
/** CONFIG_PHYSICAL_ALIGN's default: what a header built for a vmlinux declares. */
export const DEFAULT_KERNEL_ALIGNMENT = 0x1000000;
/**
 * initrd_addr_max for a header built for a vmlinux: the value every 64-bit
 * kernel's own header declares (the initrd must end at or below 2 GiB - 1).
 */
export const DEFAULT_INITRD_ADDR_MAX = 0x7fffffff;

export interface ZeroPageParams {
  /** Setup header bytes from a bzImage, starting at offset 0x1f1; omitted for a vmlinux. */
  setupHeader?: Uint8Array;
  cmdlineAddr: number;
  /** Command line length in bytes, including its NUL. */
  cmdlineSize: number;
  initrd?: { addr: number; size: number };
  e820: readonly E820Entry[];
}

const lo32 = (v: number): number => v % 0x100000000;
const hi32 = (v: number): number => Math.floor(v / 0x100000000);

/** Builds the 4096 bytes of boot_params. */
export function buildZeroPage(p: ZeroPageParams): Uint8Array {
  if (p.e820.length > E820_MAX_ENTRIES) throw new RangeError(`the e820 map has ${p.e820.length} entries; the zero page holds ${E820_MAX_ENTRIES}`);
  const zp = new Uint8Array(ZERO_PAGE_SIZE);
  const v = new DataView(zp.buffer);

  if (p.setupHeader) {
    zp.set(p.setupHeader.subarray(0, SETUP_HEADER_END - SETUP_HEADER_OFFSET), SETUP_HEADER_OFFSET);
  } else {
    v.setUint16(HDR_BOOT_FLAG, BOOT_FLAG_MAGIC, true);
    v.setUint32(HDR_HEADER, HDRS_MAGIC, true);
    v.setUint16(HDR_VERSION, BOOT_PROTOCOL_VERSION, true);
    v.setUint32(HDR_KERNEL_ALIGNMENT, DEFAULT_KERNEL_ALIGNMENT, true);
    v.setUint32(HDR_INITRD_ADDR_MAX, DEFAULT_INITRD_ADDR_MAX, true);
    v.setUint16(HDR_XLOADFLAGS, XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G, true);
  }
  // What the boot loader owns, whichever header we started from.
  v.setUint16(HDR_BOOT_FLAG, BOOT_FLAG_MAGIC, true);
  v.setUint32(HDR_HEADER, HDRS_MAGIC, true);
  zp[HDR_TYPE_OF_LOADER] = LOADER_TYPE_UNDEFINED;
  zp[HDR_LOADFLAGS] = zp[HDR_LOADFLAGS]! | LOADFLAG_LOADED_HIGH | LOADFLAG_CAN_USE_HEAP;
  v.setUint16(HDR_HEAP_END_PTR, HEAP_END_PTR, true);
  v.setUint32(HDR_CMD_LINE_PTR, lo32(p.cmdlineAddr), true);
  v.setUint32(BP_EXT_CMD_LINE_PTR, hi32(p.cmdlineAddr), true);
  // The kernel's own header declares its maximum here; the kernel never reads it
  // back, and like Firecracker we report the length actually passed.
  v.setUint32(HDR_CMDLINE_SIZE, p.cmdlineSize, true);
  if (p.initrd) {
    v.setUint32(HDR_RAMDISK_IMAGE, lo32(p.initrd.addr), true);
    v.setUint32(BP_EXT_RAMDISK_IMAGE, hi32(p.initrd.addr), true);
    v.setUint32(HDR_RAMDISK_SIZE, lo32(p.initrd.size), true);
    v.setUint32(BP_EXT_RAMDISK_SIZE, hi32(p.initrd.size), true);
  }

  zp[BP_E820_ENTRIES] = p.e820.length;
  zp.set(encodeE820(p.e820), BP_E820_TABLE);
  return zp;
}

/** Writes boot_params at ZERO_PAGE_ADDR; returns that address (the vCPU's RSI). */
export function writeZeroPage(mem: GuestMemory, p: ZeroPageParams): number {
  mem.write(ZERO_PAGE_ADDR, buildZeroPage(p));
  return ZERO_PAGE_ADDR;
}
