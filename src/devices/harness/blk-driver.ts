// A virtio-blk driver over a DriverQueue, for tests and benchmarks: builds
// requests (header, data, status byte) in harness memory and decodes replies.
import { VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES } from '../blk/constants.js';
import type { Buf, DriverQueue } from './driver-queue.js';
import type { DriverMemory } from './harness.js';

export interface BlkReply {
  status: number;
  /** Bytes the device reported writing (used length). */
  usedLen: number;
  /** Device-written data (IN, GET_ID). */
  data: Uint8Array;
}

export interface BlkRequestSpec {
  type: number;
  sector?: number;
  /** Driver→device data after the header. */
  out?: Uint8Array;
  /** Device→driver data length. */
  inLen?: number;
  /** Split data buffers into pieces of this many bytes (scatter-gather). */
  segmentBytes?: number;
  indirect?: boolean;
}

export interface PendingRequest {
  head: number;
  reply: Promise<BlkReply>;
}

export function dwzSegments(segs: { sector: number; sectors: number; unmap?: boolean; flags?: number }[]): Uint8Array {
  const out = new Uint8Array(16 * segs.length);
  const dv = new DataView(out.buffer);
  segs.forEach((s, i) => {
    dv.setBigUint64(16 * i, BigInt(s.sector), true);
    dv.setUint32(16 * i + 8, s.sectors, true);
    dv.setUint32(16 * i + 12, s.flags ?? (s.unmap ? 1 : 0), true);
  });
  return out;
}

export class BlkDriver {
  constructor(
    readonly h: DriverMemory,
    readonly q: DriverQueue,
  ) {}

  /** Queues a request (published, not kicked) and returns its head and reply. */
  add(spec: BlkRequestSpec, timeoutMs = 5000): PendingRequest {
    const header = new Uint8Array(16);
    const dv = new DataView(header.buffer);
    dv.setUint32(0, spec.type, true);
    dv.setBigUint64(8, BigInt(spec.sector ?? 0), true);
    const bufs: Buf[] = [this.h.buffer(header)];
    const pieces = (total: number): number[] => {
      const seg = spec.segmentBytes ?? total;
      const out = [];
      for (let at = 0; at < total; at += seg) out.push(Math.min(seg, total - at));
      return out;
    };
    if (spec.out) {
      let at = 0;
      for (const n of pieces(spec.out.length)) {
        bufs.push(this.h.buffer(spec.out.subarray(at, at + n)));
        at += n;
      }
    }
    const inBufs: Buf[] = [];
    for (const n of pieces(spec.inLen ?? 0)) inBufs.push(this.h.buffer(n, true));
    const status = this.h.buffer(1, true);
    this.h.mem.slice(status.addr, 1)[0] = 0xff;
    bufs.push(...inBufs, status);
    const head = this.q.add(bufs, spec.indirect ? { indirect: true } : {});
    this.q.publish();
    const reply = this.q.waitFor(head, timeoutMs).then((u) => {
      const data = new Uint8Array(spec.inLen ?? 0);
      let at = 0;
      for (const b of inBufs) {
        data.set(this.h.mem.slice(b.addr, b.len), at);
        at += b.len;
      }
      return { status: this.h.mem.slice(status.addr, 1)[0]!, usedLen: u.len, data };
    });
    return { head, reply };
  }

  /** Queues, kicks and waits for one request. */
  request(spec: BlkRequestSpec, timeoutMs = 5000): Promise<BlkReply> {
    const p = this.add(spec, timeoutMs);
    this.q.kick();
    return p.reply;
  }

  read(sector: number, len: number, extra: Partial<BlkRequestSpec> = {}): Promise<BlkReply> {
    return this.request({ ...extra, type: VIRTIO_BLK_T_IN, sector, inLen: len });
  }
  write(sector: number, data: Uint8Array, extra: Partial<BlkRequestSpec> = {}): Promise<BlkReply> {
    return this.request({ ...extra, type: VIRTIO_BLK_T_OUT, sector, out: data });
  }
  flush(): Promise<BlkReply> {
    return this.request({ type: VIRTIO_BLK_T_FLUSH });
  }
  getId(len = 20): Promise<BlkReply> {
    return this.request({ type: VIRTIO_BLK_T_GET_ID, inLen: len });
  }
  discard(segs: { sector: number; sectors: number; flags?: number }[]): Promise<BlkReply> {
    return this.request({ type: VIRTIO_BLK_T_DISCARD, out: dwzSegments(segs) });
  }
  writeZeroes(segs: { sector: number; sectors: number; unmap?: boolean }[]): Promise<BlkReply> {
    return this.request({ type: VIRTIO_BLK_T_WRITE_ZEROES, out: dwzSegments(segs) });
  }
}
