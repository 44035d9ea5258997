// Guest RAM: one memfd mapped MAP_SHARED in the core, laid out the x86 way.
// RAM fills guest-physical addresses from 0 up to the MMIO hole (3 GiB);
// what does not fit goes above 4 GiB. The memfd holds the regions back to
// back, so a device process maps the same fd and finds the same bytes.
import * as libc from '../sys/libc.js';

export const MiB = 1024 * 1024;
export const GiB = 1024 * MiB;
/** Start of the 32-bit MMIO hole (PCI BARs, IOAPIC, LAPIC). */
export const MMIO_HOLE_START = 3 * GiB;
export const FOUR_GIB = 4 * GiB;

export interface MemoryRegion {
  /** Guest-physical address of the first byte. */
  gpa: number;
  size: number;
  /** Offset of the region in the memfd. */
  offset: number;
}

/** Splits `size` bytes of RAM around the MMIO hole. */
export function ramLayout(size: number): MemoryRegion[] {
  const low = Math.min(size, MMIO_HOLE_START);
  const regions: MemoryRegion[] = [{ gpa: 0, size: low, offset: 0 }];
  if (size > low) regions.push({ gpa: FOUR_GIB, size: size - low, offset: low });
  return regions;
}

export class GuestMemory {
  readonly regions: MemoryRegion[];
  /** Host address of the mapping of the whole memfd. */
  readonly hostAddr: bigint;
  /** One view per region: a single view cannot exceed 4 GiB. */
  private readonly views: Uint8Array[];

  private constructor(
    readonly fd: number,
    readonly size: number,
  ) {
    this.regions = ramLayout(size);
    this.hostAddr = libc.mmap(size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED | libc.MAP_NORESERVE, fd);
    this.views = this.regions.map((r) => new Uint8Array(libc.view(this.hostAddr + BigInt(r.offset), r.size)));
  }

  /** Creates `size` bytes of zeroed guest RAM in a new memfd. */
  static create(size: number): GuestMemory {
    if (size <= 0 || size % (2 * MiB) !== 0) throw new RangeError('guest memory must be a positive multiple of 2 MiB');
    const fd = libc.memfdCreate('splitvm-guest-ram', libc.MFD_CLOEXEC | libc.MFD_ALLOW_SEALING);
    libc.ftruncate(fd, size);
    // Device processes get this fd: sealed, none of them can grow it (and eat
    // host memory) or shrink it (and make the core fault on its own mapping).
    libc.fcntl(fd, libc.F_ADD_SEALS, libc.F_SEAL_GROW | libc.F_SEAL_SHRINK);
    return new GuestMemory(fd, size);
  }

  /** Host address where the region starting at `gpa` is mapped. */
  hostAddrOf(region: MemoryRegion): bigint {
    return this.hostAddr + BigInt(region.offset);
  }

  /** A live view of `len` bytes of guest RAM at `gpa`; throws outside RAM. */
  slice(gpa: number, len: number): Uint8Array {
    for (const [i, r] of this.regions.entries()) {
      if (gpa >= r.gpa && len >= 0 && gpa + len <= r.gpa + r.size) return this.views[i]!.subarray(gpa - r.gpa, gpa - r.gpa + len);
    }
    throw new RangeError(`guest range 0x${gpa.toString(16)}+0x${len.toString(16)} is not RAM`);
  }

  write(gpa: number, data: Uint8Array): void {
    this.slice(gpa, data.length).set(data);
  }

  /** Top of RAM below the MMIO hole. */
  get lowEnd(): number {
    return this.regions[0]!.size;
  }
}
