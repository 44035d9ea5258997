// The net device's jail with real processes: the device entry, on a
// passt-style socket the test holds, is confined like every device and
// holds only that socket as its backend; the calls a taken-over net device
// would try first are killed by SIGSYS — making a socket, exec, open, and
// any ioctl on its backend but the offload setting (TUNSETIFF would attach
// a tap fd to another interface). The policy names no socket call at all.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ControlChannel } from '../../src/ipc/channel.js';
import { launchDevice } from '../../src/core/jail/launch.js';
import { readPolicy } from '../../src/devices/seccomp/index.js';
import { repoRoot } from '../../src/sys/paths.js';
import * as libc from '../../src/sys/libc.js';

const MAIN = path.join(repoRoot(), 'dist', 'src', 'devices', 'main.js');
const MEM_SIZE = 2 << 20;

describe('net device jail (real processes)', function () {
  this.timeout(60000);

  async function launch(extra: object = {}): Promise<{ dev: Awaited<ReturnType<typeof launchDevice>>; log: () => string; peer: number }> {
    const mem = libc.memfdCreate('guest');
    libc.ftruncate(mem, MEM_SIZE);
    const [peer, theirs] = libc.socketpair();
    libc.setNonBlocking(theirs);
    const fds = [mem, theirs, libc.eventfd(), libc.eventfd(), libc.eventfd(), libc.eventfd()];
    const config = { regions: [{ gpa: 0, size: MEM_SIZE, offset: 0 }], numQueues: 2, logLevel: 'info', net: { backend: 'passt', mac: '02:00:00:00:00:09', mtu: 1500, tapOffloads: 0 }, ...extra };
    const dev = await launchDevice({ name: 'net0', kind: 'net', config, fds, jail: true, seccomp: 'enforce', log: 'pipe', entry: MAIN });
    fds.forEach((fd) => libc.close(fd));
    let text = '';
    dev.log!.on('data', (d: Buffer) => (text += d.toString()));
    return { dev, log: () => text, peer };
  }

  it('says hello from inside the jail, holding its backend socket as fd 5 and no socket but its own three', async () => {
    const { dev, log, peer } = await launch();
    try {
      const channel = new ControlChannel('core', dev.control);
      const hello = await Promise.race([
        new Promise((resolve) => channel.once('message', resolve)),
        dev.exited.then((e) => Promise.reject(new Error(`device died: ${JSON.stringify(e)}; log: ${log()}`))),
      ]);
      assert.equal((hello as { kind: string }).kind, 'net');
      const fds = fs.readdirSync(`/proc/${dev.pid}/fd`).map((fd) => [Number(fd), fs.readlinkSync(`/proc/${dev.pid}/fd/${fd}`)] as const);
      const target = new Map(fds);
      const sockets = [...new Set(fds.filter(([, t]) => t.startsWith('socket:')).map(([, t]) => t))].sort();
      // 2: its log (a socketpair to the core), 3: the control channel, 5: the backend (which the
      // event loop reads through a duplicate: the same socket under another number).
      assert.deepEqual(sockets, [target.get(2), target.get(3), target.get(5)].sort(), `only the log, the control channel and the backend: ${JSON.stringify(fds)}`);
    } finally {
      dev.kill();
      await dev.exited;
      libc.close(peer);
    }
  });

  for (const probe of ['socket', 'execve', 'open', 'tap-setiff'] as const) {
    it(`is killed by SIGSYS when it attempts ${probe} after the policy`, async () => {
      const { dev, log, peer } = await launch({ testAttemptAfterJail: probe });
      assert.deepEqual(await dev.exited, { code: null, signal: 'SIGSYS' }, log());
      assert.match(log().trim().split('\n').at(-1) ?? '', /test probe: attempting/);
      libc.close(peer);
    });
  }

  it('its policy allows no socket call and only the offload ioctl on the backend', () => {
    const rules = readPolicy('net');
    const names = new Set(rules.map((r) => r.syscall));
    for (const absent of ['socket', 'socketpair', 'connect', 'bind', 'listen', 'accept', 'accept4', 'sendto', 'sendmsg', 'recvmsg', 'open', 'openat', 'execve']) {
      assert.equal(names.has(absent), false, `${absent} is not allowed`);
    }
    const ioctls = rules.filter((r) => r.syscall === 'ioctl');
    assert.ok(ioctls.every((r) => r.when !== null), 'every ioctl rule has an argument filter');
  });
});
