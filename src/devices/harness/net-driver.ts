// A virtio-net driver over the harness's two queues, for tests, benchmarks
// and fuzzing: posts receive buffers, sends frames (virtio-net header
// first) and reads back received frames as the guest's driver would.
import { HDR_NUM_BUFFERS, NET_HDR_BYTES } from '../net/constants.js';
import type { DriverQueue } from './driver-queue.js';
import type { DeviceHarness } from './harness.js';

export interface ReceivedFrame {
  /** The 12-byte virtio-net header the device wrote. */
  header: Uint8Array;
  frame: Uint8Array;
  numBuffers: number;
}

export class NetDriver {
  /** Posted receive buffers by head: address and length. */
  private readonly posted = new Map<number, { addr: number; len: number }>();

  constructor(
    readonly h: DeviceHarness,
    readonly rx: DriverQueue,
    readonly tx: DriverQueue,
  ) {}

  /** Posts `count` receive buffers of `len` bytes each (one descriptor per chain) and kicks. */
  postRx(count: number, len: number, kick = true): number[] {
    const heads = [];
    for (let i = 0; i < count; i++) {
      const b = this.h.buffer(len, true);
      const head = this.rx.add([b]);
      this.posted.set(head, { addr: b.addr, len });
      heads.push(head);
    }
    this.rx.publish();
    if (kick) this.rx.kick();
    return heads;
  }

  /**
   * Waits for the next received frame and reassembles it from its
   * num_buffers chains (in used-ring order, as Linux's driver does).
   */
  async receive(timeoutMs = 5000): Promise<ReceivedFrame> {
    const first = await this.nextUsed(timeoutMs);
    const parts = [first];
    const head = this.h.mem.slice(this.posted.get(first.id)!.addr, NET_HDR_BYTES).slice();
    const numBuffers = new DataView(head.buffer).getUint16(HDR_NUM_BUFFERS, true);
    while (parts.length < numBuffers) parts.push(await this.nextUsed(timeoutMs));
    const total = parts.reduce((n, u) => n + u.len, 0);
    const all = new Uint8Array(total);
    let at = 0;
    for (const u of parts) {
      const p = this.posted.get(u.id)!;
      all.set(this.h.mem.slice(p.addr, u.len), at);
      at += u.len;
      this.posted.delete(u.id);
    }
    return { header: all.subarray(0, NET_HDR_BYTES), frame: all.subarray(NET_HDR_BYTES), numBuffers };
  }

  private readonly usedBacklog: { id: number; len: number }[] = [];
  private async nextUsed(timeoutMs: number): Promise<{ id: number; len: number }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      this.usedBacklog.push(...this.rx.takeUsed());
      const u = this.usedBacklog.shift();
      if (u) return u;
      if (Date.now() > deadline) throw new Error(`no frame received within ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 1));
    }
  }

  /** Queues a frame for transmission (header all zero unless given), optionally split at `splitAt` bytes. */
  addTx(frame: Uint8Array, opts: { header?: Uint8Array; splitAt?: number } = {}): number {
    const all = new Uint8Array(NET_HDR_BYTES + frame.length);
    if (opts.header) all.set(opts.header);
    all.set(frame, NET_HDR_BYTES);
    const cut = opts.splitAt ?? all.length;
    const bufs = [this.h.buffer(all.subarray(0, cut))];
    if (cut < all.length) bufs.push(this.h.buffer(all.subarray(cut)));
    const head = this.tx.add(bufs);
    this.tx.publish();
    return head;
  }

  /** Sends a frame and waits until the device has returned its chain. */
  async send(frame: Uint8Array, opts: { header?: Uint8Array; splitAt?: number } = {}, timeoutMs = 5000): Promise<void> {
    const head = this.addTx(frame, opts);
    this.tx.kick();
    await this.tx.waitFor(head, timeoutMs);
  }
}

/** An Ethernet frame of `len` bytes: destination, source, EtherType 0x88b5 (local experimental), then a pattern. */
export function testFrame(len: number, seed: number, dst = 'ff:ff:ff:ff:ff:ff', src = '02:00:00:00:00:01'): Uint8Array {
  const f = new Uint8Array(len);
  f.set(dst.split(':').map((h) => parseInt(h, 16)), 0);
  f.set(src.split(':').map((h) => parseInt(h, 16)), 6);
  f[12] = 0x88;
  f[13] = 0xb5;
  for (let i = 14; i < len; i++) f[i] = (i * 7 + seed) & 0xff;
  return f;
}
