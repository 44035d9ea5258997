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

function asBuffer(view: Uint8Array): Buffer {
  return Buffer.from(view.buffer, view.byteOffset, view.byteLength);
}

function readAt(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fs.read(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))));
}

function writeAt(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => fs.write(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n))));
}

/** Fills `view` from `fd` at `pos`; a read that reaches end of file is an error. */
export async function preadFull(fd: number, view: Uint8Array, pos: number): Promise<void> {
  const buf = asBuffer(view);
  let done = 0;
  while (done < buf.length) {
    const n = await readAt(fd, buf, done, Math.min(buf.length - done, MAX_IO), pos + done);
    if (n === 0) throw new Error('short read: end of image');
    done += n;
  }
}

/** Writes all of `view` to `fd` at `pos`. */
export async function pwriteFull(fd: number, view: Uint8Array, pos: number): Promise<void> {
  const buf = asBuffer(view);
  let done = 0;
  while (done < buf.length) {
    const n = await writeAt(fd, buf, done, Math.min(buf.length - done, MAX_IO), pos + done);
    if (n === 0) throw new Error('short write');
    done += n;
  }
}

/**
 * Runs `op` on consecutive pieces of a scattered buffer list starting at file
 * position `pos`, all in flight at once. Settles only once every piece has:
 * when one fails, the others may still be reading into (or writing from) the
 * guest's buffers, and the request must not complete — handing the buffers
 * back to the guest, or reporting reset-done — before they stop.
 */
export async function scatter(bufs: Uint8Array[], pos: number, op: (view: Uint8Array, pos: number) => Promise<void>): Promise<void> {
  const jobs: Promise<void>[] = [];
  for (const b of bufs) {
    if (b.length > 0) jobs.push(op(b, pos));
    pos += b.length;
  }
  const failed = (await Promise.allSettled(jobs)).find((r) => r.status === 'rejected');
  if (failed) throw failed.reason;
}

export function fdatasync(fd: number): Promise<void> {
  return new Promise((resolve, reject) => fs.fdatasync(fd, (err) => (err ? reject(err) : resolve())));
}
