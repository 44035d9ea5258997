// Guest userspace test: Linux's own 9P2000.L client, in a guest with a
// userspace (QEMU under TCG: this host's KVM cannot run guest user mode),
// mounts a folder served by `splitvm device 9p --listen` over TCP (9p
// trans=tcp through QEMU's user network, which reaches the host's loopback
// at 10.0.2.2) and works in it with busybox: reads a file byte-identical,
// creates, writes, renames, links, chmods, touches, truncates and removes;
// symlinks out of the folder lead nowhere; a device node is refused. The
// host then checks what the guest did. Then the same folder with `,ro`:
// every change fails with "Read-only file system" and nothing changes.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { NOBODY } from '../../src/core/jail/identity.js';
import { testGuestInitramfs, testGuestKernel } from '../helpers/qemu-guest.js';
import { SPLITVM } from '../helpers/run-splitvm.js';

const BEGIN = 'SPLITVM-TEST: begin\n';
const EXIT = /^SPLITVM-TEST: exit=(\d+)$/m;

function hasQemu(): boolean {
  try {
    execFileSync('qemu-system-x86_64', ['--version'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Serves `share` on a free loopback port; resolves with the process and the port. */
function serve(share: string): Promise<{ child: ChildProcess; port: number }> {
  const child = spawn(process.execPath, [SPLITVM, 'device', '9p', '--share', share, '--listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /on 127\.0\.0\.1:(\d+)/.exec(out);
      if (m) resolve({ child, port: Number(m[1]) });
    });
    child.on('exit', (code) => reject(new Error(`splitvm device 9p exited (${code})`)));
  });
}

/** Boots the test guest with a user-mode NIC, runs `commands` (sh -e) and returns what they printed and their status. */
async function guest(commands: string, dir: string): Promise<{ output: string; exitCode: number | null; console: string }> {
  const cmdDir = fs.mkdtempSync(path.join(dir, 'cmd-'));
  fs.writeFileSync(path.join(cmdDir, 'commands.sh'), commands);
  const initrd = path.join(cmdDir, 'initrd.cpio');
  fs.copyFileSync(testGuestInitramfs(false), initrd);
  fs.appendFileSync(initrd, execFileSync('cpio', ['-o', '-H', 'newc', '--quiet'], { cwd: cmdDir, input: 'commands.sh\n' }));
  const qemu = spawn('qemu-system-x86_64', [
    '-accel', 'tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-no-reboot',
    '-M', 'q35', '-m', '256M', '-kernel', testGuestKernel(), '-initrd', initrd,
    '-append', 'console=ttyS0 reboot=k panic=-1 tsc=reliable',
    '-netdev', 'user,id=n0', '-device', 'virtio-net-pci,netdev=n0',
  ], { stdio: ['ignore', 'pipe', 'pipe'] });
  const chunks: Buffer[] = [];
  qemu.stdout.on('data', (d: Buffer) => chunks.push(d));
  const timer = setTimeout(() => qemu.kill('SIGKILL'), 90000);
  await new Promise((resolve) => qemu.on('close', resolve));
  clearTimeout(timer);
  const console = Buffer.concat(chunks).toString('utf8').replace(/\r\n/g, '\n');
  const begin = console.indexOf(BEGIN);
  const exit = EXIT.exec(console);
  return { output: begin < 0 ? '' : console.slice(begin + BEGIN.length, exit?.index), exitCode: exit ? Number(exit[1]) : null, console };
}

const mount = (port: number): string => `ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
mkdir -p /mnt
mount -t 9p -o trans=tcp,port=${port},version=9p2000.L,msize=262144 10.0.2.2 /mnt
`;

describe('guest userspace: Linux 9p client on a splitvm 9p server (QEMU TCG, 9p over TCP)', function () {
  this.timeout(240000);
  let dir: string;
  let share: string;
  const servers: ChildProcess[] = [];
  const data = randomBytes(3_000_000);

  before(function () {
    if (!hasQemu()) this.skip();
  });
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-p9tcg-'));
    share = path.join(dir, 'share');
    fs.mkdirSync(path.join(share, 'dir'), { recursive: true });
    fs.mkdirSync(path.join(dir, 'outside'));
    fs.writeFileSync(path.join(dir, 'outside', 'secret'), 'outside secret\n');
    fs.writeFileSync(path.join(share, 'hello.txt'), 'hello from the host\n');
    fs.writeFileSync(path.join(share, 'dir', 'data.bin'), data);
    fs.symlinkSync(path.join(dir, 'outside', 'secret'), path.join(share, 'abs'));
    fs.symlinkSync('../outside', path.join(share, 'rel'));
    // Started as root, splitvm runs the 9p device as nobody (--uid/--gid default), which reaches
    // the share's files as itself: the share is given to it, as the README tells an operator to.
    if (process.getuid!() === 0) execFileSync('chown', ['-hR', `${NOBODY}:${NOBODY}`, share]);
  });
  afterEach(() => {
    for (const s of servers.splice(0)) s.kill('SIGTERM');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('reads, writes and changes files in the share; links out lead nowhere; device nodes are refused', async () => {
    const { child, port } = await serve(share);
    servers.push(child);
    const r = await guest(`${mount(port)}
cat /mnt/hello.txt
md5sum /mnt/dir/data.bin
ls /mnt
echo "written by the guest" > /mnt/new.txt
mkdir /mnt/made
echo data > /mnt/made/f
mv /mnt/made/f /mnt/made/g
ln -s g /mnt/made/sym
ln /mnt/made/g /mnt/made/hard
chmod 640 /mnt/made/g
touch -d '2001-02-03 04:05:06' /mnt/made/g
dd if=/dev/zero of=/mnt/made/zeros bs=64k count=16 2>/dev/null
truncate -s 1000 /mnt/made/zeros
rm /mnt/made/hard
cat /mnt/made/sym
cat /mnt/abs 2>/dev/null || echo "abs: not followed"
cat /mnt/rel/secret 2>/dev/null || echo "rel: not followed"
mknod /mnt/null c 1 3 2>/dev/null || echo "mknod: refused"
mkfifo /mnt/fifo
stat -c '%s %a' /mnt/made/zeros /mnt/made/g
umount /mnt
`, dir);
    assert.equal(r.exitCode, 0, r.console.slice(-3000));
    const lines = r.output.split('\n');
    assert.ok(lines.includes('hello from the host'));
    assert.ok(lines.includes(`${createHash('md5').update(data).digest('hex')}  /mnt/dir/data.bin`), 'byte-identical through the guest');
    for (const l of ['data', 'abs: not followed', 'rel: not followed', 'mknod: refused', '1000 644', '5 640']) assert.ok(lines.includes(l), `"${l}" in:\n${r.output}`);
    assert.equal(fs.readFileSync(path.join(share, 'new.txt'), 'utf8'), 'written by the guest\n');
    assert.deepEqual(fs.readdirSync(path.join(share, 'made')).sort(), ['g', 'sym', 'zeros']);
    assert.equal(fs.readlinkSync(path.join(share, 'made', 'sym')), 'g');
    const g = fs.statSync(path.join(share, 'made', 'g'));
    assert.equal(g.mode & 0o777, 0o640);
    assert.equal(g.mtime.getUTCFullYear(), 2001);
    assert.equal(fs.statSync(path.join(share, 'made', 'zeros')).size, 1000);
    assert.ok(fs.lstatSync(path.join(share, 'fifo')).isFIFO());
    assert.equal(fs.existsSync(path.join(share, 'null')), false);
    assert.deepEqual(fs.readdirSync(path.join(dir, 'outside')), ['secret']);
  });

  it('with ,ro every change fails with "Read-only file system" and the folder stays as it was', async () => {
    const { child, port } = await serve(`${share},ro`);
    servers.push(child);
    const before = JSON.stringify(fs.readdirSync(share, { recursive: true, encoding: 'utf8' }).sort());
    const r = await guest(`${mount(port)}
cat /mnt/hello.txt
for change in "echo x > /mnt/new" "mkdir /mnt/d" "rm /mnt/hello.txt" "mv /mnt/hello.txt /mnt/h2" "chmod 600 /mnt/hello.txt" "ln -s x /mnt/l" "touch /mnt/hello.txt" "truncate -s 0 /mnt/hello.txt"; do
  if sh -c "$change" 2>/tmp/err; then echo "CHANGED: $change"; else echo "refused: $(cat /tmp/err)"; fi
done
umount /mnt
`, dir);
    assert.equal(r.exitCode, 0, r.console.slice(-3000));
    assert.match(r.output, /hello from the host/);
    assert.doesNotMatch(r.output, /CHANGED/);
    assert.equal(r.output.match(/refused: .*Read-only file system/g)?.length, 8, r.output);
    assert.equal(JSON.stringify(fs.readdirSync(share, { recursive: true, encoding: 'utf8' }).sort()), before);
    assert.equal(fs.readFileSync(path.join(share, 'hello.txt'), 'utf8'), 'hello from the host\n');
  });
});
