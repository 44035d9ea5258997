// Loading a bzImage for 64-bit direct entry: the setup header is checked
// (protocol >= 2.12, a 64-bit kernel), the protected-mode part is copied to
// 1 MiB as Firecracker does, and the 64-bit entry is 0x200 past it. The real-
// mode setup code is never run; its header goes into the zero page.
import type { GuestMemory } from '../memory.js';
import { KernelFormatError } from './errors.js';
import { BZIMAGE_LOAD_ADDR } from './layout.js';
import {
  HDR_HEADER, HDR_INIT_SIZE, HDR_INITRD_ADDR_MAX, HDR_JUMP, HDR_SETUP_SECTS, HDR_VERSION, HDR_XLOADFLAGS,
  HDRS_MAGIC, SETUP_HEADER_END, SETUP_HEADER_OFFSET, XLF_KERNEL_64,
} from './zero-page.js';

/** Oldest boot protocol accepted: 2.12 introduced xloadflags and its XLF_KERNEL_64. */
export const MIN_BOOT_PROTOCOL = 0x020c;
/** Offset of startup_64 from the start of the protected-mode code. */
export const STARTUP_64_OFFSET = 0x200;
const SECTOR = 512;

export interface LoadedBzImage {
  /** Guest-physical 64-bit entry point. */
  entry: number;
  /** Guest-physical end (exclusive) of the memory the kernel claims (image or init_size, the larger). */
  end: number;
  /** The setup header (bytes from offset 0x1f1) to copy into the zero page. */
  setupHeader: Uint8Array;
  /** Highest address the initrd may occupy, from the header. */
  initrdAddrMax: number;
}

/** True when `bytes` carries a Linux setup header ("HdrS" at 0x202). */
export function hasSetupHeader(bytes: Uint8Array): boolean {
  return bytes.length >= HDR_HEADER + 4 &&
    new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength).getUint32(HDR_HEADER, true) === HDRS_MAGIC;
}

interface BzImageHeader {
  setupHeader: Uint8Array;
  protectedModeOffset: number;
  initSize: number;
  initrdAddrMax: number;
}

/** Validates and decodes the parts of a bzImage's header the loader needs. */
export function parseBzImage(image: Uint8Array): BzImageHeader {
  if (!hasSetupHeader(image)) throw new KernelFormatError('the kernel has no Linux setup header ("HdrS" at 0x202)');
  if (image.length < SETUP_HEADER_END) throw new KernelFormatError('the bzImage is truncated inside its setup header');
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  const version = v.getUint16(HDR_VERSION, true);
  if (version < MIN_BOOT_PROTOCOL) {
    throw new KernelFormatError(
      `the bzImage uses boot protocol ${version >> 8}.${String(version & 0xff).padStart(2, '0')}; 2.12 or newer is needed`,
    );
  }
  if ((v.getUint16(HDR_XLOADFLAGS, true) & XLF_KERNEL_64) === 0) {
    throw new KernelFormatError('the bzImage has no 64-bit entry point (XLF_KERNEL_64 is clear): it is not an x86-64 kernel');
  }
  const setupSects = image[HDR_SETUP_SECTS]! || 4;
  const protectedModeOffset = (setupSects + 1) * SECTOR;
  if (protectedModeOffset + STARTUP_64_OFFSET >= image.length) {
    throw new KernelFormatError('the bzImage is truncated: it ends before its protected-mode code');
  }
  // The header's own length: byte 0x201 (the jump's displacement) counts from 0x202.
  const headerEnd = Math.min(SETUP_HEADER_END, HDR_HEADER + image[HDR_JUMP + 1]!);
  const setupHeader = new Uint8Array(SETUP_HEADER_END - SETUP_HEADER_OFFSET);
  setupHeader.set(image.subarray(SETUP_HEADER_OFFSET, Math.max(headerEnd, HDR_VERSION + 2)));
  return {
    setupHeader,
    protectedModeOffset,
    initSize: v.getUint32(HDR_INIT_SIZE, true),
    initrdAddrMax: v.getUint32(HDR_INITRD_ADDR_MAX, true),
  };
}

/** Loads the protected-mode part of a bzImage at BZIMAGE_LOAD_ADDR. */
export function loadBzImage(mem: GuestMemory, image: Uint8Array): LoadedBzImage {
  const hdr = parseBzImage(image);
  const payload = image.subarray(hdr.protectedModeOffset);
  const end = BZIMAGE_LOAD_ADDR + Math.max(payload.length, hdr.initSize);
  try {
    mem.slice(BZIMAGE_LOAD_ADDR, end - BZIMAGE_LOAD_ADDR);
  } catch {
    throw new KernelFormatError(
      `the bzImage needs 0x${(end - BZIMAGE_LOAD_ADDR).toString(16)} bytes from 1 MiB, more than the guest's low RAM`,
    );
  }
  mem.write(BZIMAGE_LOAD_ADDR, payload);
  return {
    entry: BZIMAGE_LOAD_ADDR + STARTUP_64_OFFSET,
    end,
    setupHeader: hdr.setupHeader,
    initrdAddrMax: hdr.initrdAddrMax,
  };
}
