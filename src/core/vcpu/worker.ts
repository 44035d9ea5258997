// The vCPU thread: creates its vCPU, sets its boot state, waits for the
// main thread's release (sealing itself with its own filter if the core is
// sealed: thread-seal.ts), and loops on KVM_RUN. Port and MMIO exits go to
// the main thread's device model through the exit channel; the POST-code
// port is absorbed here; emulation failures are fixed up here on a
// software-KVM host. The main thread stops the loop with the channel's STOP
// flag, immediate_exit and a signal (tgkill), and pauses it the same way
// with PAUSE: the thread then waits out of KVM_RUN.
import { parentPort, workerData } from 'node:worker_threads';
import * as libc from '../../sys/libc.js';
import * as abi from '../kvm/abi.js';
import { Exit, EXIT_IO_OUT, INTERNAL_ERROR_EMULATION, SYSTEM_EVENT_RESET, SYSTEM_EVENT_SHUTDOWN } from '../kvm/ioctls.js';
import { Vcpu } from '../kvm/vcpu.js';
import { fixupFor, RFLAGS_AC } from '../quirks.js';
import { dataBytes, exitSlot, Kind, Slot } from './exit-channel.js';
import type { VcpuInit, VcpuMessage } from './protocol.js';
import { sealThisVcpuThread, vcpuThreadRules } from './thread-seal.js';

const init = workerData as VcpuInit;
const port = parentPort!;
const post = (m: VcpuMessage) => port.postMessage(m);

/** Ports whose writes are ignored in the vCPU thread: the POST diagnostic port. */
const POST_PORT = 0x80;

function main(): void {
  const vcpu = new Vcpu(init.vmFd, init.id, init.mmapSize);
  vcpu.setCpuid(init.cpuid);
  vcpu.initBootMsrs();
  vcpu.initFpu();
  vcpu.initLapic();
  if (init.boot) {
    const sregs = vcpu.getSregs();
    vcpu.setSregs({ ...sregs, ...init.boot.sregs });
    const regs: Partial<Record<abi.RegName, bigint>> = {};
    for (const [name, value] of Object.entries(init.boot.regs)) regs[name as abi.RegName] = BigInt(value);
    vcpu.setRegs(regs);
  }
  const rules = vcpuThreadRules(vcpu.fd);
  post({ type: 'ready', tid: libc.gettid(), runAddr: vcpu.runAddr });
  if (!sealThisVcpuThread(init.channel, rules)) post({ type: 'exit', reason: 'stopped', fixups: 0 });
  else post(loop(vcpu));
}

function loop(vcpu: Vcpu): VcpuMessage {
  const ch = init.channel;
  const data = dataBytes(ch);
  const run = vcpu.run;
  const runBytes = vcpu.runBytes;
  let fixups = 0;

  /** Sends an access to the main thread and waits for its answer. */
  const forward = (kind: number, isWrite: boolean, addr: number, size: number) => {
    Atomics.store(ch, Slot.KIND, kind);
    Atomics.store(ch, Slot.IS_WRITE, isWrite ? 1 : 0);
    Atomics.store(ch, Slot.SIZE, size);
    Atomics.store(ch, Slot.ADDR_LO, addr >>> 0);
    Atomics.store(ch, Slot.ADDR_HI, Math.floor(addr / 2 ** 32));
    const seq = (Atomics.load(ch, Slot.REQUEST) + 1) | 0;
    Atomics.store(ch, Slot.REQUEST, seq);
    Atomics.notify(ch, Slot.REQUEST);
    while (Atomics.load(ch, Slot.REPLY) !== seq && !Atomics.load(ch, Slot.STOP)) Atomics.wait(ch, Slot.REPLY, Atomics.load(ch, Slot.REPLY), 100);
  };

  for (;;) {
    if (Atomics.load(ch, Slot.STOP)) return { type: 'exit', reason: 'stopped', fixups };
    if (Atomics.load(ch, Slot.PAUSE)) {
      holdWhilePaused(ch);
      continue;
    }
    const ret = vcpu.runOnce();
    if (ret < 0) {
      if (ret === -4 || ret === -11) {
        // EINTR (a stop or pause kick) or EAGAIN. immediate_exit is cleared before STOP and PAUSE are
        // read again at the top: a kick that comes meanwhile sets it again after, and is not lost.
        ch[exitSlot.interrupted]!++;
        run.setUint8(abi.RUN.immediate_exit, 0);
        continue;
      }
      return { type: 'exit', reason: 'error', fixups, message: `KVM_RUN on vCPU ${init.id} failed: ${libc.errnoName(-ret)}` };
    }
    switch (vcpu.exitReason) {
      case Exit.IO: {
        ch[exitSlot.io]!++;
        const isOut = run.getUint8(abi.RUN.io.direction) === EXIT_IO_OUT;
        const ioPort = run.getUint16(abi.RUN.io.port, true);
        if (ioPort === POST_PORT && isOut) break;
        const size = run.getUint8(abi.RUN.io.size);
        const count = run.getUint32(abi.RUN.io.count, true);
        // data_offset is a u64 offset into the kvm_run mapping: a few KiB, so its low half is all of it.
        let off = run.getUint32(abi.RUN.io.data_offset, true);
        // String I/O (rep outs/ins) arrives as `count` items back to back.
        for (let i = 0; i < count; i++, off += size) {
          if (isOut) copyBytes(runBytes, off, data, 0, size);
          forward(Kind.PIO, isOut, ioPort, size);
          if (!isOut) copyBytes(data, 0, runBytes, off, size);
        }
        break;
      }
      case Exit.MMIO: {
        ch[exitSlot.mmio]!++;
        const isWrite = run.getUint8(abi.RUN.mmio.is_write) !== 0;
        const len = run.getUint32(abi.RUN.mmio.len, true);
        const addr = Number(run.getBigUint64(abi.RUN.mmio.phys_addr, true));
        if (isWrite) copyBytes(runBytes, abi.RUN.mmio.data, data, 0, len);
        forward(Kind.MMIO, isWrite, addr, len);
        if (!isWrite) copyBytes(data, 0, runBytes, abi.RUN.mmio.data, len);
        break;
      }
      case Exit.SHUTDOWN:
        // A triple fault: on a PC this resets the machine.
        return { type: 'exit', reason: 'reset', fixups, message: 'triple fault' };
      case Exit.SYSTEM_EVENT: {
        const type = run.getUint32(abi.RUN.system_event.type, true);
        if (type === SYSTEM_EVENT_RESET) return { type: 'exit', reason: 'reset', fixups };
        if (type === SYSTEM_EVENT_SHUTDOWN) return { type: 'exit', reason: 'poweroff', fixups };
        return { type: 'exit', reason: 'error', fixups, message: `unexpected system event ${type}` };
      }
      case Exit.INTERNAL_ERROR: {
        const sub = run.getUint32(abi.RUN.internal.suberror, true);
        if (sub === INTERNAL_ERROR_EMULATION && init.quirks && applyFixup(vcpu)) {
          ch[exitSlot.other]!++;
          fixups++;
          break;
        }
        return { type: 'exit', reason: 'error', fixups, message: describeFailure(vcpu, sub) };
      }
      case Exit.FAIL_ENTRY:
        return {
          type: 'exit', reason: 'error', fixups,
          message: `vCPU ${init.id} failed to enter the guest (hardware reason 0x${run.getBigUint64(abi.RUN.fail_entry.hardware_entry_failure_reason, true).toString(16)})`,
        };
      case Exit.HLT:
        ch[exitSlot.hlt]!++;
        break;
      case Exit.IRQ_WINDOW_OPEN:
        ch[exitSlot.irq_window]!++;
        break;
      case Exit.INTR:
        ch[exitSlot.intr]!++;
        break;
      default:
        return { type: 'exit', reason: 'error', fixups, message: `vCPU ${init.id}: unhandled KVM exit ${vcpu.exitReason}` };
    }
  }
}

/** Waits out of KVM_RUN while the main thread holds PAUSE (or until it stops the VM). */
function holdWhilePaused(ch: Int32Array): void {
  Atomics.store(ch, Slot.PAUSED, 1);
  Atomics.notify(ch, Slot.PAUSED);
  while (Atomics.load(ch, Slot.PAUSE) && !Atomics.load(ch, Slot.STOP)) Atomics.wait(ch, Slot.PAUSE, 1, 1000);
  Atomics.store(ch, Slot.PAUSED, 0);
}

/** Copies an access's few bytes without making a view per exit (this is the hot path). */
function copyBytes(from: Uint8Array, fromOff: number, to: Uint8Array, toOff: number, n: number): void {
  for (let i = 0; i < n; i++) to[toOff + i] = from[fromOff + i]!;
}

/** Reads up to 15 bytes of the instruction at the guest's RIP; empty when unmapped. */
function instructionAt(vcpu: Vcpu, rip: bigint): Uint8Array {
  const gpa = vcpu.translate(rip);
  if (gpa === null) return new Uint8Array(0);
  for (const r of init.memory.regions) {
    if (gpa >= r.gpa && gpa < r.gpa + r.size) {
      const len = Math.min(15, r.gpa + r.size - gpa);
      return new Uint8Array(libc.view(init.memory.hostAddr + BigInt(r.offset + gpa - r.gpa), len)).slice();
    }
  }
  return new Uint8Array(0);
}

function applyFixup(vcpu: Vcpu): boolean {
  const regs = vcpu.getRegs();
  const fix = fixupFor(instructionAt(vcpu, regs.rip));
  if (!fix) return false;
  const rip = regs.rip + BigInt(fix.length);
  if (fix.kind === 'clac') vcpu.setRegs({ rip, rflags: regs.rflags & ~RFLAGS_AC });
  else if (fix.kind === 'stac') vcpu.setRegs({ rip, rflags: regs.rflags | RFLAGS_AC });
  else vcpu.setRegs({ rip });
  if (fix.kind === 'int3') vcpu.injectException(3);
  post({ type: 'fixup', kind: fix.kind, rip: regs.rip });
  return true;
}

function describeFailure(vcpu: Vcpu, suberror: number): string {
  const rip = vcpu.getRegs().rip;
  const bytes = Array.from(instructionAt(vcpu, rip).subarray(0, 8), (b) => b.toString(16).padStart(2, '0')).join(' ');
  const what = suberror === INTERNAL_ERROR_EMULATION ? 'an instruction KVM cannot emulate' : `KVM internal error ${suberror}`;
  return `vCPU ${init.id} stopped on ${what} at RIP 0x${rip.toString(16)} (bytes: ${bytes || 'unreadable'})`;
}

try {
  main();
} catch (e) {
  post({ type: 'exit', reason: 'error', fixups: 0, message: `vCPU ${init.id}: ${(e as Error).message}` });
}
