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
import { p9Kind } from '../../src/core/kinds/p9.js';
import type { VirtioDeviceProcess } from '../../src/core/supervisor/device-process.js';
import { P9Client, P9ClientError, QueueTransport } from '../../src/devices/harness/index.js';
import { superviseDevice } from '../helpers/supervised-device.js';

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
    const backend = await p9Kind.open({ path: dir, tag: 'share0', readOnly: false }, { index: 0, vmName: 'test', log: pino({ level: 'silent' }) });
    const s = await superviseDevice(backend, { name: 'p90', kind: 'p9', queueSize: 64, replacement: 'resume' });
    dev = s.dev;
    const failures: string[] = [];
    dev.onFailure = (why) => failures.push(why);
    const c = new P9Client(new QueueTransport(s.dm, s.q, MSIZE));
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
