// The split virtqueue, device side (virtio 1.2 §2.7): reads available
// descriptor chains out of guest memory and publishes used elements. The
// guest is hostile: every index is checked against the queue size, every
// buffer against guest RAM, every chain is bounded, and any malformation
// throws a QueueError (the caller then reports needs-reset and stops the queue).
// The rings are read through typed-array views of guest memory (little-endian
// hosts only), not DataViews: under --jitless every DataView call is a
// builtin call, and the hot path (pop, walk, pushUsed) is made of them.
import { GuestMemoryError, type GuestMemory } from '../guest-memory.js';
import type { InflightRegion } from './inflight.js';

export const VIRTQ_DESC_F_NEXT = 1;
export const VIRTQ_DESC_F_WRITE = 2;
export const VIRTQ_DESC_F_INDIRECT = 4;
export const VIRTQ_AVAIL_F_NO_INTERRUPT = 1;
export const VIRTQ_USED_F_NO_NOTIFY = 1;
/** Transport-independent feature bits that change how a split queue is read. */
export const VIRTIO_F_INDIRECT_DESC = 28;
export const VIRTIO_F_RING_EVENT_IDX = 29;
export const MAX_QUEUE_SIZE = 32768;
/** Bound on a chain's total length (readable + writable): the used length is a u32. */
export const MAX_CHAIN_BYTES = 0xffff_ffff;

export class QueueError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'QueueError';
  }
}

export interface QueueConfig {
  size: number;
  /** Guest-physical addresses of the descriptor table, the available ring and the used ring. */
  desc: number;
  avail: number;
  used: number;
}

export interface QueueOptions {
  /** VIRTIO_F_RING_EVENT_IDX negotiated. */
  eventIdx: boolean;
  /** VIRTIO_F_INDIRECT_DESC negotiated. */
  indirect: boolean;
}

/** One available request: its buffers as zero-copy views of guest memory. */
export interface DescriptorChain {
  head: number;
  /** Device-readable buffers, in order (they all precede the writable ones). */
  readable: Uint8Array[];
  /** Device-writable buffers, in order. */
  writable: Uint8Array[];
  readableBytes: number;
  writableBytes: number;
}

/** Byte sizes of the three parts of a split queue of `size` entries (event fields included). */
export function ringSizes(size: number): { desc: number; avail: number; used: number } {
  return { desc: 16 * size, avail: 6 + 2 * size, used: 6 + 8 * size };
}

// A full memory barrier. koffi views are not SharedArrayBuffers, so there is
// no Atomics on guest memory itself; but a locked read-modify-write on any
// memory is a full fence on x86-64 (V8 emits `lock xadd` for Atomics.add),
// which orders our used-idx store before the load of used_event / flags, as
// the split-ring protocol requires (virtio 1.2 §2.7.10, Linux's smp_mb()).
// Plain loads and stores are otherwise ordered by x86's TSO model.
const fenceCell = new Int32Array(new SharedArrayBuffer(4));
function fence(): void {
  Atomics.add(fenceCell, 0, 0);
}

if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('virtqueues are read as little-endian typed arrays: a big-endian host is not supported');

function isPowerOfTwo(n: number): boolean {
  return Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;
}

export class SplitQueue {
  readonly size: number;
  private readonly mask: number;
  /** The descriptor table as u32 words: addr lo, addr hi, len, flags | next << 16. */
  private readonly descTable: Uint32Array;
  /** The available ring as u16: flags, idx, ring[size], used_event. */
  private readonly avail: Uint16Array;
  /** The used ring as u16 (flags, idx, …, avail_event at 2 + 4 * size) and as u32 (elements from word 1). */
  private readonly used16: Uint16Array;
  private readonly used32: Uint32Array;
  private readonly eventIdx: boolean;
  private readonly indirect: boolean;
  /** Next available-ring index to take. */
  private lastAvail = 0;
  /** Next used-ring index to fill (the value of used->idx we last published). */
  private usedIdx = 0;
  /** used->idx when we last decided about notifying. */
  private signalledUsed = 0;
  /** Heads popped and not yet returned. */
  private readonly inFlight: Uint8Array;
  private inFlightCount = 0;
  /** The shared in-flight record, when the supervisor keeps one (inflight.ts). */
  private record: InflightRegion | null = null;
  /** Heads a dead predecessor took and did not complete: taken again first, oldest first. */
  private resubmit: number[] = [];
  /**
   * Whether this queue carries on from another server. Its predecessor may
   * have published used elements and died before interrupting: the driver
   * may be waiting for an interrupt we cannot know it missed, so whoever
   * takes over interrupts once (drivers tolerate a spurious interrupt).
   */
  private carriedOn = false;

  constructor(
    private readonly mem: GuestMemory,
    cfg: QueueConfig,
    opts: QueueOptions,
  ) {
    if (!isPowerOfTwo(cfg.size) || cfg.size > MAX_QUEUE_SIZE) throw new QueueError(`queue size ${cfg.size} is not a power of 2 ≤ ${MAX_QUEUE_SIZE}`);
    if (cfg.desc % 16 !== 0 || cfg.avail % 2 !== 0 || cfg.used % 4 !== 0) throw new QueueError('ring addresses are misaligned');
    this.size = cfg.size;
    this.mask = cfg.size - 1;
    this.eventIdx = opts.eventIdx;
    this.indirect = opts.indirect;
    const sizes = ringSizes(cfg.size);
    const ev = opts.eventIdx ? 0 : 2; // without EVENT_IDX the trailing event fields need not exist
    const desc = this.ring(cfg.desc, sizes.desc, 4, 'descriptor table');
    const avail = this.ring(cfg.avail, sizes.avail - ev, 2, 'available ring');
    const used = this.ring(cfg.used, sizes.used - ev, 4, 'used ring');
    this.descTable = new Uint32Array(desc.buffer, desc.byteOffset, desc.length >> 2);
    this.avail = new Uint16Array(avail.buffer, avail.byteOffset, avail.length >> 1);
    this.used16 = new Uint16Array(used.buffer, used.byteOffset, used.length >> 1);
    this.used32 = new Uint32Array(used.buffer, used.byteOffset, used.length >> 2);
    this.inFlight = new Uint8Array(cfg.size);
  }

  /**
   * Takes over a queue another device process was serving: carries on from
   * the used index it published, so every chain it had not completed (in
   * order) is taken again.
   */
  resumeFromUsed(): void {
    this.carriedOn = true;
    this.usedIdx = this.used16[1]!;
    this.lastAvail = this.usedIdx;
    this.signalledUsed = this.usedIdx;
    this.availDistance(); // throws QueueError when the rings do not agree
  }

  /**
   * Takes over a queue at the available index `base` (vhost-user's
   * SET_VRING_BASE), with the used index the ring shows. The chains between
   * the two were taken by whoever served it before and are not retaken.
   */
  resumeAt(base: number): void {
    this.carriedOn = true;
    this.usedIdx = this.used16[1]!;
    this.signalledUsed = this.usedIdx;
    if (((base - this.usedIdx) & 0xffff) > this.size) throw new QueueError(`base ${base} is more than a queue (${this.size}) ahead of the used index ${this.usedIdx}`);
    this.lastAvail = base;
    this.availDistance(); // throws QueueError when the rings do not agree
  }

  /**
   * Records every chain taken and completed in `record`. A record a dead
   * device left behind is recovered first: the chains it had taken and not
   * completed are taken again before any new one, and the available index
   * carries on after them (the base is then stale: it is where the dead one
   * started). A fresh record starts at `base` (resumeAt), when given.
   */
  trackInflight(record: InflightRegion, base?: number): void {
    const ringUsed = this.used16[1]!;
    if (record.initialized && record.descNum >= this.size) {
      let heads: number[];
      try {
        heads = record.recover(ringUsed, this.size);
      } catch (e) {
        throw new QueueError(`in-flight record: ${(e as Error).message}`);
      }
      this.carriedOn = true;
      this.usedIdx = ringUsed;
      this.signalledUsed = ringUsed;
      this.lastAvail = (ringUsed + heads.length) & 0xffff;
      this.resubmit = heads;
      this.availDistance(); // throws QueueError when the rings do not agree
    } else {
      if (base !== undefined) this.resumeAt(base);
      record.init(this.size, this.usedIdx);
    }
    this.record = record;
  }

  /** Whether the queue was taken over from another server (see carriedOn): interrupt once. */
  get takenOver(): boolean {
    return this.carriedOn;
  }

  /** Chains a dead predecessor had taken that are still to be taken again. */
  get resubmitting(): number {
    return this.resubmit.length;
  }

  /** Number of chains popped and not yet pushed back. */
  get pending(): number {
    return this.inFlightCount;
  }

  /** True when the driver has made chains available that we have not taken. */
  hasAvailable(): boolean {
    return this.availDistance() !== 0;
  }

  /** Takes the next available chain, or null when there is none. Throws QueueError. */
  pop(): DescriptorChain | null {
    const again = this.resubmit.shift();
    if (again !== undefined) return this.take(again);
    const ahead = this.availDistance();
    if (ahead === 0) return null;
    const head = this.avail[2 + (this.lastAvail & this.mask)]!;
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    if (this.eventIdx) this.used16[2 + 4 * this.size] = this.lastAvail; // avail_event
    return this.take(head);
  }

  private take(head: number): DescriptorChain {
    if (head >= this.size) throw new QueueError(`available head ${head} ≥ queue size ${this.size}`);
    if (this.inFlight[head]) throw new QueueError(`descriptor ${head} made available while still in use`);
    const chain = this.walk(head);
    this.inFlight[head] = 1;
    this.inFlightCount++;
    this.record?.taken(head);
    return chain;
  }

  /** Returns a chain to the driver with `len` bytes written. */
  pushUsed(head: number, len: number): void {
    if (!Number.isInteger(head) || head < 0 || head >= this.size || !this.inFlight[head]) throw new Error(`pushUsed: head ${head} is not in flight`);
    if (!Number.isInteger(len) || len < 0 || len > 0xffff_ffff) throw new Error(`pushUsed: bad length ${len}`);
    this.inFlight[head] = 0;
    this.inFlightCount--;
    this.record?.completing(head);
    const slot = 1 + 2 * (this.usedIdx & this.mask);
    this.used32[slot] = head;
    this.used32[slot + 1] = len;
    // The element is written before the index that publishes it (stores stay in order on x86).
    this.usedIdx = (this.usedIdx + 1) & 0xffff;
    this.used16[1] = this.usedIdx;
    this.record?.completed(head, this.usedIdx);
  }

  /**
   * Whether the driver wants an interrupt for what was pushed since the last
   * call: used_event with EVENT_IDX (§2.7.10), else VIRTQ_AVAIL_F_NO_INTERRUPT.
   */
  needsNotify(): boolean {
    const old = this.signalledUsed;
    const now = this.usedIdx;
    if (old === now) return false;
    this.signalledUsed = now;
    fence();
    if (this.eventIdx) {
      const usedEvent = this.avail[2 + this.size]!;
      return ((now - usedEvent - 1) & 0xffff) < ((now - old) & 0xffff);
    }
    return (this.avail[0]! & VIRTQ_AVAIL_F_NO_INTERRUPT) === 0;
  }

  /**
   * Called when the queue looks drained, before waiting for a kick: publishes
   * avail_event and re-checks, so a chain made available meanwhile is not
   * missed. Returns true when there is more to pop.
   */
  enableNotify(): boolean {
    if (this.eventIdx) this.used16[2 + 4 * this.size] = this.lastAvail;
    else this.used16[0] = 0;
    fence();
    return this.hasAvailable();
  }

  /**
   * Tells the driver it need not notify: we are looking at the ring
   * ourselves (polling). With EVENT_IDX, avail_event is put one behind what
   * we took, so no new index crosses it; without, VIRTQ_USED_F_NO_NOTIFY.
   * A hint only (the driver may notify anyway); enableNotify undoes it.
   */
  disableNotify(): void {
    if (this.eventIdx) this.used16[2 + 4 * this.size] = (this.lastAvail - 1) & 0xffff;
    else this.used16[0] = VIRTQ_USED_F_NO_NOTIFY;
  }

  private availDistance(): number {
    const idx = this.avail[1]!;
    const ahead = (idx - this.lastAvail) & 0xffff;
    if (ahead > this.size) throw new QueueError(`available index ${idx} is ${ahead} entries ahead of ${this.lastAvail} (queue size ${this.size})`);
    return ahead;
  }

  /** A ring's bytes; aligned to `align` in host memory too, for the typed-array views. */
  private ring(gpa: number, len: number, align: number, what: string): Uint8Array {
    let bytes: Uint8Array;
    try {
      bytes = this.mem.slice(gpa, len);
    } catch (e) {
      if (e instanceof GuestMemoryError) throw new QueueError(`${what}: ${e.message}`);
      throw e;
    }
    if (bytes.byteOffset % align !== 0) throw new QueueError(`${what} is misaligned in host memory`);
    return bytes;
  }

  private slice(gpa: number, len: number, i: number): Uint8Array {
    try {
      return this.mem.slice(gpa, len);
    } catch (e) {
      if (e instanceof GuestMemoryError) throw new QueueError(`descriptor ${i}: ${e.message}`);
      throw e;
    }
  }

  /** Follows the chain starting at `head` and resolves every buffer. */
  private walk(head: number): DescriptorChain {
    const readable: Uint8Array[] = [];
    const writable: Uint8Array[] = [];
    let readableBytes = 0;
    let writableBytes = 0;
    let table = this.descTable;
    let tableSize = this.size;
    let inIndirect = false;
    let idx = head;
    // A chain visits at most tableSize descriptors; more means a loop.
    let count = 0;
    for (;;) {
      if (idx >= tableSize) throw new QueueError(`next index ${idx} ≥ ${inIndirect ? 'indirect table size' : 'queue size'} ${tableSize}`);
      if (++count > tableSize) throw new QueueError(`descriptor chain from head ${head} is longer than ${tableSize} (a loop?)`);
      const w = 4 * idx;
      const lo = table[w]!;
      const hi = table[w + 1]!;
      const len = table[w + 2]!;
      const flagsNext = table[w + 3]!;
      const flags = flagsNext & 0xffff;
      if (hi >= 0x20_0000) throw new QueueError(`descriptor ${idx} address is beyond 2^53`);
      const addr = hi * 0x1_0000_0000 + lo;

      if (flags & VIRTQ_DESC_F_INDIRECT) {
        if (!this.indirect) throw new QueueError('indirect descriptor without VIRTIO_F_INDIRECT_DESC');
        if (inIndirect) throw new QueueError('nested indirect descriptor');
        if (flags & VIRTQ_DESC_F_NEXT) throw new QueueError('indirect descriptor with NEXT set');
        if (len === 0 || len % 16 !== 0 || len / 16 > this.size) throw new QueueError(`indirect table length ${len} is not a multiple of 16 in 16..${16 * this.size}`);
        let t = this.slice(addr, len, idx);
        if (t.byteOffset % 4 !== 0) t = t.slice(); // an unaligned table is read from a copy
        table = new Uint32Array(t.buffer, t.byteOffset, len / 4);
        tableSize = len / 16;
        inIndirect = true;
        idx = 0;
        count = 0;
        continue;
      }

      const bytes = this.slice(addr, len, idx);
      if (flags & VIRTQ_DESC_F_WRITE) {
        writable.push(bytes);
        writableBytes += len;
      } else {
        if (writable.length > 0) throw new QueueError('device-readable descriptor after a writable one');
        readable.push(bytes);
        readableBytes += len;
      }
      if (readableBytes + writableBytes > MAX_CHAIN_BYTES) throw new QueueError(`descriptor chain from head ${head} is longer than 4 GiB`);
      if (!(flags & VIRTQ_DESC_F_NEXT)) break;
      idx = flagsNext >>> 16;
    }
    return { head, readable, writable, readableBytes, writableBytes };
  }
}
