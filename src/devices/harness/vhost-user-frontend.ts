// VhostUserFrontend: the harness as a vhost-user frontend, the part a VMM
// (QEMU) plays towards a vhost-user backend — ours (`splitvm device blk|net
// --socket`) or another (qemu-storage-daemon). It connects to the backend's
// socket, negotiates features and protocol features, creates guest memory (a
// memfd in the harness layout, mapped here) and hands it over with
// SET_MEM_TABLE, lays out the rings and sets them up with their kick and
// call eventfds; then the same DriverQueue / BlkDriver that drive a
// DeviceHarness drive the backend. Ring addresses are given as this
// process's own addresses of its mapping, as a frontend does. Tests also use
// its message primitives (`send`, `reply`, `call`) to send what a
// well-behaved frontend never would.
import * as libc from '../../sys/libc.js';
import { connectUnix, recvWithFds, sendWithFds } from '../../sys/unix-socket.js';
import { FLAG_NEED_REPLY, FLAG_REPLY, FLAG_VERSION, HEADER_BYTES, Proto, REPLY_REQUESTS, Req, VHOST_USER_F_PROTOCOL_FEATURES } from '../../core/vhost-user/protocol.js';
import { GuestMemory } from '../guest-memory.js';
import { DriverQueue } from './driver-queue.js';
import { DriverMemory, harnessRegions, MiB } from './harness.js';

export interface FrontendOptions {
  /** Guest RAM bytes (a multiple of 8 KiB), one memfd in two regions. Default 16 MiB. */
  memSize?: number;
  /** Size of each ring. Default 128. */
  queueSize?: number;
  /** How many rings to set up (at most what the backend has). Default 1. */
  numQueues?: number;
  /** Negotiate REPLY_ACK (when offered) and ask for an ack of every set-up message. Default true. */
  replyAck?: boolean;
  /** Virtio features to accept, of those offered and this driver supports. Default: all of those. */
  features?: bigint;
  /** How long to wait for a reply. Default 10 s. */
  timeoutMs?: number;
}

export interface Reply {
  request: number;
  flags: number;
  payload: Uint8Array;
  fds: number[];
}

/** A memory region as SET_MEM_TABLE describes it. */
export interface FrontendRegion {
  gpa: number;
  size: number;
  /** This process's address of the region's first byte. */
  uaddr: number;
  offset: number;
}

/** Bits this driver handles: device-specific ones, ANY_LAYOUT, INDIRECT_DESC, EVENT_IDX, PROTOCOL_FEATURES, VERSION_1. */
const DRIVER_FEATURES = ((1n << 24n) - 1n) | (1n << 27n) | (1n << 28n) | (1n << 29n) | (1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES)) | (1n << 32n);
export class VhostUserFrontend extends DriverMemory {
  readonly queues: DriverQueue[] = [];
  /** What the backend offered, and what was accepted. */
  deviceFeatures = 0n;
  features = 0n;
  protocolFeatures = 0n;
  /** The backend's ring count (GET_QUEUE_NUM with MQ, else 1). */
  backendQueues = 1;
  readonly kickFds: number[] = [];
  readonly callFds: number[] = [];
  private closed = false;

  private constructor(
    readonly fd: number,
    readonly memfd: number,
    mem: GuestMemory,
    readonly opts: FrontendOptions,
  ) {
    super(mem, harnessRegions(opts.memSize ?? 16 * MiB));
  }

  /** Connects to the backend at `socket` and creates guest memory; nothing is sent yet (see negotiate, start). */
  static open(socket: string, opts: FrontendOptions = {}): VhostUserFrontend {
    const memSize = opts.memSize ?? 16 * MiB;
    const memfd = libc.memfdCreate('splitvm-vhost-user-ram');
    libc.ftruncate(memfd, memSize);
    const mem = GuestMemory.map(memfd, harnessRegions(memSize));
    let fd: number;
    try {
      fd = connectUnix(socket);
    } catch (e) {
      libc.close(memfd);
      throw e;
    }
    libc.setNonBlocking(fd);
    return new VhostUserFrontend(fd, memfd, mem, opts);
  }

  /** open + negotiate + start: a backend ready to serve the returned queues. */
  static async connect(socket: string, opts: FrontendOptions = {}): Promise<VhostUserFrontend> {
    const f = VhostUserFrontend.open(socket, opts);
    try {
      await f.negotiate();
      await f.start();
    } catch (e) {
      f.close();
      throw e;
    }
    return f;
  }

  /** The memory table SET_MEM_TABLE sends: each region with this process's address of it. */
  get memTable(): FrontendRegion[] {
    return this.regions.map((r) => ({ ...r, uaddr: this.hostAddress(r.gpa) }));
  }

  /** This process's address of guest-physical `gpa` (what ring addresses are given in). */
  hostAddress(gpa: number): number {
    return this.mem.hostAddress(this.mem.slice(gpa, 0));
  }

  /** GET_FEATURES, GET/SET_PROTOCOL_FEATURES, SET_OWNER, GET_QUEUE_NUM, SET_FEATURES. */
  async negotiate(): Promise<void> {
    this.deviceFeatures = u64(await this.call(Req.GET_FEATURES));
    if (!(this.deviceFeatures & (1n << BigInt(VHOST_USER_F_PROTOCOL_FEATURES)))) throw new Error('the backend does not offer VHOST_USER_F_PROTOCOL_FEATURES');
    const offered = u64(await this.call(Req.GET_PROTOCOL_FEATURES));
    const wanted = (1n << BigInt(Proto.MQ)) | (1n << BigInt(Proto.CONFIG)) | ((this.opts.replyAck ?? true) ? 1n << BigInt(Proto.REPLY_ACK) : 0n);
    this.protocolFeatures = offered & wanted;
    await this.set(Req.SET_PROTOCOL_FEATURES, u64Bytes(this.protocolFeatures));
    await this.set(Req.SET_OWNER);
    if (this.protocolFeatures & (1n << BigInt(Proto.MQ))) this.backendQueues = Number(u64(await this.call(Req.GET_QUEUE_NUM)));
    this.features = this.deviceFeatures & DRIVER_FEATURES & (this.opts.features ?? DRIVER_FEATURES);
    await this.set(Req.SET_FEATURES, u64Bytes(this.features));
  }

  /** SET_MEM_TABLE, then each ring: NUM, BASE, ADDR, KICK, CALL, ENABLE. Returns the driver queues. */
  async start(): Promise<DriverQueue[]> {
    await this.set(Req.SET_MEM_TABLE, memTablePayload(this.memTable), this.regions.map(() => this.memfd));
    const n = this.opts.numQueues ?? 1;
    if (n > this.backendQueues) throw new Error(`${n} rings wanted, the backend has ${this.backendQueues}`);
    const size = this.opts.queueSize ?? 128;
    for (let index = 0; index < n; index++) {
      const addrs = this.allocRings(size);
      // Kick: written here. Call: non-blocking, polled (or made blocking by a benchmark that sleeps on it).
      const kick = libc.eventfd(libc.EFD_CLOEXEC | libc.EFD_NONBLOCK);
      const call = libc.eventfd(libc.EFD_CLOEXEC | libc.EFD_NONBLOCK);
      this.kickFds.push(kick);
      this.callFds.push(call);
      const q = new DriverQueue(this.mem, index, size, addrs, (len, align) => this.alloc(len, align), kick, call);
      this.queues.push(q);
      await this.set(Req.SET_VRING_NUM, vringState(index, size));
      await this.set(Req.SET_VRING_BASE, vringState(index, 0));
      await this.set(Req.SET_VRING_ADDR, vringAddr(index, this.hostAddress(addrs.desc), this.hostAddress(addrs.used), this.hostAddress(addrs.avail)));
      await this.set(Req.SET_VRING_KICK, u64Bytes(BigInt(index)), [kick]);
      await this.set(Req.SET_VRING_CALL, u64Bytes(BigInt(index)), [call]);
      await this.set(Req.SET_VRING_ENABLE, vringState(index, 1));
    }
    return this.queues;
  }

  /** The device's config space bytes at `offset` (GET_CONFIG). */
  async config(offset: number, size: number): Promise<Uint8Array> {
    const p = new Uint8Array(12 + size);
    const dv = new DataView(p.buffer);
    dv.setUint32(0, offset, true);
    dv.setUint32(4, size, true);
    const r = await this.call(Req.GET_CONFIG, p);
    if (r.length !== 12 + size) throw new Error(`GET_CONFIG reply of ${r.length} bytes, wanted ${12 + size}`);
    return r.subarray(12);
  }

  /** Sends one message (header and payload in one sendmsg, with `fds`); `flags` replaces the version and need-reply bits. */
  send(request: number, payload: Uint8Array = new Uint8Array(0), opts: { fds?: number[]; needReply?: boolean; flags?: number; size?: number } = {}): void {
    const msg = new Uint8Array(HEADER_BYTES + payload.length);
    const dv = new DataView(msg.buffer);
    dv.setUint32(0, request, true);
    dv.setUint32(4, opts.flags ?? (FLAG_VERSION | (opts.needReply ? FLAG_NEED_REPLY : 0)), true);
    dv.setUint32(8, opts.size ?? payload.length, true);
    msg.set(payload, HEADER_BYTES);
    this.sendRaw(msg, opts.fds);
  }

  /** Writes bytes as they are (one sendmsg). */
  sendRaw(bytes: Uint8Array, fds: number[] = []): void {
    const n = sendWithFds(this.fd, bytes, fds);
    if (n !== bytes.length) throw new Error(n < 0 ? `sending to the backend failed (${libc.errnoName(-n)})` : `short send (${n} of ${bytes.length} bytes)`);
  }

  /** Reads the next reply; rejects when the backend closes the connection or `timeoutMs` passes. */
  async reply(timeoutMs = this.opts.timeoutMs ?? 10000): Promise<Reply> {
    const deadline = Date.now() + timeoutMs;
    const fds: number[] = [];
    const read = async (len: number): Promise<Uint8Array> => {
      const out = new Uint8Array(len);
      let at = 0;
      for (let spins = 0; at < len; spins++) {
        const r = recvWithFds(this.fd, len - at);
        if (r.n === -libc.EAGAIN) {
          if (Date.now() > deadline) throw new Error(`no reply from the vhost-user backend within ${timeoutMs} ms`);
          await new Promise((res) => (spins < 100 ? setImmediate(res) : setTimeout(res, 1)));
          continue;
        }
        if (r.n === 0) throw new Error('the vhost-user backend closed the connection');
        if (r.n < 0) throw new Error(`reading from the vhost-user backend failed (${libc.errnoName(-r.n)})`);
        fds.push(...r.fds);
        out.set(r.data, at);
        at += r.n;
      }
      return out;
    };
    const h = new DataView((await read(HEADER_BYTES)).buffer);
    const request = h.getUint32(0, true);
    const flags = h.getUint32(4, true);
    const size = h.getUint32(8, true);
    if ((flags & 0x3) !== FLAG_VERSION || !(flags & FLAG_REPLY)) throw new Error(`reply to ${request} has flags 0x${flags.toString(16)}`);
    return { request, flags, payload: await read(size), fds };
  }

  /**
   * Sends `request` and returns its reply's payload when one comes: always
   * for GET_* requests, and the u64 ack for others when `needReply` (which
   * defaults to whether REPLY_ACK was negotiated); empty when none is due.
   */
  async call(request: number, payload?: Uint8Array, opts: { fds?: number[]; needReply?: boolean } = {}): Promise<Uint8Array> {
    const withReply = REPLY_REQUESTS.includes(request);
    const needReply = !withReply && (opts.needReply ?? this.replyAcked);
    this.send(request, payload, { ...(opts.fds ? { fds: opts.fds } : {}), needReply });
    if (!withReply && !needReply) return new Uint8Array(0);
    const r = await this.reply();
    for (const fd of r.fds) libc.close(fd);
    if (r.request !== request) throw new Error(`reply to request ${r.request}, wanted ${request}`);
    return r.payload;
  }

  get replyAcked(): boolean {
    return (this.protocolFeatures & (1n << BigInt(Proto.REPLY_ACK))) !== 0n;
  }

  /** A set-up message: acked when REPLY_ACK was negotiated, and a non-zero ack is an error. */
  private async set(request: number, payload?: Uint8Array, fds?: number[]): Promise<void> {
    const r = await this.call(request, payload, fds ? { fds } : {});
    if (r.length > 0 && u64(r) !== 0n) throw new Error(`the vhost-user backend refused request ${request} (ack ${u64(r)})`);
  }

  /** Closes the connection (the backend stops serving) and our fds. Guest memory stays mapped for the process's life. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of [this.fd, this.memfd, ...this.kickFds, ...this.callFds]) libc.close(fd);
  }
}

export function u64Bytes(v: bigint): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, v, true);
  return b;
}

export function u64(p: Uint8Array): bigint {
  if (p.length < 8) throw new Error(`a u64 payload of ${p.length} bytes`);
  return new DataView(p.buffer, p.byteOffset, 8).getBigUint64(0, true);
}

/** struct vhost_vring_state. */
export function vringState(index: number, num: number): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, index, true);
  dv.setUint32(4, num, true);
  return b;
}

/** struct vhost_vring_addr (no log address). */
export function vringAddr(index: number, desc: number, used: number, avail: number): Uint8Array {
  const b = new Uint8Array(40);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, index, true);
  dv.setBigUint64(8, BigInt(desc), true);
  dv.setBigUint64(16, BigInt(used), true);
  dv.setBigUint64(24, BigInt(avail), true);
  return b;
}

/** The SET_MEM_TABLE payload for `regions` (a count, padding, then gpa, size, uaddr, offset each). */
export function memTablePayload(regions: FrontendRegion[], count = regions.length): Uint8Array {
  const b = new Uint8Array(8 + 32 * regions.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, count, true);
  regions.forEach((r, i) => {
    dv.setBigUint64(8 + 32 * i, BigInt(r.gpa), true);
    dv.setBigUint64(16 + 32 * i, BigInt(r.size), true);
    dv.setBigUint64(24 + 32 * i, BigInt(r.uaddr), true);
    dv.setBigUint64(32 + 32 * i, BigInt(r.offset), true);
  });
  return b;
}
