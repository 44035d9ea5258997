// What a device backend (blk, later net and p9) provides to the generic
// device process: its features, config space and a request handler. The
// backend only processes descriptor chains; queues, kicks, interrupts and the
// control channel belong to the server (server.ts).
import type { Logger } from 'pino';
import type { DeviceKind } from '../ipc/messages.js';
import type { GuestMemory } from './guest-memory.js';
import type { DescriptorChain } from './virtio/queue.js';

/**
 * A queue whose chains the backend takes itself, when it has a use for them
 * (net's receive queue: buffers wait for frames), instead of being handed
 * each chain as the driver makes it available.
 */
export interface PulledQueue {
  readonly index: number;
  /** The next available chain, or null (none, or the queue stopped on a malformed ring). */
  pop(): DescriptorChain | null;
  /** Returns a chain with `len` bytes written; interrupts are coalesced per event-loop turn. */
  complete(chain: DescriptorChain, len: number): void;
  /** Before waiting for a kick: re-arms notifications; true when chains arrived meanwhile. */
  enableNotify(): boolean;
  /** Stops the queue as malformed (the server reports needs-reset). */
  fail(reason: string): void;
}

export interface DeviceBackend {
  readonly kind: DeviceKind;
  /** Feature bits offered (bits 0..52). */
  readonly deviceFeatures: number;
  readonly maxQueueSize: number;
  /** Current device configuration space. */
  config(): Uint8Array;
  /** A driver write to the configuration space (offset and length already bounded to 256). */
  configWrite(offset: number, data: Uint8Array): void;
  /** Called with the negotiated features when the driver activates the device. */
  activate(features: number): void;
  /**
   * Processes one request. Returns (or resolves to) the number of bytes
   * written into the chain's writable buffers. Throws QueueError, before
   * starting any I/O, when the chain is malformed. Never rejects: I/O errors
   * become a status in the reply.
   */
  handle(chain: DescriptorChain): number | Promise<number>;
  /**
   * Answers one request with the device's own error, without doing it: what a
   * replacement for a device process that died does, so that the guest sees
   * failed I/O instead of a request that never completes. Returns the bytes
   * written; throws QueueError when the chain is malformed.
   */
  fail(chain: DescriptorChain): number;
  /** Indexes of the queues the backend pulls from itself (see PulledQueue); the server never hands their chains over. */
  readonly pulledQueues?: readonly number[];
  /** On activate, after `activate`: the pulled queues that are served. */
  attach?(queues: PulledQueue[]): void;
  /** A pulled queue was kicked: the driver made chains available. */
  kicked?(index: number): void;
  /**
   * Reset, or the device is stopping: drop every chain taken (the driver
   * forgets them too) and settle every pending `handle` promise promptly.
   */
  reset?(): void;
  /** This process replaces one that died and fails every request (net: its link is down). */
  markFailed?(): void;
  /** Set by the server: the backend calls it when its config space changed (the guest is told). */
  onConfigChanged?: () => void;
  /** Backend counters (names ≤ 64 chars, non-negative integers). */
  stats(): Record<string, number>;
  /** What the device serves, for its "ready" log line (e.g. { capacity, readOnly }). */
  describe(): Record<string, unknown>;
}

export interface BackendContext<O> {
  /** The backend fd the core opened (contract.ts: FD_BACKEND). */
  fd: number;
  options: O;
  numQueues: number;
  /** Guest RAM, mapped. */
  memory: GuestMemory;
  log: Logger;
  /** The kind's state in the core's in-flight file, which outlives this process (contract.ts), when the core gave it room. */
  state?: DataView;
}

export interface DeviceKindModule<O = unknown> {
  readonly kind: DeviceKind;
  /** Checks the kind's options (config[kind]); throws an Error with one sentence. */
  parseOptions(raw: unknown): O;
  /** Makes the backend on the inherited backend fd, before the policy is installed (nothing may be opened after). */
  createBackend(ctx: BackendContext<O>): DeviceBackend;
  /** Run-time constants the kind's policy refers to, besides the fixed fd layout. */
  policyConstants?(options: O): Record<string, number>;
}
