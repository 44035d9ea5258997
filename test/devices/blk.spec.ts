// Device-process tests for virtio-blk: the real device process (built entry,
// launched by the core's launcher in its bubblewrap jail, seccomp policy
// DEVICE_TEST_SECCOMP = 'enforce') on a disk image in a tmp dir, driven
// through its queues by the harness as a guest driver would.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as C from '../../src/devices/blk/constants.js';
import { INLINE_WRITE_MAX, LARGE_READ } from '../../src/devices/blk/backend.js';
import * as libc from '../../src/sys/libc.js';
import { BlkDriver, DEVICE_TEST_SECCOMP, DeviceHarness, DeviceStartError, deviceEntry, type DriverQueue, type HarnessOptions, type PendingRequest } from '../../src/devices/harness/index.js';
import { hasFeature, type NeedsResetMessage } from '../../src/ipc/messages.js';
import { VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE } from '../../src/devices/virtio/queue.js';

const SECTORS = 8192; // 4 MiB image
const IMAGE_BYTES = SECTORS * 512;

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

describe('virtio-blk device process', function () {
  this.timeout(20000);
  let dir: string;
  let image: string;
  let fd: number;
  const open: DeviceHarness[] = [];

  async function start(opts: HarnessOptions = {}, imageFd = fd): Promise<DeviceHarness> {
    const h = await DeviceHarness.start({ backendFd: imageFd, blk: { readOnly: false, serial: 'splitvm-test-disk' }, ...opts });
    open.push(h);
    return h;
  }

  async function blk(opts: HarnessOptions = {}): Promise<{ h: DeviceHarness; q: DriverQueue; d: BlkDriver }> {
    const h = await start(opts);
    const [q] = h.activate();
    return { h, q: q!, d: new BlkDriver(h, q!) };
  }

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-blk-'));
    image = path.join(dir, 'disk.img');
    fs.writeFileSync(image, pattern(IMAGE_BYTES, 1));
    fd = fs.openSync(image, 'r+');
  });
  afterEach(async () => {
    await Promise.all(open.splice(0).map((h) => h.close()));
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  describe('hello and config', () => {
    it('offers the blk features and a config space with the capacity', async () => {
      const h = await start({ numQueues: 2 });
      const f = h.hello.deviceFeatures;
      for (const bit of [C.VIRTIO_BLK_F_SEG_MAX, C.VIRTIO_BLK_F_BLK_SIZE, C.VIRTIO_BLK_F_FLUSH, C.VIRTIO_BLK_F_DISCARD, C.VIRTIO_BLK_F_WRITE_ZEROES,
        C.VIRTIO_BLK_F_MQ, C.VIRTIO_F_VERSION_1, C.VIRTIO_F_RING_EVENT_IDX, C.VIRTIO_F_INDIRECT_DESC]) {
        assert.ok(hasFeature(f, bit), `feature ${bit}`);
      }
      assert.equal(hasFeature(f, C.VIRTIO_BLK_F_RO), false);
      assert.equal(h.hello.kind, 'blk');
      assert.equal(h.hello.numQueues, 2);
      const cfg = new DataView(h.hello.config.buffer, h.hello.config.byteOffset, h.hello.config.byteLength);
      assert.equal(cfg.getBigUint64(C.CONFIG.capacity, true), BigInt(SECTORS));
      assert.equal(cfg.getUint32(C.CONFIG.blkSize, true), 512);
      assert.equal(cfg.getUint32(C.CONFIG.segMax, true), h.hello.maxQueueSize - 2);
      assert.equal(cfg.getUint16(C.CONFIG.numQueues, true), 2);
      assert.ok(cfg.getUint32(C.CONFIG.maxDiscardSectors, true) > 0);
      assert.equal(cfg.getUint8(C.CONFIG.writeZeroesMayUnmap), 1);
    });
  });

  describe('requests', () => {
    it('reads the image, with scattered buffers and through an indirect table', async () => {
      const { d } = await blk();
      const want = pattern(IMAGE_BYTES, 1);
      const r1 = await d.read(0, 4096);
      assert.equal(r1.status, C.VIRTIO_BLK_S_OK);
      assert.equal(r1.usedLen, 4097);
      assert.deepEqual(r1.data, want.subarray(0, 4096));
      const r2 = await d.read(100, 3 * 512, { segmentBytes: 200 });
      assert.deepEqual(r2.data, want.subarray(100 * 512, 103 * 512));
      const r3 = await d.read(SECTORS - 8, 4096, { indirect: true, segmentBytes: 1024 });
      assert.deepEqual(r3.data, want.subarray(IMAGE_BYTES - 4096));
    });
    it('writes through to the image, and reads back', async () => {
      const { d } = await blk();
      const data = pattern(8192, 77);
      const w = await d.write(16, data, { segmentBytes: 3000 });
      assert.equal(w.status, C.VIRTIO_BLK_S_OK);
      assert.equal(w.usedLen, 1);
      assert.deepEqual((await d.read(16, 8192)).data, data);
      const file = fs.readFileSync(image);
      assert.deepEqual(new Uint8Array(file.subarray(16 * 512, 16 * 512 + 8192)), data);
    });
    it('serves small reads and writes inline, bigger writes on the pool, and says so in its counters', async () => {
      const { d, h } = await blk();
      const small = pattern(4096, 5);
      const big = pattern(INLINE_WRITE_MAX + 4096, 9);
      assert.equal((await d.write(8, small)).status, C.VIRTIO_BLK_S_OK);
      assert.equal((await d.write(64, big)).status, C.VIRTIO_BLK_S_OK);
      assert.deepEqual((await d.read(8, 4096)).data, small);
      assert.deepEqual((await d.read(64, big.length)).data, big);
      const file = fs.readFileSync(image);
      assert.deepEqual(new Uint8Array(file.subarray(8 * 512, 8 * 512 + 4096)), small);
      assert.deepEqual(new Uint8Array(file.subarray(64 * 512, 64 * 512 + big.length)), big);
      const s = await h.stats();
      assert.equal(s.writes, 2);
      assert.ok(s.inlineWrites === 1 || s.slowInlineWrites! > 0, 'the small write is served inline (unless a slow one held inline writes off)');
    });
    it('of the large reads taken at once, copies one inline and the others on the pool, all with their data', async () => {
      const { d, q, h } = await blk({ queueSize: 64, memSize: 32 * 1024 * 1024 });
      const want = pattern(IMAGE_BYTES, 1);
      const len = LARGE_READ + 4096;
      const sectors = [0, 1000, 2000, 3000];
      const pending = sectors.map((sector) => d.add({ type: C.VIRTIO_BLK_T_IN, sector, inLen: len }));
      q.kick(); // one kick: the device takes all four in one turn
      const replies = await Promise.all(pending.map((p) => p.reply));
      replies.forEach((r, i) => assert.deepEqual(r.data, want.subarray(sectors[i]! * 512, sectors[i]! * 512 + len)));
      const s = await h.stats();
      assert.equal(s.reads, 4);
      assert.ok(s.inlineReads! <= 1, `${s.inlineReads} large reads of one turn were copied inline`);
    });
    it('serves an image in memory (a memfd, tmpfs: no RWF_NOWAIT) with reads and writes inline', async () => {
      const memfd = libc.memfdCreate('splitvm-test-image');
      try {
        fs.writeSync(memfd, pattern(IMAGE_BYTES, 3), 0, IMAGE_BYTES, 0);
        const h = await start({}, memfd);
        const [q] = h.activate();
        const d = new BlkDriver(h, q!);
        const data = pattern(4096, 21);
        assert.equal((await d.write(24, data, { segmentBytes: 1000 })).status, C.VIRTIO_BLK_S_OK);
        assert.deepEqual((await d.read(24, 4096)).data, data);
        assert.deepEqual((await d.read(0, 4096)).data, pattern(IMAGE_BYTES, 3).subarray(0, 4096));
        const back = new Uint8Array(4096);
        fs.readSync(memfd, back, 0, 4096, 24 * 512);
        assert.deepEqual(back, data);
        const s = await h.stats();
        assert.equal(s.reads, 2);
        assert.ok(s.inlineReads === 2 || s.slowInlineReads! > 0, 'reads from memory are served inline');
        assert.ok(s.inlineWrites === 1 || s.slowInlineWrites! > 0, 'the write too');
      } finally {
        fs.closeSync(memfd);
      }
    });
    it('flushes', async () => {
      const { d, h } = await blk();
      await d.write(0, pattern(512, 3));
      assert.equal((await d.flush()).status, C.VIRTIO_BLK_S_OK);
      assert.equal((await h.stats()).flushes, 1);
    });
    it('answers GET_ID with the serial, zero padded to 20 bytes', async () => {
      const { d } = await blk();
      const r = await d.getId();
      assert.equal(r.status, C.VIRTIO_BLK_S_OK);
      assert.equal(r.usedLen, 21);
      assert.deepEqual(r.data, new Uint8Array([...Buffer.from('splitvm-test-disk'), 0, 0, 0]));
    });
    it('discards: the range reads as zeros and the image has a hole', async () => {
      const { d } = await blk();
      const before = fs.statSync(image).blocks;
      const r = await d.discard([{ sector: 1024, sectors: 2048 }]);
      assert.equal(r.status, C.VIRTIO_BLK_S_OK);
      assert.ok(fs.statSync(image).blocks < before, 'fewer blocks allocated after the discard');
      assert.deepEqual((await d.read(1024, 2048 * 512)).data, new Uint8Array(2048 * 512));
      assert.deepEqual((await d.read(1024 + 2048, 512)).data, pattern(IMAGE_BYTES, 1).subarray((1024 + 2048) * 512, (1024 + 2049) * 512));
      assert.equal(fs.statSync(image).size, IMAGE_BYTES);
      assert.equal((await d.discard([{ sector: 0, sectors: 8, flags: 1 }])).status, C.VIRTIO_BLK_S_UNSUPP, 'unmap flag on a discard');
    });
    it('writes zeroes, with and without unmap, in several segments', async () => {
      const { d } = await blk();
      const r = await d.writeZeroes([{ sector: 10, sectors: 3 }, { sector: 4000, sectors: 16, unmap: true }]);
      assert.equal(r.status, C.VIRTIO_BLK_S_OK);
      assert.deepEqual((await d.read(10, 3 * 512)).data, new Uint8Array(3 * 512));
      assert.deepEqual((await d.read(4000, 16 * 512)).data, new Uint8Array(16 * 512));
      assert.deepEqual((await d.read(13, 512)).data, pattern(IMAGE_BYTES, 1).subarray(13 * 512, 14 * 512));
      assert.equal((await d.writeZeroes([{ sector: SECTORS - 1, sectors: 2 }])).status, C.VIRTIO_BLK_S_IOERR, 'past the end');
      assert.equal(fs.statSync(image).size, IMAGE_BYTES);
    });
    it('refuses writes, discards and write-zeroes on a read-only disk', async () => {
      const roFd = fs.openSync(image, 'r');
      try {
        const h = await start({ blk: { readOnly: true } }, roFd);
        assert.ok(hasFeature(h.hello.deviceFeatures, C.VIRTIO_BLK_F_RO));
        const [q] = h.activate();
        const d = new BlkDriver(h, q!);
        assert.equal((await d.write(0, pattern(512, 9))).status, C.VIRTIO_BLK_S_IOERR);
        assert.equal((await d.discard([{ sector: 0, sectors: 8 }])).status, C.VIRTIO_BLK_S_IOERR);
        assert.equal((await d.writeZeroes([{ sector: 0, sectors: 8 }])).status, C.VIRTIO_BLK_S_IOERR);
        assert.equal((await d.flush()).status, C.VIRTIO_BLK_S_OK);
        assert.deepEqual((await d.read(0, 512)).data, pattern(IMAGE_BYTES, 1).subarray(0, 512));
        assert.deepEqual(new Uint8Array(fs.readFileSync(image)), pattern(IMAGE_BYTES, 1));
      } finally {
        await Promise.all(open.splice(0).map((h) => h.close()));
        fs.closeSync(roFd);
      }
    });
    it('answers IOERR for sectors out of range or partial sectors, UNSUPP for unknown types', async () => {
      const { d, h } = await blk();
      assert.equal((await d.read(SECTORS, 512)).status, C.VIRTIO_BLK_S_IOERR);
      assert.equal((await d.read(SECTORS - 1, 1024)).status, C.VIRTIO_BLK_S_IOERR);
      assert.equal((await d.read(2 ** 63, 512)).status, C.VIRTIO_BLK_S_IOERR);
      assert.equal((await d.write(SECTORS - 1, pattern(1024, 0))).status, C.VIRTIO_BLK_S_IOERR);
      assert.equal((await d.read(0, 100)).status, C.VIRTIO_BLK_S_IOERR);
      assert.equal((await d.read(SECTORS - 1, 512)).status, C.VIRTIO_BLK_S_OK);
      assert.equal((await d.request({ type: 99 })).status, C.VIRTIO_BLK_S_UNSUPP);
      assert.equal(fs.statSync(image).size, IMAGE_BYTES);
      assert.equal((await h.stats()).ioErrors, 5);
    });
    it('keeps many requests in flight and completes them all', async () => {
      const { d, q, h } = await blk({ queueSize: 256 });
      const want = pattern(IMAGE_BYTES, 1);
      const pending: { i: number; p: PendingRequest }[] = [];
      for (let i = 0; i < 40; i++) pending.push({ i, p: d.add({ type: C.VIRTIO_BLK_T_IN, sector: i * 64, inLen: 32 * 1024 }) });
      for (let i = 0; i < 20; i++) pending.push({ i: -1, p: d.add({ type: C.VIRTIO_BLK_T_OUT, sector: 4096 + i * 8, out: pattern(4096, i) }) });
      q.kick();
      const replies = await Promise.all(pending.map((x) => x.p.reply));
      replies.forEach((r, k) => {
        assert.equal(r.status, C.VIRTIO_BLK_S_OK);
        const i = pending[k]!.i;
        if (i >= 0) assert.deepEqual(r.data, want.subarray(i * 64 * 512, i * 64 * 512 + 32 * 1024));
      });
      for (let i = 0; i < 20; i++) assert.deepEqual((await d.read(4096 + i * 8, 4096)).data, pattern(4096, i));
      const s = await h.stats();
      assert.equal(s.completions, 80);
      assert.equal(s.inFlight, 0);
    });
  });

  describe('interrupts', () => {
    it('EVENT_IDX: interrupts only when the used index passes used_event', async () => {
      const { d, q } = await blk();
      q.setUsedEvent(0); // interrupt after the first completion
      await d.getId();
      assert.ok((await q.waitInterrupt(2000)) > 0);
      // used_event stays 0: the next completions raise nothing
      for (let i = 0; i < 3; i++) await d.getId();
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(q.takeInterrupts(), 0);
      q.setUsedEvent(q.usedIdx()); // the next completion passes it
      await d.getId();
      assert.ok((await q.waitInterrupt(2000)) > 0);
      // after a completion the device may watch the ring for up to 100 µs (avail_event one behind
      // meanwhile, so that no kick comes); once it waits for kicks again:
      await new Promise((r) => setTimeout(r, 20));
      assert.equal(q.availEvent(), q.availIdx, 'avail_event follows the last chain taken');
    });
    it('without EVENT_IDX: VIRTQ_AVAIL_F_NO_INTERRUPT suppresses interrupts', async () => {
      const h = await start();
      const [q] = h.activate({ features: h.hello.deviceFeatures - 2 ** C.VIRTIO_F_RING_EVENT_IDX });
      const d = new BlkDriver(h, q!);
      await d.getId();
      assert.ok((await q!.waitInterrupt(2000)) > 0);
      q!.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
      await d.getId();
      await d.getId();
      await new Promise((r) => setTimeout(r, 50));
      assert.equal(q!.takeInterrupts(), 0);
      q!.setAvailFlags(0);
      await d.getId();
      assert.ok((await q!.waitInterrupt(2000)) > 0);
    });
  });

  describe('malformed rings', () => {
    const DATA = 2 ** 32; // the harness's data region
    type Attack = (q: DriverQueue, h: DeviceHarness) => void;
    const single = (q: DriverQueue, desc: { addr: number; len: number; flags: number; next: number }): void => {
      q.writeDesc(0, desc);
      q.setAvailEntry(q.availIdx, 0);
      q.setAvailIdx(q.availIdx + 1);
    };
    const attacks: [string, Attack, RegExp][] = [
      ['a descriptor outside guest memory', (q) => single(q, { addr: 0x7000_0000, len: 512, flags: VIRTQ_DESC_F_WRITE, next: 0 }), /outside guest RAM/],
      ['a descriptor loop', (q) => {
        q.writeDesc(1, { addr: DATA, len: 16, flags: VIRTQ_DESC_F_NEXT, next: 2 });
        q.writeDesc(2, { addr: DATA, len: 16, flags: VIRTQ_DESC_F_NEXT, next: 1 });
        q.setAvailEntry(0, 1);
        q.setAvailIdx(1);
      }, /longer than/],
      ['a chain longer than the queue', (q) => {
        for (let i = 0; i < q.size; i++) q.writeDesc(i, { addr: DATA, len: 16, flags: VIRTQ_DESC_F_NEXT, next: (i + 1) % q.size });
        q.setAvailEntry(0, 0);
        q.setAvailIdx(1);
      }, /longer than/],
      ['a huge length', (q) => single(q, { addr: DATA, len: 0xffff_ffff, flags: VIRTQ_DESC_F_WRITE, next: 0 }), /crosses the end/],
      ['an available index far ahead', (q) => q.setAvailIdx(q.availIdx + 1000), /ahead/],
      ['a request without a status byte', (q, h) => single(q, { addr: h.buffer(new Uint8Array(16)).addr, len: 16, flags: 0, next: 0 }), /status/],
    ];
    for (const [what, attack, re] of attacks) {
      it(`${what}: needs-reset, the device lives on, the other queue and device still serve`, async () => {
        const h = await start({ numQueues: 2, queueSize: 16 });
        const other = await blk();
        const [bad, good] = h.activate();
        attack(bad!, h);
        bad!.kick();
        const msg = (await h.next('needs-reset')) as NeedsResetMessage;
        assert.equal(msg.queue, 0);
        assert.match(msg.reason, re);
        assert.ok(h.alive);
        const s = await h.stats();
        assert.equal(s.queueErrors, 1);
        // the other queue of the same device
        const d = new BlkDriver(h, good!);
        assert.deepEqual((await d.read(8, 512)).data, pattern(IMAGE_BYTES, 1).subarray(8 * 512, 9 * 512));
        // the stopped queue stays stopped: kicks are ignored, nothing more is reported
        bad!.kick();
        await h.stats();
        assert.equal(h.received.filter((m) => m.type === 'needs-reset').length, 1);
        // another device
        assert.equal((await other.d.getId()).status, C.VIRTIO_BLK_S_OK);
        // a reset brings the queue back
        await h.reset();
        const [q0] = h.activate({ queues: [0] });
        assert.equal((await new BlkDriver(h, q0!).getId()).status, C.VIRTIO_BLK_S_OK);
      });
    }
    it('rings placed outside guest memory at activate', async () => {
      const h = await start();
      h.channel.send({ type: 'activate', features: h.hello.deviceFeatures, queues: [{ index: 0, size: 16, desc: 0x7000_0000, avail: 0x1000, used: 0x2000 }] });
      const msg = (await h.next('needs-reset')) as NeedsResetMessage;
      assert.match(msg.reason, /descriptor table/);
      assert.ok((await h.stats()).queueErrors >= 1);
    });
    it('features the device did not offer', async () => {
      const h = await start();
      h.activate({ features: h.hello.deviceFeatures + 2 ** 40 });
      assert.match(((await h.next('needs-reset')) as NeedsResetMessage).reason, /did not offer/);
    });
  });

  describe('lifecycle', () => {
    it('reset waits for in-flight requests, then the device serves again', async () => {
      const { d, h } = await blk();
      const p = d.add({ type: C.VIRTIO_BLK_T_IN, sector: 0, inLen: 1 << 20 });
      d.q.kick();
      await h.reset();
      assert.equal((await h.stats()).inFlight, 0);
      void p.reply.catch(() => undefined);
      const [q] = h.activate();
      assert.equal((await new BlkDriver(h, q!).read(0, 512)).status, C.VIRTIO_BLK_S_OK);
    });
    it('a reset that completes (a vhost-user stop) publishes every request it had taken before reset-done, and takes none after', async () => {
      const { d, h } = await blk();
      const taken = Array.from({ length: 8 }, (_, i) => d.add({ type: C.VIRTIO_BLK_T_IN, sector: i * 64, inLen: 256 * 1024 }));
      d.q.kick();
      while ((await h.stats()).requests < taken.length) await new Promise((r) => setTimeout(r, 1));
      h.channel.send({ type: 'reset', complete: true });
      await h.next('reset-done');
      const published = d.q.usedIdx();
      assert.equal(published, taken.length, 'every request taken was published');
      const late = d.add({ type: C.VIRTIO_BLK_T_IN, sector: 0, inLen: 512 });
      d.q.kick();
      await new Promise((r) => setTimeout(r, 200));
      assert.equal(d.q.usedIdx(), published, 'nothing is taken once the reset is asked for');
      for (const t of taken) assert.equal((await t.reply).status, C.VIRTIO_BLK_S_OK);
      void late.reply.catch(() => undefined);
    });
    it('exits when told to shut down', async () => {
      const h = await start();
      h.channel.send({ type: 'shutdown' });
      assert.deepEqual(await h.exited, { code: 0, signal: null });
    });
    it('rejects a bad config with one clear log line and a non-zero exit', () => {
      const r = spawnSync(process.execPath, [deviceEntry(), JSON.stringify({ kind: 'blk', regions: [], numQueues: 1, seccomp: 'off' })], { encoding: 'utf8' });
      assert.equal(r.status, 1);
      const lines = r.stderr.trim().split('\n');
      assert.equal(lines.length, 1);
      assert.match(JSON.parse(lines[0]!).msg, /^device config: regions must be/);
    });
  });

  describe('seccomp jail', () => {
    const havePolicy = fs.existsSync(new URL('../../policies/blk.policy', import.meta.url));
    for (const probe of ['socket', 'execve', 'open'] as const) {
      it(`kills the process that attempts ${probe} after the policy is installed`, async function () {
        if (!havePolicy) this.skip();
        const h = await DeviceHarness.start({ backendFd: fd, seccomp: 'enforce', testAttemptAfterJail: probe, helloTimeoutMs: 10000 }).catch((e: Error) => e);
        if (h instanceof DeviceHarness) {
          open.push(h);
          assert.fail(`the device survived ${probe}: ${h.logs.join('\n')}`);
        }
        assert.ok(h instanceof DeviceStartError, h.message);
        // Killed by the filter (SIGSYS), right at the probe: not for any other reason.
        assert.deepEqual(h.exit, { code: null, signal: 'SIGSYS' }, h.message);
        assert.match(h.logs.at(-1) ?? '', /test probe: attempting/);
      });
    }
    it(`runs jailed with the policy enforced by default (tests run with seccomp '${DEVICE_TEST_SECCOMP}')`, async function () {
      if (!havePolicy) this.skip();
      assert.equal(DEVICE_TEST_SECCOMP, 'enforce');
      const { d, h } = await blk();
      assert.equal((await d.getId()).status, C.VIRTIO_BLK_S_OK);
      // its own pid namespace: pid 1 inside, another pid seen from here
      assert.ok(h.logRecords().some((r) => r.pid === 1 && r.msg === 'device ready'), h.logs.join('\n'));
      assert.ok(h.logRecords().some((r) => r.seccomp === 'enforce' && /policy installed/.test(String(r.msg))));
      assert.match(fs.readFileSync(`/proc/${h.pid}/status`, 'utf8'), /^Seccomp:\s+2$/m);
    });
    it('without a jail and with seccomp off (debugging, fuzzing): the same device serves', async () => {
      const { d, h } = await blk({ jail: false, seccomp: 'off' });
      assert.equal((await d.write(0, pattern(4096, 5))).status, C.VIRTIO_BLK_S_OK);
      assert.deepEqual((await d.read(0, 4096)).data, pattern(4096, 5));
      assert.match(fs.readFileSync(`/proc/${h.pid}/status`, 'utf8'), /^Seccomp:\s+0$/m);
      assert.ok(h.logRecords().some((r) => r.pid === h.pid && r.msg === 'device ready'));
    });
  });

  describe('replacement of a dead device process (failed mode)', () => {
    it('completes the chains the dead process left unanswered, and every later one, with IOERR', async () => {
      const { h, q, d } = await blk({ queueSize: 16 });
      const firstPid = h.pid;
      assert.equal((await d.read(0, 4096)).status, C.VIRTIO_BLK_S_OK);
      // The read may complete inline, while the device is still in its turn: a round
      // trip on the control channel lets that turn end before more chains appear.
      await h.stats();
      // made available but not kicked: the device never looked at them
      const unseen = [
        d.add({ type: C.VIRTIO_BLK_T_IN, sector: 8, inLen: 4096 }),
        d.add({ type: C.VIRTIO_BLK_T_OUT, sector: 16, out: pattern(512, 4) }),
        d.add({ type: C.VIRTIO_BLK_T_FLUSH }),
      ];
      assert.deepEqual(await h.kill(), { code: null, signal: 'SIGKILL' });
      // made available while no process serves the queue
      const orphan = d.add({ type: C.VIRTIO_BLK_T_IN, sector: 0, inLen: 512 });
      q.kick();

      await h.replace(); // same memory, image and eventfds; config failed: true; jailed, enforced
      assert.notEqual(h.pid, firstPid);
      assert.equal(h.hello.kind, 'blk');
      h.reactivate(); // the same rings: the replacement resumes at the used index
      for (const p of [...unseen, orphan]) assert.equal((await p.reply).status, C.VIRTIO_BLK_S_IOERR);
      // later requests fail too, and reach nothing
      assert.equal((await d.read(0, 512)).status, C.VIRTIO_BLK_S_IOERR);
      assert.equal((await d.write(0, pattern(512, 7))).status, C.VIRTIO_BLK_S_IOERR);
      assert.equal((await d.getId()).status, C.VIRTIO_BLK_S_IOERR);
      // one used entry per chain: the first read was not answered again
      assert.equal(q.usedIdx(), 1 + unseen.length + 1 + 3);
      assert.equal(q.freeDescriptors, q.size);
      assert.deepEqual(new Uint8Array(fs.readFileSync(image)), pattern(IMAGE_BYTES, 1), 'the replacement wrote nothing');
      const s = await h.stats();
      assert.equal(s.ioErrors, 7);
      assert.equal(s.inFlight, 0);
      assert.ok(h.alive);
      assert.ok(h.logRecords().some((r) => /replacing a device process that died/.test(String(r.msg))));
    });
    it('a replacement started on rings whose used index runs ahead of the available one stops the queue', async () => {
      const { h, q, d } = await blk({ queueSize: 16 });
      assert.equal((await d.getId()).status, C.VIRTIO_BLK_S_OK);
      await h.kill();
      q.setAvailIdx(0); // the (hostile) guest rewinds its available index below the used one
      await h.replace();
      h.reactivate();
      assert.match(((await h.next('needs-reset')) as NeedsResetMessage).reason, /ahead|avail/i);
      assert.ok(h.alive);
    });
  });
});
