// The device kinds a device process can be: for each, how its options in the
// start-up config are checked and how its backend is made from the backend fd
// the core opened. Adding a kind is a folder src/devices/<kind>/, a policy
// policies/<kind>.policy, one line here, and its core-side descriptor
// (src/core/kinds/).
import type { Logger } from 'pino';
import type { DeviceKind } from '../ipc/messages.js';
import type { DeviceBackend } from './backend.js';
import type { GuestMemory } from './guest-memory.js';
import { blkKind } from './blk/kind.js';
import { p9Kind } from './p9/kind.js';
import { netKind } from './net/kind.js';

export interface BackendContext<O> {
  /** The backend fd the core opened (contract.ts: FD_BACKEND). */
  fd: number;
  options: O;
  numQueues: number;
  /** Guest RAM, mapped. */
  memory: GuestMemory;
  log: Logger;
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

// Each module checks its own options before they reach its backend, so the
// list may forget their types (method parameters are bivariant).
const MODULES: readonly DeviceKindModule[] = [blkKind, netKind, p9Kind];

export const DEVICE_KIND_NAMES: readonly string[] = MODULES.map((m) => m.kind);

/** The module of `kind`, or undefined when this build has none. */
export function deviceKind(kind: unknown): DeviceKindModule | undefined {
  return MODULES.find((m) => m.kind === kind);
}
