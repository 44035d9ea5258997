// Positioned I/O between the image and guest buffers (blk/io.ts, transfer):
// where a scattered request's pieces land, short transfers, and when the
// whole settles. Real files where the kernel can show it; a scripted `io`
// (fs.read's signature) where a test needs a piece to fail while another is
// still in flight, which a real file will not do on demand.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { transfer, type PositionedIo } from '../../../src/devices/blk/io.js';

describe('blk transfer', () => {
  let dir: string;
  let fd: number;
  const SIZE = 1 << 16;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-blk-io-'));
    fd = fs.openSync(path.join(dir, 'image'), 'w+');
    fs.ftruncateSync(fd, SIZE);
  });
  afterEach(() => {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('writes every piece at its file position and reads them back', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat(700), { maxLength: 8 }), fc.nat(SIZE - 8 * 700), async (lens, pos) => {
        const bufs = lens.map((n, i) => new Uint8Array(n).fill(i + 1));
        await transfer(fs.write, fd, bufs, pos);
        const want = Buffer.concat(bufs);
        assert.deepEqual(fs.readFileSync(path.join(dir, 'image')).subarray(pos, pos + want.length), want);
        const back = lens.map((n) => new Uint8Array(n));
        await transfer(fs.read, fd, back, pos);
        assert.deepEqual(Buffer.concat(back), want);
      }),
      { numRuns: 50 },
    );
  });

  it('goes on after a short transfer, and fails a read past the end of the image', async () => {
    fs.writeSync(fd, Buffer.alloc(100, 0x5a), 0, 100, SIZE - 100);
    const tail = new Uint8Array(100);
    await transfer(fs.read, fd, [tail], SIZE - 100);
    assert.ok(tail.every((b) => b === 0x5a));
    // 300 bytes from 100 before the end: 100 come back, then a read of none
    await assert.rejects(transfer(fs.read, fd, [new Uint8Array(300)], SIZE - 100), /moved no bytes/);

    // a scripted io that moves at most 3 bytes a call
    const calls: number[] = [];
    const dribble: PositionedIo = (f, buf, off, len, pos, cb) => {
      calls.push(pos);
      fs.read(f, buf, off, Math.min(len, 3), pos, (err, n) => cb(err, n));
    };
    const got = new Uint8Array(10);
    await transfer(dribble, fd, [got], SIZE - 10);
    assert.ok(got.every((b) => b === 0x5a));
    assert.deepEqual(calls, [SIZE - 10, SIZE - 7, SIZE - 4, SIZE - 1]);
  });

  it('fails only after every other piece has finished with the guest buffers', async () => {
    // One piece fails at once while another is still reading into guest
    // memory: the request must not complete (its buffers and status byte go
    // back to the guest) until the slow piece is done.
    let slowDone = false;
    const io: PositionedIo = (_f, buf, off, len, pos, cb) => {
      if (pos === 0) {
        cb(Object.assign(new Error('EIO'), { code: 'EIO' }), 0);
        return;
      }
      setTimeout(() => {
        buf.fill(0xaa, off, off + len);
        slowDone = true;
        cb(null, len);
      }, 50);
    };
    await assert.rejects(transfer(io, fd, [new Uint8Array(512), new Uint8Array(512)], 0), /EIO/);
    assert.equal(slowDone, true, 'transfer settled while a piece was still in flight');
  });

  it('settles at once when there is nothing to move', async () => {
    let called = false;
    await transfer(() => (called = true), fd, [new Uint8Array(0), new Uint8Array(0)], 0);
    assert.equal(called, false);
  });
});
