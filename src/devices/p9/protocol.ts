// 9P2000.L as this server speaks it: message numbers, the bits of getattr,
// setattr, lopen and lock, errno values sent in Rlerror, and the limits that
// bound what one client can make the server hold.
export const VERSION_9P2000_L = '9P2000.L';
export const NOTAG = 0xffff;

export const T = {
  statfs: 8, lopen: 12, lcreate: 14, symlink: 16, mknod: 18, rename: 20, readlink: 22, getattr: 24, setattr: 26,
  xattrwalk: 30, xattrcreate: 32, readdir: 40, fsync: 50, lock: 52, getlock: 54, link: 70, mkdir: 72,
  renameat: 74, unlinkat: 76, version: 100, auth: 102, attach: 104, flush: 108, walk: 110, read: 116,
  write: 118, clunk: 120, remove: 122,
} as const;
/** Rlerror; every other R-message is its T-message's number plus one. */
export const RLERROR = 7;

/** Header sizes: size[4] type[1] tag[2]; Rread and Rreaddir add count[4]; Twrite's fid[4] offset[8] count[4]. */
export const HEADER = 7;
export const RREAD_HEADER = 11;
export const TWRITE_HEADER = 23;

export const QTDIR = 0x80;
export const QTSYMLINK = 0x02;
export const QTFILE = 0x00;

export const GETATTR_BASIC = 0x7ff;
export const GETATTR_BTIME = 0x800;

export const SETATTR = { mode: 0x1, uid: 0x2, gid: 0x4, size: 0x8, atime: 0x10, mtime: 0x20, ctime: 0x40, atimeSet: 0x80, mtimeSet: 0x100 } as const;

export const LOCK_SUCCESS = 0;
export const LOCK_BLOCKED = 1;
export const LOCK_TYPE_UNLCK = 2;

/** The errno values the server itself decides on (all others come from the host's calls as they are). */
export const E = {
  PERM: 1, NOENT: 2, IO: 5, BADF: 9, AGAIN: 11, ACCES: 13, NOTDIR: 20, ISDIR: 21, INVAL: 22, MFILE: 24,
  ROFS: 30, RANGE: 34, NAMETOOLONG: 36, NODATA: 61, OPNOTSUPP: 95,
} as const;

/** The largest msize we agree to (a 1 MiB read plus its header fits). */
export const MAX_MSIZE = 1024 * 1024 + 4096;
/** The smallest msize we accept: a walk of 16 names needs a few hundred bytes. */
export const MIN_MSIZE = 4096;
/** Fids one client may hold at once; the next attach or walk gets EMFILE. */
export const MAX_FIDS = 4096;
/**
 * Fids one client may hold open (each holds a host fd): the device process
 * runs with RLIMIT_NOFILE 64 (src/core/jail/launch.ts), of which Node keeps
 * about thirty.
 */
export const MAX_OPEN_FIDS = 20;
/** Names in one Twalk (the protocol's own limit). */
export const MAX_WALK_NAMES = 16;
/** One path component (NAME_MAX), and a whole path (PATH_MAX less its NUL). */
export const NAME_MAX = 255;
export const PATH_MAX = 4095;
/** Bytes asked of getdents64 at a time for one Treaddir (the reply may hold fewer). */
export const READDIR_CHUNK = 64 * 1024;

/** A request that fails with an errno the client gets in Rlerror. */
export class P9Error extends Error {
  constructor(
    readonly errno: number,
    message = `errno ${errno}`,
  ) {
    super(message);
    this.name = 'P9Error';
  }
}
