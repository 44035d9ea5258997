// Parsing of one virtio-blk request out of a descriptor chain (no I/O): the
// 16-byte header (read in place when the first buffer holds it, as drivers
// lay it out; copied out when it spans buffers), the data buffers, and the status
// byte, which is the last byte of the last writable buffer. A chain without
// a header or without a writable byte for the status cannot be answered and
// is malformed (QueueError).
import { QueueError, type DescriptorChain } from '../virtio/queue.js';
import { REQUEST_HEADER_BYTES } from './constants.js';

export interface BlkRequest {
  type: number;
  /** Start sector; may exceed 2^53 (then it is only ever compared, and out of range). */
  sector: number;
  /** Driver→device data after the header (OUT, DISCARD, WRITE_ZEROES). */
  readData: Uint8Array[];
  readBytes: number;
  /** Device→driver data before the status byte (IN, GET_ID). */
  writeData: Uint8Array[];
  writeBytes: number;
  /** The one status byte. */
  status: Uint8Array;
}

/** Copies the first `len` bytes of a list of buffers (the request header may span several). */
export function gather(bufs: Uint8Array[], len: number): Uint8Array {
  const out = new Uint8Array(len);
  let got = 0;
  // Indexed loops here: they run per request, and under --jitless a for-of allocates an iterator result per step.
  for (let i = 0; i < bufs.length; i++) {
    const b = bufs[i]!;
    if (got >= len) break;
    const n = Math.min(b.length, len - got);
    out.set(b.subarray(0, n), got);
    got += n;
  }
  if (got < len) throw new QueueError(`request shorter than ${len} bytes`);
  return out;
}

/** The buffers of `bufs` after its first `skip` bytes (views, no copy). */
export function skipBytes(bufs: Uint8Array[], skip: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let i = 0; i < bufs.length; i++) {
    const b = bufs[i]!;
    if (skip >= b.length) {
      skip -= b.length;
      continue;
    }
    out.push(skip > 0 ? b.subarray(skip) : b);
    skip = 0;
  }
  return out;
}

/** The little-endian u32 at `at`. */
function u32(b: Uint8Array, at: number): number {
  return (b[at]! | (b[at + 1]! << 8) | (b[at + 2]! << 16) | (b[at + 3]! << 24)) >>> 0;
}

export function parseRequest(chain: DescriptorChain): BlkRequest {
  if (chain.readableBytes < REQUEST_HEADER_BYTES) throw new QueueError(`blk request header is ${chain.readableBytes} bytes, not ${REQUEST_HEADER_BYTES}`);
  // The status byte: the last byte of the last non-empty writable buffer.
  let last = chain.writable.length - 1;
  while (last >= 0 && chain.writable[last]!.length === 0) last--;
  if (last < 0) throw new QueueError('blk request has no writable byte for its status');
  const lastBuf = chain.writable[last]!;
  const status = lastBuf.subarray(lastBuf.length - 1);
  const writeData = chain.writable.slice(0, last);
  if (lastBuf.length > 1) writeData.push(lastBuf.subarray(0, lastBuf.length - 1));
  const first = chain.readable[0]!;
  const header = first.length >= REQUEST_HEADER_BYTES ? first : gather(chain.readable, REQUEST_HEADER_BYTES);
  return {
    type: u32(header, 0),
    sector: u32(header, 12) * 0x1_0000_0000 + u32(header, 8),
    readData: skipBytes(chain.readable, REQUEST_HEADER_BYTES),
    readBytes: chain.readableBytes - REQUEST_HEADER_BYTES,
    writeData,
    writeBytes: chain.writableBytes - 1,
    status,
  };
}
