// virtio-9p's backend: each descriptor chain is one 9P request, the
// T-message in its device-readable buffers and room for the R-message in its
// writable ones, served by one P9Session (the guest kernel is one client).
// A Twrite's data is written to the file straight from the guest's buffers
// and an Rread's data read straight into them (session.ts, io.ts); only the
// headers and the other, small messages are copied. Requests run
// concurrently and complete in any order (the tag matches them up).
import type { Logger } from 'pino';
import type { DeviceBackend } from '../backend.js';
import { QueueError, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_EVENT_IDX, type DescriptorChain } from '../virtio/queue.js';
import { VIRTIO_9P_MOUNT_TAG, encodeConfig } from './config-space.js';
import { E, HEADER, MAX_MSIZE, RLERROR, RREAD_HEADER, T, TWRITE_HEADER } from './protocol.js';
import type { FidJournal } from './journal.js';
import { P9Session, type Exchange } from './session.js';
import { Share } from './share.js';
import { finish, reply } from './wire.js';

export interface P9Options {
  /** The mount tag the guest mounts by. */
  tag: string;
  /** Refuse every change with EROFS. */
  readOnly: boolean;
}

export const P9_MAX_QUEUE_SIZE = 256;
const VIRTIO_F_VERSION_1 = 32;
const bit = (n: number): number => 2 ** n;

/** Views of `len` bytes starting `start` bytes into the stream the buffers make. */
export function streamViews(bufs: readonly Uint8Array[], start: number, len: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  let skip = start;
  let left = len;
  for (const b of bufs) {
    if (left === 0) break;
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    const take = Math.min(b.length - skip, left);
    out.push(b.subarray(skip, skip + take));
    left -= take;
    skip = 0;
  }
  return out;
}

/** Copies `data` into the stream the buffers make, from its start. */
export function scatterInto(bufs: readonly Uint8Array[], data: Uint8Array): void {
  let at = 0;
  for (const v of streamViews(bufs, 0, data.length)) {
    v.set(data.subarray(at, at + v.length));
    at += v.length;
  }
}

/** The first `len` bytes of the stream, copied into one buffer. */
function gather(bufs: readonly Uint8Array[], len: number): Uint8Array {
  const out = new Uint8Array(len);
  let at = 0;
  for (const v of streamViews(bufs, 0, len)) {
    out.set(v, at);
    at += v.length;
  }
  return out;
}

export class P9Backend implements DeviceBackend {
  readonly kind = 'p9' as const;
  readonly deviceFeatures = bit(VIRTIO_9P_MOUNT_TAG) + bit(VIRTIO_F_INDIRECT_DESC) + bit(VIRTIO_F_RING_EVENT_IDX) + bit(VIRTIO_F_VERSION_1);
  readonly maxQueueSize = P9_MAX_QUEUE_SIZE;
  private readonly session: P9Session;

  constructor(
    rootFd: number,
    private readonly opts: P9Options,
    private readonly log: Logger,
    journal?: FidJournal,
  ) {
    this.session = new P9Session(new Share(rootFd, opts.readOnly), log, journal);
  }

  config(): Uint8Array {
    return encodeConfig(this.opts.tag);
  }
  configWrite(): void {
    // the mount tag is read-only
  }
  /**
   * A driver (re)starting the device starts a new session: every fid of the
   * last one is clunked. A process taking over from a dead one finds its
   * fids in the journal and takes them over (after a driver's reset the
   * core has cleared the journal: nothing to take).
   */
  activate(): void {
    this.session.close();
    const { kept, dropped } = this.session.takeOver();
    if (kept + dropped > 0) this.log.info({ kept, dropped }, 'took over the fids of a dead predecessor');
  }

  describe(): Record<string, unknown> {
    return { tag: this.opts.tag, readOnly: this.opts.readOnly };
  }

  stats(): Record<string, number> {
    return { ...this.session.counters, fids: this.session.fidCount, openFids: this.session.openFids };
  }

  handle(chain: DescriptorChain): Promise<number> {
    const { readable, writable } = this.check(chain);
    const head = gather(readable, Math.min(chain.readableBytes, TWRITE_HEADER));
    const size = new DataView(head.buffer).getUint32(0, true);
    const isWrite = head[4] === T.write;
    const msgLen = Math.min(size, chain.readableBytes, isWrite ? TWRITE_HEADER : MAX_MSIZE);
    const ex: Exchange = {
      message: msgLen <= head.length ? head.subarray(0, msgLen) : gather(readable, msgLen),
      writeData: (count) => (TWRITE_HEADER + count <= chain.readableBytes ? streamViews(readable, TWRITE_HEADER, count) : null),
      readSpace: (max) => streamViews(writable, RREAD_HEADER, Math.min(max, chain.writableBytes - RREAD_HEADER)),
      replyCapacity: chain.writableBytes,
    };
    return this.session.handle(ex).then((r) => {
      scatterInto(writable, r.bytes);
      return r.bytes.length + r.dataBytes;
    });
  }

  fail(chain: DescriptorChain): number {
    const { readable, writable } = this.check(chain);
    const head = gather(readable, HEADER);
    const bytes = finish(reply(RLERROR, head[5]! | (head[6]! << 8)).u32(E.IO));
    scatterInto(writable, bytes);
    return bytes.length;
  }

  private check(chain: DescriptorChain): DescriptorChain {
    if (chain.readableBytes < HEADER) throw new QueueError(`9p request of ${chain.readableBytes} bytes is shorter than a message header`);
    if (chain.writableBytes < RREAD_HEADER) throw new QueueError(`9p request leaves ${chain.writableBytes} bytes for its reply, fewer than an Rlerror`);
    return chain;
  }
}
