// The control-channel schema (version 1) between the core and a device
// process: message types and one validator per direction. Everything a
// device says is untrusted, so validators check types, integer ranges and
// sizes, and reject unknown fields and unknown message types.

export const PROTOCOL_VERSION = 1;
export const MAX_QUEUES = 16;
export const MAX_QUEUE_SIZE = 32768;
export const MAX_CONFIG_BYTES = 256;
export const MAX_REASON_CHARS = 200;
export const MAX_STATS_ENTRIES = 64;
export const MAX_STAT_NAME_CHARS = 64;
export const DEVICE_KINDS = ['blk', 'net', 'p9'] as const;
export type DeviceKind = (typeof DEVICE_KINDS)[number];

// ---- device → core ----
export interface HelloMessage {
  v: 1;
  type: 'hello';
  kind: DeviceKind;
  /** Feature bits the device offers (bits 0..52). */
  deviceFeatures: number;
  numQueues: number;
  maxQueueSize: number;
  /** Device-specific configuration space. */
  config: Uint8Array;
}
export interface ConfigChangedMessage { v: 1; type: 'config-changed'; config: Uint8Array }
/** The device found a malformed ring; the core sets DEVICE_NEEDS_RESET. */
export interface NeedsResetMessage { v: 1; type: 'needs-reset'; reason: string; queue?: number }
/** Answer to `reset`: queues are forgotten and no request is in flight any more. */
export interface ResetDoneMessage { v: 1; type: 'reset-done' }
export interface StatsMessage { v: 1; type: 'stats'; counters: Record<string, number> }
/** Answer to `pause`: nothing is in flight and nothing new is taken. */
export interface PausedMessage { v: 1; type: 'paused' }
export type DeviceMessage = HelloMessage | ConfigChangedMessage | NeedsResetMessage | ResetDoneMessage | StatsMessage | PausedMessage;

// ---- core → device ----
export interface QueueAddresses {
  index: number;
  size: number;
  /** Guest-physical addresses (u64, as numbers < 2^53). */
  desc: number;
  avail: number;
  used: number;
  /**
   * Resume a queue someone else served (a vhost-user frontend's
   * SET_VRING_BASE): the next available index to take; the used index is
   * read from the ring. Absent: a fresh queue, both at 0.
   */
  base?: number;
  /** Offset of this queue's in-flight record in the device's in-flight file (src/devices/virtio/inflight.ts). */
  inflight?: number;
}
export interface ActivateMessage { v: 1; type: 'activate'; features: number; queues: QueueAddresses[] }
/**
 * Stop the queues. With `complete`, the queues live on (a vhost-user
 * frontend's stop): the requests already taken are completed and published
 * before reset-done, so the rings can be resumed at the used index. Without
 * it (a driver reset) the rings are gone: completions are not published.
 */
export interface ResetMessage { v: 1; type: 'reset'; complete?: boolean }
export interface ConfigWriteMessage { v: 1; type: 'config-write'; offset: number; data: Uint8Array }
export interface StatsRequestMessage { v: 1; type: 'stats-request' }
export interface ShutdownMessage { v: 1; type: 'shutdown' }
/** Take no new request (and receive nothing) until `resume`; answered by `paused` once nothing is in flight. */
export interface PauseMessage { v: 1; type: 'pause' }
export interface ResumeMessage { v: 1; type: 'resume' }
export type CoreMessage = ActivateMessage | ResetMessage | ConfigWriteMessage | StatsRequestMessage | ShutdownMessage | PauseMessage | ResumeMessage;

export type Message = DeviceMessage | CoreMessage;

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

// ---- validation helpers ----
type Obj = Record<string, unknown>;

function isPlainObject(x: unknown): x is Obj {
  if (typeof x !== 'object' || x === null || Array.isArray(x) || ArrayBuffer.isView(x)) return false;
  const proto = Object.getPrototypeOf(x);
  return proto === Object.prototype || proto === null;
}

function fail(what: string): never {
  throw new ProtocolError(what);
}

function fields(msg: Obj, type: string, required: string[], optional: string[] = []): void {
  const allowed = new Set(['v', 'type', ...required, ...optional]);
  for (const k of Object.keys(msg)) if (!allowed.has(k)) fail(`${type}: unknown field ${JSON.stringify(k.slice(0, 40))}`);
  for (const k of required) if (!(k in msg)) fail(`${type}: missing field ${k}`);
}

function int(x: unknown, what: string, min: number, max: number): number {
  if (typeof x !== 'number' || !Number.isInteger(x) || x < min || x > max) fail(`${what} must be an integer in ${min}..${max}`);
  return x;
}

const u64 = (x: unknown, what: string): number => int(x, what, 0, Number.MAX_SAFE_INTEGER);

function bytes(x: unknown, what: string, max: number): Uint8Array {
  if (!(x instanceof Uint8Array) || x.length > max) fail(`${what} must be at most ${max} bytes`);
  return x;
}

function str(x: unknown, what: string, max: number): string {
  if (typeof x !== 'string' || x.length > max) fail(`${what} must be a string of at most ${max} characters`);
  return x;
}

function isPowerOfTwo(n: number): boolean {
  return n > 0 && (n & (n - 1)) === 0;
}

function envelope(x: unknown): { msg: Obj; type: string } {
  if (!isPlainObject(x)) fail('message must be a map');
  if (x.v !== PROTOCOL_VERSION) fail(`unsupported protocol version ${String(x.v).slice(0, 20)}`);
  if (typeof x.type !== 'string') fail('message type must be a string');
  return { msg: x, type: x.type };
}

/** Checks a message received from a device (untrusted). Returns it typed, or throws ProtocolError. */
export function validateDeviceMessage(x: unknown): DeviceMessage {
  const { msg, type } = envelope(x);
  switch (type) {
    case 'hello': {
      fields(msg, type, ['kind', 'deviceFeatures', 'numQueues', 'maxQueueSize', 'config']);
      if (!DEVICE_KINDS.includes(msg.kind as DeviceKind)) fail('hello: unknown device kind');
      u64(msg.deviceFeatures, 'hello.deviceFeatures');
      int(msg.numQueues, 'hello.numQueues', 1, MAX_QUEUES);
      int(msg.maxQueueSize, 'hello.maxQueueSize', 1, MAX_QUEUE_SIZE);
      if (!isPowerOfTwo(msg.maxQueueSize as number)) fail('hello.maxQueueSize must be a power of 2');
      bytes(msg.config, 'hello.config', MAX_CONFIG_BYTES);
      return msg as unknown as HelloMessage;
    }
    case 'config-changed':
      fields(msg, type, ['config']);
      bytes(msg.config, 'config-changed.config', MAX_CONFIG_BYTES);
      return msg as unknown as ConfigChangedMessage;
    case 'needs-reset':
      fields(msg, type, ['reason'], ['queue']);
      str(msg.reason, 'needs-reset.reason', MAX_REASON_CHARS);
      if (msg.queue !== undefined) int(msg.queue, 'needs-reset.queue', 0, MAX_QUEUES - 1);
      return msg as unknown as NeedsResetMessage;
    case 'reset-done':
      fields(msg, type, []);
      return msg as unknown as ResetDoneMessage;
    case 'paused':
      fields(msg, type, []);
      return msg as unknown as PausedMessage;
    case 'stats': {
      fields(msg, type, ['counters']);
      const c = msg.counters;
      if (!isPlainObject(c)) fail('stats.counters must be a map');
      const keys = Object.keys(c);
      if (keys.length > MAX_STATS_ENTRIES) fail(`stats: at most ${MAX_STATS_ENTRIES} counters`);
      for (const k of keys) {
        if (k.length > MAX_STAT_NAME_CHARS) fail('stats: counter name too long');
        u64(c[k], 'stats counter');
      }
      return msg as unknown as StatsMessage;
    }
    default:
      fail(`unknown device message type ${JSON.stringify(type.slice(0, 40))}`);
  }
}

/** Checks a message received from the core (the device validates too). */
export function validateCoreMessage(x: unknown): CoreMessage {
  const { msg, type } = envelope(x);
  switch (type) {
    case 'activate': {
      fields(msg, type, ['features', 'queues']);
      u64(msg.features, 'activate.features');
      const qs = msg.queues;
      if (!Array.isArray(qs) || qs.length > MAX_QUEUES) fail(`activate.queues must be an array of at most ${MAX_QUEUES}`);
      const seen = new Set<number>();
      for (const q of qs) {
        if (!isPlainObject(q)) fail('activate.queues[] must be maps');
        for (const k of Object.keys(q)) if (!['index', 'size', 'desc', 'avail', 'used', 'base', 'inflight'].includes(k)) fail('activate.queues[]: unknown field');
        if (q.base !== undefined) int(q.base, 'queue.base', 0, 0xffff);
        if (q.inflight !== undefined) u64(q.inflight, 'queue.inflight');
        const index = int(q.index, 'queue.index', 0, MAX_QUEUES - 1);
        if (seen.has(index)) fail('activate: duplicate queue index');
        seen.add(index);
        const size = int(q.size, 'queue.size', 1, MAX_QUEUE_SIZE);
        if (!isPowerOfTwo(size)) fail('queue.size must be a power of 2');
        u64(q.desc, 'queue.desc');
        u64(q.avail, 'queue.avail');
        u64(q.used, 'queue.used');
      }
      return msg as unknown as ActivateMessage;
    }
    case 'config-write': {
      fields(msg, type, ['offset', 'data']);
      const offset = int(msg.offset, 'config-write.offset', 0, MAX_CONFIG_BYTES - 1);
      const data = bytes(msg.data, 'config-write.data', MAX_CONFIG_BYTES);
      if (offset + data.length > MAX_CONFIG_BYTES) fail('config-write past the end of config space');
      return msg as unknown as ConfigWriteMessage;
    }
    case 'reset':
      fields(msg, type, [], ['complete']);
      if (msg.complete !== undefined && typeof msg.complete !== 'boolean') fail('reset.complete must be a boolean');
      return msg as unknown as CoreMessage;
    case 'stats-request':
    case 'shutdown':
    case 'pause':
    case 'resume':
      fields(msg, type, []);
      return msg as unknown as CoreMessage;
    default:
      fail(`unknown core message type ${JSON.stringify(type.slice(0, 40))}`);
  }
}

/** Distributive Omit, so `send` can take a message without its `v`. */
export type Unversioned<M> = M extends unknown ? Omit<M, 'v'> : never;

/** Feature bit test for a feature word carried as a number (bits 0..52). */
export function hasFeature(features: number, bit: number): boolean {
  return Math.floor(features / 2 ** bit) % 2 === 1;
}
