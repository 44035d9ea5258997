import assert from 'node:assert/strict';
import { GuestMemory, MiB } from '../../../src/core/memory.js';
import { e820Map } from '../../../src/core/boot/e820.js';
import { buildZeroPage, writeZeroPage } from '../../../src/core/boot/zero-page.js';
import { makeBzImage, pattern } from './fixtures.js';

describe('zero page', () => {
  const e820 = e820Map(GuestMemory.create(64 * MiB).regions);

  it('builds a setup header for a vmlinux, with every field at its boot-protocol offset', () => {
    const mem = GuestMemory.create(64 * MiB);
    const rsi = writeZeroPage(mem, {
      cmdlineAddr: 0x20000,
      cmdlineSize: 42,
      initrd: { addr: 0x3f00000, size: 0x12345 },
      e820,
    });
    assert.equal(rsi, 0x7000);
    const zp = mem.slice(0x7000, 4096);
    const v = new DataView(zp.slice().buffer);
    assert.equal(v.getUint16(0x1fe, true), 0xaa55);
    assert.equal(v.getUint32(0x202, true), 0x53726448);
    assert.equal(String.fromCharCode(...zp.subarray(0x202, 0x206)), 'HdrS');
    assert.equal(v.getUint16(0x206, true), 0x020f);
    assert.equal(zp[0x210], 0xff);
    assert.equal(zp[0x211], 0x81);
    assert.equal(v.getUint16(0x224, true), 0xde00);
    assert.equal(v.getUint32(0x228, true), 0x20000);
    assert.equal(v.getUint32(0x0c8, true), 0);
    assert.equal(v.getUint32(0x238, true), 42);
    assert.equal(v.getUint32(0x218, true), 0x3f00000);
    assert.equal(v.getUint32(0x21c, true), 0x12345);
    assert.equal(v.getUint32(0x0c0, true), 0);
    assert.equal(v.getUint32(0x0c4, true), 0);
    assert.equal(v.getUint32(0x230, true), 0x1000000);
    assert.equal(v.getUint32(0x22c, true), 0x7fffffff);
    assert.equal(zp[0x1e8], 3);
    for (let i = 0; i < 3; i++) {
      const o = 0x2d0 + i * 20;
      assert.equal(Number(v.getBigUint64(o, true)), e820[i]!.addr);
      assert.equal(Number(v.getBigUint64(o + 8, true)), e820[i]!.size);
      assert.equal(v.getUint32(o + 16, true), e820[i]!.type);
    }
    assert.equal(v.getUint32(0x2d0 + 3 * 20 + 16, true), 0);
  });

  it('splits 64-bit addresses into the ext_* high halves', () => {
    const zp = buildZeroPage({ cmdlineAddr: 0x1_2345_6000, cmdlineSize: 1, initrd: { addr: 0x2_0000_1000, size: 0x1_0000_0010 }, e820 });
    const v = new DataView(zp.buffer);
    assert.equal(v.getUint32(0x228, true), 0x23456000);
    assert.equal(v.getUint32(0x0c8, true), 1);
    assert.equal(v.getUint32(0x218, true), 0x1000);
    assert.equal(v.getUint32(0x0c0, true), 2);
    assert.equal(v.getUint32(0x21c, true), 0x10);
    assert.equal(v.getUint32(0x0c4, true), 1);
  });

  it('starts from a bzImage header and keeps what the kernel declared', () => {
    const image = makeBzImage({ payload: pattern(4096), kernelAlignment: 0x200000, initrdAddrMax: 0x37ffffff });
    const zp = buildZeroPage({ setupHeader: image.subarray(0x1f1, 0x26c), cmdlineAddr: 0x20000, cmdlineSize: 10, e820 });
    const v = new DataView(zp.buffer);
    assert.equal(v.getUint32(0x230, true), 0x200000);
    assert.equal(v.getUint32(0x22c, true), 0x37ffffff);
    assert.equal(zp[0x234], 1);
    assert.equal(v.getUint16(0x236, true), 3);
    assert.equal(zp[0x210], 0xff);
    assert.equal(zp[0x211], 0x81);
    assert.equal(v.getUint32(0x228, true), 0x20000);
    assert.equal(v.getUint32(0x218, true), 0); // no initrd
    assert.ok(zp.subarray(0x26c, 0x2d0).every((b) => b === 0));
  });

  it('rejects more e820 entries than the zero page holds', () => {
    const many = Array.from({ length: 129 }, (_, i) => ({ addr: i * 0x1000, size: 0x1000, type: 1 }));
    assert.throws(() => buildZeroPage({ cmdlineAddr: 0x20000, cmdlineSize: 1, e820: many }), RangeError);
  });
});
