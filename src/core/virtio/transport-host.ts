// The VM side of the virtio-pci transport: MSI routes, irqfds, ioeventfds
// and BAR mappings, done with KVM and the core's MMIO bus.
import type { Bus, BusDevice } from '../bus.js';
import { FIRST_MSI_GSI, type Vm } from '../kvm/vm.js';
import type { MsiMessage } from '../pci/msix.js';
import type { TransportHost } from './pci-transport.js';
import { SysError } from '../../sys/libc.js';

export class KvmTransportHost implements TransportHost {
  private nextGsi = FIRST_MSI_GSI;

  constructor(
    private readonly vm: Vm,
    private readonly mmio: Bus,
    /** The guest placed a BAR over another device's range (it then decodes nothing). */
    private readonly onOverlap: (addr: number, why: string) => void = () => {},
  ) {}

  allocGsi(): number {
    return this.nextGsi++;
  }

  setMsiRoute(gsi: number, msg: MsiMessage): void {
    this.vm.setMsiRoute({ gsi, ...msg });
  }

  assignIrqfd(fd: number, gsi: number): void {
    this.vm.assignIrqfd(fd, gsi);
  }

  deassignIrqfd(fd: number, gsi: number): void {
    this.vm.deassignIrqfd(fd, gsi);
  }

  /**
   * An MSI the guest aimed at no CPU makes KVM_SIGNAL_MSI fail: it is lost,
   * as on hardware. It must not throw, since a device process's message
   * (config change, needs-reset) is what sends it.
   */
  signalMsi(msg: MsiMessage): void {
    try {
      this.vm.signalMsi(msg.addressLo, msg.addressHi, msg.data);
    } catch (e) {
      if (!(e instanceof SysError)) throw e;
    }
  }

  assignIoeventfd(fd: number, addr: number, len: number): void {
    this.vm.assignIoeventfd(fd, addr, len);
  }

  deassignIoeventfd(fd: number, addr: number, len: number): void {
    this.vm.assignIoeventfd(fd, addr, len, { deassign: true });
  }

  mapBar(addr: number, len: number, dev: BusDevice): boolean {
    try {
      this.mmio.insert(addr, len, dev);
      return true;
    } catch (e) {
      this.onOverlap(addr, (e as Error).message);
      return false;
    }
  }

  unmapBar(addr: number): void {
    this.mmio.remove(addr);
  }
}
