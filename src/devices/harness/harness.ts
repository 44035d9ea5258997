// DeviceHarness: the host-side driver for one device process, used by the
// device-process tests, benchmarks and fuzzing. It plays the core (guest
// memory memfd, eventfds, hello, activate with the ring addresses it laid
// out) and the guest driver (DriverQueue per queue).
//
// Guest memory layout (default 16 MiB memfd): two regions, so that
// addresses above 4 GiB and region ends get exercised:
//   region 0: gpa 0         .. memSize/2   rings (from 0x1000)
//   region 1: gpa 4 GiB     .. +memSize/2  data buffers (bump allocated)
import type { ChildProcess } from 'node:child_process';
import * as libc from '../../sys/libc.js';
import type { ControlChannel } from '../../ipc/channel.js';
import type { DeviceMessage, HelloMessage, StatsMessage } from '../../ipc/messages.js';
import type { BlkOptions, JailProbe, LogLevel, SeccompMode } from '../config.js';
import { GuestMemory, type MemoryRegion } from '../guest-memory.js';
import { ringSizes } from '../virtio/queue.js';
import { DriverQueue } from './driver-queue.js';
import { spawnDevice, type SpawnDevice } from './spawn.js';

/**
 * The seccomp mode device-process tests run with. One constant, so the lead
 * can flip it to 'enforce' once policies/blk.policy is in place.
 */
export const DEVICE_TEST_SECCOMP: SeccompMode = 'off';

export const MiB = 1024 * 1024;
export const FOUR_GIB = 4 * 1024 * MiB;

export interface HarnessOptions {
  kind?: 'blk';
  name?: string;
  numQueues?: number;
  /** Queue size the driver picks (≤ the device's maximum). Default 64. */
  queueSize?: number;
  /** Guest RAM bytes (a multiple of 8 KiB). Default 16 MiB. */
  memSize?: number;
  /** The backend fd passed as fd 5 (disk image for blk). */
  backendFd?: number;
  blk?: BlkOptions;
  seccomp?: SeccompMode;
  logLevel?: LogLevel;
  testAttemptAfterJail?: JailProbe;
  /** Device log: collected in `logs` ('pipe', default), or passed through. SPLITVM_DEVICE_LOG=1 also echoes. */
  stderr?: 'pipe' | 'inherit' | 'ignore';
  nodeArgs?: string[];
  spawn?: SpawnDevice;
  /** How long to wait for hello. Default 10 s. */
  helloTimeoutMs?: number;
}

export interface ActivateOptions {
  /** Features the driver accepts. Default: everything the device offered. */
  features?: number;
  /** Which queues to activate. Default: all. */
  queues?: number[];
}

interface Waiter {
  type: DeviceMessage['type'];
  resolve: (m: DeviceMessage) => void;
  reject: (e: Error) => void;
}

export type ExitStatus = { code: number | null; signal: NodeJS.Signals | null };

/** The device process did not get to hello; carries how it ended and its log. */
export class DeviceStartError extends Error {
  constructor(
    message: string,
    readonly exit: ExitStatus | undefined,
    readonly logs: string[],
  ) {
    super(message);
    this.name = 'DeviceStartError';
  }
}

class BumpAllocator {
  private next: number;
  constructor(
    private readonly start: number,
    private readonly end: number,
  ) {
    this.next = start;
  }
  alloc(len: number, align: number): number {
    const at = Math.ceil(this.next / align) * align;
    if (at + len > this.end) throw new Error(`harness guest memory exhausted (${len} bytes wanted)`);
    this.next = at + len;
    return at;
  }
  reset(): void {
    this.next = this.start;
  }
}

export class DeviceHarness {
  readonly queues: DriverQueue[] = [];
  /** Every message the device sent, in order. */
  readonly received: DeviceMessage[] = [];
  /** The device's log lines (when stderr is 'pipe'). */
  readonly logs: string[] = [];
  hello!: HelloMessage;
  readonly exited: Promise<ExitStatus>;
  private exitStatus: ExitStatus | undefined;
  private readonly waiters: Waiter[] = [];
  private readonly unclaimed: DeviceMessage[] = [];
  private readonly ringAlloc: BumpAllocator;
  private readonly dataAlloc: BumpAllocator;
  private closed = false;

  private constructor(
    readonly opts: HarnessOptions,
    readonly mem: GuestMemory,
    readonly regions: MemoryRegion[],
    readonly memfd: number,
    readonly kickFds: number[],
    readonly callFds: number[],
    readonly child: ChildProcess,
    readonly channel: ControlChannel<'core'>,
  ) {
    this.ringAlloc = new BumpAllocator(regions[0]!.gpa + 0x1000, regions[0]!.gpa + regions[0]!.size);
    this.dataAlloc = new BumpAllocator(regions[1]!.gpa, regions[1]!.gpa + regions[1]!.size);
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exitStatus = { code, signal };
        resolve({ code, signal });
        // Nothing more will come: fail whoever waits for a message.
        for (const w of this.waiters.splice(0)) w.reject(new Error(`the device exited (code ${code}, signal ${signal}) before sending "${w.type}"`));
      });
    });
    child.stderr?.setEncoding('utf8');
    let partial = '';
    child.stderr?.on('data', (s: string) => {
      const lines = (partial + s).split('\n');
      partial = lines.pop()!;
      for (const l of lines) {
        this.logs.push(l);
        if (process.env.SPLITVM_DEVICE_LOG === '1') process.stderr.write(`${l}\n`);
      }
    });
    channel.on('message', (m) => this.onMessage(m));
    channel.on('error', (e) => this.logs.push(JSON.stringify({ harness: 'control channel error', err: e.message })));
  }

  /** Creates guest memory and eventfds, spawns the device and waits for its hello. */
  static async start(opts: HarnessOptions = {}): Promise<DeviceHarness> {
    const numQueues = opts.numQueues ?? 1;
    const memSize = opts.memSize ?? 16 * MiB;
    const half = memSize / 2;
    const regions: MemoryRegion[] = [
      { gpa: 0, size: half, offset: 0 },
      { gpa: FOUR_GIB, size: half, offset: half },
    ];
    const memfd = libc.memfdCreate('splitvm-harness-ram');
    libc.ftruncate(memfd, memSize);
    const mem = GuestMemory.map(memfd, regions);
    // Kick: blocking (the device parks a pool read on it). Call: non-blocking, polled here.
    const kickFds = Array.from({ length: numQueues }, () => libc.eventfd(libc.EFD_CLOEXEC));
    const callFds = Array.from({ length: numQueues }, () => libc.eventfd(libc.EFD_CLOEXEC | libc.EFD_NONBLOCK));
    const config: { numQueues: number } & Record<string, unknown> = {
      kind: opts.kind ?? 'blk',
      name: opts.name ?? 'blk-test',
      regions,
      numQueues,
      seccomp: opts.seccomp ?? DEVICE_TEST_SECCOMP,
      logLevel: opts.logLevel ?? 'info',
    };
    if ((opts.kind ?? 'blk') === 'blk') config.blk = opts.blk ?? { readOnly: false };
    if (opts.testAttemptAfterJail) config.testAttemptAfterJail = opts.testAttemptAfterJail;
    const { child, channel } = (opts.spawn ?? spawnDevice)({
      config,
      memfd,
      ...(opts.backendFd !== undefined ? { backendFd: opts.backendFd } : {}),
      kickFds,
      callFds,
      stderr: opts.stderr ?? 'pipe',
      ...(opts.nodeArgs ? { nodeArgs: opts.nodeArgs } : {}),
    });
    const h = new DeviceHarness(opts, mem, regions, memfd, kickFds, callFds, child, channel);
    try {
      h.hello = (await h.next('hello', opts.helloTimeoutMs ?? 10000)) as HelloMessage;
    } catch (e) {
      await h.close();
      await new Promise((r) => setImmediate(r)); // let the last log lines arrive
      throw new DeviceStartError(`${(e as Error).message}; device log:\n${h.logs.join('\n')}`, h.exitStatus, h.logs);
    }
    return h;
  }

  /** True while the device process runs. */
  get alive(): boolean {
    return this.exitStatus === undefined;
  }

  /** Lays out the rings, sends activate, and returns the driver queues. */
  activate(opts: ActivateOptions = {}): DriverQueue[] {
    const features = opts.features ?? this.hello.deviceFeatures;
    const which = opts.queues ?? Array.from({ length: this.hello.numQueues }, (_, i) => i);
    const size = Math.min(this.opts.queueSize ?? 64, this.hello.maxQueueSize);
    const list = [];
    for (const index of which) {
      const s = ringSizes(size);
      const addrs = { desc: this.ringAlloc.alloc(s.desc, 16), avail: this.ringAlloc.alloc(s.avail, 2), used: this.ringAlloc.alloc(s.used, 4) };
      const q = new DriverQueue(this.mem, index, size, addrs, (len, align) => this.alloc(len, align), this.kickFds[index] ?? -1, this.callFds[index] ?? -1);
      this.queues[index] = q;
      list.push({ index, size, ...addrs });
    }
    this.channel.send({ type: 'activate', features, queues: list });
    return which.map((i) => this.queues[i]!);
  }

  /** Sends reset and waits for reset-done; forgets the driver queues and their memory. */
  async reset(timeoutMs = 5000): Promise<void> {
    this.channel.send({ type: 'reset' });
    await this.next('reset-done', timeoutMs);
    this.queues.length = 0;
    this.ringAlloc.reset();
    this.dataAlloc.reset();
  }

  /** Allocates guest memory for data buffers (region 1, above 4 GiB). */
  alloc(len: number, align = 16): number {
    return this.dataAlloc.alloc(len, align);
  }

  /** Allocates a buffer filled with `data` (readable) or `len` zero bytes (writable). */
  buffer(data: Uint8Array | number, write = false): { addr: number; len: number; write: boolean } {
    const len = typeof data === 'number' ? data : data.length;
    const addr = this.alloc(Math.max(len, 1));
    if (typeof data === 'number') this.mem.slice(addr, len).fill(0);
    else this.mem.write(addr, data);
    return { addr, len, write };
  }

  /** The next message of `type` (already received or yet to come). */
  next(type: DeviceMessage['type'], timeoutMs = 5000): Promise<DeviceMessage> {
    const i = this.unclaimed.findIndex((m) => m.type === type);
    if (i >= 0) return Promise.resolve(this.unclaimed.splice(i, 1)[0]!);
    if (!this.alive) return Promise.reject(new Error(`the device has exited; no "${type}" will come`));
    return new Promise((resolve, reject) => {
      const w: Waiter = {
        type,
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for "${type}" from the device (alive: ${this.alive})`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /** Asks for stats; doubles as a liveness check of the control channel. */
  async stats(timeoutMs = 5000): Promise<Record<string, number>> {
    this.channel.send({ type: 'stats-request' });
    return ((await this.next('stats', timeoutMs)) as StatsMessage).counters;
  }

  /** Log lines parsed as JSON (lines that are not JSON are skipped). */
  logRecords(): Record<string, unknown>[] {
    return this.logs.flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>];
      } catch {
        return [];
      }
    });
  }

  /** Asks the device to shut down (killing it after `timeoutMs`), then closes our fds. */
  async close(timeoutMs = 3000): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.alive) {
      if (!this.channel.isClosed) {
        try {
          this.channel.send({ type: 'shutdown' });
        } catch {
          /* channel already gone */
        }
      }
      const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
      await this.exited;
      clearTimeout(timer);
    }
    this.channel.close();
    for (const fd of [this.memfd, ...this.kickFds, ...this.callFds]) libc.close(fd);
  }

  private onMessage(m: DeviceMessage): void {
    this.received.push(m);
    const i = this.waiters.findIndex((w) => w.type === m.type);
    if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(m);
    else this.unclaimed.push(m);
  }
}
