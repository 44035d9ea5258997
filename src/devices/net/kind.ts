// virtio-net as a device kind: its options and its backend.
import type { DeviceKindModule } from '../backend.js';
import { NetBackend, type NetOptions } from './backend.js';
import { DEFAULT_MTU, TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN } from './constants.js';

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;
const KNOWN_OFFLOADS = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;

export const netKind: DeviceKindModule<NetOptions> = {
  kind: 'net',
  parseOptions(raw) {
    if (typeof raw !== 'object' || raw === null) throw new Error('net must be an object');
    const { backend, mac, mtu = DEFAULT_MTU, tapOffloads = 0, ...rest } = raw as Record<string, unknown>;
    if (Object.keys(rest).length > 0) throw new Error(`unknown field net.${Object.keys(rest)[0]}`);
    if (backend !== 'tap' && backend !== 'passt') throw new Error('net.backend must be "tap" or "passt"');
    if (typeof mac !== 'string' || !MAC.test(mac)) throw new Error('net.mac must be six lower-case hex bytes separated by colons');
    if (typeof mtu !== 'number' || !Number.isInteger(mtu) || mtu < 68 || mtu > 65535) throw new Error('net.mtu must be an integer in 68..65535');
    if (typeof tapOffloads !== 'number' || !Number.isInteger(tapOffloads) || (tapOffloads & ~KNOWN_OFFLOADS) !== 0 || (backend === 'passt' && tapOffloads !== 0)) {
      throw new Error('net.tapOffloads must be TUN_F_CSUM|TSO4|TSO6|TSO_ECN bits, and 0 for passt');
    }
    return { backend, mac, mtu, tapOffloads };
  },
  createBackend: ({ fd, options, memory, log }) => new NetBackend(fd, options, memory, log),
};
