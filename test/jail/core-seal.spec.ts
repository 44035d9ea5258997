// The core's own seal (src/core/jail/seal.ts, policies/core.policy) and its
// launcher (src/core/launcher/): a process that seals itself as the core
// does keeps running JIT-compiled code and its threads, fails to open a path
// cleanly (EACCES), and dies by SIGSYS on a forbidden call from its main
// thread or from a thread started before the seal (as vCPU threads are).
// The running `splitvm device blk --socket` front process — which parses
// what a vhost-user frontend sends — is sealed on every thread, starts its
// device processes through its launcher, and when it dies the launcher ends
// its devices and removes its sockets.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { BlkDriver, VhostUserFrontend } from '../../src/devices/harness/index.js';
import * as C from '../../src/devices/blk/constants.js';
import { api } from '../helpers/api-client.js';
import { startDevice } from '../helpers/splitvm-device.js';

const PROBE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'core-probe.ts');

function probe(call: string, where: 'main' | 'worker'): { stdout: string; signal: NodeJS.Signals | null; status: number | null } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', PROBE, call, where], { encoding: 'utf8', timeout: 60000 });
  return { stdout: r.stdout, signal: r.signal, status: r.status };
}

const status = (pid: number | string, field: string): string => new RegExp(`^${field}:\\s+(.*)$`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]!.trim();

describe('core seal: the policy on a process sealed as the core is', function () {
  this.timeout(60000);

  it('keeps JIT-compiled code, memory and its threads, and opening a path fails with EACCES', () => {
    const r = probe('none', 'main');
    assert.equal(r.status, 0, r.stdout);
    assert.match(r.stdout, /^sealed jit=true mem=67108864 open=EACCES$/m);
    assert.match(r.stdout, /survived/);
  });

  for (const [call, where] of [['socket', 'main'], ['spawn', 'main'], ['kvm-create-vm', 'main'], ['socket', 'worker'], ['kvm-create-vm', 'worker']] as const) {
    it(`a forbidden ${call} from the ${where === 'main' ? 'main thread' : 'thread started before the seal'} kills the process with SIGSYS`, () => {
      const r = probe(call, where);
      assert.match(r.stdout, /^sealed /m, 'it sealed first');
      assert.equal(r.signal, 'SIGSYS', `status ${r.status}, output ${r.stdout}`);
      assert.doesNotMatch(r.stdout, /survived/);
    });
  }
});

describe('core seal: splitvm device blk --socket', function () {
  this.timeout(60000);
  let dir: string;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-seal-'));
    fs.writeFileSync(path.join(dir, 'disk.img'), Buffer.alloc(1 << 20));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('runs sealed on every thread (Seccomp 2, NoNewPrivs 1, an unprivileged uid, not dumpable) and serves I/O through a device its launcher started', async () => {
    const sock = path.join(dir, 'blk.sock');
    const dev = await startDevice(['blk', '--socket', sock, '--disk', path.join(dir, 'disk.img'), '--api-socket', path.join(dir, 'api.sock')]);
    try {
      const pid = dev.proc.pid!;
      assert.equal(status(pid, 'Seccomp'), '2');
      assert.equal(status(pid, 'NoNewPrivs'), '1');
      const tasks = fs.readdirSync(`/proc/${pid}/task`);
      assert.ok(tasks.length > 3, `threads: ${tasks.length}`);
      for (const tid of tasks) assert.equal(status(`${pid}/task/${tid}`, 'Seccomp'), '2', `thread ${tid}`);
      // Started as root, it drops to the devices' ids (--uid/--gid, default nobody) before it seals.
      assert.match(status(pid, 'Uid'), process.getuid!() === 0 ? /^65534\s+65534\s+65534\s+65534$/ : new RegExp(`^${process.getuid!()}\\s`));
      assert.equal(fs.statSync(`/proc/${pid}/status`).uid, 0, 'not dumpable: its /proc files belong to root');

      const f = await VhostUserFrontend.connect(sock);
      const d = new BlkDriver(f, f.queues[0]!);
      assert.equal((await d.write(0, new Uint8Array(4096).fill(9))).status, C.VIRTIO_BLK_S_OK);
      const vm = (await api(path.join(dir, 'api.sock'), 'GET', '/vm')).json as { devices: { pid: number }[] };
      const devicePid = vm.devices[0]!.pid;
      // The device's parents: its jail (bwrap) under the launcher, a child of the core that is not sealed.
      const parentOf = (p: number) => Number(status(p, 'PPid'));
      let launcher = parentOf(devicePid);
      while (parentOf(launcher) !== pid) launcher = parentOf(launcher);
      assert.match(fs.readFileSync(`/proc/${launcher}/cmdline`, 'utf8'), /launcher\/main\.js/);
      assert.equal(status(launcher, 'Seccomp'), '0', 'the launcher may fork and exec');
      f.close();
    } finally {
      await dev.stop();
    }
  });

  it('when the sealed process is killed, its launcher ends its device and removes its sockets', async () => {
    const sock = path.join(dir, 'blk.sock');
    const apiSock = path.join(dir, 'api.sock');
    const dev = await startDevice(['blk', '--socket', sock, '--disk', path.join(dir, 'disk.img'), '--api-socket', apiSock]);
    const f = await VhostUserFrontend.connect(sock);
    const d = new BlkDriver(f, f.queues[0]!);
    assert.equal((await d.read(0, 4096)).status, C.VIRTIO_BLK_S_OK);
    const devicePid = ((await api(apiSock, 'GET', '/vm')).json as { devices: { pid: number }[] }).devices[0]!.pid;
    dev.proc.kill('SIGKILL');
    await dev.stop();
    for (let i = 0; (fs.existsSync(`/proc/${devicePid}`) || fs.existsSync(sock) || fs.existsSync(apiSock)) && i < 100; i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(!fs.existsSync(`/proc/${devicePid}`), 'the device process is gone');
    assert.ok(!fs.existsSync(sock) && !fs.existsSync(apiSock), 'both sockets are removed');
    f.close();
  });

  it('started as root, it lives in a mount namespace of its own whose root is empty for every thread, and its launcher still restarts a killed device', async function () {
    if (process.getuid!() !== 0) this.skip(); // not root: no namespace (the README says so); CI runs this as root
    const sock = path.join(dir, 'blk.sock');
    const apiSock = path.join(dir, 'api.sock');
    const dev = await startDevice(['blk', '--socket', sock, '--disk', path.join(dir, 'disk.img'), '--api-socket', apiSock]);
    const f = await VhostUserFrontend.connect(sock);
    try {
      const pid = dev.proc.pid!;
      assert.match(dev.log(), /"emptyRoot":true/);
      assert.notEqual(fs.readlinkSync(`/proc/${pid}/ns/mnt`), fs.readlinkSync('/proc/self/ns/mnt'));
      assert.notEqual(fs.readlinkSync(`/proc/${pid}/ns/ipc`), fs.readlinkSync('/proc/self/ns/ipc'));
      for (const tid of fs.readdirSync(`/proc/${pid}/task`)) assert.deepEqual(fs.readdirSync(`/proc/${pid}/task/${tid}/root`), [], `thread ${tid} sees no file`);
      const d = new BlkDriver(f, f.queues[0]!);
      assert.equal((await d.write(0, new Uint8Array(4096).fill(7))).status, C.VIRTIO_BLK_S_OK);
      const devices = async () => ((await api(apiSock, 'GET', '/vm')).json as { devices: { pid: number; state: string }[] }).devices;
      const first = (await devices())[0]!.pid;
      // The launcher, in a copy of the namespace made before the pivot, still has the host's files: bwrap, node, the built code.
      process.kill(first, 'SIGKILL');
      let now = await devices();
      for (let i = 0; (now[0]?.pid === first || now[0]?.state !== 'running') && i < 200; i++, now = await devices()) await new Promise((r) => setTimeout(r, 50));
      assert.notEqual(now[0]!.pid, first, 'a new device process');
      const r = await d.read(0, 4096);
      assert.equal(r.status, C.VIRTIO_BLK_S_OK);
      assert.ok(r.data.every((b) => b === 7), 'the data written before the death');
    } finally {
      f.close();
      await dev.stop();
    }
  });

  it('--no-jail-core leaves it unsealed, and says so loudly', async () => {
    const dev = await startDevice(['blk', '--socket', path.join(dir, 'blk.sock'), '--disk', path.join(dir, 'disk.img'), '--no-jail-core']);
    try {
      assert.equal(status(dev.proc.pid!, 'Seccomp'), '0');
      assert.equal(fs.readlinkSync(`/proc/${dev.proc.pid!}/ns/mnt`), fs.readlinkSync('/proc/self/ns/mnt'), 'no namespace of its own');
      assert.match(dev.log(), /^splitvm: WARNING: --no-jail-core: .* runs unsealed/m);
    } finally {
      await dev.stop();
    }
  });
});

