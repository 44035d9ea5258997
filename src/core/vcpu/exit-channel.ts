// The shared-memory channel between a vCPU worker and the core's main thread.
// A vCPU exit that needs a device (port or MMIO access) is written here and
// the worker blocks (Atomics.wait) until the main thread has answered; the
// main thread waits with Atomics.waitAsync, so no message is posted and the
// exit costs two thread wake-ups. REQUEST and REPLY are sequence numbers:
// each side waits for the other's to move, and notifies once. The channel
// also carries the pause handshake (PAUSE set by the main thread, PAUSED by
// the worker once it is out of KVM_RUN and held) and the worker's counts of
// its exits by reason, which the main thread reads for /metrics.

/** Int32 slots of the channel. */
export const Slot = {
  /** Bumped by the worker when it has written a request. */
  REQUEST: 0,
  KIND: 1,
  IS_WRITE: 2,
  SIZE: 3,
  ADDR_LO: 4,
  ADDR_HI: 5,
  /** Set by the main thread: the VM is stopping, leave the run loop. */
  STOP: 6,
  /** Set to REQUEST's value by the main thread when it has answered. */
  REPLY: 7,
  /** The access's data bytes (DATA_BYTES of them) start at this slot. */
  DATA: 8,
  /** Set by the main thread: leave KVM_RUN and wait until it is cleared. */
  PAUSE: 10,
  /** Set by the worker while it waits for PAUSE to clear. */
  PAUSED: 11,
  /** Set once by the main thread before the first KVM_RUN (or when the VM stops first): a SealWord (thread-seal.ts). */
  SEAL: 12,
  /** One count per EXIT_REASONS entry from this slot on. */
  EXITS: 13,
} as const;
/** Room for the widest access: an 8-byte MMIO. */
export const DATA_BYTES = 8;
/** The exits a vCPU counts, by reason (interrupted: a signal or immediate_exit; other: system events, fixups). */
export const EXIT_REASONS = ['io', 'mmio', 'hlt', 'irq_window', 'intr', 'interrupted', 'other'] as const;
export type ExitCountReason = (typeof EXIT_REASONS)[number];
const CHANNEL_BYTES = (Slot.EXITS + EXIT_REASONS.length) * 4;

/** The slot of each reason's count: the worker, its only writer, bumps it with a plain increment. */
export const exitSlot = Object.fromEntries(EXIT_REASONS.map((r, i) => [r, Slot.EXITS + i])) as Record<ExitCountReason, number>;

/** The exit counts by reason, as the main thread reads them. */
export function exitCounts(ch: Int32Array): Record<ExitCountReason, number> {
  return Object.fromEntries(EXIT_REASONS.map((r, i) => [r, Atomics.load(ch, Slot.EXITS + i) >>> 0])) as Record<ExitCountReason, number>;
}
export const Kind = { PIO: 0, MMIO: 1 } as const;

export function createChannel(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(CHANNEL_BYTES));
}

/** The channel's data bytes, as a byte view. */
export function dataBytes(ch: Int32Array): Uint8Array {
  return new Uint8Array(ch.buffer, Slot.DATA * 4, DATA_BYTES);
}
