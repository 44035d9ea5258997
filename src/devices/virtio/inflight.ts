// The in-flight record of one split virtqueue, in memory the device's
// supervisor owns (vhost-user's INFLIGHT_SHMFD layout, so a frontend such as
// QEMU keeps it across a backend's death): which chains the device has taken
// and not completed, in the order it took them. A device that replaces a
// dead one reads it to take those chains again before any new one, so no
// request is lost and none completes twice.
//
// Layout (little-endian): a 16-byte header { u64 features, u16 version,
// u16 desc_num, u16 last_batch_head, u16 used_idx } then desc_num entries of
// 16 bytes { u8 inflight, u8 padding[5], u16 next, u64 counter }.
// Completion is recorded in two steps around publishing the used element
// (last_batch_head first, the inflight flag and used_idx after), so a death
// between them is recognised: used_idx then differs from the ring's.

export const INFLIGHT_VERSION = 1;
const HEADER = 16;
const ENTRY = 16;
/** Each queue's region is aligned to this in the shared file. */
export const INFLIGHT_ALIGN = 64;

/** Bytes of one queue's region for queues of up to `queueSize` entries. */
export function inflightQueueBytes(queueSize: number): number {
  return Math.ceil((HEADER + ENTRY * queueSize) / INFLIGHT_ALIGN) * INFLIGHT_ALIGN;
}

export class InflightRegion {
  private counter = 0n;

  constructor(private readonly v: DataView) {}

  get descNum(): number {
    return this.v.getUint16(10, true);
  }

  /** Whether a device already recorded into this region (else it is fresh). */
  get initialized(): boolean {
    return this.v.getUint16(8, true) === INFLIGHT_VERSION;
  }

  /** Starts a fresh record for a queue whose used index is `usedIdx`. */
  init(descNum: number, usedIdx: number): void {
    new Uint8Array(this.v.buffer, this.v.byteOffset, HEADER + ENTRY * descNum).fill(0);
    this.v.setUint16(8, INFLIGHT_VERSION, true);
    this.v.setUint16(10, descNum, true);
    this.v.setUint16(14, usedIdx, true);
    this.counter = 0n;
  }

  /**
   * Reconciles the record with the ring's used index after a death and
   * returns the heads to take again, oldest first. Throws on a record that
   * cannot be right (a head out of range); the caller treats it as malformed.
   */
  recover(ringUsedIdx: number, ringSize: number): number[] {
    const n = this.descNum;
    if (this.v.getUint16(14, true) !== ringUsedIdx) {
      // Died after publishing a used element, before clearing its flag.
      const last = this.v.getUint16(12, true);
      if (last < n) this.v.setUint8(HEADER + ENTRY * last, 0);
      this.v.setUint16(14, ringUsedIdx, true);
    }
    const heads: { head: number; counter: bigint }[] = [];
    for (let i = 0; i < n; i++) {
      if (this.v.getUint8(HEADER + ENTRY * i) !== 1) continue;
      if (i >= ringSize) throw new RangeError(`in-flight head ${i} is outside the ring of ${ringSize}`);
      heads.push({ head: i, counter: this.v.getBigUint64(HEADER + ENTRY * i + 8, true) });
    }
    heads.sort((a, b) => (a.counter < b.counter ? -1 : a.counter > b.counter ? 1 : 0));
    this.counter = heads.reduce((m, h) => (h.counter > m ? h.counter : m), 0n);
    return heads.map((h) => h.head);
  }

  /** The device took chain `head`. */
  taken(head: number): void {
    const at = HEADER + ENTRY * head;
    this.v.setBigUint64(at + 8, ++this.counter, true);
    this.v.setUint8(at, 1);
  }

  /** Before publishing `head` in the used ring. */
  completing(head: number): void {
    this.v.setUint16(12, head, true);
  }

  /** After publishing it, with the ring's new used index. */
  completed(head: number, usedIdx: number): void {
    this.v.setUint8(HEADER + ENTRY * head, 0);
    this.v.setUint16(14, usedIdx, true);
  }
}
