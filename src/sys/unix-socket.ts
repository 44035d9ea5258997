// AF_UNIX stream sockets that carry file descriptors (SCM_RIGHTS), which
// Node's net module cannot receive: a listening socket, accept, and
// non-blocking recvmsg/sendmsg through koffi. The message header, iovec and
// control buffers live in one anonymous mapping whose host address is known,
// so the kernel structures can point into it.
import koffi from 'koffi';
import { AF_UNIX, EAGAIN, SOCK_CLOEXEC, SOCK_STREAM, check, close, libcLibrary as libc, MAP_ANONYMOUS, MAP_PRIVATE, mmap, PROT_READ, PROT_WRITE, view } from './libc.js';

const socket_ = libc.func('int socket(int domain, int type, int protocol)');
const bind_ = libc.func('int bind(int fd, void *addr, uint32_t len)');
const listen_ = libc.func('int listen(int fd, int backlog)');
const accept4_ = libc.func('int accept4(int fd, void *addr, void *len, int flags)');
const connect_ = libc.func('int connect(int fd, void *addr, uint32_t len)');
const recvmsg_ = libc.func('intptr_t recvmsg(int fd, uint64_t msg, int flags)');
const sendmsg_ = libc.func('intptr_t sendmsg(int fd, uint64_t msg, int flags)');

const SOCK_NONBLOCK = 0o4000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const MSG_CMSG_CLOEXEC = 0x40000000;
const MSG_NOSIGNAL = 0x4000;
const MSG_CTRUNC = 0x8;
/** The most fds one message may carry (vhost-user's memory table: 8 regions). */
export const MAX_FDS = 8;

function sockaddrUn(path: string): Uint8Array {
  const bytes = Buffer.from(path);
  if (bytes.length === 0 || bytes.length > 107) throw new RangeError(`socket path must be 1 to 107 bytes: ${path}`);
  const sa = new Uint8Array(110);
  new DataView(sa.buffer).setUint16(0, AF_UNIX, true);
  sa.set(bytes, 2);
  return sa;
}

/** A listening socket at `path` (which must not exist). Non-blocking, close-on-exec. */
export function listenUnix(path: string, backlog = 1): number {
  const fd = check('socket', socket_(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  try {
    const sa = sockaddrUn(path);
    check(`bind ${path}`, bind_(fd, sa, sa.length));
    check('listen', listen_(fd, backlog));
  } catch (e) {
    close(fd);
    throw e;
  }
  return fd;
}

/** A connected socket to `path`, blocking (tests and the harness's frontend). */
export function connectUnix(path: string): number {
  const fd = check('socket', socket_(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  try {
    const sa = sockaddrUn(path);
    check(`connect ${path}`, connect_(fd, sa, sa.length));
  } catch (e) {
    close(fd);
    throw e;
  }
  return fd;
}

/** Accepts one connection (non-blocking, close-on-exec), or returns -1 when none waits. */
export function acceptUnix(listenFd: number): number {
  const fd = accept4_(listenFd, null, null, SOCK_CLOEXEC | SOCK_NONBLOCK);
  if (fd >= 0) return fd;
  if (koffi.errno() === EAGAIN) return -1;
  return check('accept4', fd);
}

// Layout of the scratch mapping (one per process is enough: calls do not overlap).
const MSGHDR = 0; // struct msghdr, 56 bytes
const IOV = 64; // struct iovec, 16 bytes
const CMSG = 128; // control buffer: cmsghdr (16) + MAX_FDS ints, padded
const CMSG_BYTES = 16 + 4 * MAX_FDS;
const DATA = 256; // payload staging
export const MAX_MESSAGE_BYTES = 4096 - DATA;

let scratchAddr = 0;
let scratch: DataView;
let scratchBytes: Uint8Array;
function ensureScratch(): void {
  if (scratchAddr !== 0) return;
  scratchAddr = Number(mmap(4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1));
  const ab = view(BigInt(scratchAddr), 4096);
  scratch = new DataView(ab);
  scratchBytes = new Uint8Array(ab);
}

function setMsghdr(dataLen: number, controlLen: number): void {
  scratchBytes.fill(0, 0, DATA);
  scratch.setBigUint64(IOV, BigInt(scratchAddr + DATA), true);
  scratch.setBigUint64(IOV + 8, BigInt(dataLen), true);
  scratch.setBigUint64(MSGHDR + 16, BigInt(scratchAddr + IOV), true); // msg_iov
  scratch.setBigUint64(MSGHDR + 24, 1n, true); // msg_iovlen
  if (controlLen > 0) {
    scratch.setBigUint64(MSGHDR + 32, BigInt(scratchAddr + CMSG), true); // msg_control
    scratch.setBigUint64(MSGHDR + 40, BigInt(controlLen), true); // msg_controllen
  }
}

export interface Received {
  /** Bytes read (0: the peer closed), or -errno (-EAGAIN: nothing now). */
  n: number;
  data: Uint8Array;
  /** fds that came with these bytes (close-on-exec); the caller owns them. */
  fds: number[];
  /** The peer sent more fds than fit: they were dropped by the kernel. */
  truncated: boolean;
}

/** recvmsg of up to `max` bytes and any fds that come with them. */
export function recvWithFds(fd: number, max: number): Received {
  ensureScratch();
  const len = Math.min(max, MAX_MESSAGE_BYTES);
  setMsghdr(len, CMSG_BYTES);
  const r = Number(recvmsg_(fd, scratchAddr + MSGHDR, MSG_CMSG_CLOEXEC));
  if (r < 0) return { n: -koffi.errno(), data: new Uint8Array(0), fds: [], truncated: false };
  const fds: number[] = [];
  const controlLen = Number(scratch.getBigUint64(MSGHDR + 40, true));
  if (controlLen >= 16) {
    const cmsgLen = Number(scratch.getBigUint64(CMSG, true));
    const level = scratch.getInt32(CMSG + 8, true);
    const type = scratch.getInt32(CMSG + 12, true);
    if (level === SOL_SOCKET && type === SCM_RIGHTS) {
      for (let at = 16; at + 4 <= Math.min(cmsgLen, controlLen); at += 4) fds.push(scratch.getInt32(CMSG + at, true));
    }
  }
  const flags = scratch.getInt32(MSGHDR + 48, true);
  return { n: r, data: scratchBytes.slice(DATA, DATA + r), fds, truncated: (flags & MSG_CTRUNC) !== 0 };
}

/** sendmsg of `data` with optional fds; returns bytes sent or -errno. */
export function sendWithFds(fd: number, data: Uint8Array, fds: number[] = []): number {
  ensureScratch();
  if (data.length > MAX_MESSAGE_BYTES) throw new RangeError(`message of ${data.length} bytes is too long`);
  if (fds.length > MAX_FDS) throw new RangeError(`at most ${MAX_FDS} fds in one message`);
  const controlLen = fds.length > 0 ? 16 + 4 * fds.length : 0;
  setMsghdr(data.length, 0);
  scratchBytes.set(data, DATA);
  if (controlLen > 0) {
    scratch.setBigUint64(CMSG, BigInt(controlLen), true);
    scratch.setInt32(CMSG + 8, SOL_SOCKET, true);
    scratch.setInt32(CMSG + 12, SCM_RIGHTS, true);
    fds.forEach((f, i) => scratch.setInt32(CMSG + 16 + 4 * i, f, true));
    scratch.setBigUint64(MSGHDR + 32, BigInt(scratchAddr + CMSG), true);
    scratch.setBigUint64(MSGHDR + 40, BigInt((controlLen + 7) & ~7), true);
  }
  const r = Number(sendmsg_(fd, scratchAddr + MSGHDR, MSG_NOSIGNAL));
  return r < 0 ? -koffi.errno() : r;
}
