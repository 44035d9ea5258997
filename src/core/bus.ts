// The core's I/O buses: port I/O and MMIO address ranges mapped to devices.
// A device sees offsets from the start of its range and byte arrays of the
// access width (1, 2, 4 or 8), as a vCPU exit delivers them.

export interface BusDevice {
  /** Fills `data` with the bytes read at `offset`. */
  read(offset: number, data: Uint8Array): void;
  /** A device may finish a write asynchronously (the vCPU waits for it). */
  write(offset: number, data: Uint8Array): void | Promise<void>;
}

/** A level-triggered interrupt input (an IOAPIC/PIC pin). */
export interface IrqLine {
  set(level: boolean): void;
}

interface Range {
  base: number;
  len: number;
  dev: BusDevice;
}

export class Bus {
  private ranges: Range[] = [];

  constructor(readonly name: string) {}

  /** Maps `dev` at [base, base+len). Overlaps are a programming error. */
  insert(base: number, len: number, dev: BusDevice): void {
    if (len <= 0) throw new RangeError(`${this.name}: empty range at 0x${base.toString(16)}`);
    for (const r of this.ranges) {
      if (base < r.base + r.len && r.base < base + len) {
        throw new RangeError(`${this.name}: 0x${base.toString(16)}+${len} overlaps 0x${r.base.toString(16)}+${r.len}`);
      }
    }
    this.ranges.push({ base, len, dev });
    this.ranges.sort((a, b) => a.base - b.base);
  }

  remove(base: number): void {
    this.ranges = this.ranges.filter((r) => r.base !== base);
  }

  private find(addr: number, size: number): Range | undefined {
    for (const r of this.ranges) {
      if (addr >= r.base && addr + size <= r.base + r.len) return r;
    }
    return undefined;
  }

  /** Reads from the device at `addr`; unclaimed addresses read as all ones. Returns whether a device answered. */
  read(addr: number, data: Uint8Array): boolean {
    const r = this.find(addr, data.length);
    if (!r) {
      data.fill(0xff);
      return false;
    }
    r.dev.read(addr - r.base, data);
    return true;
  }

  /** Writes to the device at `addr`; writes to unclaimed addresses are dropped. */
  write(addr: number, data: Uint8Array): void | Promise<void> {
    const r = this.find(addr, data.length);
    if (r) return r.dev.write(addr - r.base, data);
  }
}
