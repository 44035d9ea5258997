// How frames cross between the guest's buffers and the backend fd: a
// FrameLink moves one frame at a time, on a non-blocking fd, and never
// blocks. Two kinds: tap (tap-link.ts) and passt's socket (passt-link.ts).
// Both see guest buffers as zero-copy views with host addresses
// (GuestMemory.hostAddress), for readv/writev straight to and from them.
// Waiting for frames happens on the event loop (sys/loop-reader.ts): the
// read that ends a wait lands in a buffer of the link's own, and the next
// receive() hands those bytes over before it reads the fd itself.
// Loops over a frame's buffers are indexed: under --jitless a for-of
// allocates an iterator result per step, and these run per frame.

/** Where a received frame goes: the buffers of the receive chains taken so far, in order. */
export interface RxTarget {
  bufs: Uint8Array[];
  /** Sum of the buffers' lengths. */
  capacity: number;
}

/** receive(): nothing to read now (waitReadable). */
export const RX_AGAIN = 0;
/** receive(): a frame came that does not fit the target; it was dropped. */
export const RX_DROPPED = -1;

/** What a link tells its owner. */
export interface LinkEvents {
  /** Waiting (waitReadable) is over: the next receive() has something. Waiting stops until asked again. */
  readable(): void;
  /** The backend hung up or failed while the link waited. */
  down(e: LinkDown): void;
}

export interface FrameLink {
  /** Waits for the backend fd to be readable (true), or stops waiting (false); see LinkEvents.readable. */
  waitReadable(on: boolean): void;
  /**
   * Places the next frame, virtio-net header first (NET_HDR_BYTES; its
   * num_buffers is the caller's), in `target`. Returns the bytes placed,
   * RX_AGAIN or RX_DROPPED. Throws LinkDown when the backend is gone.
   */
  receive(target: RxTarget): number;
  /**
   * Sends the frame in a transmit chain's buffers (virtio-net header
   * first). Returns true once all of it is with the backend (or it was
   * refused and counted), false when the backend cannot take more now
   * (call again on POLLOUT with the same chain). Throws LinkDown.
   */
  send(bufs: Uint8Array[], bytes: number): boolean;
  /**
   * The chain `send` last returned false for is taken back (a reset): the
   * link keeps whatever of its frame the backend has not taken yet, so a
   * stream backend never sees half a frame, and sends it before the next.
   */
  abandon(bufs: Uint8Array[], bytes: number): void;
  /** Frames refused by the backend on send (malformed, too large). */
  readonly txRefused: number;
}

/** The backend hung up or failed: the link is down for good. */
export class LinkDown extends Error {
  override name = 'LinkDown';
}

/** Copies `src` into the concatenation of `bufs`, from byte `at` of it on, as far as they reach. */
export function scatter(bufs: Uint8Array[], src: Uint8Array, at = 0): void {
  let from = 0;
  for (let i = 0; i < bufs.length; i++) {
    const b = bufs[i]!;
    if (at >= b.length) {
      at -= b.length;
      continue;
    }
    const n = Math.min(b.length - at, src.length - from);
    b.set(src.subarray(from, from + n), at);
    from += n;
    at = 0;
    if (from === src.length) return;
  }
}

/** Writes a little-endian u16 at `offset` of a frame scattered over `bufs`. */
export function setU16(bufs: Uint8Array[], offset: number, value: number): void {
  for (let i = 0, at = 0; i < bufs.length && at < offset + 2; at += bufs[i++]!.length) {
    const b = bufs[i]!;
    if (offset - at >= 0 && offset - at < b.length) b[offset - at] = value & 0xff;
    if (offset + 1 - at >= 0 && offset + 1 - at < b.length) b[offset + 1 - at] = value >> 8;
  }
}
