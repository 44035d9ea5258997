// Guest RAM: the x86 layout around the MMIO hole, bounds-checked views, and
// a memfd that a device process cannot resize.
import assert from 'node:assert/strict';
import { GiB, GuestMemory, MiB, ramLayout } from '../../../src/core/memory.js';
import * as libc from '../../../src/sys/libc.js';

describe('guest memory', function () {
  it('keeps RAM below the 3 GiB hole and puts the rest at 4 GiB', function () {
    assert.deepEqual(ramLayout(128 * MiB), [{ gpa: 0, size: 128 * MiB, offset: 0 }]);
    assert.deepEqual(ramLayout(5 * GiB), [
      { gpa: 0, size: 3 * GiB, offset: 0 },
      { gpa: 4 * GiB, size: 2 * GiB, offset: 3 * GiB },
    ]);
  });

  it('gives live views of RAM and refuses ranges outside it', function () {
    const mem = GuestMemory.create(4 * MiB);
    mem.write(0x1000, Uint8Array.of(1, 2, 3));
    assert.deepEqual([...mem.slice(0x1000, 3)], [1, 2, 3]);
    const probe = new Uint8Array(3);
    libc.pread(mem.fd, probe, 0x1000);
    assert.deepEqual([...probe], [1, 2, 3], 'the memfd holds the same bytes');
    assert.throws(() => mem.slice(4 * MiB - 2, 4), RangeError);
    assert.throws(() => mem.slice(3 * GiB, 1), RangeError);
  });

  it('is sealed against growing and shrinking', function () {
    const mem = GuestMemory.create(2 * MiB);
    assert.equal(libc.fcntl(mem.fd, libc.F_GET_SEALS) & (libc.F_SEAL_GROW | libc.F_SEAL_SHRINK), libc.F_SEAL_GROW | libc.F_SEAL_SHRINK);
    assert.throws(() => libc.pwrite(mem.fd, Uint8Array.of(1), 2 * MiB), /EPERM/);
    assert.throws(() => libc.ftruncate(mem.fd, MiB), /EPERM/);
  });
});
