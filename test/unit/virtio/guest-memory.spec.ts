// GuestMemory: translation through the region table, bounds on every access.
import assert from 'node:assert/strict';
import { GuestMemory, GuestMemoryError, validateRegions } from '../../../src/devices/guest-memory.js';
import * as libc from '../../../src/sys/libc.js';

const FOUR_GIB = 2 ** 32;

describe('GuestMemory', () => {
  const low = new Uint8Array(0x2000);
  const high = new Uint8Array(0x1000);
  const mem = GuestMemory.fromBuffers([{ gpa: 0, bytes: low }, { gpa: FOUR_GIB, bytes: high }]);

  it('translates into the right region, zero-copy', () => {
    mem.slice(FOUR_GIB + 0x10, 4).set([1, 2, 3, 4]);
    assert.deepEqual([...high.subarray(0x10, 0x14)], [1, 2, 3, 4]);
    mem.write(0x1ffc, new Uint8Array([9, 9, 9, 9]));
    assert.equal(low[0x1fff], 9);
  });
  it('rejects ranges outside RAM, crossing a region end, or wrapping', () => {
    assert.throws(() => mem.slice(0x2000, 1), GuestMemoryError);
    assert.throws(() => mem.slice(0x1fff, 2), GuestMemoryError);
    assert.throws(() => mem.slice(FOUR_GIB - 1, 2), GuestMemoryError);
    assert.throws(() => mem.slice(FOUR_GIB + 0xfff, 2), GuestMemoryError);
    assert.throws(() => mem.slice(2 ** 53, 1), GuestMemoryError);
    assert.throws(() => mem.slice(2 ** 53 - 1, 2), GuestMemoryError);
    assert.throws(() => mem.slice(-1, 1), GuestMemoryError);
    assert.throws(() => mem.slice(0, -1), GuestMemoryError);
    assert.throws(() => mem.slice(0.5, 1), GuestMemoryError);
    assert.throws(() => mem.slice(0, 2 ** 64), GuestMemoryError);
  });
  it('allows empty ranges inside or at the end of a region', () => {
    assert.equal(mem.slice(0x2000, 0).length, 0);
    assert.equal(mem.slice(0x100, 0).length, 0);
    assert.throws(() => mem.slice(0x3000, 0), GuestMemoryError);
  });
  it('validates region tables', () => {
    assert.throws(() => validateRegions([]), /regions/);
    assert.throws(() => validateRegions([{ gpa: 0, size: 0x1000, offset: 0 }, { gpa: 0x800, size: 0x1000, offset: 0x1000 }]), /overlap/);
    assert.throws(() => validateRegions([{ gpa: 0, size: 0x1000, offset: 1 }]), /aligned/);
    assert.throws(() => validateRegions([{ gpa: 2 ** 53, size: 1, offset: 0 }]), /2\^53/);
    assert.throws(() => validateRegions([{ gpa: 0, size: 0, offset: 0 }]), /empty/);
  });
  it('maps a memfd MAP_SHARED with region offsets', () => {
    const fd = libc.memfdCreate('gm-test');
    try {
      libc.ftruncate(fd, 0x4000);
      const a = GuestMemory.map(fd, [{ gpa: 0x10000, size: 0x2000, offset: 0 }, { gpa: FOUR_GIB, size: 0x2000, offset: 0x2000 }]);
      const b = GuestMemory.map(fd, [{ gpa: 0, size: 0x4000, offset: 0 }]);
      a.write(FOUR_GIB + 5, new Uint8Array([42]));
      assert.equal(b.slice(0x2005, 1)[0], 42);
    } finally {
      libc.close(fd);
    }
  });
  it('refuses a region past the end of the memory file (it would SIGBUS the device on first touch)', () => {
    const fd = libc.memfdCreate('gm-test-short');
    try {
      libc.ftruncate(fd, 0x2000);
      assert.throws(() => GuestMemory.map(fd, [{ gpa: 0, size: 0x4000, offset: 0 }]), /past the end of the 8192-byte memory file/);
      assert.throws(() => GuestMemory.map(fd, [{ gpa: 0, size: 0x1000, offset: 0 }, { gpa: FOUR_GIB, size: 0x1000, offset: 0x2000 }]), /past the end/);
      assert.equal(GuestMemory.map(fd, [{ gpa: 0, size: 0x2000, offset: 0 }]).slice(0x1fff, 1).length, 1);
    } finally {
      libc.close(fd);
    }
  });
});
