// virtio-blk, core side: --disk PATH[,ro][,serial=S]; the core opens the
// image (read-only or read-write) and the device may not grow it.
import { fstatSync } from 'node:fs';
import * as libc from '../../sys/libc.js';
import { DeviceStartError } from '../supervisor/device-process.js';
import { DeviceSpecError, type CoreDeviceKind } from './kind.js';

export interface DiskSpec {
  path: string;
  readOnly: boolean;
  serial?: string;
  /** Request queues (VIRTIO_BLK_F_MQ above 1); default 1. */
  queues?: number;
}

/** The most request queues a disk may have (the control channel's queue limit). */
export const MAX_DISK_QUEUES = 16;

/** Parses one --disk value; throws DeviceSpecError with one sentence. */
export function parseDiskSpec(value: string): DiskSpec {
  const [path, ...opts] = value.split(',');
  if (!path) throw new DeviceSpecError(`--disk needs a path: "${value}"`);
  const spec: DiskSpec = { path, readOnly: false };
  for (const opt of opts) {
    if (opt === 'ro') spec.readOnly = true;
    else if (opt.startsWith('serial=')) {
      const serial = opt.slice('serial='.length);
      if (Buffer.byteLength(serial) > 20 || !/^[\x20-\x7e]*$/.test(serial)) {
        throw new DeviceSpecError(`--disk serial must be at most 20 printable ASCII characters: "${serial}"`);
      }
      spec.serial = serial;
    } else if (opt.startsWith('queues=')) {
      const n = opt.slice('queues='.length);
      if (!/^\d+$/.test(n) || Number(n) < 1 || Number(n) > MAX_DISK_QUEUES) throw new DeviceSpecError(`--disk queues must be a whole number from 1 to ${MAX_DISK_QUEUES}, not "${n}"`);
      spec.queues = Number(n);
    } else throw new DeviceSpecError(`--disk option "${opt}" is not one of ro, serial=S, queues=N`);
  }
  return spec;
}

export const blkKind: CoreDeviceKind<DiskSpec> = {
  kind: 'blk',
  flag: 'disk',
  usage: `  --disk PATH[,ro][,serial=S][,queues=N]
                     a raw disk image as a virtio-blk device (repeatable: /dev/vda, /dev/vdb, ...)`,
  parse: parseDiskSpec,
  async open(spec) {
    let fd: number;
    try {
      fd = libc.open(spec.path, spec.readOnly ? libc.O_RDONLY : libc.O_RDWR);
    } catch (e) {
      throw new DeviceStartError(`cannot open disk image ${spec.path}: ${e instanceof libc.SysError ? libc.errnoName(e.errno) : (e as Error).message}`);
    }
    return {
      fd,
      numQueues: spec.queues ?? 1,
      options: spec.serial === undefined ? { readOnly: spec.readOnly } : { readOnly: spec.readOnly, serial: spec.serial },
      virtioId: 2,
      classCode: 0x018000,
      fileSizeLimit: fstatSync(fd).size,
      describe: { image: spec.path, readOnly: spec.readOnly },
    };
  },
};
