// Descriptor hygiene before starting a device process: marks every fd of the
// core above stderr close-on-exec, so only what a spawn lists in its stdio
// (which libuv dup2s into place, clearing the flag) reaches the device.
import koffi from 'koffi';

const libc = koffi.load('libc.so.6');
const syscall3 = libc.func('long syscall(long nr, unsigned long a, unsigned long b, unsigned long c)');
const SYS_CLOSE_RANGE = 436; // x86-64, Linux 5.9+
const CLOSE_RANGE_CLOEXEC = 4; // Linux 5.11+
const fcntl3 = libc.func('int fcntl(int fd, int cmd, int arg)');
const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;

/** Sets FD_CLOEXEC on every fd >= 3 of this process. */
export function markAllCloexec(): void {
  if (Number(syscall3(SYS_CLOSE_RANGE, 3, 0xffffffff, CLOSE_RANGE_CLOEXEC)) === 0) return;
  // kernels before 5.11: flag each possible fd in turn
  for (let fd = 3; fd < 65536; fd++) {
    const flags = fcntl3(fd, F_GETFD, 0);
    if (flags >= 0 && !(flags & FD_CLOEXEC)) fcntl3(fd, F_SETFD, flags | FD_CLOEXEC);
  }
}
