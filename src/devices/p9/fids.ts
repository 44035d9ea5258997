// One client's fids: what each names (a path below the share's root, its
// qid), and, once opened, the host fd it holds. Bounded: MAX_FIDS fids and
// MAX_OPEN_FIDS open ones per client, the next gets EMFILE. An open file is
// reference-counted, so that a clunk while a read or write is still running
// on libuv's pool closes the fd only once that I/O is done: the fd number
// cannot be reused under a request in flight.
import * as libc from '../../sys/libc.js';
import { E, MAX_FIDS, MAX_OPEN_FIDS, P9Error } from './protocol.js';
import type { Path } from './share.js';
import type { Qid } from './wire.js';

export class OpenFile {
  private refs = 1;
  constructor(
    readonly fd: number,
    readonly isDir: boolean,
  ) {}
  hold(): this {
    this.refs++;
    return this;
  }
  release(): void {
    if (--this.refs === 0) libc.close(this.fd);
  }
}

export interface Fid {
  path: string[];
  qid: Qid;
  open?: OpenFile;
  /** An xattr fid (from Txattrwalk): the attribute's value, read with Tread. */
  xattr?: Uint8Array;
}

export class FidTable {
  private readonly fids = new Map<number, Fid>();
  private openCount = 0;

  get size(): number {
    return this.fids.size;
  }
  get open(): number {
    return this.openCount;
  }

  has(fid: number): boolean {
    return this.fids.has(fid);
  }

  get(fid: number): Fid {
    const f = this.fids.get(fid);
    if (!f) throw new P9Error(E.BADF, `no fid ${fid}`);
    return f;
  }

  /** Adds a new fid; EBADF when it is in use, EMFILE past the limit. */
  add(fid: number, f: Fid): void {
    if (this.fids.has(fid)) throw new P9Error(E.BADF, `fid ${fid} is in use`);
    if (this.fids.size >= MAX_FIDS) throw new P9Error(E.MFILE, 'too many fids');
    this.fids.set(fid, f);
  }

  /** Replaces fid (a walk onto itself). */
  replace(fid: number, f: Fid): void {
    this.clunk(fid);
    this.fids.set(fid, f);
  }

  /** Throws EMFILE when this client may not open one more file. */
  canOpen(): void {
    if (this.openCount >= MAX_OPEN_FIDS) throw new P9Error(E.MFILE, 'too many open fids');
  }

  /** Makes `f` own the open fd (canOpen was checked). */
  setOpen(f: Fid, fd: number, isDir: boolean): void {
    f.open = new OpenFile(fd, isDir);
    this.openCount++;
  }

  clunk(fid: number): void {
    const f = this.fids.get(fid);
    if (!f) throw new P9Error(E.BADF, `no fid ${fid}`);
    this.fids.delete(fid);
    if (f.open) {
      this.openCount--;
      f.open.release();
    }
  }

  /** After a rename: every fid at or below `from` now names the same file at `to`. */
  renamed(from: Path, to: Path): void {
    for (const f of this.fids.values()) {
      if (f.path.length >= from.length && from.every((c, i) => f.path[i] === c)) f.path = [...to, ...f.path.slice(from.length)];
    }
  }

  clear(): void {
    for (const fid of [...this.fids.keys()]) this.clunk(fid);
  }
}
