// One virtual CPU: its fd, the shared kvm_run page, and the register, MSR,
// FPU, CPUID and LAPIC ioctls. Created and run inside the vCPU's own worker
// thread, so KVM_RUN blocks only that thread.
import * as libc from '../../sys/libc.js';
import * as abi from './abi.js';
import * as k from './ioctls.js';

const MSR_IA32_SYSENTER_CS = 0x174;
const MSR_IA32_SYSENTER_ESP = 0x175;
const MSR_IA32_SYSENTER_EIP = 0x176;
const MSR_STAR = 0xc0000081;
const MSR_LSTAR = 0xc0000082;
const MSR_CSTAR = 0xc0000083;
const MSR_SYSCALL_MASK = 0xc0000084;
const MSR_KERNEL_GS_BASE = 0xc0000102;
const MSR_IA32_TSC = 0x10;
const MSR_IA32_MISC_ENABLE = 0x1a0;
const MISC_ENABLE_FAST_STRING = 1;
const MSR_MTRR_DEF_TYPE = 0x2ff;
const MTRR_ENABLE = 1 << 11;
const MTRR_TYPE_WRBACK = 6;

const APIC_LVT_LINT0 = 0x350;
const APIC_LVT_LINT1 = 0x360;
const APIC_MODE_NMI = 4;
const APIC_MODE_EXTINT = 7;

export class Vcpu {
  readonly fd: number;
  /** Host address of the kvm_run page. */
  readonly runAddr: bigint;
  /** View of kvm_run: exit reason and the exit union are read from here. */
  readonly run: DataView;
  readonly runBytes: Uint8Array;
  private readonly regsBuf = new BigUint64Array(18);
  private readonly regsBytes = new Uint8Array(this.regsBuf.buffer);

  constructor(vmFd: number, readonly id: number, mmapSize: number) {
    this.fd = libc.ioctl(vmFd, k.KVM_CREATE_VCPU, id);
    this.runAddr = libc.mmap(mmapSize, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, this.fd);
    const ab = libc.view(this.runAddr, mmapSize);
    this.run = new DataView(ab);
    this.runBytes = new Uint8Array(ab);
  }

  /** KVM_RUN; returns 0, or -errno (EINTR when a signal kicked the thread out). */
  runOnce(): number {
    return libc.ioctlRaw(this.fd, k.KVM_RUN);
  }

  get exitReason(): number {
    return this.run.getUint32(abi.RUN.exit_reason, true);
  }

  getRegs(): Record<abi.RegName, bigint> {
    libc.ioctlIn(this.fd, k.KVM_GET_REGS, this.regsBytes);
    const out = {} as Record<abi.RegName, bigint>;
    abi.REG_NAMES.forEach((n, i) => (out[n] = this.regsBuf[i]!));
    return out;
  }

  setRegs(regs: Partial<Record<abi.RegName, bigint>>): void {
    libc.ioctlIn(this.fd, k.KVM_GET_REGS, this.regsBytes);
    abi.REG_NAMES.forEach((n, i) => {
      const v = regs[n];
      if (v !== undefined) this.regsBuf[i] = v;
    });
    libc.ioctlIn(this.fd, k.KVM_SET_REGS, this.regsBytes);
  }

  getSregs(): abi.Sregs {
    const buf = new Uint8Array(312);
    libc.ioctlIn(this.fd, k.KVM_GET_SREGS, buf);
    return abi.decode<abi.Sregs>(abi.kvm_sregs, buf);
  }

  setSregs(sregs: abi.Sregs): void {
    libc.ioctlIn(this.fd, k.KVM_SET_SREGS, abi.encode(abi.kvm_sregs, sregs));
  }

  /** x87 control word and MXCSR at their power-on values. */
  initFpu(): void {
    libc.ioctlIn(this.fd, k.KVM_SET_FPU, abi.encode(abi.kvm_fpu, {
      fpr: new Array(128).fill(0), fcw: 0x37f, fsw: 0, ftwx: 0, pad1: 0, last_opcode: 0, last_ip: 0, last_dp: 0,
      xmm: new Array(256).fill(0), mxcsr: 0x1f80, pad2: 0,
    }));
  }

  setMsrs(msrs: [number, number][]): void {
    const buf = new Uint8Array(8 + msrs.length * 16);
    const dv = new DataView(buf.buffer);
    dv.setUint32(0, msrs.length, true);
    msrs.forEach(([index, data], i) => {
      dv.setUint32(8 + i * 16, index, true);
      dv.setBigUint64(8 + i * 16 + 8, BigInt(data), true);
    });
    const set = libc.ioctlIn(this.fd, k.KVM_SET_MSRS, buf);
    if (set !== msrs.length) throw new Error(`KVM_SET_MSRS set ${set} of ${msrs.length} MSRs (failed at 0x${msrs[set]![0].toString(16)})`);
  }

  /** The MSR values a 64-bit Linux boot expects from firmware. */
  initBootMsrs(): void {
    this.setMsrs([
      [MSR_IA32_SYSENTER_CS, 0], [MSR_IA32_SYSENTER_ESP, 0], [MSR_IA32_SYSENTER_EIP, 0],
      [MSR_STAR, 0], [MSR_CSTAR, 0], [MSR_KERNEL_GS_BASE, 0], [MSR_SYSCALL_MASK, 0], [MSR_LSTAR, 0],
      [MSR_IA32_TSC, 0], [MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING],
      [MSR_MTRR_DEF_TYPE, MTRR_ENABLE | MTRR_TYPE_WRBACK],
    ]);
  }

  setCpuid(entries: abi.CpuidEntry[]): void {
    const size = 40;
    const buf = new Uint8Array(8 + entries.length * size);
    new DataView(buf.buffer).setUint32(0, entries.length, true);
    entries.forEach((e, i) => buf.set(abi.encode(abi.kvm_cpuid_entry2, { ...e, padding: [0, 0, 0] }), 8 + i * size));
    libc.ioctlIn(this.fd, k.KVM_SET_CPUID2, buf);
  }

  /** LINT0 delivers the PIC's ExtINT, LINT1 NMIs: what a PC's BIOS programs. */
  initLapic(): void {
    const buf = new Uint8Array(1024);
    libc.ioctlIn(this.fd, k.KVM_GET_LAPIC, buf);
    const dv = new DataView(buf.buffer);
    const setMode = (reg: number, mode: number) => dv.setUint32(reg, (dv.getUint32(reg, true) & ~0x700) | (mode << 8), true);
    setMode(APIC_LVT_LINT0, APIC_MODE_EXTINT);
    setMode(APIC_LVT_LINT1, APIC_MODE_NMI);
    libc.ioctlIn(this.fd, k.KVM_SET_LAPIC, buf);
  }

  /** Guest-virtual to guest-physical through the vCPU's current page tables; null when unmapped. */
  translate(gva: bigint): number | null {
    const buf = new Uint8Array(24);
    new DataView(buf.buffer).setBigUint64(0, gva, true);
    libc.ioctlIn(this.fd, k.KVM_TRANSLATE, buf);
    const dv = new DataView(buf.buffer);
    return dv.getUint8(16) ? Number(dv.getBigUint64(8, true)) : null;
  }

  /** Injects exception `vector` (no error code) at the next entry. */
  injectException(vector: number): void {
    const buf = new Uint8Array(64);
    libc.ioctlIn(this.fd, k.KVM_GET_VCPU_EVENTS, buf);
    buf[0] = 1; // exception.injected
    buf[1] = vector;
    buf[2] = 0; // has_error_code
    buf[3] = 0; // pending
    libc.ioctlIn(this.fd, k.KVM_SET_VCPU_EVENTS, buf);
  }
}
