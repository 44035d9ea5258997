// The blk request load both the blk and the vhost-user benchmarks drive: a
// fixed set of request slots in guest memory, `depth` requests kept in
// flight for a while (reads or writes, random or sequential), each slot
// reissued as soon as it completes, completions awaited by interrupt (the
// call eventfd, with EVENT_IDX) or by polling the used ring; optionally the
// latency of every request, from its publication to the driver seeing it used.
import fs from 'node:fs';
import net from 'node:net';
import type { GuestMemory } from '../../../src/devices/guest-memory.js';
import type { DriverQueue } from '../../../src/devices/harness/index.js';
import * as C from '../../../src/devices/blk/constants.js';

/** One request's buffers: header, data, status byte. */
export interface Slot {
  hdr: number;
  data: number;
  status: number;
}

export interface Load {
  op: 'read' | 'write';
  bs: number;
  depth: number;
  random: boolean;
}

export interface LoadResult {
  ops: number;
  seconds: number;
  /** Requests answered with a status other than OK. */
  errors: number;
  kicks: number;
  interrupts: number;
}

export interface LoadOptions {
  /** Bytes of the disk the sectors are drawn from. */
  imageBytes: number;
  completion: 'irq' | 'poll';
  /** Called once, halfway through. */
  midway?: () => void;
  /** When given, each request's latency (µs, publication to the driver seeing it used) is appended. */
  latencies?: number[];
  /** How to wait for an interrupt (completion 'irq'); default: a read of the call eventfd on libuv's pool (it must be blocking). */
  waitCall?: () => Promise<void>;
  /** A pause (ms) after each completion before the next request: an idle guest, whose every request finds the device asleep. */
  gapMs?: number;
}

/**
 * Interrupts that arrive on a pipe (DeviceHarness `callPipes`), watched by
 * this process's event loop: `wait` resolves once at least one arrived since
 * the last wait. Takes ownership of `fd` (give it a dup).
 */
export class PipeInterrupts {
  private readonly socket: net.Socket;
  private pending = 0;
  private waiter: (() => void) | null = null;

  constructor(fd: number) {
    this.socket = new net.Socket({ fd, readable: true, writable: false });
    this.socket.on('data', () => {
      const w = this.waiter;
      if (w) {
        this.waiter = null;
        w();
      } else this.pending++;
    });
  }

  wait = (): Promise<void> => {
    if (this.pending > 0) {
      this.pending = 0;
      return Promise.resolve();
    }
    return new Promise((resolve) => (this.waiter = resolve));
  };

  close(): void {
    this.socket.destroy();
  }
}

function readCall(fd: number, buf: Buffer): Promise<void> {
  return new Promise((resolve, reject) => fs.read(fd, buf, 0, 8, null, (e) => (e ? reject(e) : resolve())));
}

/** Keeps `l.depth` requests in flight for `ms`, then lets the outstanding ones finish. */
export async function runLoad(mem: GuestMemory, q: DriverQueue, slots: Slot[], l: Load, ms: number, opts: LoadOptions): Promise<LoadResult> {
  const callBuf = Buffer.alloc(8);
  let seq = 0;
  const nextSector = (): number => {
    if (l.random) return (Math.floor(Math.random() * (opts.imageBytes / l.bs)) * l.bs) / 512;
    const at = seq;
    seq = (seq + l.bs) % opts.imageBytes;
    return at / 512;
  };
  const bySlot = new Map<number, Slot>();
  /** When each head's request was issued (performance.now()), when latencies are wanted. */
  const issuedAt = opts.latencies ? new Float64Array(q.size) : null;
  const issue = (slot: Slot): void => {
    const hdr = mem.dataView(slot.hdr, 16);
    hdr.setUint32(0, l.op === 'read' ? C.VIRTIO_BLK_T_IN : C.VIRTIO_BLK_T_OUT, true);
    hdr.setBigUint64(8, BigInt(nextSector()), true);
    mem.slice(slot.status, 1)[0] = 0xff;
    const head = q.add([
      { addr: slot.hdr, len: 16 },
      { addr: slot.data, len: l.bs, write: l.op === 'read' },
      { addr: slot.status, len: 1, write: true },
    ]);
    bySlot.set(head, slot);
    if (issuedAt) issuedAt[head] = performance.now();
  };
  let kicks = 0;
  let interrupts = 0;
  const publish = (oldAvail: number): void => {
    q.publish();
    if (q.kickNeeded(oldAvail)) {
      q.kick();
      kicks++;
    }
  };
  const t0 = performance.now();
  const deadline = t0 + ms;
  let midwayDone = !opts.midway;
  let ops = 0;
  let errors = 0;
  let old = q.availIdx;
  for (const s of slots.slice(0, l.depth)) issue(s);
  let outstanding = l.depth;
  publish(old);
  while (outstanding > 0) {
    const used = q.takeUsed();
    if (used.length === 0) {
      if (opts.completion === 'poll') await new Promise((r) => setImmediate(r));
      else {
        q.setUsedEvent(q.lastUsedIdx); // interrupt me at the next completion
        if (q.usedIdx() === q.lastUsedIdx) {
          await (opts.waitCall ? opts.waitCall() : readCall(q.callFd, callBuf));
          interrupts++;
        }
      }
      continue;
    }
    const now = performance.now();
    if (!midwayDone && now > t0 + ms / 2) {
      midwayDone = true;
      opts.midway!();
    }
    let issueAt = now;
    if (opts.gapMs) {
      await new Promise((resolve) => setTimeout(resolve, opts.gapMs));
      issueAt = performance.now();
    }
    old = q.availIdx;
    for (const u of used) {
      const slot = bySlot.get(u.id)!;
      bySlot.delete(u.id);
      if (mem.slice(slot.status, 1)[0] !== C.VIRTIO_BLK_S_OK) errors++;
      if (issuedAt) opts.latencies!.push((now - issuedAt[u.id]!) * 1000);
      ops++;
      outstanding--;
      if (issueAt < deadline) {
        issue(slot);
        outstanding++;
      }
    }
    if (q.availIdx !== old) publish(old);
  }
  return { ops, seconds: (performance.now() - t0) / 1000, errors, kicks, interrupts };
}
