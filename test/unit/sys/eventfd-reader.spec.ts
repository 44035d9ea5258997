// Reading an eventfd on the event loop (sys/eventfd-reader.ts), as a device
// takes its queues' kicks: real eventfds, written from this process and from
// another one, as KVM's ioeventfd or a vhost-user frontend would.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import * as libc from '../../../src/sys/libc.js';
import { EventfdReader } from '../../../src/sys/eventfd-reader.js';

const O_NONBLOCK = 0o4000;

function until(cond: () => boolean, ms = 2000): Promise<void> {
  const end = Date.now() + ms;
  return new Promise((resolve, reject) => {
    const check = (): void => {
      if (cond()) resolve();
      else if (Date.now() > end) reject(new Error('timed out'));
      else setTimeout(check, 5);
    };
    check();
  });
}

describe('EventfdReader', () => {
  it('calls its handler for writes made before and after start, consuming the counter', async () => {
    const fd = libc.eventfd(libc.EFD_CLOEXEC); // blocking, as the core makes a kick eventfd
    libc.eventfdWrite(fd, 3n); // a kick before the queue is served
    let calls = 0;
    const errors: Error[] = [];
    const r = new EventfdReader(fd, (e) => errors.push(e));
    const flags = parseInt(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').match(/flags:\s+(\d+)/)![1]!, 8);
    assert.ok(flags & O_NONBLOCK, 'the eventfd is non-blocking once watched');
    await new Promise((resolve) => setTimeout(resolve, 50));
    // nothing is read before start: a spare device process holds the same eventfds as the serving one
    assert.match(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'), /eventfd-count:\s+3\b/);
    r.start(() => calls++);
    r.start(() => calls++); // a second start (a queue activated again) adds no second handler
    await until(() => calls === 1);
    assert.equal(libc.eventfdRead(fd), 0n, 'the reader consumed the counter');
    libc.eventfdWrite(fd);
    await until(() => calls === 2);
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(calls, 2);
    assert.deepEqual(errors, []);
  });

  it('hears writes from another process, and each read of the counter is one call', async () => {
    const fd = libc.eventfd(0);
    let calls = 0;
    new EventfdReader(fd, (e) => assert.fail(e)).start(() => calls++);
    // the child writes 20 times, 5 ms apart: writes that land between two reads are one call
    const child = spawn(
      process.execPath,
      ['-e', "const b = Buffer.alloc(8); b[0] = 1; let i = 0; const t = setInterval(() => { require('fs').writeSync(3, b); if (++i === 20) clearInterval(t); }, 5);"],
      { stdio: ['ignore', 'ignore', 'inherit', fd] },
    );
    await new Promise((resolve) => child.on('exit', resolve));
    await until(() => calls > 0);
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(libc.eventfdRead(fd), 0n, 'every write was read');
    assert.ok(calls >= 1 && calls <= 20, `${calls} calls for 20 writes`);
  });
});
