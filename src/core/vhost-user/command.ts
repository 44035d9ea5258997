// `splitvm device blk|net --socket PATH …`: serves one splitvm device kind
// to vhost-user frontends (QEMU, Cloud Hypervisor, …) on a UNIX socket.
// The backend (image, tap, passt) is opened here as `splitvm run` opens it;
// each frontend that connects gets its own session (session.ts), one at a
// time, so a frontend that reconnects (QEMU's `reconnect=`) is served again.
// The device itself always runs jailed under its enforcing policy unless
// --seccomp says otherwise.
import fs from 'node:fs';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import * as libc from '../../sys/libc.js';
import { FdWatcher, POLLIN } from '../../sys/poll.js';
import { acceptUnix, listenUnix } from '../../sys/unix-socket.js';
import { blkKind } from '../kinds/blk.js';
import { netKind } from '../kinds/net.js';
import { DeviceSpecError, type CoreDeviceKind, type OpenedBackend } from '../kinds/index.js';
import type { SeccompMode } from '../jail/launch.js';
import { VirtioDeviceProcess } from '../supervisor/device-process.js';
import type { HelloMessage } from '../../ipc/messages.js';
import { VhostUserSession } from './session.js';
import { deviceIdentity, type HostIds } from '../jail/identity.js';
import { DeviceLauncher } from '../launcher/client.js';
import { enterCoreNamespace } from '../jail/core-namespace.js';
import { sealCore } from '../jail/seal.js';
import { startApiServer, type ApiServer, type ControlTarget, type VmState } from '../api/server.js';

export const VHOST_USER_USAGE = `usage: splitvm device blk --socket PATH --disk IMG[,ro][,serial=S][,queues=N] [options]
       splitvm device net --socket PATH --net user|tap=NAME[,mac=MAC] [options]
       splitvm device 9p --share DIR[,ro] --listen HOST:PORT|PATH   (see splitvm device 9p --help)
blk and net serve the device to one vhost-user frontend at a time on the UNIX socket PATH.
  --seccomp MODE     the device's seccomp policy: enforce (default), log or off
  --api-socket PATH  serve the control API on PATH (see splitvm ctl --help)
  --uid N, --gid N   the host ids the device process runs as when started as root (default 65534)
  --spare-devices    keep a spare device process, ready to take the rings over the moment the
                     serving one dies (needs a frontend with INFLIGHT_SHMFD, as QEMU's vhost-user-blk)
  --no-jail-core     do not seal this process (no seccomp filter or namespaces of its own, no launcher): for debugging only
  --log-level L      fatal, error, warn, info, debug or trace (default info)`;

const KINDS: Record<string, CoreDeviceKind<unknown>> = { blk: blkKind as CoreDeviceKind<unknown>, net: netKind as CoreDeviceKind<unknown> };

export class VhostUserUsageError extends Error {}

export interface VhostUserArgs {
  kind: CoreDeviceKind<unknown>;
  spec: unknown;
  socket: string;
  seccomp: SeccompMode;
  logLevel: string;
  apiSocket?: string;
  hostIds?: HostIds;
  /** Leave this process unsealed (--no-jail-core). */
  noJailCore?: boolean;
  spareDevices?: boolean;
}

export function parseVhostUserArgs(verb: string, argv: string[]): VhostUserArgs {
  const kind = KINDS[verb];
  if (!kind) throw new VhostUserUsageError(`splitvm device serves blk, net or 9p, not "${verb}"`);
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, strict: true, allowPositionals: false,
      options: { socket: { type: 'string' }, [kind.flag]: { type: 'string' }, 'api-socket': { type: 'string' }, uid: { type: 'string' }, gid: { type: 'string' }, 'no-jail-core': { type: 'boolean' }, 'spare-devices': { type: 'boolean' }, seccomp: { type: 'string', default: 'enforce' }, 'log-level': { type: 'string', default: 'info' } },
    });
  } catch (e) {
    throw new VhostUserUsageError((e as Error).message.split('\n')[0]!.replace(/\. To specify.*$/, ''));
  }
  const noJailCore = parsed.values['no-jail-core'] === true;
  const spareDevices = parsed.values['spare-devices'] === true;
  const v = parsed.values as Record<string, string | undefined>;
  if (!v.socket) throw new VhostUserUsageError(`splitvm device ${verb} needs --socket PATH`);
  const value = v[kind.flag];
  if (!value) throw new VhostUserUsageError(`splitvm device ${verb} needs --${kind.flag}`);
  const seccomp = v.seccomp!;
  if (seccomp !== 'enforce' && seccomp !== 'log' && seccomp !== 'off') throw new VhostUserUsageError(`--seccomp must be enforce, log or off, not "${seccomp}"`);
  if (!['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].includes(v['log-level']!)) throw new VhostUserUsageError(`--log-level must be one of fatal, error, warn, info, debug, trace`);
  let spec: unknown;
  try {
    spec = kind.parse(value, 0);
  } catch (e) {
    if (e instanceof DeviceSpecError) throw new VhostUserUsageError(e.message);
    throw e;
  }
  if (v['api-socket'] !== undefined && v['api-socket'] === v.socket) throw new VhostUserUsageError('--api-socket must be another path than --socket');
  const hostIds = deviceIdentity(v.uid, v.gid); // an IdentityError is a usage error (cli.ts)
  return { kind, spec, socket: v.socket, seccomp, logLevel: v['log-level']!, ...(v['api-socket'] ? { apiSocket: v['api-socket'] } : {}), ...(hostIds ? { hostIds } : {}), ...(noJailCore ? { noJailCore } : {}), ...(spareDevices ? { spareDevices } : {}) };
}

/** Starts the device once on a one-page scratch memory to learn its hello (features, queues, config). */
async function deviceHello(name: string, backend: OpenedBackend, args: VhostUserArgs, log: pino.Logger): Promise<HelloMessage> {
  const memfd = libc.memfdCreate('splitvm-probe');
  libc.ftruncate(memfd, 4096);
  const probe = await VirtioDeviceProcess.start({
    name, kind: args.kind.kind, numQueues: backend.numQueues, backendFd: libc.dup(backend.fd), options: backend.options,
    fileSizeLimit: backend.fileSizeLimit, memory: { fd: memfd, regions: [{ gpa: 0, size: 4096, offset: 0 }] },
    jail: true, seccomp: args.seccomp, logLevel: 'warn', log, ...(args.hostIds ? { hostIds: args.hostIds } : {}),
  });
  const hello = probe.hello;
  await probe.shutdown();
  libc.close(memfd);
  return hello;
}

/** Runs until SIGINT or SIGTERM; resolves with the exit status. */
export async function serveVhostUser(args: VhostUserArgs): Promise<number> {
  if (!args.noJailCore) enterCoreNamespace(); // as root: re-executes this process in its own namespaces
  const log = pino({ name: 'splitvm-device', level: args.logLevel }, pino.destination({ fd: 2, sync: true }));
  const name = `${args.kind.kind}0`;
  const backend = await args.kind.open(args.spec, { index: 0, vmName: 'vhost-user', log });
  let listenFd = -1;
  try {
    const hello = await deviceHello(name, backend, args, log);
    if (fs.existsSync(args.socket)) {
      if (!fs.lstatSync(args.socket).isSocket()) throw new VhostUserUsageError(`${args.socket} exists and is not a socket`);
      fs.unlinkSync(args.socket); // a stale socket of an earlier run
    }
    listenFd = listenUnix(args.socket);
    fs.chmodSync(args.socket, 0o600);
    let session: VhostUserSession | null = null;
    let state: VmState = 'running';
    let requestStop!: () => void;
    const stop = new Promise<void>((resolve) => {
      requestStop = resolve;
      process.once('SIGINT', resolve);
      process.once('SIGTERM', resolve);
    });
    const started = Date.now();
    const sessionNow = (): VhostUserSession | null => session;
    const target: ControlTarget = {
      get state() {
        return state;
      },
      summary: () => ({
        role: 'vhost-user backend', kind: args.kind.kind, socket: args.socket, frontend: sessionNow() ? 'connected' : 'waiting',
        uptimeSeconds: Math.round((Date.now() - started) / 1000),
      }),
      get devices() {
        const d = sessionNow()?.deviceProcess;
        return d ? [d] : [];
      },
      pause: async () => {
        state = 'paused';
        await sessionNow()?.deviceProcess?.pause();
      },
      resume: async () => {
        state = 'running';
        sessionNow()?.deviceProcess?.resume();
      },
      stop: () => {
        state = 'stopping';
        requestStop();
      },
      metrics: () => {
        const c = sessionNow()?.counters ?? { messages: 0, refused: 0, deviceStarts: 0 };
        return [
          { name: 'splitvm_vhost_user_messages_total', type: 'counter', help: "Messages of the current frontend's session.", samples: [{ labels: {}, value: c.messages }] },
          { name: 'splitvm_vhost_user_refused_total', type: 'counter', help: "Messages of the current frontend's session refused as malformed or out of place.", samples: [{ labels: {}, value: c.refused }] },
        ];
      },
    };
    let api: ApiServer | null = null;
    if (args.apiSocket) api = await startApiServer(args.apiSocket, target, log);
    let launcher: DeviceLauncher | undefined;
    if (args.noJailCore) {
      process.stderr.write('splitvm: WARNING: --no-jail-core: this process, which parses what the frontend sends, runs unsealed (no seccomp filter); for debugging only\n');
    } else {
      // Everything is open: from here on this process only serves, and devices start through the launcher.
      const removeOnExit = [args.socket, ...(args.apiSocket ? [args.apiSocket] : [])];
      launcher = DeviceLauncher.start({ jail: true, seccomp: args.seccomp, removeOnExit, endOnExit: backend.helperPid ? [backend.helperPid] : [], ...(args.hostIds ? { hostIds: args.hostIds } : {}) }, log);
      sealCore(args.seccomp, log, args.hostIds);
    }
    log.info({ socket: args.socket, kind: args.kind.kind, ...backend.describe, features: hello.deviceFeatures, sealed: !args.noJailCore }, 'waiting for a vhost-user frontend');
    const accept = (): void => {
      if (session) return;
      const fd = acceptUnix(listenFd);
      if (fd < 0) return void watcher.want(POLLIN);
      log.info('vhost-user frontend connected');
      session = new VhostUserSession(fd, { name, backend, hello, seccomp: args.seccomp, jail: true, log, paused: () => state === 'paused', ...(args.hostIds ? { hostIds: args.hostIds } : {}), ...(launcher ? { launcher } : {}), spare: args.spareDevices === true });
      void session.done.then(() => {
        session = null;
        accept();
      });
    };
    const watcher = new FdWatcher(listenFd, accept);
    watcher.want(POLLIN);
    await stop;
    state = 'stopping';
    watcher.close();
    const s = session as VhostUserSession | null;
    if (s) await s.close('shutting down');
    await api?.close();
    await launcher?.close(); // it removes the sockets this sealed process may not
    return 0;
  } finally {
    if (listenFd >= 0) {
      libc.close(listenFd);
      removeSocket(args.socket);
    }
    libc.close(backend.fd);
    backend.release?.();
  }
}

/** Removes a socket file, if this process still may (a sealed one may not: its launcher does, once it is gone). */
function removeSocket(p: string): void {
  try {
    fs.rmSync(p, { force: true });
  } catch {
    // sealed: left to the launcher
  }
}
