// The --disk flag: PATH[,ro][,serial=S], parsed into what the core needs to
// open the image and configure a virtio-blk device process.

export interface DiskSpec {
  path: string;
  readOnly: boolean;
  serial?: string;
}

export class DiskSpecError extends Error {}

/** Parses one --disk value; throws DiskSpecError with one sentence. */
export function parseDiskSpec(value: string): DiskSpec {
  const [path, ...opts] = value.split(',');
  if (!path) throw new DiskSpecError(`--disk needs a path: "${value}"`);
  const spec: DiskSpec = { path, readOnly: false };
  for (const opt of opts) {
    if (opt === 'ro') spec.readOnly = true;
    else if (opt.startsWith('serial=')) {
      const serial = opt.slice('serial='.length);
      if (Buffer.byteLength(serial) > 20 || !/^[\x20-\x7e]*$/.test(serial)) {
        throw new DiskSpecError(`--disk serial must be at most 20 printable ASCII characters: "${serial}"`);
      }
      spec.serial = serial;
    } else throw new DiskSpecError(`--disk option "${opt}" is not one of ro, serial=S`);
  }
  return spec;
}
