// One client's fids: what each names (a path below the share's root, its
// qid), and, once opened, the host fd it holds. Bounded: MAX_FIDS fids and
// MAX_OPEN_FIDS open ones per client, the next gets EMFILE. An open file is
// reference-counted, so that a clunk while a read or write is still running
// on libuv's pool closes the fd only once that I/O is done: the fd number
// cannot be reused under a request in flight.
//
// With a journal (journal.ts) the table writes the fids that changed to it
// on the event loop's next turn: by then the requests that changed them
// have been answered and marked complete in the in-flight record, so a
// successor never takes again a request whose effect it finds in the
// journal. A death in between costs those fids (EBADF), nothing worse.
import * as libc from '../../sys/libc.js';
import type { FidJournal, JournalEntry } from './journal.js';
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
  /** It took a byte-range lock: a successor may not take it over (the lock dies with this process). */
  locked?: boolean;
}

export class FidTable {
  private readonly fids = new Map<number, Fid>();
  private openCount = 0;
  /** Fids added, changed or clunked since the journal was last written (with a journal only). */
  private readonly dirty = new Set<number>();
  private flushScheduled = false;

  constructor(private readonly journal?: FidJournal) {}

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
    this.changed(fid);
  }

  /** Replaces fid (a walk onto itself). */
  replace(fid: number, f: Fid): void {
    this.clunk(fid);
    this.fids.set(fid, f);
    this.changed(fid);
  }

  /** Throws EMFILE when this client may not open one more file. */
  canOpen(): void {
    if (this.openCount >= MAX_OPEN_FIDS) throw new P9Error(E.MFILE, 'too many open fids');
  }

  /** Makes fid `fid` (whose entry is `f`) own the open fd, opened with the client's `flags` (canOpen was checked). */
  setOpen(fid: number, f: Fid, fd: number, isDir: boolean, flags: number): void {
    f.open = new OpenFile(fd, isDir, flags);
    this.openCount++;
    this.changed(fid);
  }

  /** Notes a change of fid's entry the table cannot see (a lock taken); writes it to the journal on the next turn. */
  changed(fid: number): void {
    if (!this.journal) return;
    this.dirty.add(fid);
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  clunk(fid: number): void {
    const f = this.fids.get(fid);
    if (!f) throw new P9Error(E.BADF, `no fid ${fid}`);
    this.fids.delete(fid);
    this.changed(fid);
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
        this.changed(fid);
      }
    }
  }

  /** Clunks every fid (the journal forgets them on the next turn). */
  clear(): void {
    for (const fid of [...this.fids.keys()]) this.clunk(fid);
  }

  /** A new session (Tversion): every fid clunked, and the journal started afresh with `msize`. */
  reset(msize: number): void {
    this.clear();
    this.dirty.clear();
    this.journal?.reset(msize);
  }

  /**
   * What a dead predecessor left in the journal (see FidJournal.takeOver);
   * null without a journal. The caller adds the fids it can take over;
   * those it cannot it hands to `forget`.
   */
  journalled(): { msize: number | null; entries: (JournalEntry & { fid: number })[] } | null {
    return this.journal ? this.journal.takeOver() : null;
  }

  /** A fid of the journal the successor did not take over. */
  forget(fid: number): void {
    this.journal?.forget(fid);
  }

  /** The fids just taken over are in the journal as they are: nothing to write. */
  settled(): void {
    this.dirty.clear();
  }

  /** Writes the changed fids to the journal: an xattr fid, or one holding a lock, is not kept. */
  private flush(): void {
    this.flushScheduled = false;
    for (const fid of this.dirty) {
      const f = this.fids.get(fid);
      if (f && !f.xattr && !f.locked) this.journal!.record(fid, { path: f.path, ino: f.qid.path, ...(f.open ? { openFlags: f.open.flags } : {}) });
      else this.journal!.forget(fid);
    }
    this.dirty.clear();
  }
}
