// The core's supervisor restarting a real jailed 9p device process that dies
// (replacement 'resume'): the new process takes the dead one's fids over
// from the fid journal in the core's in-flight file — an open file reads on
// where it was, a walked fid walks on, the negotiated msize holds — and a
// fid whose file went away meanwhile gets Rlerror EBADF, the documented
// errno, as does one open for appending (a write taken again would append
// twice); it never answers for an old fid with another file. The test plays
// the guest's 9p client over the queue.
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
const O_WRONLY = 1;
const O_APPEND = 0o2000;

describe('device supervisor: a 9p device process that dies', function () {
  this.timeout(60000);
  let dir: string;
  let dev: VirtioDeviceProcess;

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-restart-p9-'));
    fs.writeFileSync(path.join(dir, 'hello'), 'hello from the host\n');
    fs.writeFileSync(path.join(dir, 'log'), 'first\n');
    fs.writeFileSync(path.join(dir, 'gone'), 'soon removed\n');
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(path.join(dir, 'sub', 'inner'), 'inner file\n');
  });

  after(async () => {
    await dev?.shutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('its successor takes the fids over (open files, walked fids), and answers EBADF for a fid whose file went away or that appends', async () => {
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
    await c.walk(1, 3, ['log']);
    await c.lopen(3, O_WRONLY | O_APPEND);
    await c.walk(1, 4, ['gone']);
    await c.walk(1, 5, ['sub']);
    await c.walk(1, 6, ['hello']);
    await c.clunk(6); // clunked before the death: stays unknown after it

    fs.rmSync(path.join(dir, 'gone'));
    const pid = dev.pid;
    process.kill(pid, 'SIGKILL');
    for (let i = 0; dev.pid === pid || dev.state !== 'running'; i++) {
      assert.ok(i < 200, 'no successor within 10 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(Buffer.from(await c.read(2, 6, 100)).toString(), 'from the host\n', 'an open fid reads on');
    await assert.rejects(c.write(3, 0, Buffer.from('second\n')), (e: unknown) => e instanceof P9ClientError && e.errno === EBADF, 'a fid open for appending');
    assert.equal(fs.readFileSync(path.join(dir, 'log'), 'utf8'), 'first\n');
    await c.walk(5, 7, ['inner']);
    await c.lopen(7, 0);
    assert.equal(Buffer.from(await c.read(7, 0, 100)).toString(), 'inner file\n', 'a walked directory fid walks on');
    await c.walk(1, 8, ['hello']);
    await assert.rejects(c.lopen(4, 0), (e: unknown) => e instanceof P9ClientError && e.errno === EBADF, 'the fid of a file removed meanwhile');
    await assert.rejects(c.read(6, 0, 10), (e: unknown) => e instanceof P9ClientError && e.errno === EBADF, 'a fid clunked before the death');
    assert.equal(dev.restarts, 1);
    assert.deepEqual(failures, [], 'the device is not failed');
    assert.ok(s.lines.some((l) => /took over the fids of a dead predecessor/.test(l) && /"kept":3/.test(l) && /"dropped":1/.test(l)), 'the successor logs what it took over');

    // A fresh session still works, and forgets the old fids.
    await c.version(MSIZE);
    await assert.rejects(c.read(2, 0, 10), (e: unknown) => e instanceof P9ClientError && e.errno === EBADF, 'Tversion ends the session');
    await c.attach(1);
    await c.walk(1, 2, ['hello']);
    await c.lopen(2, 0);
    assert.equal(Buffer.from(await c.read(2, 0, 100)).toString(), 'hello from the host\n');
  });
});
