// Host system calls through koffi: the one place where libc is loaded (the
// vectored-I/O and polling calls beside it, iovec.ts and poll.ts, bind from
// the same handle). Core and device processes both import from here; every
// call that can fail goes through `check`, which turns -1 into a SysError
// carrying errno.
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');
/** The loaded libc, for the bindings in this folder. */
export const libcLibrary = libc;

export class SysError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    super(`${call} failed: ${errnoName(errno)}`);
    this.name = 'SysError';
  }
}

const ERRNO_NAMES: Record<number, string> = {
  1: 'EPERM', 2: 'ENOENT', 4: 'EINTR', 5: 'EIO', 9: 'EBADF', 11: 'EAGAIN', 12: 'ENOMEM',
  13: 'EACCES', 14: 'EFAULT', 16: 'EBUSY', 17: 'EEXIST', 19: 'ENODEV', 21: 'EISDIR',
  22: 'EINVAL', 24: 'EMFILE', 25: 'ENOTTY', 27: 'EFBIG', 28: 'ENOSPC', 30: 'EROFS', 38: 'ENOSYS',
  95: 'EOPNOTSUPP',
};

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

/** Throws SysError when a libc call returned a negative value. */
export function check<T extends number | bigint>(call: string, ret: T): T {
  if (ret < 0) throw new SysError(call, koffi.errno());
  return ret;
}

// ---- file descriptors ----
export const O_RDONLY = 0;
export const O_RDWR = 2;
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;

const open_ = libc.func('int open(const char *path, int flags, uint32_t mode)');
const close_ = libc.func('int close(int fd)');
const read_ = libc.func('intptr_t read(int fd, void *buf, size_t len)');
const write_ = libc.func('intptr_t write(int fd, void *buf, size_t len)');
const pread_ = libc.func('intptr_t pread(int fd, void *buf, size_t len, int64_t off)');
const pwrite_ = libc.func('intptr_t pwrite(int fd, void *buf, size_t len, int64_t off)');
const fdatasync_ = libc.func('int fdatasync(int fd)');
const fallocate_ = libc.func('int fallocate(int fd, int mode, int64_t off, int64_t len)');
const ftruncate_ = libc.func('int ftruncate(int fd, int64_t len)');
const memfd_create_ = libc.func('int memfd_create(const char *name, unsigned int flags)');
const eventfd_ = libc.func('int eventfd(unsigned int initval, int flags)');

/** read(2) without the throw, for non-blocking fds: bytes read (0 at end of file) or -errno. */
export function readRaw(fd: number, buf: Uint8Array): number {
  const r = Number(read_(fd, buf, buf.length));
  return r < 0 ? -koffi.errno() : r;
}
export const EAGAIN = 11;
export const EOPNOTSUPP = 95;

export const open = (path: string, flags: number, mode = 0): number => check(`open ${path}`, open_(path, flags | O_CLOEXEC, mode));
export const close = (fd: number): void => void check('close', close_(fd));
export const pread = (fd: number, buf: Uint8Array, off: number): number => Number(check('pread', pread_(fd, buf, buf.length, off)));
export const pwrite = (fd: number, buf: Uint8Array, off: number): number => Number(check('pwrite', pwrite_(fd, buf, buf.length, off)));
export const fdatasync = (fd: number): void => void check('fdatasync', fdatasync_(fd));
export const fallocate = (fd: number, mode: number, off: number, len: number): void =>
  void check('fallocate', fallocate_(fd, mode, off, len));
export const ftruncate = (fd: number, len: number): void => void check('ftruncate', ftruncate_(fd, len));

export const MFD_CLOEXEC = 1;
export const MFD_ALLOW_SEALING = 2;
export const F_ADD_SEALS = 1033;
export const F_GET_SEALS = 1034;
export const F_SEAL_SHRINK = 0x2;
export const F_SEAL_GROW = 0x4;
export const memfdCreate = (name: string, flags = MFD_CLOEXEC): number => check('memfd_create', memfd_create_(name, flags));

export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;
export const eventfd = (flags = EFD_CLOEXEC | EFD_NONBLOCK): number => check('eventfd', eventfd_(0, flags));

const u64 = new BigUint64Array(1);
const u64bytes = new Uint8Array(u64.buffer);
/** Adds `n` to an eventfd's counter. */
export function eventfdWrite(fd: number, n = 1n): void {
  u64[0] = n;
  check('eventfd write', write_(fd, u64bytes, 8));
}
/** Reads and clears an eventfd's counter; 0 when it was empty (non-blocking fd). */
export function eventfdRead(fd: number): bigint {
  const r = read_(fd, u64bytes, 8);
  if (r < 0) {
    if (koffi.errno() === 11) return 0n;
    throw new SysError('eventfd read', koffi.errno());
  }
  return u64[0]!;
}

// ---- memory ----
export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 1;
export const MAP_PRIVATE = 2;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
const MAP_FAILED = 0xffffffffffffffffn;

const mmap_ = libc.func('uint64_t mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)');

/** Maps `len` bytes and returns the host address. */
export function mmap(len: number, prot: number, flags: number, fd: number, off = 0): bigint {
  // koffi gives a uint64 as a number when it fits in 53 bits, else a bigint.
  const addr = BigInt(mmap_(null, len, prot, flags, fd, off) as number | bigint);
  if (addr === MAP_FAILED) throw new SysError('mmap', koffi.errno());
  return addr;
}

/** A zero-copy ArrayBuffer over `len` bytes of host memory at `addr`. */
export function view(addr: bigint, len: number): ArrayBuffer {
  return koffi.view(addr, len);
}

// ---- threads and processes ----
const syscall3 = libc.func('long syscall(long nr, long a, long b, long c)');
const SYS_GETTID = 186;
const SYS_TGKILL = 234;
export const gettid = (): number => Number(syscall3(SYS_GETTID, 0, 0, 0));
export const tgkill = (tgid: number, tid: number, sig: number): void =>
  void check('tgkill', syscall3(SYS_TGKILL, tgid, tid, sig));

const sigfillset_ = libc.func('int sigfillset(void *set)');
const sigdelset_ = libc.func('int sigdelset(void *set, int signo)');
const pthreadSigmask_ = libc.func('int pthread_sigmask(int how, void *set, void *old)');
const SIG_BLOCK = 0;
/** Blocks every signal on the calling thread but `keep` (glibc's own internal signals stay deliverable). */
export function blockSignalsExcept(keep: readonly number[]): void {
  const set = Buffer.alloc(128); // sigset_t
  check('sigfillset', sigfillset_(set));
  for (const sig of keep) check('sigdelset', sigdelset_(set, sig));
  const rc = pthreadSigmask_(SIG_BLOCK, set, null) as number; // returns the error number itself
  if (rc !== 0) throw new SysError('pthread_sigmask', rc);
}

const prctl_ = libc.func('int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)');
export const prctl = (option: number, a2 = 0, a3 = 0, a4 = 0, a5 = 0): number =>
  check('prctl', prctl_(option, a2, a3, a4, a5));

// ---- ioctl ----
// ioctl is variadic in C; on x86-64 a fixed prototype with one word-sized
// argument is call-compatible, and much cheaper through koffi.
const ioctlWord = libc.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']);
const ioctlBuf = libc.func('ioctl', 'int', ['int', 'unsigned long', 'void *']);

/** ioctl with an integer argument (or none). Returns the result; throws on -1. */
export const ioctl = (fd: number, req: number, arg = 0): number => check(`ioctl 0x${req.toString(16)}`, ioctlWord(fd, req, arg));
/** ioctl whose argument points to `buf` (read and written in place). */
export const ioctlIn = (fd: number, req: number, buf: Uint8Array): number => check(`ioctl 0x${req.toString(16)}`, ioctlBuf(fd, req, buf));
/** ioctl without the throw: returns -errno. For hot loops (KVM_RUN). */
export function ioctlRaw(fd: number, req: number, arg = 0): number {
  const r = ioctlWord(fd, req, arg);
  return r < 0 ? -koffi.errno() : r;
}

// ---- fcntl and fd hygiene ----
const fcntl_ = libc.func('fcntl', 'int', ['int', 'int', 'int']);
const F_GETFD = 1;
export const F_SETFD = 2;
const FD_CLOEXEC = 1;
export const F_GETFL = 3;
export const F_SETFL = 4;
/** fcntl with an integer argument (F_GETFL, F_SETFL, F_ADD_SEALS). */
export const fcntl = (fd: number, cmd: number, arg = 0): number => check('fcntl', fcntl_(fd, cmd, arg));
const F_DUPFD_CLOEXEC = 1030;
/** A close-on-exec duplicate of `fd` (the lowest free number). */
export const dup = (fd: number): number => fcntl(fd, F_DUPFD_CLOEXEC, 0);
/** Clears O_NONBLOCK on `fd` (shared by every holder of the same open file). */
export function setBlocking(fd: number): void {
  const flags = fcntl(fd, F_GETFL);
  if (flags & O_NONBLOCK) fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
}

const SYS_CLOSE_RANGE = 436; // Linux 5.9+
const CLOSE_RANGE_CLOEXEC = 4; // Linux 5.11+
/**
 * Sets FD_CLOEXEC on every fd >= 3 of this process, so that a child spawned
 * next gets only what its stdio lists (libuv dup2s those into place, which
 * clears the flag).
 */
export function markAllCloexec(): void {
  if (Number(syscall3(SYS_CLOSE_RANGE, 3, 0xffffffff, CLOSE_RANGE_CLOEXEC)) === 0) return;
  // kernels before 5.11: flag each possible fd in turn
  for (let fd = 3; fd < 65536; fd++) {
    const flags = fcntl_(fd, F_GETFD, 0);
    if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl_(fd, F_SETFD, flags | FD_CLOEXEC);
  }
}

// ---- what device processes use, and what the jail tests probe them with ----
const socket_ = libc.func('int socket(int domain, int type, int protocol)');
export const AF_INET = 2;
export const SOCK_STREAM = 1;
export const socket = (domain: number, type: number, protocol = 0): number => check('socket', socket_(domain, type, protocol));
export const AF_UNIX = 1;
export const SOCK_CLOEXEC = 0o2000000;
const socketpair_ = libc.func('int socketpair(int domain, int type, int protocol, _Out_ int *sv)');
/** A connected pair of AF_UNIX stream sockets, close-on-exec. */
export function socketpair(): [number, number] {
  const sv = [0, 0];
  check('socketpair', socketpair_(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
  return [sv[0]!, sv[1]!];
}
const pipe2_ = libc.func('int pipe2(_Out_ int *fds, int flags)');
/** A pipe, close-on-exec: [read end, write end]. */
export function pipe(): [number, number] {
  const fds = [0, 0];
  check('pipe2', pipe2_(fds, O_CLOEXEC));
  return [fds[0]!, fds[1]!];
}
/** Sets O_NONBLOCK on `fd` (shared by every holder of the same open file). */
export function setNonBlocking(fd: number): void {
  const flags = fcntl(fd, F_GETFL);
  if (!(flags & O_NONBLOCK)) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
}

const execve_ = libc.func('int execve(const char *path, const char **argv, const char **envp)');
/** Replaces the process image; returns only by throwing. */
export function execve(path: string, argv: string[], envp: string[] = []): never {
  execve_(path, [...argv, null], [...envp, null]);
  throw new SysError(`execve ${path}`, koffi.errno());
}

export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
export const FALLOC_FL_ZERO_RANGE = 0x10;

const exit_ = libc.func('void _exit(int status)');
/**
 * Ends the process at once (_exit: no atexit handlers). A device process uses
 * it because Node's normal exit joins libuv's pool threads, and one may be
 * parked in a poll(2) that never returns (sys/poll.ts: net's tap).
 */
export function exitNow(status: number): never {
  exit_(status);
  throw new Error('_exit returned');
}

// ---- file-system calls relative to directory fds (the 9p device) ----
// Each takes a directory fd (never AT_FDCWD in the 9p device: its policy
// kills that) and one path component or "" with AT_EMPTY_PATH. Directory fds
// are passed as `long`, so a negative fd reaches the kernel sign-extended,
// which the policies' range checks rely on.
export const O_WRONLY = 1;
export const O_ACCMODE = 3;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_NOCTTY = 0o400;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_DSYNC = 0o10000;
export const O_DIRECTORY = 0o200000;
export const O_NOFOLLOW = 0o400000;
export const O_SYNC = 0o4010000;
export const O_PATH = 0o10000000;
export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_REMOVEDIR = 0x200;
export const AT_EMPTY_PATH = 0x1000;
export const RESOLVE_NO_XDEV = 0x01;
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_NO_SYMLINKS = 0x04;
export const RESOLVE_BENEATH = 0x08;
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;
export const STATX_BASIC_STATS = 0x7ff;
export const STATX_BTIME = 0x800;
export const UTIME_NOW = 0x3fffffff;
export const UTIME_OMIT = 0x3ffffffe;
export const F_OFD_GETLK = 36;
export const F_OFD_SETLK = 37;
export const SEEK_SET = 0;

const SYS_OPENAT2 = 437;
const SYS_FCHMODAT2 = 452;
const openat2_ = libc.func('syscall', 'long', ['long', 'long', 'str', 'void *', 'long']);
const fchmodat2_ = libc.func('syscall', 'long', ['long', 'long', 'str', 'long', 'long']);
const statx_ = libc.func('int statx(long dirfd, const char *path, int flags, unsigned int mask, void *buf)');
const mkdirat_ = libc.func('int mkdirat(long dirfd, const char *path, uint32_t mode)');
const mknodat_ = libc.func('int mknodat(long dirfd, const char *path, uint32_t mode, uint64_t dev)');
const unlinkat_ = libc.func('int unlinkat(long dirfd, const char *path, int flags)');
// glibc's renameat2 calls renameat when flags is 0: the raw call keeps one system call to filter
const SYS_RENAMEAT2 = 316;
const renameat2_ = libc.func('syscall', 'long', ['long', 'long', 'str', 'long', 'str', 'long']);
const linkat_ = libc.func('int linkat(long olddirfd, const char *oldpath, long newdirfd, const char *newpath, int flags)');
const symlinkat_ = libc.func('int symlinkat(const char *target, long newdirfd, const char *linkpath)');
const readlinkat_ = libc.func('intptr_t readlinkat(long dirfd, const char *path, void *buf, size_t len)');
const fchownat_ = libc.func('int fchownat(long dirfd, const char *path, uint32_t uid, uint32_t gid, int flags)');
const utimensat_ = libc.func('int utimensat(long dirfd, const char *path, void *times, int flags)');
const getdents64_ = libc.func('intptr_t getdents64(int fd, void *buf, size_t len)');
const fstatfs_ = libc.func('int fstatfs(int fd, void *buf)');
const lseek_ = libc.func('int64_t lseek(int fd, int64_t off, int whence)');
const fsync_ = libc.func('int fsync(int fd)');
const fdatasyncAsync_ = libc.func('int fdatasync(int fd)');
const fcntlPtr = libc.func('fcntl', 'int', ['int', 'int', 'void *']);

/** struct open_how { u64 flags, u64 mode, u64 resolve } as u32 halves (all values fit in 32 bits), reused: the call is synchronous. */
const openHow = new Uint32Array(6);
/** openat2(2); returns the new fd. */
export function openat2(dirfd: number, path: string, flags: number, mode: number, resolve: number): number {
  openHow[0] = (flags | O_CLOEXEC) >>> 0;
  openHow[2] = mode >>> 0;
  openHow[4] = resolve >>> 0;
  return Number(check('openat2', openat2_(SYS_OPENAT2, dirfd, path, openHow, 24)));
}
/** statx(2) into `buf` (256 bytes, struct statx). */
export const statx = (dirfd: number, path: string, flags: number, mask: number, buf: Uint8Array): void =>
  void check('statx', statx_(dirfd, path, flags, mask, buf));
/** fchmodat2(2) (Linux 6.6+): with AT_EMPTY_PATH it changes the mode of what an O_PATH fd names. */
export const fchmodat2 = (dirfd: number, path: string, mode: number, flags: number): void =>
  void check('fchmodat2', fchmodat2_(SYS_FCHMODAT2, dirfd, path, mode, flags));
export const mkdirat = (dirfd: number, path: string, mode: number): void => void check('mkdirat', mkdirat_(dirfd, path, mode));
export const mknodat = (dirfd: number, path: string, mode: number): void => void check('mknodat', mknodat_(dirfd, path, mode, 0));
export const unlinkat = (dirfd: number, path: string, flags: number): void => void check('unlinkat', unlinkat_(dirfd, path, flags));
export const renameat2 = (olddirfd: number, oldpath: string, newdirfd: number, newpath: string, flags = 0): void =>
  void check('renameat2', renameat2_(SYS_RENAMEAT2, olddirfd, oldpath, newdirfd, newpath, flags));
export const linkat = (olddirfd: number, oldpath: string, newdirfd: number, newpath: string, flags = 0): void =>
  void check('linkat', linkat_(olddirfd, oldpath, newdirfd, newpath, flags));
export const symlinkat = (target: string, newdirfd: number, linkpath: string): void => void check('symlinkat', symlinkat_(target, newdirfd, linkpath));
/** readlinkat(2) into `buf`; returns the target's length (truncated to buf's). */
export const readlinkat = (dirfd: number, path: string, buf: Uint8Array): number => Number(check('readlinkat', readlinkat_(dirfd, path, buf, buf.length)));
export const fchownat = (dirfd: number, path: string, uid: number, gid: number, flags: number): void =>
  void check('fchownat', fchownat_(dirfd, path, uid, gid, flags));
/** utimensat(2); `times` is two struct timespec (4 × i64). */
export const utimensat = (dirfd: number, path: string, times: BigInt64Array, flags: number): void =>
  void check('utimensat', utimensat_(dirfd, path, times, flags));
/** getdents64(2) into `buf`; returns the bytes filled (0 at the end). */
export const getdents64 = (fd: number, buf: Uint8Array): number => Number(check('getdents64', getdents64_(fd, buf, buf.length)));
/** fstatfs(2) into `buf` (120 bytes, struct statfs). */
export const fstatfs = (fd: number, buf: Uint8Array): void => void check('fstatfs', fstatfs_(fd, buf));
/** lseek(2); the offset may be a bigint (directory cookies use all 63 bits). */
export const lseek = (fd: number, off: number | bigint, whence: number): void => void check('lseek', lseek_(fd, off, whence));
/** fcntl with a struct flock (32 bytes) argument: F_OFD_SETLK, F_OFD_GETLK. */
export const fcntlLock = (fd: number, cmd: number, flock: Uint8Array): void => void check('fcntl', fcntlPtr(fd, cmd, flock));
/** fsync(2) or fdatasync(2) on libuv's pool; `done` gets 0 or -errno. */
export function fsyncAsync(fd: number, dataOnly: boolean, done: (res: number) => void): void {
  (dataOnly ? fdatasyncAsync_ : fsync_).async(fd, (err: unknown, r: number) => done(err ? -5 : r < 0 ? -koffi.errno() : 0));
}

// ---- reads answered from the page cache without a trip to libuv's pool (9p) ----
export const RWF_NOWAIT = 0x8;
const preadv2_ = libc.func('intptr_t preadv2(int fd, void *iov, int count, int64_t off, int flags)');
/** preadv2(2) inline with `flags` (RWF_NOWAIT: EAGAIN rather than wait for the disk); bytes read or -errno. */
export function preadv2(fd: number, iov: Uint32Array, count: number, off: number, flags: number): number {
  const n = Number(preadv2_(fd, iov, count, off, flags));
  return n < 0 ? -koffi.errno() : n;
}
