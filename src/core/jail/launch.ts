// Starting a device process, jailed or not: builds the bubblewrap command
// line (namespaces, a read-only minimal root, no capabilities, rlimits through
// prlimit), lays out the fds the device inherits, and reports the device's
// host pid and its own exit status (so a seccomp kill shows as SIGSYS).
//
// Why bubblewrap rather than util-linux unshare: bwrap builds the whole
// jail in one audited, well-kept Debian tool — a fresh tmpfs root with only
// the binds we list, every namespace, --cap-drop ALL, --die-with-parent,
// --new-session, a read-only remount of the root — and --json-status-fd gives
// the jailed process's host pid and exit status. `unshare` would need a
// hand-written mount/pivot_root script (and a shell in the jail) for the same
// root, has no die-with-parent and no status channel.
//
// Memory: each kind's RLIMIT_DATA (DEVICE_DATA_LIMIT), set through prlimit.
// Host identity: with `hostIds` (a core running as root, identity.ts) the
// jail is entered as that unprivileged uid and gid, not as root.
//
// fds in the device: 0,1 /dev/null; 2 log; 3 control socketpair; 4, 5, … the
// `fds` given (memfd, backend, kick0, call0, kick1, call1, …; a null there is
// /dev/null, e.g. a device without a backend). Nothing else:
// every other fd of the core is made close-on-exec first, and bwrap closes
// its status fd before it execs the device.
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import os from 'node:os';
import type { Readable } from 'node:stream';
import type { Socket } from 'node:net';
import { DEVICE_GLIBC_TUNABLES, DEVICE_NODE_FLAGS } from '../../devices/contract.js';
import type { DeviceKind } from '../../ipc/messages.js';
import { markAllCloexec } from '../../sys/libc.js';
import { repoRoot, which } from '../../sys/paths.js';
import { checkReadable, IdentityError, type HostIds } from './identity.js';

export type SeccompMode = 'enforce' | 'log' | 'off';

export interface LaunchOptions {
  /** instance name for messages, e.g. "blk0" */
  name: string;
  /** device kind; also names its policy (policies/<kind>.policy) and its memory bound (DEVICE_DATA_LIMIT) */
  kind: DeviceKind;
  /** device configuration, passed as JSON in argv[2] with name, kind and seccomp added */
  config: object;
  /** in order: guest memory memfd, backend fd, kick0, call0, kick1, call1, … → device fds 4, 5, 6, …; null: /dev/null there */
  fds: (number | null)[];
  /** false: run the device directly (debugging only; no namespaces, no rlimits) */
  jail: boolean;
  /** what installPolicy does in the device */
  seccomp: SeccompMode;
  /** the device's fd 2: 'inherit' (the core's stderr, default) or 'pipe' (DeviceProcess.log) */
  log?: 'inherit' | 'pipe';
  /** the script to run; default deviceEntry(). Must lie in <repo>/dist when jailed. */
  entry?: string;
  /** Node flags; default DEVICE_NODE_FLAGS (--jitless --no-expose-wasm: the policies forbid executable memory) and DEVICE_HEAP_FLAGS */
  nodeFlags?: string[];
  /** RLIMIT_FSIZE in bytes (Node ignores SIGXFSZ: writes past it fail with EFBIG); default unlimited */
  fileSizeLimit?: number;
  /** the host uid and gid the jailed device runs as (the core must be root); default: the core's own */
  hostIds?: HostIds;
  /**
   * The device's ends of its control socket and log pipe, made by the caller
   * (a launcher serving a sealed core, which keeps the other ends), instead of
   * new ones: the process then comes back without `control` and `log`.
   */
  ends?: DeviceEnds;
}

export interface DeviceEnds {
  control: number;
  log: number;
}

export interface DeviceExit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface DeviceProcess {
  name: string;
  /** the control socketpair's core end (the device's fd 3) */
  control: Socket;
  /** host pid of the Node device process itself (not of bwrap) */
  pid: number;
  /** the host uid and gid it was started as */
  ids: HostIds;
  /** the device's stderr when log was 'pipe' */
  log: Readable | null;
  /** resolves once the device process is gone, with its own status */
  exited: Promise<DeviceExit>;
  /** SIGKILLs the device (and its jail) if still running */
  kill(): void;
}

/** What a user can fix (a missing tool, a jail the kernel refuses): one sentence, no stack. */
export class LaunchError extends Error {
  override name = 'LaunchError';
}

/*
 * Node flags: DEVICE_NODE_FLAGS (contract.ts). --jitless lets the policy
 * forbid PROT_EXEC: with its JIT, V8 makes its code pages read-write-execute,
 * a gift to whoever corrupts the device's memory. Measured on the fixture's
 * virtio-blk request loop (test/jail/fixtures/jitless-bench.ts): 4 KiB reads
 * cost ~0.8 µs of CPU each with the JIT and ~2.3 µs without (64 KiB: 2.7 vs
 * 4.5 µs); start-up +50 ms; memory the same. Each request already costs the
 * guest a VM exit of several µs, so the device is not the bottleneck.
 */
export { DEVICE_NODE_FLAGS };
/**
 * V8 heap flags of a device process. A device's garbage is short-lived
 * (descriptor chains, requests): a 1 MiB young-generation semi-space
 * (default: grown up to 16 MiB under allocation) keeps its private memory
 * about 5 MiB lower — a blk device serving 4 KiB and 1 MiB requests at
 * depth 32 from 16 to 11 MiB — with no measurable cost per request
 * (npm run bench -- blk).
 */
export const DEVICE_HEAP_FLAGS = ['--max-semi-space-size=1'];
/**
 * libuv's pool in a device: 8 threads for disk and file I/O (blk, 9p), and
 * one a backend may keep parked in poll(2) (net, while a full tap or socket
 * cannot take its frames: sys/poll.ts). Kicks and incoming frames take none:
 * the event loop reads them (sys/loop-reader.ts).
 */
export const DEVICE_POOL_THREADS = 9;
/**
 * The environment every device process gets (nothing of the core's): one
 * malloc arena (the policies rely on it); its pool size; and msgpackr
 * without its native string decoder (msgpackr-extract), which speeds up
 * decoding long strings, and control messages have none, but finding and
 * loading it costs a device 5-10 ms of its start (measured: 18 ms to load
 * msgpackr with it, 7 ms without).
 */
export function deviceEnv(): Record<string, string> {
  return { GLIBC_TUNABLES: DEVICE_GLIBC_TUNABLES, UV_THREADPOOL_SIZE: String(DEVICE_POOL_THREADS), MSGPACKR_NATIVE_ACCELERATION_DISABLED: 'true' };
}

const MiB = 1024 * 1024;

/** RLIMIT_NOFILE of a jailed device: Node with a worker holds ~30 fds. */
export const DEVICE_NOFILE = 64;
/**
 * RLIMIT_DATA of a jailed device, per kind: the kernel counts private
 * writable mappings (malloc, V8's committed heap pages, thread stacks), not
 * V8's PROT_NONE reservations nor MAP_SHARED ones (guest memory, the
 * in-flight file), so a bound here does not depend on the guest's size.
 * Measured as the peak VmData of each kind's device serving its benchmark
 * (npm run bench -- blk|net|p9; blk at 1 MiB requests, queue depth 32):
 * blk 157 MiB, net 144 MiB, p9 134 MiB, of which ~130 MiB is there from the
 * start (mostly the 8 MiB stacks of the libuv pool's and V8's threads).
 * About twice that: V8 keeps the heap pages it committed, so a busy
 * device's heap can grow past what a benchmark shows (the jail tests'
 * fixture, a second isolate and 300k objects of garbage, peaks at 295 MiB).
 * A device past its bound fails its allocations and dies (V8's
 * out-of-memory abort, or an uncaught allocation failure); the core sees a
 * death like any other.
 */
export const DEVICE_DATA_LIMIT: Readonly<Record<DeviceKind, number>> = { blk: 384 * MiB, net: 320 * MiB, p9: 320 * MiB };
/**
 * RLIMIT_STACK (soft) of a jailed device: libuv and glibc size every thread's
 * stack from it, and those stacks count against RLIMIT_DATA, so the bound
 * must not depend on the caller's `ulimit -s`.
 */
export const DEVICE_STACK = 8 * MiB;
/** What of the repository the jail binds in (read-only). */
const JAIL_BINDS = ['package.json', 'dist', 'node_modules', 'policies'];
/** Host ids already found able to read what the jail binds (checked once each, not at every launch). */
const readableBy = new Set<string>();
/** Where the repository appears inside the jail. */
export const JAIL_REPO = '/splitvm';

/** bwrap arguments for a read-only root holding Node, its libraries and the repository's built code. */
export function jailArgs(opts: { root: string; kind: string; statusFd: number; env: Record<string, string> }): string[] {
  const a = [
    '--unshare-all', // user, mount, pid, net (only lo), ipc, uts, cgroup
    '--unshare-user', // even as root: a user namespace, in which we are nobody
    '--uid', '65534', '--gid', '65534',
    '--disable-userns', // and which cannot create another one
    '--hostname', `splitvm-${opts.kind}`,
    '--die-with-parent',
    '--new-session',
    '--as-pid-1', // the device itself is pid 1: json status then carries its pid and exit status
    '--cap-drop', 'ALL',
    '--clearenv',
    ...Object.entries(opts.env).flatMap(([k, v]) => ['--setenv', k, v]),
    '--ro-bind', '/usr', '/usr',
  ];
  // merged /usr makes these symlinks; otherwise they are real folders
  for (const top of ['/bin', '/lib', '/lib64', '/lib32', '/libx32']) {
    let st: fs.Stats;
    try {
      st = fs.lstatSync(top);
    } catch {
      continue;
    }
    if (st.isSymbolicLink()) a.push('--symlink', fs.readlinkSync(top), top);
    else if (st.isDirectory()) a.push('--ro-bind', top, top);
  }
  a.push('--ro-bind-try', '/etc/ld.so.cache', '/etc/ld.so.cache');
  const node = fs.realpathSync(process.execPath);
  if (!node.startsWith('/usr/')) a.push('--ro-bind', node, node);
  for (const part of JAIL_BINDS) {
    a.push('--ro-bind', path.join(opts.root, part), path.join(JAIL_REPO, part));
  }
  a.push('--remount-ro', '/', '--chdir', '/', '--json-status-fd', String(opts.statusFd));
  return a;
}

const SIGNALS_BY_NUMBER = new Map<number, NodeJS.Signals>(
  Object.entries(os.constants.signals).map(([name, n]) => [n, name as NodeJS.Signals]),
);

/** bwrap reports a child killed by signal N as exit code 128 + N. */
function fromBwrapCode(code: number): DeviceExit {
  const sig = SIGNALS_BY_NUMBER.get(code - 128);
  return code > 128 && sig ? { code: null, signal: sig } : { code, signal: null };
}

/**
 * The built entry every device process runs: <repo>/dist/device/main.cjs,
 * src/devices/main.ts and everything it imports bundled into one CommonJS
 * file by esbuild (npm run build), except koffi, which loads its native
 * addon from node_modules (and msgpackr's optional native extension, which a
 * device does not load: deviceEnv). One file loads about
 * 50 ms sooner than the ~60 modules tsc leaves in dist/src, and Node starts
 * a CommonJS entry sooner than a module (no ES module loader to set up):
 * another 10-30 ms (harness, alternating starts, spawn to hello). It is the
 * same compiled code, under the same jail and policy (it imports nothing
 * once the policy is in). Without the bundle (tsc alone was run),
 * dist/src/devices/main.js.
 */
export function deviceEntry(): string {
  const bundle = path.join(repoRoot(), 'dist', 'device', 'main.cjs');
  return fs.existsSync(bundle) ? bundle : path.join(repoRoot(), 'dist', 'src', 'devices', 'main.js');
}

/** Starts a device process; resolves once its host pid is known. */
export async function launchDevice(opts: LaunchOptions & { ends: DeviceEnds }): Promise<Omit<DeviceProcess, 'control' | 'log'>>;
export async function launchDevice(opts: LaunchOptions): Promise<DeviceProcess>;
export async function launchDevice(opts: LaunchOptions): Promise<DeviceProcess> {
  const root = repoRoot();
  const entry = path.resolve(opts.entry ?? deviceEntry());
  if (!fs.existsSync(entry)) {
    throw new LaunchError(`the device entry ${entry} does not exist; build it first (npm run build)`);
  }
  const nodeFlags = opts.nodeFlags ?? [...DEVICE_NODE_FLAGS, ...DEVICE_HEAP_FLAGS];
  const argJson = JSON.stringify({ ...opts.config, name: opts.name, kind: opts.kind, seccomp: opts.seccomp });
  // libuv leaves an 'ignore' slot above 2 closed; a null slot must be /dev/null (closed again once spawned)
  const devNull = opts.fds.includes(null) ? fs.openSync('/dev/null', 'r') : -1;
  const stdio: (number | 'ignore' | 'inherit' | 'pipe')[] = ['ignore', 'ignore', opts.ends?.log ?? opts.log ?? 'inherit', opts.ends?.control ?? 'pipe', ...opts.fds.map((fd) => fd ?? devNull)];
  const env = deviceEnv();

  let child: ChildProcess;
  let status: Readable | null = null;
  markAllCloexec();
  try {
    if (!opts.jail) {
      child = spawn(process.execPath, [...nodeFlags, entry, argJson], { stdio, env });
    } else {
      const rel = path.relative(path.join(root, 'dist'), entry);
      if (rel.startsWith('..') || path.isAbsolute(rel)) {
        throw new LaunchError(`a jailed device must run code from ${path.join(root, 'dist')}, not ${entry}`);
      }
      const bwrap = which('bwrap');
      if (!bwrap) throw new LaunchError('bubblewrap (bwrap) is not installed: install the Debian package bubblewrap, or run devices without a jail for debugging');
      const prlimit = which('prlimit');
      if (!prlimit) throw new LaunchError('prlimit is not installed: install the Debian package util-linux');
      const statusFd = stdio.length;
      stdio.push('pipe');
      const data = DEVICE_DATA_LIMIT[opts.kind];
      const limits = ['--core=0:0', `--nofile=${DEVICE_NOFILE}:${DEVICE_NOFILE}`, `--data=${data}:${data}`, `--stack=${DEVICE_STACK}:`];
      if (opts.fileSizeLimit !== undefined) limits.push(`--fsize=${opts.fileSizeLimit}:${opts.fileSizeLimit}`);
      // RLIMIT_NPROC is left alone: it counts every process of the (host) user,
      // and seccomp already forbids creating processes.
      const jailEntry = path.join(JAIL_REPO, 'dist', rel);
      const node = fs.realpathSync(process.execPath);
      const ids = opts.hostIds;
      if (ids && !readableBy.has(`${ids.uid}:${ids.gid}`)) {
        try {
          checkReadable(ids, [node, ...JAIL_BINDS.map((p) => path.join(root, p))]);
        } catch (e) {
          if (e instanceof IdentityError) throw new LaunchError(e.message);
          throw e;
        }
        readableBy.add(`${ids.uid}:${ids.gid}`);
      }
      const args = [...limits, bwrap, ...jailArgs({ root, kind: opts.kind, statusFd, env }), '--', node, ...nodeFlags, jailEntry, argJson];
      // With hostIds, libuv drops the supplementary groups and sets gid then uid before prlimit runs.
      child = spawn(prlimit, args, { stdio, env: {}, ...(opts.hostIds ?? {}) });
      status = child.stdio[statusFd] as Readable;
    }
  } finally {
    if (devNull >= 0) fs.closeSync(devNull);
  }

  const log = opts.log === 'pipe' && !opts.ends ? (child.stdio[2] as Readable) : null;
  let logTail = '';
  log?.on('data', (d: Buffer) => {
    logTail = (logTail + d.toString()).slice(-2000);
  });
  const control = child.stdio[3] as Socket;
  let bwrapExit: DeviceExit | null = null;
  const exited = new Promise<DeviceExit>((resolve, reject) => {
    child.once('error', (e) => reject(new LaunchError(`cannot start device ${opts.name}: ${e.message}`)));
    child.once('exit', (code, signal) => {
      bwrapExit = code !== null && opts.jail ? fromBwrapCode(code) : { code, signal };
      resolve(bwrapExit);
    });
  });
  exited.catch(() => undefined);

  let pid: number;
  if (!status) {
    pid = await new Promise<number>((resolve, reject) => {
      child.once('spawn', () => resolve(child.pid!));
      child.once('error', (e) => reject(new LaunchError(`cannot start device ${opts.name}: ${e.message}`)));
    });
  } else {
    const s = status;
    pid = await new Promise<number>((resolve, reject) => {
      let buf = '';
      s.on('data', (d: Buffer) => {
        buf += d.toString();
        for (const m of buf.matchAll(/"child-pid":\s*(\d+)/g)) resolve(Number(m[1]));
      });
      child.once('error', (e) => reject(new LaunchError(`cannot start device ${opts.name}: ${e.message}`)));
      void exited.then((e) => {
        const why = logTail.trim().split('\n').pop();
        reject(
          new LaunchError(
            `the jail for device ${opts.name} failed before the device started (bwrap ${e.signal ?? `exit ${e.code}`})` +
              (why ? `: ${why}` : ' (its message is in the device log)'),
          ),
        );
      });
    });
    s.resume();
  }

  return {
    name: opts.name,
    control,
    pid,
    ids: opts.hostIds ?? { uid: process.getuid!(), gid: process.getgid!() },
    log,
    exited,
    kill() {
      if (bwrapExit) return;
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
      child.kill('SIGKILL');
    },
  };
}
