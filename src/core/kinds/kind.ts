// What the core knows of a device kind: its command-line flag and how a
// value of it is parsed, how the core opens the backend the jailed device
// will get (the device opens nothing itself), and how the device appears on
// the PCI bus. One file per kind beside this one; the list is in index.ts.
import type { Logger } from 'pino';
import type { DeviceKind } from '../../ipc/messages.js';

/** A user's mistake in a device flag: one sentence, exit status 2. */
export class DeviceSpecError extends Error {}

/** Everything a device process needs that the core opened or decided for it. */
export interface OpenedBackend {
  /** The device's fd 5: the image, tap, passt socket or shared folder. The supervisor closes it at shutdown. */
  fd: number;
  numQueues: number;
  /** The kind's options in the device's start-up config (config[kind]). */
  options: object;
  /** virtio device id (PCI device id 0x1040 + id) and PCI class code. */
  virtioId: number;
  classCode: number;
  /** RLIMIT_FSIZE for the jailed process (a disk image must not grow). */
  fileSizeLimit?: number;
  /** Bytes of state the device keeps in the core's in-flight file, after its queues' records, for a successor (9p: its fids). */
  stateBytes?: number;
  /** For the log line and the operator: what this device serves. */
  describe: Record<string, unknown>;
  /** Ends what the core started for this backend besides the fd (e.g. passt); called once at shutdown. */
  release?(): void;
  /** The pid of what the core started (passt): a sealed core cannot signal it, its launcher ends it. */
  helperPid?: number;
}

export interface OpenContext {
  /** Position among the devices of this kind (0 for /dev/vda, eth0, share0). */
  index: number;
  /** Name of the VM (stable MAC addresses). */
  vmName: string;
  log: Logger;
}

export interface CoreDeviceKind<S> {
  readonly kind: DeviceKind;
  /** The repeatable `splitvm run` flag, without dashes ("disk"). */
  readonly flag: string;
  /** Help text: the flag's lines in `splitvm run --help`. */
  readonly usage: string;
  /** Parses one flag value; throws DeviceSpecError. */
  parse(value: string, index: number): S;
  /** Checks the kind's specs together (e.g. no two shares with one tag); throws DeviceSpecError. */
  checkAll?(specs: S[]): void;
  /** Opens the backend; throws DeviceStartError with one sentence when the host refuses. */
  open(spec: S, ctx: OpenContext): Promise<OpenedBackend>;
}
