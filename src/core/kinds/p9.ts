// virtio-9p, core side: --share HOST_DIR[,tag=TAG][,ro]. The core opens the
// folder O_PATH|O_DIRECTORY and passes only that fd; the device looks up
// everything beneath it and opens nothing else. Default tags: share0, share1, …
import { P9_JOURNAL_BYTES } from '../../devices/p9/journal.js';
import * as libc from '../../sys/libc.js';
import { VIRTIO_9P_PCI_CLASS, VIRTIO_ID_9P, tagProblem } from '../../devices/p9/config-space.js';
import { DeviceStartError } from '../supervisor/device-process.js';
import { DeviceSpecError, type CoreDeviceKind } from './kind.js';

export interface ShareSpec {
  path: string;
  tag: string;
  readOnly: boolean;
}

/** Parses one --share value; throws DeviceSpecError with one sentence. */
export function parseShareSpec(value: string, index: number): ShareSpec {
  const [path, ...opts] = value.split(',');
  if (!path) throw new DeviceSpecError(`--share needs a folder: "${value}"`);
  const spec: ShareSpec = { path, tag: `share${index}`, readOnly: false };
  for (const opt of opts) {
    if (opt === 'ro') spec.readOnly = true;
    else if (opt.startsWith('tag=')) {
      const tag = opt.slice('tag='.length);
      const problem = tagProblem(tag);
      if (problem) throw new DeviceSpecError(`--share tag "${tag}" is not valid: ${problem}`);
      spec.tag = tag;
    } else throw new DeviceSpecError(`--share option "${opt}" is not one of tag=TAG, ro`);
  }
  return spec;
}

/** Opens the shared folder O_PATH|O_DIRECTORY; throws DeviceStartError with one sentence. */
export function openShare(path: string): number {
  try {
    return libc.open(path, libc.O_PATH | libc.O_DIRECTORY);
  } catch (e) {
    const errno = e instanceof libc.SysError ? e.errno : 0;
    if (errno === 2) throw new DeviceStartError(`the shared folder ${path} does not exist`);
    if (errno === 20) throw new DeviceStartError(`${path} is not a folder, and --share shares a folder`);
    throw new DeviceStartError(`cannot open the shared folder ${path}: ${errno ? libc.errnoName(errno) : (e as Error).message}`);
  }
}

export const p9Kind: CoreDeviceKind<ShareSpec> = {
  kind: 'p9',
  flag: 'share',
  usage: `  --share HOST_DIR[,tag=TAG][,ro]
                     a host folder as a virtio-9p device (9P2000.L), mounted by TAG
                     (default share0, share1, ...); ro refuses every change (repeatable)`,
  parse: parseShareSpec,
  checkAll(specs) {
    const seen = new Set<string>();
    for (const s of specs) {
      if (seen.has(s.tag)) throw new DeviceSpecError(`two --share folders have the tag "${s.tag}": the guest mounts a share by its tag, so each needs its own`);
      seen.add(s.tag);
    }
  },
  async open(spec) {
    const fd = openShare(spec.path);
    return {
      fd,
      numQueues: 1,
      options: { tag: spec.tag, readOnly: spec.readOnly },
      virtioId: VIRTIO_ID_9P,
      classCode: VIRTIO_9P_PCI_CLASS,
      describe: { share: spec.path, tag: spec.tag, readOnly: spec.readOnly },
      stateBytes: P9_JOURNAL_BYTES,
    };
  },
};
