// --seccomp: enforce by default; log and off exist for writing policies and
// debugging, and say loudly that devices are then not contained.
import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { logRecords, runSplitvm } from '../helpers/run-splitvm.js';
import { RESET, tinyGuest } from '../helpers/tiny-guest.js';
import { requireKvm } from '../helpers/kvm.js';

describe('splitvm run --seccomp', function () {
  this.timeout(30000);
  before(function () {
    requireKvm(this);
  });
  const disk = join(mkdtempSync(join(tmpdir(), 'splitvm-seccomp-')), 'disk.img');
  writeFileSync(disk, Buffer.alloc(1024 * 1024));
  const elf = tinyGuest('reset', RESET);

  const installed = (stderr: string) => logRecords<{ seccomp: string }>(stderr, 'seccomp policy installed').map((l) => l.seccomp);

  it('enforces the device policy by default, without a warning', async function () {
    const r = await runSplitvm(['run', '--kernel', elf, '--disk', disk, '--log-level', 'info']);
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(installed(r.stderr), ['enforce']);
    assert.doesNotMatch(r.stderr, /WARNING/);
  });

  for (const mode of ['log', 'off']) {
    it(`--seccomp=${mode} runs the device but warns that it is not contained`, async function () {
      const r = await runSplitvm(['run', '--kernel', elf, '--disk', disk, `--seccomp=${mode}`, '--log-level', 'info']);
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stderr, new RegExp(`splitvm: WARNING: --seccomp=${mode}: .*not contained`));
      assert.deepEqual(installed(r.stderr), [mode]);
    });
  }

  it('refuses an unknown mode', async function () {
    const r = await runSplitvm(['run', '--kernel', elf, '--seccomp', 'strict']);
    assert.equal(r.status, 2);
    assert.equal(r.stderr.trim(), 'splitvm: --seccomp must be enforce, log or off, not "strict"');
  });
});
