// The device process's start-up configuration (the JSON in argv[2]) and its
// validation, which reports the first problem as one clear sentence.
import { MAX_QUEUES, type DeviceKind } from '../ipc/messages.js';
import { DEVICE_KIND_NAMES, deviceKind } from './kinds.js';
import { validateRegions, type MemoryRegion } from './guest-memory.js';

export type SeccompMode = 'enforce' | 'log' | 'off';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
/**
 * Test-only: what a taken-over device might try right after its policy is
 * installed, to prove the jail stops it: three calls the policy kills, a
 * write that would grow the disk image, which its file-size limit refuses,
 * and two calls the 9p policy kills by their arguments (openat2 from the
 * working directory, mknodat of a device node in the share), filling
 * memory until its bound (RLIMIT_DATA) stops it, and an ioctl the net policy
 * does not allow on its tap (TUNSETIFF, which would attach it elsewhere).
 */
export type JailProbe = 'socket' | 'execve' | 'open' | 'grow-image' | 'openat2-cwd' | 'mknod-device' | 'allocate' | 'tap-setiff';
const JAIL_PROBES: readonly string[] = ['socket', 'execve', 'open', 'grow-image', 'openat2-cwd', 'mknod-device', 'allocate', 'tap-setiff'];

export interface DeviceConfig {
  kind: DeviceKind;
  /** Shown in every log line; defaults to the kind. */
  name: string;
  regions: MemoryRegion[];
  numQueues: number;
  seccomp: SeccompMode;
  logLevel: LogLevel;
  /** The kind's own options (config[kind] in the JSON), checked by its module (kinds.ts). */
  options: unknown;
  /** The in-flight record file (contract.ts: after the queues' fds) and its size in bytes. */
  inflight?: { size: number; stateOffset?: number };
  /**
   * This process replaces one that died: it resumes each queue at the used
   * index and answers every request with the device's error.
   */
  failed?: boolean;
  testAttemptAfterJail?: JailProbe;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const KEYS = new Set(['kind', 'name', 'regions', 'numQueues', 'seccomp', 'logLevel', 'failed', 'inflight', 'testAttemptAfterJail', ...DEVICE_KIND_NAMES]);
const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** Parses and checks the configuration; throws ConfigError with one sentence. */
export function parseDeviceConfig(json: string | undefined): DeviceConfig {
  if (json === undefined) throw new ConfigError('device config: missing JSON argument');
  let c: Record<string, unknown>;
  try {
    c = JSON.parse(json) as Record<string, unknown>;
  } catch {
    throw new ConfigError('device config: argument is not valid JSON');
  }
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new ConfigError('device config: must be a JSON object');
  for (const k of Object.keys(c)) if (!KEYS.has(k)) throw new ConfigError(`device config: unknown field "${k}"`);
  const module = deviceKind(c.kind);
  if (!module) throw new ConfigError(`device config: unsupported kind ${JSON.stringify(c.kind)} (supported: ${DEVICE_KIND_NAMES.join(', ')})`);
  for (const k of DEVICE_KIND_NAMES) if (k !== c.kind && k in c) throw new ConfigError(`device config: options for ${k} given to a ${module.kind} device`);
  const name = c.name ?? c.kind;
  if (typeof name !== 'string' || !/^[\w.-]{1,64}$/.test(name)) throw new ConfigError('device config: name must be 1..64 characters of [A-Za-z0-9_.-]');
  let regions: MemoryRegion[];
  try {
    regions = validateRegions(c.regions);
  } catch (e) {
    throw new ConfigError(`device config: ${(e as Error).message}`);
  }
  const nq = c.numQueues;
  if (typeof nq !== 'number' || !Number.isInteger(nq) || nq < 1 || nq > MAX_QUEUES) throw new ConfigError(`device config: numQueues must be an integer in 1..${MAX_QUEUES}`);
  if (c.seccomp !== 'enforce' && c.seccomp !== 'log' && c.seccomp !== 'off') throw new ConfigError('device config: seccomp must be "enforce", "log" or "off"');
  const logLevel = c.logLevel ?? 'info';
  if (typeof logLevel !== 'string' || !LEVELS.includes(logLevel)) throw new ConfigError(`device config: logLevel must be one of ${LEVELS.join(', ')}`);
  const probe = c.testAttemptAfterJail;
  if (probe !== undefined && (typeof probe !== 'string' || !JAIL_PROBES.includes(probe))) {
    throw new ConfigError(`device config: testAttemptAfterJail must be one of ${JAIL_PROBES.join(', ')}`);
  }
  let options: unknown;
  try {
    options = module.parseOptions(c[module.kind]);
  } catch (e) {
    throw new ConfigError(`device config: ${(e as Error).message}`);
  }
  const config: DeviceConfig = { kind: module.kind, name, regions, numQueues: nq, seccomp: c.seccomp, logLevel: logLevel as LogLevel, options };
  if (probe !== undefined) config.testAttemptAfterJail = probe as JailProbe;
  if (c.inflight !== undefined) {
    const i = c.inflight as Record<string, unknown>;
    if (typeof i !== 'object' || i === null || typeof i.size !== 'number' || !Number.isSafeInteger(i.size) || i.size <= 0 || i.size > 64 * 1024 * 1024 || Object.keys(i).some((k) => k !== 'size' && k !== 'stateOffset')) {
      throw new ConfigError('device config: inflight must be { size, stateOffset? } with a size of 1 byte to 64 MiB');
    }
    if (i.stateOffset !== undefined && (typeof i.stateOffset !== 'number' || !Number.isSafeInteger(i.stateOffset) || i.stateOffset <= 0 || i.stateOffset >= i.size || i.stateOffset % 8 !== 0)) {
      throw new ConfigError('device config: inflight.stateOffset must be a multiple of 8 within the file');
    }
    config.inflight = { size: i.size, ...(i.stateOffset !== undefined ? { stateOffset: i.stateOffset as number } : {}) };
  }
  if (c.failed !== undefined) {
    if (typeof c.failed !== 'boolean') throw new ConfigError('device config: failed must be a boolean');
    config.failed = c.failed;
  }
  return config;
}
