// Vectored I/O straight between a file descriptor and host memory (guest
// buffers, by their host addresses): an iovec array kept in a typed array
// that koffi hands to the kernel as is, and readv/writev/preadv/pwritev both
// inline (returning -errno, never throwing: for hot paths on non-blocking
// fds) and on libuv's thread pool (koffi's async calls, for blocking files).
import koffi from 'koffi';
import { libcLibrary as libc } from './libc.js';
const readv_ = libc.func('intptr_t readv(int fd, void *iov, int count)');
const writev_ = libc.func('intptr_t writev(int fd, void *iov, int count)');
const preadv_ = libc.func('intptr_t preadv(int fd, void *iov, int count, int64_t off)');
const pwritev_ = libc.func('intptr_t pwritev(int fd, void *iov, int count, int64_t off)');

/** IOV_MAX on Linux: the most entries one call takes. */
export const IOV_MAX = 1024;

/** A list of (host address, length) pairs in the kernel's struct iovec layout. */
export class IovecList {
  /** Two u64 per entry, each as two u32 halves (addresses and lengths stay below 2^53). */
  private readonly words: Uint32Array;
  count = 0;
  /** Sum of the lengths. */
  bytes = 0;

  constructor(readonly capacity = IOV_MAX) {
    this.words = new Uint32Array(4 * capacity);
  }

  clear(): this {
    this.count = 0;
    this.bytes = 0;
    return this;
  }

  /** Appends one buffer; throws RangeError when full. */
  push(addr: number, len: number): void {
    if (this.count >= this.capacity) throw new RangeError(`more than ${this.capacity} buffers in one vectored call`);
    const w = 4 * this.count++;
    this.words[w] = addr >>> 0;
    this.words[w + 1] = Math.floor(addr / 0x1_0000_0000);
    this.words[w + 2] = len >>> 0;
    this.words[w + 3] = Math.floor(len / 0x1_0000_0000);
    this.bytes += len;
  }

  /** The kernel's view of the list (valid until the next push or clear). */
  get raw(): Uint32Array {
    return this.words;
  }
}

const EIO = 5;
// koffi keeps the errno of the thread that made the call, async calls included.
const result = (r: number | bigint): number => {
  const n = Number(r);
  return n < 0 ? -koffi.errno() : n;
};

/** readv; returns bytes read or -errno. */
export const readv = (fd: number, iov: IovecList): number => result(readv_(fd, iov.raw, iov.count));
/** writev; returns bytes written or -errno. */
export const writev = (fd: number, iov: IovecList): number => result(writev_(fd, iov.raw, iov.count));

type Done = (res: number) => void;
/**
 * preadv / pwritev on libuv's pool: `done` gets bytes moved or -errno. The
 * list must not change until `done` runs.
 */
export function preadvAsync(fd: number, iov: IovecList, off: number, done: Done): void {
  preadv_.async(fd, iov.raw, iov.count, off, (err: unknown, r: number | bigint) => done(err ? -EIO : result(r)));
}
export function pwritevAsync(fd: number, iov: IovecList, off: number, done: Done): void {
  pwritev_.async(fd, iov.raw, iov.count, off, (err: unknown, r: number | bigint) => done(err ? -EIO : result(r)));
}
