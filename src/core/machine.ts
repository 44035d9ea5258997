// A virtual machine: KVM VM with its in-kernel irqchip and PIT, guest RAM,
// the loaded Linux kernel, the legacy PC devices on the port bus, and the
// vCPU threads. `run()` resolves when the guest resets or powers off, is
// stopped, or with the error that stopped it. It is the control API's
// target (api/server.ts): pause and resume hold the vCPUs out of KVM_RUN,
// the devices' queues and the guest's kvmclock, as a paused QEMU does.
import type { Logger } from 'pino';
import { loadLinux } from './boot/kernel.js';
import { Bus, type IrqLine } from './bus.js';
import { cpuidFor } from './cpuid.js';
import { Cap } from './kvm/ioctls.js';
import { Kvm, type Vm } from './kvm/vm.js';
import { CMOS_PORT, CMOS_PORT_COUNT, CmosRtc } from './legacy/cmos-rtc.js';
import { I8042, I8042_PORT, I8042_PORT_COUNT } from './legacy/i8042.js';
import { COM1_IRQ, COM1_PORT, UART_PORT_COUNT, Uart8250 } from './legacy/uart-8250.js';
import { GuestMemory, MMIO_HOLE_START } from './memory.js';
import { PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_PORT_COUNT, PciRoot } from './pci/root.js';
import { isSoftwareKvmHost } from './quirks.js';
import { LineBudget } from './line-budget.js';
import type { SeccompMode } from './jail/launch.js';
import type { HostIds } from './jail/identity.js';
import type { DeviceRequest, OpenedBackend } from './kinds/index.js';
import { VirtioDeviceProcess } from './supervisor/device-process.js';
import * as libc from '../sys/libc.js';
import { BAR0, VirtioPciTransport } from './virtio/pci-transport.js';
import { KvmTransportHost } from './virtio/transport-host.js';
import type { VcpuBootState } from './vcpu/protocol.js';
import { VcpuSet } from './vcpu/vcpu-set.js';
import { DeviceLauncher } from './launcher/client.js';
import { sealCore } from './jail/seal.js';
import type { ControlTarget, VmState } from './api/server.js';
import type { MetricFamily } from './api/metrics.js';

export interface MachineConfig {
  kernel: Uint8Array;
  initrd?: Uint8Array;
  cmdline: string;
  memBytes: number;
  cpus: number;
  /** virtio devices in PCI slot order, each served by its own device process. */
  devices: DeviceRequest[];
  /** Names the VM in logs and derives its stable MAC addresses. */
  name: string;
  /** How device processes are confined: seccomp mode, and whether they run in a jail at all. */
  seccomp: SeccompMode;
  jail: boolean;
  /** The host uid and gid device processes run as (jail/identity.ts); default the core's own. */
  deviceIds?: HostIds;
  /** Seal the core once set up (seal.ts), devices then starting through a launcher; false only for debugging. */
  sealCore: boolean;
  /** Keep a spare process per device for restarts in milliseconds (DeviceProcessOptions.spare). */
  spareDevices?: boolean;
  /** Files the core made that its launcher removes once the core is gone (the control API's socket). */
  removeOnExit?: string[];
  /** Each byte the guest writes to its serial port. */
  serialOutput: (byte: number) => void;
  log: Logger;
}

/** stopped: by the operator (Ctrl-A x, POST /vm/stop). */
export type MachineExit = { kind: 'reset' | 'poweroff' | 'stopped'; fixups: number } | { kind: 'error'; message: string };

/** Warnings a second about a guest placing a BAR over another device (LineBudget). */
const BAR_WARNINGS_PER_SECOND = 5;

/** Where KVM puts the TSS and identity-map pages it needs: just below the BIOS ROM at 4 GiB. */
const KVM_TSS_ADDR = 0xfffbd000;
const KVM_IDENTITY_MAP_ADDR = 0xfffbc000;

export class Machine implements ControlTarget {
  readonly vm: Vm;
  readonly memory: GuestMemory;
  readonly pio = new Bus('pio');
  readonly mmio = new Bus('mmio');
  readonly serial: Uart8250;
  readonly quirks: boolean;
  readonly pci = new PciRoot();
  readonly devices: VirtioDeviceProcess[] = [];
  /** What device backends started besides their fds (passt), ended after the devices. */
  private readonly releases: (() => void)[] = [];
  /** Starts device processes once the core is sealed. */
  private launcher: DeviceLauncher | undefined;
  private readonly transportHost: KvmTransportHost;
  private nextBar = MMIO_HOLE_START;
  private readonly vcpus: VcpuSet;
  private readonly stopRequested: Promise<MachineExit>;
  private requestStop!: (e: MachineExit) => void;
  private vmState: VmState = 'running';
  private readonly startedAt = Date.now();
  /** The guest's kvmclock when it was paused: it carries on from there. */
  private pausedClock: bigint | null = null;

  constructor(
    private readonly kvm: Kvm,
    private readonly config: MachineConfig,
  ) {
    this.stopRequested = new Promise((r) => (this.requestStop = r));
    this.quirks = isSoftwareKvmHost();
    this.vm = kvm.createVm();
    this.vm.setTssAddr(KVM_TSS_ADDR);
    this.vm.setIdentityMapAddr(KVM_IDENTITY_MAP_ADDR);
    this.vm.createIrqchip();
    this.vm.createPit();

    this.memory = GuestMemory.create(config.memBytes);
    for (const r of this.memory.regions) this.vm.addMemory(r.gpa, r.size, this.memory.hostAddrOf(r));

    this.serial = new Uart8250({ irq: this.irqLine(COM1_IRQ), output: config.serialOutput });
    this.pio.insert(COM1_PORT, UART_PORT_COUNT, this.serial);
    this.pio.insert(I8042_PORT, I8042_PORT_COUNT, new I8042({ onReset: () => this.requestStop({ kind: 'reset', fixups: 0 }) }));
    const low = this.memory.lowEnd;
    const high = this.memory.size - low;
    this.pio.insert(CMOS_PORT, CMOS_PORT_COUNT, new CmosRtc({ ramBelow4G: low, ramAbove4G: high }));
    this.pio.insert(PCI_CONFIG_ADDRESS_PORT, PCI_CONFIG_PORT_COUNT, this.pci);
    // A guest can place BARs in a loop: a few warnings a second, then a count of those left out.
    const barWarnings = new LineBudget(BAR_WARNINGS_PER_SECOND);
    this.transportHost = new KvmTransportHost(this.vm, this.mmio, (addr, why) => {
      const dropped = barWarnings.take();
      if (dropped === null) return;
      config.log.warn({ addr: `0x${addr.toString(16)}`, why, ...(dropped > 0 ? { dropped } : {}) }, 'guest placed a PCI BAR over another device; it stays unmapped');
    });
    this.vcpus = new VcpuSet(this.pio, this.mmio, {
      fixup: (vcpu, kind, rip) => config.log.debug({ vcpu, kind, rip: `0x${rip.toString(16)}` }, 'software-KVM fixup applied'),
      deviceError: (bus, addr, e) => config.log.error({ bus, addr: `0x${addr.toString(16)}`, err: e.message }, 'a device model failed on a guest access; answered with all ones'),
    });
  }

  /** Opens every device's backend (image, tap, passt, share), in order: each one's index among its kind. */
  private async openBackends(): Promise<{ req: DeviceRequest; index: number; backend: OpenedBackend }[]> {
    const opened: { req: DeviceRequest; index: number; backend: OpenedBackend }[] = [];
    const perKind = new Map<string, number>();
    try {
      for (const req of this.config.devices) {
        const index = perKind.get(req.kind.kind) ?? 0;
        perKind.set(req.kind.kind, index + 1);
        opened.push({ req, index, backend: await req.kind.open(req.spec, { index, vmName: this.config.name, log: this.config.log }) });
      }
    } catch (e) {
      releaseBackends(opened);
      throw e;
    }
    return opened;
  }

  /** Starts a device's jailed process on its opened backend and puts it on the PCI bus. */
  private async addDevice(req: DeviceRequest, index: number, backend: OpenedBackend): Promise<void> {
    const { config } = this;
    const kind = req.kind.kind;
    const name = `${kind}${index}`;
    let dev: VirtioDeviceProcess;
    try {
      dev = await VirtioDeviceProcess.start({
        name, kind, numQueues: backend.numQueues, backendFd: backend.fd, options: backend.options, fileSizeLimit: backend.fileSizeLimit,
        ...(backend.stateBytes ? { stateBytes: backend.stateBytes } : {}), memory: this.memory, jail: config.jail, seccomp: config.seccomp, logLevel: config.log.level, log: config.log, replacement: 'resume', describe: backend.describe, ...(config.deviceIds ? { hostIds: config.deviceIds } : {}),
        ...(this.launcher ? { launcher: this.launcher } : {}), spare: config.spareDevices === true,
      });
    } catch (e) {
      libc.close(backend.fd);
      backend.release?.();
      throw e;
    }
    if (backend.release) this.releases.push(backend.release);
    const transport = new VirtioPciTransport({
      deviceId: backend.virtioId, classCode: backend.classCode, deviceFeatures: dev.hello.deviceFeatures, numQueues: dev.hello.numQueues,
      maxQueueSize: dev.hello.maxQueueSize, config: dev.hello.config, kickFds: dev.kickFds, callFds: dev.callFds,
    }, this.transportHost, dev, this.nextBar);
    this.nextBar += BAR0.SIZE;
    dev.onFailure = () => transport.needsReset();
    dev.onConfigChanged = (c) => transport.configChanged(c);
    const slot = this.pci.add(transport);
    this.devices.push(dev);
    config.log.info({ device: name, pid: dev.pid, slot, ...backend.describe }, `virtio-${kind} device started`);
  }

  static create(config: MachineConfig): Machine {
    const kvm = Kvm.open();
    const max = kvm.checkExtension(Cap.MAX_VCPUS) || kvm.checkExtension(Cap.NR_VCPUS);
    if (config.cpus > max) throw new RangeError(`--cpus ${config.cpus} is more than this host's KVM allows (${max})`);
    return new Machine(kvm, config);
  }

  /** An interrupt input of the in-kernel IOAPIC/PIC. */
  irqLine(gsi: number): IrqLine {
    return { set: (level) => this.vm.setIrqLine(gsi, level) };
  }

  async run(): Promise<MachineExit> {
    const { config } = this;
    const opened = await this.openBackends();
    if (config.sealCore) {
      // Everything a device needs from the host is open: from here on devices start through the launcher.
      this.launcher = DeviceLauncher.start({
        jail: config.jail, seccomp: config.seccomp, removeOnExit: config.removeOnExit ?? [], ...(config.deviceIds ? { hostIds: config.deviceIds } : {}),
        endOnExit: opened.flatMap(({ backend }) => (backend.helperPid ? [backend.helperPid] : [])),
      }, config.log);
    }
    try {
      for (let i = 0; i < opened.length; i++) {
        const { req, index, backend } = opened[i]!;
        try {
          await this.addDevice(req, index, backend);
        } catch (e) {
          releaseBackends(opened.slice(i + 1)); // addDevice released its own
          throw e;
        }
      }
    } catch (e) {
      await this.shutdownDevices();
      throw e;
    }
    const boot = loadLinux(this.memory, { kernel: config.kernel, initrd: config.initrd, cmdline: config.cmdline, cpus: config.cpus });
    config.log.info({ format: boot.format, entry: boot.cpu.rip, initrd: boot.initrd, cmdline: config.cmdline }, 'kernel loaded');
    const c = boot.cpu;
    const bootState: VcpuBootState = {
      regs: { rip: BigInt(c.rip), rsp: BigInt(c.rsp), rbp: BigInt(c.rbp), rsi: BigInt(c.rsi), rflags: BigInt(c.rflags) },
      sregs: { ...c.segments, gdt: c.gdt, idt: c.idt, cr0: c.cr0, cr3: c.cr3, cr4: c.cr4, efer: c.efer },
    };
    const supported = this.kvm.supportedCpuid();
    const mmapSize = this.kvm.vcpuMmapSize();
    const memory = { hostAddr: this.memory.hostAddr, size: this.memory.size, regions: this.memory.regions };
    this.vcpus.start(
      Array.from({ length: config.cpus }, (_, id) => ({
        id, vmFd: this.vm.fd, mmapSize, cpuid: cpuidFor(supported, id, config.cpus), quirks: this.quirks, memory,
        boot: id === 0 ? bootState : undefined,
      })),
    );
    // The vCPU threads have made their vCPUs (and loaded their code): the core seals itself, then each
    // vCPU thread stacks its own filter and runs the guest.
    await this.vcpus.ready;
    try {
      if (config.sealCore) sealCore(config.seccomp, config.log, config.deviceIds);
    } catch (e) {
      await this.vcpus.stop(); // never released, they leave without running the guest
      await this.shutdownDevices();
      throw e;
    }
    this.vcpus.release(config.sealCore ? config.seccomp : undefined);
    const first = await Promise.race([
      this.stopRequested,
      this.vcpus.firstExit.then((e): MachineExit =>
        e.reason === 'error' ? { kind: 'error', message: e.message ?? 'vCPU failed' } : { kind: e.reason === 'poweroff' ? 'poweroff' : 'reset', fixups: e.fixups },
      ),
    ]);
    this.vmState = 'stopping';
    const exits = await this.vcpus.stop();
    await this.shutdownDevices();
    const fixups = exits.reduce((n, e) => n + e.fixups, 0);
    config.log.info({ exit: first, fixups }, 'machine stopped');
    return first.kind === 'error' ? first : { ...first, fixups };
  }

  private async shutdownDevices(): Promise<void> {
    await Promise.all(this.devices.map((d) => d.shutdown()));
    for (const release of this.releases.splice(0)) release();
    await this.launcher?.close(); // it ends passt and removes the sockets a sealed core may not
  }

  /** Asks the machine to stop: the vCPUs end and the devices shut down cleanly. */
  stop(): void {
    this.vmState = 'stopping';
    this.requestStop({ kind: 'stopped', fixups: 0 });
  }

  get state(): VmState {
    return this.vmState;
  }

  summary(): Record<string, unknown> {
    return { name: this.config.name, uptimeSeconds: Math.round((Date.now() - this.startedAt) / 1000), vcpus: this.config.cpus, memoryMiB: this.config.memBytes / 2 ** 20 };
  }

  /** Holds the vCPUs out of KVM_RUN, then the devices' queues; the guest's clock stops with them. */
  async pause(): Promise<void> {
    if (this.vmState !== 'running') return;
    this.vmState = 'paused';
    await this.vcpus.pause();
    this.pausedClock = this.vm.getClock();
    await Promise.all(this.devices.map((d) => d.pause()));
    this.config.log.info('VM paused');
  }

  async resume(): Promise<void> {
    if (this.vmState !== 'paused') return;
    if (this.pausedClock !== null) this.vm.setClock(this.pausedClock);
    this.pausedClock = null;
    for (const d of this.devices) d.resume();
    this.vmState = 'running';
    this.vcpus.resume();
    this.config.log.info('VM resumed');
  }

  metrics(): MetricFamily[] {
    return [
      { name: 'splitvm_vm_paused', type: 'gauge', help: 'Whether the VM is paused.', samples: [{ labels: {}, value: this.vmState === 'paused' ? 1 : 0 }] },
      { name: 'splitvm_vm_uptime_seconds', type: 'gauge', help: 'Seconds since the VM was created.', samples: [{ labels: {}, value: (Date.now() - this.startedAt) / 1000 }] },
      {
        name: 'splitvm_vcpu_exits_total', type: 'counter', help: 'Exits of each vCPU from KVM_RUN to the VMM, by reason.',
        samples: this.vcpus.exitCounts().flatMap((counts, vcpu) => Object.entries(counts).map(([reason, value]) => ({ labels: { vcpu: String(vcpu), reason }, value }))),
      },
    ];
  }
}

/** Closes backends no device process took, and ends what was started for them (passt). */
function releaseBackends(opened: { backend: OpenedBackend }[]): void {
  for (const { backend } of opened) {
    libc.close(backend.fd);
    backend.release?.();
  }
}
