// Reading a file descriptor on Node's own event loop, into one buffer of
// ours: libuv's epoll watches the fd and reads it on the main thread, so what
// arrives (a guest's kick through KVM's ioeventfd or a vhost-user frontend's
// eventfd, a frame from a tap, bytes from passt's socket) reaches its handler
// after one thread wake-up. poll(2) on libuv's pool (FdWatcher, poll.ts)
// takes two, plus koffi's asynchronous call: measured from a write in
// another process to the handler, p50 31 µs and p90 54-60 µs this way
// against 100 µs and 120 µs there, with a quarter less CPU.
//
// Node has no public handle for an arbitrary fd: net.Socket({ fd }) refuses
// one whose type libuv cannot tell (an eventfd is an anonymous inode, a tap a
// character device). A libuv pipe handle takes any fd read(2) can serve, so
// the fd is opened as one through process.binding('pipe_wrap') — the one
// internal binding we use, on Node's allow-list for process.binding. Its
// reads land in the caller's buffer (a net.Socket's `onread` option: no
// allocation per read); the Socket only carries them and their errors, and
// this class starts and stops the handle's reading itself (readStart,
// readStop), not through the Socket's stream state, whose first resume reads
// once more on the next tick whatever came in between. libuv stops after a
// read that does not fill the buffer, so one read(2) per wake-up when the
// buffer is larger than what comes at once (an eventfd's 8 bytes, a tap's
// one frame).
//
// The handle gets a duplicate of the fd: Node closes its fd on an end or a
// read error, and the caller's own stays open and its number unreused.
// Opening it sets O_NONBLOCK on the file description, which the fd's other
// holders share: KVM ignores it, a vhost-user frontend (QEMU) makes its
// eventfds non-blocking itself, and the core opens taps and passt's socket
// non-blocking. Make a reader before a seccomp policy (fcntl F_DUPFD_CLOEXEC,
// ioctl FIONBIO); reading then needs only epoll_ctl and read. It does not
// keep the process alive by itself.
import net from 'node:net';
import { close, dup } from './libc.js';

interface PipeHandle {
  open(fd: number): number;
  readStart(): number;
  readStop(): number;
  /** Node's own record of whether the handle reads (it clears it when onread answers false). */
  reading: boolean;
}

interface PipeBinding {
  Pipe: new (type: number) => PipeHandle;
  constants: { SOCKET: number };
}

/** Called with the bytes of one read (buffer[0, n)); false stops reading until resume(). */
export type OnRead = (n: number) => boolean | void;

export class LoopReader {
  private readonly handle: PipeHandle;
  private readonly socket: net.Socket;
  private onRead: OnRead | null = null;
  /** Whether the owner wants reads (started and not paused). */
  private wanted = false;
  /** Whether the Socket is reading (libuv watches the fd). */
  private reading = false;
  private inCallback = false;

  /** Reads (a duplicate of) `fd` into `buffer`; `onError` hears of a read that failed or an end (the reader then stops). */
  constructor(
    readonly fd: number,
    readonly buffer: Uint8Array,
    private readonly onError: (err: Error) => void,
  ) {
    const { Pipe, constants } = (process as unknown as { binding(name: 'pipe_wrap'): PipeBinding }).binding('pipe_wrap');
    this.handle = new Pipe(constants.SOCKET);
    const copy = dup(fd);
    const err = this.handle.open(copy);
    if (err !== 0) {
      close(copy);
      throw new Error(`cannot watch fd ${fd} on the event loop (libuv error ${err})`);
    }
    // manualStart: a Socket made on a handle starts reading at once otherwise,
    // and a reader must not take anything before start(): a spare device
    // process holds the same kick eventfds and backend fd as the one serving,
    // and would steal what is meant for it.
    this.socket = new net.Socket({
      handle: this.handle,
      readable: true,
      writable: false,
      manualStart: true,
      onread: { buffer, callback: (n: number) => this.deliver(n) },
    } as net.SocketConstructorOpts);
    this.socket.unref(); // what it waits for never ends a process by itself
    this.socket.on('error', (e) => this.onError(e));
    this.socket.on('end', () => this.onError(new Error(`fd ${fd} reached its end`)));
  }

  /** Reads from now on (not before), calling `onRead` for each read; a later start only resumes. */
  start(onRead: OnRead): void {
    this.onRead ??= onRead;
    this.resume();
  }

  /** Reads again (after onRead returned false, or pause). */
  resume(): void {
    this.wanted = true;
    if (!this.inCallback && !this.reading && this.onRead && !this.socket.destroyed) {
      this.reading = true;
      this.handle.reading = true;
      const err = this.handle.readStart();
      if (err !== 0) this.socket.destroy(new Error(`cannot read fd ${this.fd} (libuv error ${err})`));
    }
  }

  /** Stops reading (what arrives waits in the fd) until resume(). */
  pause(): void {
    this.wanted = false;
    if (!this.inCallback && this.reading) {
      this.reading = false;
      this.handle.reading = false;
      if (!this.socket.destroyed) this.handle.readStop();
    }
  }

  private deliver(n: number): boolean {
    this.inCallback = true;
    try {
      if (this.onRead!(n) === false) this.wanted = false;
    } finally {
      this.inCallback = false;
    }
    // Returning false makes Node stop the handle (readStop); resume() starts it again.
    this.reading = this.wanted;
    return this.wanted;
  }
}
