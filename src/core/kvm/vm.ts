// The KVM system and VM file descriptors: opening /dev/kvm, creating the VM,
// memory slots, the in-kernel irqchip and PIT, IRQ lines, GSI routing,
// irqfds and ioeventfds. vCPUs live in vcpu.ts (created in worker threads).
import * as libc from '../../sys/libc.js';
import * as abi from './abi.js';
import * as k from './ioctls.js';

export class KvmUnavailableError extends Error {}

export class Kvm {
  private constructor(readonly fd: number) {}

  static open(path = '/dev/kvm'): Kvm {
    let fd: number;
    try {
      fd = libc.open(path, libc.O_RDWR);
    } catch (e) {
      const errno = e instanceof libc.SysError ? e.errno : 0;
      if (errno === 2) throw new KvmUnavailableError(`${path} does not exist: this host has no KVM (load kvm_intel, kvm_amd or kvm_pvm)`);
      if (errno === 13 || errno === 1) throw new KvmUnavailableError(`no permission to open ${path}: add yourself to the kvm group or run as root`);
      throw new KvmUnavailableError(`cannot open ${path}: ${(e as Error).message}`);
    }
    let version: number;
    try {
      version = libc.ioctl(fd, k.KVM_GET_API_VERSION);
    } catch {
      libc.close(fd);
      throw new KvmUnavailableError(`${path} is not a KVM device: this host's KVM module is not loaded or did not bind`);
    }
    if (version !== k.KVM_API_VERSION) throw new KvmUnavailableError(`${path} speaks KVM API ${version}, splitvm needs ${k.KVM_API_VERSION}`);
    return new Kvm(fd);
  }

  checkExtension(cap: number): number {
    return libc.ioctl(this.fd, k.KVM_CHECK_EXTENSION, cap);
  }

  vcpuMmapSize(): number {
    return libc.ioctl(this.fd, k.KVM_GET_VCPU_MMAP_SIZE);
  }

  /** KVM_GET_SUPPORTED_CPUID: the CPUID leaves this host's KVM can expose. */
  supportedCpuid(): abi.CpuidEntry[] {
    const max = 256;
    const entrySize = 40;
    const buf = new Uint8Array(8 + max * entrySize);
    new DataView(buf.buffer).setUint32(0, max, true);
    libc.ioctlIn(this.fd, k.KVM_GET_SUPPORTED_CPUID, buf);
    const n = new DataView(buf.buffer).getUint32(0, true);
    const out: abi.CpuidEntry[] = [];
    for (let i = 0; i < n; i++) out.push(abi.decode<abi.CpuidEntry>(abi.kvm_cpuid_entry2, buf, 8 + i * entrySize));
    return out;
  }

  createVm(): Vm {
    return new Vm(this, libc.ioctl(this.fd, k.KVM_CREATE_VM, 0));
  }
}

export interface MsiRoute {
  gsi: number;
  addressLo: number;
  addressHi: number;
  data: number;
}

/** GSIs 0–23 are the IOAPIC pins (0–15 also the PICs); MSI routes start here. */
export const FIRST_MSI_GSI = 24;

export class Vm {
  private nextSlot = 0;
  private msiRoutes = new Map<number, MsiRoute>();

  constructor(
    readonly kvm: Kvm,
    readonly fd: number,
  ) {}

  /** Maps `size` bytes of host memory at `hostAddr` into the guest at `gpa`, in a new slot. */
  addMemory(gpa: number, size: number, hostAddr: bigint): void {
    const region = abi.encode(abi.kvm_userspace_memory_region, {
      slot: this.nextSlot++,
      flags: 0,
      guest_phys_addr: gpa,
      memory_size: size,
      userspace_addr: hostAddr,
    });
    libc.ioctlIn(this.fd, k.KVM_SET_USER_MEMORY_REGION, region);
  }

  /** TSS and identity-map pages for Intel's real-mode emulation, just below the BIOS area at 4 GiB. */
  /** The guest's kvmclock, in nanoseconds (KVM_GET_CLOCK). */
  getClock(): bigint {
    const buf = new Uint8Array(k.KVM_CLOCK_DATA_BYTES);
    libc.ioctlIn(this.fd, k.KVM_GET_CLOCK, buf);
    return new DataView(buf.buffer).getBigUint64(0, true);
  }

  /** Sets the guest's kvmclock (KVM_SET_CLOCK, no flags: the clock carries on from `ns`). */
  setClock(ns: bigint): void {
    const buf = new Uint8Array(k.KVM_CLOCK_DATA_BYTES);
    new DataView(buf.buffer).setBigUint64(0, ns, true);
    libc.ioctlIn(this.fd, k.KVM_SET_CLOCK, buf);
  }

  setTssAddr(addr: number): void {
    libc.ioctl(this.fd, k.KVM_SET_TSS_ADDR, addr);
  }

  setIdentityMapAddr(addr: number): void {
    const buf = new Uint8Array(8);
    new DataView(buf.buffer).setBigUint64(0, BigInt(addr), true);
    libc.ioctlIn(this.fd, k.KVM_SET_IDENTITY_MAP_ADDR, buf);
  }

  createIrqchip(): void {
    libc.ioctl(this.fd, k.KVM_CREATE_IRQCHIP);
  }

  createPit(): void {
    libc.ioctlIn(this.fd, k.KVM_CREATE_PIT2, abi.encode(abi.kvm_pit_config, { flags: k.KVM_PIT_SPEAKER_DUMMY, pad: new Array(15).fill(0) }));
  }

  /** struct kvm_irq_level, reused: a UART raises and lowers its line for every byte. */
  private readonly irqLevel = new Uint8Array(8);
  private readonly irqLevelView = new DataView(this.irqLevel.buffer);
  /** Drives an IOAPIC/PIC input (GSI) high or low. */
  setIrqLine(gsi: number, level: boolean): void {
    this.irqLevelView.setUint32(0, gsi, true);
    this.irqLevelView.setUint32(4, level ? 1 : 0, true);
    libc.ioctlIn(this.fd, k.KVM_IRQ_LINE, this.irqLevel);
  }

  /**
   * Sets (or replaces) the MSI route of `gsi` and reloads the whole routing
   * table. When KVM refuses the table, the previous route stays, so one bad
   * route cannot make every later update fail.
   */
  setMsiRoute(route: MsiRoute): void {
    const previous = this.msiRoutes.get(route.gsi);
    this.msiRoutes.set(route.gsi, route);
    try {
      this.loadRouting();
    } catch (e) {
      if (previous) this.msiRoutes.set(route.gsi, previous);
      else this.msiRoutes.delete(route.gsi);
      throw e;
    }
  }

  /**
   * KVM_SET_GSI_ROUTING replaces the whole table, so it carries the default
   * irqchip routes (PIC 0–15, IOAPIC 0–23) that KVM_CREATE_IRQCHIP set up.
   */
  private loadRouting(): void {
    const entries: object[] = [];
    for (let pin = 0; pin < 24; pin++) {
      if (pin < 16 && pin !== 2) {
        const chip = pin < 8 ? k.KVM_IRQCHIP_PIC_MASTER : k.KVM_IRQCHIP_PIC_SLAVE;
        entries.push({ gsi: pin, type: k.KVM_IRQ_ROUTING_IRQCHIP, flags: 0, pad: 0, u: { irqchip: { irqchip: chip, pin: pin % 8 } } });
      }
      entries.push({ gsi: pin, type: k.KVM_IRQ_ROUTING_IRQCHIP, flags: 0, pad: 0, u: { irqchip: { irqchip: k.KVM_IRQCHIP_IOAPIC, pin } } });
    }
    for (const r of this.msiRoutes.values()) {
      entries.push({
        gsi: r.gsi, type: k.KVM_IRQ_ROUTING_MSI, flags: 0, pad: 0,
        u: { msi: { address_lo: r.addressLo, address_hi: r.addressHi, data: r.data, devid: 0 } },
      });
    }
    const entrySize = 48;
    const buf = new Uint8Array(8 + entries.length * entrySize);
    new DataView(buf.buffer).setUint32(0, entries.length, true);
    entries.forEach((e, i) => buf.set(abi.encode(abi.kvm_irq_routing_entry, e), 8 + i * entrySize));
    libc.ioctlIn(this.fd, k.KVM_SET_GSI_ROUTING, buf);
  }

  /** Makes a write to `eventfd` inject `gsi` without leaving the kernel. */
  assignIrqfd(eventfd: number, gsi: number): void {
    libc.ioctlIn(this.fd, k.KVM_IRQFD, abi.encode(abi.kvm_irqfd, { fd: eventfd, gsi, flags: 0, resamplefd: 0, pad: new Array(16).fill(0) }));
  }

  deassignIrqfd(eventfd: number, gsi: number): void {
    libc.ioctlIn(this.fd, k.KVM_IRQFD, abi.encode(abi.kvm_irqfd, { fd: eventfd, gsi, flags: k.KVM_IRQFD_FLAG_DEASSIGN, resamplefd: 0, pad: new Array(16).fill(0) }));
  }

  /** Makes a guest write of `len` bytes at `addr` (MMIO, or port I/O when `pio`) signal `eventfd` instead of exiting. */
  assignIoeventfd(eventfd: number, addr: number, len: number, opts: { pio?: boolean; datamatch?: number; deassign?: boolean } = {}): void {
    let flags = 0;
    if (opts.pio) flags |= k.KVM_IOEVENTFD_FLAG_PIO;
    if (opts.datamatch !== undefined) flags |= k.KVM_IOEVENTFD_FLAG_DATAMATCH;
    if (opts.deassign) flags |= k.KVM_IOEVENTFD_FLAG_DEASSIGN;
    libc.ioctlIn(this.fd, k.KVM_IOEVENTFD, abi.encode(abi.kvm_ioeventfd, {
      datamatch: opts.datamatch ?? 0, addr, len, fd: eventfd, flags, pad: new Array(36).fill(0),
    }));
  }

  /** Injects one MSI directly (used for the config-change vector). */
  signalMsi(addressLo: number, addressHi: number, data: number): void {
    libc.ioctlIn(this.fd, k.KVM_SIGNAL_MSI, abi.encode(abi.kvm_msi, { address_lo: addressLo, address_hi: addressHi, data, flags: 0, devid: 0, pad: new Array(12).fill(0) }));
  }
}
