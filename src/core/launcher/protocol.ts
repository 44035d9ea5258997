// The messages between a sealed core and its launcher (main.ts), on a
// stream socketpair: a 4-byte length then a msgpack map, the fds of a
// request sent with its bytes (SCM_RIGHTS, at most MAX_FDS per message: a
// device's fds come in `fds` messages before its `launch`). The launcher checks every request: once sealed, the core
// is as exposed as anything a guest reaches, so a request names only what
// to start — never a command line, and never how it is confined, which the
// launcher fixed when it started (LauncherSettings).
import { Packr } from 'msgpackr';
import { DEVICE_KINDS, type DeviceKind } from '../../ipc/messages.js';
import type { HostIds } from '../jail/identity.js';
import type { SeccompMode } from '../jail/launch.js';

/** How every device is confined: given once, on the launcher's command line, before the core seals. */
export interface LauncherSettings {
  jail: boolean;
  seccomp: SeccompMode;
  hostIds?: HostIds;
  /** Files the core made and cannot remove once sealed (its sockets): removed when the core is gone. */
  removeOnExit: string[];
  /** Processes the core started and cannot signal once sealed (passt): ended (SIGTERM) when the core is gone. */
  endOnExit: number[];
}

// ---- core → launcher ----
/** The next fds of the launch that follows. */
export interface FdsRequest { t: 'fds' }
export interface LaunchRequest {
  t: 'launch';
  id: number;
  name: string;
  kind: DeviceKind;
  config: Record<string, unknown>;
  /** The device's ends of its control socket and log pipe: indexes into the fds received since the last launch. */
  control: number;
  log: number;
  /** Each device fd in order (memory, backend, kick and call per queue, …): an index as above, or -1 for /dev/null. */
  fdMap: number[];
  fileSizeLimit?: number;
  /** A device entry other than the default (tests' fixtures); must lie in the built code when jailed. */
  entry?: string;
}
export interface KillRequest { t: 'kill'; id: number }
/** The core stops cleanly: end what is left, remove the files, exit (the channel's close is the answer). */
export interface ExitRequest { t: 'exit' }
export type LauncherRequest = FdsRequest | LaunchRequest | KillRequest | ExitRequest;

// ---- launcher → core ----
/** The device runs: its host pid, and the host ids it runs as. */
export interface Launched { t: 'launched'; id: number; pid: number; uid: number; gid: number }
export interface LaunchFailed { t: 'failed'; id: number; message: string }
export interface Exited { t: 'exited'; id: number; code: number | null; signal: string | null }
export type LauncherReply = Launched | LaunchFailed | Exited;

const packr = new Packr({ useRecords: false, mapsAsObjects: true });
export const encode = (m: LauncherRequest | LauncherReply): Uint8Array => packr.pack(m);

export class LauncherProtocolError extends Error {}

type Obj = Record<string, unknown>;
const isObj = (x: unknown): x is Obj => typeof x === 'object' && x !== null && !Array.isArray(x) && !ArrayBuffer.isView(x);
const isId = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
/** Device fds of one launch at most: memory, backend, in-flight record and a kick and call per queue (16). */
export const MAX_DEVICE_FDS = 3 + 2 * 16;

function decode(bytes: Uint8Array): Obj {
  let m: unknown;
  try {
    m = packr.unpack(bytes);
  } catch {
    throw new LauncherProtocolError('not msgpack');
  }
  if (!isObj(m) || typeof m.t !== 'string') throw new LauncherProtocolError('not a message');
  return m;
}

/** A request from the core, checked (the launcher trusts nothing in it). */
export function parseRequest(bytes: Uint8Array): LauncherRequest {
  const m = decode(bytes);
  switch (m.t) {
    case 'fds':
      return { t: 'fds' };
    case 'exit':
      return { t: 'exit' };
    case 'kill':
      if (!isId(m.id)) throw new LauncherProtocolError('kill: bad id');
      return { t: 'kill', id: m.id };
    case 'launch': {
      if (!isId(m.id)) throw new LauncherProtocolError('launch: bad id');
      if (typeof m.name !== 'string' || !/^[\w.-]{1,64}$/.test(m.name)) throw new LauncherProtocolError('launch: bad name');
      if (!DEVICE_KINDS.includes(m.kind as DeviceKind)) throw new LauncherProtocolError('launch: unknown kind');
      if (!isObj(m.config)) throw new LauncherProtocolError('launch: config must be a map');
      if (!Array.isArray(m.fdMap) || m.fdMap.length > MAX_DEVICE_FDS || !m.fdMap.every((i) => Number.isSafeInteger(i) && i >= -1 && i < MAX_DEVICE_FDS + 2)) {
        throw new LauncherProtocolError('launch: bad fd map');
      }
      if (![m.control, m.log].every((i) => Number.isSafeInteger(i) && (i as number) >= 0 && (i as number) < MAX_DEVICE_FDS + 2)) throw new LauncherProtocolError('launch: bad control or log fd');
      if (m.fileSizeLimit !== undefined && !isId(m.fileSizeLimit)) throw new LauncherProtocolError('launch: bad file size limit');
      if (m.entry !== undefined && (typeof m.entry !== 'string' || m.entry.length > 4096)) throw new LauncherProtocolError('launch: bad entry');
      return {
        t: 'launch', id: m.id, name: m.name, kind: m.kind as DeviceKind, config: m.config, control: m.control as number, log: m.log as number, fdMap: m.fdMap as number[],
        ...(m.fileSizeLimit !== undefined ? { fileSizeLimit: m.fileSizeLimit as number } : {}), ...(m.entry !== undefined ? { entry: m.entry as string } : {}),
      };
    }
    default:
      throw new LauncherProtocolError(`unknown request "${String(m.t).slice(0, 20)}"`);
  }
}

/** A reply from the launcher (trusted: it runs the core's own code, started before the seal). */
export function parseReply(bytes: Uint8Array): LauncherReply {
  const m = decode(bytes);
  if (m.t !== 'launched' && m.t !== 'failed' && m.t !== 'exited') throw new LauncherProtocolError(`unknown reply "${String(m.t).slice(0, 20)}"`);
  return m as unknown as LauncherReply;
}
