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
import { MiB } from '../../src/core/memory.js';
import { blkKind } from '../../src/core/kinds/blk.js';
import { NOBODY } from '../../src/core/jail/identity.js';
import type { VirtioDeviceProcess } from '../../src/core/supervisor/device-process.js';
import { BlkDriver } from '../../src/devices/harness/index.js';
import * as C from '../../src/devices/blk/constants.js';
import { superviseDevice } from '../helpers/supervised-device.js';

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
    const backend = await blkKind.open({ path: image, readOnly: false }, { index: 0, vmName: 'test', log: pino({ level: 'silent' }) });
    const s = await superviseDevice(backend, { name: 'blk0', kind: 'blk', queueSize: 64, hostIds: { uid: NOBODY, gid: NOBODY } });
    dev = s.dev;
    const { pid } = s.dev;
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
    assert.match(status, new RegExp(`^Uid:\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}$`, 'm'));
    assert.match(status, new RegExp(`^Gid:\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}\\s+${NOBODY}$`, 'm'));
    assert.match(status, /^Groups:\s*$/m, 'no supplementary groups (root had group 0)');
    assert.match(status, /^Seccomp:\s+2$/m);
    assert.equal(s.dev.info().jail.uid, NOBODY);

    const d = new BlkDriver(s.dm, s.q);
    const data = new Uint8Array(4096).fill(0x3c);
    assert.equal((await d.write(16, data)).status, C.VIRTIO_BLK_S_OK);
    assert.deepEqual((await d.read(16, 4096)).data, data);
    assert.deepEqual(new Uint8Array(fs.readFileSync(image).subarray(16 * 512, 16 * 512 + 4096)), data, 'the write reached the image');
    assert.equal(fs.statSync(image).mode & 0o777, 0o600, 'the image stays root-only');
  });
});
