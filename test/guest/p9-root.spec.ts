// Guest test: the built-in guest kernel mounts its root file system from a
// host folder over virtio-9p (served by a jailed device process under its
// enforcing seccomp policy) and runs /init from it; no initramfs. Two boots
// side by side (one core each): the share read-write, and the share with
// `,ro` mounted read-only. Guest user mode cannot make system calls under
// this host's KVM, so what the kernel does and prints is the check: the tag
// found on PCI, the mount, and /init read and started from the share.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultGuest } from '../../src/core/cli.js';
import { logRecords, runSplitvm, type RunResult } from '../helpers/run-splitvm.js';
import { requireKvm } from '../helpers/kvm.js';

const ROOTFLAGS = 'root=root rootfstype=9p rootflags=trans=virtio,version=9p2000.L';

function snapshot(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort().map((p) => `${p} ${statSync(join(dir, p)).mtimeMs}`);
}

describe('guest: root on a virtio-9p share from a jailed device process', function () {
  this.timeout(300000);
  before(function () {
    requireKvm(this);
  });
  const dir = mkdtempSync(join(tmpdir(), 'splitvm-p9-guest-'));
  const rw = join(dir, 'rw');
  const ro = join(dir, 'ro');
  let rwRun: RunResult;
  let roRun: RunResult;
  let roBefore: string[];

  before(async function () {
    const guest = defaultGuest();
    // Each share holds the same tree as the built-in initramfs (its /init).
    for (const tree of [rw, ro]) {
      mkdirSync(tree);
      execFileSync('cpio', ['-idm', '--quiet', '-F', guest.initrd], { cwd: tree });
    }
    roBefore = snapshot(ro);
    const boot = (share: string, append: string): Promise<RunResult> =>
      runSplitvm(['run', '--kernel', guest.kernel, '--mem', '96', '--log-level', 'info', '--share', share, '--append', append], { timeoutMs: 240000 });
    [rwRun, roRun] = await Promise.all([boot(`${rw},tag=root`, `${ROOTFLAGS} rw init=/init`), boot(`${ro},tag=root,ro`, `${ROOTFLAGS} ro init=/init`)]);
  });

  it('exits 0 when the guest resets, both boots', function () {
    for (const r of [rwRun, roRun]) assert.equal(r.status, 0, `status ${r.status}, stderr:\n${r.stderr.slice(-3000)}\nconsole tail:\n${r.stdout.slice(-2000)}`);
  });

  it('starts the 9p device process under its enforcing seccomp policy, serving the share by its tag', function () {
    for (const [r, readOnly] of [[rwRun, false], [roRun, true]] as const) {
      assert.deepEqual(logRecords(r.stderr, 'seccomp policy installed').map((l) => [l.device, l.seccomp]), [['p90', 'enforce']]);
      const ready = logRecords(r.stderr, 'device ready');
      assert.equal(ready.length, 1);
      assert.equal(ready[0]!.tag, 'root');
      assert.equal(ready[0]!.readOnly, readOnly);
    }
  });

  it('mounts the share as the root file system and runs /init from it', function () {
    for (const r of [rwRun, roRun]) {
      assert.match(r.stdout, /VFS: Mounted root \(9p filesystem\)/);
      assert.match(r.stdout, /Run \/init as init process/);
      assert.doesNotMatch(r.stdout, /Failed to execute \/init|VFS: Unable to mount root|No filesystem could mount root/);
    }
  });

  it('mounts the read-write share read-write, and the ro share read-only, leaving it untouched', function () {
    assert.doesNotMatch(rwRun.stdout, /VFS: Mounted root \(9p filesystem\) readonly/);
    assert.match(roRun.stdout, /VFS: Mounted root \(9p filesystem\) readonly/);
    assert.deepEqual(snapshot(ro), roBefore);
  });
});
