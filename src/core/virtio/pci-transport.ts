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

/** Offsets of the common configuration structure's fields (virtio 1.2, 4.1.4.3). */
const Common = {
  DEVICE_FEATURE_SELECT: 0x00,
  DEVICE_FEATURE: 0x04,
  DRIVER_FEATURE_SELECT: 0x08,
  DRIVER_FEATURE: 0x0c,
  CONFIG_MSIX_VECTOR: 0x10,
  NUM_QUEUES: 0x12,
  DEVICE_STATUS: 0x14,
  CONFIG_GENERATION: 0x15,
  QUEUE_SELECT: 0x16,
  QUEUE_SIZE: 0x18,
  QUEUE_MSIX_VECTOR: 0x1a,
  QUEUE_ENABLE: 0x1c,
  QUEUE_NOTIFY_OFF: 0x1e,
  QUEUE_DESC: 0x20,
  QUEUE_DRIVER: 0x28,
  QUEUE_DEVICE: 0x30,
} as const;

/**
 * The field that byte `offset` of the common configuration belongs to: its
 * offset and width. The 64-bit ring addresses count as two 32-bit halves.
 */
function commonFieldAt(offset: number): { offset: number; width: number } | null {
  if (offset < 0 || offset >= BAR0.COMMON_LEN) return null;
  if (offset < Common.CONFIG_MSIX_VECTOR || offset >= Common.QUEUE_DESC) return { offset: offset & ~3, width: 4 };
  if (offset === Common.DEVICE_STATUS || offset === Common.CONFIG_GENERATION) return { offset, width: 1 };
  return { offset: offset & ~1, width: 2 };
}

/** The ring address (low and high halves) whose field is at common-config `offset`, if any. */
function ringField(q: QueueState, offset: number): [number, number] | null {
  if (offset >= Common.QUEUE_DEVICE + 8 || offset < Common.QUEUE_DESC) return null;
  return offset < Common.QUEUE_DRIVER ? q.desc : offset < Common.QUEUE_DEVICE ? q.avail : q.used;
}

const u32 = (b: Uint8Array, at: number) => (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;

/** ISR bit 1: configuration change. Queue interrupts go through MSI-X only, so bit 0 stays clear. */
const ISR_CONFIG = 2;

/** What the transport needs from the VM: interrupt routes, irqfds, ioeventfds. */
export interface TransportHost {
  allocGsi(): number;
  setMsiRoute(gsi: number, msg: MsiMessage): void;
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
  /** The device process's reset, while the transport waits for it. */
  private resetting: Promise<void> | null = null;
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
    // A write from another vCPU waits for a reset in flight, so the device
    // is neither set up again nor reset twice before it has stopped.
    while (this.resetting) await this.resetting;
    if (offset < BAR0.COMMON + BAR0.COMMON_LEN) await this.writeCommon(offset, data);
    else if (offset >= BAR0.DEVICE && offset < BAR0.DEVICE + BAR0.DEVICE_LEN) {
      const o = offset - BAR0.DEVICE;
      // The device decides what its config space becomes (most of it is
      // read-only) and answers with config-changed when it changes.
      if (o + data.length <= this.deviceConfig.length) this.link.writeConfig(o, data.slice());
    } else if (offset >= BAR0.MSIX_TABLE && offset < BAR0.MSIX_TABLE + this.msix.tableSize) this.msix.writeTable(offset - BAR0.MSIX_TABLE, data);
    // Notify writes reach the ioeventfds in KVM; one that gets here (BAR not yet mapped there) has no effect.
  }

  private get queue(): QueueState | undefined {
    return this.queues[this.queueSelect];
  }

  /**
   * Reads the common configuration byte by byte, each byte from the field it
   * belongs to, so an access of any width or alignment sees what the
   * register file holds there. No field has a read side effect.
   */
  private readCommon(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const at = offset + i;
      const field = commonFieldAt(at);
      data[i] = field ? (this.commonField(field.offset) >>> (8 * (at - field.offset))) & 0xff : 0;
    }
  }

  private commonField(offset: number): number {
    const q = this.queue;
    const f = this.info.deviceFeatures;
    switch (offset) {
      case Common.DEVICE_FEATURE_SELECT: return this.deviceFeatureSelect;
      case Common.DEVICE_FEATURE: return this.deviceFeatureSelect === 0 ? lo(f) : this.deviceFeatureSelect === 1 ? hi(f) : 0;
      case Common.DRIVER_FEATURE_SELECT: return this.driverFeatureSelect;
      case Common.DRIVER_FEATURE: return this.driverFeatureSelect < 2 ? this.driverFeatures[this.driverFeatureSelect]! : 0;
      case Common.CONFIG_MSIX_VECTOR: return this.configVector;
      case Common.NUM_QUEUES: return this.info.numQueues;
      case Common.DEVICE_STATUS: return this.status;
      case Common.CONFIG_GENERATION: return this.configGeneration;
      case Common.QUEUE_SELECT: return this.queueSelect;
      // An unavailable queue (queue_select out of range) reads size 0.
      case Common.QUEUE_SIZE: return q ? q.size : 0;
      case Common.QUEUE_MSIX_VECTOR: return q ? q.vector : NO_VECTOR;
      case Common.QUEUE_ENABLE: return q?.enabled ? 1 : 0;
      case Common.QUEUE_NOTIFY_OFF: return q ? this.queueSelect : 0;
      default: {
        const field = q && ringField(q, offset);
        return field ? field[(offset & 4) >> 2] : 0;
      }
    }
  }

  /**
   * Writes take effect only with the field's own width at its offset (virtio
   * 1.2, 4.1.3.1); a 64-bit ring address also takes one 8-byte write. Other
   * accesses, and writes to read-only fields, are ignored.
   */
  private async writeCommon(offset: number, data: Uint8Array): Promise<void> {
    const field = commonFieldAt(offset);
    if (!field || field.offset !== offset) return;
    const q = this.queue;
    const ring = q && ringField(q, offset);
    if (ring && offset % 8 === 0 && data.length === 8) {
      if (this.status & Status.DRIVER_OK) return;
      ring[0] = u32(data, 0);
      ring[1] = u32(data, 4);
      return;
    }
    if (data.length !== field.width) return;
    const v = data.length === 4 ? u32(data, 0) : data.length === 2 ? data[0]! | (data[1]! << 8) : data[0]!;
    // Queue registers are frozen once the driver is running.
    const live = (this.status & Status.DRIVER_OK) !== 0;
    switch (offset) {
      case Common.DEVICE_FEATURE_SELECT: this.deviceFeatureSelect = v; break;
      case Common.DRIVER_FEATURE_SELECT: this.driverFeatureSelect = v; break;
      case Common.DRIVER_FEATURE:
        if (this.driverFeatureSelect < 2 && !(this.status & Status.FEATURES_OK)) this.driverFeatures[this.driverFeatureSelect] = v;
        break;
      case Common.CONFIG_MSIX_VECTOR:
        this.configVector = v < this.msix.vectors ? v : NO_VECTOR;
        break;
      case Common.DEVICE_STATUS: await this.writeStatus(v); break;
      case Common.QUEUE_SELECT: this.queueSelect = v; break;
      case Common.QUEUE_SIZE:
        // The size must be a power of 2 no larger than the device's maximum.
        if (q && !live && v > 0 && v <= this.info.maxQueueSize && (v & (v - 1)) === 0) q.size = v;
        break;
      case Common.QUEUE_MSIX_VECTOR:
        if (q) {
          q.vector = v < this.msix.vectors ? v : NO_VECTOR;
          this.syncInterrupts();
        }
        break;
      case Common.QUEUE_ENABLE: if (q && !live && v === 1) q.enabled = true; break;
      default:
        if (ring && !live) ring[(offset & 4) >> 2] = v;
    }
  }

  /**
   * Status bits only accumulate until a reset (the driver must not clear
   * one): clearing DRIVER_OK cannot reopen the queue registers of a running
   * device. FEATURES_OK sticks only for an acceptable feature set, and
   * DRIVER_OK only after FEATURES_OK, so the device never starts with
   * features it did not offer.
   */
  private async writeStatus(v: number): Promise<void> {
    if (v === 0) {
      await this.reset();
      return;
    }
    let next = this.status | v;
    if (next & Status.FEATURES_OK && !(this.status & Status.FEATURES_OK) && !this.featuresAcceptable()) next &= ~Status.FEATURES_OK;
    if (!(next & Status.FEATURES_OK)) next &= ~Status.DRIVER_OK;
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
    // A ring above 2^53 is beyond any guest-physical address, and beyond what the control protocol carries.
    if (queues.some((q) => !Number.isSafeInteger(q.desc) || !Number.isSafeInteger(q.avail) || !Number.isSafeInteger(q.used))) {
      this.needsReset();
      return;
    }
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
    if (!wasActive) return;
    this.resetting = this.link.reset().finally(() => (this.resetting = null));
    await this.resetting;
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
}
