// Guest test: the guest kernel probes two virtio-blk devices on PCI (each
// served by its own jailed device process under its enforcing seccomp
// policy), mounts an ext4 image as its root filesystem from /dev/vda, and
// runs /init from it. Afterwards e2fsprogs on the host shows that the guest
// wrote to the image (mount count and last mount time).
// Crash containment, in the same boot: the second disk's device process is
// killed (SIGKILL) as soon as it has started. The core logs the death and
// starts a new device process that resumes the disk's queues: the guest
// probes and reads /dev/vdb without an I/O error, and the VM carries on.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultGuest } from '../../src/core/cli.js';
import { logRecords, runSplitvm, type RunResult } from '../helpers/run-splitvm.js';
import { requireKvm } from '../helpers/kvm.js';

function superblock(image: string): { mountCount: number; lastMount: string } {
  const out = execFileSync('dumpe2fs', ['-h', image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return {
    mountCount: Number(/^Mount count:\s+(\d+)/m.exec(out)![1]),
    lastMount: /^Last mount time:\s+(.*)$/m.exec(out)![1]!.trim(),
  };
}

describe('guest: ext4 root on virtio-blk from a jailed device process; a killed device is restarted', function () {
  this.timeout(300000);
  before(function () {
    requireKvm(this);
  });
  let r: RunResult;
  const dir = mkdtempSync(join(tmpdir(), 'splitvm-blk-guest-'));
  const root = join(dir, 'root.ext4');
  const data = join(dir, 'data.img');
  let initial: { mountCount: number; lastMount: string };
  let killedPid = 0;

  before(async function () {
    const guest = defaultGuest();
    // The root filesystem holds the same /init as the built-in initramfs.
    const tree = join(dir, 'tree');
    mkdirSync(tree);
    execFileSync('cpio', ['-idm', '--quiet', '-F', guest.initrd], { cwd: tree });
    execFileSync('mkfs.ext4', ['-q', '-F', '-d', tree, root, '16M']);
    writeFileSync(data, Buffer.alloc(1024 * 1024, 0x5a));
    initial = superblock(root);
    r = await runSplitvm([
      'run', '--kernel', guest.kernel, '--mem', '96', '--log-level', 'info',
      '--disk', `${root},serial=rootdisk`, '--disk', `${data},ro`,
      '--append', 'root=/dev/vda rw init=/init',
    ], {
      timeoutMs: 240000,
      onStderrLine: (line) => {
        if (!line.includes('"virtio-blk device started"')) return;
        const started = JSON.parse(line) as { device: string; pid: number };
        if (started.device === 'blk1') {
          killedPid = started.pid;
          process.kill(started.pid, 'SIGKILL');
        }
      },
    });
  });

  it('exits 0 when the guest resets', function () {
    assert.equal(r.status, 0, `status ${r.status}, stderr:\n${r.stderr.slice(-3000)}\nconsole tail:\n${r.stdout.slice(-2000)}`);
  });

  it('starts each device process, and the replacement, under its enforcing seccomp policy', function () {
    const installed = logRecords(r.stderr, 'seccomp policy installed');
    assert.deepEqual(installed.map((l) => [l.device, l.seccomp]).sort(), [['blk0', 'enforce'], ['blk1', 'enforce'], ['blk1', 'enforce']]);
  });

  it('logs which device died and how', function () {
    assert.ok(killedPid > 0, 'the test killed blk1');
    const died = logRecords(r.stderr).find((l) => typeof l.msg === 'string' && l.msg.startsWith('device blk1 died'));
    assert.ok(died, `a death line in:\n${r.stderr.slice(-3000)}`);
    assert.equal(died.msg, 'device blk1 died: killed by SIGKILL');
    assert.equal(died.pid, killedPid);
    assert.equal(died.signal, 'SIGKILL');
  });

  it('restarts the killed device, and the guest reads its disk without an I/O error', function () {
    assert.equal(logRecords(r.stderr).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('device blk1 restarted after it died')).length, 1, r.stderr.slice(-3000));
    assert.doesNotMatch(r.stdout, /I\/O error/);
  });

  it('probes both disks with their sizes', function () {
    assert.match(r.stdout, /virtio_blk virtio0: \[vda\] 32768 512-byte logical blocks/);
    assert.match(r.stdout, /virtio_blk virtio1: \[vdb\] 2048 512-byte logical blocks/);
  });

  it('mounts the ext4 root from /dev/vda and runs /init from it', function () {
    assert.match(r.stdout, /EXT4-fs \(vda\): mounted filesystem/);
    assert.match(r.stdout, /VFS: Mounted root \(ext4 filesystem\)/);
    assert.match(r.stdout, /Run \/init as init process/);
  });

  it('wrote the mount to the image (seen by e2fsprogs on the host)', function () {
    const after = superblock(root);
    assert.equal(initial.mountCount, 0);
    assert.equal(after.mountCount, 1);
    assert.notEqual(after.lastMount, initial.lastMount);
    assert.notEqual(after.lastMount, 'n/a');
  });
});
