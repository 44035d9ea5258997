// Guest test: the same default kernel as a compressed bzImage (LZ4), loaded
// by the bzImage path (setup header copied into the zero page, protected-
// mode part at 1 MiB, 64-bit entry 0x200 past it), decompresses itself and
// reaches /init.
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { defaultGuest } from '../../src/core/cli.js';
import { logRecords, runSplitvm, type RunResult } from '../helpers/run-splitvm.js';
import { requireKvm } from '../helpers/kvm.js';

describe('guest: the default kernel as a bzImage', function () {
  this.timeout(300000);
  before(function () {
    requireKvm(this);
  });
  let r: RunResult;

  before(async function () {
    const guest = defaultGuest();
    r = await runSplitvm(['run', '--kernel', join(dirname(guest.kernel), 'bzImage'), '--initrd', guest.initrd, '--log-level', 'info'], { timeoutMs: 240000 });
  });

  it('is loaded as a bzImage', function () {
    const loaded = logRecords(r.stderr, 'kernel loaded')[0];
    assert.equal(loaded?.format, 'bzimage', r.stderr);
    assert.equal(loaded?.entry, 0x100200);
  });

  it('decompresses itself, reaches /init and resets (exit 0)', function () {
    assert.match(r.stdout, /Run \/init as init process/);
    assert.equal(r.status, 0, r.stderr);
  });
});
