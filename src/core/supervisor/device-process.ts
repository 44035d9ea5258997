// The core's handle on one device process: creates its eventfds, launches it
// in its jail with exactly its fds, checks its hello (everything a device
// says is untrusted), relays activate / reset / config writes from the
// transport, and watches it die. A death is logged with its cause (SIGSYS =
// the seccomp policy). With an in-flight record ('resume') a new process,
// jailed the same way, takes the queues over where the dead one was — what
// it had taken and not completed is taken again — so the guest notices
// nothing; past a restart budget, or without a record, the guest is told
// (DEVICE_NEEDS_RESET) and a replacement fails every request, so the
// guest's I/O ends in errors instead of hanging. The VM goes on.
import type { Logger } from 'pino';
import { ControlChannel, MAX_QUEUE_SIZE, type DeviceKind, type DeviceMessage, type HelloMessage, type QueueAddresses } from '../../ipc/index.js';
import { inflightQueueBytes } from '../../devices/virtio/inflight.js';
import * as libc from '../../sys/libc.js';
import type { HostIds } from '../jail/identity.js';
import { launchDevice, type DeviceExit, type DeviceProcess, type LaunchOptions, type SeccompMode } from '../jail/launch.js';
import type { MemoryRegion } from '../memory.js';

/** Guest RAM as a device maps it: one fd and where each region lies in it. */
export interface SharedMemory {
  fd: number;
  regions: MemoryRegion[];
}
import type { DeviceLink } from '../virtio/pci-transport.js';
import { coreStderr, relayDeviceLog } from './log-relay.js';

const HELLO_TIMEOUT_MS = 15000;
/** A device that dies more often than this is failed rather than restarted. */
export const RESTART_BUDGET = { count: 5, windowMs: 60_000 };
/** Bytes of one queue's slot in the in-flight record file: room for the largest queue. */
const INFLIGHT_SLOT_BYTES = inflightQueueBytes(MAX_QUEUE_SIZE);
const RESET_TIMEOUT_MS = 5000;
/** How long stats() waits for the device's answer before resolving null. */
export const STATS_TIMEOUT_MS = 2000;
/** Unanswered stats requests after which stats() asks no more (a silent device must not grow the queue). */
const MAX_PENDING_STATS = 16;
/** Bytes of unread control messages after which a device is taken for hung. */
const MAX_CONTROL_BACKLOG = 1024 * 1024;

export interface DeviceProcessOptions {
  name: string;
  kind: DeviceKind;
  numQueues: number;
  /** The kind's options in the device's start-up config (config[kind]). */
  options: object;
  /** RLIMIT_FSIZE of the device process (a disk image must not grow). */
  fileSizeLimit?: number;
  /** The in-flight record file the device keeps its queues' records in (vhost-user's INFLIGHT_SHMFD); passed after the queues' fds. Owned by the caller. */
  inflight?: { fd: number; size: number };
  /** With replacement 'resume' and no `inflight`: bytes of the kind's own state after the queues' records in the file this object makes (OpenedBackend.stateBytes). */
  stateBytes?: number;
  /**
   * After a death: 'resume' starts a device that serves normally and takes
   * the queues over where the dead one was, from the in-flight record this
   * object keeps (at most RESTART_BUDGET times in its window, then as
   * 'failed'); 'failed' (default) starts a replacement that fails every
   * request; 'none' leaves it to the owner (onDeath), e.g. to start a
   * device that resumes the queues from the in-flight record.
   */
  replacement?: 'resume' | 'failed' | 'none';
  /** Merged into the start-up config as is: for tests (a jail probe, a hostile fixture's script). */
  extraConfig?: Record<string, unknown>;
  /** The backend (image, tap, directory) the core opened; kept for a replacement, closed at shutdown. */
  backendFd: number;
  memory: SharedMemory;
  /**
   * Each queue's kick and call eventfds, when someone else made them (a
   * vhost-user frontend); they pass to this object, which closes them at
   * shutdown. Default: new eventfds, which the core registers with KVM.
   */
  queueFds?: { kick: number[]; call: number[] };
  jail: boolean;
  seccomp: SeccompMode;
  logLevel: string;
  log: Logger;
  /** The script the device process runs (default: the built device entry). For tests of hostile devices. */
  entry?: string;
  /** Where the device's relayed log lines go (default: the core's stderr). */
  writeLog?: (line: string) => void;
  /** What its backend is (image, tap, share), for operators (GET /vm). */
  describe?: Record<string, unknown>;
  /** The host uid and gid a jailed device runs as (identity.ts); default the core's own. */
  hostIds?: HostIds;
  /** Starts device processes for a sealed core (launcher/client.ts); default: launchDevice here. */
  launcher?: { launch(o: LaunchOptions): Promise<DeviceProcess> };
  /**
   * With replacement 'resume': keep a spare process started and past its
   * hello, which takes the queues over the moment the serving one dies (in
   * milliseconds, not a process start); costs one more process's memory.
   */
  spare?: boolean;
}

/** running: serving; restarting: a new process is starting; failed: its requests fail until the guest resets it; stopped: shut down. */
export type DeviceState = 'running' | 'restarting' | 'failed' | 'stopped';

/** What an operator sees of a device (GET /vm). */
export interface DeviceInfo {
  name: string;
  kind: DeviceKind;
  pid: number;
  state: DeviceState;
  restarts: number;
  backend: Record<string, unknown>;
  /** uid and gid: the host ids it was started as. */
  jail: { jailed: boolean; seccomp: SeccompMode; uid: number; gid: number };
  /** The spare process's pid, when one waits (opts.spare). */
  spare: number | null;
}

/** A device process started and past its hello. */
interface Started {
  proc: DeviceProcess;
  channel: ControlChannel<'core'>;
  hello: HelloMessage;
}

/** A restart that cannot be done (no in-flight record, or shutting down): the reason is one sentence. */
export class RestartRefused extends Error {}

export class DeviceStartError extends Error {}

/** Why a device process ended, in words. */
export function describeExit(e: DeviceExit): string {
  if (e.signal === 'SIGSYS') return 'killed by SIGSYS (a system call its seccomp policy forbids)';
  if (e.signal) return `killed by ${e.signal}`;
  return `exited with status ${e.code}`;
}

export class VirtioDeviceProcess implements DeviceLink {
  readonly kickFds: number[];
  readonly callFds: number[];
  hello!: HelloMessage;
  private proc!: DeviceProcess;
  private channel!: ControlChannel<'core'>;
  private pendingReset: (() => void) | null = null;
  /** Paused by the operator: a process started meanwhile is paused too. */
  private paused = false;
  private pendingPause: (() => void) | null = null;
  /** Every stats() call not yet answered, oldest first: the device answers requests in order. */
  private readonly pendingStats: ((c: Record<string, number> | null) => void)[] = [];
  private stopping = false;
  /** True once the process serving the queues is a replacement that fails every request. */
  private failed = false;
  /** With replacement 'resume': the in-flight record file this object made, and when it restarted the device. */
  private readonly ownInflight: { fd: number; size: number } | null = null;
  private readonly restartTimes: number[] = [];
  /** A new process is being started after a death: activations wait for it. */
  private relaunching = false;
  /** The operator asked for a restart: the next death is that, not a failure, and is not counted in the budget. */
  private restartRequested = false;
  /** Settles when the process started after the last death serves (or could not be started). */
  private relaunched: Promise<void> = Promise.resolve();
  /** With opts.spare: the process that takes over at the next death. */
  private spare: Started | null = null;
  private preparingSpare = false;
  /** Deaths after which the device resumed its queues. */
  restarts = 0;
  private lastActivation: { features: number; queues: QueueAddresses[] } | null = null;
  /** Called when the device asks for a reset or dies. */
  onFailure: (reason: string) => void = () => {};
  onConfigChanged: (config: Uint8Array) => void = () => {};
  /** With replacement 'none': the process died (how, in words). */
  onDeath: (how: string) => void = () => {};

  private constructor(private readonly opts: DeviceProcessOptions) {
    // Kicks are read with blocking reads in the device; the call eventfds are irqfds, which KVM reads.
    this.kickFds = opts.queueFds?.kick ?? Array.from({ length: opts.numQueues }, () => libc.eventfd(libc.EFD_CLOEXEC));
    this.callFds = opts.queueFds?.call ?? Array.from({ length: opts.numQueues }, () => libc.eventfd(libc.EFD_CLOEXEC | libc.EFD_NONBLOCK));
    if (opts.replacement === 'resume' && !opts.inflight) {
      // One record slot per queue, sized for the largest queue, then the kind's state (the file is sparse).
      const size = opts.numQueues * INFLIGHT_SLOT_BYTES + (opts.stateBytes ?? 0);
      const fd = libc.memfdCreate(`splitvm-inflight-${opts.name}`);
      libc.ftruncate(fd, size);
      this.ownInflight = { fd, size };
    }
  }

  static async start(opts: DeviceProcessOptions): Promise<VirtioDeviceProcess> {
    const d = new VirtioDeviceProcess(opts);
    try {
      await d.launch();
    } catch (e) {
      for (const fd of [...d.kickFds, ...d.callFds]) libc.close(fd);
      throw e;
    }
    d.prepareSpare();
    return d;
  }

  get pid(): number {
    return this.proc.pid;
  }

  get name(): string {
    return this.opts.name;
  }

  get state(): DeviceState {
    if (this.stopping) return 'stopped';
    if (this.relaunching) return 'restarting';
    return this.failed ? 'failed' : 'running';
  }

  info(): DeviceInfo {
    const { opts } = this;
    return {
      name: opts.name, kind: opts.kind, pid: this.proc.pid, state: this.state, restarts: this.restarts, backend: opts.describe ?? {},
      jail: { jailed: opts.jail, seccomp: opts.seccomp, uid: this.proc.ids.uid, gid: this.proc.ids.gid }, spare: this.spare?.proc.pid ?? null,
    };
  }

  /**
   * The operator's restart: ends the process and starts a new one that takes
   * the queues over from the in-flight record, as after a death (a failed
   * device serves normally again). Not counted in the restart budget.
   * Resolves once the new process serves.
   */
  async restart(): Promise<void> {
    if (this.stopping) throw new RestartRefused(`device ${this.opts.name} is shutting down`);
    if (this.opts.replacement !== 'resume') throw new RestartRefused(`device ${this.opts.name} keeps no in-flight record, so a restart would lose its requests`);
    if (this.relaunching) return this.relaunched;
    this.restartRequested = true;
    this.proc.kill();
    await this.proc.exited;
    await this.relaunched;
  }

  /** Starts a process and makes it the one serving (its hello checked). */
  private async launch(): Promise<void> {
    this.adopt(await this.startProcess());
  }

  /**
   * Starts a device process in its jail, relays its log and checks its
   * hello. Only the adopted process's messages and death reach this object's
   * logic; a spare's are its own business until it is adopted.
   */
  private async startProcess(): Promise<Started> {
    const { opts } = this;
    const fds = [opts.memory.fd, opts.backendFd];
    for (let q = 0; q < opts.numQueues; q++) fds.push(this.kickFds[q]!, this.callFds[q]!);
    const inflight = this.inflight;
    if (inflight) fds.push(inflight.fd);
    const proc = await (opts.launcher ? (o: LaunchOptions) => opts.launcher!.launch(o) : launchDevice)({
      name: opts.name,
      kind: opts.kind,
      config: { ...opts.extraConfig, ...(inflight ? { inflight: this.inflightConfig(inflight) } : {}), [opts.kind]: opts.options, regions: opts.memory.regions, numQueues: opts.numQueues, logLevel: opts.logLevel, ...(this.failed ? { failed: true } : {}) },
      fds,
      jail: opts.jail,
      seccomp: opts.seccomp,
      entry: opts.entry,
      log: 'pipe',
      fileSizeLimit: opts.fileSizeLimit,
      ...(opts.hostIds ? { hostIds: opts.hostIds } : {}),
    });
    relayDeviceLog(proc.log!, opts.name, opts.writeLog ?? ((line) => coreStderr.write(line)));
    const channel = new ControlChannel('core', proc.control);
    // Listening before the hello is checked: messages that come right behind it
    // (in the same read) are not lost. Until it is checked, awaitHello has them.
    let helloChecked = false;
    channel.on('message', (m) => helloChecked && this.proc === proc && this.onMessage(m));
    const hello = await this.awaitHello(proc, channel, () => (helloChecked = true));
    channel.on('error', (e) => {
      opts.log.error({ device: opts.name, err: e.message }, 'device broke the control protocol; stopping it');
      proc.kill();
    });
    void proc.exited.then((e) => (this.proc === proc ? this.onExit(e) : this.onSpareExit(proc, e)));
    return { proc, channel, hello };
  }

  private adopt(s: Started): void {
    this.proc = s.proc;
    this.channel = s.channel;
    this.hello = s.hello;
  }

  /** With opts.spare: starts a spare process, ready to take the queues over the moment the serving one dies. */
  private prepareSpare(): void {
    if (!this.opts.spare || this.opts.replacement !== 'resume' || this.spare || this.preparingSpare || this.stopping || this.failed) return;
    this.preparingSpare = true;
    this.startProcess()
      .then((s) => {
        if (this.stopping || this.failed) return s.proc.kill();
        this.spare = s;
        this.opts.log.info({ device: this.opts.name, pid: s.proc.pid }, 'spare device process ready');
      })
      .catch((e: Error) => this.opts.log.warn({ device: this.opts.name, err: e.message }, 'a spare device process did not start'))
      .finally(() => (this.preparingSpare = false));
  }

  /** A spare (or a process already replaced) ended: it served nothing; the next death starts a process the slow way. */
  private onSpareExit(proc: DeviceProcess, e: DeviceExit): void {
    if (this.spare?.proc !== proc) return;
    this.spare = null;
    if (!this.stopping) this.opts.log.warn({ device: this.opts.name, pid: proc.pid }, `the spare device process died: ${describeExit(e)}`);
  }

  /** Resolves with the device's hello once checked; `checked` runs as soon as it is, before any later message. */
  private awaitHello(proc: DeviceProcess, channel: ControlChannel<'core'>, checked: () => void): Promise<HelloMessage> {
    const { opts } = this;
    return new Promise((resolve, reject) => {
      // Once the hello is in, a later error or exit is onExit's business, not this start's.
      let settled = false;
      const fail = (why: string) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        proc.kill();
        reject(new DeviceStartError(`device ${opts.name} did not start: ${why}`));
      };
      const timer = setTimeout(() => fail('no hello within 15 s'), HELLO_TIMEOUT_MS);
      void proc.exited.then((e) => fail(describeExit(e)));
      channel.once('error', (e) => fail(`bad hello (${e.message})`));
      channel.once('message', (m) => {
        if (m.type !== 'hello') return fail(`it sent "${m.type}" before hello`);
        if (m.kind !== opts.kind) return fail(`it says it is a ${m.kind} device, not ${opts.kind}`);
        if (m.numQueues !== opts.numQueues) return fail(`it offers ${m.numQueues} queues, not ${opts.numQueues}`);
        settled = true;
        clearTimeout(timer);
        checked();
        resolve(m);
      });
    });
  }

  private onMessage(m: DeviceMessage): void {
    switch (m.type) {
      case 'config-changed':
        this.onConfigChanged(m.config);
        break;
      case 'needs-reset':
        this.opts.log.warn({ device: this.opts.name, reason: m.reason, queue: m.queue }, 'device needs a reset');
        this.onFailure(m.reason);
        break;
      case 'reset-done':
        this.pendingReset?.();
        this.pendingReset = null;
        break;
      case 'paused':
        this.pendingPause?.();
        this.pendingPause = null;
        break;
      case 'stats':
        this.pendingStats.shift()?.(m.counters);
        break;
      case 'hello':
        this.opts.log.warn({ device: this.opts.name }, 'device sent a second hello; ignored');
        break;
    }
  }

  private onExit(e: DeviceExit): void {
    this.channel.close();
    this.pendingReset?.();
    this.pendingReset = null;
    this.pendingPause?.(); // a dead process has nothing in flight
    this.pendingPause = null;
    for (const answer of this.pendingStats.splice(0)) answer(null);
    if (this.stopping) return;
    if (this.restartRequested) {
      this.restartRequested = false;
      this.failed = false;
      this.opts.log.info({ device: this.opts.name, pid: this.proc.pid }, `device ${this.opts.name} stopped for a restart`);
      this.relaunched = this.relaunchOnQueues('on request').catch((err: Error) => this.opts.log.error({ device: this.opts.name, err: err.message }, 'restarting the device failed'));
      return;
    }
    const how = describeExit(e);
    this.opts.log.error({ device: this.opts.name, pid: this.proc.pid, code: e.code, signal: e.signal }, `device ${this.opts.name} died: ${how}`);
    if (this.opts.replacement === 'none') return this.onDeath(how);
    if (this.opts.replacement === 'resume' && !this.failed && this.withinRestartBudget()) {
      this.relaunched = this.relaunchOnQueues(`after it died (${how})`).catch((err: Error) => this.opts.log.error({ device: this.opts.name, err: err.message }, 'restarting the device failed'));
      return;
    }
    this.onFailure(`device process died: ${how}`);
    if (!this.failed) {
      this.replace().catch((err: Error) => this.opts.log.error({ device: this.opts.name, err: err.message }, 'replacing the device failed'));
    }
  }

  private get inflight(): { fd: number; size: number } | null {
    return this.opts.inflight ?? this.ownInflight;
  }

  /** The device's view of the in-flight file: its size, and where the kind's state starts in a file this object made. */
  private inflightConfig(inflight: { size: number }): { size: number; stateOffset?: number } {
    return this.ownInflight && this.opts.stateBytes ? { size: inflight.size, stateOffset: this.opts.numQueues * INFLIGHT_SLOT_BYTES } : { size: inflight.size };
  }

  /** Counts a restart now; false once RESTART_BUDGET restarts fall within its window. */
  private withinRestartBudget(): boolean {
    const now = Date.now();
    while (this.restartTimes.length > 0 && now - this.restartTimes[0]! > RESTART_BUDGET.windowMs) this.restartTimes.shift();
    if (this.restartTimes.length >= RESTART_BUDGET.count) {
      this.opts.log.error({ device: this.opts.name, restarts: this.restartTimes.length, windowMs: RESTART_BUDGET.windowMs }, `device ${this.opts.name} died too often: it is failed`);
      return false;
    }
    this.restartTimes.push(now);
    return true;
  }

  /**
   * Starts a device that serves normally on the same queues: from the
   * in-flight record it takes again what the dead one had taken and not
   * completed, so the guest sees nothing but a delay.
   */
  private async relaunchOnQueues(cause: string): Promise<void> {
    this.relaunching = true;
    try {
      const spare = this.spare;
      this.spare = null;
      if (spare) this.adopt(spare);
      else await this.launch();
    } catch (e) {
      this.relaunching = false;
      this.opts.log.error({ device: this.opts.name, err: (e as Error).message }, 'the restarted device process did not start');
      this.onFailure(`device process restarted ${cause} and did not start`);
      return this.replace();
    }
    this.relaunching = false;
    if (this.stopping) return this.proc.kill();
    this.restarts++;
    this.opts.log.warn({ device: this.opts.name, pid: this.proc.pid, restarts: this.restarts }, `device ${this.opts.name} restarted ${cause}: its queues resume`);
    if (this.lastActivation) this.send({ type: 'activate', ...this.lastActivation });
    if (this.paused) this.send({ type: 'pause' });
    this.prepareSpare();
  }

  /** Starts the process that fails the dead one's requests, and gives it the queues. */
  private async replace(): Promise<void> {
    this.failed = true;
    this.spare?.proc.kill(); // a failed device serves no more: no use for a spare
    this.spare = null;
    this.relaunching = true;
    try {
      await this.launch();
    } catch (e) {
      this.relaunching = false;
      this.opts.log.error({ device: this.opts.name, err: (e as Error).message }, 'the replacement device process did not start: the device stays dead');
      return;
    }
    this.relaunching = false;
    if (this.stopping) return this.proc.kill();
    this.opts.log.warn({ device: this.opts.name, pid: this.proc.pid }, `device ${this.opts.name} replaced: its requests now fail`);
    if (this.lastActivation) this.send({ type: 'activate', ...this.lastActivation });
    if (this.paused) this.send({ type: 'pause' });
  }

  private send(m: Parameters<ControlChannel<'core'>['send']>[0]): boolean {
    if (this.channel.isClosed) return false;
    // A device that stops reading would make the core buffer without end.
    if (this.channel.backlog > MAX_CONTROL_BACKLOG) {
      this.opts.log.error({ device: this.opts.name, backlog: this.channel.backlog }, 'device stopped reading its control channel; stopping it');
      this.proc.kill();
      return false;
    }
    this.channel.send(m);
    return true;
  }

  activate(features: number, queues: QueueAddresses[]): void {
    if (this.ownInflight) queues = queues.map((q) => ({ ...q, inflight: q.index * INFLIGHT_SLOT_BYTES }));
    this.lastActivation = { features, queues };
    if (this.relaunching) return; // the new process gets it once it is up
    this.send({ type: 'activate', features, queues });
  }

  /**
   * After a reset the driver sets its queues up anew: what was recorded of
   * the old ones (and a kind's state) must not be taken again. The file is
   * zeroed in place (a punched hole), never shrunk: the device may still be
   * writing to its mapping, and a shrunk file would kill it with SIGBUS.
   */
  private clearInflight(): void {
    if (!this.ownInflight) return;
    libc.fallocate(this.ownInflight.fd, libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE, 0, this.ownInflight.size);
  }

  /**
   * Resolves when the device confirms it has stopped its queues. With
   * `complete` (the queues live on, e.g. a vhost-user stop) it first
   * completes what it had taken. (or is gone, or after a timeout). */
  reset(opts: { complete?: boolean } = {}): Promise<void> {
    this.lastActivation = null;
    // The driver sets its queues up anew (or is gone): nothing recorded of the old ones may be taken again.
    this.clearInflight();
    if (!this.send(opts.complete ? { type: 'reset', complete: true } : { type: 'reset' })) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.opts.log.error({ device: this.opts.name }, 'device did not confirm a reset; stopping it');
        this.proc.kill();
        resolve();
      }, RESET_TIMEOUT_MS);
      this.pendingReset = () => {
        clearTimeout(timer);
        this.clearInflight(); // again: what the device wrote while it completed the old requests is stale too
        resolve();
      };
    });
  }

  /**
   * Stops the device taking requests (and receiving frames) until resume();
   * resolves once what it had taken is complete (or it is gone, or after a timeout).
   */
  pause(): Promise<void> {
    this.paused = true;
    if (this.relaunching || !this.send({ type: 'pause' })) return Promise.resolve(); // a process being started gets it once up
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.opts.log.warn({ device: this.opts.name }, 'device did not confirm its pause within 5 s');
        resolve();
      }, RESET_TIMEOUT_MS);
      this.pendingPause = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }

  resume(): void {
    this.paused = false;
    this.send({ type: 'resume' });
  }

  writeConfig(offset: number, data: Uint8Array): void {
    this.send({ type: 'config-write', offset, data });
  }

  /** The device's counters; null if it is gone, dies first or has not answered within STATS_TIMEOUT_MS. */
  stats(): Promise<Record<string, number> | null> {
    if (this.pendingStats.length >= MAX_PENDING_STATS || !this.send({ type: 'stats-request' })) return Promise.resolve(null);
    return new Promise((resolve) => {
      const answer = (c: Record<string, number> | null) => {
        clearTimeout(timer);
        resolve(c);
      };
      // Left in the queue when it times out: a late answer then goes to it, not to a later request.
      const timer = setTimeout(() => {
        const i = this.pendingStats.indexOf(answer);
        this.pendingStats[i] = () => undefined;
        resolve(null);
      }, STATS_TIMEOUT_MS);
      this.pendingStats.push(answer);
    });
  }

  /** Asks the device to exit, then kills it if it has not within a second. */
  async shutdown(): Promise<void> {
    this.stopping = true;
    const spare = this.spare;
    this.spare = null;
    if (spare) {
      spare.channel.send({ type: 'shutdown' });
      spare.proc.kill();
    }
    this.send({ type: 'shutdown' });
    const timer = setTimeout(() => this.proc.kill(), 1000);
    await Promise.all([this.proc.exited, spare?.proc.exited]);
    clearTimeout(timer);
    for (const fd of [...this.kickFds, ...this.callFds, this.opts.backendFd]) libc.close(fd);
    if (this.ownInflight) libc.close(this.ownInflight.fd);
  }
}
