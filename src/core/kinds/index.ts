// The device kinds `splitvm run` knows, in the order their flags are taken.
import { blkKind } from './blk.js';
import { netKind } from './net.js';
import { p9Kind } from './p9.js';
import type { CoreDeviceKind } from './kind.js';

export { DeviceSpecError, type CoreDeviceKind, type OpenedBackend, type OpenContext } from './kind.js';

// Each kind parses and opens its own spec, so the list may forget their types.
export const CORE_DEVICE_KINDS: readonly CoreDeviceKind<unknown>[] = [blkKind, netKind, p9Kind];

/** One device the user asked for: its kind and its parsed flag value. */
export interface DeviceRequest {
  kind: CoreDeviceKind<unknown>;
  spec: unknown;
}
