import assert from 'node:assert/strict';
import { GuestMemory, MiB } from '../../../src/core/memory.js';
import { loadBzImage, parseBzImage } from '../../../src/core/boot/bzimage.js';
import { KernelFormatError } from '../../../src/core/boot/errors.js';
import { makeBzImage, pattern } from './fixtures.js';

describe('bzImage loading', () => {
  it('loads the protected-mode part at 1 MiB with the 64-bit entry 0x200 past it', () => {
    const mem = GuestMemory.create(16 * MiB);
    const payload = pattern(0x3000, 5);
    const k = loadBzImage(mem, makeBzImage({ setupSects: 2, payload, initSize: 0x800000 }));
    assert.equal(k.entry, 0x100200);
    assert.equal(k.end, 0x100000 + 0x800000); // init_size is larger than the image
    assert.deepEqual(mem.slice(0x100000, payload.length), payload);
    assert.equal(k.setupHeader.length, 0x26c - 0x1f1);
    assert.equal(k.setupHeader[0], 2); // setup_sects
    assert.equal(new DataView(k.setupHeader.buffer).getUint32(0x202 - 0x1f1, true), 0x53726448);
    assert.equal(k.initrdAddrMax, 0x7fffffff);
  });

  it('reads setup_sects = 0 as 4', () => {
    const payload = pattern(0x1000, 8);
    const image = makeBzImage({ setupSects: 0, payload });
    assert.equal(parseBzImage(image).protectedModeOffset, 5 * 512);
    const mem = GuestMemory.create(8 * MiB);
    const k = loadBzImage(mem, image);
    assert.equal(k.end, 0x101000);
    assert.deepEqual(mem.slice(0x100000, payload.length), payload);
  });

  it('rejects old protocols, 32-bit-only kernels and truncated images', () => {
    const mem = GuestMemory.create(8 * MiB);
    const rejects = (image: Uint8Array, message: RegExp): void => {
      assert.throws(() => loadBzImage(mem, image), (e: unknown) => e instanceof KernelFormatError && message.test(e.message));
    };
    rejects(makeBzImage({ payload: pattern(0x1000), version: 0x020b }), /boot protocol 2\.11; 2\.12 or newer/);
    rejects(makeBzImage({ payload: pattern(0x1000), xloadflags: 0 }), /XLF_KERNEL_64/);
    rejects(makeBzImage({ payload: pattern(0x1000) }).subarray(0, 0x240), /truncated inside its setup header/);
    rejects(makeBzImage({ payload: pattern(0x100) }), /truncated: it ends before/);
    rejects(makeBzImage({ payload: pattern(0x1000), initSize: 8 * MiB }), /more than the guest's low RAM/);
  });
});
