// The virtio-blk backend: a raw disk image on the inherited backend fd.
// Offers its features and config space, and serves IN, OUT, FLUSH, GET_ID,
// DISCARD and WRITE_ZEROES; every sector range is checked against the
// capacity. Requests run concurrently; each completes when its I/O returned.
// A read is first tried inline with preadv2(RWF_NOWAIT): when the page cache
// holds all of it (ext4, xfs, btrfs) it completes in the call, without the
// two thread hops of libuv's pool; otherwise (EAGAIN, a short read) it is done
// again on the pool, and a file that answers EOPNOTSUPP (tmpfs) is not asked again.
import fs from 'node:fs';
import koffi from 'koffi';
import { IovecList } from '../../sys/iovec.js';
import * as libc from '../../sys/libc.js';
import type { DeviceBackend } from '../backend.js';
import type { DescriptorChain } from '../virtio/queue.js';
import { preadFull, pwriteFull, scatter, fdatasync } from './io.js';
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

const bit = (n: number): number => 2 ** n;

export class BlkBackend implements DeviceBackend {
  readonly kind = 'blk' as const;
  readonly deviceFeatures: number;
  readonly maxQueueSize = BLK_MAX_QUEUE_SIZE;
  /** Capacity in 512-byte sectors (the image size, rounded down). */
  readonly capacity: number;
  private readonly serial: Uint8Array;
  /** The image answers RWF_NOWAIT reads (false after its first EOPNOTSUPP). */
  private nowait = true;
  /** The iovec list of the inline read (used within one call only). */
  private readonly iov = new IovecList(BLK_MAX_QUEUE_SIZE);
  private readonly counters = { inlineReads: 0, reads: 0, writes: 0, flushes: 0, discards: 0, writeZeroes: 0, getIds: 0, bytesRead: 0, bytesWritten: 0, ioErrors: 0, unsupported: 0 };

  constructor(
    private readonly fd: number,
    private readonly opts: BlkOptions,
    private readonly numQueues: number,
  ) {
    const st = fs.fstatSync(fd);
    if (!st.isFile() && !st.isBlockDevice()) throw new Error('blk backend fd is not a file or block device');
    this.capacity = Math.floor(st.size / C.SECTOR_SIZE);
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
    return { ...this.counters, capacitySectors: this.capacity };
  }

  handle(chain: DescriptorChain): number | Promise<number> {
    const req = parseRequest(chain); // throws QueueError on a malformed chain
    if (req.type === C.VIRTIO_BLK_T_IN && this.nowait && req.writeBytes > 0 && this.inRange(req.sector, req.writeBytes) && this.readInline(req)) {
      req.status[0] = C.VIRTIO_BLK_S_OK;
      return req.writeBytes + 1;
    }
    return this.serve(req).then(
      (written) => written,
      () => {
        this.counters.ioErrors++;
        req.status[0] = C.VIRTIO_BLK_S_IOERR;
        return 1;
      },
    );
  }

  /** Reads the whole request from the page cache without waiting; false when that cannot be done. */
  private readInline(req: BlkRequest): boolean {
    const iov = this.iov.clear();
    for (const v of req.writeData) if (v.length > 0) iov.push(Number(koffi.address(v)), v.length);
    const n = libc.preadv2(this.fd, iov.raw, iov.count, req.sector * C.SECTOR_SIZE, libc.RWF_NOWAIT);
    if (n !== req.writeBytes) {
      if (n === -libc.EOPNOTSUPP) this.nowait = false;
      return false;
    }
    this.counters.inlineReads++;
    this.counters.reads++;
    this.counters.bytesRead += n;
    return true;
  }

  fail(chain: DescriptorChain): number {
    parseRequest(chain).status[0] = C.VIRTIO_BLK_S_IOERR;
    this.counters.ioErrors++;
    return 1;
  }

  /** Runs the request; returns the bytes written to the writable buffers (status included). */
  private async serve(req: BlkRequest): Promise<number> {
    const finish = (status: number, dataBytes = 0): number => {
      if (status === C.VIRTIO_BLK_S_IOERR) this.counters.ioErrors++;
      if (status === C.VIRTIO_BLK_S_UNSUPP) this.counters.unsupported++;
      req.status[0] = status;
      return dataBytes + 1;
    };
    switch (req.type) {
      case C.VIRTIO_BLK_T_IN: {
        if (!this.inRange(req.sector, req.writeBytes)) return finish(C.VIRTIO_BLK_S_IOERR);
        await scatter(req.writeData, req.sector * C.SECTOR_SIZE, (v, pos) => preadFull(this.fd, v, pos));
        this.counters.reads++;
        this.counters.bytesRead += req.writeBytes;
        return finish(C.VIRTIO_BLK_S_OK, req.writeBytes);
      }
      case C.VIRTIO_BLK_T_OUT: {
        if (this.opts.readOnly || !this.inRange(req.sector, req.readBytes)) return finish(C.VIRTIO_BLK_S_IOERR);
        await scatter(req.readData, req.sector * C.SECTOR_SIZE, (v, pos) => pwriteFull(this.fd, v, pos));
        this.counters.writes++;
        this.counters.bytesWritten += req.readBytes;
        return finish(C.VIRTIO_BLK_S_OK);
      }
      case C.VIRTIO_BLK_T_FLUSH:
        if (!this.opts.readOnly) await fdatasync(this.fd);
        this.counters.flushes++;
        return finish(C.VIRTIO_BLK_S_OK);
      case C.VIRTIO_BLK_T_GET_ID: {
        let n = 0;
        for (const b of req.writeData) {
          if (n >= C.VIRTIO_BLK_ID_BYTES) break;
          const k = Math.min(b.length, C.VIRTIO_BLK_ID_BYTES - n);
          b.set(this.serial.subarray(n, n + k));
          n += k;
        }
        this.counters.getIds++;
        return finish(C.VIRTIO_BLK_S_OK, n);
      }
      case C.VIRTIO_BLK_T_DISCARD:
      case C.VIRTIO_BLK_T_WRITE_ZEROES:
        return finish(await this.discardOrZero(req));
      default:
        return finish(C.VIRTIO_BLK_S_UNSUPP);
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
      await pwriteFull(this.fd, zeros.subarray(0, Math.min(zeros.length, len - done)), off + done);
    }
  }
}
