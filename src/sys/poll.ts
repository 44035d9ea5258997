// Waiting for an fd that Node cannot watch itself (a tap device, a socket
// whose bytes must land straight in guest memory): poll(2) on libuv's thread
// pool through koffi's async calls, with an eventfd beside the watched fd so
// the owner can cut a wait short when what it waits for changes.
import { eventfd, eventfdRead, eventfdWrite, EFD_CLOEXEC, EFD_NONBLOCK, libcLibrary as libc } from './libc.js';

const poll_ = libc.func('int poll(void *fds, unsigned long nfds, int timeout)');

export const POLLIN = 0x1;
export const POLLOUT = 0x4;
export const POLLERR = 0x8;
export const POLLHUP = 0x10;
export const POLLNVAL = 0x20;

/**
 * Watches one fd. `want(events)` asks to be called back once with the
 * events that became ready (plus POLLERR/POLLHUP); a later `want` with other
 * events replaces the earlier interest. At most one poll is in flight; it
 * polls a wake eventfd beside the fd, so that a change of interest cuts it
 * short, and that eventfd must be made before a seccomp policy forbids
 * eventfd2. (An fd that only has to be read is better watched on the event
 * loop itself: loop-reader.ts.)
 */
export class FdWatcher {
  /** struct pollfd[2]: { int fd; short events; short revents } — the watched fd, then the wake eventfd. */
  private readonly fds = new Int32Array(4);
  private readonly shorts = new Int16Array(this.fds.buffer);
  private readonly wakeFd: number;
  private inFlight = false;
  private interest = 0;
  private closed = false;

  constructor(
    readonly fd: number,
    private readonly onReady: (events: number) => void,
  ) {
    this.wakeFd = eventfd(EFD_CLOEXEC | EFD_NONBLOCK);
  }

  /** Calls onReady once any of `events` (or an error or hang-up) is ready; 0 cancels the interest. */
  want(events: number): void {
    if (this.closed) return;
    if (events === this.interest) return;
    this.interest = events;
    if (this.inFlight) this.wake();
    else if (events !== 0) this.start();
  }

  /** Stops watching for good (a poll in flight returns at once and is ignored). */
  close(): void {
    this.closed = true;
    this.interest = 0;
    if (this.inFlight) this.wake();
  }

  private wake(): void {
    eventfdWrite(this.wakeFd);
  }

  private start(): void {
    this.inFlight = true;
    const events = this.interest;
    this.fds[0] = this.fd;
    this.shorts[2] = events;
    this.shorts[3] = 0;
    this.fds[2] = this.wakeFd;
    this.shorts[6] = POLLIN;
    this.shorts[7] = 0;
    poll_.async(this.fds, 2, -1, (err: unknown, n: number) => {
      this.inFlight = false;
      if (this.closed) return;
      const woke = this.shorts[7]! !== 0;
      if (woke) eventfdRead(this.wakeFd);
      const ready = err || n < 0 ? 0 : this.shorts[3]! & (events | POLLERR | POLLHUP | POLLNVAL);
      if (ready !== 0) {
        this.interest = 0;
        this.onReady(ready);
      }
      if (!this.inFlight && this.interest !== 0) this.start();
    });
  }
}

