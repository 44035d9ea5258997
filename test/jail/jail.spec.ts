// Jail tests with real processes: a device launched by launchDevice() runs in
// its namespaces with no capabilities, no_new_privs, the REAL seccomp policy,
// exactly its fds, a root holding nothing of the host's but what Node needs;
// its device work still runs under the policy, and every forbidden call made
// after the policy is installed kills it with SIGSYS. First with a fixture
// device (test/jail/fixtures/device.ts, which can also do a device's work and
// try more calls), then with the real device entry (the bundle, dist/device/main.cjs).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import koffi from 'koffi';
import { ControlChannel } from '../../src/ipc/channel.js';
import { deviceEntry, launchDevice, LaunchError, DEVICE_DATA_LIMIT, DEVICE_NOFILE, type DeviceProcess, type LaunchOptions } from '../../src/core/jail/launch.js';
import { repoRoot } from '../../src/sys/paths.js';
import * as libc from '../../src/sys/libc.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = repoRoot();
const FIXTURE = path.join(root, 'dist', 'test', 'jail', 'fixtures', 'device.js');
const MAIN = deviceEntry(); // what splitvm runs: the bundled dist/device/main.cjs
const MEM_SIZE = 2 << 20;

// an fd the test holds WITHOUT close-on-exec: it must not reach the device
const openNoCloexec = koffi.load('libc.so.6').func('int open(const char *path, int flags, int mode)');

interface Started {
  dev: DeviceProcess;
  fds: number[];
  /** the fixture's reply lines */
  lines: string[];
  next(): Promise<string>;
  send(cmd: string): void;
}

describe('device jail (real processes)', function () {
  this.timeout(60000);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-jail-'));
  const image = path.join(tmp, 'disk.img');
  const canaryPath = path.join(tmp, 'canary');
  let canary = -1;
  const running: Started[] = [];

  before(() => {
    // the jail holds only built JavaScript: build src/ and the fixture into dist/
    execFileSync(process.execPath, [path.join(root, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', path.join(here, 'tsconfig.fixtures.json')], { stdio: 'inherit' });
    fs.writeFileSync(image, Buffer.alloc(1 << 20));
    fs.writeFileSync(canaryPath, 'canary');
    canary = openNoCloexec(canaryPath, 0, 0);
    assert.ok(canary > 2);
  });

  after(() => {
    for (const s of running) s.dev.kill();
    if (canary > 2) libc.close(canary);
    fs.rmSync(tmp, { recursive: true, force: true });
  });

  function devFds(): number[] {
    const mem = libc.memfdCreate('guest');
    libc.ftruncate(mem, MEM_SIZE);
    return [mem, libc.open(image, libc.O_RDWR), libc.eventfd(), libc.eventfd()];
  }

  async function start(o: Partial<LaunchOptions> = {}): Promise<Started> {
    const fds = devFds();
    let dev: DeviceProcess;
    try {
      dev = await launchDevice({ name: 'blk0', kind: 'blk', config: {}, fds, jail: true, seccomp: 'enforce', log: 'pipe', entry: FIXTURE, ...o });
    } finally {
      fds.forEach((fd) => libc.close(fd)); // the device holds its own copies
    }
    const lines: string[] = [];
    let buf = '';
    let wake: (() => void) | null = null;
    dev.control.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl;
      while ((nl = buf.indexOf('\n')) >= 0) {
        lines.push(buf.slice(0, nl));
        buf = buf.slice(nl + 1);
      }
      wake?.();
    });
    dev.control.on('error', () => undefined);
    void dev.exited.then(() => wake?.());
    let logText = '';
    dev.log?.on('data', (d: Buffer) => (logText += d.toString()));
    const next = async (): Promise<string> => {
      for (;;) {
        if (lines.length) return lines.shift()!;
        const exited = await Promise.race([dev.exited, new Promise<null>((r) => (wake = () => r(null)))]);
        if (exited && !lines.length) throw new Error(`device exited (${JSON.stringify(exited)}) without answering; log: ${logText}`);
      }
    };
    const s: Started = { dev, fds, lines, next, send: (cmd) => void dev.control.write(cmd + '\n') };
    running.push(s);
    return s;
  }

  const status = (pid: number): Record<string, string> =>
    Object.fromEntries(
      fs.readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').filter(Boolean).map((l) => {
        const i = l.indexOf(':');
        return [l.slice(0, i), l.slice(i + 1).trim()];
      }),
    );

  function fdTable(pid: number): Map<number, { link: string; ino: number }> {
    const out = new Map<number, { link: string; ino: number }>();
    for (const f of fs.readdirSync(`/proc/${pid}/fd`)) {
      const p = `/proc/${pid}/fd/${f}`;
      out.set(Number(f), { link: fs.readlinkSync(p), ino: fs.statSync(p).ino });
    }
    return out;
  }

  /** The device holds 0-7 as laid out, and besides them only what Node makes for itself. */
  function checkFds(pid: number): void {
    const t = fdTable(pid);
    assert.equal(t.get(0)?.link, '/dev/null');
    assert.equal(t.get(1)?.link, '/dev/null');
    assert.match(t.get(2)?.link ?? '', /^(pipe|socket):/);
    assert.match(t.get(3)?.link ?? '', /^socket:/);
    assert.match(t.get(4)?.link ?? '', /^\/memfd:guest/);
    assert.equal(t.get(5)?.link, image);
    assert.equal(t.get(6)?.link, 'anon_inode:[eventfd]');
    assert.equal(t.get(7)?.link, 'anon_inode:[eventfd]');
    const canaryIno = fs.statSync(canaryPath).ino;
    const pipeCount = new Map<string, number>();
    for (const [fd, { link, ino }] of t) {
      assert.notEqual(ino, canaryIno, `the test's fd ${canary} leaked in as fd ${fd}`);
      if (fd <= 7) continue;
      // Node's own: epoll instances, eventfds, its internal pipes, and a reserve fd
      // on /dev/null (on "/" in the jail, which has no /dev)
      assert.match(link, /^(anon_inode:\[(eventfd|eventpoll|signalfd)\]|pipe:\[\d+\]|\/|\/dev\/null)$/, `unexpected fd ${fd} -> ${link}`);
      if (link.startsWith('pipe:')) pipeCount.set(link, (pipeCount.get(link) ?? 0) + 1);
    }
    // a pipe Node made has both ends here; a leaked one would have one
    for (const [p, n] of pipeCount) assert.equal(n, 2, `pipe ${p} has only one end in the device: leaked?`);
  }

  function checkConfinement(pid: number): void {
    const st = status(pid);
    assert.equal(st.Seccomp, '2', 'seccomp filter mode');
    assert.equal(st.NoNewPrivs, '1');
    for (const cap of ['CapInh', 'CapPrm', 'CapEff', 'CapBnd', 'CapAmb']) assert.equal(st[cap], '0000000000000000', cap);
    assert.equal(st.NSpid?.split(/\s+/).at(-1), '1', 'the device is pid 1 of its own pid namespace');
    for (const ns of ['user', 'mnt', 'pid', 'net', 'ipc', 'uts', 'cgroup']) {
      assert.notEqual(fs.readlinkSync(`/proc/${pid}/ns/${ns}`), fs.readlinkSync(`/proc/self/ns/${ns}`), `${ns} namespace`);
    }
    const limits = fs.readFileSync(`/proc/${pid}/limits`, 'utf8');
    assert.match(limits, new RegExp(`Max open files\\s+${DEVICE_NOFILE}\\s+${DEVICE_NOFILE}`));
    assert.match(limits, /Max core file size\s+0\s+0/);
    assert.match(limits, new RegExp(`Max data size\\s+${DEVICE_DATA_LIMIT.blk}\\s+${DEVICE_DATA_LIMIT.blk}`));
  }

  describe('with the fixture device', () => {
    it('is confined: seccomp, no_new_privs, no capabilities, own namespaces, rlimits', async () => {
      const s = await start();
      assert.match(await s.next(), /^ready 1$/);
      checkConfinement(s.dev.pid);
      assert.match(fs.readFileSync(`/proc/${s.dev.pid}/cmdline`, 'utf8'), /--jitless/);
      s.send('exit');
      assert.deepEqual(await s.dev.exited, { code: 0, signal: null });
    });

    it('gets exactly its fds, at the same numbers, and none of the test’s', async () => {
      const s = await start();
      await s.next();
      checkFds(s.dev.pid);
      s.send('exit');
      await s.dev.exited;
    });

    it('sees a root of read-only binds only: no /home, /tmp, /dev, /proc', async () => {
      const s = await start();
      await s.next();
      const top = fs.readdirSync(`/proc/${s.dev.pid}/root`).sort();
      assert.deepEqual(top.filter((n) => !['bin', 'lib', 'lib32', 'lib64', 'libx32', 'etc', 'usr', 'splitvm'].includes(n)), []);
      assert.deepEqual(fs.readdirSync(`/proc/${s.dev.pid}/root/splitvm`).sort(), ['dist', 'node_modules', 'package.json', 'policies']);
      assert.deepEqual(fs.readdirSync(`/proc/${s.dev.pid}/root/etc`), ['ld.so.cache']);
      s.send('exit');
      await s.dev.exited;
    });

    it("does a device's work under the enforced policy and exits cleanly", async () => {
      const s = await start();
      await s.next();
      s.send('work');
      assert.equal(await s.next(), 'work-ok');
      s.send('bench 20000 4096');
      assert.match(await s.next(), /^bench-ok \d+$/);
      s.send('work');
      assert.equal(await s.next(), 'work-ok');
      s.send('exit');
      assert.deepEqual(await s.dev.exited, { code: 0, signal: null });
    });

    for (const attempt of ['socket', 'execve', 'open', 'fork', 'kill', 'mmap-exec']) {
      it(`is killed by SIGSYS when it attempts ${attempt}`, async () => {
        const s = await start();
        await s.next();
        s.send(`attempt ${attempt}`);
        const exit = await s.dev.exited;
        assert.deepEqual(exit, { code: null, signal: 'SIGSYS' }, `replies: ${s.lines.join(' | ')}`);
        assert.deepEqual(s.lines, []);
      });
    }

    it("in 'log' mode the forbidden call goes through, with a warning in the device log", async () => {
      const s = await start({ seccomp: 'log' });
      let logText = '';
      s.dev.log!.on('data', (d: Buffer) => (logText += d.toString()));
      await s.next();
      s.send('attempt socket');
      assert.match(await s.next(), /^survived socket -> \d+$/);
      s.send('exit');
      await s.dev.exited;
      assert.match(logText, /WARNING: seccomp for device "blk" is in LOG mode/);
    });

    it('without a jail: same fds, own pid, but the test’s namespaces', async () => {
      const s = await start({ jail: false });
      assert.equal(await s.next(), `ready ${s.dev.pid}`);
      checkFds(s.dev.pid);
      assert.equal(status(s.dev.pid).Seccomp, '2');
      assert.equal(fs.readlinkSync(`/proc/${s.dev.pid}/ns/mnt`), fs.readlinkSync('/proc/self/ns/mnt'));
      s.send('attempt socket');
      assert.deepEqual(await s.dev.exited, { code: null, signal: 'SIGSYS' });
    });

    it('reports a kill from outside as that signal', async () => {
      const s = await start();
      await s.next();
      s.dev.kill();
      assert.deepEqual(await s.dev.exited, { code: null, signal: 'SIGKILL' });
    });
  });

  describe('with the real device entry (the bundle splitvm runs, dist/device/main.cjs)', () => {
    const config = (extra: object = {}) => ({
      regions: [{ gpa: 0, size: MEM_SIZE, offset: 0 }],
      numQueues: 1,
      logLevel: 'info',
      blk: { readOnly: false },
      ...extra,
    });

    it('says hello from inside the jail, confined, with exactly its fds', async () => {
      const fds = devFds();
      const dev = await launchDevice({ name: 'blk0', kind: 'blk', config: config(), fds, jail: true, seccomp: 'enforce', log: 'pipe', entry: MAIN });
      fds.forEach((fd) => libc.close(fd));
      let logText = '';
      dev.log!.on('data', (d: Buffer) => (logText += d.toString()));
      const channel = new ControlChannel('core', dev.control);
      const hello = await Promise.race([
        new Promise((resolve) => channel.once('message', resolve)),
        dev.exited.then((e) => Promise.reject(new Error(`device died: ${JSON.stringify(e)}; log: ${logText}`))),
      ]);
      assert.equal((hello as { type: string }).type, 'hello');
      assert.match(logText, /seccomp policy installed/);
      checkConfinement(dev.pid);
      checkFds(dev.pid);
      dev.kill();
      await dev.exited;
    });

    for (const probe of ['socket', 'execve', 'open'] as const) {
      it(`is killed by SIGSYS when it attempts ${probe} after the policy (testAttemptAfterJail)`, async () => {
        const fds = devFds();
        const dev = await launchDevice({ name: 'blk0', kind: 'blk', config: config({ testAttemptAfterJail: probe }), fds, jail: true, seccomp: 'enforce', log: 'pipe', entry: MAIN });
        fds.forEach((fd) => libc.close(fd));
        let logText = '';
        dev.log!.on('data', (d: Buffer) => (logText += d.toString()));
        assert.deepEqual(await dev.exited, { code: null, signal: 'SIGSYS' }, logText);
        assert.match(logText.trim().split('\n').at(-1) ?? '', /test probe: attempting/);
      });
    }
  });

  describe('errors a user can cause', () => {
    it('a missing bwrap is one clear sentence', async () => {
      const saved = process.env.PATH;
      process.env.PATH = tmp;
      try {
        await assert.rejects(start(), (e: Error) => e instanceof LaunchError && /bubblewrap \(bwrap\) is not installed/.test(e.message));
      } finally {
        process.env.PATH = saved;
      }
    });

    it('a jailed entry outside dist/ is refused', async () => {
      await assert.rejects(start({ entry: path.join(here, 'jail.spec.ts') }), (e: Error) => e instanceof LaunchError && /must run code from/.test(e.message));
    });

    it('a missing entry says to build', async () => {
      await assert.rejects(start({ entry: path.join(root, 'dist', 'nope.js') }), (e: Error) => e instanceof LaunchError && /does not exist; build it first/.test(e.message));
    });
  });
});
