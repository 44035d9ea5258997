// A core running as root runs its jailed device processes as an
// unprivileged host uid and gid (--uid/--gid; here nobody): the host sees
// the device process as that user with no supplementary groups, and the
// disk image the core opened — root's, mode 0600, which that user could
// never open — still serves reads and writes through the fd it was given.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { GuestMemory, MiB } from '../../src/core/memory.js';
import { blkKind } from '../../src/core/kinds/blk.js';
import { NOBODY } from '../../src/core/jail/identity.js';
import { VirtioDeviceProcess } from '../../src/core/supervisor/device-process.js';
import { GuestMemory as DeviceView } from '../../src/devices/guest-memory.js';
import { BlkDriver, DriverQueue } from '../../src/devices/harness/index.js';
import { DriverMemory } from '../../src/devices/harness/harness.js';
import * as C from '../../src/devices/blk/constants.js';

describe('jail: device processes as an unprivileged host uid', function () {
  this.timeout(30000);
  let dir: string;
  let dev: VirtioDeviceProcess | undefined;

  before(function () {
    // Only root can start a process as another user; a core that is not root runs devices as itself.
    if (process.getuid!() !== 0) this.skip();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-uid-'));
  });

  after(async () => {
    await dev?.shutdown();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('the device runs as nobody:nogroup, jailed, and serves a root-only image through its fd', async () => {
    const image = path.join(dir, 'disk.img');
    fs.writeFileSync(image, Buffer.alloc(MiB), { mode: 0o600 });
    const memory = GuestMemory.create(16 * MiB);
    const backend = await blkKind.open({ path: image, readOnly: false }, { index: 0, vmName: 'test', log: pino({ level: 'silent' }) });
    dev = await VirtioDeviceProcess.start({
      name: 'blk0', kind: 'blk', numQueues: 1, backendFd: backend.fd, options: backend.options, fileSizeLimit: backend.fileSizeLimit,
      memory, jail: true, seccomp: 'enforce', logLevel: 'warn', log: pino({ level: 'silent' }), writeLog: () => {},
      hostIds: { uid: NOBODY, gid: NOBODY },
    });
    const status = fs.readFileSync(`/proc/${dev.pid}/status`, 'utf8');
    assert.match(status, new RegExp(`^Uid:\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}$`, 'm'));
    assert.match(status, new RegExp(`^Gid:\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}$`, 'm'));
    assert.match(status, /^Groups:\s*$/m, 'no supplementary groups (root had group 0)');
    assert.match(status, /^Seccomp:\s+2$/m);
    assert.equal(dev.info().jail.uid, NOBODY);

    const view = DeviceView.map(memory.fd, memory.regions);
    const dm = new DriverMemory(view, [{ gpa: 0, size: 8 * MiB, offset: 0 }, { gpa: 8 * MiB, size: 8 * MiB, offset: 8 * MiB }]);
    const q = new DriverQueue(view, 0, 64, dm.allocRings(64), (len, align) => dm.alloc(len, align), dev.kickFds[0], dev.callFds[0]);
    dev.activate(dev.hello.deviceFeatures, [{ index: 0, size: 64, ...q.addrs }]);
    const d = new BlkDriver(dm, q);
    const data = new Uint8Array(4096).fill(0x3c);
    assert.equal((await d.write(16, data)).status, C.VIRTIO_BLK_S_OK);
    assert.deepEqual((await d.read(16, 4096)).data, data);
    assert.deepEqual(new Uint8Array(fs.readFileSync(image).subarray(16 * 512, 16 * 512 + 4096)), data, 'the write reached the image');
    assert.equal(fs.statSync(image).mode & 0o777, 0o600, 'the image stays root-only');
  });
});
