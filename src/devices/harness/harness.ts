// DeviceHarness: the host-side driver for one device process, used by the
// device-process tests, benchmarks and fuzzing. It plays the core (guest
// memory memfd, eventfds, hello, activate with the ring addresses it laid
// out) and the guest driver (DriverQueue per queue). The device is started
// by the core's own launcher (src/core/jail/launch.ts): by default the real
// built entry in its bubblewrap jail with its seccomp policy enforced, exactly
// as the core runs it; `jail: false` and the other seccomp modes are for
// debugging and fuzzing. Like the core's supervisor, it can start a
// replacement process on the same memory and eventfds after the first died
// (`kill`, `replace`, `reactivate`).
//
// Guest memory layout (default 16 MiB memfd): two regions, so that
// addresses above 4 GiB and region ends get exercised:
//   region 0: gpa 0         .. memSize/2   rings (from 0x1000)
//   region 1: gpa 4 GiB     .. +memSize/2  data buffers (bump allocated)
import { StringDecoder } from 'node:string_decoder';
import * as libc from '../../sys/libc.js';
import { ControlChannel } from '../../ipc/channel.js';
import type { ActivateMessage, DeviceMessage, HelloMessage, StatsMessage } from '../../ipc/messages.js';
import { launchDevice, type DeviceExit, type DeviceProcess } from '../../core/jail/launch.js';
import type { JailProbe, LogLevel, SeccompMode } from '../config.js';
import type { BlkOptions } from '../blk/backend.js';
import type { DeviceKind } from '../../ipc/messages.js';
import { GuestMemory, type MemoryRegion } from '../guest-memory.js';
import { ringSizes } from '../virtio/queue.js';
import { DriverQueue, type RingAddresses } from './driver-queue.js';

/** The seccomp mode device-process tests run with: the policy the core enforces. */
export const DEVICE_TEST_SECCOMP: SeccompMode = 'enforce';

export const MiB = 1024 * 1024;
export const FOUR_GIB = 4 * 1024 * MiB;

export interface HarnessOptions {
  /** Default blk. */
  kind?: DeviceKind;
  name?: string;
  numQueues?: number;
  /** Queue size the driver picks (≤ the device's maximum). Default 64. */
  queueSize?: number;
  /** Guest RAM bytes (a multiple of 8 KiB). Default 16 MiB. */
  memSize?: number;
  /** The backend fd passed as fd 5 (disk image for blk); /dev/null when absent. */
  backendFd?: number;
  /** blk's options (shorthand for `options` of a blk device). */
  blk?: BlkOptions;
  /** The kind's options (config[kind]); for blk, `blk` or { readOnly: false }. */
  options?: object;
  /** Run the device in its bubblewrap jail (default true); false for debugging (no namespaces, no rlimits). */
  jail?: boolean;
  /** Default DEVICE_TEST_SECCOMP ('enforce'); 'log' or 'off' for writing policies, debugging, fuzzing. */
  seccomp?: SeccompMode;
  logLevel?: LogLevel;
  testAttemptAfterJail?: JailProbe;
  /** Device log (its fd 2): collected in `logs` ('pipe', default), or the harness's stderr. SPLITVM_DEVICE_LOG=1 also echoes. */
  log?: 'pipe' | 'inherit';
  /** Node flags of the device process. Default: the launcher's (--jitless, which the policies require). */
  nodeFlags?: string[];
  /** The device entry to run (inside <repo>/dist when jailed). Default: the launcher's, deviceEntry(). */
  entry?: string;
  /**
   * Interrupts through a pipe instead of an eventfd (benchmarks): the device
   * writes its 8 bytes to the pipe's write end, and `callFds` are the read
   * ends, which a Node event loop can watch itself (net.Socket) — one thread
   * wake-up per interrupt, as a halted vCPU woken by its irqfd, where an
   * eventfd read on libuv's pool costs two. Default false.
   */
  callPipes?: boolean;
  /** Start the device as the replacement of a dead one: it fails every request (config `failed`). */
  failed?: boolean;
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

export type ExitStatus = DeviceExit;

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

/** Hands out guest addresses upwards from `start`; `reset` forgets every allocation. */
export class BumpAllocator {
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

/** The harness's guest memory layout for `memSize` bytes of one memfd: rings low, data buffers above 4 GiB. */
export function harnessRegions(memSize: number): MemoryRegion[] {
  const half = memSize / 2;
  return [
    { gpa: 0, size: half, offset: 0 },
    { gpa: FOUR_GIB, size: half, offset: half },
  ];
}

/**
 * Guest memory as a driver uses it (DeviceHarness, VhostUserFrontend): ring
 * and data-buffer allocation over the harnessRegions layout, which BlkDriver,
 * NetDriver and the benchmarks build their requests with.
 */
export class DriverMemory {
  private readonly ringAlloc: BumpAllocator;
  private readonly dataAlloc: BumpAllocator;

  constructor(
    readonly mem: GuestMemory,
    readonly regions: MemoryRegion[],
  ) {
    this.ringAlloc = new BumpAllocator(regions[0]!.gpa + 0x1000, regions[0]!.gpa + regions[0]!.size);
    this.dataAlloc = new BumpAllocator(regions[1]!.gpa, regions[1]!.gpa + regions[1]!.size);
  }

  /** Lays out the descriptor table, available and used rings of a queue of `size` (region 0). */
  allocRings(size: number): RingAddresses {
    const s = ringSizes(size);
    return { desc: this.ringAlloc.alloc(s.desc, 16), avail: this.ringAlloc.alloc(s.avail, 2), used: this.ringAlloc.alloc(s.used, 4) };
  }

  /** Forgets every ring and buffer allocated. */
  protected resetAllocations(): void {
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
}

export class DeviceHarness extends DriverMemory {
  readonly queues: DriverQueue[] = [];
  /** Every message the device (and any replacement) sent, in order. */
  readonly received: DeviceMessage[] = [];
  /** The device's log lines (when log is 'pipe'), of every process it ran as. */
  readonly logs: string[] = [];
  hello!: HelloMessage;
  /** The control channel to the current device process. */
  channel!: ControlChannel<'core'>;
  /** Resolves when the current device process is gone. */
  exited!: Promise<ExitStatus>;
  private proc: DeviceProcess | undefined;
  private exitStatus: ExitStatus | undefined;
  private logDone: Promise<void> = Promise.resolve();
  private lastActivate: Omit<ActivateMessage, 'v'> | null = null;
  private readonly waiters: Waiter[] = [];
  private readonly unclaimed: DeviceMessage[] = [];
  private closed = false;

  private constructor(
    readonly opts: HarnessOptions,
    mem: GuestMemory,
    regions: MemoryRegion[],
    readonly memfd: number,
    readonly kickFds: number[],
    readonly callFds: number[],
    /** What the device gets as its call fds: the write ends of callPipes, else callFds themselves. */
    private readonly deviceCallFds: number[] = callFds,
  ) {
    super(mem, regions);
  }

  /** Creates guest memory and eventfds, launches the device and waits for its hello. */
  static async start(opts: HarnessOptions = {}): Promise<DeviceHarness> {
    const numQueues = opts.numQueues ?? 1;
    const memSize = opts.memSize ?? 16 * MiB;
    const regions = harnessRegions(memSize);
    const memfd = libc.memfdCreate('splitvm-harness-ram');
    libc.ftruncate(memfd, memSize);
    const mem = GuestMemory.map(memfd, regions);
    // Kick: blocking (the device parks a pool read on it). Call: non-blocking, polled here.
    const kickFds = Array.from({ length: numQueues }, () => libc.eventfd(libc.EFD_CLOEXEC));
    let callFds: number[];
    let deviceCallFds: number[];
    if (opts.callPipes) {
      const pipes = Array.from({ length: numQueues }, () => libc.pipe());
      for (const [rd, wr] of pipes) {
        libc.setNonBlocking(rd);
        libc.setNonBlocking(wr); // a harness that stops reading makes the device's write fail, never block
      }
      callFds = pipes.map(([rd]) => rd);
      deviceCallFds = pipes.map(([, wr]) => wr);
    } else {
      callFds = Array.from({ length: numQueues }, () => libc.eventfd(libc.EFD_CLOEXEC | libc.EFD_NONBLOCK));
      deviceCallFds = callFds;
    }
    const h = new DeviceHarness(opts, mem, regions, memfd, kickFds, callFds, deviceCallFds);
    try {
      await h.launch(opts.failed ?? false);
    } catch (e) {
      await h.close();
      throw e;
    }
    return h;
  }

  /** Host pid of the current device process (inside its jail it is pid 1). */
  get pid(): number {
    return this.proc!.pid;
  }

  /** Launches a device process on our memory and eventfds and waits for its hello. */
  private async launch(failed: boolean): Promise<void> {
    const { opts } = this;
    const numQueues = this.kickFds.length;
    const config: Record<string, unknown> = { regions: this.regions, numQueues, logLevel: opts.logLevel ?? 'info' };
    const kind = opts.kind ?? 'blk';
    const options = opts.options ?? (kind === 'blk' ? opts.blk ?? { readOnly: false } : undefined);
    if (options !== undefined) config[kind] = options;
    if (opts.testAttemptAfterJail) config.testAttemptAfterJail = opts.testAttemptAfterJail;
    if (failed) config.failed = true;
    const fds: (number | null)[] = [this.memfd, opts.backendFd ?? null];
    for (let i = 0; i < numQueues; i++) fds.push(this.kickFds[i]!, this.deviceCallFds[i]!);
    this.exitStatus = undefined;
    this.unclaimed.length = 0;
    let proc: DeviceProcess;
    try {
      proc = await launchDevice({
        name: opts.name ?? `${kind}-test`,
        kind,
        config,
        fds,
        jail: opts.jail ?? true,
        seccomp: opts.seccomp ?? DEVICE_TEST_SECCOMP,
        log: opts.log ?? 'pipe',
        ...(opts.nodeFlags ? { nodeFlags: opts.nodeFlags } : {}),
        ...(opts.entry ? { entry: opts.entry } : {}),
      });
    } catch (e) {
      this.exitStatus = { code: null, signal: null };
      this.exited = Promise.resolve(this.exitStatus);
      throw new DeviceStartError((e as Error).message, undefined, this.logs);
    }
    this.proc = proc;
    this.channel = new ControlChannel('core', proc.control);
    this.logDone = this.collectLog(proc);
    this.exited = proc.exited.then((e) => {
      if (this.proc === proc) {
        this.exitStatus = e;
        // Nothing more will come: fail whoever waits for a message.
        for (const w of this.waiters.splice(0)) w.reject(new Error(`the device exited (code ${e.code}, signal ${e.signal}) before sending "${w.type}"`));
      }
      return e;
    });
    const channel = this.channel;
    channel.on('message', (m) => {
      if (this.channel === channel) this.onMessage(m);
    });
    channel.on('error', (e) => this.logs.push(JSON.stringify({ harness: 'control channel error', err: e.message })));
    try {
      this.hello = (await this.next('hello', opts.helloTimeoutMs ?? 10000)) as HelloMessage;
    } catch (e) {
      if (this.alive) {
        proc.kill();
        await this.exited;
      }
      await Promise.race([this.logDone, new Promise((r) => setTimeout(r, 500))]); // the last log lines
      throw new DeviceStartError(`${(e as Error).message}; device log:\n${this.logs.join('\n')}`, this.exitStatus, this.logs);
    }
  }

  private collectLog(proc: DeviceProcess): Promise<void> {
    const log = proc.log;
    if (!log) return Promise.resolve();
    const decoder = new StringDecoder('utf8');
    let partial = '';
    const take = (s: string): void => {
      const lines = (partial + s).split('\n');
      partial = lines.pop()!;
      for (const l of lines) {
        this.logs.push(l);
        if (process.env.SPLITVM_DEVICE_LOG === '1') process.stderr.write(`${l}\n`);
      }
    };
    log.on('data', (d: Buffer) => take(decoder.write(d)));
    return new Promise((resolve) => {
      log.once('close', () => {
        const rest = partial + decoder.end();
        if (rest) this.logs.push(rest);
        resolve();
      });
    });
  }

  /** SIGKILLs the current device process (and its jail) and waits until it is gone. */
  async kill(): Promise<ExitStatus> {
    this.proc?.kill();
    return this.exited;
  }

  /**
   * Starts a new device process on the same guest memory, backend and
   * eventfds once the current one is gone — by default as the core does after
   * a death: a `failed` replacement. The driver queues are kept; `reactivate`
   * gives the new process the same rings.
   */
  async replace(opts: { failed?: boolean } = {}): Promise<void> {
    if (this.alive) throw new Error('replace: the device process still runs (kill it first)');
    this.channel.close();
    await this.launch(opts.failed ?? true);
  }

  /** Sends the last activate again (same features, same ring addresses), as the core does to a replacement. */
  reactivate(): void {
    if (!this.lastActivate) throw new Error('reactivate: nothing was activated');
    this.channel.send(this.lastActivate);
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
      const addrs = this.allocRings(size);
      const q = new DriverQueue(this.mem, index, size, addrs, (len, align) => this.alloc(len, align), this.kickFds[index] ?? -1, this.callFds[index] ?? -1);
      this.queues[index] = q;
      list.push({ index, size, ...addrs });
    }
    const msg = { type: 'activate' as const, features, queues: list };
    this.lastActivate = msg;
    this.channel.send(msg);
    return which.map((i) => this.queues[i]!);
  }

  /** Sends reset and waits for reset-done; forgets the driver queues and their memory. */
  async reset(timeoutMs = 5000): Promise<void> {
    this.channel.send({ type: 'reset' });
    await this.next('reset-done', timeoutMs);
    this.lastActivate = null;
    this.queues.length = 0;
    this.resetAllocations();
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
      const timer = setTimeout(() => this.proc?.kill(), timeoutMs);
      await this.exited;
      clearTimeout(timer);
    }
    if (this.proc) this.channel.close();
    for (const fd of new Set([this.memfd, ...this.kickFds, ...this.callFds, ...this.deviceCallFds])) libc.close(fd);
  }

  private onMessage(m: DeviceMessage): void {
    this.received.push(m);
    const i = this.waiters.findIndex((w) => w.type === m.type);
    if (i >= 0) this.waiters.splice(i, 1)[0]!.resolve(m);
    else this.unclaimed.push(m);
  }
}
