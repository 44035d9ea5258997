// Host quirks with tiny hand-written guests (64-bit ELF "kernels" entered
// directly): on a software-KVM host (kvm_pvm) splitvm steps over the
// instructions its emulator cannot run (CLAC, STAC, FWAIT) and the guest
// carries on; any other emulation failure stops the VM with one sentence
// naming the guest RIP and the instruction bytes, and a non-zero status.
// On a host with hardware virtualization these instructions simply run, so
// there is nothing to observe: the tests say so and are skipped.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { isSoftwareKvmHost } from '../../src/core/quirks.js';
import { RESET, tinyGuest } from '../helpers/tiny-guest.js';
import { logRecords, runSplitvm } from '../helpers/run-splitvm.js';
import { requireKvm } from '../helpers/kvm.js';

describe('host quirks (software KVM)', function () {
  this.timeout(60000);
  before(function () {
    requireKvm(this);
  });

  before(function () {
    if (!isSoftwareKvmHost()) {
      console.log('    (this host has hardware virtualization: no quirks to observe)');
      this.skip();
    }
  });

  it('steps over CLAC, STAC and FWAIT and lets the guest go on', async function () {
    const elf = tinyGuest('fixups', `  clac\n  stac\n  fwait\n${RESET}`);
    const r = await runSplitvm(['run', '--kernel', elf, '--log-level', 'info']);
    assert.equal(r.status, 0, r.stderr);
    const stopped = logRecords(r.stderr, 'guest stopped')[0];
    assert.equal(stopped?.fixups, 3, r.stderr);
  });

  it('reports an instruction it cannot fix with the RIP and its bytes, and exits 1', async function () {
    // POPCNT is one of them (the kernel is kept away from it with clearcpuid=151).
    const elf = tinyGuest('popcnt', `  popcnt %rax, %rbx\n${RESET}`);
    const r = await runSplitvm(['run', '--kernel', elf]);
    assert.equal(r.status, 1);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    const entry = execFileSync('readelf', ['-h', elf], { encoding: 'utf8' }).match(/Entry point address:\s+(0x[0-9a-f]+)/)![1];
    assert.equal(lines[0], `splitvm: vCPU 0 stopped on an instruction KVM cannot emulate at RIP ${entry} (bytes: f3 48 0f b8 d8 b0 fe e6)`);
  });
});
