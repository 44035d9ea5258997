// Positioned I/O between the image and guest buffers (blk/io.ts): how a
// scattered request's pieces are issued and when the whole settles.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { scatter } from '../../../src/devices/blk/io.js';

const later = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('blk scatter', () => {
  it('issues every non-empty piece at its file position', async () => {
    await fc.assert(
      fc.asyncProperty(fc.array(fc.nat(64), { maxLength: 8 }), fc.nat(1 << 20), async (lens, pos) => {
        const seen: [number, number][] = [];
        await scatter(lens.map((n) => new Uint8Array(n)), pos, async (v, at) => {
          seen.push([v.length, at]);
        });
        const want: [number, number][] = [];
        let at = pos;
        for (const n of lens) {
          if (n > 0) want.push([n, at]);
          at += n;
        }
        assert.deepEqual(seen, want);
      }),
    );
  });

  it('fails only after every other piece has finished with the guest buffers', async () => {
    // One piece fails at once while another is still reading into guest
    // memory: the request must not complete (its buffers and status byte go
    // back to the guest) until the slow piece is done.
    let slowDone = false;
    const bufs = [new Uint8Array(512), new Uint8Array(512)];
    await assert.rejects(
      scatter(bufs, 0, async (v, pos) => {
        if (pos === 0) throw new Error('EIO');
        await later(50);
        v.fill(0xaa);
        slowDone = true;
      }),
      /EIO/,
    );
    assert.equal(slowDone, true, 'scatter settled while a piece was still in flight');
  });
});
