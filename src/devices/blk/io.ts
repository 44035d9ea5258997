// Positioned I/O between a file and guest memory, zero-copy: asynchronous on
// libuv's thread pool (fs.read/fs.write with an fd and a position are
// pread/pwrite; the Buffer handed to the pool is a view of the guest's
// pages), and synchronous vectored calls for what the backend serves inline.
import fs from 'node:fs';
import koffi from 'koffi';
import { libcLibrary } from '../../sys/libc.js';
import type { IovecList } from '../../sys/iovec.js';

const preadv_ = libcLibrary.func('intptr_t preadv(int fd, void *iov, int count, int64_t off)');
const pwritev_ = libcLibrary.func('intptr_t pwritev(int fd, void *iov, int count, int64_t off)');

/** preadv(2) on this thread: bytes read or -errno. */
export function preadvNow(fd: number, iov: IovecList, pos: number): number {
  const n = Number(preadv_(fd, iov.raw, iov.count, pos));
  return n < 0 ? -koffi.errno() : n;
}

/** pwritev(2) on this thread: bytes written or -errno. */
export function pwritevNow(fd: number, iov: IovecList, pos: number): number {
  const n = Number(pwritev_(fd, iov.raw, iov.count, pos));
  return n < 0 ? -koffi.errno() : n;
}

/** Largest single read/write handed to the pool (Node's limit is 2 GiB - 1). */
const MAX_IO = 1 << 30;

/** fs.read or fs.write: a positioned transfer on libuv's pool, answered by callback. */
export type PositionedIo = (
  fd: number,
  buffer: Buffer,
  offset: number,
  length: number,
  position: number,
  callback: (err: NodeJS.ErrnoException | null, bytes: number) => void,
) => void;

/**
 * Moves every buffer of a scattered list to or from `fd` at consecutive file
 * positions from `pos` (`io` is fs.read or fs.write), all pieces in flight at
 * once on the pool; a short transfer goes on from where it stopped, and one
 * of no bytes (a read past the image's end) is an error. One promise for the
 * whole request, callbacks below it: the pool path of a small request costs
 * half the CPU it did as a chain of async functions (npm run bench -- blk).
 * Settles only once every piece has: when one fails, the others may still be
 * reading into (or writing from) the guest's buffers, and the request must
 * not complete (its buffers and status go back to the guest) before they stop.
 */
export function transfer(io: PositionedIo, fd: number, bufs: Uint8Array[], pos: number): Promise<void> {
  return new Promise((resolve, reject) => {
    let pending = 1; // the issuing loop's own hold, released below
    let failure: Error | null = null;
    const settle = (err: Error | null): void => {
      failure ??= err;
      if (--pending > 0) return;
      if (failure) reject(failure);
      else resolve();
    };
    const piece = (buf: Buffer, done: number, at: number): void => {
      try {
        io(fd, buf, done, Math.min(buf.length - done, MAX_IO), at + done, (err, n) => {
          if (err) settle(err);
          else if (n === 0) settle(new Error(`I/O at ${at + done} moved no bytes: past the end of the image`));
          else if (done + n < buf.length) piece(buf, done + n, at);
          else settle(null);
        });
      } catch (e) {
        settle(e as Error); // refused before it started (Node's argument checks)
      }
    };
    for (let i = 0; i < bufs.length; i++) {
      const b = bufs[i]!; // an indexed loop: under --jitless a for-of allocates an iterator result per step
      if (b.length > 0) {
        pending++;
        piece(Buffer.from(b.buffer, b.byteOffset, b.byteLength), 0, pos);
      }
      pos += b.length;
    }
    settle(null);
  });
}

export function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}
