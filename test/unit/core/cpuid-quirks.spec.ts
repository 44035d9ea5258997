// Per-vCPU CPUID (APIC ids, topology, hypervisor bit) and the software-KVM
// instruction fixups.
import assert from 'node:assert/strict';
import { cpuidFor } from '../../../src/core/cpuid.js';
import { fixupFor } from '../../../src/core/quirks.js';

const leaf = (fn: number, index = 0) => ({ function: fn, index, flags: 0, eax: 0x11, ebx: 0x0800, ecx: 0, edx: 0 });

describe('cpuidFor', function () {
  it('gives each vCPU its APIC id and the package its CPU count', function () {
    for (const cpu of [0, 1, 3]) {
      const l1 = cpuidFor([leaf(1)], cpu, 4)[0]!;
      assert.equal(l1.ebx >>> 24, cpu);
      assert.equal((l1.ebx >>> 16) & 0xff, 4);
      assert.equal(l1.ebx & 0xffff, 0x0800, 'CLFLUSH size kept');
      assert.ok(l1.ecx & (1 << 31), 'hypervisor bit');
      assert.ok(l1.edx & (1 << 28), 'HTT with several CPUs');
    }
    assert.equal(cpuidFor([leaf(1)], 0, 1)[0]!.edx & (1 << 28), 0, 'no HTT alone');
  });

  it('describes the topology in leaf 0xB with the x2APIC id in EDX', function () {
    const [smt, core] = cpuidFor([leaf(0xb, 0), leaf(0xb, 1)], 2, 3);
    assert.deepEqual([smt!.ebx, smt!.ecx >> 8, smt!.edx], [1, 1, 2]);
    assert.deepEqual([core!.ebx, core!.ecx >> 8, core!.eax, core!.edx], [3, 2, 2, 2]);
  });

  it('leaves other leaves alone and does not modify its input', function () {
    const input = [leaf(0), leaf(7)];
    const out = cpuidFor(input, 1, 2);
    assert.deepEqual(out, input);
    assert.notEqual(out[0], input[0]);
  });
});

describe('fixupFor (software-KVM host quirks)', function () {
  it('recognises INT3, FWAIT, CLAC and STAC', function () {
    assert.deepEqual(fixupFor(Uint8Array.of(0xcc, 0x90)), { kind: 'int3', length: 1 });
    assert.deepEqual(fixupFor(Uint8Array.of(0x9b)), { kind: 'skip', length: 1 });
    assert.deepEqual(fixupFor(Uint8Array.of(0x0f, 0x01, 0xca)), { kind: 'clac', length: 3 });
    assert.deepEqual(fixupFor(Uint8Array.of(0x0f, 0x01, 0xcb)), { kind: 'stac', length: 3 });
  });

  it('has no fixup for anything else (e.g. CMPXCHG16B, XRSTOR, an unreadable RIP)', function () {
    assert.equal(fixupFor(Uint8Array.of(0x48, 0x0f, 0xc7, 0x0e)), null);
    assert.equal(fixupFor(Uint8Array.of(0x0f, 0xae, 0x2f)), null);
    assert.equal(fixupFor(new Uint8Array(0)), null);
  });
});
