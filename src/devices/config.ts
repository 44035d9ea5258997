// The device process's start-up configuration (the JSON in argv[2]) and its
// validation, which reports the first problem as one clear sentence.
import { MAX_QUEUES } from '../ipc/messages.js';
import { validateRegions, type MemoryRegion } from './guest-memory.js';

export type SeccompMode = 'enforce' | 'log' | 'off';
export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
/**
 * Test-only: what a taken-over device might try right after its policy is
 * installed, to prove the jail stops it: three calls the policy kills, and a
 * write that would grow the disk image, which its file-size limit refuses.
 */
export type JailProbe = 'socket' | 'execve' | 'open' | 'grow-image';
const JAIL_PROBES: readonly string[] = ['socket', 'execve', 'open', 'grow-image'];

export interface BlkOptions {
  readOnly: boolean;
  /** Up to 20 bytes (VIRTIO_BLK_ID_BYTES), returned by GET_ID. */
  serial?: string;
}

export interface DeviceConfig {
  kind: 'blk';
  /** Shown in every log line; defaults to the kind. */
  name: string;
  regions: MemoryRegion[];
  numQueues: number;
  seccomp: SeccompMode;
  logLevel: LogLevel;
  blk?: BlkOptions;
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

const KEYS = new Set(['kind', 'name', 'regions', 'numQueues', 'seccomp', 'logLevel', 'blk', 'failed', 'testAttemptAfterJail']);
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
  if (c.kind !== 'blk') throw new ConfigError(`device config: unsupported kind ${JSON.stringify(c.kind)} (supported: blk)`);
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
    throw new ConfigError('device config: testAttemptAfterJail must be "socket", "execve", "open" or "grow-image"');
  }
  const config: DeviceConfig = { kind: 'blk', name, regions, numQueues: nq, seccomp: c.seccomp, logLevel: logLevel as LogLevel };
  if (probe !== undefined) config.testAttemptAfterJail = probe as JailProbe;
  if (c.failed !== undefined) {
    if (typeof c.failed !== 'boolean') throw new ConfigError('device config: failed must be a boolean');
    config.failed = c.failed;
  }
  if (c.kind === 'blk') {
    const b = c.blk ?? { readOnly: false };
    if (typeof b !== 'object' || b === null) throw new ConfigError('device config: blk must be an object');
    const { readOnly, serial, ...rest } = b as Record<string, unknown>;
    if (Object.keys(rest).length > 0) throw new ConfigError(`device config: unknown field blk.${Object.keys(rest)[0]}`);
    if (typeof readOnly !== 'boolean') throw new ConfigError('device config: blk.readOnly must be a boolean');
    if (serial !== undefined && (typeof serial !== 'string' || Buffer.byteLength(serial) > 20)) throw new ConfigError('device config: blk.serial must be a string of at most 20 bytes');
    config.blk = serial === undefined ? { readOnly } : { readOnly, serial };
  }
  return config;
}
