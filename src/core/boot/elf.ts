// Loading an uncompressed ELF64 x86-64 kernel (vmlinux): header validation,
// PT_LOAD segments copied to their physical addresses with bounds checks,
// and the physical entry point. Anything malformed is a KernelFormatError.
import type { GuestMemory } from '../memory.js';
import { KernelFormatError } from './errors.js';
import { HIMEM_START } from './layout.js';

export { KernelFormatError };

export const ELF_MAGIC = 0x464c457f; // "\x7fELF" little-endian
const ELFCLASS64 = 2;
const ELFDATA2LSB = 1;
const ET_EXEC = 2;
const EM_X86_64 = 62;
const PT_LOAD = 1;
const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
/** Start of the kernel's virtual mapping (__START_KERNEL_map). */
export const KERNEL_VIRT_BASE = 0xffffffff80000000n;

export interface LoadedKernel {
  /** Guest-physical address of the 64-bit entry point. */
  entry: number;
  /** Guest-physical end (exclusive) of the highest loaded byte, bss included. */
  end: number;
}

interface ElfSegment {
  offset: number;
  vaddr: bigint;
  paddr: number;
  filesz: number;
  memsz: number;
}

/** True when `bytes` starts with the ELF magic. */
export function isElf(bytes: Uint8Array): boolean {
  return bytes.length >= 4 && new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true) === ELF_MAGIC;
}

function toSafe(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new KernelFormatError(`the ELF kernel's ${what} (0x${v.toString(16)}) is out of range`);
  return Number(v);
}

function parseSegments(image: Uint8Array): { entry: bigint; segments: ElfSegment[] } {
  if (!isElf(image)) throw new KernelFormatError('the kernel is not an ELF file');
  if (image.length < EHDR_SIZE) throw new KernelFormatError('the ELF kernel is truncated inside its header');
  const v = new DataView(image.buffer, image.byteOffset, image.byteLength);
  if (image[4] !== ELFCLASS64) throw new KernelFormatError('the ELF kernel is not 64-bit (ELFCLASS64)');
  if (image[5] !== ELFDATA2LSB) throw new KernelFormatError('the ELF kernel is not little-endian');
  if (v.getUint16(18, true) !== EM_X86_64) throw new KernelFormatError(`the ELF kernel is not for x86-64 (e_machine ${v.getUint16(18, true)})`);
  if (v.getUint16(16, true) !== ET_EXEC) throw new KernelFormatError('the ELF kernel is not an executable (ET_EXEC)');

  const entry = v.getBigUint64(24, true);
  const phoff = toSafe(v.getBigUint64(32, true), 'program header offset');
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  if (phnum === 0) throw new KernelFormatError('the ELF kernel has no program headers');
  if (phentsize < PHDR_SIZE) throw new KernelFormatError(`the ELF kernel's program headers are ${phentsize} bytes, not ${PHDR_SIZE}`);
  if (phoff + phnum * phentsize > image.length) throw new KernelFormatError('the ELF kernel is truncated inside its program headers');

  const segments: ElfSegment[] = [];
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (v.getUint32(ph, true) !== PT_LOAD) continue;
    const seg: ElfSegment = {
      offset: toSafe(v.getBigUint64(ph + 8, true), 'segment offset'),
      vaddr: v.getBigUint64(ph + 16, true),
      paddr: toSafe(v.getBigUint64(ph + 24, true), 'segment physical address'),
      filesz: toSafe(v.getBigUint64(ph + 32, true), 'segment file size'),
      memsz: toSafe(v.getBigUint64(ph + 40, true), 'segment memory size'),
    };
    if (seg.filesz > seg.memsz) throw new KernelFormatError(`ELF segment ${i} has a file size larger than its memory size`);
    if (seg.offset + seg.filesz > image.length) throw new KernelFormatError(`the ELF kernel is truncated inside segment ${i}`);
    segments.push(seg);
  }
  if (segments.length === 0) throw new KernelFormatError('the ELF kernel has no loadable (PT_LOAD) segment');
  return { entry, segments };
}

/** Physical entry: e_entry itself, or a kernel-virtual e_entry translated through its segment. */
function physicalEntry(entry: bigint, segments: ElfSegment[]): number {
  if (entry < KERNEL_VIRT_BASE) return toSafe(entry, 'entry point');
  for (const s of segments) {
    if (entry >= s.vaddr && entry < s.vaddr + BigInt(s.memsz)) return s.paddr + Number(entry - s.vaddr);
  }
  throw new KernelFormatError(`the ELF kernel's entry point 0x${entry.toString(16)} is in no loadable segment`);
}

/** Loads a vmlinux into guest memory at its segments' physical addresses. */
export function loadElf(mem: GuestMemory, image: Uint8Array): LoadedKernel {
  const { entry, segments } = parseSegments(image);
  let end = 0;
  const targets = segments.map((s, i) => {
    if (s.paddr < HIMEM_START) {
      throw new KernelFormatError(`ELF segment ${i} loads at 0x${s.paddr.toString(16)}, below 1 MiB where the boot structures live`);
    }
    let target: Uint8Array;
    try {
      target = mem.slice(s.paddr, s.memsz);
    } catch {
      throw new KernelFormatError(
        `ELF segment ${i} (0x${s.paddr.toString(16)}+0x${s.memsz.toString(16)}) lies outside the guest's RAM`,
      );
    }
    end = Math.max(end, s.paddr + s.memsz);
    return target;
  });
  const entryPhys = physicalEntry(entry, segments);
  if (!segments.some((s) => entryPhys >= s.paddr && entryPhys < s.paddr + s.memsz)) {
    throw new KernelFormatError(`the ELF kernel's entry point 0x${entryPhys.toString(16)} is in no loadable segment`);
  }
  // Everything is validated before the first byte is written.
  segments.forEach((s, i) => {
    const target = targets[i]!;
    target.set(image.subarray(s.offset, s.offset + s.filesz));
    target.fill(0, s.filesz);
  });
  return { entry: entryPhys, end };
}
