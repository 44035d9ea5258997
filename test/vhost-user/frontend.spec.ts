// A well-behaved vhost-user frontend (the harness's VhostUserFrontend) end to
// end: read, write, flush and get-id through `splitvm device blk --socket`,
// the data checked in the image and the device checked to run under its
// enforcing policy; and the same frontend against qemu-storage-daemon's
// vhost-user-blk export, which shows it speaks the protocol as others do.
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as C from '../../src/devices/blk/constants.js';
import { BlkDriver, VhostUserFrontend } from '../../src/devices/harness/index.js';
import { logRecords } from '../helpers/run-splitvm.js';
import { which } from '../../src/sys/paths.js';
import { assertJailed, countLog, IMAGE_BYTES, pattern, startBlkBackend, type Backend } from './backend.js';

describe('vhost-user: the harness as a frontend', function () {
  this.timeout(30000);

  describe('against splitvm device blk', () => {
    let b: Backend;
    before(async () => (b = await startBlkBackend(',serial=vu-frontend-1')));
    after(async () => b.stop());

    it('reads, writes, flushes and gets the id; the image holds the data', async () => {
      const starts = countLog(b, 'device started for the vhost-user frontend');
      const policies = countLog(b, 'seccomp policy installed');
      const f = await VhostUserFrontend.connect(b.socket);
      try {
        const capacity = new DataView((await f.config(C.CONFIG.capacity, 8)).slice().buffer).getBigUint64(0, true);
        assert.equal(capacity, BigInt(IMAGE_BYTES / 512));
        const d = new BlkDriver(f, f.queues[0]!);
        const r0 = await d.read(100, 4096);
        assert.equal(r0.status, C.VIRTIO_BLK_S_OK);
        assert.deepEqual(r0.data, pattern(IMAGE_BYTES, 1).subarray(100 * 512, 100 * 512 + 4096));
        const data = pattern(64 * 1024, 9);
        assert.equal((await d.write(200, data, { segmentBytes: 4096 })).status, C.VIRTIO_BLK_S_OK);
        assert.equal((await d.flush()).status, C.VIRTIO_BLK_S_OK);
        const r1 = await d.read(200, data.length, { indirect: true });
        assert.deepEqual(r1.data, data);
        const id = await d.getId();
        assert.equal(id.status, C.VIRTIO_BLK_S_OK);
        assert.equal(Buffer.from(id.data).toString('latin1').replace(/\0+$/, ''), 'vu-frontend-1');
        const onDisk = fs.readFileSync(b.image).subarray(200 * 512, 200 * 512 + data.length);
        assert.deepEqual(new Uint8Array(onDisk), data);
        await assertJailed(b, starts, policies);
      } finally {
        f.close();
      }
    });
  });

  describe('against splitvm device blk with two request queues (MQ)', () => {
    let b: Backend;
    before(async () => (b = await startBlkBackend(',queues=2')));
    after(async () => b.stop());

    it('offers MQ and num_queues 2, and serves requests on both queues', async () => {
      const f = await VhostUserFrontend.connect(b.socket, { numQueues: 2 });
      try {
        assert.ok((f.features >> BigInt(C.VIRTIO_BLK_F_MQ)) & 1n, 'VIRTIO_BLK_F_MQ offered');
        assert.equal(new DataView((await f.config(C.CONFIG.numQueues, 2)).slice().buffer).getUint16(0, true), 2);
        const [q0, q1] = f.queues;
        const d0 = new BlkDriver(f, q0!);
        const d1 = new BlkDriver(f, q1!);
        const a = pattern(8192, 21);
        const c = pattern(8192, 22);
        const [w0, w1] = await Promise.all([d0.write(0, a), d1.write(64, c)]);
        assert.equal(w0.status, C.VIRTIO_BLK_S_OK);
        assert.equal(w1.status, C.VIRTIO_BLK_S_OK);
        assert.deepEqual((await d1.read(0, 8192)).data, a, 'queue 1 reads what queue 0 wrote');
        assert.deepEqual((await d0.read(64, 8192)).data, c, 'and the other way');
        // The device's log is relayed through a pipe: its line may come after the I/O.
        const both = (): boolean => logRecords<{ queues: number[] }>(b.dev.log(), 'activated').some((l) => l.queues.join() === '0,1');
        for (let i = 0; !both() && i < 100; i++) await new Promise((r) => setTimeout(r, 50));
        assert.ok(both(), 'the device was activated with both queues');
      } finally {
        f.close();
      }
    });
  });

  describe('against qemu-storage-daemon', () => {
    let dir: string;
    let image: string;
    let qsd: ChildProcess;

    before(async function () {
      if (!which('qemu-storage-daemon')) this.skip();
      dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-vu-qsd-'));
      image = path.join(dir, 'disk.img');
      fs.writeFileSync(image, pattern(IMAGE_BYTES, 3));
      const socket = path.join(dir, 'qsd.sock');
      qsd = spawn('qemu-storage-daemon', ['--blockdev', `driver=file,node-name=f0,filename=${image}`, '--blockdev', 'driver=raw,node-name=d0,file=f0',
        '--export', `type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=${socket},writable=on`], { stdio: 'ignore' });
      for (const deadline = Date.now() + 10000; !fs.existsSync(socket); ) {
        if (Date.now() > deadline || qsd.exitCode !== null) throw new Error('qemu-storage-daemon did not listen');
        await new Promise((r) => setTimeout(r, 20));
      }
    });
    after(() => {
      qsd?.kill('SIGTERM');
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
    });

    it('reads and writes through the same frontend and BlkDriver', async () => {
      const f = await VhostUserFrontend.connect(path.join(dir, 'qsd.sock'));
      try {
        const d = new BlkDriver(f, f.queues[0]!);
        const r0 = await d.read(8, 4096);
        assert.equal(r0.status, C.VIRTIO_BLK_S_OK);
        assert.deepEqual(r0.data, pattern(IMAGE_BYTES, 3).subarray(8 * 512, 8 * 512 + 4096));
        const data = pattern(8192, 5);
        assert.equal((await d.write(40, data)).status, C.VIRTIO_BLK_S_OK);
        assert.equal((await d.flush()).status, C.VIRTIO_BLK_S_OK);
        assert.deepEqual((await d.read(40, data.length)).data, data);
        assert.deepEqual(new Uint8Array(fs.readFileSync(image).subarray(40 * 512, 40 * 512 + data.length)), data);
      } finally {
        f.close();
      }
    });
  });
});
