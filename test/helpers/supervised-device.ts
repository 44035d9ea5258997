// A device process under the core's supervisor (VirtioDeviceProcess, as
// `splitvm run` starts it), on 16 MiB of guest RAM the core made, with the
// test playing the guest's driver on its queue 0: what the supervisor, restart
// and host-uid tests share. Everything the core and the device log is kept.
import { pino } from 'pino';
import type { OpenedBackend } from '../../src/core/kinds/index.js';
import { GuestMemory, MiB } from '../../src/core/memory.js';
import { VirtioDeviceProcess, type DeviceProcessOptions } from '../../src/core/supervisor/device-process.js';
import { GuestMemory as DeviceView } from '../../src/devices/guest-memory.js';
import { DriverQueue } from '../../src/devices/harness/index.js';
import { DriverMemory } from '../../src/devices/harness/harness.js';
import type { DeviceKind } from '../../src/ipc/messages.js';

export interface Supervised {
  dev: VirtioDeviceProcess;
  /** The guest RAM as the driver sees it: rings in its first 8 MiB, buffers in the rest. */
  dm: DriverMemory;
  q: DriverQueue;
  /** The core's log lines and the device's, relayed. */
  lines: string[];
}

/** Starts the device on `backend` (jailed, enforcing) and activates its queue 0 with every feature it offers. */
export async function superviseDevice(
  backend: OpenedBackend,
  opts: { name: string; kind: DeviceKind; queueSize: number } & Pick<DeviceProcessOptions, 'replacement' | 'spare' | 'hostIds'>,
): Promise<Supervised> {
  const lines: string[] = [];
  const memory = GuestMemory.create(16 * MiB);
  const dev = await VirtioDeviceProcess.start({
    name: opts.name, kind: opts.kind, numQueues: 1, backendFd: backend.fd, options: backend.options, fileSizeLimit: backend.fileSizeLimit,
    ...(backend.stateBytes ? { stateBytes: backend.stateBytes } : {}), memory, jail: true, seccomp: 'enforce', logLevel: 'info', log: pino({ level: 'info' }, { write: (l: string) => void lines.push(l) }),
    writeLog: (l) => lines.push(l), replacement: opts.replacement, spare: opts.spare, hostIds: opts.hostIds,
  });
  const view = DeviceView.map(memory.fd, memory.regions);
  const dm = new DriverMemory(view, [{ gpa: 0, size: 8 * MiB, offset: 0 }, { gpa: 8 * MiB, size: 8 * MiB, offset: 8 * MiB }]);
  const q = new DriverQueue(view, 0, opts.queueSize, dm.allocRings(opts.queueSize), (len, align) => dm.alloc(len, align), dev.kickFds[0], dev.callFds[0]);
  dev.activate(dev.hello.deviceFeatures, [{ index: 0, size: opts.queueSize, ...q.addrs }]);
  return { dev, dm, q, lines };
}
