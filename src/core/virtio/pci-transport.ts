// The virtio-pci (modern, virtio 1.x) transport of one device, all in the
// core: PCI identity and capabilities, BAR0 holding the common config, ISR,
// device config, notify area and the MSI-X table and PBA. Every register
// access is answered here; the device process only hears `activate`,
// `reset` and config writes. Queue notifications become ioeventfds at the
// notify addresses and MSI-X vectors become GSI routes with irqfds, so
// neither a kick nor an interrupt passes through the core.
import type { BusDevice } from '../bus.js';
import { PCI_BAR0, PCI_COMMAND, PciConfigSpace } from '../pci/config-space.js';
import { Msix, type MsiMessage } from '../pci/msix.js';
import type { PciFunction } from '../pci/root.js';

export const VIRTIO_PCI_VENDOR = 0x1af4;
export const VIRTIO_PCI_DEVICE_BASE = 0x1040;
export const VIRTIO_F_VERSION_1 = 32;

export const Status = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  DEVICE_NEEDS_RESET: 0x40,
  FAILED: 0x80,
} as const;

const NO_VECTOR = 0xffff;
const PCI_CAP_ID_VNDR = 0x09;
const CAP_COMMON = 1;
const CAP_NOTIFY = 2;
const CAP_ISR = 3;
const CAP_DEVICE = 4;

/** BAR0 layout. */
export const BAR0 = {
  SIZE: 0x8000,
  COMMON: 0x0000,
  COMMON_LEN: 0x38,
  ISR: 0x1000,
  DEVICE: 0x2000,
  DEVICE_LEN: 0x1000,
  NOTIFY: 0x3000,
  NOTIFY_MULTIPLIER: 4,
  MSIX_TABLE: 0x4000,
  MSIX_PBA: 0x6000,
} as const;

/** ISR bit 1: configuration change. Queue interrupts go through MSI-X only, so bit 0 stays clear. */
const ISR_CONFIG = 2;

/** What the transport needs from the VM: interrupt routes, irqfds, ioeventfds. */
export interface TransportHost {
  allocGsi(): number;
  setMsiRoute(gsi: number, msg: MsiMessage): void;
  removeMsiRoute(gsi: number): void;
  assignIrqfd(fd: number, gsi: number): void;
  deassignIrqfd(fd: number, gsi: number): void;
  signalMsi(msg: MsiMessage): void;
  assignIoeventfd(fd: number, addr: number, len: number): void;
  deassignIoeventfd(fd: number, addr: number, len: number): void;
  /** Maps BAR0's MMIO range; false when the guest placed it over another device's range. */
  mapBar(addr: number, len: number, dev: BusDevice): boolean;
  unmapBar(addr: number): void;
}

/** The device process, as the transport sees it. */
export interface DeviceLink {
  activate(features: number, queues: { index: number; size: number; desc: number; avail: number; used: number }[]): void;
  /** Resolves when the device has stopped using the queues. */
  reset(): Promise<void>;
  writeConfig(offset: number, data: Uint8Array): void;
}

export interface VirtioDeviceInfo {
  /** Virtio device id: 1 net, 2 block, 9 9p. */
  deviceId: number;
  classCode: number;
  deviceFeatures: number;
  numQueues: number;
  maxQueueSize: number;
  config: Uint8Array;
  /** Per queue: the eventfd KVM signals on a notify, and the one the device writes to interrupt. */
  kickFds: number[];
  callFds: number[];
}

interface QueueState {
  size: number;
  vector: number;
  enabled: boolean;
  desc: [number, number];
  avail: [number, number];
  used: [number, number];
  /** The GSI whose irqfd is the queue's call eventfd, when assigned. */
  irqfdGsi: number | null;
}

const lo = (n: number) => n >>> 0;
const hi = (n: number) => Math.floor(n / 2 ** 32) >>> 0;
const join64 = (p: [number, number]) => p[1] * 2 ** 32 + p[0];

export class VirtioPciTransport implements PciFunction, BusDevice {
  readonly config: PciConfigSpace;
  private readonly msix: Msix;
  private barAddr: number | null = null;

  private status = 0;
  private deviceFeatureSelect = 0;
  private driverFeatureSelect = 0;
  private driverFeatures: [number, number] = [0, 0];
  private configVector = NO_VECTOR;
  private configGeneration = 0;
  private queueSelect = 0;
  private isr = 0;
  private readonly queues: QueueState[];
  private deviceConfig: Uint8Array;
  /** One GSI per MSI-X vector, allocated when first routed. */
  private readonly vectorGsi = new Map<number, number>();
  private readonly routed = new Map<number, string>();

  constructor(
    readonly info: VirtioDeviceInfo,
    private readonly host: TransportHost,
    private readonly link: DeviceLink,
    barAddr: number,
  ) {
    this.deviceConfig = info.config.slice();
    this.config = new PciConfigSpace({
      vendor: VIRTIO_PCI_VENDOR,
      device: VIRTIO_PCI_DEVICE_BASE + info.deviceId,
      classCode: info.classCode,
      revision: 1,
      subsystemVendor: VIRTIO_PCI_VENDOR,
      subsystem: 0x40,
    });
    this.config.addMemoryBar(0, BAR0.SIZE, barAddr);
    const vndr = (type: number, offset: number, length: number, extra?: number) => {
      const body = new Uint8Array(extra === undefined ? 14 : 18);
      const dv = new DataView(body.buffer);
      body[0] = body.length + 2; // cap_len
      body[1] = type;
      body[2] = 0; // BAR
      dv.setUint32(6, offset, true);
      dv.setUint32(10, length, true);
      if (extra !== undefined) dv.setUint32(14, extra, true);
      this.config.addCapability(PCI_CAP_ID_VNDR, body);
    };
    vndr(CAP_COMMON, BAR0.COMMON, BAR0.COMMON_LEN);
    vndr(CAP_ISR, BAR0.ISR, 1);
    vndr(CAP_DEVICE, BAR0.DEVICE, Math.max(info.config.length, 1));
    vndr(CAP_NOTIFY, BAR0.NOTIFY, info.numQueues * BAR0.NOTIFY_MULTIPLIER, BAR0.NOTIFY_MULTIPLIER);
    // One vector per queue plus one for configuration changes.
    this.msix = new Msix(this.config, info.numQueues + 1, 0, BAR0.MSIX_TABLE, BAR0.MSIX_PBA, () => this.syncInterrupts());
    this.queues = Array.from({ length: info.numQueues }, () => ({
      size: info.maxQueueSize, vector: NO_VECTOR, enabled: false, desc: [0, 0], avail: [0, 0], used: [0, 0], irqfdGsi: null,
    }));
  }

  // ---- PCI config space ----

  configWritten(offset: number, length: number): void {
    const touchesBar = offset < PCI_BAR0 + 4 && PCI_BAR0 < offset + length;
    const touchesCommand = offset < PCI_COMMAND + 2 && PCI_COMMAND < offset + length;
    if (touchesBar || touchesCommand) this.remapBar();
    if (this.msix.coversControl(offset, length)) this.syncInterrupts();
  }

  /** Follows the guest's BAR programming: the MMIO range and the notify ioeventfds move with it. */
  private remapBar(): void {
    const addr = this.config.barAddress(0);
    if (addr === this.barAddr) return;
    if (this.barAddr !== null) {
      this.host.unmapBar(this.barAddr);
      this.info.kickFds.forEach((fd, q) => this.host.deassignIoeventfd(fd, this.barAddr! + BAR0.NOTIFY + q * BAR0.NOTIFY_MULTIPLIER, 2));
    }
    // A BAR at 0, or one the guest put over another device, decodes nothing.
    this.barAddr = addr !== null && addr !== 0 && this.host.mapBar(addr, BAR0.SIZE, this) ? addr : null;
    if (this.barAddr !== null) {
      const base = this.barAddr;
      this.info.kickFds.forEach((fd, q) => this.host.assignIoeventfd(fd, base + BAR0.NOTIFY + q * BAR0.NOTIFY_MULTIPLIER, 2));
    }
  }

  // ---- BAR0 ----

  read(offset: number, data: Uint8Array): void {
    data.fill(0);
    if (offset < BAR0.COMMON + BAR0.COMMON_LEN) this.readCommon(offset, data);
    else if (offset === BAR0.ISR) {
      // Reading the ISR acknowledges it.
      data[0] = this.isr;
      this.isr = 0;
    } else if (offset >= BAR0.DEVICE && offset < BAR0.DEVICE + BAR0.DEVICE_LEN) {
      const o = offset - BAR0.DEVICE;
      for (let i = 0; i < data.length; i++) data[i] = this.deviceConfig[o + i] ?? 0;
    } else if (offset >= BAR0.MSIX_TABLE && offset < BAR0.MSIX_TABLE + this.msix.tableSize) this.msix.readTable(offset - BAR0.MSIX_TABLE, data);
    else if (offset >= BAR0.MSIX_PBA && offset < BAR0.MSIX_PBA + this.msix.pbaSize) this.msix.readPba(offset - BAR0.MSIX_PBA, data);
  }

  async write(offset: number, data: Uint8Array): Promise<void> {
    if (offset < BAR0.COMMON + BAR0.COMMON_LEN) await this.writeCommon(offset, data);
    else if (offset >= BAR0.DEVICE && offset < BAR0.DEVICE + BAR0.DEVICE_LEN) {
      const o = offset - BAR0.DEVICE;
      if (o + data.length <= this.deviceConfig.length) {
        this.deviceConfig.set(data, o);
        this.link.writeConfig(o, data.slice());
      }
    } else if (offset >= BAR0.MSIX_TABLE && offset < BAR0.MSIX_TABLE + this.msix.tableSize) this.msix.writeTable(offset - BAR0.MSIX_TABLE, data);
    // Notify writes reach the ioeventfds in KVM; one that gets here (BAR not yet mapped there) has no effect.
  }

  private get queue(): QueueState | undefined {
    return this.queues[this.queueSelect];
  }

  private readCommon(offset: number, data: Uint8Array): void {
    const q = this.queue;
    const f = this.info.deviceFeatures;
    let v: number;
    switch (offset) {
      case 0x00: v = this.deviceFeatureSelect; break;
      case 0x04: v = this.deviceFeatureSelect === 0 ? lo(f) : this.deviceFeatureSelect === 1 ? hi(f) : 0; break;
      case 0x08: v = this.driverFeatureSelect; break;
      case 0x0c: v = this.driverFeatureSelect < 2 ? this.driverFeatures[this.driverFeatureSelect]! : 0; break;
      case 0x10: v = this.configVector; break;
      case 0x12: v = this.info.numQueues; break;
      case 0x14: v = this.status; break;
      case 0x15: v = this.configGeneration; break;
      case 0x16: v = this.queueSelect; break;
      case 0x18: v = q ? q.size : 0; break;
      case 0x1a: v = q ? q.vector : NO_VECTOR; break;
      case 0x1c: v = q?.enabled ? 1 : 0; break;
      case 0x1e: v = q ? this.queueSelect : 0; break;
      case 0x20: case 0x24: case 0x28: case 0x2c: case 0x30: case 0x34: {
        const field = offset < 0x28 ? q?.desc : offset < 0x30 ? q?.avail : q?.used;
        v = field ? field[(offset & 4) >> 2]! : 0;
        break;
      }
      default: v = 0;
    }
    for (let i = 0; i < data.length; i++) data[i] = (v >>> (8 * i)) & 0xff;
  }

  private async writeCommon(offset: number, data: Uint8Array): Promise<void> {
    let v = 0;
    for (let i = data.length - 1; i >= 0; i--) v = v * 256 + data[i]!;
    const q = this.queue;
    // Queue registers are frozen once the driver is running.
    const live = (this.status & Status.DRIVER_OK) !== 0;
    switch (offset) {
      case 0x00: this.deviceFeatureSelect = v; break;
      case 0x08: this.driverFeatureSelect = v; break;
      case 0x0c:
        if (this.driverFeatureSelect < 2 && !(this.status & Status.FEATURES_OK)) this.driverFeatures[this.driverFeatureSelect] = v >>> 0;
        break;
      case 0x10:
        this.configVector = v < this.msix.vectors ? v : NO_VECTOR;
        break;
      case 0x14: await this.writeStatus(v & 0xff); break;
      case 0x16: this.queueSelect = v; break;
      case 0x18:
        // The size must be a power of 2 no larger than the device's maximum.
        if (q && !live && v > 0 && v <= this.info.maxQueueSize && (v & (v - 1)) === 0) q.size = v;
        break;
      case 0x1a:
        if (q) {
          q.vector = v < this.msix.vectors ? v : NO_VECTOR;
          this.syncInterrupts();
        }
        break;
      case 0x1c: if (q && !live && v === 1) q.enabled = true; break;
      case 0x20: case 0x24: case 0x28: case 0x2c: case 0x30: case 0x34: {
        if (!q || live) break;
        const field = offset < 0x28 ? q.desc : offset < 0x30 ? q.avail : q.used;
        if (data.length === 8) {
          field[0] = v % 2 ** 32;
          field[1] = Math.floor(v / 2 ** 32);
        } else field[(offset & 4) >> 2] = v >>> 0;
        break;
      }
      default:
    }
  }

  private async writeStatus(v: number): Promise<void> {
    if (v === 0) {
      await this.reset();
      return;
    }
    let next = (this.status & Status.DEVICE_NEEDS_RESET) | v;
    if (v & Status.FEATURES_OK && !(this.status & Status.FEATURES_OK) && !this.featuresAcceptable()) next &= ~Status.FEATURES_OK;
    const starting = next & Status.DRIVER_OK && !(this.status & Status.DRIVER_OK);
    this.status = next;
    if (starting) this.activate();
  }

  /** The driver may only accept what the device offered, and must accept VERSION_1. */
  private featuresAcceptable(): boolean {
    const offered: [number, number] = [lo(this.info.deviceFeatures), hi(this.info.deviceFeatures)];
    const ok = (this.driverFeatures[0] & ~offered[0]) === 0 && (this.driverFeatures[1] & ~offered[1]) === 0;
    return ok && (this.driverFeatures[1] & (1 << (VIRTIO_F_VERSION_1 - 32))) !== 0;
  }

  private activate(): void {
    const queues = this.queues
      .map((q, index) => ({ q, index }))
      .filter(({ q }) => q.enabled)
      .map(({ q, index }) => ({ index, size: q.size, desc: join64(q.desc), avail: join64(q.avail), used: join64(q.used) }));
    this.syncInterrupts();
    this.link.activate(join64(this.driverFeatures), queues);
  }

  private async reset(): Promise<void> {
    const wasActive = this.status !== 0;
    this.status = 0;
    this.driverFeatures = [0, 0];
    this.deviceFeatureSelect = 0;
    this.driverFeatureSelect = 0;
    this.configVector = NO_VECTOR;
    this.queueSelect = 0;
    this.isr = 0;
    for (const q of this.queues) {
      q.size = this.info.maxQueueSize;
      q.vector = NO_VECTOR;
      q.enabled = false;
      q.desc = [0, 0];
      q.avail = [0, 0];
      q.used = [0, 0];
    }
    this.syncInterrupts();
    if (wasActive) await this.link.reset();
  }

  // ---- interrupts ----

  private gsiFor(vector: number): number {
    let gsi = this.vectorGsi.get(vector);
    if (gsi === undefined) {
      gsi = this.host.allocGsi();
      this.vectorGsi.set(vector, gsi);
    }
    return gsi;
  }

  /**
   * Brings KVM in line with the registers: each unmasked vector in use has
   * an MSI route, and each queue's call eventfd is an irqfd on its vector's
   * GSI. A masked vector has its irqfds removed: the device's writes then
   * wait in the eventfd, and KVM injects them when the irqfd comes back.
   */
  private syncInterrupts(): void {
    for (const q of this.queues) {
      const route = q.vector !== NO_VECTOR ? this.msix.route(q.vector) : null;
      const wantGsi = route ? this.gsiFor(q.vector) : null;
      if (route && wantGsi !== null) {
        const key = `${route.addressLo}:${route.addressHi}:${route.data}`;
        if (this.routed.get(wantGsi) !== key) {
          this.host.setMsiRoute(wantGsi, route);
          this.routed.set(wantGsi, key);
        }
      }
      if (q.irqfdGsi !== wantGsi) {
        const fd = this.info.callFds[this.queues.indexOf(q)]!;
        if (q.irqfdGsi !== null) this.host.deassignIrqfd(fd, q.irqfdGsi);
        if (wantGsi !== null) this.host.assignIrqfd(fd, wantGsi);
        q.irqfdGsi = wantGsi;
      }
    }
    // A configuration interrupt that waited behind a mask goes out now.
    if (this.configVector !== NO_VECTOR && this.msix.isPending(this.configVector)) {
      const route = this.msix.route(this.configVector);
      if (route) {
        this.msix.setPending(this.configVector, false);
        this.host.signalMsi(route);
      }
    }
  }

  private configInterrupt(): void {
    this.isr |= ISR_CONFIG;
    if (this.configVector === NO_VECTOR) return;
    const route = this.msix.route(this.configVector);
    if (route) this.host.signalMsi(route);
    else this.msix.setPending(this.configVector, true);
  }

  // ---- events from the device process ----

  /** The device's configuration space changed (e.g. a resized disk). */
  configChanged(config: Uint8Array): void {
    this.deviceConfig = config.slice();
    this.configGeneration = (this.configGeneration + 1) & 0xff;
    this.configInterrupt();
  }

  /** The device cannot go on (a malformed ring, or its process died): tell the driver. */
  needsReset(): void {
    if (this.status & Status.DEVICE_NEEDS_RESET) return;
    this.status |= Status.DEVICE_NEEDS_RESET;
    this.configInterrupt();
  }

  get deviceStatus(): number {
    return this.status;
  }
}
