// The core's side of its launcher (main.ts): starts it before the core
// seals itself, then asks it to start each device process. The core makes
// the device's control socket and log pipe itself (socketpair and pipe stay
// allowed once sealed) and sends the device's ends with the request, so
// nothing comes back but small replies, read from a plain stream socket.
// What comes back is a DeviceProcess like launchDevice's: the supervisor
// cannot tell the difference.
import net from 'node:net';
import path from 'node:path';
import type { Logger } from 'pino';
import { FrameReader } from '../../ipc/codec.js';
import * as libc from '../../sys/libc.js';
import { repoRoot } from '../../sys/paths.js';
import { MAX_FDS, sendWithFds } from '../../sys/unix-socket.js';
import { spawnWithHostView } from '../jail/core-namespace.js';
import { LaunchError, type DeviceExit, type DeviceProcess, type LaunchOptions } from '../jail/launch.js';
import { encode, parseReply, type LaunchRequest, type LauncherReply, type LauncherSettings } from './protocol.js';

/** The built launcher (tests under tsx run the same built file as `splitvm`). */
const entry = (): string => path.join(repoRoot(), 'dist', 'src', 'core', 'launcher', 'main.js');

interface Running {
  exited: (e: DeviceExit) => void;
}

export class DeviceLauncher {
  private nextId = 1;
  private readonly waiting = new Map<number, (r: LauncherReply) => void>();
  private readonly running = new Map<number, Running>();
  private gone = false;
  private readonly closed: Promise<void>;
  private onClosed!: () => void;

  private constructor(
    private readonly fd: number,
    private readonly socket: net.Socket,
    private readonly log: Logger,
  ) {
    this.closed = new Promise((resolve) => (this.onClosed = resolve));
    const frames = new FrameReader();
    socket.on('data', (chunk: Buffer) => {
      for (const body of frames.push(chunk)) this.onReply(parseReply(body));
    });
    socket.on('close', () => this.onGone());
    socket.on('error', () => this.onGone());
  }

  /** Starts the launcher with the settings every device will be confined by. */
  static start(settings: LauncherSettings, log: Logger): DeviceLauncher {
    const [core, theirs] = libc.socketpair();
    libc.markAllCloexec(); // the launcher inherits its channel and stdio, nothing else of the core
    const child = spawnWithHostView(process.execPath, [entry(), JSON.stringify(settings)], { stdio: ['ignore', 'ignore', 'inherit', theirs] });
    libc.close(theirs);
    if (child.pid === undefined) {
      libc.close(core);
      throw new LaunchError('the device launcher did not start');
    }
    child.unref();
    const socket = new net.Socket({ fd: core, readable: true, writable: true });
    socket.unref(); // the launcher lives as long as the core; it must not keep the core's event loop alive
    log.info({ pid: child.pid }, 'device launcher started');
    return new DeviceLauncher(core, socket, log);
  }

  private onReply(r: LauncherReply): void {
    if (r.t === 'exited') {
      this.running.get(r.id)?.exited({ code: r.code, signal: r.signal as NodeJS.Signals | null });
      this.running.delete(r.id);
      return;
    }
    this.waiting.get(r.id)?.(r);
    this.waiting.delete(r.id);
    if (this.waiting.size === 0) this.socket.unref();
  }

  private onGone(): void {
    this.onClosed();
    if (this.gone) return;
    this.gone = true;
    this.log.error('the device launcher is gone: no device can be started any more');
    // Its devices die with it (bwrap --die-with-parent).
    for (const r of this.running.values()) r.exited({ code: null, signal: 'SIGKILL' });
    this.running.clear();
    for (const w of this.waiting.values()) w({ t: 'failed', id: 0, message: 'the device launcher is gone' });
    this.waiting.clear();
  }

  private send(m: Parameters<typeof encode>[0], fds: number[] = []): void {
    const body = encode(m);
    const frame = new Uint8Array(4 + body.length);
    new DataView(frame.buffer).setUint32(0, body.length, true);
    frame.set(body, 4);
    const n = sendWithFds(this.fd, frame, fds);
    if (n !== frame.length) throw new LaunchError(`cannot reach the device launcher (${n < 0 ? libc.errnoName(-n) : 'short write'})`);
  }

  /**
   * The core stops cleanly: the launcher ends what is left, removes the
   * core's sockets, ends passt and exits; resolves once it has (at most 2 s).
   */
  async close(): Promise<void> {
    if (this.gone) return;
    this.gone = true; // its exit is expected now, not an error
    this.socket.ref();
    try {
      this.send({ t: 'exit' });
    } catch {
      return;
    }
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.closed, new Promise<void>((resolve) => (timer = setTimeout(resolve, 2000)))]);
    clearTimeout(timer);
  }

  /** Starts a device process as launchDevice would, through the launcher. */
  async launch(opts: LaunchOptions): Promise<DeviceProcess> {
    if (this.gone) throw new LaunchError('the device launcher is gone: no device can be started any more');
    const id = this.nextId++;
    const [coreControl, deviceControl] = libc.socketpair();
    const [logRead, logWrite] = opts.log === 'pipe' ? libc.pipe() : [-1, libc.dup(2)];
    const sent = [deviceControl, logWrite];
    const fdMap = opts.fds.map((fd) => (fd === null ? -1 : sent.push(fd) - 1));
    const request: LaunchRequest = {
      t: 'launch', id, name: opts.name, kind: opts.kind, config: opts.config as Record<string, unknown>, control: 0, log: 1, fdMap,
      ...(opts.fileSizeLimit !== undefined ? { fileSizeLimit: opts.fileSizeLimit } : {}), ...(opts.entry !== undefined ? { entry: opts.entry } : {}),
    };
    const reply = new Promise<LauncherReply>((resolve) => this.waiting.set(id, resolve));
    this.socket.ref(); // an answer awaited keeps the core's event loop alive
    try {
      for (let at = 0; at < sent.length; at += MAX_FDS) {
        const chunk = sent.slice(at, at + MAX_FDS);
        if (at + MAX_FDS < sent.length) this.send({ t: 'fds' }, chunk);
        else this.send(request, chunk);
      }
    } catch (e) {
      this.waiting.delete(id);
      if (this.waiting.size === 0) this.socket.unref();
      for (const fd of [coreControl, logRead]) if (fd >= 0) libc.close(fd);
      throw e;
    } finally {
      libc.close(deviceControl); // the launcher has its own copies now
      libc.close(logWrite);
    }
    const r = await reply;
    if (r.t !== 'launched') {
      for (const fd of [coreControl, logRead]) if (fd >= 0) libc.close(fd);
      throw new LaunchError(r.t === 'failed' ? r.message : 'the device launcher answered nonsense');
    }
    let exitedResolve!: (e: DeviceExit) => void;
    const exited = new Promise<DeviceExit>((resolve) => (exitedResolve = resolve));
    let done = false;
    this.running.set(id, { exited: (e) => ((done = true), exitedResolve(e)) });
    return {
      name: opts.name,
      pid: r.pid,
      ids: { uid: r.uid, gid: r.gid },
      control: new net.Socket({ fd: coreControl, readable: true, writable: true }),
      log: logRead >= 0 ? new net.Socket({ fd: logRead, readable: true, writable: false }) : null,
      exited,
      kill: () => {
        if (!done && !this.gone) this.send({ t: 'kill', id });
      },
    };
  }
}
