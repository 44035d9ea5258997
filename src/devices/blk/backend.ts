// The virtio-blk backend: a raw disk image on the inherited backend fd.
// Offers its features and config space, and serves IN, OUT, FLUSH, GET_ID,
// DISCARD and WRITE_ZEROES; every sector range is checked against the
// capacity. Requests run concurrently; each completes when its I/O returned.
// A read is first tried inline with preadv2(RWF_NOWAIT): when the page cache
// holds all of it (ext4, xfs, btrfs) it completes in the call, without the
// two thread hops of libuv's pool; otherwise (EAGAIN, a short read) it is done
// again on the pool, and a file that answers EOPNOTSUPP is not asked again.
// An image in memory (tmpfs, a memfd: no RWF_NOWAIT there, and no disk to
// wait for) is read inline with a plain preadv instead. Of the large reads
// taken in one event-loop turn only the first is served inline (LARGE_READ).
//
// Small writes (≤ INLINE_WRITE_MAX) are written inline too, with a plain
// synchronous pwritev on the main thread: no file system we use takes
// RWF_NOWAIT for buffered writes (ext4 and tmpfs answer EOPNOTSUPP), and a
// buffered write normally only copies into the page cache. It can block,
// though (dirty-page throttling, a journal that is full, a slow disk behind
// it), and while it blocks the event loop — the other queues, the control
// channel — waits with it. So every inline write (and every plain inline
// read) is timed: one that took longer than INLINE_SLOW_MS sends this kind
// of I/O to the pool for INLINE_HOLD_MS, doubled at each slow one in a row up
// to INLINE_HOLD_MAX_MS: on a slow disk the loop is held up by at most one
// slow write per hold, not by every write. A write that fails or is short
// inline is done again, whole, on the pool (rewriting the same bytes is harmless).
import fs from 'node:fs';
import koffi from 'koffi';
import { IovecList } from '../../sys/iovec.js';
import * as libc from '../../sys/libc.js';
import type { DeviceBackend } from '../backend.js';
import type { DescriptorChain } from '../virtio/queue.js';
import { preadvNow, pwritevNow, transfer, fdatasync } from './io.js';
import { parseRequest, type BlkRequest } from './request.js';
import * as C from './constants.js';

export interface BlkOptions {
  readOnly: boolean;
  /** Up to 20 bytes (VIRTIO_BLK_ID_BYTES), returned by GET_ID. */
  serial?: string;
}

export const BLK_MAX_QUEUE_SIZE = 256;
export const MAX_DISCARD_SECTORS = 0x40_0000; // 2 GiB per segment
export const MAX_DISCARD_SEG = 32;
export const MAX_WRITE_ZEROES_SECTORS = 0x40_0000;
export const MAX_WRITE_ZEROES_SEG = 32;
/** Discards are aligned to 4 KiB (hole punching works in pages). */
export const DISCARD_SECTOR_ALIGNMENT = 8;

/** Largest write served inline (bigger ones gain little from it and would hold the loop longer). */
export const INLINE_WRITE_MAX = 128 * 1024;
/**
 * Reads over this size copy for long (1 MiB: about 80 µs): of those taken in
 * one event-loop turn only the first is served inline, and the others go to
 * the pool, whose threads copy them on the other CPUs meanwhile. 1 MiB reads
 * at depth 32 went from 0.68-0.72 of the Node ceiling to 0.85-0.86; at
 * depth 1 (one request a turn) nothing changes. Small reads stay inline at
 * any depth: the pool's hops cost more than they copy.
 */
export const LARGE_READ = 128 * 1024;
/** An inline write or plain read slower than this sends such I/O to the pool for a while. */
export const INLINE_SLOW_MS = 5;
export const INLINE_HOLD_MS = 100;
export const INLINE_HOLD_MAX_MS = 10_000;

const bit = (n: number): number => 2 ** n;
/** statfs f_type of file systems whose files live in memory (no disk to wait for, no RWF_NOWAIT). */
const MEMORY_FS = new Set([0x01021994 /* tmpfs, memfd */, 0x858458f6 /* ramfs */, 0x958458f6 /* hugetlbfs */]);

/** Whether inline I/O of one kind is allowed now; slow calls hold it off for a while (see the header). */
export class InlineGate {
  private holdUntil = 0;
  private holdMs = INLINE_HOLD_MS;
  /** Slow inline calls seen (each started a hold). */
  slow = 0;

  open(now: number): boolean {
    return now >= this.holdUntil;
  }

  /** Records how long an inline call took (start and end from performance.now()). */
  took(start: number, end: number): void {
    if (end - start <= INLINE_SLOW_MS) {
      if (this.holdUntil !== 0 && end > this.holdUntil + this.holdMs) {
        // a fast call well after the last hold ended: start over
        this.holdUntil = 0;
        this.holdMs = INLINE_HOLD_MS;
      }
      return;
    }
    this.slow++;
    this.holdUntil = end + this.holdMs;
    this.holdMs = Math.min(this.holdMs * 2, INLINE_HOLD_MAX_MS);
  }
}

export class BlkBackend implements DeviceBackend {
  readonly kind = 'blk' as const;
  readonly deviceFeatures: number;
  readonly maxQueueSize = BLK_MAX_QUEUE_SIZE;
  /** Capacity in 512-byte sectors (the image size, rounded down). */
  readonly capacity: number;
  private readonly serial: Uint8Array;
  /** The image answers RWF_NOWAIT reads (false after its first EOPNOTSUPP). */
  private nowait = true;
  /** The image lives in memory (tmpfs, a memfd): reads are served inline with a plain preadv. */
  private readonly inMemory: boolean;
  private readonly readGate = new InlineGate();
  /** Reads over LARGE_READ served inline in this event-loop turn (readInline). */
  private largeReadsThisTurn = 0;
  private readonly writeGate = new InlineGate();
  /** The iovec list of the inline read (used within one call only). */
  private readonly iov = new IovecList(BLK_MAX_QUEUE_SIZE);
  private readonly counters = { inlineReads: 0, inlineWrites: 0, reads: 0, writes: 0, flushes: 0, discards: 0, writeZeroes: 0, getIds: 0, bytesRead: 0, bytesWritten: 0, ioErrors: 0, unsupported: 0 };

  constructor(
    private readonly fd: number,
    private readonly opts: BlkOptions,
    private readonly numQueues: number,
  ) {
    const st = fs.fstatSync(fd);
    if (!st.isFile() && !st.isBlockDevice()) throw new Error('blk backend fd is not a file or block device');
    this.capacity = Math.floor(st.size / C.SECTOR_SIZE);
    // Asked once, before the seccomp policy is installed (it forbids fstatfs).
    const statfs = new Uint8Array(120);
    libc.fstatfs(fd, statfs);
    this.inMemory = st.isFile() && MEMORY_FS.has(new DataView(statfs.buffer).getUint32(0, true));
    if (this.inMemory) this.nowait = false;
    this.serial = new Uint8Array(C.VIRTIO_BLK_ID_BYTES);
    this.serial.set(Buffer.from(opts.serial ?? '').subarray(0, C.VIRTIO_BLK_ID_BYTES));
    this.deviceFeatures =
      bit(C.VIRTIO_BLK_F_SEG_MAX) + bit(C.VIRTIO_BLK_F_BLK_SIZE) + bit(C.VIRTIO_BLK_F_FLUSH) +
      bit(C.VIRTIO_BLK_F_DISCARD) + bit(C.VIRTIO_BLK_F_WRITE_ZEROES) +
      (opts.readOnly ? bit(C.VIRTIO_BLK_F_RO) : 0) + (numQueues > 1 ? bit(C.VIRTIO_BLK_F_MQ) : 0) +
      bit(C.VIRTIO_F_INDIRECT_DESC) + bit(C.VIRTIO_F_RING_EVENT_IDX) + bit(C.VIRTIO_F_VERSION_1);
  }

  config(): Uint8Array {
    const cfg = new Uint8Array(C.CONFIG.size);
    const dv = new DataView(cfg.buffer);
    dv.setBigUint64(C.CONFIG.capacity, BigInt(this.capacity), true);
    dv.setUint32(C.CONFIG.segMax, this.maxQueueSize - 2, true);
    dv.setUint32(C.CONFIG.blkSize, C.SECTOR_SIZE, true);
    dv.setUint16(C.CONFIG.numQueues, this.numQueues, true);
    dv.setUint32(C.CONFIG.maxDiscardSectors, MAX_DISCARD_SECTORS, true);
    dv.setUint32(C.CONFIG.maxDiscardSeg, MAX_DISCARD_SEG, true);
    dv.setUint32(C.CONFIG.discardSectorAlignment, DISCARD_SECTOR_ALIGNMENT, true);
    dv.setUint32(C.CONFIG.maxWriteZeroesSectors, MAX_WRITE_ZEROES_SECTORS, true);
    dv.setUint32(C.CONFIG.maxWriteZeroesSeg, MAX_WRITE_ZEROES_SEG, true);
    dv.setUint8(C.CONFIG.writeZeroesMayUnmap, 1);
    return cfg;
  }

  configWrite(): void {
    // Nothing in our config space is writable (no VIRTIO_BLK_F_CONFIG_WCE).
  }

  activate(): void {}

  describe(): Record<string, unknown> {
    return { capacity: this.capacity, readOnly: this.opts.readOnly };
  }

  stats(): Record<string, number> {
    return { ...this.counters, slowInlineReads: this.readGate.slow, slowInlineWrites: this.writeGate.slow, capacitySectors: this.capacity };
  }

  handle(chain: DescriptorChain): number | Promise<number> {
    const req = parseRequest(chain); // throws QueueError on a malformed chain
    if (req.type === C.VIRTIO_BLK_T_IN) {
      if (req.writeBytes > 0 && (this.nowait || this.inMemory) && this.inRange(req.sector, req.writeBytes) && this.readInline(req)) {
        return this.finish(req, C.VIRTIO_BLK_S_OK, req.writeBytes);
      }
      return this.transferOnPool(req);
    }
    if (req.type === C.VIRTIO_BLK_T_OUT) {
      if (req.readBytes > 0 && req.readBytes <= INLINE_WRITE_MAX && !this.opts.readOnly && this.inRange(req.sector, req.readBytes) && this.writeInline(req)) {
        return this.finish(req, C.VIRTIO_BLK_S_OK);
      }
      return this.transferOnPool(req);
    }
    return this.serve(req).catch(() => this.finish(req, C.VIRTIO_BLK_S_IOERR));
  }

  /** Sets the request's status; returns the bytes written to its writable buffers (data, then the status byte). */
  private finish(req: BlkRequest, status: number, dataBytes = 0): number {
    if (status === C.VIRTIO_BLK_S_IOERR) this.counters.ioErrors++;
    if (status === C.VIRTIO_BLK_S_UNSUPP) this.counters.unsupported++;
    req.status[0] = status;
    return dataBytes + 1;
  }

  /** A read or write done on libuv's pool, every buffer at once (io.ts, transfer). */
  private transferOnPool(req: BlkRequest): number | Promise<number> {
    const read = req.type === C.VIRTIO_BLK_T_IN;
    const bytes = read ? req.writeBytes : req.readBytes;
    if ((!read && this.opts.readOnly) || !this.inRange(req.sector, bytes)) return this.finish(req, C.VIRTIO_BLK_S_IOERR);
    return transfer(read ? fs.read : fs.write, this.fd, read ? req.writeData : req.readData, req.sector * C.SECTOR_SIZE).then(
      () => {
        if (read) {
          this.counters.reads++;
          this.counters.bytesRead += bytes;
          return this.finish(req, C.VIRTIO_BLK_S_OK, bytes);
        }
        this.counters.writes++;
        this.counters.bytesWritten += bytes;
        return this.finish(req, C.VIRTIO_BLK_S_OK);
      },
      () => this.finish(req, C.VIRTIO_BLK_S_IOERR),
    );
  }

  /** The request's buffers as the inline iovec list; null when there are more than it holds. */
  private iovecs(bufs: Uint8Array[]): IovecList | null {
    if (bufs.length > this.iov.capacity) return null;
    const iov = this.iov.clear();
    for (let i = 0; i < bufs.length; i++) {
      const v = bufs[i]!; // an indexed loop: under --jitless a for-of allocates an iterator result per step
      if (v.length > 0) iov.push(Number(koffi.address(v)), v.length);
    }
    return iov;
  }

  /**
   * Reads the whole request inline: from the page cache without waiting
   * (RWF_NOWAIT), or from an image in memory with a timed plain preadv;
   * false when that cannot be done (the pool does it).
   */
  private readInline(req: BlkRequest): boolean {
    if (req.writeBytes > LARGE_READ) {
      // the turn's first large read is copied here, the others on the pool meanwhile
      if (this.largeReadsThisTurn++ > 0) return false;
      queueMicrotask(() => (this.largeReadsThisTurn = 0)); // once the turn's requests are taken
    }
    const iov = this.iovecs(req.writeData);
    if (!iov) return false;
    const pos = req.sector * C.SECTOR_SIZE;
    let n: number;
    if (this.nowait) {
      n = libc.preadv2(this.fd, iov.raw, iov.count, pos, libc.RWF_NOWAIT);
      if (n === -libc.EOPNOTSUPP) this.nowait = false;
    } else {
      const t0 = performance.now();
      if (!this.readGate.open(t0)) return false;
      n = preadvNow(this.fd, iov, pos);
      this.readGate.took(t0, performance.now());
    }
    if (n !== req.writeBytes) return false;
    this.counters.inlineReads++;
    this.counters.reads++;
    this.counters.bytesRead += n;
    return true;
  }

  /** Writes the whole request inline with a timed pwritev (see the header); false when the pool must do it. */
  private writeInline(req: BlkRequest): boolean {
    const t0 = performance.now();
    if (!this.writeGate.open(t0)) return false;
    const iov = this.iovecs(req.readData);
    if (!iov) return false;
    const n = pwritevNow(this.fd, iov, req.sector * C.SECTOR_SIZE);
    this.writeGate.took(t0, performance.now());
    if (n !== req.readBytes) return false;
    this.counters.inlineWrites++;
    this.counters.writes++;
    this.counters.bytesWritten += n;
    return true;
  }

  fail(chain: DescriptorChain): number {
    parseRequest(chain).status[0] = C.VIRTIO_BLK_S_IOERR;
    this.counters.ioErrors++;
    return 1;
  }

  /** Runs a request other than a read or write; returns the bytes written to the writable buffers (status included). */
  private async serve(req: BlkRequest): Promise<number> {
    switch (req.type) {
      case C.VIRTIO_BLK_T_FLUSH:
        if (!this.opts.readOnly) await fdatasync(this.fd);
        this.counters.flushes++;
        return this.finish(req, C.VIRTIO_BLK_S_OK);
      case C.VIRTIO_BLK_T_GET_ID: {
        let n = 0;
        for (const b of req.writeData) {
          if (n >= C.VIRTIO_BLK_ID_BYTES) break;
          const k = Math.min(b.length, C.VIRTIO_BLK_ID_BYTES - n);
          b.set(this.serial.subarray(n, n + k));
          n += k;
        }
        this.counters.getIds++;
        return this.finish(req, C.VIRTIO_BLK_S_OK, n);
      }
      case C.VIRTIO_BLK_T_DISCARD:
      case C.VIRTIO_BLK_T_WRITE_ZEROES:
        return this.finish(req, await this.discardOrZero(req));
      default:
        return this.finish(req, C.VIRTIO_BLK_S_UNSUPP);
    }
  }

  /** True when `bytes` at `sector` is whole sectors inside the disk. */
  private inRange(sector: number, bytes: number): boolean {
    if (bytes % C.SECTOR_SIZE !== 0) return false;
    return sector <= this.capacity && bytes / C.SECTOR_SIZE <= this.capacity - sector;
  }

  private async discardOrZero(req: BlkRequest): Promise<number> {
    const discard = req.type === C.VIRTIO_BLK_T_DISCARD;
    const maxSeg = discard ? MAX_DISCARD_SEG : MAX_WRITE_ZEROES_SEG;
    const maxSectors = discard ? MAX_DISCARD_SECTORS : MAX_WRITE_ZEROES_SECTORS;
    if (req.readBytes === 0 || req.readBytes % C.DWZ_SEGMENT_BYTES !== 0) return C.VIRTIO_BLK_S_IOERR;
    const count = req.readBytes / C.DWZ_SEGMENT_BYTES;
    if (count > maxSeg) return C.VIRTIO_BLK_S_IOERR;
    // Segments may span buffers: copy them out (at most 32 × 16 bytes).
    const segs: Uint8Array = new Uint8Array(req.readBytes);
    let at = 0;
    for (const b of req.readData) {
      segs.set(b, at);
      at += b.length;
    }
    const dv = new DataView(segs.buffer);
    const ranges: { sector: number; sectors: number; unmap: boolean }[] = [];
    for (let i = 0; i < count; i++) {
      const sector = dv.getUint32(16 * i + 4, true) * 0x1_0000_0000 + dv.getUint32(16 * i, true);
      const sectors = dv.getUint32(16 * i + 8, true);
      const flags = dv.getUint32(16 * i + 12, true);
      // Unknown flags, and unmap on a discard, are unsupported (virtio 1.2 §5.2.6.2).
      if (flags & ~C.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP || (discard && flags !== 0)) return C.VIRTIO_BLK_S_UNSUPP;
      if (sectors > maxSectors || !this.inRange(sector, sectors * C.SECTOR_SIZE)) return C.VIRTIO_BLK_S_IOERR;
      ranges.push({ sector, sectors, unmap: (flags & C.VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) !== 0 });
    }
    if (this.opts.readOnly) return C.VIRTIO_BLK_S_IOERR;
    for (const r of ranges) {
      const off = r.sector * C.SECTOR_SIZE;
      const len = r.sectors * C.SECTOR_SIZE;
      if (len === 0) continue;
      if (discard) {
        // A discard is a hint: a file system that cannot punch holes still succeeds.
        try {
          libc.fallocate(this.fd, libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE, off, len);
        } catch {
          /* ignored */
        }
        this.counters.discards++;
      } else {
        await this.writeZeroes(off, len, r.unmap);
        this.counters.writeZeroes++;
      }
    }
    return C.VIRTIO_BLK_S_OK;
  }

  // fallocate runs synchronously (a koffi call on the event loop): it changes
  // extents only, no data moves, so it returns quickly.
  private async writeZeroes(off: number, len: number, unmap: boolean): Promise<void> {
    const modes = unmap
      ? [libc.FALLOC_FL_PUNCH_HOLE | libc.FALLOC_FL_KEEP_SIZE, libc.FALLOC_FL_ZERO_RANGE | libc.FALLOC_FL_KEEP_SIZE]
      : [libc.FALLOC_FL_ZERO_RANGE | libc.FALLOC_FL_KEEP_SIZE];
    for (const mode of modes) {
      try {
        libc.fallocate(this.fd, mode, off, len);
        return;
      } catch {
        // not supported here: try the next way
      }
    }
    const zeros = new Uint8Array(Math.min(len, 1 << 20));
    for (let done = 0; done < len; done += zeros.length) {
      await transfer(fs.write, this.fd, [zeros.subarray(0, Math.min(zeros.length, len - done))], off + done);
    }
  }
}
