// One 9P2000.L client's session, independent of how its messages travel
// (a virtqueue, a socket): decodes a T-message, does it on the confined
// share (share.ts) with this client's fids (fids.ts), and builds the
// R-message, or Rlerror with the errno the host returned. Reads and writes
// move their data straight between the transport's buffers and the file
// (io.ts); everything else is a few synchronous system calls. A malformed
// message gets Rlerror(EINVAL); a bug in a handler gets Rlerror(EIO) and a
// log line, never a crash. With a fid journal (journal.ts, written by the
// fid table once requests are answered) a successor takes over the fids of
// a dead predecessor (takeOver).
import type { Logger } from 'pino';
import * as libc from '../../sys/libc.js';
import { FidTable, type Fid } from './fids.js';
import type { FidJournal } from './journal.js';
import { readInto, writeFrom } from './io.js';
import * as P from './protocol.js';
import { E, P9Error, T } from './protocol.js';
import { checkName, childPath, fileType, qidOf, sys, type Share, type Stat } from './share.js';
import { Reader, WireError, finish, reply, type Qid, type Writer } from './wire.js';

/** One request as its transport presents it. */
export interface Exchange {
  /** The T-message; for Twrite, at least its 23-byte header (the data may lie elsewhere). */
  message: Uint8Array;
  /** Twrite's `count` data bytes, as views in order; null when the message holds fewer. */
  writeData(count: number): Uint8Array[] | null;
  /** Where Rread's data goes, right after its 11-byte header: views of at most `max` bytes in all. */
  readSpace(max: number): Uint8Array[];
  /** The most bytes the reply may take (Rread's data included). */
  replyCapacity: number;
}

/** An R-message: `bytes`, then `dataBytes` already placed in the exchange's readSpace (Rread). */
export interface Reply {
  bytes: Uint8Array;
  dataBytes: number;
}

const DT_DIR = 4;
const DT_LNK = 10;
const FLOCK_BYTES = 32;

export class P9Session {
  private readonly fids: FidTable;
  private msize = P.MIN_MSIZE;
  readonly counters = { requests: 0, errors: 0, bytesRead: 0, bytesWritten: 0 };

  constructor(
    private readonly share: Share,
    private readonly log: Logger | undefined,
    journal?: FidJournal,
  ) {
    this.fids = new FidTable(journal);
  }

  get fidCount(): number {
    return this.fids.size;
  }
  get openFids(): number {
    return this.fids.open;
  }

  /** Ends the session: every fid is clunked (open files closed once their I/O is done). */
  close(): void {
    this.fids.clear();
  }

  /**
   * Takes over the fids a dead predecessor left in the journal: each path's
   * names are checked and looked up beneath the share's root as a walk's
   * are, and must still name the same inode; an open fid is opened again
   * with its access mode. A fid that cannot be (its file is gone or
   * replaced, or is no longer what may be opened, or the journal was
   * garbage) is dropped: the client gets EBADF for it, as for any fid the
   * device does not know. Returns how many were taken over and dropped.
   */
  takeOver(): { kept: number; dropped: number } {
    const left = this.fids.journalled();
    if (!left) return { kept: 0, dropped: 0 };
    const { msize, entries } = left;
    if (msize !== null) this.msize = msize;
    let kept = 0;
    for (const e of entries) {
      try {
        for (const name of e.path) checkName(name);
        const path = [...e.path];
        const f: Fid = { path, qid: qidOf(this.share.stat(path)) };
        if (f.qid.path !== e.ino) throw new P9Error(E.BADF, 'the path names another file now');
        this.fids.add(e.fid, f);
        if (e.openFlags !== undefined) {
          try {
            this.fids.canOpen();
            const { fd, stat } = this.share.open(path, e.openFlags);
            this.fids.setOpen(e.fid, f, fd, fileType(stat.mode) === libc.S_IFDIR, e.openFlags);
            f.qid = qidOf(stat);
            if (f.qid.path !== e.ino) throw new P9Error(E.BADF, 'the path names another file now');
          } catch (err) {
            this.fids.clunk(e.fid);
            throw err;
          }
        }
        kept++;
      } catch {
        this.fids.forget(e.fid);
      }
    }
    this.fids.settled();
    return { kept, dropped: entries.length - kept };
  }

  /** Answers one message. Never rejects. */
  async handle(ex: Exchange): Promise<Reply> {
    this.counters.requests++;
    const m = ex.message;
    const tag = m.length >= P.HEADER ? m[5]! | (m[6]! << 8) : P.NOTAG;
    const type = m.length >= P.HEADER ? m[4]! : 0;
    try {
      if (m.length < P.HEADER) throw new WireError('message shorter than its header');
      const r = new Reader(m, P.HEADER);
      const out = await this.dispatch(type, tag, r, ex);
      if (out.bytes.length + out.dataBytes > ex.replyCapacity) throw new P9Error(E.RANGE, 'reply larger than the buffers given for it');
      return out;
    } catch (e) {
      this.counters.errors++;
      let errno: number = E.IO;
      if (e instanceof P9Error) errno = e.errno;
      else if (e instanceof WireError) errno = E.INVAL;
      else this.log?.error({ type, err: (e as Error).stack ?? String(e) }, '9p request failed unexpectedly');
      return { bytes: finish(reply(P.RLERROR, tag).u32(errno)), dataBytes: 0 };
    }
  }

  private dispatch(type: number, tag: number, r: Reader, ex: Exchange): Reply | Promise<Reply> {
    const done = (w: Writer): Reply => ({ bytes: finish(w), dataBytes: 0 });
    const R = (): Writer => reply(type + 1, tag);
    switch (type) {
      case T.version: return done(this.version(R(), r));
      case T.auth: throw new P9Error(E.NOENT, 'no authentication required'); // ENOENT: what 9P clients (diod's) take for "none needed"
      case T.attach: return done(this.attach(R(), r));
      case T.flush: r.u16(); return done(R()); // requests are not cancelled: each is answered, then Rflush
      case T.walk: return done(this.walk(R(), r));
      case T.clunk: this.fids.clunk(r.u32()); return done(R());
      case T.remove: return done(this.remove(R(), r));
      case T.getattr: return done(this.getattr(R(), r));
      case T.setattr: return done(this.setattr(R(), r));
      case T.statfs: return done(this.statfs(R(), r));
      case T.lopen: return done(this.lopen(R(), r));
      case T.lcreate: return done(this.lcreate(R(), r));
      case T.read: return this.read(tag, r, ex);
      case T.write: return this.write(R(), r, ex);
      case T.readdir: return done(this.readdir(R(), r, ex));
      case T.mkdir: return done(this.mkdir(R(), r));
      case T.mknod: return done(this.mknod(R(), r));
      case T.symlink: return done(this.symlink(R(), r));
      case T.readlink: return done(R().str(this.share.readlink(this.fids.get(r.u32()).path)));
      case T.link: return done(this.link(R(), r));
      case T.rename: return done(this.rename(R(), r));
      case T.renameat: return done(this.renameat(R(), r));
      case T.unlinkat: return done(this.unlinkat(R(), r));
      case T.fsync: return this.fsync(R(), r);
      case T.lock: return done(this.lock(R(), r));
      case T.getlock: return done(this.getlock(R(), r));
      case T.xattrwalk: return done(this.xattrwalk(R(), r));
      case T.xattrcreate: this.fids.get(r.u32()); this.share.writable(); throw new P9Error(E.OPNOTSUPP, 'extended attributes are not stored');
      default: throw new P9Error(E.OPNOTSUPP, `message type ${type} is not 9P2000.L`);
    }
  }

  private version(w: Writer, r: Reader): Writer {
    const asked = r.u32();
    const version = r.str();
    if (asked < P.MIN_MSIZE) throw new P9Error(E.INVAL, `msize ${asked} is below ${P.MIN_MSIZE}`);
    this.msize = Math.min(asked, P.MAX_MSIZE);
    this.fids.reset(this.msize);
    return w.u32(this.msize).str(version.startsWith(P.VERSION_9P2000_L) ? P.VERSION_9P2000_L : 'unknown');
  }

  private attach(w: Writer, r: Reader): Writer {
    const fid = r.u32();
    r.u32(); // afid: no authentication
    r.str(); // uname: passthrough ownership, the client's user is not ours to take
    r.str(); // aname: the share is the only tree
    const qid = qidOf(this.share.stat([]));
    this.fids.add(fid, { path: [], qid });
    return w.qid(qid);
  }

  private walk(w: Writer, r: Reader): Writer {
    const fid = r.u32();
    const from = this.fids.get(fid);
    const newfid = r.u32();
    const n = r.u16();
    if (n > P.MAX_WALK_NAMES) throw new P9Error(E.INVAL, `more than ${P.MAX_WALK_NAMES} names in one walk`);
    const names = Array.from({ length: n }, () => r.str());
    const same = newfid === fid;
    if (!same && this.fids.has(newfid)) throw new P9Error(E.BADF, `fid ${newfid} is in use`);
    let path = [...from.path];
    let qid = from.qid;
    const qids: Qid[] = [];
    let fd = n > 0 ? this.share.resolve(path) : -1;
    try {
      for (const name of names) {
        try {
          let next: number;
          if (name === '..' || name === '.') {
            if (name === '..' && path.length > 0) path = path.slice(0, -1); // never above the root
            next = this.share.resolve(path);
          } else {
            const p = childPath(path, name);
            next = this.share.lookup(fd, name);
            path = p;
          }
          this.share.release(fd);
          fd = next;
          qid = qidOf(this.share.statFd(fd));
          qids.push(qid);
        } catch (e) {
          if (qids.length === 0) throw e;
          break;
        }
      }
    } finally {
      if (fd >= 0) this.share.release(fd);
    }
    if (qids.length === n) {
      const f: Fid = { path, qid };
      if (same) this.fids.replace(newfid, f);
      else this.fids.add(newfid, f);
    }
    w.u16(qids.length);
    for (const q of qids) w.qid(q);
    return w;
  }

  private remove(w: Writer, r: Reader): Writer {
    const fid = r.u32();
    const f = this.fids.get(fid);
    try {
      if (f.path.length === 0) throw new P9Error(E.INVAL, 'the root cannot be removed');
      this.share.unlink(f.path.slice(0, -1), f.path[f.path.length - 1]!, f.qid.type === P.QTDIR);
    } finally {
      this.fids.clunk(fid); // Tremove clunks the fid even when the remove fails
    }
    return w;
  }

  private getattr(w: Writer, r: Reader): Writer {
    const f = this.fids.get(r.u32());
    r.u64(); // request_mask: everything is always returned
    const st = f.open ? this.share.statFd(f.open.fd) : this.share.stat(f.path);
    return writeStat(w, st);
  }

  private setattr(w: Writer, r: Reader): Writer {
    const f = this.fids.get(r.u32());
    const valid = r.u32();
    const mode = r.u32();
    const uid = r.u32();
    const gid = r.u32();
    const size = r.u64();
    const atime: [number, number] = [r.u64(), r.u64()];
    const mtime: [number, number] = [r.u64(), r.u64()];
    const S = P.SETATTR;
    if (valid === 0) return w;
    this.share.writable();
    if (valid & S.mode) this.share.setMode(f.path, mode);
    if (valid & (S.uid | S.gid)) this.share.setOwner(f.path, valid & S.uid ? uid : undefined, valid & S.gid ? gid : undefined);
    if (valid & S.size) {
      if (f.open && !f.open.isDir) sys(() => libc.ftruncate(f.open!.fd, size));
      else this.share.truncate(f.path, size);
    }
    if (valid & (S.atime | S.mtime)) {
      const a = valid & S.atime ? (valid & S.atimeSet ? atime : 'now') : undefined;
      const m = valid & S.mtime ? (valid & S.mtimeSet ? mtime : 'now') : undefined;
      this.share.setTimes(f.path, a, m);
    }
    return w;
  }

  private statfs(w: Writer, r: Reader): Writer {
    this.fids.get(r.u32());
    const s = this.share.statfs();
    const u64 = (at: number): bigint => s.getBigUint64(at, true);
    return w
      .u32(Number(u64(0) & 0xffffffffn)).u32(Number(u64(8)))
      .u64(u64(16)).u64(u64(24)).u64(u64(32)).u64(u64(40)).u64(u64(48))
      .u64(u64(56)).u32(Number(u64(64)));
  }

  private lopen(w: Writer, r: Reader): Writer {
    const fid = r.u32();
    const f = this.fids.get(fid);
    const flags = r.u32();
    if (f.open || f.xattr) throw new P9Error(E.BADF, 'fid already open');
    this.fids.canOpen();
    const { fd, stat } = this.share.open(f.path, flags);
    this.fids.setOpen(fid, f, fd, fileType(stat.mode) === libc.S_IFDIR, flags);
    f.qid = qidOf(stat);
    return w.qid(f.qid).u32(0);
  }

  private lcreate(w: Writer, r: Reader): Writer {
    const fid = r.u32();
    const f = this.fids.get(fid);
    const name = r.str();
    const flags = r.u32();
    const mode = r.u32();
    r.u32(); // gid: passthrough ownership (the file is the VMM user's)
    if (f.open || f.xattr) throw new P9Error(E.BADF, 'fid already open');
    this.fids.canOpen();
    const path = childPath(f.path, name);
    const { fd, stat } = this.share.create(f.path, name, flags, mode);
    f.path = path;
    this.fids.setOpen(fid, f, fd, false, flags & ~(libc.O_CREAT | libc.O_TRUNC | libc.O_EXCL));
    f.qid = qidOf(stat);
    return w.qid(f.qid).u32(0);
  }

  private async read(tag: number, r: Reader, ex: Exchange): Promise<Reply> {
    const f = this.fids.get(r.u32());
    const offset = r.u64();
    const count = Math.min(r.u32(), this.msize - P.RREAD_HEADER, ex.replyCapacity - P.RREAD_HEADER);
    const w = reply(T.read + 1, tag);
    if (f.xattr) {
      const data = f.xattr.subarray(Math.min(offset, f.xattr.length), Math.min(offset + count, f.xattr.length));
      return { bytes: finish(w.u32(data.length).bytes(data)), dataBytes: 0 };
    }
    if (!f.open) throw new P9Error(E.BADF, 'fid not open');
    const file = f.open.hold();
    let n: number;
    try {
      n = await readInto(file.fd, ex.readSpace(count), offset);
    } finally {
      file.release();
    }
    if (n < 0) throw new P9Error(-n);
    this.counters.bytesRead += n;
    return { bytes: finish(w.u32(n), n), dataBytes: n };
  }

  private async write(w: Writer, r: Reader, ex: Exchange): Promise<Reply> {
    const f = this.fids.get(r.u32());
    const offset = r.u64();
    const count = r.u32();
    if (!f.open) throw new P9Error(E.BADF, 'fid not open');
    this.share.writable();
    const data = ex.writeData(count);
    if (data === null) throw new P9Error(E.INVAL, 'Twrite holds fewer bytes than its count');
    const file = f.open.hold();
    let n: number;
    try {
      n = await writeFrom(file.fd, data, offset);
    } finally {
      file.release();
    }
    if (n < 0) throw new P9Error(-n);
    this.counters.bytesWritten += n;
    return { bytes: finish(w.u32(n)), dataBytes: 0 };
  }

  private readdir(w: Writer, r: Reader, ex: Exchange): Writer {
    const f = this.fids.get(r.u32());
    const offset = BigInt.asIntN(64, r.u64big()); // beyond 2^63: negative, which lseek refuses
    const count = Math.min(r.u32(), this.msize - P.RREAD_HEADER, ex.replyCapacity - P.RREAD_HEADER);
    if (!f.open) throw new P9Error(E.BADF, 'fid not open');
    if (!f.open.isDir) throw new P9Error(E.NOTDIR, 'not a directory');
    const fd = f.open.fd;
    sys(() => libc.lseek(fd, offset, libc.SEEK_SET));
    const buf = new Uint8Array(Math.min(P.READDIR_CHUNK, Math.max(count, 512)));
    const got = sys(() => libc.getdents64(fd, buf));
    const dv = new DataView(buf.buffer);
    const countAt = w.length;
    w.u32(0);
    let used = 0;
    for (let at = 0; at < got; ) {
      const ino = dv.getBigUint64(at, true);
      const off = dv.getBigUint64(at + 8, true);
      const reclen = dv.getUint16(at + 16, true);
      const dtype = dv.getUint8(at + 18);
      const nameEnd = buf.indexOf(0, at + 19);
      const name = buf.subarray(at + 19, nameEnd < 0 || nameEnd > at + reclen ? at + reclen : nameEnd);
      const size = 24 + name.length;
      if (used + size > count) {
        if (used === 0) throw new P9Error(E.INVAL, 'Treaddir count too small for one entry');
        break;
      }
      const qtype = dtype === DT_DIR ? P.QTDIR : dtype === DT_LNK ? P.QTSYMLINK : P.QTFILE;
      w.qid({ type: qtype, version: 0, path: ino }).u64(off).u8(dtype).str(name);
      used += size;
      at += reclen;
    }
    return w.patch32(countAt, used);
  }

  private mkdir(w: Writer, r: Reader): Writer {
    const dir = this.fids.get(r.u32());
    const name = r.str();
    const mode = r.u32();
    r.u32(); // gid
    return w.qid(qidOf(this.share.mkdir(dir.path, name, mode)));
  }

  private mknod(w: Writer, r: Reader): Writer {
    const dir = this.fids.get(r.u32());
    const name = r.str();
    const mode = r.u32();
    r.u32(); // major
    r.u32(); // minor
    r.u32(); // gid
    return w.qid(qidOf(this.share.mknod(dir.path, name, mode)));
  }

  private symlink(w: Writer, r: Reader): Writer {
    const dir = this.fids.get(r.u32());
    const name = r.str();
    const target = r.str();
    r.u32(); // gid
    return w.qid(qidOf(this.share.symlink(dir.path, name, target)));
  }

  private link(w: Writer, r: Reader): Writer {
    const dir = this.fids.get(r.u32());
    const target = this.fids.get(r.u32());
    this.share.link(target.path, dir.path, r.str());
    return w;
  }

  private rename(w: Writer, r: Reader): Writer {
    const f = this.fids.get(r.u32());
    const dir = this.fids.get(r.u32());
    const name = r.str();
    if (f.path.length === 0) throw new P9Error(E.INVAL, 'the root cannot be renamed');
    const to = childPath(dir.path, name);
    this.share.rename(f.path.slice(0, -1), f.path[f.path.length - 1]!, dir.path, name);
    this.fids.renamed(f.path, to);
    return w;
  }

  private renameat(w: Writer, r: Reader): Writer {
    const oldDir = this.fids.get(r.u32());
    const oldName = r.str();
    const newDir = this.fids.get(r.u32());
    const newName = r.str();
    const from = childPath(oldDir.path, oldName);
    const to = childPath(newDir.path, newName);
    this.share.rename(oldDir.path, oldName, newDir.path, newName);
    this.fids.renamed(from, to);
    return w;
  }

  private unlinkat(w: Writer, r: Reader): Writer {
    const dir = this.fids.get(r.u32());
    const name = r.str();
    const flags = r.u32();
    this.share.unlink(dir.path, name, (flags & libc.AT_REMOVEDIR) !== 0);
    return w;
  }

  private async fsync(w: Writer, r: Reader): Promise<Reply> {
    const f = this.fids.get(r.u32());
    const dataOnly = r.remaining >= 4 && r.u32() !== 0; // datasync[4] is absent in older clients
    if (!f.open) throw new P9Error(E.BADF, 'fid not open');
    const file = f.open.hold();
    const res = await new Promise<number>((resolve) => libc.fsyncAsync(file.fd, dataOnly, resolve)).finally(() => file.release());
    if (res < 0) throw new P9Error(-res);
    return { bytes: finish(w), dataBytes: 0 };
  }

  private openFd(f: Fid): number {
    if (!f.open) throw new P9Error(E.BADF, 'fid not open');
    return f.open.fd;
  }

  /** Byte-range locks: open-file-description locks on the fid's fd, never waited for (BLOCKED: the client retries). */
  private lock(w: Writer, r: Reader): Writer {
    const fid = r.u32();
    const f = this.fids.get(fid);
    const fd = this.openFd(f);
    const type = r.u8();
    r.u32(); // flags: a blocking request is answered BLOCKED, and the client polls
    const start = r.u64();
    const length = r.u64();
    if (type > P.LOCK_TYPE_UNLCK) throw new P9Error(E.INVAL, 'bad lock type');
    try {
      libc.fcntlLock(fd, libc.F_OFD_SETLK, flock(type, start, length));
    } catch (e) {
      if (e instanceof libc.SysError && (e.errno === E.AGAIN || e.errno === E.ACCES)) return w.u8(P.LOCK_BLOCKED);
      if (e instanceof libc.SysError) throw new P9Error(e.errno, e.message);
      throw e;
    }
    if (type !== P.LOCK_TYPE_UNLCK && !f.locked) {
      f.locked = true; // a successor may not take this fid over: the lock dies with this process
      this.fids.changed(fid);
    }
    return w.u8(P.LOCK_SUCCESS);
  }

  private getlock(w: Writer, r: Reader): Writer {
    const fd = this.openFd(this.fids.get(r.u32()));
    const type = r.u8();
    const start = r.u64();
    const length = r.u64();
    const procId = r.u32();
    const clientId = r.rawStr();
    if (type > P.LOCK_TYPE_UNLCK) throw new P9Error(E.INVAL, 'bad lock type');
    const fl = flock(type, start, length);
    sys(() => libc.fcntlLock(fd, libc.F_OFD_GETLK, fl));
    const dv = new DataView(fl.buffer);
    const gotType = dv.getInt16(0, true);
    return w
      .u8(gotType)
      .u64(dv.getBigInt64(8, true))
      .u64(dv.getBigInt64(16, true))
      .u32(gotType === P.LOCK_TYPE_UNLCK ? procId : dv.getInt32(24, true))
      .str(clientId);
  }

  /** Extended attributes are not kept: the list is empty and every name is absent (ENODATA). */
  private xattrwalk(w: Writer, r: Reader): Writer {
    const f = this.fids.get(r.u32());
    const newfid = r.u32();
    const name = r.str();
    if (name !== '') throw new P9Error(E.NODATA, 'no such attribute');
    this.fids.add(newfid, { path: [...f.path], qid: f.qid, xattr: new Uint8Array(0) });
    return w.u64(0);
  }
}

function flock(type: number, start: number, length: number): Uint8Array {
  const b = new Uint8Array(FLOCK_BYTES);
  const dv = new DataView(b.buffer);
  dv.setInt16(0, type, true);
  dv.setInt16(2, libc.SEEK_SET, true);
  dv.setBigInt64(8, BigInt(start), true);
  dv.setBigInt64(16, BigInt(Math.min(length, Number.MAX_SAFE_INTEGER)), true);
  return b;
}

function writeStat(w: Writer, st: Stat): Writer {
  const valid = P.GETATTR_BASIC | (st.hasBtime ? P.GETATTR_BTIME : 0);
  return w
    .u64(valid).qid(qidOf(st))
    .u32(st.mode).u32(st.uid).u32(st.gid)
    .u64(st.nlink).u64(st.rdev).u64(st.size).u64(st.blksize).u64(st.blocks)
    .u64(st.atime[0]).u64(st.atime[1]).u64(st.mtime[0]).u64(st.mtime[1])
    .u64(st.ctime[0]).u64(st.ctime[1]).u64(st.btime[0]).u64(st.btime[1])
    .u64(0).u64(0);
}
