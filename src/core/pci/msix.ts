// MSI-X for one PCI function: the capability's message control, the vector
// table (address, data, mask per vector) and the pending-bit array, both
// living in a memory BAR. Interrupt delivery is not done here: the owner
// asks `route(v)` for where a vector goes and is told when that changes.
import type { PciConfigSpace } from './config-space.js';

export const PCI_CAP_ID_MSIX = 0x11;
const ENTRY_SIZE = 16;
const CTRL_ENABLE = 0x8000;
const CTRL_FUNCTION_MASK = 0x4000;
const VECTOR_MASKED = 1;

export interface MsiMessage {
  addressLo: number;
  addressHi: number;
  data: number;
}

export class Msix {
  private readonly table: Uint8Array;
  private readonly tableView: DataView;
  private readonly pba: Uint8Array;
  private readonly capOffset: number;

  /**
   * Adds the capability to `config`: the table at `tableOffset` and the PBA at
   * `pbaOffset` of BAR `bar`. `changed` runs whenever enable, mask or a
   * vector's message may have changed what an interrupt does.
   */
  constructor(
    private readonly config: PciConfigSpace,
    readonly vectors: number,
    bar: number,
    readonly tableOffset: number,
    readonly pbaOffset: number,
    private readonly changed: () => void,
  ) {
    this.table = new Uint8Array(vectors * ENTRY_SIZE);
    this.tableView = new DataView(this.table.buffer);
    for (let v = 0; v < vectors; v++) this.tableView.setUint32(v * ENTRY_SIZE + 12, VECTOR_MASKED, true);
    this.pba = new Uint8Array(Math.ceil(vectors / 64) * 8);
    const body = new Uint8Array(10);
    const dv = new DataView(body.buffer);
    dv.setUint16(0, vectors - 1, true);
    dv.setUint32(2, tableOffset | bar, true);
    dv.setUint32(6, pbaOffset | bar, true);
    // Message control: only enable and function mask are writable (high byte).
    this.capOffset = config.addCapability(PCI_CAP_ID_MSIX, body, { 1: (CTRL_ENABLE | CTRL_FUNCTION_MASK) >> 8 });
  }

  get tableSize(): number {
    return this.table.length;
  }

  get pbaSize(): number {
    return this.pba.length;
  }

  private get control(): number {
    return this.config.u16(this.capOffset + 2);
  }

  get enabled(): boolean {
    return (this.control & CTRL_ENABLE) !== 0;
  }

  private get functionMasked(): boolean {
    return (this.control & CTRL_FUNCTION_MASK) !== 0;
  }

  /** True when `offset..offset+len` of config space touches the message control word. */
  coversControl(offset: number, len: number): boolean {
    const ctl = this.capOffset + 2;
    return offset < ctl + 2 && ctl < offset + len;
  }

  masked(v: number): boolean {
    return this.functionMasked || (this.tableView.getUint32(v * ENTRY_SIZE + 12, true) & VECTOR_MASKED) !== 0;
  }

  /** Where vector `v` is delivered now, or null when it cannot be (disabled, masked, out of range). */
  route(v: number): MsiMessage | null {
    if (!this.enabled || v >= this.vectors || this.masked(v)) return null;
    const o = v * ENTRY_SIZE;
    return { addressLo: this.tableView.getUint32(o, true), addressHi: this.tableView.getUint32(o + 4, true), data: this.tableView.getUint32(o + 8, true) };
  }

  /** Sets or clears the pending bit of vector `v` (an interrupt that arrived while it was masked). */
  setPending(v: number, pending: boolean): void {
    if (v >= this.vectors) return;
    if (pending) this.pba[v >> 3] |= 1 << (v & 7);
    else this.pba[v >> 3] &= ~(1 << (v & 7));
  }

  isPending(v: number): boolean {
    return v < this.vectors && (this.pba[v >> 3]! & (1 << (v & 7))) !== 0;
  }

  readTable(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = offset + i < this.table.length ? this.table[offset + i]! : 0;
  }

  writeTable(offset: number, data: Uint8Array): void {
    if (offset + data.length > this.table.length) return;
    const before = this.table.slice(offset, offset + data.length);
    this.table.set(data, offset);
    // Only bit 0 of vector control is defined; the rest is reserved.
    const v = Math.floor(offset / ENTRY_SIZE);
    const ctl = v * ENTRY_SIZE + 12;
    this.tableView.setUint32(ctl, this.tableView.getUint32(ctl, true) & VECTOR_MASKED, true);
    if (before.some((b, i) => b !== this.table[offset + i])) this.changed();
  }

  readPba(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = offset + i < this.pba.length ? this.pba[offset + i]! : 0;
  }
}
