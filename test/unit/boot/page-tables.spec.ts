import assert from 'node:assert/strict';
import { GuestMemory, MiB } from '../../../src/core/memory.js';
import { writePageTables } from '../../../src/core/boot/page-tables.js';

describe('boot page tables', () => {
  const mem = GuestMemory.create(4 * MiB);
  const cr3 = writePageTables(mem);
  const u64 = (gpa: number): bigint => new DataView(mem.slice(gpa, 8).slice().buffer).getBigUint64(0, true);

  it('returns the PML4 address as CR3', () => {
    assert.equal(cr3, 0x9000);
  });

  it('links PML4[0] to the PDPT and PDPT[0..3] to four page directories', () => {
    assert.equal(u64(0x9000), 0xa003n);
    assert.equal(u64(0x9008), 0n);
    for (let i = 0; i < 4; i++) assert.equal(u64(0xa000 + i * 8), BigInt(0xb000 + i * 0x1000) | 3n);
    assert.equal(u64(0xa000 + 4 * 8), 0n);
  });

  it('identity-maps 4 GiB with present, writable 2 MiB pages', () => {
    assert.equal(u64(0xb000), 0x83n);
    assert.equal(u64(0xb008), 0x200083n);
    assert.equal(u64(0xb000 + 511 * 8), 0x3fe00083n);
    assert.equal(u64(0xc000), 0x40000083n); // 1 GiB
    assert.equal(u64(0xe000 + 511 * 8), 0xffe00083n); // last 2 MiB below 4 GiB
    // Translate a few addresses through the tables.
    for (const addr of [0, 0x1234567, 0xfec00000, 0xfee00000, 0xc0000000]) {
      const pml4e = u64(Number(cr3) + 8 * Math.floor(addr / 2 ** 39));
      const pdpte = u64(Number(pml4e & ~0xfffn) + 8 * Math.floor(addr / 2 ** 30));
      const pde = u64(Number(pdpte & ~0xfffn) + 8 * (Math.floor(addr / 2 ** 21) % 512));
      assert.equal(pde & 0x80n, 0x80n);
      assert.equal(Number(pde & ~0x1fffffn) + (addr % 2 ** 21), addr);
    }
  });
});
