// The shared folder, confined: every file-system operation the 9P server
// makes, each relative to the share's root fd (which the core opened) and
// never outside it.
//
// Confinement, in the order a lookup meets it:
// - A file is named by its path below the root, as a list of components the
//   server checked one by one (no "/", no NUL, not "." or "..", at most
//   NAME_MAX bytes; ".." is handled by the walk, which never goes above the
//   root). Every use opens the path with openat2 relative to the root fd with
//   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//   RESOLVE_NO_XDEV and O_NOFOLLOW: the kernel refuses any symlink on the
//   way, any ".." above the root, any mount crossing, and any /proc-style
//   magic link, at the moment of the lookup, so a symlink or rename swapped
//   in by someone else between two requests changes nothing. Symlinks in the
//   share are only ever read (readlink); the guest resolves them itself.
// - Metadata changes go through an O_PATH fd of the file itself
//   (fchmodat2, fchownat, utimensat with AT_EMPTY_PATH), never through a
//   name that could be re-pointed in between.
// - Opening for I/O is only for regular files and directories: the type is
//   checked on an O_PATH fd, the file is opened with O_NOFOLLOW|O_NONBLOCK
//   (a FIFO cannot block the open), and the opened fd must be the same inode
//   of the same type, else it is closed and refused.
// - mknod makes only regular files, FIFOs and sockets (never device nodes),
//   hard links are made between names under the root (RESOLVE_NO_XDEV: on
//   the root's file system), and a read-only share refuses every change with
//   EROFS before any call is made.
import * as libc from '../../sys/libc.js';
import { E, NAME_MAX, P9Error, PATH_MAX, QTDIR, QTFILE, QTSYMLINK } from './protocol.js';
import type { Qid } from './wire.js';

const RESOLVE = libc.RESOLVE_BENEATH | libc.RESOLVE_NO_SYMLINKS | libc.RESOLVE_NO_MAGICLINKS | libc.RESOLVE_NO_XDEV;
/** Open flags a client may ask for; everything else (O_DIRECT, O_NOATIME, O_ASYNC, …) is dropped. */
const CLIENT_OPEN_FLAGS = libc.O_ACCMODE | libc.O_TRUNC | libc.O_APPEND | libc.O_SYNC | libc.O_DSYNC | libc.O_EXCL | libc.O_DIRECTORY;
const STATX_FLAGS = libc.AT_EMPTY_PATH | libc.AT_SYMLINK_NOFOLLOW;
/** fchownat's -1: leave the owner (or group) as it is. */
const UNCHANGED = 0xffffffff;

export interface Stat {
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  rdev: bigint;
  size: number;
  blksize: number;
  blocks: number;
  ino: bigint;
  atime: [number, number];
  mtime: [number, number];
  ctime: [number, number];
  btime: [number, number];
  hasBtime: boolean;
}

export type Path = readonly string[];

/** The path as openat2 takes it relative to the root. */
export function pathString(path: Path): string {
  return path.length === 0 ? '.' : path.join('/');
}

/** Checks a name the client gives for one component; throws P9Error. */
export function checkName(name: string): string {
  if (name.length === 0 || name === '.' || name === '..' || name.includes('/') || name.includes('\0')) throw new P9Error(E.INVAL, 'bad name');
  if (Buffer.byteLength(name) > NAME_MAX) throw new P9Error(E.NAMETOOLONG, 'name too long');
  return name;
}

/** A path one component longer; throws ENAMETOOLONG past PATH_MAX. */
export function childPath(dir: Path, name: string): string[] {
  const p = [...dir, checkName(name)];
  if (Buffer.byteLength(pathString(p)) > PATH_MAX) throw new P9Error(E.NAMETOOLONG, 'path too long');
  return p;
}

export function qidOf(st: Stat): Qid {
  const fmt = st.mode & libc.S_IFMT;
  const type = fmt === libc.S_IFDIR ? QTDIR : fmt === libc.S_IFLNK ? QTSYMLINK : QTFILE;
  return { type, version: 0, path: st.ino };
}

export function fileType(mode: number): number {
  return mode & libc.S_IFMT;
}

function ts(dv: DataView, at: number): [number, number] {
  return [Number(dv.getBigInt64(at, true)), dv.getUint32(at + 8, true)];
}

/** Runs `fn` on a syscall-throwing operation, turning SysError into P9Error with its errno. */
export function sys<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (e instanceof libc.SysError) throw new P9Error(e.errno, e.message);
    throw e;
  }
}

export class Share {
  private readonly statBuf = new Uint8Array(256);

  constructor(
    readonly rootFd: number,
    readonly readOnly: boolean,
  ) {
    if (fileType(this.statFd(rootFd).mode) !== libc.S_IFDIR) throw new Error('the share is not a directory');
  }

  /** Throws EROFS on a read-only share. */
  writable(): void {
    if (this.readOnly) throw new P9Error(E.ROFS, 'read-only share');
  }

  /** An fd of `path` (O_PATH; a symlink itself, never its target; the root's own fd for the root). Give it back with `release`. */
  resolve(path: Path): number {
    if (path.length === 0) return this.rootFd;
    return sys(() => libc.openat2(this.rootFd, pathString(path), libc.O_PATH | libc.O_NOFOLLOW, 0, RESOLVE));
  }

  /** Closes an fd `resolve` or `lookup` gave, unless it is the root's. */
  release(fd: number): void {
    if (fd !== this.rootFd) libc.close(fd);
  }

  /** An O_PATH fd of `name` in the directory `dirFd`. */
  lookup(dirFd: number, name: string): number {
    return sys(() => libc.openat2(dirFd, checkName(name), libc.O_PATH | libc.O_NOFOLLOW, 0, RESOLVE));
  }

  /** Runs `fn` with an O_PATH fd of `path`, closed afterwards. */
  at<T>(path: Path, fn: (fd: number) => T): T {
    const fd = this.resolve(path);
    try {
      return fn(fd);
    } finally {
      this.release(fd);
    }
  }

  /** Runs `fn` with an O_PATH fd of the directory `path` (O_DIRECTORY: ENOTDIR for anything else). */
  inDir<T>(path: Path, fn: (dirFd: number) => T): T {
    const fd = path.length === 0 ? this.rootFd : sys(() => libc.openat2(this.rootFd, pathString(path), libc.O_PATH | libc.O_NOFOLLOW | libc.O_DIRECTORY, 0, RESOLVE));
    try {
      return fn(fd);
    } finally {
      this.release(fd);
    }
  }

  statFd(fd: number): Stat {
    const b = this.statBuf;
    sys(() => libc.statx(fd, '', STATX_FLAGS, libc.STATX_BASIC_STATS | libc.STATX_BTIME, b));
    const dv = new DataView(b.buffer);
    const mask = dv.getUint32(0, true);
    return {
      blksize: dv.getUint32(4, true),
      nlink: dv.getUint32(16, true),
      uid: dv.getUint32(20, true),
      gid: dv.getUint32(24, true),
      mode: dv.getUint16(28, true),
      ino: dv.getBigUint64(32, true),
      size: Number(dv.getBigUint64(40, true)),
      blocks: Number(dv.getBigUint64(48, true)),
      atime: ts(dv, 64),
      btime: ts(dv, 80),
      ctime: ts(dv, 96),
      mtime: ts(dv, 112),
      rdev: (BigInt(dv.getUint32(128, true)) << 32n) | BigInt(dv.getUint32(132, true)),
      hasBtime: (mask & libc.STATX_BTIME) !== 0,
    };
  }

  stat(path: Path): Stat {
    return this.at(path, (fd) => this.statFd(fd));
  }

  /**
   * Opens `path` for I/O with the client's flags (already checked against a
   * read-only share): regular files and directories only.
   */
  open(path: Path, clientFlags: number): { fd: number; stat: Stat } {
    const flags = clientFlags & CLIENT_OPEN_FLAGS;
    if (this.readOnly && ((flags & libc.O_ACCMODE) !== libc.O_RDONLY || flags & libc.O_TRUNC)) throw new P9Error(E.ROFS, 'read-only share');
    const before = this.stat(path);
    const type = fileType(before.mode);
    if (type !== libc.S_IFREG && type !== libc.S_IFDIR) throw new P9Error(E.PERM, 'only regular files and directories can be opened');
    const fd = sys(() => libc.openat2(this.rootFd, pathString(path), flags | libc.O_NOFOLLOW | libc.O_NONBLOCK | libc.O_NOCTTY, 0, RESOLVE));
    return { fd, stat: this.checkSame(fd, before) };
  }

  /** The stat of `fd`; closes it and throws unless it is the same inode and type as `want`. */
  private checkSame(fd: number, want: Stat): Stat {
    const got = this.statFd(fd);
    if (got.ino !== want.ino || fileType(got.mode) !== fileType(want.mode)) {
      libc.close(fd);
      throw new P9Error(E.AGAIN, 'the file changed while it was opened');
    }
    return got;
  }

  /** Creates and opens a regular file `name` in `dir`. */
  create(dir: Path, name: string, clientFlags: number, mode: number): { fd: number; stat: Stat } {
    this.writable();
    const flags = (clientFlags & CLIENT_OPEN_FLAGS & ~libc.O_DIRECTORY) | libc.O_CREAT | libc.O_NOFOLLOW | libc.O_NONBLOCK | libc.O_NOCTTY;
    return this.inDir(dir, (dfd) => {
      const fd = sys(() => libc.openat2(dfd, checkName(name), flags, mode & 0o7777, RESOLVE));
      const stat = this.statFd(fd);
      if (fileType(stat.mode) !== libc.S_IFREG) {
        libc.close(fd);
        throw new P9Error(E.PERM, 'only regular files can be created and opened');
      }
      return { fd, stat };
    });
  }

  mkdir(dir: Path, name: string, mode: number): Stat {
    this.writable();
    return this.inDir(dir, (dfd) => {
      sys(() => libc.mkdirat(dfd, checkName(name), mode & 0o7777));
      return this.statAt(dfd, name);
    });
  }

  /** Regular files, FIFOs and sockets only: a device node is refused with EPERM. */
  mknod(dir: Path, name: string, mode: number): Stat {
    this.writable();
    const type = fileType(mode);
    if (type !== libc.S_IFREG && type !== libc.S_IFIFO && type !== libc.S_IFSOCK && type !== 0) throw new P9Error(E.PERM, 'device nodes cannot be made');
    return this.inDir(dir, (dfd) => {
      sys(() => libc.mknodat(dfd, checkName(name), (type || libc.S_IFREG) | (mode & 0o7777)));
      return this.statAt(dfd, name);
    });
  }

  symlink(dir: Path, name: string, target: string): Stat {
    this.writable();
    if (target.length === 0 || target.includes('\0') || Buffer.byteLength(target) > PATH_MAX) throw new P9Error(E.INVAL, 'bad symlink target');
    return this.inDir(dir, (dfd) => {
      sys(() => libc.symlinkat(target, dfd, checkName(name)));
      return this.statAt(dfd, name);
    });
  }

  /** A hard link `name` in `dir` to the file at `target` (a path below the root, so a file of the share). */
  link(target: Path, dir: Path, name: string): void {
    this.writable();
    if (target.length === 0) throw new P9Error(E.PERM, 'the root cannot be linked');
    this.inDir(target.slice(0, -1), (odfd) => this.inDir(dir, (ndfd) => sys(() => libc.linkat(odfd, target[target.length - 1]!, ndfd, checkName(name), 0))));
  }

  rename(oldDir: Path, oldName: string, newDir: Path, newName: string): void {
    this.writable();
    this.inDir(oldDir, (odfd) => this.inDir(newDir, (ndfd) => sys(() => libc.renameat2(odfd, checkName(oldName), ndfd, checkName(newName)))));
  }

  unlink(dir: Path, name: string, removeDir: boolean): void {
    this.writable();
    this.inDir(dir, (dfd) => sys(() => libc.unlinkat(dfd, checkName(name), removeDir ? libc.AT_REMOVEDIR : 0)));
  }

  readlink(path: Path): Uint8Array {
    return this.at(path, (fd) => {
      const buf = new Uint8Array(PATH_MAX + 1);
      const n = sys(() => libc.readlinkat(fd, '', buf));
      return buf.subarray(0, n);
    });
  }

  private statAt(dfd: number, name: string): Stat {
    const fd = this.lookup(dfd, name);
    try {
      return this.statFd(fd);
    } finally {
      libc.close(fd);
    }
  }

  setMode(path: Path, mode: number): void {
    this.writable();
    this.at(path, (fd) => sys(() => libc.fchmodat2(fd, '', mode & 0o7777, libc.AT_EMPTY_PATH)));
  }

  setOwner(path: Path, uid: number | undefined, gid: number | undefined): void {
    this.writable();
    this.at(path, (fd) => sys(() => libc.fchownat(fd, '', uid ?? UNCHANGED, gid ?? UNCHANGED, libc.AT_EMPTY_PATH)));
  }

  /** Times as [sec, nsec], or 'now', or undefined (left as is). */
  setTimes(path: Path, atime: [number, number] | 'now' | undefined, mtime: [number, number] | 'now' | undefined): void {
    this.writable();
    const spec = (t: [number, number] | 'now' | undefined): [bigint, bigint] =>
      t === undefined ? [0n, BigInt(libc.UTIME_OMIT)] : t === 'now' ? [0n, BigInt(libc.UTIME_NOW)] : [BigInt(t[0]), BigInt(t[1])];
    const times = new BigInt64Array([...spec(atime), ...spec(mtime)]);
    this.at(path, (fd) => sys(() => libc.utimensat(fd, '', times, libc.AT_EMPTY_PATH)));
  }

  /** Truncates the regular file at `path` (opened for writing only for this, and checked to be that file). */
  truncate(path: Path, size: number): void {
    this.writable();
    const before = this.stat(path);
    if (fileType(before.mode) !== libc.S_IFREG) throw new P9Error(fileType(before.mode) === libc.S_IFDIR ? E.ISDIR : E.INVAL, 'only regular files can be truncated');
    const fd = sys(() => libc.openat2(this.rootFd, pathString(path), libc.O_WRONLY | libc.O_NOFOLLOW | libc.O_NONBLOCK | libc.O_NOCTTY, 0, RESOLVE));
    this.checkSame(fd, before);
    try {
      sys(() => libc.ftruncate(fd, size));
    } finally {
      libc.close(fd);
    }
  }

  /** struct statfs of the share's file system. */
  statfs(): DataView {
    const b = new Uint8Array(120);
    sys(() => libc.fstatfs(this.rootFd, b));
    return new DataView(b.buffer);
  }
}
