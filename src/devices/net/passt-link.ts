// Frames through passt's socket (a connected AF_UNIX stream): each frame is
// a 4-byte big-endian length, then the raw Ethernet frame, no vnet header
// and no offloads. Sending is zero-copy (writev of the length and the guest's
// buffers past the header) and resumes where a partial write stopped, since
// a stream may take part of a frame. Receiving reads as much as the socket
// has into a staging buffer (one system call for many small frames) and
// copies each frame after a zeroed virtio-net header into the guest's buffers.
// Waiting for bytes, the event loop reads them into a landing buffer, and
// they join the staged ones.
import type { GuestMemory } from '../guest-memory.js';
import { EAGAIN, MAP_ANONYMOUS, MAP_PRIVATE, PROT_READ, PROT_WRITE, mmap, view } from '../../sys/libc.js';
import { IovecList, readv, writev } from '../../sys/iovec.js';
import { LoopReader } from '../../sys/loop-reader.js';
import { MAX_GSO_FRAME, NET_HDR_BYTES } from './constants.js';
import { LinkDown, RX_AGAIN, RX_DROPPED, scatter, type FrameLink, type LinkEvents, type RxTarget } from './link.js';

const LEN_BYTES = 4;
/** passt's own limit is 65520 bytes of MTU; anything longer is a broken stream. */
const MAX_FRAME = MAX_GSO_FRAME;
const STAGE_BYTES = 4 * (LEN_BYTES + MAX_FRAME);
/** What is left of an abandoned frame: at most a whole one. */
const REST_BYTES = LEN_BYTES + MAX_FRAME;
const ZERO_HDR = new Uint8Array(NET_HDR_BYTES);

export class PasstLink implements FrameLink {
  private readonly iov = new IovecList();
  /** Device-owned memory with known host addresses: the staging buffer, then the outgoing length word. */
  private readonly base = Number(mmap(STAGE_BYTES + LEN_BYTES + REST_BYTES, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1));
  private readonly bytes = new Uint8Array(view(BigInt(this.base), STAGE_BYTES + LEN_BYTES + REST_BYTES));
  /** The unsent end of an abandoned frame, sent before any other. */
  private readonly restBuf = this.bytes.subarray(STAGE_BYTES + LEN_BYTES);
  private restStart = 0;
  private restEnd = 0;
  private readonly stage = this.bytes.subarray(0, STAGE_BYTES);
  private readonly stageView = new DataView(this.stage.buffer, this.stage.byteOffset, STAGE_BYTES);
  private readonly lenWord = new DataView(this.bytes.buffer, STAGE_BYTES, LEN_BYTES);
  /** Staged bytes: [start, end) of `stage`. */
  private start = 0;
  private end = 0;
  /** Bytes of the frame being sent already written (length word included). */
  private sent = 0;
  txRefused = 0;
  /**
   * Where the event loop's read lands while the link waits. Waiting starts
   * only once receive() found no whole frame staged, so the staged rest of
   * one (less than LEN_BYTES + MAX_FRAME) leaves room for all of it.
   */
  private readonly reader: LoopReader;

  constructor(
    private readonly fd: number,
    private readonly mem: GuestMemory,
    private readonly events: LinkEvents,
  ) {
    this.reader = new LoopReader(fd, new Uint8Array(LEN_BYTES + MAX_FRAME), (e) => events.down(new LinkDown(`reading from passt failed: ${e.message}`)));
  }

  waitReadable(on: boolean): void {
    if (on) this.reader.start(this.onLanded);
    else this.reader.pause();
  }

  private readonly onLanded = (n: number): void => {
    this.reader.pause();
    this.compact();
    if (this.end + n > STAGE_BYTES) {
      // Cannot happen while the link reads only when it waits (above); a bug must not overrun the stage.
      this.events.down(new LinkDown(`passt's bytes do not fit the staging buffer (${this.end} staged, ${n} read)`));
      return;
    }
    this.stage.set(this.reader.buffer.subarray(0, n), this.end);
    this.end += n;
    this.events.readable();
  };

  receive(target: RxTarget): number {
    for (;;) {
      const have = this.end - this.start;
      if (have >= LEN_BYTES) {
        const len = this.stageView.getUint32(this.start, false);
        if (len === 0 || len > MAX_FRAME) throw new LinkDown(`passt sent a frame length of ${len}: the stream is broken`);
        if (have >= LEN_BYTES + len) {
          const frame = this.stage.subarray(this.start + LEN_BYTES, this.start + LEN_BYTES + len);
          this.start += LEN_BYTES + len;
          if (len + NET_HDR_BYTES > target.capacity) return RX_DROPPED;
          scatter(target.bufs, ZERO_HDR);
          scatter(target.bufs, frame, NET_HDR_BYTES);
          return len + NET_HDR_BYTES;
        }
      }
      if (!this.fill()) return RX_AGAIN;
    }
  }

  /** Reads more of the stream; false when nothing is there now. */
  private fill(): boolean {
    this.compact();
    const iov = this.iov.clear();
    iov.push(this.base + this.end, STAGE_BYTES - this.end);
    const n = readv(this.fd, iov);
    if (n === -EAGAIN) return false;
    if (n <= 0) throw new LinkDown(n === 0 ? 'passt closed its socket' : `reading from passt failed (errno ${-n})`);
    this.end += n;
    return true;
  }

  /** Moves the staged bytes to the stage's start. */
  private compact(): void {
    if (this.start === 0) return;
    this.stage.copyWithin(0, this.start, this.end);
    this.end -= this.start;
    this.start = 0;
  }

  abandon(bufs: Uint8Array[], bytes: number): void {
    if (this.sent === 0) return;
    const len = bytes - NET_HDR_BYTES;
    // The whole frame as the stream carries it: length word, then the frame past the virtio-net header.
    const whole = new Uint8Array(LEN_BYTES + len);
    new DataView(whole.buffer).setUint32(0, len, false);
    let at = LEN_BYTES;
    let skip = NET_HDR_BYTES;
    for (const b of bufs) {
      const part = b.subarray(Math.min(skip, b.length));
      skip = Math.max(0, skip - b.length);
      whole.set(part.subarray(0, whole.length - at), at);
      at += Math.min(part.length, whole.length - at);
    }
    this.restBuf.set(whole.subarray(this.sent));
    this.restStart = 0;
    this.restEnd = whole.length - this.sent;
    this.sent = 0;
  }

  /** Sends what is left of an abandoned frame; true once it is all gone. */
  private flushRest(): boolean {
    while (this.restStart < this.restEnd) {
      const iov = this.iov.clear();
      iov.push(this.base + STAGE_BYTES + LEN_BYTES + this.restStart, this.restEnd - this.restStart);
      const n = writev(this.fd, iov);
      if (n === -EAGAIN) return false;
      if (n < 0) throw new LinkDown(`writing to passt failed (errno ${-n})`);
      this.restStart += n;
    }
    return true;
  }

  send(bufs: Uint8Array[], bytes: number): boolean {
    if (!this.flushRest()) return false;
    const len = bytes - NET_HDR_BYTES;
    if (len <= 0 || len > MAX_FRAME) {
      this.txRefused++;
      return true;
    }
    this.lenWord.setUint32(0, len, false);
    const iov = this.iov.clear();
    let skip = this.sent;
    if (skip < LEN_BYTES) iov.push(this.base + STAGE_BYTES + skip, LEN_BYTES - skip);
    skip = Math.max(0, skip - LEN_BYTES) + NET_HDR_BYTES;
    for (let i = 0; i < bufs.length; i++) {
      const b = bufs[i]!;
      if (skip >= b.length) {
        skip -= b.length;
        continue;
      }
      iov.push(this.mem.hostAddress(b) + skip, b.length - skip);
      skip = 0;
    }
    const n = writev(this.fd, iov);
    if (n === -EAGAIN) return false;
    if (n < 0) throw new LinkDown(`writing to passt failed (errno ${-n})`);
    this.sent += n;
    if (this.sent < LEN_BYTES + len) return false;
    this.sent = 0;
    return true;
  }
}
