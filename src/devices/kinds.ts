// The device kinds a device process can be: for each, how its options in the
// start-up config are checked and how its backend is made from the backend fd
// the core opened. Adding a kind is a folder src/devices/<kind>/, a policy
// policies/<kind>.policy, one line here, and its core-side descriptor
// (src/core/kinds/).
import type { DeviceKindModule } from './backend.js';
import { blkKind } from './blk/kind.js';
import { p9Kind } from './p9/kind.js';

export type { BackendContext, DeviceKindModule } from './backend.js';
import { netKind } from './net/kind.js';

// Each module checks its own options before they reach its backend, so the
// list may forget their types (method parameters are bivariant).
const MODULES: readonly DeviceKindModule[] = [blkKind, netKind, p9Kind];

export const DEVICE_KIND_NAMES: readonly string[] = MODULES.map((m) => m.kind);

/** The module of `kind`, or undefined when this build has none. */
export function deviceKind(kind: unknown): DeviceKindModule | undefined {
  return MODULES.find((m) => m.kind === kind);
}
