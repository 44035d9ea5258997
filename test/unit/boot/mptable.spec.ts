import assert from 'node:assert/strict';
import { GuestMemory, MiB } from '../../../src/core/memory.js';
import { buildMptable, MPTABLE_MAX_CPUS, mptableSize, writeMptable } from '../../../src/core/boot/mptable.js';
import { sum8 } from './fixtures.js';

interface ParsedMp {
  physptr: number;
  length: number;
  entries: number;
  lapic: number;
  cpus: { apicId: number; flags: number }[];
  ioapics: { id: number; version: number; addr: number }[];
  intsrc: { irq: number; apic: number; pin: number }[];
  lint: { type: number; pin: number }[];
  buses: string[];
}

function parse(table: Uint8Array, base = 0x9fc00): ParsedMp {
  const v = new DataView(table.buffer, table.byteOffset, table.byteLength);
  assert.equal(String.fromCharCode(...table.subarray(0, 4)), '_MP_');
  assert.equal(sum8(table.subarray(0, 16)), 0, 'floating pointer checksum');
  const physptr = v.getUint32(4, true);
  const mpc = physptr - base;
  assert.equal(String.fromCharCode(...table.subarray(mpc, mpc + 4)), 'PCMP');
  const length = v.getUint16(mpc + 4, true);
  assert.equal(table[mpc + 6], 4);
  assert.equal(sum8(table.subarray(mpc, mpc + length)), 0, 'configuration table checksum');
  const entries = v.getUint16(mpc + 34, true);
  const out: ParsedMp = {
    physptr, length, entries, lapic: v.getUint32(mpc + 36, true), cpus: [], ioapics: [], intsrc: [], lint: [], buses: [],
  };
  let at = mpc + 44;
  for (let i = 0; i < entries; i++) {
    switch (table[at]) {
      case 0: out.cpus.push({ apicId: table[at + 1]!, flags: table[at + 3]! }); at += 20; break;
      case 1: out.buses.push(String.fromCharCode(...table.subarray(at + 2, at + 8))); at += 8; break;
      case 2: out.ioapics.push({ id: table[at + 1]!, version: table[at + 2]!, addr: v.getUint32(at + 4, true) }); at += 8; break;
      case 3: out.intsrc.push({ irq: table[at + 5]!, apic: table[at + 6]!, pin: table[at + 7]! }); at += 8; break;
      case 4: out.lint.push({ type: table[at + 1]!, pin: table[at + 7]! }); at += 8; break;
      default: assert.fail(`unknown entry type ${table[at]}`);
    }
  }
  assert.equal(at, mpc + length);
  return out;
}

describe('MP table', () => {
  for (const n of [1, 2, 8]) {
    it(`describes ${n} CPU(s) with valid checksums`, () => {
      const table = buildMptable(n);
      assert.equal(table.length, mptableSize(n));
      const mp = parse(table);
      assert.equal(mp.physptr, 0x9fc10);
      assert.equal(mp.entries, n + 20);
      assert.equal(mp.lapic, 0xfee00000);
      assert.deepEqual(mp.cpus.map((c) => c.apicId), [...Array(n).keys()]);
      assert.deepEqual(mp.cpus.map((c) => c.flags), mp.cpus.map((_, i) => (i === 0 ? 3 : 1)));
      assert.deepEqual(mp.buses, ['ISA   ']);
      assert.deepEqual(mp.ioapics, [{ id: n, version: 0x11, addr: 0xfec00000 }]);
      assert.equal(mp.intsrc.length, 16);
      mp.intsrc.forEach((e, i) => assert.deepEqual(e, { irq: i, apic: n, pin: i }));
      assert.deepEqual(mp.lint, [{ type: 3, pin: 0 }, { type: 1, pin: 1 }]);
    });
  }

  it('fits the largest table below 0xa0000 and rejects one CPU more', () => {
    assert.equal(MPTABLE_MAX_CPUS, 40);
    assert.ok(0x9fc00 + mptableSize(MPTABLE_MAX_CPUS) <= 0xa0000);
    assert.ok(0x9fc00 + mptableSize(MPTABLE_MAX_CPUS + 1) > 0xa0000);
    parse(buildMptable(MPTABLE_MAX_CPUS));
    assert.throws(() => buildMptable(MPTABLE_MAX_CPUS + 1), { name: 'RangeError', message: /1 to 40 CPUs, not 41/ });
    assert.throws(() => buildMptable(0), RangeError);
    assert.throws(() => buildMptable(1.5), RangeError);
  });

  it('is written at the start of the EBDA', () => {
    const mem = GuestMemory.create(4 * MiB);
    writeMptable(mem, 4);
    parse(mem.slice(0x9fc00, mptableSize(4)));
  });
});
