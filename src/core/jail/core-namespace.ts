// The core's own mount namespace, when it is started as root and sealed
// (not --no-jail-core). A namespace taken by one thread of a running Node
// process would leave its other threads in the host's, so the core
// re-executes itself first (same pid, arguments and stdio) in new private
// mount and IPC namespaces: every thread it will ever have lives there.
// It then opens what it was given as usual, and at its seal turns its root
// into an empty read-only tmpfs (pivot_root): the host's files are gone
// for every thread, not only forbidden by seccomp. The children that need
// the host's files after that — its launcher and passt — are started in a
// mount namespace of their own (util-linux unshare), a copy the pivot does
// not touch. The namespaces' mounts are slaves of the host's: the host's
// unmounts reach them, nothing mounted in them reaches the host.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { execve, F_SETFD, fcntl } from '../../sys/libc.js';
import { CLONE_NEWIPC, CLONE_NEWNS, MNT_DETACH, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT, MS_SLAVE, mount, pivotRoot, umount2, unshare } from '../../sys/mounts.js';
import { which } from '../../sys/paths.js';

/**
 * In the environment of the re-executed core: its pid and the mount
 * namespace it made, "PID:mnt:[N]". Believed only when both are still
 * true, so a stray or forged value never makes the core pivot the root of
 * a namespace it shares with others.
 */
const MARK = 'SPLITVM_CORE_NAMESPACE';
/** Where the empty root is mounted before the pivot (any directory of the host's root would do). */
const NEW_ROOT = '/tmp';
/** How long a child started with the host's view may take to leave the core's namespace. */
const CHILD_WAIT_MS = 5000;

export class CoreJailError extends Error {}

let inside = false;
/** Children started with the host's view, which must have left the core's namespace before the pivot. */
const hostViewChildren = new Set<number>();
/** util-linux unshare, found when first needed. */
let unshareTool: string | null = null;

/**
 * Called first by a command that will seal the core. Started as root, the
 * process re-executes itself in its own namespaces (this call then does not
 * return); once there, or not root, it returns.
 */
export function enterCoreNamespace(): void {
  const mark = process.env[MARK];
  delete process.env[MARK];
  if (process.getuid!() !== 0) return;
  const current = mountNamespaceOf('self');
  // The host's init never shares the namespace the core made (unless the core is the init of a container).
  if (mark !== undefined && mark === `${process.pid}:${current}` && (process.pid === 1 || current !== mountNamespaceOf(1))) {
    inside = true;
    return;
  }
  try {
    unshare(CLONE_NEWNS | CLONE_NEWIPC);
    mount(null, '/', null, MS_REC | MS_SLAVE); // nothing mounted here reaches the host
  } catch (e) {
    throw new CoreJailError(`cannot give the core a mount namespace of its own (${(e as Error).message}); --no-jail-core runs it without one, for debugging`);
  }
  const made = mountNamespaceOf('self');
  if (made === null) throw new CoreJailError('cannot read /proc/self/ns/mnt: the core needs /proc to enter its own namespaces');
  // Node marks fds 0-15 close-on-exec at its start: the new image keeps its stdio and the fds its arguments name.
  for (const fd of new Set([0, 1, 2, ...fdsNamedIn(process.argv)])) {
    try {
      fcntl(fd, F_SETFD, 0);
    } catch {
      // not open: the argument's own error comes after the re-execution
    }
  }
  const env = Object.entries({ ...process.env, [MARK]: `${process.pid}:${made}` }).map(([k, v]) => `${k}=${v ?? ''}`);
  try {
    execve(process.execPath, [process.execPath, ...process.execArgv, ...process.argv.slice(1)], env);
  } catch (e) {
    throw new CoreJailError(`cannot re-execute the core in its own namespaces (${(e as Error).message})`);
  }
}

/** The fds that arguments name as /dev/fd/N or /proc/self/fd/N (an image given as an open fd). */
function fdsNamedIn(argv: readonly string[]): number[] {
  return argv.flatMap((a) => [...a.matchAll(/\/(?:dev|proc\/self)\/fd\/(\d+)/g)].map((m) => Number(m[1])));
}

/** Whether this process is a core in its own mount namespace. */
export function inCoreNamespace(): boolean {
  return inside;
}

/** Starts a child that keeps the host's files after the core's pivot: in a mount namespace of its own when the core has one. */
export function spawnWithHostView(command: string, args: readonly string[], options: SpawnOptions): ChildProcess {
  if (!inside) return spawn(command, args, options);
  unshareTool ??= which('unshare');
  if (!unshareTool) throw new CoreJailError(`util-linux's unshare is not installed (Debian package util-linux): the core needs it to start ${path.basename(command)}`);
  const child = spawn(unshareTool, ['--mount', '--propagation', 'unchanged', '--', command, ...args], options);
  const pid = child.pid;
  if (pid !== undefined) {
    hostViewChildren.add(pid);
    child.once('exit', () => hostViewChildren.delete(pid));
  }
  return child;
}

/** The mount namespace of a process, or null when it is gone. */
function mountNamespaceOf(pid: number | 'self'): string | null {
  try {
    return fs.readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return null;
  }
}

/**
 * At the seal (before the uid drop, while the core may still mount): makes
 * the root of every thread an empty read-only tmpfs. Nothing if the core has
 * no namespace of its own.
 */
export function pivotToEmptyRoot(): void {
  if (!inside) return;
  const ours = mountNamespaceOf('self');
  const deadline = Date.now() + CHILD_WAIT_MS;
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (const pid of hostViewChildren) {
    for (let ns = mountNamespaceOf(pid); ns === ours; ns = mountNamespaceOf(pid)) {
      if (Date.now() > deadline) throw new CoreJailError(`child ${pid} did not leave the core's mount namespace in time`);
      Atomics.wait(nap, 0, 0, 1); // a millisecond: unshare(1) takes about that
    }
  }
  try {
    mount(null, '/', null, MS_REC | MS_SLAVE); // again: a pivot must never reach another namespace
    mount('tmpfs', NEW_ROOT, 'tmpfs', MS_NOSUID | MS_NODEV | MS_NOEXEC, 'size=4k,nr_inodes=2,mode=0555');
    process.chdir(NEW_ROOT);
    pivotRoot('.', '.'); // the old root is stacked under the new one at "."…
    umount2('.', MNT_DETACH); // …and detached from it
    process.chdir('/');
    mount(null, '/', null, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC);
  } catch (e) {
    throw new CoreJailError(`cannot give the core an empty root (${(e as Error).message}); --no-jail-core runs it without one, for debugging`);
  }
}
