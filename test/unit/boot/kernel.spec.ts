import assert from 'node:assert/strict';
import { GuestMemory, MiB } from '../../../src/core/memory.js';
import {
  BOOT_CR0, BootError, detectKernelFormat, KernelFormatError, loadLinux, placeInitrd,
} from '../../../src/core/boot/kernel.js';
import { makeBzImage, makeElf, pattern, sum8 } from './fixtures.js';

const vmlinux = makeElf({
  entry: 0xffffffff81000000n,
  segments: [{ paddr: 0x1000000, vaddr: 0xffffffff81000000n, data: pattern(0x2000), memsz: 0x100000 }],
});
const u32 = (mem: GuestMemory, gpa: number): number => new DataView(mem.slice(gpa, 4).slice().buffer).getUint32(0, true);

describe('Linux loading', () => {
  it('detects the kernel format', () => {
    assert.equal(detectKernelFormat(vmlinux), 'elf');
    assert.equal(detectKernelFormat(makeBzImage({ payload: pattern(0x1000) })), 'bzimage');
    assert.throws(() => detectKernelFormat(pattern(8192)), {
      name: 'KernelFormatError',
      message: 'the kernel file is not a Linux kernel (neither an ELF vmlinux nor a bzImage)',
    });
    assert.throws(() => detectKernelFormat(new Uint8Array(0)), KernelFormatError);
  });

  it('boots a vmlinux: every structure written, the vCPU state returned', () => {
    const mem = GuestMemory.create(64 * MiB);
    const initrd = pattern(0x5432, 11);
    const r = loadLinux(mem, { kernel: vmlinux, initrd, cmdline: 'console=ttyS0 reboot=k', cpus: 2 });
    assert.equal(r.format, 'elf');
    assert.equal(r.kernelEnd, 0x1100000);
    const cpu = r.cpu;
    assert.equal(cpu.rip, 0x1000000);
    assert.equal(cpu.rsp, 0x8ff0);
    assert.equal(cpu.rsi, 0x7000);
    assert.equal(cpu.rflags, 2);
    assert.equal(cpu.cr0, BOOT_CR0);
    assert.equal(cpu.cr0, 0x80010033);
    assert.equal(cpu.cr3, 0x9000);
    assert.equal(cpu.cr4, 0x20);
    assert.equal(cpu.efer, 0x500);
    assert.equal(cpu.segments.cs.l, 1);
    assert.equal(cpu.segments.ss.selector, 0x10);
    assert.deepEqual(cpu.gdt, { base: 0x500, limit: 31 });

    // Command line, NUL-terminated, pointed to by the zero page.
    const cmd = new TextDecoder().decode(mem.slice(0x20000, 23));
    assert.equal(cmd, 'console=ttyS0 reboot=k\0');
    assert.equal(u32(mem, 0x7000 + 0x228), 0x20000);
    // Initrd: highest page-aligned spot below the top of RAM.
    assert.deepEqual(r.initrd, { addr: 64 * MiB - 0x6000, size: 0x5432 });
    assert.deepEqual(mem.slice(64 * MiB - 0x6000, initrd.length), initrd);
    assert.equal(u32(mem, 0x7000 + 0x218), 64 * MiB - 0x6000);
    assert.equal(u32(mem, 0x7000 + 0x21c), 0x5432);
    // e820, page tables, MP table.
    assert.equal(mem.slice(0x7000 + 0x1e8, 1)[0], 3);
    assert.equal(u32(mem, 0x9000), 0xa003);
    assert.equal(String.fromCharCode(...mem.slice(0x9fc00, 4)), '_MP_');
    assert.equal(sum8(mem.slice(0x9fc00, 16)), 0);
  });

  it('boots a bzImage with its own setup header in the zero page', () => {
    const mem = GuestMemory.create(64 * MiB);
    const r = loadLinux(mem, { kernel: makeBzImage({ payload: pattern(0x4000), kernelAlignment: 0x200000 }), cmdline: '', cpus: 1 });
    assert.equal(r.format, 'bzimage');
    assert.equal(r.cpu.rip, 0x100200);
    assert.equal(u32(mem, 0x7000 + 0x230), 0x200000);
    assert.equal(mem.slice(0x7000 + 0x210, 1)[0], 0xff);
    assert.equal(mem.slice(0x20000, 1)[0], 0);
    assert.equal(r.initrd, undefined);
  });

  it('keeps the initrd below the kernel\'s initrd_addr_max', () => {
    const mem = GuestMemory.create(64 * MiB);
    const kernel = makeBzImage({ payload: pattern(0x4000), initrdAddrMax: 0x1ffffff });
    const r = loadLinux(mem, { kernel, initrd: pattern(0x3000), cmdline: 'x', cpus: 1 });
    assert.deepEqual(r.initrd, { addr: 0x2000000 - 0x3000, size: 0x3000 });
  });

  it('places an initrd only above the kernel and says when it does not fit', () => {
    assert.equal(placeInitrd(0x1001, 0x1100000, 0x4000000, 0x7fffffff), 0x4000000 - 0x2000);
    assert.equal(placeInitrd(0x4000000 - 0x1100000, 0x1100000, 0x4000000, 0x7fffffff), 0x1100000);
    assert.throws(() => placeInitrd(0x4000000 - 0x1100000 + 1, 0x1100000, 0x4000000, 0x7fffffff), BootError);
    const mem = GuestMemory.create(32 * MiB);
    assert.throws(
      () => loadLinux(mem, { kernel: vmlinux, initrd: new Uint8Array(16 * MiB), cmdline: '', cpus: 1 }),
      { name: 'BootError', message: /the initrd \(16777216 bytes\) does not fit/ },
    );
  });

  it('rejects a command line that is too long or contains a NUL', () => {
    const mem = GuestMemory.create(32 * MiB);
    loadLinux(mem, { kernel: vmlinux, cmdline: 'a'.repeat(2047), cpus: 1 });
    assert.throws(() => loadLinux(mem, { kernel: vmlinux, cmdline: 'a'.repeat(2048), cpus: 1 }), {
      name: 'BootError',
      message: 'the kernel command line is 2048 bytes; at most 2047 fit',
    });
    assert.throws(() => loadLinux(mem, { kernel: vmlinux, cmdline: 'a\0b', cpus: 1 }), /contains a NUL/);
  });

  it('rejects a CPU count the MP table cannot describe before loading anything', () => {
    const mem = GuestMemory.create(32 * MiB);
    assert.throws(() => loadLinux(mem, { kernel: vmlinux, cmdline: '', cpus: 41 }), RangeError);
    assert.equal(mem.slice(0x1000000, 1)[0], 0);
  });
});
