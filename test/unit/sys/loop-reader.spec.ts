// Reading an fd on the event loop into a buffer of ours (sys/loop-reader.ts):
// real eventfds, written from this process and from another one, as KVM's
// ioeventfd or a vhost-user frontend would kick a device; and a socket, as
// a net device waits for passt's bytes (a tap reads alike: one frame a read).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import * as libc from '../../../src/sys/libc.js';
import { LoopReader } from '../../../src/sys/loop-reader.js';

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

describe('LoopReader', () => {
  it('calls its handler for writes made before and after start, consuming the counter', async () => {
    const fd = libc.eventfd(libc.EFD_CLOEXEC); // blocking, as the core makes a kick eventfd
    libc.eventfdWrite(fd, 3n); // a kick before the queue is served
    let calls = 0;
    const errors: Error[] = [];
    const r = new LoopReader(fd, new Uint8Array(16), (e) => errors.push(e));
    const flags = parseInt(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8').match(/flags:\s+(\d+)/)![1]!, 8);
    assert.ok(flags & O_NONBLOCK, 'the eventfd is non-blocking once watched');
    await new Promise((resolve) => setTimeout(resolve, 50));
    // nothing is read before start: a spare device process holds the same eventfds as the serving one
    assert.match(fs.readFileSync(`/proc/self/fdinfo/${fd}`, 'utf8'), /eventfd-count:\s+3\b/);
    r.start(() => void calls++);
    r.start(() => void calls++); // a second start (a queue activated again) adds no second handler
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
    new LoopReader(fd, new Uint8Array(16), (e) => assert.fail(e)).start(() => void calls++);
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

  it('reads into the given buffer; a handler that answers false stops the reading until resume, and what came meanwhile waits in the fd', async () => {
    const [ours, theirs] = libc.socketpair();
    const buf = new Uint8Array(64);
    const got: string[] = [];
    let stopAfter = 1;
    const r = new LoopReader(theirs, buf, (e) => assert.fail(e));
    r.start((n) => {
      got.push(Buffer.from(buf.subarray(0, n)).toString());
      return --stopAfter > 0;
    });
    fs.writeSync(ours, 'one');
    await until(() => got.length === 1);
    fs.writeSync(ours, 'two');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(got, ['one'], 'nothing is read while stopped');
    stopAfter = 10;
    r.resume();
    await until(() => got.length === 2);
    assert.deepEqual(got, ['one', 'two']);
    r.pause();
    fs.writeSync(ours, 'three');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(got.length, 2, 'nothing is read while paused');
    r.resume();
    await until(() => got.length === 3);
    assert.equal(got[2], 'three');
    r.pause();
    libc.close(ours);
  });

  it('a start and a pause in the same turn read nothing, the first time too', async () => {
    const [ours, theirs] = libc.socketpair();
    const got: number[] = [];
    const r = new LoopReader(theirs, new Uint8Array(64), (e) => assert.fail(e));
    r.start((n) => void got.push(n));
    r.pause(); // the net device: it waits, then a reset or the link going down stops the wait at once
    fs.writeSync(ours, 'a frame');
    await new Promise((resolve) => setTimeout(resolve, 100));
    assert.deepEqual(got, []);
    r.resume();
    await until(() => got.length === 1);
    r.pause();
    libc.close(ours);
  });

  it('reads a duplicate: the fd given stays open after the other end closes', async () => {
    const [ours, theirs] = libc.socketpair();
    const errors: Error[] = [];
    new LoopReader(theirs, new Uint8Array(8), (e) => errors.push(e)).start(() => {});
    libc.close(ours);
    await until(() => errors.length > 0);
    assert.ok(fs.existsSync(`/proc/self/fd/${theirs}`), "the caller's fd is still open");
    libc.close(theirs);
  });

  it('a pause and a resume inside the handler leave it reading; a pause alone stops it', async () => {
    const [ours, theirs] = libc.socketpair();
    const buf = new Uint8Array(8);
    let calls = 0;
    const r = new LoopReader(theirs, buf, (e) => assert.fail(e));
    r.start(() => {
      calls++;
      r.pause();
      if (calls === 1) r.resume(); // the net device: it stops, then asks again once it found nothing more
    });
    fs.writeSync(ours, 'a');
    await until(() => calls === 1);
    fs.writeSync(ours, 'b');
    await until(() => calls === 2);
    fs.writeSync(ours, 'c');
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.equal(calls, 2, 'the second handler call paused it');
    libc.close(ours);
  });

  it('reports the other end closing as an error, once', async () => {
    const [ours, theirs] = libc.socketpair();
    const errors: Error[] = [];
    new LoopReader(theirs, new Uint8Array(8), (e) => errors.push(e)).start(() => {});
    libc.close(ours);
    await until(() => errors.length > 0);
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal(errors.length, 1);
    assert.match(errors[0]!.message, /reached its end/);
  });
});
