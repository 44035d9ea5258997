// virtio-blk as a device kind: its options ({ readOnly, serial }) and its backend.
import type { DeviceKindModule } from '../backend.js';
import { BlkBackend, type BlkOptions } from './backend.js';
import { VIRTIO_BLK_ID_BYTES } from './constants.js';

export const blkKind: DeviceKindModule<BlkOptions> = {
  kind: 'blk',
  parseOptions(raw = { readOnly: false }) {
    if (typeof raw !== 'object' || raw === null) throw new Error('blk must be an object');
    const { readOnly, serial, ...rest } = raw as Record<string, unknown>;
    if (Object.keys(rest).length > 0) throw new Error(`unknown field blk.${Object.keys(rest)[0]}`);
    if (typeof readOnly !== 'boolean') throw new Error('blk.readOnly must be a boolean');
    if (serial !== undefined && (typeof serial !== 'string' || Buffer.byteLength(serial) > VIRTIO_BLK_ID_BYTES)) {
      throw new Error(`blk.serial must be a string of at most ${VIRTIO_BLK_ID_BYTES} bytes`);
    }
    return serial === undefined ? { readOnly } : { readOnly, serial };
  },
  createBackend: ({ fd, options, numQueues }) => new BlkBackend(fd, options, numQueues),
};
