// The main thread's side of the vCPUs: starts one worker thread per vCPU,
// lets them run once the core is sealed (each then seals itself:
// thread-seal.ts), answers their port and MMIO exits from the buses, pauses
// and resumes them (PAUSE flag), and stops them (STOP flag); both kick each
// thread out of KVM_RUN with immediate_exit + a signal, since a worker
// cannot be terminated while it sits in KVM_RUN. Reads their exit counts.
import { constants } from 'node:os';
import { Worker } from 'node:worker_threads';
import * as libc from '../../sys/libc.js';
import { RUN } from '../kvm/abi.js';
import type { Bus } from '../bus.js';
import { createChannel, DATA_BYTES, dataBytes, exitCounts, Kind, Slot, type ExitCountReason } from './exit-channel.js';
import type { ExitReason, VcpuInit, VcpuMessage } from './protocol.js';
import { releaseVcpuThread, stopUnreleasedVcpuThread } from './thread-seal.js';
import type { SeccompMode } from '../jail/launch.js';

/** The signal that kicks a vCPU thread out of KVM_RUN (SIGUSR1 is Node's inspector's). */
const KICK_SIGNAL = 'SIGUSR2';
const KICK_SIGNAL_NUMBER = constants.signals[KICK_SIGNAL];

export interface VcpuExit {
  id: number;
  reason: ExitReason;
  message?: string;
  fixups: number;
}

interface Running {
  worker: Worker;
  channel: Int32Array;
  tid?: number;
  runExit?: DataView;
  done: Promise<VcpuExit>;
  ended: boolean;
}

const workerEntry = new URL(import.meta.url.endsWith('.ts') ? './bootstrap.mjs' : './worker.js', import.meta.url);

export class VcpuSet {
  private vcpus: Running[] = [];
  private stopping = false;
  /** Resolves with the first vCPU exit that ends the VM. */
  readonly firstExit: Promise<VcpuExit>;
  /** Resolves once every vCPU thread has made its vCPU and waits to be released (or has ended). */
  ready: Promise<void> = Promise.resolve();
  private resolveFirst!: (e: VcpuExit) => void;

  constructor(
    private readonly pio: Bus,
    private readonly mmio: Bus,
    private readonly events: {
      /** A software-KVM fixup a vCPU applied. */
      fixup?: (vcpu: number, kind: string, rip: bigint) => void;
      /** A device model threw on a guest access: the access is answered with all ones and the VM goes on. */
      deviceError?: (kind: 'pio' | 'mmio', addr: number, e: Error) => void;
    } = {},
  ) {
    this.firstExit = new Promise((r) => (this.resolveFirst = r));
    process.on(KICK_SIGNAL, () => {});
  }

  /** Starts the threads; each makes its vCPU, then waits for release(). */
  start(inits: Omit<VcpuInit, 'channel'>[]): void {
    const readies: Promise<void>[] = [];
    for (const init of inits) {
      let isReady!: () => void;
      readies.push(new Promise((r) => (isReady = r)));
      const channel = createChannel();
      const worker = new Worker(workerEntry, { workerData: { ...init, channel } satisfies VcpuInit });
      let finish!: (e: VcpuExit) => void;
      const running: Running = { worker, channel, done: new Promise((r) => (finish = r)), ended: false };
      /** Any exit but a requested stop ends the VM. */
      const end = (exit: VcpuExit) => {
        if (exit.reason !== 'stopped') this.resolveFirst(exit);
        isReady();
        running.ended = true;
        finish(exit);
      };
      worker.on('message', (m: VcpuMessage) => {
        if (m.type === 'ready') {
          isReady();
          running.tid = m.tid;
          running.runExit = new DataView(libc.view(m.runAddr, RUN.exit));
          if (this.stopping) this.kick(running);
        } else if (m.type === 'fixup') {
          this.events.fixup?.(init.id, m.kind, m.rip);
        } else {
          end({ id: init.id, reason: m.reason, message: m.message, fixups: m.fixups });
        }
      });
      worker.on('error', (e) => end({ id: init.id, reason: 'error', message: `vCPU ${init.id} thread failed: ${e.message}`, fixups: 0 }));
      worker.on('exit', () => {
        running.ended = true;
        isReady();
        finish({ id: init.id, reason: 'stopped', fixups: 0 });
      });
      this.vcpus.push(running);
      void this.serve(channel);
    }
    this.ready = Promise.all(readies).then(() => undefined);
  }

  /**
   * Lets every vCPU thread run the guest. With the core sealed (`mode`),
   * each first stacks its own, narrower filter on itself.
   */
  release(mode: SeccompMode | undefined): void {
    for (const v of this.vcpus) releaseVcpuThread(v.channel, mode);
  }

  /** Answers the worker's exits until the VM stops. */
  private async serve(ch: Int32Array): Promise<void> {
    const data = dataBytes(ch);
    // One view per access width, made once: a device is handed exactly the bytes of the access.
    const bySize = Array.from({ length: DATA_BYTES + 1 }, (_, n) => data.subarray(0, n));
    let handled = 0;
    while (!this.stopping) {
      const seq = Atomics.load(ch, Slot.REQUEST);
      if (seq === handled) {
        const w = Atomics.waitAsync(ch, Slot.REQUEST, handled);
        if (w.async) await w.value;
        continue;
      }
      const addr = (Atomics.load(ch, Slot.ADDR_LO) >>> 0) + Atomics.load(ch, Slot.ADDR_HI) * 2 ** 32;
      const bytes = bySize[Atomics.load(ch, Slot.SIZE)] ?? data;
      const isPio = Atomics.load(ch, Slot.KIND) === Kind.PIO;
      const bus = isPio ? this.pio : this.mmio;
      try {
        if (Atomics.load(ch, Slot.IS_WRITE)) {
          const pending = bus.write(addr, bytes);
          if (pending) await pending;
        } else bus.read(addr, bytes);
      } catch (e) {
        // A guest must not be able to stop the VM through a device model's bug.
        bytes.fill(0xff);
        this.events.deviceError?.(isPio ? 'pio' : 'mmio', addr, e as Error);
      }
      handled = seq;
      Atomics.store(ch, Slot.REPLY, seq);
      Atomics.notify(ch, Slot.REPLY);
    }
  }

  private kick(v: Running): void {
    if (v.runExit) v.runExit.setUint8(RUN.immediate_exit, 1);
    if (v.tid !== undefined) {
      try {
        libc.tgkill(process.pid, v.tid, KICK_SIGNAL_NUMBER);
      } catch {
        // The thread has already left.
      }
    }
  }

  /**
   * Takes every vCPU out of KVM_RUN and holds it there; resolves once each
   * one is held (or has ended). Exits already forwarded are answered first.
   */
  async pause(): Promise<void> {
    for (const v of this.vcpus) {
      Atomics.store(v.channel, Slot.PAUSE, 1);
      this.kick(v);
    }
    for (const v of this.vcpus) {
      while (!v.ended && !this.stopping && Atomics.load(v.channel, Slot.PAUSED) !== 1) {
        const w = Atomics.waitAsync(v.channel, Slot.PAUSED, 0, 100);
        if (w.async) await w.value;
      }
    }
  }

  /** Lets every held vCPU run again. */
  resume(): void {
    for (const v of this.vcpus) {
      Atomics.store(v.channel, Slot.PAUSE, 0);
      Atomics.notify(v.channel, Slot.PAUSE);
    }
  }

  /** Each vCPU's exits so far, by reason. */
  exitCounts(): Record<ExitCountReason, number>[] {
    return this.vcpus.map((v) => exitCounts(v.channel));
  }

  /** Stops every vCPU and waits for their threads; returns how each one's run loop ended. */
  async stop(): Promise<VcpuExit[]> {
    this.stopping = true;
    for (const v of this.vcpus) {
      Atomics.store(v.channel, Slot.STOP, 1);
      Atomics.notify(v.channel, Slot.REPLY);
      Atomics.notify(v.channel, Slot.REQUEST);
      Atomics.notify(v.channel, Slot.PAUSE);
      stopUnreleasedVcpuThread(v.channel);
      this.kick(v);
    }
    const exits = await Promise.all(this.vcpus.map((v) => v.done));
    await Promise.all(this.vcpus.map((v) => v.worker.terminate()));
    process.removeAllListeners(KICK_SIGNAL);
    return exits;
  }
}
