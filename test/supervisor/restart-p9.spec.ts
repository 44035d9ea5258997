// The core's supervisor restarting a real jailed 9p device process that dies
// (replacement 'resume'): the fids the dead process held are host state
// that died with it (open files, walked paths), so the new process answers
// a request on any of them with Rlerror EBADF — the documented errno — and
// serves a fresh attach at once; it never answers for the old fid with
// another file. The test plays the guest's 9p client over the queue.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { GuestMemory, MiB } from '../../src/core/memory.js';
import { p9Kind } from '../../src/core/kinds/p9.js';
import { VirtioDeviceProcess } from '../../src/core/supervisor/device-process.js';
import { GuestMemory as DeviceView } from '../../src/devices/guest-memory.js';
import { DriverQueue, P9Client, P9ClientError, QueueTransport } from '../../src/devices/harness/index.js';
import { DriverMemory } from '../../src/devices/harness/harness.js';

const EBADF = 9;
const MSIZE = 64 * 1024;

describe('device supervisor: a 9p device process that dies', function () {
  this.timeout(60000);
  let dir: string;
  let dev: VirtioDeviceProcess;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-restart-p9-'));
    fs.writeFileSync(path.join(dir, 'hello'), 'hello from the host\n');
  });

  after(async () => {
    await dev?.shutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('answers EBADF for the fids of before its death, and serves a new attach', async () => {
    const memory = GuestMemory.create(16 * MiB);
    const backend = await p9Kind.open({ path: dir, tag: 'share0', readOnly: false }, { index: 0, vmName: 'test', log: pino({ level: 'silent' }) });
    dev = await VirtioDeviceProcess.start({
      name: 'p90', kind: 'p9', numQueues: 1, backendFd: backend.fd, options: backend.options, memory, jail: true, seccomp: 'enforce',
      logLevel: 'warn', log: pino({ level: 'silent' }), writeLog: () => {}, replacement: 'resume',
    });
    const failures: string[] = [];
    dev.onFailure = (why) => failures.push(why);
    const view = DeviceView.map(memory.fd, memory.regions);
    const dm = new DriverMemory(view, [{ gpa: 0, size: 8 * MiB, offset: 0 }, { gpa: 8 * MiB, size: 8 * MiB, offset: 8 * MiB }]);
    const q = new DriverQueue(view, 0, 64, dm.allocRings(64), (len, align) => dm.alloc(len, align), dev.kickFds[0], dev.callFds[0]);
    dev.activate(dev.hello.deviceFeatures, [{ index: 0, size: 64, ...q.addrs }]);
    const c = new P9Client(new QueueTransport(dm, q, MSIZE));
    await c.version(MSIZE);
    await c.attach(1);
    await c.walk(1, 2, ['hello']);
    await c.lopen(2, 0);
    assert.equal(Buffer.from(await c.read(2, 0, 100)).toString(), 'hello from the host\n');

    const pid = dev.pid;
    process.kill(pid, 'SIGKILL');
    for (let i = 0; dev.pid === pid || dev.state !== 'running'; i++) {
      assert.ok(i < 200, 'no successor within 10 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    await assert.rejects(c.read(2, 0, 100), (e: unknown) => e instanceof P9ClientError && e.errno === EBADF, 'an open fid of the dead process');
    await assert.rejects(c.walk(1, 3, ['hello']), (e: unknown) => e instanceof P9ClientError && e.errno === EBADF, 'the root fid of the dead process');
    await c.version(MSIZE);
    await c.attach(1);
    await c.walk(1, 2, ['hello']);
    await c.lopen(2, 0);
    assert.equal(Buffer.from(await c.read(2, 0, 100)).toString(), 'hello from the host\n', 'a fresh attach is served');
    assert.equal(dev.restarts, 1);
    assert.deepEqual(failures, [], 'the device is not failed: only its fids are gone');
  });
});
