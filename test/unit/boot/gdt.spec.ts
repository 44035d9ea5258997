import assert from 'node:assert/strict';
import { GuestMemory, MiB } from '../../../src/core/memory.js';
import { bootGdtEntries, gdtEntry, segmentFromEntry, writeGdt } from '../../../src/core/boot/gdt.js';
import { GDT_ADDR, IDT_ADDR } from '../../../src/core/boot/layout.js';

describe('boot GDT', () => {
  it('encodes the flat descriptors', () => {
    assert.deepEqual(bootGdtEntries(), [0n, 0x00af9b000000ffffn, 0x00cf93000000ffffn, 0x008f8b000000ffffn]);
    assert.equal(gdtEntry(0x9b, 0x12345678, 0xabcde), 0x120a9b345678bcden);
  });

  it('writes the GDT and an empty IDT, and derives the segments from the same bits', () => {
    const mem = GuestMemory.create(4 * MiB);
    mem.slice(IDT_ADDR, 8).fill(0xee);
    const { segments, gdt, idt } = writeGdt(mem);
    const raw = new DataView(mem.slice(GDT_ADDR, 32).slice().buffer);
    assert.equal(raw.getBigUint64(8, true), 0x00af9b000000ffffn);
    assert.equal(raw.getBigUint64(16, true), 0x00cf93000000ffffn);
    assert.deepEqual([...mem.slice(IDT_ADDR, 8)], [0, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(gdt, { base: 0x500, limit: 31 });
    assert.deepEqual(idt, { base: 0x520, limit: 7 });

    assert.deepEqual(segments.cs, {
      base: 0, limit: 0xffffffff, selector: 0x08, type: 11, present: 1, dpl: 0, db: 0, s: 1, l: 1, g: 1, avl: 0,
    });
    for (const seg of [segments.ds, segments.es, segments.fs, segments.gs, segments.ss]) {
      assert.deepEqual(seg, {
        base: 0, limit: 0xffffffff, selector: 0x10, type: 3, present: 1, dpl: 0, db: 1, s: 1, l: 0, g: 1, avl: 0,
      });
    }
    assert.equal(segments.tr.selector, 0x18);
    assert.equal(segments.tr.type, 11);
    assert.equal(segments.tr.s, 0);
    assert.equal(segments.tr.present, 1);
    assert.equal(segments.ldt.type, 2);
    assert.equal(segments.ldt.selector, 0);
  });

  it('decodes base, limit and flag bits of any descriptor', () => {
    const seg = segmentFromEntry(gdtEntry(0x40f3, 0xfedcba98, 0x12345), 0x2b);
    assert.equal(seg.base, 0xfedcba98);
    assert.equal(seg.limit, 0x12345);
    assert.equal(seg.type, 3);
    assert.equal(seg.dpl, 3);
    assert.equal(seg.db, 1);
    assert.equal(seg.g, 0);
    assert.equal(seg.selector, 0x2b);
  });
});
