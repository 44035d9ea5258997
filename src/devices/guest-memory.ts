// A device's view of guest RAM: the inherited memfd mapped MAP_SHARED, and
// the translation of guest-physical ranges through the region table the core
// gives at start. Every access is bounds-checked; a range must lie inside
// one region (crossing a region's end, wrapping, or exceeding 2^53 is
// rejected). Returned views are zero-copy.
import fs from 'node:fs';
import * as libc from '../sys/libc.js';

export interface MemoryRegion {
  /** Guest-physical address of the region's first byte. */
  gpa: number;
  size: number;
  /** Offset of the region in the memfd. */
  offset: number;
}

export class GuestMemoryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'GuestMemoryError';
  }
}

interface MappedRegion extends MemoryRegion {
  bytes: Uint8Array;
  /** Host address of bytes[0] (for vectored I/O straight into guest memory); -1 for plain buffers. */
  host: number;
}

const PAGE = 4096;

/** Checks a region table: sizes, alignment and no overlap. Throws a one-sentence Error. */
export function validateRegions(regions: unknown): MemoryRegion[] {
  if (!Array.isArray(regions) || regions.length === 0 || regions.length > 16) throw new Error('regions must be a list of 1..16 {gpa, size, offset}');
  const out: MemoryRegion[] = [];
  for (const r of regions) {
    if (typeof r !== 'object' || r === null) throw new Error('each region must be {gpa, size, offset}');
    const { gpa, size, offset } = r as Record<string, unknown>;
    for (const [name, v] of [['gpa', gpa], ['size', size], ['offset', offset]] as const) {
      if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw new Error(`region ${name} must be a non-negative integer below 2^53`);
    }
    const reg = { gpa: gpa as number, size: size as number, offset: offset as number };
    if (reg.size === 0 || reg.gpa + reg.size > Number.MAX_SAFE_INTEGER || reg.offset + reg.size > Number.MAX_SAFE_INTEGER) throw new Error('region is empty or too large');
    if (reg.offset % PAGE !== 0) throw new Error('region offset must be page aligned');
    for (const o of out) {
      if (reg.gpa < o.gpa + o.size && o.gpa < reg.gpa + reg.size) throw new Error('regions overlap');
    }
    out.push(reg);
  }
  return out;
}

export class GuestMemory {
  private readonly regions: MappedRegion[];
  private last: MappedRegion;

  private constructor(regions: MappedRegion[]) {
    this.regions = regions;
    this.last = regions[0]!;
  }

  /**
   * Maps each region of `fd` MAP_SHARED, read-write. A region must lie within
   * the file: a mapping past its end would kill the process with SIGBUS on
   * first touch (when the guest points a buffer there) instead of failing here.
   */
  static map(fd: number, regions: MemoryRegion[]): GuestMemory {
    const checked = validateRegions(regions);
    const fileSize = fs.fstatSync(fd).size;
    for (const r of checked) {
      if (r.offset + r.size > fileSize) throw new Error(`region at gpa 0x${r.gpa.toString(16)} ends at offset ${r.offset + r.size}, past the end of the ${fileSize}-byte memory file`);
    }
    const mapped = checked.map((r) => {
      const addr = libc.mmap(r.size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED | libc.MAP_NORESERVE, fd, r.offset);
      return { ...r, bytes: new Uint8Array(libc.view(addr, r.size)), host: Number(addr) };
    });
    return new GuestMemory(mapped);
  }

  /** Guest memory over ordinary buffers (unit tests, fuzzing): one buffer per region. */
  static fromBuffers(regions: { gpa: number; bytes: Uint8Array }[]): GuestMemory {
    const checked = validateRegions(regions.map((r) => ({ gpa: r.gpa, size: r.bytes.length, offset: 0 })));
    return new GuestMemory(checked.map((r, i) => ({ ...r, bytes: regions[i]!.bytes, host: -1 })));
  }

  /**
   * A zero-copy view of `len` bytes at guest-physical `gpa`. Throws
   * GuestMemoryError unless the whole range lies in one region.
   */
  slice(gpa: number, len: number): Uint8Array {
    if (!Number.isSafeInteger(gpa) || gpa < 0 || !Number.isSafeInteger(len) || len < 0) {
      throw new GuestMemoryError(`guest range ${gpa}+${len} is not a valid address range`);
    }
    const end = gpa + len;
    if (end > Number.MAX_SAFE_INTEGER) throw new GuestMemoryError(`guest range 0x${gpa.toString(16)}+${len} wraps`);
    let r = this.last;
    if (!(gpa >= r.gpa && gpa < r.gpa + r.size)) {
      const found = this.regions.find((x) => gpa >= x.gpa && gpa < x.gpa + x.size);
      if (found === undefined) {
        // A zero-length range at a region's end is still inside guest RAM.
        const atEnd = len === 0 ? this.regions.find((x) => gpa === x.gpa + x.size) : undefined;
        if (atEnd === undefined) throw new GuestMemoryError(`guest address 0x${gpa.toString(16)} is outside guest RAM`);
        return atEnd.bytes.subarray(atEnd.size, atEnd.size);
      }
      r = found;
      this.last = found;
    }
    if (end > r.gpa + r.size) throw new GuestMemoryError(`guest range 0x${gpa.toString(16)}+${len} crosses the end of RAM region 0x${r.gpa.toString(16)}`);
    const off = gpa - r.gpa;
    return r.bytes.subarray(off, off + len);
  }

  /** A DataView over `len` bytes at `gpa` (same checks as slice). */
  dataView(gpa: number, len: number): DataView {
    const s = this.slice(gpa, len);
    return new DataView(s.buffer, s.byteOffset, s.byteLength);
  }

  /**
   * The host address of the first byte of `view`, a view this memory
   * returned (slice, dataView), for readv/writev/preadv/pwritev straight
   * between a file and the guest's buffers. Throws for memory that is not
   * mapped (fromBuffers) or a view of something else.
   */
  hostAddress(view: Uint8Array): number {
    // An indexed loop: per request, and under --jitless a for-of allocates an iterator result per step.
    for (let i = 0; i < this.regions.length; i++) {
      const r = this.regions[i]!;
      if (view.buffer === r.bytes.buffer && r.host >= 0) return r.host + (view.byteOffset - r.bytes.byteOffset);
    }
    throw new GuestMemoryError('view is not of mapped guest memory');
  }

  /** Copies `data` into guest memory at `gpa`. */
  write(gpa: number, data: Uint8Array): void {
    this.slice(gpa, data.length).set(data);
  }
}
