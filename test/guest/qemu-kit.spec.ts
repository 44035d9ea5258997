// Guest test of the QEMU guest kit (test/helpers/qemu-guest.ts): a boot
// without devices shows the commands run under `sh -e` and their exit
// status comes back; a boot against qemu-storage-daemon's vhost-user-blk
// export runs fio with crc32c verification at queue depth 8 in the guest,
// and the host then finds fio's blocks in the image. No KVM needed (TCG).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { runQemuGuest, testGuestInitramfs, testGuestKernel, type QemuGuestResult } from '../helpers/qemu-guest.js';

const MiB = 1024 * 1024;

function explain(r: QemuGuestResult): string {
  return `status ${r.status}${r.timedOut ? ' (timed out)' : ''}, exit ${r.exitCode}\nQEMU: ${r.stderr}\nconsole tail:\n${r.console.slice(-3000)}`;
}

describe('guest: QEMU TCG test guest kit', function () {
  this.timeout(60000);

  before(function () {
    this.timeout(1800000); // a fresh machine builds the kernel variant and the initramfs here
    testGuestKernel();
    testGuestInitramfs(false);
    testGuestInitramfs(true);
  });

  describe('without devices', function () {
    let r: QemuGuestResult;
    before(async function () {
      r = await runQemuGuest({
        commands: 'echo "kernel $(uname -r)"\ntest -e /dev/vda || echo "no disk"\nfalse\necho unreachable\n',
      });
    });

    it('exits 0 after the guest reboots', function () {
      assert.equal(r.status, 0, explain(r));
    });

    it('runs the commands with sh -e and returns the failing status', function () {
      assert.equal(r.exitCode, 1, explain(r));
      assert.match(r.output, /^kernel 6\.1\.\d+/m);
      assert.match(r.output, /^no disk$/m);
      assert.doesNotMatch(r.output, /unreachable/);
    });
  });

  describe('fio against qemu-storage-daemon over vhost-user-blk', function () {
    let dir: string;
    let image: string;
    let qsd: ChildProcess;
    let qsdLog = '';
    let r: QemuGuestResult;

    before(async function () {
      dir = mkdtempSync(join(tmpdir(), 'splitvm-qemu-kit-'));
      image = join(dir, 'disk.img');
      const socket = join(dir, 'blk.sock');
      writeFileSync(image, Buffer.alloc(8 * MiB));
      qsd = spawn('qemu-storage-daemon', [
        '--blockdev', `driver=file,node-name=f0,filename=${image}`,
        '--blockdev', 'driver=raw,node-name=d0,file=f0',
        '--export', `type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=${socket},writable=on`,
      ], { stdio: ['ignore', 'pipe', 'pipe'] });
      qsd.stdout!.on('data', (b: Buffer) => (qsdLog += b.toString()));
      qsd.stderr!.on('data', (b: Buffer) => (qsdLog += b.toString()));
      for (let i = 0; !existsSync(socket); i++) {
        assert.ok(i < 100 && qsd.exitCode === null, `qemu-storage-daemon did not listen: ${qsdLog}`);
        await sleep(50);
      }
      r = await runQemuGuest({
        withFio: true,
        blk: { socket },
        commands:
          'fio --name=v --filename=/dev/vda --rw=randwrite --bs=4k --size=4M --iodepth=8 --ioengine=libaio' +
          ' --direct=1 --verify=crc32c --verify_fatal=1 --output-format=json --output=/tmp/fio.json\n' +
          'cat /tmp/fio.json\n',
      });
    });

    after(async function () {
      if (qsd.exitCode === null) {
        const exited = new Promise((resolve) => qsd.once('exit', resolve));
        qsd.kill('SIGTERM');
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    });

    it('boots, runs fio and exits 0', function () {
      assert.equal(r.status, 0, explain(r));
      assert.equal(r.exitCode, 0, explain(r));
    });

    it('fio writes 4 MiB at queue depth 8 and verifies all of it without an error', function () {
      const json = r.output.slice(r.output.indexOf('{'));
      type Job = { error: number; write: { io_kbytes: number }; read: { io_kbytes: number }; iodepth_level: Record<string, number> };
      let report: { jobs: Job[] };
      try {
        report = JSON.parse(json) as { jobs: Job[] };
      } catch {
        assert.fail(`no JSON report from fio: ${explain(r)}`);
      }
      const job = report.jobs[0];
      assert.ok(job, `fio's JSON report has a job: ${explain(r)}`);
      assert.equal(job.error, 0);
      assert.equal(job.write.io_kbytes, 4096);
      assert.equal(job.read.io_kbytes, 4096);
      assert.ok((job.iodepth_level['8'] ?? 0) > 50, `most I/O at queue depth 8: ${JSON.stringify(job.iodepth_level)}`);
    });

    it('the host sees each block fio wrote at its offset in the image', function () {
      const img = readFileSync(image);
      for (let off = 0; off < 4 * MiB; off += 4096) {
        // fio's verify header: u16 magic 0xacca, u16 type, u32 len, u64 seed, u64 offset.
        assert.equal(img.readUInt16LE(off), 0xacca, `block at ${off} has fio's magic`);
        assert.equal(img.readUInt32LE(off + 4), 4096, `block at ${off} has fio's length`);
        assert.equal(img.readBigUInt64LE(off + 16), BigInt(off), `block at ${off} carries its own offset`);
      }
      assert.ok(img.subarray(4 * MiB).every((b) => b === 0), 'nothing written past 4 MiB');
    });
  });
});
