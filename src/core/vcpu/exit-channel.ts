// The shared-memory channel between a vCPU worker and the core's main thread.
// A vCPU exit that needs a device (port or MMIO access) is written here and
// the worker blocks (Atomics.wait) until the main thread has answered; the
// main thread waits with Atomics.waitAsync, so no message is posted and the
// exit costs two thread wake-ups. REQUEST and REPLY are sequence numbers:
// each side waits for the other's to move, and notifies once.

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
} as const;
/** Room for the widest access: an 8-byte MMIO. */
export const DATA_BYTES = 8;
const CHANNEL_BYTES = Slot.DATA * 4 + DATA_BYTES;
export const Kind = { PIO: 0, MMIO: 1 } as const;

export function createChannel(): Int32Array {
  return new Int32Array(new SharedArrayBuffer(CHANNEL_BYTES));
}

/** The channel's data bytes, as a byte view. */
export function dataBytes(ch: Int32Array): Uint8Array {
  return new Uint8Array(ch.buffer, Slot.DATA * 4, DATA_BYTES);
}
