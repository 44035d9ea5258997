// The driver side of a split virtqueue, as the guest's virtio driver would
// write it: descriptor chains (direct or indirect), the available ring, kicks,
// and reading back the used ring. Also exposes raw writes so tests can build
// malformed rings. Works on any GuestMemory (a harness memfd, or plain
// buffers in unit tests).
import * as libc from '../../sys/libc.js';
import type { GuestMemory } from '../guest-memory.js';
import { VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, ringSizes } from '../virtio/queue.js';

export interface Buf {
  addr: number;
  len: number;
  /** Device-writable. */
  write?: boolean;
}

export interface RawDesc {
  addr: number;
  len: number;
  flags: number;
  next: number;
}

export interface UsedElem {
  id: number;
  len: number;
}

export interface RingAddresses {
  desc: number;
  avail: number;
  used: number;
}

export type Allocate = (len: number, align: number) => number;

export class DriverQueue {
  private readonly free: number[] = [];
  private readonly chains = new Map<number, number[]>();
  private nextAvail = 0;
  private lastUsed = 0;
  private readonly completed = new Map<number, UsedElem>();
  private readonly waiters = new Map<number, (u: UsedElem) => void>();
  private polling = false;

  constructor(
    readonly mem: GuestMemory,
    readonly index: number,
    readonly size: number,
    readonly addrs: RingAddresses,
    private readonly alloc: Allocate,
    /** Kick and call eventfds (-1 in unit tests without a device process). */
    readonly kickFd = -1,
    readonly callFd = -1,
  ) {
    for (let i = size - 1; i >= 0; i--) this.free.push(i);
    // Fresh rings, as a driver allocating them would have (a reset leaves old contents behind).
    const sizes = ringSizes(size);
    mem.slice(addrs.desc, sizes.desc).fill(0);
    mem.slice(addrs.avail, sizes.avail).fill(0);
    mem.slice(addrs.used, sizes.used).fill(0);
  }

  get freeDescriptors(): number {
    return this.free.length;
  }

  // ---- raw access ----
  writeDesc(i: number, d: RawDesc, table = this.addrs.desc): void {
    const v = this.mem.dataView(table + 16 * i, 16);
    v.setUint32(0, d.addr % 0x1_0000_0000, true);
    v.setUint32(4, Math.floor(d.addr / 0x1_0000_0000), true);
    v.setUint32(8, d.len, true);
    v.setUint16(12, d.flags, true);
    v.setUint16(14, d.next, true);
  }
  setAvailEntry(slot: number, head: number): void {
    this.mem.dataView(this.addrs.avail + 4 + 2 * (slot % this.size), 2).setUint16(0, head, true);
  }
  setAvailIdx(idx: number): void {
    this.mem.dataView(this.addrs.avail + 2, 2).setUint16(0, idx & 0xffff, true);
  }
  setAvailFlags(flags: number): void {
    this.mem.dataView(this.addrs.avail, 2).setUint16(0, flags, true);
  }
  /** used_event (EVENT_IDX): interrupt when the used index passes this value. */
  setUsedEvent(idx: number): void {
    this.mem.dataView(this.addrs.avail + 4 + 2 * this.size, 2).setUint16(0, idx & 0xffff, true);
  }
  /** avail_event written by the device (EVENT_IDX). */
  availEvent(): number {
    return this.mem.dataView(this.addrs.used + 4 + 8 * this.size, 2).getUint16(0, true);
  }
  usedIdx(): number {
    return this.mem.dataView(this.addrs.used + 2, 2).getUint16(0, true);
  }
  get availIdx(): number {
    return this.nextAvail;
  }
  /** The used index up to which takeUsed has read (what a driver writes to used_event to be interrupted next). */
  get lastUsedIdx(): number {
    return this.lastUsed;
  }
  /** EVENT_IDX kick suppression: whether publishing from `oldAvail` to now crossed the device's avail_event. */
  kickNeeded(oldAvail: number): boolean {
    return ((this.nextAvail - this.availEvent() - 1) & 0xffff) < ((this.nextAvail - oldAvail) & 0xffff);
  }

  // ---- a well-behaved driver ----
  /** Writes a chain and puts its head in the available ring (not yet published). */
  add(bufs: Buf[], opts: { indirect?: boolean } = {}): number {
    if (bufs.length === 0) throw new Error('a chain needs at least one buffer');
    let head: number;
    if (opts.indirect) {
      const table = this.alloc(16 * bufs.length, 16);
      bufs.forEach((b, i) => this.writeDesc(i, { addr: b.addr, len: b.len, flags: (b.write ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < bufs.length ? VIRTQ_DESC_F_NEXT : 0), next: i + 1 < bufs.length ? i + 1 : 0 }, table));
      head = this.take(1)[0]!;
      this.writeDesc(head, { addr: table, len: 16 * bufs.length, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
      this.chains.set(head, [head]);
    } else {
      const ids = this.take(bufs.length);
      bufs.forEach((b, i) => this.writeDesc(ids[i]!, { addr: b.addr, len: b.len, flags: (b.write ? VIRTQ_DESC_F_WRITE : 0) | (i + 1 < bufs.length ? VIRTQ_DESC_F_NEXT : 0), next: i + 1 < bufs.length ? ids[i + 1]! : 0 }));
      head = ids[0]!;
      this.chains.set(head, ids);
    }
    this.setAvailEntry(this.nextAvail, head);
    this.nextAvail = (this.nextAvail + 1) & 0xffff;
    return head;
  }

  /** Publishes every chain added so far (the available index). */
  publish(): void {
    this.setAvailIdx(this.nextAvail);
  }

  /** Signals the device (writes the kick eventfd, as KVM's ioeventfd would). */
  kick(): void {
    libc.eventfdWrite(this.kickFd);
  }

  /** add + publish + kick. */
  submit(bufs: Buf[], opts: { indirect?: boolean } = {}): number {
    const head = this.add(bufs, opts);
    this.publish();
    if (this.kickFd >= 0) this.kick();
    return head;
  }

  /** Reads new used elements, frees their descriptors. */
  takeUsed(): UsedElem[] {
    const out: UsedElem[] = [];
    const idx = this.usedIdx();
    while (this.lastUsed !== idx) {
      const v = this.mem.dataView(this.addrs.used + 4 + 8 * (this.lastUsed % this.size), 8);
      const u = { id: v.getUint32(0, true), len: v.getUint32(4, true) };
      const ids = this.chains.get(u.id);
      if (ids) {
        this.chains.delete(u.id);
        this.free.push(...ids);
      }
      out.push(u);
      this.lastUsed = (this.lastUsed + 1) & 0xffff;
    }
    return out;
  }

  /** Resolves when the chain with head `head` is used (the used ring is polled). */
  waitFor(head: number, timeoutMs = 5000): Promise<UsedElem> {
    const done = this.completed.get(head);
    if (done) {
      this.completed.delete(head);
      return Promise.resolve(done);
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(head);
        reject(new Error(`queue ${this.index}: timed out after ${timeoutMs} ms waiting for head ${head}`));
      }, timeoutMs);
      this.waiters.set(head, (u) => {
        clearTimeout(timer);
        resolve(u);
      });
      this.startPolling();
    });
  }

  /** Counts and clears interrupts raised so far (reads the call eventfd). */
  takeInterrupts(): number {
    return Number(libc.eventfdRead(this.callFd));
  }

  /** Waits up to `timeoutMs` for an interrupt; returns how many arrived (0 on timeout). */
  async waitInterrupt(timeoutMs = 5000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    for (let spins = 0; ; spins++) {
      const n = this.takeInterrupts();
      if (n > 0) return n;
      if (Date.now() >= deadline) return 0;
      await pause(spins);
    }
  }

  private take(n: number): number[] {
    if (this.free.length < n) throw new Error(`queue ${this.index}: ${n} descriptors wanted, ${this.free.length} free`);
    return this.free.splice(this.free.length - n, n).reverse();
  }

  private startPolling(): void {
    if (this.polling) return;
    this.polling = true;
    void (async () => {
      for (let spins = 0; this.waiters.size > 0; spins++) {
        for (const u of this.takeUsed()) {
          const w = this.waiters.get(u.id);
          if (w) {
            this.waiters.delete(u.id);
            w(u);
            spins = 0;
          } else this.completed.set(u.id, u);
        }
        if (this.waiters.size > 0) await pause(spins);
      }
      this.polling = false;
    })();
  }
}

/** Polling back-off: a few event-loop turns first (low latency), then 1 ms sleeps. */
export function pause(spins: number): Promise<void> {
  return new Promise((r) => (spins < 200 ? setImmediate(r) : setTimeout(r, 1)));
}
