// One vhost-user frontend (QEMU, Cloud Hypervisor, the harness) served by a
// splitvm device process. This process plays the core's part for it: it
// speaks the protocol (messages, fds over SCM_RIGHTS, the memory table, the
// rings), and runs the device in its jail under its policy exactly as
// `splitvm run` does, with the frontend's memory fd and eventfds.
//
// The device process never receives an fd after it starts: when the rings
// are ready it is launched with the memory fd, the backend fd and each
// ring's kick and call eventfds, and activated with the ring addresses (in
// guest-physical terms, translated through the memory table). When the
// frontend later changes what a running device holds (a new memory table, a
// new call or kick eventfd), the device is stopped — every request it took
// completes — and a new one resumes the rings where it stopped.
//
// Messages are handled one at a time, in order. Anything malformed or
// unexpected (bad sizes, a ring index out of range, fds where none are due,
// memory regions that overlap or lie outside their fd) is refused and
// logged; a header that cannot be read ends the connection. Neither reaches
// the device.
import fs from 'node:fs';
import type { Logger } from 'pino';
import * as libc from '../../sys/libc.js';
import { FdWatcher, POLLIN } from '../../sys/poll.js';
import { recvWithFds, sendWithFds } from '../../sys/unix-socket.js';
import { GuestMemory } from '../../devices/guest-memory.js';
import type { HelloMessage } from '../../ipc/messages.js';
import type { OpenedBackend } from '../kinds/kind.js';
import type { SeccompMode } from '../jail/launch.js';
import { VirtioDeviceProcess } from '../supervisor/device-process.js';
import type { HostIds } from '../jail/identity.js';
import type { DeviceLauncher } from '../launcher/client.js';
import * as P from './protocol.js';
import { inflightQueueBytes } from '../../devices/virtio/inflight.js';
import { ringSizes } from '../../devices/virtio/queue.js';

interface Ring {
  num: number;
  base: number;
  addr: { desc: number; avail: number; used: number } | null;
  kick: number;
  call: number;
  enabled: boolean;
}

interface Region extends P.MemRegion {
  fd: number;
}

export interface SessionOptions {
  name: string;
  backend: OpenedBackend;
  /** The device's hello (features, queues, config), from a first start. */
  hello: HelloMessage;
  seccomp: SeccompMode;
  jail: boolean;
  log: Logger;
  /** Whether the operator paused the backend: a device started meanwhile starts paused. */
  paused?: () => boolean;
  /** The host uid and gid device processes run as (jail/identity.ts). */
  hostIds?: HostIds;
  /** Starts device processes once this process is sealed. */
  launcher?: DeviceLauncher;
  /** Keep a spare device process (DeviceProcessOptions.spare). */
  spare?: boolean;
}

const OFFERED_PROTOCOL = (1 << P.Proto.MQ) | (1 << P.Proto.REPLY_ACK) | (1 << P.Proto.CONFIG) | (1 << P.Proto.INFLIGHT_SHMFD);
/** The most in-flight record file a frontend may ask for (16 queues of 32768 entries fit). */
const MAX_INFLIGHT_BYTES = 16 * inflightQueueBytes(32768);

export class VhostUserSession {
  /** The message being read: its bytes so far, and its header once whole. */
  private buf: Uint8Array = new Uint8Array(0);
  private header: P.Header | null = null;
  private pendingFds: number[] = [];
  private readonly watcher: FdWatcher;
  private busy = false;
  private closed = false;
  private features = 0n;
  private protocolFeatures = 0;
  private readonly rings: Ring[];
  private regions: Region[] = [];
  private memory: GuestMemory | null = null;
  /** The in-flight record file (GET_/SET_INFLIGHT_FD) and the queue size its layout is for. */
  private inflight: { fd: number; size: number; queueSize: number } | null = null;
  private device: VirtioDeviceProcess | null = null;
  /** What the running device was started with; a change means a restart. */
  private running: string | null = null;
  readonly done: Promise<void>;
  private finish!: () => void;
  readonly counters = { messages: 0, refused: 0, deviceStarts: 0 };

  constructor(
    private readonly fd: number,
    private readonly opts: SessionOptions,
  ) {
    this.rings = Array.from({ length: opts.hello.numQueues }, () => ({ num: 0, base: 0, addr: null, kick: -1, call: -1, enabled: false }));
    this.done = new Promise((r) => (this.finish = r));
    this.watcher = new FdWatcher(fd, () => void this.pump());
    this.watcher.want(POLLIN);
  }

  private get log(): Logger {
    return this.opts.log;
  }

  /** The device process serving the rings now, if any. */
  get deviceProcess(): VirtioDeviceProcess | null {
    return this.device;
  }

  /**
   * Reads and handles whole messages, one at a time. Each read stops at the
   * end of the message being read (the header, then its payload), so the
   * fds that arrive belong to that message: the kernel hands a message's
   * fds with its bytes, and never with bytes after them.
   */
  private async pump(): Promise<void> {
    if (this.busy || this.closed) return;
    this.busy = true;
    try {
      for (;;) {
        const h = this.buf.length >= P.HEADER_BYTES ? this.header! : null;
        const want = (h ? P.HEADER_BYTES + h.size : P.HEADER_BYTES) - this.buf.length;
        if (want > 0) {
          const r = recvWithFds(this.fd, want);
          if (r.n === -libc.EAGAIN) break;
          if (r.n <= 0) return await this.close(r.n === 0 ? 'the frontend closed the connection' : `reading from the frontend failed (errno ${-r.n})`);
          this.pendingFds.push(...r.fds);
          if (r.truncated) return await this.close('the frontend sent more fds than a message may carry');
          this.buf = concat(this.buf, r.data);
          if (!h && this.buf.length === P.HEADER_BYTES) {
            try {
              this.header = P.decodeHeader(this.buf);
            } catch (e) {
              return await this.close(`unreadable message header: ${(e as Error).message}`);
            }
          }
          continue;
        }
        const payload = this.buf.slice(P.HEADER_BYTES);
        this.buf = new Uint8Array(0);
        await this.handle(h!, payload, this.pendingFds.splice(0));
        if (this.closed) return;
      }
      if (this.buf.length === 0) await this.applyRings();
    } catch (e) {
      this.log.error({ err: (e as Error).stack }, 'vhost-user session failed');
      await this.close(`internal error: ${(e as Error).message}`);
    } finally {
      this.busy = false;
      if (!this.closed) this.watcher.want(POLLIN);
    }
  }

  private async handle(h: P.Header, payload: Uint8Array, fds: number[]): Promise<void> {
    this.counters.messages++;
    const name = P.REQ_NAMES.get(h.request) ?? `request ${h.request}`;
    this.log.debug({ request: name, size: h.size, fds: fds.length, needReply: (h.flags & P.FLAG_NEED_REPLY) !== 0 }, 'vhost-user message');
    let reply: Uint8Array | null = null;
    let replyFds: number[] = [];
    let ok = true;
    // fds the message hands over (stored) are added to `taken`; every other one is closed here, refused or not.
    const taken = new Set<number>();
    try {
      const out = await this.dispatch(h.request, payload, fds, taken);
      if (out) {
        reply = out.payload;
        replyFds = out.fds ?? [];
      }
      if (fds.some((fd) => !taken.has(fd))) throw new P.ProtocolViolation(`${name} came with an fd it does not take`);
    } catch (e) {
      for (const fd of fds) if (!taken.has(fd)) libc.close(fd);
      if (!(e instanceof P.ProtocolViolation)) throw e;
      ok = false;
      this.counters.refused++;
      this.log.warn({ request: name, err: e.message }, 'vhost-user message refused');
    }
    if (reply) this.send(h.request, reply, replyFds);
    else if (h.flags & P.FLAG_NEED_REPLY && this.protocolFeatures & (1 << P.Proto.REPLY_ACK)) this.send(h.request, P.u64Payload(ok ? 0 : 1));
    else if (!ok && P.REPLY_REQUESTS.includes(h.request)) this.send(h.request, P.u64Payload(0)); // keep the frontend's reply read in step
  }

  private send(request: number, payload: Uint8Array, fds: number[] = []): void {
    const n = sendWithFds(this.fd, P.encodeReply(request, payload), fds);
    if (n < 0) this.log.warn({ errno: -n }, 'vhost-user reply not sent');
  }

  private ring(index: number, what: string): Ring {
    const r = this.rings[index];
    if (!r) throw new P.ProtocolViolation(`${what}: ring ${index} does not exist (the device has ${this.rings.length})`);
    return r;
  }

  private async dispatch(req: number, p: Uint8Array, fds: number[], taken: Set<number>): Promise<{ payload: Uint8Array; fds?: number[] } | void> {
    const hello = this.opts.hello;
    const offered = BigInt(hello.deviceFeatures) | (1n << BigInt(P.VHOST_USER_F_PROTOCOL_FEATURES));
    switch (req) {
      case P.Req.GET_FEATURES:
        return { payload: P.u64Payload(offered) };
      case P.Req.SET_FEATURES: {
        const f = P.decodeU64(p, 'SET_FEATURES');
        if (f & ~offered) throw new P.ProtocolViolation(`features 0x${f.toString(16)} include some the device did not offer`);
        this.features = f;
        return;
      }
      case P.Req.GET_PROTOCOL_FEATURES:
        return { payload: P.u64Payload(OFFERED_PROTOCOL) };
      case P.Req.SET_PROTOCOL_FEATURES: {
        const f = P.decodeU64(p, 'SET_PROTOCOL_FEATURES');
        if (f & ~BigInt(OFFERED_PROTOCOL)) throw new P.ProtocolViolation(`protocol features 0x${f.toString(16)} include some not offered`);
        this.protocolFeatures = Number(f);
        return;
      }
      case P.Req.GET_QUEUE_NUM:
        return { payload: P.u64Payload(hello.numQueues) };
      case P.Req.SET_OWNER:
        return;
      case P.Req.RESET_OWNER:
        await this.stopDevice();
        return;
      case P.Req.SET_MEM_TABLE:
        await this.setMemTable(P.decodeMemTable(p), fds);
        fds.forEach((fd) => taken.add(fd));
        return;
      case P.Req.SET_VRING_NUM: {
        const s = P.decodeVringState(p, 'SET_VRING_NUM');
        if (s.num === 0 || s.num > hello.maxQueueSize || (s.num & (s.num - 1)) !== 0) throw new P.ProtocolViolation(`ring size ${s.num} is not a power of 2 up to ${hello.maxQueueSize}`);
        this.ring(s.index, 'SET_VRING_NUM').num = s.num;
        return;
      }
      case P.Req.SET_VRING_BASE: {
        const s = P.decodeVringState(p, 'SET_VRING_BASE');
        if (s.num > 0xffff) throw new P.ProtocolViolation(`ring base ${s.num} is not a 16-bit index`);
        this.ring(s.index, 'SET_VRING_BASE').base = s.num;
        return;
      }
      case P.Req.SET_VRING_ADDR: {
        const a = P.decodeVringAddr(p);
        const ring = this.ring(a.index, 'SET_VRING_ADDR');
        if (ring.num === 0) throw new P.ProtocolViolation('SET_VRING_ADDR before SET_VRING_NUM: the ring\'s extent is unknown');
        const sizes = ringSizes(ring.num);
        ring.addr = {
          desc: this.toGuest(a.desc, sizes.desc, 'descriptor table'),
          avail: this.toGuest(a.avail, sizes.avail, 'available ring'),
          used: this.toGuest(a.used, sizes.used, 'used ring'),
        };
        return;
      }
      case P.Req.GET_VRING_BASE: {
        const s = P.decodeVringState(p, 'GET_VRING_BASE');
        const ring = this.ring(s.index, 'GET_VRING_BASE');
        await this.stopDevice();
        const base = this.usedIndex(ring);
        ring.base = base;
        closeFd(ring.kick);
        ring.kick = -1; // the ring is stopped until a new kick fd
        return { payload: P.encodeVringState({ index: s.index, num: base }) };
      }
      case P.Req.SET_VRING_KICK:
      case P.Req.SET_VRING_CALL:
      case P.Req.SET_VRING_ERR: {
        const what = P.REQ_NAMES.get(req)!;
        const v = P.decodeVringFd(p, what);
        const ring = this.ring(v.index, what);
        if (v.noFd === (fds.length > 0) || fds.length > 1) throw new P.ProtocolViolation(`${what}: the fd does not match the no-fd flag`);
        const fd = fds[0] ?? -1;
        if (req === P.Req.SET_VRING_ERR) {
          closeFd(fd); // we never report ring errors that way
          if (fd >= 0) taken.add(fd);
          return;
        }
        if (req === P.Req.SET_VRING_KICK) {
          if (fd < 0) throw new P.ProtocolViolation('SET_VRING_KICK without an fd: polling rings is not supported');
          closeFd(ring.kick);
          ring.kick = fd;
        } else {
          closeFd(ring.call);
          ring.call = fd;
        }
        if (fd >= 0) taken.add(fd);
        return;
      }
      case P.Req.SET_VRING_ENABLE: {
        const s = P.decodeVringState(p, 'SET_VRING_ENABLE');
        if (s.num > 1) throw new P.ProtocolViolation(`SET_VRING_ENABLE with ${s.num}`);
        this.ring(s.index, 'SET_VRING_ENABLE').enabled = s.num === 1;
        return;
      }
      case P.Req.GET_INFLIGHT_FD: {
        const i = P.decodeInflight(p, 'GET_INFLIGHT_FD');
        if (i.numQueues === 0 || i.numQueues > hello.numQueues || i.queueSize === 0 || i.queueSize > hello.maxQueueSize) {
          throw new P.ProtocolViolation(`in-flight record for ${i.numQueues} queues of ${i.queueSize} (the device has ${hello.numQueues} of at most ${hello.maxQueueSize})`);
        }
        const size = i.numQueues * inflightQueueBytes(i.queueSize);
        const fd = libc.memfdCreate('splitvm-inflight', libc.MFD_CLOEXEC);
        libc.ftruncate(fd, size);
        this.setInflight(fd, size, i.queueSize);
        return { payload: P.encodeInflight({ mmapSize: size, mmapOffset: 0, numQueues: i.numQueues, queueSize: i.queueSize }), fds: [fd] };
      }
      case P.Req.SET_INFLIGHT_FD: {
        const i = P.decodeInflight(p, 'SET_INFLIGHT_FD');
        if (fds.length !== 1) throw new P.ProtocolViolation('SET_INFLIGHT_FD needs one fd');
        const fd = fds[0]!;
        const bytes = i.numQueues * inflightQueueBytes(i.queueSize);
        if (i.mmapOffset !== 0 || i.mmapSize < bytes || i.mmapSize > MAX_INFLIGHT_BYTES || i.queueSize === 0 || i.queueSize > hello.maxQueueSize || fs.fstatSync(fd).size < i.mmapSize) {
          throw new P.ProtocolViolation('SET_INFLIGHT_FD: the record does not fit its file, or its layout is not one we make');
        }
        taken.add(fd);
        await this.stopDevice(); // a running device keeps its records in the old file
        this.setInflight(fd, i.mmapSize, i.queueSize);
        return;
      }
      case P.Req.GET_CONFIG: {
        const c = P.decodeConfig(p, 'GET_CONFIG');
        const data = new Uint8Array(c.size);
        data.set(hello.config.subarray(c.offset, c.offset + c.size));
        return { payload: P.encodeConfig(c.offset, data) };
      }
      case P.Req.SET_CONFIG: {
        const c = P.decodeConfig(p, 'SET_CONFIG');
        this.device?.writeConfig(c.offset, c.data);
        return;
      }
      default:
        throw new P.ProtocolViolation(`${P.REQ_NAMES.get(req) ?? `request ${req}`} is not supported`);
    }
  }

  private setInflight(fd: number, size: number, queueSize: number): void {
    if (this.inflight) libc.close(this.inflight.fd);
    this.inflight = { fd, size, queueSize };
    this.running = null; // a running device keeps its records elsewhere: restart it on this one
  }

  /** A frontend address (ring) to a guest-physical one, through the memory table. */
  private toGuest(uaddr: number, len: number, what: string): number {
    const r = this.regions.find((x) => uaddr >= x.uaddr && uaddr < x.uaddr + x.size);
    if (!r) throw new P.ProtocolViolation(`${what} address 0x${uaddr.toString(16)} is in no memory region`);
    if (uaddr + len > r.uaddr + r.size) throw new P.ProtocolViolation(`${what} at 0x${uaddr.toString(16)} (${len} bytes) runs past the end of its memory region`);
    return r.gpa + (uaddr - r.uaddr);
  }

  /** Checks a memory table and its fds (one per region); the caller closes them when it is refused. */
  private async setMemTable(regions: P.MemRegion[], fds: number[]): Promise<void> {
    if (fds.length !== regions.length) throw new P.ProtocolViolation(`memory table of ${regions.length} regions came with ${fds.length} fds`);
    // Our device maps one file: every region must be a range of the same one.
    const st = fds.map((fd) => fs.fstatSync(fd));
    for (const s of st) {
      if (s.dev !== st[0]!.dev || s.ino !== st[0]!.ino) throw new P.ProtocolViolation('memory regions lie in different files; only one shared memory file is supported');
    }
    const sorted = [...regions].sort((a, b) => a.gpa - b.gpa);
    for (let i = 0; i < sorted.length; i++) {
      const r = sorted[i]!;
      if (r.offset + r.size > st[0]!.size) throw new P.ProtocolViolation(`memory region at 0x${r.gpa.toString(16)} ends past its file`);
      if (r.offset % 4096 !== 0) throw new P.ProtocolViolation(`memory region at 0x${r.gpa.toString(16)} has an unaligned offset`);
      if (i > 0 && sorted[i - 1]!.gpa + sorted[i - 1]!.size > r.gpa) throw new P.ProtocolViolation('memory regions overlap');
    }
    let memory: GuestMemory;
    try {
      memory = GuestMemory.map(fds[0]!, regions.map(({ gpa, size, offset }) => ({ gpa, size, offset })));
    } catch (e) {
      throw new P.ProtocolViolation(`the memory table cannot be mapped: ${(e as Error).message}`);
    }
    await this.stopDevice();
    for (const r of this.regions) libc.close(r.fd);
    this.regions = regions.map((r, i) => ({ ...r, fd: fds[i]! }));
    this.memory = memory;
  }

  /** The used index ring `ring` shows in guest memory (0 when it was never set up). */
  private usedIndex(ring: Ring): number {
    if (!ring.addr || !this.memory) return ring.base;
    try {
      return this.memory.dataView(ring.addr.used + 2, 2).getUint16(0, true);
    } catch {
      return ring.base;
    }
  }

  /** Rings the device may serve: set up, kicked, and enabled (when enabling is negotiated). */
  private readyRings(): number[] {
    const enabling = (this.features >> BigInt(P.VHOST_USER_F_PROTOCOL_FEATURES)) & 1n;
    return this.rings.flatMap((r, i) => (r.kick >= 0 && r.addr && r.num > 0 && (r.enabled || !enabling) ? [i] : []));
  }

  /** After a burst of messages: starts (or restarts) the device on the rings that are ready. */
  private async applyRings(): Promise<void> {
    const ready = this.readyRings();
    if (ready.length === 0 || !this.memory) return;
    const key = JSON.stringify({ ready, rings: ready.map((i) => this.rings[i]), regions: this.regions, features: this.features.toString() });
    if (key === this.running) return;
    await this.stopDevice();
    const o = this.opts;
    const spare = (): number => libc.eventfd(libc.EFD_CLOEXEC | libc.EFD_NONBLOCK);
    const kick = this.rings.map((r, i) => (ready.includes(i) ? libc.dup(r.kick) : spare()));
    const call = this.rings.map((r, i) => (ready.includes(i) && r.call >= 0 ? libc.dup(r.call) : spare()));
    this.counters.deviceStarts++;
    // The memory and in-flight fds stay the session's (a restarted process gets them again);
    // the duplicates of the backend and eventfds are the device's, closed at its shutdown.
    const device = await VirtioDeviceProcess.start({
      name: o.name, kind: o.hello.kind, numQueues: o.hello.numQueues, backendFd: libc.dup(o.backend.fd), options: o.backend.options,
      fileSizeLimit: o.backend.fileSizeLimit, memory: { fd: this.regions[0]!.fd, regions: this.regions.map(({ gpa, size, offset }) => ({ gpa, size, offset })) },
      queueFds: { kick, call }, jail: o.jail, seccomp: o.seccomp, logLevel: o.log.level, log: o.log, describe: o.backend.describe, ...(o.hostIds ? { hostIds: o.hostIds } : {}), ...(o.launcher ? { launcher: o.launcher } : {}), spare: o.spare === true,
      // A device that dies is restarted by the supervisor on the same rings (within its budget):
      // what it had taken and not completed is taken again, from the in-flight record the frontend
      // keeps (INFLIGHT_SHMFD: it survives this backend too) or else one the supervisor keeps.
      replacement: 'resume',
      ...(this.inflight ? { inflight: { fd: this.inflight.fd, size: this.inflight.size } } : {}),
    });
    if (this.closed) return void (await device.shutdown()); // the frontend left while it started
    device.onFailure = (reason) => this.log.error({ reason }, 'the device failed: the frontend should reset it');
    const features = Number(this.features & ((1n << 53n) - 1n) & ~(1n << BigInt(P.VHOST_USER_F_PROTOCOL_FEATURES)));
    const recordBytes = this.inflight ? inflightQueueBytes(this.inflight.queueSize) : 0;
    device.activate(features, ready.map((i) => {
      const r = this.rings[i]!;
      const inflight = this.inflight && r.num <= this.inflight.queueSize && (i + 1) * recordBytes <= this.inflight.size ? { inflight: i * recordBytes } : {};
      return { index: i, size: r.num, ...r.addr!, base: r.base, ...inflight };
    }));
    if (o.paused?.()) void device.pause();
    this.device = device;
    this.running = key;
    this.log.info({ pid: device.pid, rings: ready }, 'device started for the vhost-user frontend');
  }

  /** Stops the device, if one runs: every request it took completes first. */
  private async stopDevice(): Promise<void> {
    const d = this.device;
    if (!d) return;
    this.device = null;
    this.running = null;
    await d.reset({ complete: true }); // the rings live on: what the device took completes onto them
    await d.shutdown();
    // The rings resume where the device stopped.
    for (const r of this.rings) if (r.addr) r.base = this.usedIndex(r);
  }

  async close(why: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.log.info({ why }, 'vhost-user frontend gone');
    this.watcher.close();
    await this.stopDevice();
    for (const fd of [...this.pendingFds, ...this.rings.flatMap((r) => [r.kick, r.call]), ...this.regions.map((r) => r.fd), this.inflight?.fd ?? -1]) closeFd(fd);
    libc.close(this.fd);
    this.finish();
  }
}


function closeFd(fd: number): void {
  if (fd >= 0) libc.close(fd);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  if (a.length === 0) return b;
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
