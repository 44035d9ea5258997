// Frames through a tap device opened with IFF_VNET_HDR and a 12-byte vnet
// header (the core set it up): the tap's header is virtio-net's, so a frame
// moves with one readv or writev straight between the tap and the guest's
// buffers. A read gets one whole frame; a trailing device-owned spill buffer
// catches the part of a frame that does not fit, so it can be counted and
// dropped rather than handed to the guest cut short. Waiting for a frame,
// the event loop reads it into that spill buffer (one byte longer than any
// whole frame, so a cut one shows); receive() copies it out.
import type { GuestMemory } from '../guest-memory.js';
import { EAGAIN, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, mmap, view } from '../../sys/libc.js';
import { IOV_MAX, IovecList, readv, writev } from '../../sys/iovec.js';
import { LoopReader } from '../../sys/loop-reader.js';
import { MAX_GSO_FRAME, NET_HDR_BYTES } from './constants.js';
import { LinkDown, RX_AGAIN, RX_DROPPED, scatter, type FrameLink, type LinkEvents, type RxTarget } from './link.js';

const SPILL_BYTES = MAX_GSO_FRAME + NET_HDR_BYTES;
/** Guest buffers one receive may fill: one iovec is kept for the spill buffer. */
export const MAX_RX_BUFFERS = IOV_MAX - 1;

export class TapLink implements FrameLink {
  private readonly iov = new IovecList();
  private readonly spillAddr = mmap(SPILL_BYTES + 1, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1);
  private readonly spill = Number(this.spillAddr);
  private readonly reader: LoopReader;
  /** Bytes of a frame the event loop read into the spill buffer, for the next receive(). */
  private landed = 0;
  txRefused = 0;

  constructor(
    private readonly fd: number,
    private readonly mem: GuestMemory,
    private readonly events: LinkEvents,
  ) {
    this.reader = new LoopReader(fd, new Uint8Array(view(this.spillAddr, SPILL_BYTES + 1)), (e) => events.down(new LinkDown(`reading the tap failed: ${e.message}`)));
  }

  waitReadable(on: boolean): void {
    if (on) this.reader.start(this.onLanded);
    else this.reader.pause();
  }

  private readonly onLanded = (n: number): void => {
    this.reader.pause();
    this.landed = n;
    this.events.readable();
  };

  receive(target: RxTarget): number {
    if (this.landed > 0) {
      const n = this.landed;
      this.landed = 0;
      if (n > SPILL_BYTES || n > target.capacity) return RX_DROPPED;
      scatter(target.bufs, this.reader.buffer.subarray(0, n));
      return n;
    }
    const iov = this.iov.clear();
    pushAll(iov, this.mem, target.bufs);
    iov.push(this.spill, SPILL_BYTES); // the caller keeps target.bufs below MAX_RX_BUFFERS
    const n = readv(this.fd, iov);
    if (n === -EAGAIN) return RX_AGAIN;
    if (n <= 0) throw new LinkDown(n === 0 ? 'the tap closed' : `reading the tap failed (errno ${-n})`);
    return n > target.capacity ? RX_DROPPED : n;
  }

  abandon(): void {
    // A tap takes a frame whole or not at all: nothing is left half-sent.
  }

  send(bufs: Uint8Array[]): boolean {
    const iov = this.iov.clear();
    pushAll(iov, this.mem, bufs);
    const n = writev(this.fd, iov);
    if (n === -EAGAIN) return false;
    // EINVAL and friends: the tap refused this frame (a bad GSO header, too long); the next may be fine.
    if (n < 0 && n !== -5 && n !== -77 /* EIO, EBADFD: the tap is gone */) this.txRefused++;
    else if (n < 0) throw new LinkDown(`writing to the tap failed (errno ${-n})`);
    return true;
  }
}

/** Appends the non-empty guest buffers `bufs` to `iov`, by their host addresses (an indexed loop: see link.ts). */
function pushAll(iov: IovecList, mem: GuestMemory, bufs: Uint8Array[]): void {
  for (let i = 0; i < bufs.length; i++) {
    const b = bufs[i]!;
    if (b.length > 0) iov.push(mem.hostAddress(b), b.length);
  }
}
