// Reads and writes of an open file straight to and from the buffers a
// transport hands over (the guest's own descriptor buffers, or a socket's
// receive buffer): their host addresses go into one iovec list, and
// preadv/pwritev run on libuv's pool, so a request never copies its data and
// many run at once. A read first tries preadv2(RWF_NOWAIT) inline: when the
// page cache holds all of it (ext4, xfs, btrfs; tmpfs always says EAGAIN)
// it is answered without the two thread hops of the pool.
import koffi from 'koffi';
import { IovecList, preadvAsync, pwritevAsync } from '../../sys/iovec.js';
import { RWF_NOWAIT, preadv2 } from '../../sys/libc.js';

/**
 * The iovec lists of calls running on the pool. koffi does not keep a typed
 * array alive during an asynchronous call: without this, a collection could
 * free a list the kernel is about to read (EFAULT, or worse, another
 * buffer's addresses).
 */
const running = new Set<IovecList>();

function iovecOf(views: Uint8Array[]): IovecList {
  const iov = new IovecList(Math.max(1, views.length));
  for (const v of views) if (v.length > 0) iov.push(Number(koffi.address(v)), v.length);
  return iov;
}

/** preadv into `views` at `offset`; resolves to bytes read or -errno. */
export function readInto(fd: number, views: Uint8Array[], offset: number): Promise<number> {
  const iov = iovecOf(views);
  if (iov.bytes === 0) return Promise.resolve(0);
  const inline = preadv2(fd, iov.raw, iov.count, offset, RWF_NOWAIT);
  if (inline === iov.bytes) return Promise.resolve(inline); // a partial or refused one is done again, whole, on the pool
  running.add(iov);
  return new Promise((resolve) => preadvAsync(fd, iov, offset, (n) => resolve(done(iov, n))));
}

/** pwritev from `views` at `offset`; resolves to bytes written or -errno. */
export function writeFrom(fd: number, views: Uint8Array[], offset: number): Promise<number> {
  const iov = iovecOf(views);
  if (iov.bytes === 0) return Promise.resolve(0);
  running.add(iov);
  return new Promise((resolve) => pwritevAsync(fd, iov, offset, (n) => resolve(done(iov, n))));
}

function done(iov: IovecList, n: number): number {
  running.delete(iov);
  return n;
}
