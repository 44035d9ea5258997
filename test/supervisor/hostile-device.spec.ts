// The core's side of a device process facing a device that has been taken
// over: every hello it sends is checked (kind, queue count, sizes), a
// protocol violation after start gets the device killed and replaced, and
// the core itself never throws. The hostile device is a small script run
// without a jail (what it says is the point here, not what it can do).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { GuestMemory, MiB } from '../../src/core/memory.js';
import { DeviceStartError, STATS_TIMEOUT_MS, VirtioDeviceProcess } from '../../src/core/supervisor/device-process.js';
import * as libc from '../../src/sys/libc.js';
import { blkKind } from '../../src/core/kinds/blk.js';
import { DEVICE_DATA_LIMIT } from '../../src/core/jail/launch.js';

const HOSTILE = fileURLToPath(new URL('./fixtures/hostile-device.mjs', import.meta.url));

describe('device supervisor: a hostile device process', function () {
  this.timeout(20000);
  const memory = GuestMemory.create(2 * MiB);
  const lines: Record<string, unknown>[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => void lines.push(JSON.parse(l)) });

  const start = (hostile: string) =>
    VirtioDeviceProcess.start({
      name: 'evil0', kind: 'blk', numQueues: 1, options: {}, extraConfig: { hostile }, backendFd: libc.open('/dev/null', libc.O_RDWR),
      memory, jail: false, seccomp: 'off', logLevel: 'info', log, entry: HOSTILE,
    });

  it('is refused when its hello claims another kind of device', async function () {
    await assert.rejects(start('wrong-kind'), (e: Error) => e instanceof DeviceStartError && /says it is a net device, not blk/.test(e.message));
  });

  it('is refused when its hello offers other queues than the core set up', async function () {
    await assert.rejects(start('more-queues'), (e: Error) => e instanceof DeviceStartError && /offers 6 queues, not 1/.test(e.message));
  });

  it('is refused when its hello carries an oversized config space', async function () {
    await assert.rejects(start('oversized-config'), (e: Error) => e instanceof DeviceStartError && /bad hello .*config/.test(e.message));
  });

  it('is refused when it sends a frame longer than the protocol allows', async function () {
    await assert.rejects(start('huge-frame'), (e: Error) => e instanceof DeviceStartError && /bad hello .*frame length/.test(e.message));
  });

  it('is killed, reported and replaced when it breaks the protocol after starting', async function () {
    const dev = await start('garbage-after-hello');
    const failures: string[] = [];
    dev.onFailure = (why) => failures.push(why);
    const firstPid = dev.pid;
    await new Promise((r) => setTimeout(r, 1500));
    assert.ok(lines.some((l) => l.msg === 'device broke the control protocol; stopping it' && /needs-reset.reason/.test(String(l.err))), JSON.stringify(lines));
    assert.ok(lines.some((l) => l.msg === 'device evil0 died: killed by SIGKILL' && l.pid === firstPid), JSON.stringify(lines));
    assert.deepEqual(failures.slice(0, 1), ['device process died: killed by SIGKILL']);
    assert.notEqual(dev.pid, firstPid, 'a replacement runs');
    await dev.shutdown();
  });

  it('stats() resolves null when the device never answers, and when it is killed while asked', async function () {
    const dev = await start('silent-stats');
    const t0 = Date.now();
    const [a, b] = await Promise.all([dev.stats(), dev.stats()]);
    assert.deepEqual([a, b], [null, null]);
    assert.ok(Date.now() - t0 >= STATS_TIMEOUT_MS - 50 && Date.now() - t0 < STATS_TIMEOUT_MS + 1000, `took ${Date.now() - t0} ms`);
    const asked = dev.stats();
    process.kill(dev.pid, 'SIGKILL');
    const t1 = Date.now();
    assert.equal(await asked, null);
    assert.ok(Date.now() - t1 < STATS_TIMEOUT_MS - 500, 'answered by the death, not the timeout');
    await dev.shutdown();
  });
});

describe('device supervisor: the real jailed blk device', function () {
  this.timeout(30000);

  it('cannot grow its disk image (opened as --disk opens it), and its log reaches the core as JSON records', async function () {
    const dir = mkdtempSync(join(tmpdir(), 'splitvm-fsize-'));
    const image = join(dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(64 * 1024));
    const lines: string[] = [];
    const backend = await blkKind.open({ path: image, readOnly: false }, { index: 0, vmName: 'test', log: pino({ level: 'silent' }) });
    const dev = await VirtioDeviceProcess.start({
      name: 'blk7', kind: 'blk', numQueues: 1, options: backend.options, fileSizeLimit: backend.fileSizeLimit, extraConfig: { testAttemptAfterJail: 'grow-image' },
      backendFd: backend.fd, memory: GuestMemory.create(2 * MiB), jail: true, seccomp: 'enforce', logLevel: 'info',
      log: pino({ level: 'silent' }), writeLog: (l) => lines.push(l),
    });
    try {
      const records = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
      const probe = records.find((r) => r.probe === 'grow-image' && typeof r.err === 'string');
      assert.ok(probe, lines.join(''));
      assert.match(String(probe.err), /pwrite failed: EFBIG/);
      assert.ok(records.every((r) => r.device === 'blk7'));
      assert.equal(statSync(image).size, 64 * 1024);
      // two stats requests at once: each gets its own answer
      const [a, b] = await Promise.all([dev.stats(), dev.stats()]);
      assert.ok(a && b && typeof a.inFlight === 'number' && typeof b.inFlight === 'number', JSON.stringify([a, b]));
    } finally {
      await dev.shutdown();
    }
  });

  it('dies when it allocates past its memory bound (RLIMIT_DATA), which a guest memory larger than the bound does not count toward; its death is logged with the cause', async function () {
    const dir = mkdtempSync(join(tmpdir(), 'splitvm-data-'));
    const image = join(dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(64 * 1024));
    const relayed: string[] = [];
    const core: Record<string, unknown>[] = [];
    const backend = await blkKind.open({ path: image, readOnly: false }, { index: 0, vmName: 'test', log: pino({ level: 'silent' }) });
    // 1 GiB of guest RAM, four times the bound: MAP_SHARED, so the device still starts and says hello.
    const dev = await VirtioDeviceProcess.start({
      name: 'blk8', kind: 'blk', numQueues: 1, options: backend.options, fileSizeLimit: backend.fileSizeLimit, extraConfig: { testAttemptAfterJail: 'allocate' },
      backendFd: backend.fd, memory: GuestMemory.create(1024 * MiB), jail: true, seccomp: 'enforce', logLevel: 'info',
      log: pino({ level: 'info' }, { write: (l: string) => void core.push(JSON.parse(l)) }), writeLog: (l) => relayed.push(l),
    });
    const firstPid = dev.pid;
    const failures: string[] = [];
    dev.onFailure = (why) => failures.push(why);
    try {
      assert.ok(DEVICE_DATA_LIMIT.blk < 1024 * MiB);
      const deadline = Date.now() + 15000;
      while (!core.some((l) => l.pid === firstPid && /^device blk8 died: /.test(String(l.msg))) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
      const death = core.find((l) => l.pid === firstPid && /^device blk8 died: /.test(String(l.msg)));
      assert.ok(death, JSON.stringify(core));
      // V8's out-of-memory abort, not the seccomp policy
      assert.notEqual(death.signal, 'SIGSYS');
      assert.match(relayed.join(''), /JavaScript heap out of memory|Array buffer allocation failed/);
      assert.match(failures[0] ?? '', /^device process died: /);
    } finally {
      await dev.shutdown();
    }
  });
});

describe('device supervisor: a device that logs without end', function () {
  this.timeout(30000);

  it('neither crashes nor stalls the core while its stderr is a full pipe nobody reads; the drops are counted in a line', async function () {
    const core = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(new URL('./fixtures/flooded-core.ts', import.meta.url)), '3000'], { stdio: ['ignore', 'pipe', 'pipe'] });
    core.stderr.pause(); // nobody reads it until the core has reported
    let out = '';
    const reported = new Promise<Record<string, unknown>>((resolve, reject) => {
      core.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        const first = out.split('\n')[0]!;
        if (out.includes('\n')) resolve(JSON.parse(first) as Record<string, unknown>);
      });
      core.once('exit', (code, signal) => reject(new Error(`the core exited (${signal ?? code}) before reporting: ${out}`)));
    });
    const report = await reported;
    assert.equal(report.alive, true);
    assert.ok((report.maxLateMs as number) < 250, `the core's timers ran up to ${String(report.maxLateMs)} ms late`);
    let err = '';
    core.stderr.on('data', (d: Buffer) => (err += d.toString()));
    core.stderr.resume();
    const [code] = (await once(core, 'exit')) as [number | null];
    assert.equal(code, 0, err.slice(-2000));
    assert.match(out, /done/);
    const records = err.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    const drops = records.filter((r) => typeof r.dropped === 'number' && (r.dropped as number) > 0);
    assert.ok(drops.length > 0, err.slice(-2000));
    assert.ok(records.length < 20000, `${records.length} lines reached stderr`);
  });
});
