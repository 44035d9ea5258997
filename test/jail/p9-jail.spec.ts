// The 9p device's jail with real processes: the device entry serving a
// share is confined like every device (its namespaces, its fds), and the
// calls a taken-over 9p device would try first are killed by SIGSYS —
// those its policy lacks (socket, execve, open) and those it allows only
// with certain arguments (openat2 from the working directory, mknodat of a
// device node). The policy file itself is checked to allow no call that
// names a file from the working directory.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ControlChannel } from '../../src/ipc/channel.js';
import { launchDevice } from '../../src/core/jail/launch.js';
import { readPolicy } from '../../src/devices/seccomp/index.js';
import { repoRoot } from '../../src/sys/paths.js';
import * as libc from '../../src/sys/libc.js';

const MAIN = path.join(repoRoot(), 'dist', 'src', 'devices', 'main.js');
const MEM_SIZE = 2 << 20;

describe('9p device jail (real processes)', function () {
  this.timeout(60000);
  let tmp: string;
  let share: string;

  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-p9jail-'));
    share = path.join(tmp, 'share');
    fs.mkdirSync(share);
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  async function launch(extra: object = {}): Promise<{ dev: Awaited<ReturnType<typeof launchDevice>>; log: () => string }> {
    const mem = libc.memfdCreate('guest');
    libc.ftruncate(mem, MEM_SIZE);
    const fds = [mem, libc.open(share, libc.O_PATH | libc.O_DIRECTORY), libc.eventfd(), libc.eventfd()];
    const config = { regions: [{ gpa: 0, size: MEM_SIZE, offset: 0 }], numQueues: 1, logLevel: 'info', p9: { tag: 'share0', readOnly: false }, ...extra };
    const dev = await launchDevice({ name: 'p90', kind: 'p9', config, fds, jail: true, seccomp: 'enforce', log: 'pipe', entry: MAIN });
    fds.forEach((fd) => libc.close(fd));
    let text = '';
    dev.log!.on('data', (d: Buffer) => (text += d.toString()));
    return { dev, log: () => text };
  }

  it('says hello from inside the jail, holding the share only as its fd 5', async () => {
    const { dev, log } = await launch();
    const channel = new ControlChannel('core', dev.control);
    const hello = await Promise.race([
      new Promise((resolve) => channel.once('message', resolve)),
      dev.exited.then((e) => Promise.reject(new Error(`device died: ${JSON.stringify(e)}; log: ${log()}`))),
    ]);
    assert.equal((hello as { type: string; kind: string }).kind, 'p9');
    assert.equal(fs.readlinkSync(`/proc/${dev.pid}/fd/5`), share);
    // the jail's root has nothing of the host's beyond what Node needs: the share is not mounted there
    assert.deepEqual(fs.readdirSync(`/proc/${dev.pid}/root`).filter((n) => !['bin', 'lib', 'lib32', 'lib64', 'libx32', 'etc', 'usr', 'splitvm'].includes(n)), []);
    dev.kill();
    await dev.exited;
  });

  for (const probe of ['socket', 'execve', 'open', 'openat2-cwd', 'mknod-device'] as const) {
    it(`is killed by SIGSYS when it attempts ${probe} after the policy`, async () => {
      const { dev, log } = await launch({ testAttemptAfterJail: probe });
      assert.deepEqual(await dev.exited, { code: null, signal: 'SIGSYS' }, log());
      assert.match(log().trim().split('\n').at(-1) ?? '', /test probe: attempting/);
      assert.deepEqual(fs.readdirSync(share), [], 'nothing was made in the share');
    });
  }

  it('its policy names files only relative to a directory fd the process holds', () => {
    const rules = readPolicy('p9');
    const names = new Set(rules.map((r) => r.syscall));
    for (const absent of ['open', 'openat', 'creat', 'mknod', 'rename', 'renameat', 'link', 'symlink', 'unlink', 'rmdir', 'mkdir', 'chmod', 'fchmod', 'chown', 'truncate', 'newfstatat', 'socket', 'connect', 'accept4', 'execve']) {
      assert.equal(names.has(absent), false, `${absent} is not allowed`);
    }
    for (const filtered of ['openat2', 'statx', 'fchmodat2', 'fchownat', 'utimensat', 'readlinkat', 'mkdirat', 'unlinkat', 'symlinkat', 'renameat2', 'linkat', 'mknodat']) {
      const own = rules.filter((r) => r.syscall === filtered);
      assert.ok(own.length > 0 && own.every((r) => r.when !== null), `${filtered} has an argument filter`);
    }
  });
});
