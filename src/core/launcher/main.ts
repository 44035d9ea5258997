// The launcher: a small process the core starts before it seals itself,
// which does nothing but start device processes in their jails on the
// core's request, and report their ends. A sealed core may not fork or
// exec; restarting a device after a death needs both. The launcher keeps
// the privileges the core had at start (to run bwrap, and to start devices
// as their host uid), takes how devices are confined from its command line
// (fixed before the seal), and checks every request (protocol.ts).
//   node dist/src/core/launcher/main.js SETTINGS_JSON     channel: fd 3
// When the core goes away (its end of the channel closes) the launcher
// kills the devices it started, removes the files the core could no longer
// remove (its sockets), and exits.
import fs from 'node:fs';
import * as libc from '../../sys/libc.js';
import { FdWatcher, POLLIN } from '../../sys/poll.js';
import { recvWithFds, sendWithFds } from '../../sys/unix-socket.js';
import type { HostIds } from '../jail/identity.js';
import { launchDevice, type DeviceProcess, type SeccompMode } from '../jail/launch.js';
import { encode, LauncherProtocolError, parseRequest, type LauncherReply, type LaunchRequest, type LauncherSettings } from './protocol.js';

const CHANNEL = 3;

function settingsFrom(arg: string | undefined): LauncherSettings {
  const s = JSON.parse(arg ?? '{}') as Partial<LauncherSettings>;
  const modes: SeccompMode[] = ['enforce', 'log', 'off'];
  if (typeof s.jail !== 'boolean' || !modes.includes(s.seccomp as SeccompMode) || !Array.isArray(s.removeOnExit)) throw new Error('launcher: bad settings');
  const ids = s.hostIds as HostIds | undefined;
  if (ids && !(Number.isInteger(ids.uid) && Number.isInteger(ids.gid))) throw new Error('launcher: bad host ids');
  const endOnExit = Array.isArray(s.endOnExit) ? s.endOnExit.filter((p) => Number.isInteger(p) && p > 1) : [];
  return { jail: s.jail, seccomp: s.seccomp!, removeOnExit: s.removeOnExit.filter((p) => typeof p === 'string'), endOnExit, ...(ids ? { hostIds: ids } : {}) };
}

const settings = settingsFrom(process.argv[2]);
const devices = new Map<number, Omit<DeviceProcess, 'control' | 'log'>>();
/** fds received since the last launch (the next launch's). */
const received: number[] = [];
/** The message being read: its 4-byte length, then its body. */
let header: Uint8Array = new Uint8Array(0);
let body: Uint8Array | null = null;
let bodyAt = 0;

function reply(m: LauncherReply): void {
  const b = encode(m);
  const frame = new Uint8Array(4 + b.length);
  new DataView(frame.buffer).setUint32(0, b.length, true);
  frame.set(b, 4);
  if (sendWithFds(CHANNEL, frame) < 0) shutdown(); // the core is gone
}

function closeAll(fds: number[]): void {
  for (const fd of fds) {
    try {
      libc.close(fd);
    } catch {
      // already closed
    }
  }
}

async function launch(r: LaunchRequest, fds: number[]): Promise<void> {
  const at = (i: number): number => {
    const fd = fds[i];
    if (fd === undefined) throw new LauncherProtocolError(`launch: fd ${i} was not sent`);
    return fd;
  };
  try {
    const control = at(r.control);
    const log = at(r.log);
    const deviceFds = r.fdMap.map((i) => (i < 0 ? null : at(i)));
    if (r.entry !== undefined && !settings.jail) throw new LauncherProtocolError('launch: another entry is only run jailed');
    const proc = await launchDevice({
      name: r.name, kind: r.kind, config: r.config, fds: deviceFds, jail: settings.jail, seccomp: settings.seccomp,
      ends: { control, log }, ...(r.fileSizeLimit !== undefined ? { fileSizeLimit: r.fileSizeLimit } : {}), ...(r.entry !== undefined ? { entry: r.entry } : {}),
      ...(settings.hostIds ? { hostIds: settings.hostIds } : {}),
    });
    devices.set(r.id, proc);
    const ids = settings.hostIds ?? { uid: process.getuid!(), gid: process.getgid!() };
    reply({ t: 'launched', id: r.id, pid: proc.pid, uid: ids.uid, gid: ids.gid });
    void proc.exited.then((e) => {
      devices.delete(r.id);
      reply({ t: 'exited', id: r.id, code: e.code, signal: e.signal });
    });
  } catch (e) {
    reply({ t: 'failed', id: r.id, message: (e as Error).message.slice(0, 500) });
  } finally {
    closeAll(fds); // the device has its own copies
  }
}

/** One whole message; the fds that came with it are in `received`. */
function handle(bytes: Uint8Array): void {
  let r;
  try {
    r = parseRequest(bytes);
  } catch (e) {
    process.stderr.write(`splitvm launcher: refused a request from the core: ${(e as Error).message}\n`);
    closeAll(received.splice(0));
    return;
  }
  if (r.t === 'fds') return;
  if (r.t === 'exit') return shutdown();
  if (r.t === 'kill') return devices.get(r.id)?.kill();
  void launch(r, received.splice(0));
}

/** Reads what is there: a message's 4-byte length, then its body (fds come with the bytes they were sent with). */
function onReadable(): void {
  for (;;) {
    const want = body ? body.length - bodyAt : 4 - header.length;
    const got = recvWithFds(CHANNEL, want);
    if (got.n === -libc.EAGAIN) break;
    if (got.n <= 0) return shutdown();
    received.push(...got.fds);
    if (!body) {
      header = concat(header, got.data);
      if (header.length < 4) continue;
      const len = new DataView(header.buffer, header.byteOffset).getUint32(0, true);
      header = new Uint8Array(0);
      if (len === 0 || len > 64 * 1024) return shutdown();
      body = new Uint8Array(len);
      bodyAt = 0;
      continue;
    }
    body.set(got.data, bodyAt);
    bodyAt += got.data.length;
    if (bodyAt === body.length) {
      const message = body;
      body = null;
      handle(message);
    }
  }
  watcher.want(POLLIN);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function shutdown(): never {
  for (const d of devices.values()) d.kill();
  for (const p of settings.removeOnExit) fs.rmSync(p, { force: true });
  for (const pid of settings.endOnExit) {
    try {
      // Only what it was (a pid may have been reused since): the helper's name, as passt's /proc/PID/comm
      // (passt re-executes itself as the build for this CPU, passt.avx2).
      if (/^passt(\.|$)/.test(fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim())) process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
  }
  libc.exitNow(0);
}

libc.setNonBlocking(CHANNEL);
const watcher = new FdWatcher(CHANNEL, onReadable);
watcher.want(POLLIN);
process.on('SIGINT', () => undefined); // a terminal's Ctrl-C goes to the core, which ends us by closing the channel
process.on('SIGTERM', () => undefined);
