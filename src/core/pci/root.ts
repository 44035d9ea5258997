// PCI bus 0 behind configuration mechanism #1: the address register at
// 0xCF8 and the data window at 0xCFC–0xCFF. Slot 0 is the host bridge (which
// Linux's type-1 probe looks for); devices take the next slots.
import type { BusDevice } from '../bus.js';
import { PciConfigSpace } from './config-space.js';

export const PCI_CONFIG_ADDRESS_PORT = 0xcf8;
export const PCI_CONFIG_PORT_COUNT = 8;
const ENABLE = 0x80000000;
const MAX_SLOTS = 32;

/** A function on the bus: its config space and what happens after a guest write to it. */
export interface PciFunction {
  readonly config: PciConfigSpace;
  configWritten?(offset: number, length: number): void;
}

class HostBridge implements PciFunction {
  readonly config = new PciConfigSpace({
    vendor: 0x8086, device: 0x0d57, classCode: 0x060000, revision: 0, subsystemVendor: 0, subsystem: 0,
  });
}

export class PciRoot implements BusDevice {
  private address = 0;
  private readonly slots: (PciFunction | undefined)[] = new Array(MAX_SLOTS);

  constructor() {
    this.slots[0] = new HostBridge();
  }

  /** Places `fn` in the first free slot and returns the slot number. */
  add(fn: PciFunction): number {
    const free = Array.from(this.slots).findIndex((s, i) => i > 0 && !s);
    if (free < 0) throw new RangeError('PCI bus 0 is full');
    this.slots[free] = fn;
    return free;
  }

  /** The function the address register selects, and the register offset, or null. */
  private target(extra: number): { fn: PciFunction; reg: number } | null {
    if (!(this.address & ENABLE)) return null;
    const bus = (this.address >>> 16) & 0xff;
    const slot = (this.address >>> 11) & 0x1f;
    const func = (this.address >>> 8) & 0x7;
    const fn = this.slots[slot];
    if (bus !== 0 || func !== 0 || !fn) return null;
    return { fn, reg: (this.address & 0xfc) + extra };
  }

  read(offset: number, data: Uint8Array): void {
    if (offset < 4) {
      // Only whole-register accesses reach the address latch.
      const v = data.length === 4 && offset === 0 ? this.address : 0xffffffff;
      for (let i = 0; i < data.length; i++) data[i] = (v >>> (8 * i)) & 0xff;
      return;
    }
    const t = this.target(offset - 4);
    if (!t) data.fill(0xff);
    else t.fn.config.read(t.reg, data);
  }

  write(offset: number, data: Uint8Array): void {
    if (offset < 4) {
      if (data.length === 4 && offset === 0) {
        this.address = (data[0]! | (data[1]! << 8) | (data[2]! << 16) | (data[3]! << 24)) >>> 0;
      }
      return;
    }
    const t = this.target(offset - 4);
    if (!t) return;
    if (t.fn.config.write(t.reg, data)) t.fn.configWritten?.(t.reg, data.length);
  }
}
