import assert from 'node:assert/strict';
import { GuestMemory, MiB } from '../../../src/core/memory.js';
import { KernelFormatError, loadElf } from '../../../src/core/boot/elf.js';
import { makeElf, pattern } from './fixtures.js';

describe('ELF vmlinux loading', () => {
  it('loads two PT_LOAD segments at their physical addresses and zeroes the bss', () => {
    const mem = GuestMemory.create(32 * MiB);
    mem.slice(0x1002000, 0x4000).fill(0xaa); // stale bytes where the bss goes
    const text = pattern(0x1800, 3);
    const data = pattern(0x100, 7);
    const elf = makeElf({
      entry: 0x1000000n,
      segments: [
        { paddr: 0x1000000, data: text },
        { paddr: 0x1002000, data, memsz: 0x3000 },
        { paddr: 0, data: pattern(16), type: 4 }, // PT_NOTE: ignored
      ],
    });
    const k = loadElf(mem, elf);
    assert.equal(k.entry, 0x1000000);
    assert.equal(k.end, 0x1005000);
    assert.deepEqual(mem.slice(0x1000000, text.length), text);
    assert.deepEqual(mem.slice(0x1002000, data.length), data);
    assert.ok(mem.slice(0x1002000 + data.length, 0x3000 - data.length).every((b) => b === 0));
    assert.equal(mem.slice(0x1005000, 1)[0], 0xaa);
  });

  it('translates a kernel-virtual entry point to its physical address', () => {
    const mem = GuestMemory.create(32 * MiB);
    const elf = makeElf({
      entry: 0xffffffff81000040n,
      segments: [{ paddr: 0x1000000, vaddr: 0xffffffff81000000n, data: pattern(0x100) }],
    });
    assert.equal(loadElf(mem, elf).entry, 0x1000040);
  });

  const mem = GuestMemory.create(16 * MiB);
  const good = makeElf({ entry: 0x200000n, segments: [{ paddr: 0x200000, data: pattern(0x400) }] });
  const rejects = (image: Uint8Array, message: RegExp): void => {
    assert.throws(() => loadElf(mem, image), (e: unknown) => e instanceof KernelFormatError && message.test(e.message));
  };

  it('rejects a truncated ELF', () => {
    rejects(good.subarray(0, 40), /truncated inside its header/);
    rejects(good.subarray(0, 100), /truncated inside its program headers/);
    rejects(good.subarray(0, good.length - 1), /truncated inside segment 0/);
  });

  it('rejects a 32-bit ELF, another machine and a non-executable', () => {
    rejects(makeElf({ entry: 0x200000n, segments: [{ paddr: 0x200000, data: pattern(8) }], elfClass: 1 }), /not 64-bit/);
    rejects(makeElf({ entry: 0x200000n, segments: [{ paddr: 0x200000, data: pattern(8) }], machine: 183 }), /not for x86-64/);
    rejects(makeElf({ entry: 0x200000n, segments: [{ paddr: 0x200000, data: pattern(8) }], type: 3 }), /not an executable/);
  });

  it('rejects a random file', () => {
    rejects(pattern(4096, 9), /not an ELF file/);
  });

  it('rejects segments outside RAM or below 1 MiB, and an entry outside every segment', () => {
    rejects(makeElf({ entry: 0xff0000n, segments: [{ paddr: 0xff0000, data: pattern(8), memsz: 0x20000 }] }), /outside the guest's RAM/);
    rejects(makeElf({ entry: 0x1000n, segments: [{ paddr: 0x1000, data: pattern(8) }] }), /below 1 MiB/);
    rejects(makeElf({ entry: 0x300000n, segments: [{ paddr: 0x200000, data: pattern(8) }] }), /entry point 0x300000 is in no loadable segment/);
    rejects(makeElf({ entry: 0x200000n, segments: [{ paddr: 0x200000, data: pattern(8), type: 4 }] }), /no loadable/);
  });
});
