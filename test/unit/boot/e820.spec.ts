import assert from 'node:assert/strict';
import { GiB, MiB, ramLayout } from '../../../src/core/memory.js';
import { e820Map, encodeE820, E820_RAM, E820_RESERVED } from '../../../src/core/boot/e820.js';

describe('e820 map', () => {
  it('describes 128 MiB', () => {
    assert.deepEqual(e820Map(ramLayout(128 * MiB)), [
      { addr: 0, size: 0x9fc00, type: E820_RAM },
      { addr: 0x9fc00, size: 0x100000 - 0x9fc00, type: E820_RESERVED },
      { addr: 0x100000, size: 128 * MiB - 0x100000, type: E820_RAM },
    ]);
  });

  it('describes 3 GiB, ending at the MMIO hole', () => {
    const map = e820Map(ramLayout(3 * GiB));
    assert.equal(map.length, 3);
    assert.deepEqual(map[2], { addr: 0x100000, size: 3 * GiB - 0x100000, type: E820_RAM });
  });

  it('describes 5 GiB with RAM above 4 GiB and nothing in the hole', () => {
    const map = e820Map(ramLayout(5 * GiB));
    assert.equal(map.length, 4);
    assert.deepEqual(map[2], { addr: 0x100000, size: 3 * GiB - 0x100000, type: E820_RAM });
    assert.deepEqual(map[3], { addr: 4 * GiB, size: 2 * GiB, type: E820_RAM });
    assert.ok(!map.some((e) => e.addr < 4 * GiB && e.addr + e.size > 3 * GiB));
    assert.equal(map.filter((e) => e.type === E820_RAM).reduce((n, e) => n + e.size, 0), 5 * GiB - (0x100000 - 0x9fc00));
  });

  it('encodes 20-byte packed entries', () => {
    const bytes = encodeE820([{ addr: 4 * GiB, size: 0x123456789, type: 2 }]);
    assert.equal(bytes.length, 20);
    const v = new DataView(bytes.buffer);
    assert.equal(v.getBigUint64(0, true), 0x100000000n);
    assert.equal(v.getBigUint64(8, true), 0x123456789n);
    assert.equal(v.getUint32(16, true), 2);
  });
});
