// virtio-net, core side: --net user[,mac=MAC] | tap=NAME[,mac=MAC].
//   user: rootless networking through Debian's passt, started here with
//     --fd on one end of a socketpair (passt sandboxes itself); the device
//     gets the other end. passt answers the guest's DHCP and carries its
//     TCP/UDP through the host's sockets.
//   tap: an existing tap interface (or a new one, when the core has
//     CAP_NET_ADMIN), opened IFF_TAP|IFF_NO_PI|IFF_VNET_HDR with a 12-byte
//     vnet header, so the device moves virtio-net frames as they are. The
//     offloads the tap accepts are probed here and offered to the guest.
// Either way the device gets one non-blocking fd and nothing else.
import type { ChildProcess } from 'node:child_process';
import { spawnWithHostView } from '../jail/core-namespace.js';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import * as libc from '../../sys/libc.js';
import { which } from '../../sys/paths.js';
import {
  DEFAULT_MTU, IFF_NO_PI, IFF_TAP, IFF_VNET_HDR, NET_HDR_BYTES, NET_NUM_QUEUES, TUNSETIFF, TUNSETOFFLOAD, TUNSETVNETHDRSZ,
  TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN,
} from '../../devices/net/constants.js';
import { DeviceStartError } from '../supervisor/device-process.js';
import { DeviceSpecError, type CoreDeviceKind, type OpenContext, type OpenedBackend } from './kind.js';

export type NetSpec = { mode: 'user'; mac?: string } | { mode: 'tap'; tap: string; mac?: string };

const MAC = /^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/;
/** Interface names: IFNAMSIZ - 1 characters, no slash or blank. */
const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

export function parseNetSpec(value: string): NetSpec {
  const [first = '', ...opts] = value.split(',');
  let mac: string | undefined;
  for (const opt of opts) {
    if (!opt.startsWith('mac=')) throw new DeviceSpecError(`--net option "${opt}" is not mac=MAC`);
    mac = opt.slice(4);
    if (!MAC.test(mac)) throw new DeviceSpecError(`--net mac must be six hex bytes like 02:00:00:00:00:01, not "${mac}"`);
    mac = mac.toLowerCase();
    if (parseInt(mac.slice(0, 2), 16) & 1) throw new DeviceSpecError(`--net mac ${mac} is a multicast address; a device needs a unicast one`);
    if (mac === '00:00:00:00:00:00') throw new DeviceSpecError('--net mac may not be all zeros');
  }
  const withMac = <T extends object>(s: T): T & { mac?: string } => (mac === undefined ? s : { ...s, mac });
  if (first === 'user') return withMac({ mode: 'user' as const });
  if (first.startsWith('tap=')) {
    const tap = first.slice(4);
    if (!IFNAME.test(tap)) throw new DeviceSpecError(`--net tap name must be 1 to 15 letters, digits, _ . -, not "${tap}"`);
    return withMac({ mode: 'tap' as const, tap });
  }
  throw new DeviceSpecError(`--net needs user or tap=NAME, not "${first}"`);
}

/** A locally administered unicast MAC that stays the same for a VM name and device index. */
export function defaultMac(vmName: string, index: number): string {
  const h = createHash('sha256').update(`splitvm:${vmName}:${index}`).digest();
  const bytes = [0x02, h[0]!, h[1]!, h[2]!, h[3]!, h[4]!];
  return bytes.map((b) => b.toString(16).padStart(2, '0')).join(':');
}

function errno(e: unknown): number {
  return e instanceof libc.SysError ? e.errno : 0;
}

/** Opens tap `name` for the device; returns the fd and the TUN_F_* offloads it accepts. */
export function openTap(name: string): { fd: number; offloads: number } {
  let fd: number;
  try {
    fd = libc.open('/dev/net/tun', libc.O_RDWR | libc.O_NONBLOCK);
  } catch (e) {
    if (errno(e) === 2) throw new DeviceStartError('/dev/net/tun does not exist: load the tun module (modprobe tun) to use --net tap');
    throw new DeviceStartError(`no permission to open /dev/net/tun (${libc.errnoName(errno(e))}): --net tap needs access to it`);
  }
  try {
    const ifr = new Uint8Array(40);
    ifr.set(Buffer.from(name), 0);
    new DataView(ifr.buffer).setUint16(16, IFF_TAP | IFF_NO_PI | IFF_VNET_HDR, true);
    try {
      libc.ioctlIn(fd, TUNSETIFF, ifr);
    } catch (e) {
      const exists = fs.existsSync(`/sys/class/net/${name}`);
      switch (errno(e)) {
        case 1:
          throw new DeviceStartError(exists ? `no permission to use tap ${name}: it belongs to another user (or needs CAP_NET_ADMIN)` : `tap ${name} does not exist, and creating it needs CAP_NET_ADMIN`);
        case 16:
          throw new DeviceStartError(`tap ${name} is already in use by another process`);
        case 22:
          throw new DeviceStartError(`${name} is not a tap interface`);
        default:
          throw new DeviceStartError(`cannot attach to tap ${name}: ${libc.errnoName(errno(e))}`);
      }
    }
    const hdr = new Uint8Array(4);
    new DataView(hdr.buffer).setInt32(0, NET_HDR_BYTES, true);
    libc.ioctlIn(fd, TUNSETVNETHDRSZ, hdr);
    // Each offload needs the ones before it (TSO needs checksum offload).
    let offloads = 0;
    for (const flag of [TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN]) {
      try {
        libc.ioctl(fd, TUNSETOFFLOAD, offloads | flag);
        offloads |= flag;
      } catch {
        break;
      }
    }
    libc.ioctl(fd, TUNSETOFFLOAD, 0); // until the guest says what it takes
    return { fd, offloads };
  } catch (e) {
    libc.close(fd);
    throw e;
  }
}

/** Starts passt on one end of a socketpair; returns the other end and a way to stop it. */
export function startPasst(ctx: OpenContext): { fd: number; passt: ChildProcess } {
  const bin = which('passt');
  if (!bin) throw new DeviceStartError('passt is not installed: install the Debian package passt (or use --net tap=NAME)');
  const [ours, theirs] = libc.socketpair();
  let passt: ChildProcess;
  try {
    libc.markAllCloexec();
    passt = spawnWithHostView(bin, ['--foreground', '--quiet', '--fd', '3'], { stdio: ['ignore', 'ignore', 'pipe', theirs] });
  } finally {
    libc.close(theirs);
  }
  let tail = '';
  passt.stderr!.on('data', (d: Buffer) => (tail = (tail + d.toString()).slice(-500)));
  passt.once('error', (e) => ctx.log.error({ err: e.message }, 'passt did not start'));
  passt.once('exit', (code, signal) => {
    if (!stopped.has(passt)) ctx.log.error({ code, signal, stderr: tail.trim() }, 'passt exited: the network of the user-mode net device is down');
  });
  libc.setNonBlocking(ours);
  return { fd: ours, passt };
}

const stopped = new WeakSet<ChildProcess>();

export const netKind: CoreDeviceKind<NetSpec> = {
  kind: 'net',
  flag: 'net',
  usage: `  --net user[,mac=MAC] | tap=NAME[,mac=MAC]
                     a virtio-net device (repeatable: eth0, eth1, ...): user is rootless networking
                     through passt (DHCP, TCP/UDP out); tap is an existing tap interface`,
  parse: (value) => parseNetSpec(value),
  async open(spec, ctx): Promise<OpenedBackend> {
    const mac = spec.mac ?? defaultMac(ctx.vmName, ctx.index);
    const common = { numQueues: NET_NUM_QUEUES, virtioId: 1, classCode: 0x020000 };
    if (spec.mode === 'tap') {
      const { fd, offloads } = openTap(spec.tap);
      return { ...common, fd, options: { backend: 'tap', mac, mtu: DEFAULT_MTU, tapOffloads: offloads }, describe: { tap: spec.tap, mac, offloads } };
    }
    const { fd, passt } = startPasst(ctx);
    return {
      ...common, fd, options: { backend: 'passt', mac, mtu: DEFAULT_MTU, tapOffloads: 0 }, describe: { backend: 'passt', passtPid: passt.pid, mac },
      helperPid: passt.pid,
      release: () => {
        stopped.add(passt);
        try {
          process.kill(passt.pid!, 'SIGTERM');
        } catch {
          // A sealed core may not signal: its launcher ends passt once the core is gone.
        }
      },
    };
  },
};
