// One client's fids: what each names (a path below the share's root, its
// qid), and, once opened, the host fd it holds. Bounded: MAX_FIDS fids and
// MAX_OPEN_FIDS open ones per client, the next gets EMFILE. An open file is
// reference-counted, so that a clunk while a read or write is still running
// on libuv's pool closes the fd only once that I/O is done: the fd number
// cannot be reused under a request in flight. With a journal (journal.ts),
// the fids a request changed are written to it once the request is
// handled (flush), so a successor can take them over after a death. A fid
// taken over that no request has used yet may meet the request the death
// interrupted, taken again: that request finds the fid as it left it
// (see add and replayOf).
import * as libc from '../../sys/libc.js';
import type { FidJournal } from './journal.js';
import { E, MAX_FIDS, MAX_OPEN_FIDS, P9Error } from './protocol.js';
import type { Path } from './share.js';
import type { Qid } from './wire.js';

export class OpenFile {
  private refs = 1;
  constructor(
    readonly fd: number,
    readonly isDir: boolean,
    /** The client's open flags (what a successor reopens it with). */
    readonly flags: number,
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
  /** It took a byte-range lock: a successor may not take it over (the lock died with the process). */
  locked?: boolean;
}

export class FidTable {
  private readonly fids = new Map<number, Fid>();
  private openCount = 0;
  /** Fids added, changed or clunked since the last flush. */
  private readonly dirty = new Set<number>();
  /** Fids taken over from a dead predecessor that no request has used since. */
  private readonly restored = new Set<number>();

  constructor(private readonly journal?: FidJournal) {}

  get size(): number {
    return this.fids.size;
  }
  get open(): number {
    return this.openCount;
  }

  /** Whether fid is in use (one taken over and not used since may be made again: see add). */
  has(fid: number): boolean {
    return this.fids.has(fid) && !this.restored.has(fid);
  }

  get(fid: number): Fid {
    this.restored.delete(fid);
    const f = this.fids.get(fid);
    if (!f) throw new P9Error(E.BADF, `no fid ${fid}`);
    return f;
  }

  /**
   * Adds a new fid; EBADF when it is in use, EMFILE past the limit. A fid
   * taken over and not used since is the one the interrupted request made
   * (an attach or walk taken again): it is replaced.
   */
  add(fid: number, f: Fid): void {
    if (this.restored.delete(fid)) this.clunk(fid);
    if (this.fids.has(fid)) throw new P9Error(E.BADF, `fid ${fid} is in use`);
    if (this.fids.size >= MAX_FIDS) throw new P9Error(E.MFILE, 'too many fids');
    this.fids.set(fid, f);
    this.dirty.add(fid);
  }

  /** Replaces fid (a walk onto itself). */
  replace(fid: number, f: Fid): void {
    this.clunk(fid);
    this.fids.set(fid, f);
    this.dirty.add(fid);
  }

  /** Marks `fid` as taken over from a dead predecessor. */
  restoredFrom(fid: number): void {
    this.restored.add(fid);
  }

  /**
   * The fid, when it was taken over open and no request has used it since:
   * an open of it is the interrupted request taken again, and succeeds as
   * it did. Undefined otherwise (the caller goes on as usual).
   */
  replayOf(fid: number): Fid | undefined {
    if (!this.restored.delete(fid)) return undefined;
    const f = this.fids.get(fid);
    return f?.open ? f : undefined;
  }

  /** Notes a change of fid's entry the table cannot see (a lock taken). */
  changed(fid: number): void {
    this.dirty.add(fid);
  }

  /** Throws EMFILE when this client may not open one more file. */
  canOpen(): void {
    if (this.openCount >= MAX_OPEN_FIDS) throw new P9Error(E.MFILE, 'too many open fids');
  }

  /** Makes fid `fid` (whose entry is `f`) own the open fd, opened with the client's `flags` (canOpen was checked). */
  setOpen(fid: number, f: Fid, fd: number, isDir: boolean, flags: number): void {
    f.open = new OpenFile(fd, isDir, flags);
    this.openCount++;
    this.dirty.add(fid);
  }

  clunk(fid: number): void {
    const f = this.fids.get(fid);
    if (!f) throw new P9Error(E.BADF, `no fid ${fid}`);
    this.fids.delete(fid);
    this.restored.delete(fid);
    this.dirty.add(fid);
    if (f.open) {
      this.openCount--;
      f.open.release();
    }
  }

  /** After a rename: every fid at or below `from` now names the same file at `to`. */
  renamed(from: Path, to: Path): void {
    for (const [fid, f] of this.fids) {
      if (f.path.length >= from.length && from.every((c, i) => f.path[i] === c)) {
        f.path = [...to, ...f.path.slice(from.length)];
        this.dirty.add(fid);
      }
    }
  }

  /** Writes the fids changed since the last flush to the journal (an xattr fid is never kept). */
  flush(): void {
    if (!this.journal) return this.dirty.clear();
    for (const fid of this.dirty) {
      const f = this.fids.get(fid);
      if (f && !f.xattr) this.journal.record(fid, { path: f.path, ino: f.qid.path, ...(f.open ? { openFlags: f.open.flags } : {}), ...(f.locked ? { locked: true } : {}) });
      else this.journal.forget(fid);
    }
    this.dirty.clear();
  }

  clear(): void {
    for (const fid of [...this.fids.keys()]) this.clunk(fid);
  }
}
