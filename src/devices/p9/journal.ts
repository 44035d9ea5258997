// The fid journal: what a 9p device process's successor needs to take its
// client's fids over after a death — the negotiated msize, and for each fid
// its path below the share's root and, once opened, its open flags. It
// lives in the core-owned in-flight file, after the queues' records, so it
// outlives the process. A successor reads it as untrusted input (the dead
// process may have been taken over): every path is checked name by name
// and looked up beneath the share's root as any walk is, and must still
// name the same file (inode); only an open file's access mode, O_SYNC and
// O_DSYNC are reused (never O_CREAT or O_TRUNC). A fid open for appending
// is not kept: a write taken again would append twice (fids.ts keeps no
// fid holding a lock either: the lock dies with the process).
//
// Layout: a 64-byte header (magic, msize, and how many slots have ever been
// used: a free slot is reused before a new one is taken, so a successor
// reads only those, and an idle journal keeps the file's pages
// unallocated), then
// MAX_FIDS slots of SLOT_BYTES: fid u32, state u8 (0 free, 1 walked, 2
// open), 3 bytes unused, open flags u32, path length u16, 2 bytes unused,
// inode u64, then the path, its names joined by '/'. A slot is written state last, and freed state
// first: a death while it is written leaves a free slot, never a
// half-written one in use.
import * as libc from '../../sys/libc.js';
import { MAX_FIDS, MIN_MSIZE, MAX_MSIZE } from './protocol.js';

const MAGIC = 0x4a463950; // "P9FJ"
const HEADER_BYTES = 64;
const SLOT_BYTES = 1024;
const SLOT_HEAD = 24;
/** The longest path a slot holds: a fid with a longer one is not kept (its successor answers EBADF). */
const JOURNAL_PATH_MAX = SLOT_BYTES - SLOT_HEAD;
/** Bytes the journal takes in the in-flight file. */
export const P9_JOURNAL_BYTES = HEADER_BYTES + MAX_FIDS * SLOT_BYTES;

const FREE = 0;
const WALKED = 1;
const OPEN = 2;
/** The open flags a successor may reuse. */
const KEPT_OPEN_FLAGS = libc.O_ACCMODE | libc.O_DIRECTORY | libc.O_SYNC | libc.O_DSYNC;

/** What the journal keeps of one fid. */
export interface JournalEntry {
  path: readonly string[];
  /** The inode the path named (the fid's qid path). */
  ino: bigint;
  /** The client's open flags (of which a reopen reuses only KEPT_OPEN_FLAGS), or undefined when the fid is not open. */
  openFlags?: number;
}

export class FidJournal {
  private readonly slotOf = new Map<number, number>();
  /** Free slots below highWater. */
  private free: number[] = [];
  private highWater = 0;

  constructor(private readonly view: DataView) {
    if (view.byteLength < P9_JOURNAL_BYTES) throw new Error(`the fid journal needs ${P9_JOURNAL_BYTES} bytes, not ${view.byteLength}`);
  }

  /** Starts a new session: no fids, the given msize. */
  reset(msize: number): void {
    for (const slot of this.slotOf.values()) this.view.setUint8(this.slotAt(slot) + 4, FREE);
    this.slotOf.clear();
    this.free = [];
    this.highWater = 0;
    this.view.setUint32(8, 0, true);
    this.view.setUint32(4, msize, true);
    this.view.setUint32(0, MAGIC, true);
  }

  /** Records a fid; one a successor could not take over safely (a path too long to keep, a file open for appending) frees its slot. */
  record(fid: number, r: JournalEntry): void {
    const bytes = Buffer.from(r.path.join('/'));
    if (bytes.length > JOURNAL_PATH_MAX || ((r.openFlags ?? 0) & libc.O_APPEND) !== 0) return this.forget(fid);
    let slot = this.slotOf.get(fid);
    if (slot === undefined) {
      slot = this.free.pop();
      if (slot === undefined) {
        if (this.highWater >= MAX_FIDS) return; // more fids than MAX_FIDS: the table refuses those first
        slot = this.highWater++;
        this.view.setUint32(8, this.highWater, true);
      }
      this.slotOf.set(fid, slot);
    }
    const at = this.slotAt(slot);
    this.view.setUint8(at + 4, FREE);
    this.view.setUint32(at, fid, true);
    this.view.setUint32(at + 8, (r.openFlags ?? 0) & KEPT_OPEN_FLAGS, true);
    this.view.setUint16(at + 12, bytes.length, true);
    this.view.setBigUint64(at + 16, r.ino, true);
    new Uint8Array(this.view.buffer, this.view.byteOffset + at + SLOT_HEAD, bytes.length).set(bytes);
    this.view.setUint8(at + 4, r.openFlags === undefined ? WALKED : OPEN);
  }

  forget(fid: number): void {
    const slot = this.slotOf.get(fid);
    if (slot === undefined) return;
    this.view.setUint8(this.slotAt(slot) + 4, FREE);
    this.slotOf.delete(fid);
    this.free.push(slot); // any free slot will do: the high-water mark grows only when none is left
  }

  /**
   * What a dead predecessor left: the msize (null when there is no journal)
   * and every slot in use whose fields are well formed, each fid once. The
   * paths' names are not yet checked: the session does that as for a walk.
   * Takes the slots over: they are this process's from now on.
   */
  takeOver(): { msize: number | null; entries: (JournalEntry & { fid: number })[] } {
    if (this.view.getUint32(0, true) !== MAGIC) {
      this.reset(MIN_MSIZE);
      return { msize: null, entries: [] };
    }
    const m = this.view.getUint32(4, true);
    const msize = m >= MIN_MSIZE && m <= MAX_MSIZE ? m : MIN_MSIZE;
    const entries: (JournalEntry & { fid: number })[] = [];
    this.slotOf.clear();
    this.free = [];
    this.highWater = Math.min(this.view.getUint32(8, true), MAX_FIDS);
    this.view.setUint32(8, this.highWater, true);
    for (let i = this.highWater - 1; i >= 0; i--) {
      const at = this.slotAt(i);
      const state = this.view.getUint8(at + 4);
      const fid = this.view.getUint32(at, true);
      const len = this.view.getUint16(at + 12, true);
      if ((state !== WALKED && state !== OPEN) || len > JOURNAL_PATH_MAX || this.slotOf.has(fid)) {
        this.view.setUint8(at + 4, FREE);
        this.free.push(i);
        continue;
      }
      const text = Buffer.from(this.view.buffer, this.view.byteOffset + at + SLOT_HEAD, len).toString('utf8');
      const path = text === '' ? [] : text.split('/');
      this.slotOf.set(fid, i);
      const ino = this.view.getBigUint64(at + 16, true);
      entries.push({ fid, path, ino, ...(state === OPEN ? { openFlags: this.view.getUint32(at + 8, true) & KEPT_OPEN_FLAGS } : {}) });
    }
    return { msize, entries };
  }

  private slotAt(i: number): number {
    return HEADER_BYTES + i * SLOT_BYTES;
  }
}
