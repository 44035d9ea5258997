// The 256-byte configuration space of one PCI function (type 0 header):
// identity registers, command/status, 32-bit memory BARs with sizing, and a
// capability list. Only bits the spec makes writable can be written.

export const PCI_VENDOR_ID = 0x00;
export const PCI_COMMAND = 0x04;
export const PCI_STATUS = 0x06;
export const PCI_REVISION = 0x08;
export const PCI_CLASS_PROG = 0x09;
export const PCI_HEADER_TYPE = 0x0e;
export const PCI_BAR0 = 0x10;
export const PCI_SUBSYSTEM_VENDOR_ID = 0x2c;
export const PCI_CAPABILITY_LIST = 0x34;
export const PCI_INTERRUPT_LINE = 0x3c;

export const PCI_COMMAND_IO = 0x1;
export const PCI_COMMAND_MEMORY = 0x2;
export const PCI_COMMAND_MASTER = 0x4;
export const PCI_COMMAND_INTX_DISABLE = 0x400;
const PCI_STATUS_CAP_LIST = 0x10;
const CAP_START = 0x40;

export interface PciIdentity {
  vendor: number;
  device: number;
  /** 24-bit class code: base class, subclass, programming interface. */
  classCode: number;
  revision: number;
  subsystemVendor: number;
  subsystem: number;
}

export class PciConfigSpace {
  readonly bytes = new Uint8Array(256);
  private readonly dv = new DataView(this.bytes.buffer);
  /** Bits the guest may change, per byte. */
  private readonly writable = new Uint8Array(256);
  private nextCap = CAP_START;
  private lastCap = -1;

  constructor(id: PciIdentity) {
    this.dv.setUint16(PCI_VENDOR_ID, id.vendor, true);
    this.dv.setUint16(PCI_VENDOR_ID + 2, id.device, true);
    this.bytes[PCI_REVISION] = id.revision;
    this.bytes[PCI_CLASS_PROG] = id.classCode & 0xff;
    this.bytes[PCI_CLASS_PROG + 1] = (id.classCode >> 8) & 0xff;
    this.bytes[PCI_CLASS_PROG + 2] = (id.classCode >> 16) & 0xff;
    this.dv.setUint16(PCI_SUBSYSTEM_VENDOR_ID, id.subsystemVendor, true);
    this.dv.setUint16(PCI_SUBSYSTEM_VENDOR_ID + 2, id.subsystem, true);
    this.setWritable(PCI_COMMAND, 2, PCI_COMMAND_IO | PCI_COMMAND_MEMORY | PCI_COMMAND_MASTER | PCI_COMMAND_INTX_DISABLE);
    this.setWritable(PCI_INTERRUPT_LINE, 1, 0xff);
  }

  private setWritable(off: number, len: number, mask: number): void {
    for (let i = 0; i < len; i++) this.writable[off + i] = (mask >>> (8 * i)) & 0xff;
  }

  /** Declares BAR `index` as a 32-bit memory BAR of `size` bytes (a power of two) at `addr`. */
  addMemoryBar(index: number, size: number, addr: number): void {
    if (size < 16 || (size & (size - 1)) !== 0) throw new RangeError(`BAR size ${size} is not a power of two >= 16`);
    this.dv.setUint32(PCI_BAR0 + 4 * index, addr >>> 0, true);
    this.setWritable(PCI_BAR0 + 4 * index, 4, ~(size - 1) >>> 0);
  }

  /** The guest-physical address BAR `index` decodes at, or null when memory decoding is off. */
  barAddress(index: number): number | null {
    if (!(this.dv.getUint16(PCI_COMMAND, true) & PCI_COMMAND_MEMORY)) return null;
    return (this.dv.getUint32(PCI_BAR0 + 4 * index, true) & ~0xf) >>> 0;
  }

  /**
   * Appends a capability (id, then `body` after the id and next bytes) and
   * returns its offset. `writableMask` marks the body bytes the guest may
   * write, as a map from body offset to bit mask.
   */
  addCapability(id: number, body: Uint8Array, writableMask: Record<number, number> = {}): number {
    const off = this.nextCap;
    const len = 2 + body.length;
    if (off + len > 256) throw new RangeError('PCI capability list is full');
    this.bytes[off] = id;
    this.bytes[off + 1] = 0;
    this.bytes.set(body, off + 2);
    for (const [k, mask] of Object.entries(writableMask)) this.writable[off + 2 + Number(k)] = mask;
    if (this.lastCap < 0) this.bytes[PCI_CAPABILITY_LIST] = off;
    else this.bytes[this.lastCap + 1] = off;
    this.dv.setUint16(PCI_STATUS, this.dv.getUint16(PCI_STATUS, true) | PCI_STATUS_CAP_LIST, true);
    this.lastCap = off;
    this.nextCap = (off + len + 3) & ~3;
    return off;
  }

  read(off: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = off + i < 256 ? this.bytes[off + i]! : 0xff;
  }

  /** Applies a guest write through the writable masks; returns whether any bit changed. */
  write(off: number, data: Uint8Array): boolean {
    let changed = false;
    for (let i = 0; i < data.length && off + i < 256; i++) {
      const m = this.writable[off + i]!;
      const old = this.bytes[off + i]!;
      const v = (old & ~m) | (data[i]! & m);
      if (v !== old) changed = true;
      this.bytes[off + i] = v;
    }
    return changed;
  }

  u16(off: number): number {
    return this.dv.getUint16(off, true);
  }
}
