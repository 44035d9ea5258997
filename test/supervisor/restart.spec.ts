// The core's supervisor restarting a real jailed blk device process that
// dies (replacement 'resume', as `splitvm run` uses it): requests in flight
// at each death complete exactly once with the right data, the guest is not
// told anything; past the restart budget the device is failed as before.
// Guest RAM is the core's own memfd; the test plays the guest's driver on
// it through the harness's queue and blk driver, as a VM's kernel would.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { MiB } from '../../src/core/memory.js';
import { blkKind } from '../../src/core/kinds/blk.js';
import { RESTART_BUDGET, type VirtioDeviceProcess } from '../../src/core/supervisor/device-process.js';
import { BlkDriver, type DriverQueue } from '../../src/devices/harness/index.js';
import * as C from '../../src/devices/blk/constants.js';
import { superviseDevice } from '../helpers/supervised-device.js';

const QUEUE = 128;

const openImage = (image: string) => blkKind.open({ path: image, readOnly: false }, { index: 0, vmName: 'test', log: pino({ level: 'silent' }) });
const BLOCK = 4096;

function pattern(i: number): Uint8Array {
  const b = new Uint8Array(BLOCK);
  for (let j = 0; j < BLOCK; j++) b[j] = (i * 131 + j * 7) & 0xff;
  return b;
}

describe('device supervisor: a blk device process that dies resumes its queues', function () {
  this.timeout(120000);
  let dir: string;
  let image: string;
  let dev: VirtioDeviceProcess;
  let q: DriverQueue;
  let d: BlkDriver;
  let failures: string[];
  let lines: string[];

  beforeEach(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-restart-'));
    image = path.join(dir, 'disk.img');
    fs.writeFileSync(image, Buffer.alloc(8 * MiB));
    const s = await superviseDevice(await openImage(image), { name: 'blk0', kind: 'blk', queueSize: QUEUE, replacement: 'resume' });
    ({ dev, q, lines } = s);
    failures = [];
    dev.onFailure = (why) => failures.push(why);
    d = new BlkDriver(s.dm, q);
  });

  afterEach(async () => {
    await dev.shutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  /** Kills the current device process and waits until its successor serves. */
  async function killAndWait(): Promise<void> {
    const pid = dev.pid;
    process.kill(pid, 'SIGKILL');
    for (let i = 0; dev.pid === pid || !(await dev.stats()); i++) {
      assert.ok(i < 200, 'no successor within 10 s');
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  it('writes in flight at each of three deaths complete exactly once, with the right data, and the guest is not told', async () => {
    const N = 600;
    const replies: Promise<{ status: number }>[] = [];
    let kills = 0;
    for (let i = 0; i < N; i++) {
      while (q.freeDescriptors < 3) await new Promise((r) => setImmediate(r));
      replies.push(d.add({ type: C.VIRTIO_BLK_T_OUT, sector: i * 8, out: pattern(i) }, 30000).reply);
      if (i % 32 === 31) q.kick();
      if (i === 150 || i === 300 || i === 450) {
        q.kick();
        process.kill(dev.pid, 'SIGKILL'); // with a window of requests just handed over
        kills++;
      }
    }
    q.kick();
    const results = await Promise.all(replies);
    assert.ok(results.every((r) => r.status === C.VIRTIO_BLK_S_OK), 'every write succeeded');
    assert.equal(q.lastUsedIdx, N % 65536, 'the used ring holds each request once, no more');
    const img = fs.readFileSync(image);
    for (let i = 0; i < N; i++) assert.deepEqual(new Uint8Array(img.subarray(i * BLOCK, (i + 1) * BLOCK)), pattern(i), `block ${i}`);
    assert.equal(kills, 3);
    assert.ok(dev.restarts >= 1, lines.join(''));
    assert.deepEqual(failures, [], 'the guest was told nothing');
    const reads = await Promise.all([0, 299, 599].map((i) => d.read(i * 8, BLOCK)));
    reads.forEach((r, k) => assert.deepEqual(r.data, pattern([0, 299, 599][k]!)));
  });

  it('a death after publishing completions and before interrupting: the successor interrupts the waiting driver', async () => {
    // With EVENT_IDX the device interrupts only when the used index passes used_event. A driver
    // that asks for no interrupt sees its writes completed by polling, without one.
    q.setUsedEvent(0x8000);
    const replies = [0, 1, 2, 3].map((i) => d.add({ type: C.VIRTIO_BLK_T_OUT, sector: i * 8, out: pattern(i) }, 10000).reply);
    q.kick();
    assert.ok((await Promise.all(replies)).every((r) => r.status === C.VIRTIO_BLK_S_OK));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(q.takeInterrupts(), 0, 'no interrupt while the driver asked for none');
    // The state a device leaves when it publishes used elements the driver waits for (used_event
    // behind them) and dies before its interrupt: the driver sleeps until one comes.
    q.setUsedEvent(0);
    await killAndWait();
    assert.ok((await q.waitInterrupt(5000)) > 0, 'the successor interrupted the driver');
    assert.deepEqual(failures, []);
  });

  it(`a device that dies more than ${RESTART_BUDGET.count} times in ${RESTART_BUDGET.windowMs / 1000} s is failed: the guest is told and its requests fail`, async () => {
    for (let k = 0; k < RESTART_BUDGET.count; k++) await killAndWait();
    assert.deepEqual(failures, []);
    assert.equal((await d.write(0, pattern(1))).status, C.VIRTIO_BLK_S_OK, 'still serving after the budgeted restarts');
    await killAndWait();
    assert.equal(failures.length, 1, 'the guest is told (DEVICE_NEEDS_RESET)');
    assert.equal((await d.write(0, pattern(2))).status, C.VIRTIO_BLK_S_IOERR, 'a failed device answers with errors');
    assert.ok(lines.some((l) => l.includes('died too often')), lines.join(''));
  });
});

describe('device supervisor: a blk device with a spare process (spare: true)', function () {
  this.timeout(120000);
  let dir: string;
  let dev: VirtioDeviceProcess;
  let q: DriverQueue;
  let d: BlkDriver;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-spare-'));
    const image = path.join(dir, 'disk.img');
    fs.writeFileSync(image, Buffer.alloc(8 * MiB));
    const s = await superviseDevice(await openImage(image), { name: 'blk0', kind: 'blk', queueSize: QUEUE, replacement: 'resume', spare: true });
    ({ dev, q } = s);
    d = new BlkDriver(s.dm, q);
  });

  after(async () => {
    await dev.shutdown();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const spareReady = async (): Promise<number> => {
    for (let i = 0; dev.info().spare === null; i++) {
      assert.ok(i < 200, 'no spare within 10 s');
      await new Promise((r) => setTimeout(r, 50));
    }
    return dev.info().spare!;
  };

  it('a spare waiting beside the serving process takes none of its kicks: requests made one at a time, apart, are all answered', async () => {
    await spareReady();
    const start = q.lastUsedIdx;
    for (let i = 0; i < 30; i++) {
      const r = await d.request({ type: C.VIRTIO_BLK_T_IN, sector: i * 8, inLen: BLOCK }, 2000);
      assert.equal(r.status, C.VIRTIO_BLK_S_OK);
      await new Promise((resolve) => setTimeout(resolve, 5)); // the serving device stops polling and waits for the next kick
    }
    assert.equal(q.lastUsedIdx - start, 30);
  });

  it('the spare takes the queues over at each death: writes in flight complete once with their data, and a new spare is made', async () => {
    const start = q.lastUsedIdx;
    for (let death = 0; death < 3; death++) {
      const spare = await spareReady();
      const serving = dev.pid;
      assert.notEqual(spare, serving);
      const replies = Array.from({ length: 40 }, (_, i) => d.add({ type: C.VIRTIO_BLK_T_OUT, sector: (death * 40 + i) * 8, out: pattern(death * 40 + i) }, 30000).reply);
      q.kick();
      process.kill(serving, 'SIGKILL');
      assert.ok((await Promise.all(replies)).every((r) => r.status === C.VIRTIO_BLK_S_OK));
      for (let i = 0; dev.pid === serving; i++) {
        assert.ok(i < 200, 'the death was not seen within 10 s');
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.equal(dev.pid, spare, 'the spare serves now');
    }
    assert.equal(q.lastUsedIdx - start, 3 * 40, 'each request completed once');
    const reads = await Promise.all([0, 77, 119].map((i) => d.read(i * 8, BLOCK)));
    reads.forEach((r, k) => assert.deepEqual(r.data, pattern([0, 77, 119][k]!)));
    assert.equal(dev.restarts, 3);
    assert.notEqual(await spareReady(), dev.pid, 'a new spare waits again');
  });
});
