// Guest userspace tests of splitvm's device processes over vhost-user: a
// QEMU guest under TCG (no KVM needed; test/helpers/qemu-guest.ts) drives
// our jailed, policy-enforcing blk and net device processes, served by
// `splitvm device blk|net --socket`, with programs written by others: fio
// with verification, busybox's dd, udhcpc and nc, and the guest kernel's
// TCP. The host then checks what landed in the image and on its sockets.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { logRecords } from '../helpers/run-splitvm.js';
import { runQemuGuest, type QemuGuestResult } from '../helpers/qemu-guest.js';
import { startDevice, type RunningDevice } from '../helpers/splitvm-device.js';
import { api as callApi, metric } from '../helpers/api-client.js';

const MiB = 1024 * 1024;
const explain = (r: QemuGuestResult): string => `exit ${r.exitCode}, status ${r.status}${r.timedOut ? ' (timed out)' : ''}; console:\n${r.console.slice(-4000)}`;

/** fio in the guest writes 48 MiB of 4 KiB blocks at random at depth 16 on /dev/vda, then reads each back and verifies it. */
const fioVerify48M = (socket: string): Promise<QemuGuestResult> =>
  runQemuGuest({
    withFio: true,
    blk: { socket },
    timeoutMs: 120000,
    commands:
      'fio --name=v --filename=/dev/vda --rw=randwrite --bs=4k --size=48M --iodepth=16 --ioengine=libaio' +
      ' --direct=1 --verify=crc32c --verify_fatal=1 --output-format=json --output=/tmp/fio.json\n' +
      'cat /tmp/fio.json\n',
  });

/** The pids of the device processes a backend started, in order: for the frontend, and after each death or restart. */
function servingPids(device: RunningDevice, name: string): number[] {
  return logRecords<{ msg: unknown; pid: number }>(device.log())
    .filter((l) => l.msg === 'device started for the vhost-user frontend' || (typeof l.msg === 'string' && l.msg.startsWith(`device ${name} restarted`)))
    .map((l) => l.pid);
}

/** fioVerify48M's run ended well: exit 0, no fio error, every block read back, no I/O error in the guest's log. */
function assertFioVerified48M(r: QemuGuestResult): void {
  assert.equal(r.exitCode, 0, explain(r));
  const report = JSON.parse(r.output.slice(r.output.indexOf('{'), r.output.lastIndexOf('}') + 1)) as { jobs: { error: number; read: { io_kbytes: number } }[] };
  assert.equal(report.jobs[0]!.error, 0);
  assert.equal(report.jobs[0]!.read.io_kbytes, 48 * 1024, 'every block read back and verified');
  assert.doesNotMatch(r.console, /I\/O error|blk_update_request|Buffer I\/O error/);
}

describe('guest userspace over vhost-user: splitvm blk device processes', function () {
  this.timeout(180000);
  let dir: string;
  let image: string;
  let roImage: string;
  const devices: RunningDevice[] = [];
  let r: QemuGuestResult;

  before(async function () {
    dir = mkdtempSync(join(tmpdir(), 'splitvm-vu-blk-'));
    image = join(dir, 'disk.img');
    roImage = join(dir, 'ro.img');
    writeFileSync(image, Buffer.alloc(8 * MiB));
    writeFileSync(roImage, Buffer.alloc(1 * MiB, 0x5a));
    devices.push(await startDevice(['blk', '--socket', join(dir, 'rw.sock'), '--disk', `${image},serial=vu-rw`]));
    devices.push(await startDevice(['blk', '--socket', join(dir, 'ro.sock'), '--disk', `${roImage},ro`]));
    r = await runQemuGuest({
      withFio: true,
      blk: [{ socket: join(dir, 'rw.sock') }, { socket: join(dir, 'ro.sock') }],
      commands:
        'fio --name=v --filename=/dev/vda --rw=randwrite --bs=4k --size=4M --iodepth=16 --ioengine=libaio' +
        ' --direct=1 --verify=crc32c --verify_fatal=1 --output-format=json --output=/tmp/fio.json\n' +
        'cat /tmp/fio.json\n' +
        'echo "serial=$(cat /sys/block/vda/serial) ro=$(cat /sys/block/vdb/ro)"\n' +
        'dd if=/dev/vdb bs=4096 count=1 2>/dev/null | od -An -tx1 | head -1\n' +
        'if dd if=/dev/zero of=/dev/vdb bs=4096 count=1 oflag=direct 2>/tmp/dd.err; then echo "ro-write=accepted"; else echo "ro-write=refused"; fi\n',
    });
  });

  after(async function () {
    for (const d of devices) await d.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the guest boots, runs its commands and exits 0', function () {
    assert.equal(r.status, 0, explain(r));
    assert.equal(r.exitCode, 0, explain(r));
  });

  it('fio writes and verifies 4 MiB at queue depth 16 with no error', function () {
    const report = JSON.parse(r.output.slice(r.output.indexOf('{'), r.output.lastIndexOf('}') + 1)) as { jobs: { error: number; write: { io_kbytes: number }; read: { io_kbytes: number }; iodepth_level: Record<string, number> }[] };
    const job = report.jobs[0]!;
    assert.equal(job.error, 0);
    assert.equal(job.write.io_kbytes, 4096);
    assert.equal(job.read.io_kbytes, 4096, 'every block read back and verified');
    assert.ok((job.iodepth_level['16'] ?? 0) > 50, `most I/O at depth 16: ${JSON.stringify(job.iodepth_level)}`);
  });

  it('the host sees each block fio wrote at its offset in the image', function () {
    const img = readFileSync(image);
    for (let off = 0; off < 4 * MiB; off += 4096) {
      assert.equal(img.readUInt16LE(off), 0xacca, `fio's header at ${off}`);
      assert.equal(img.readBigUInt64LE(off + 16), BigInt(off), `block at ${off} carries its own offset`);
    }
  });

  it('the guest reads the serial, sees the read-only disk as read-only, reads it and cannot write it', function () {
    assert.match(r.output, /serial=vu-rw ro=1/);
    assert.match(r.output, /^ 5a 5a 5a 5a/m);
    assert.match(r.output, /ro-write=refused/);
    assert.ok(readFileSync(roImage).every((b) => b === 0x5a), 'the read-only image is unchanged');
  });

  it('each device ran jailed under its enforcing policy', function () {
    const installed = devices.flatMap((d) => logRecords<{ seccomp: string }>(d.log(), 'seccomp policy installed'));
    assert.ok(installed.length >= 2, devices.map((d) => d.log()).join('\n'));
    assert.ok(installed.every((l) => l.seccomp === 'enforce'));
  });
});

describe('guest userspace over vhost-user: a blk device process killed during fio is replaced and the guest never notices', function () {
  this.timeout(180000);
  let dir: string;
  let device: RunningDevice;
  let r: QemuGuestResult;
  const killed: number[] = [];

  before(async function () {
    dir = mkdtempSync(join(tmpdir(), 'splitvm-vu-kill-'));
    const image = join(dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(64 * MiB));
    device = await startDevice(['blk', '--socket', join(dir, 'blk.sock'), '--disk', image]);
    // Kill the serving device process every second, three times, once the guest's kernel drives
    // the disk (the first start serves the firmware, which lets go of the disk before Linux boots).
    const killer = setInterval(() => {
      const started = servingPids(device, 'blk0');
      if (killed.length >= 3 || started.length < 2) return;
      const pid = started.at(-1);
      if (pid && !killed.includes(pid)) {
        killed.push(pid);
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* already gone */
        }
      }
    }, 1000);
    r = await fioVerify48M(join(dir, 'blk.sock'));
    clearInterval(killer);
  });

  after(async function () {
    await device.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('fio writes and verifies 48 MiB with no error and the guest exits 0', function () {
    assertFioVerified48M(r);
  });

  // Whether a kill catches requests in flight depends on timing (the device is far faster than
  // the emulated guest); test/unit/virtio/inflight.spec.ts proves that path deterministically.
  it('device processes were killed meanwhile, each replaced on the same rings', function () {
    assert.ok(killed.length >= 2, `killed ${killed.length}`);
    const restarts = logRecords(device.log()).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('device blk0 restarted after it died'));
    assert.ok(restarts.length >= 2, device.log().slice(-3000));
  });
});

describe('guest userspace over vhost-user: an operator restarts and pauses the blk device through the control API during fio', function () {
  this.timeout(180000);
  let dir: string;
  let device: RunningDevice;
  let api: string;
  let r: QemuGuestResult;
  const restarted: { status: number; pid: number; before: number }[] = [];
  const states: number[] = [];
  let metricsText = '';

  before(async function () {
    dir = mkdtempSync(join(tmpdir(), 'splitvm-vu-api-'));
    const image = join(dir, 'disk.img');
    writeFileSync(image, Buffer.alloc(64 * MiB));
    api = join(dir, 'api.sock');
    device = await startDevice(['blk', '--socket', join(dir, 'blk.sock'), '--disk', image, '--api-socket', api]);
    // Once the guest's kernel drives the disk (the second device start; the first serves the
    // firmware): restart, pause for a second and resume, restart again, each as soon as the last is done (fio must still be running).
    const steps: (() => Promise<void>)[] = [
      async () => {
        const before = ((await callApi(api, 'GET', '/vm')).json as { devices: { pid: number }[] }).devices[0]!.pid;
        const res = await callApi(api, 'POST', '/devices/blk0/restart');
        restarted.push({ status: res.status, pid: (res.json as { pid: number }).pid, before });
      },
      async () => {
        states.push((await callApi(api, 'PUT', '/vm/state', '{"state":"paused"}')).status);
        await new Promise((res) => setTimeout(res, 1000));
        states.push((await callApi(api, 'PUT', '/vm/state', '{"state":"running"}')).status);
      },
      async () => {
        const before = ((await callApi(api, 'GET', '/vm')).json as { devices: { pid: number }[] }).devices[0]!.pid;
        const res = await callApi(api, 'POST', '/devices/blk0/restart');
        restarted.push({ status: res.status, pid: (res.json as { pid: number }).pid, before });
        metricsText = (await callApi(api, 'GET', '/metrics')).body; // while the frontend is still connected
      },
    ];
    let busy = false;
    const operator = setInterval(() => {
      if (busy || steps.length === 0 || servingPids(device, 'blk0').length < 2) return;
      busy = true;
      void steps.shift()!().finally(() => (busy = false));
    }, 500);
    r = await fioVerify48M(join(dir, 'blk.sock'));
    clearInterval(operator);
  });

  after(async function () {
    await device.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('fio writes and verifies 48 MiB with no error and the guest exits 0', function () {
    assertFioVerified48M(r);
  });

  it('each restart answered 200 with a new device process, paused and resumed with 200, and /metrics counts the restarts', function () {
    assert.equal(restarted.length, 2, `restarts done: ${JSON.stringify(restarted)}; device log:\n${device.log().slice(-3000)}`);
    for (const x of restarted) {
      assert.equal(x.status, 200);
      assert.notEqual(x.pid, x.before, 'a new process serves the queues');
    }
    assert.deepEqual(states, [200, 200]);
    assert.equal(metric(metricsText, 'splitvm_device_restarts_total', { device: 'blk0' }), 2);
    assert.equal(metric(metricsText, 'splitvm_device_up', { device: 'blk0' }), 1);
  });
});

describe('guest userspace over vhost-user: a splitvm net device process with passt', function () {
  this.timeout(180000);
  let dir: string;
  let device: RunningDevice;
  let server: net.Server;
  let received = '';
  let r: QemuGuestResult;

  before(async function () {
    dir = mkdtempSync(join(tmpdir(), 'splitvm-vu-net-'));
    // passt maps the gateway's address to the host's loopback: the guest reaches this server there.
    server = net.createServer((s) =>
      s.on('data', (d) => {
        received += d.toString();
        if (received.endsWith('\n')) s.end('pong from the host\n');
      }),
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    device = await startDevice(['net', '--socket', join(dir, 'net.sock'), '--net', 'user,mac=02:00:00:00:0b:01']);
    r = await runQemuGuest({
      net: { socket: join(dir, 'net.sock'), mac: '02:00:00:00:0b:01' },
      commands:
        'ip link set eth0 up\n' +
        'udhcpc -i eth0 -n -q -t 5 -s /usr/share/udhcpc/default.script\n' +
        'ip -4 addr show dev eth0 | grep inet\n' +
        'gw=$(ip route | awk \'/default/ {print $3}\')\n' +
        // passt (Debian's 2023-03-09) never sends the host's FIN to a guest
        // that half-closed first, as nc does at the end of its input (seen in
        // passt's own --pcap capture of the frames it exchanges with our
        // device): the guest's socket stays in FIN_WAIT2, so nc is ended by timeout.
        `echo "ping from the guest" | timeout 5 nc $gw ${port} || true\n`,
    });
  });

  after(async function () {
    await device.stop();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('the guest boots, runs its commands and exits 0', function () {
    assert.equal(r.exitCode, 0, `${explain(r)}\ndevice log:\n${device.log().slice(-3000)}`);
  });

  it("the guest's DHCP gets the address passt gives: the host's own", function () {
    const route = execFileSync('ip', ['-4', '-o', 'route', 'show', 'default'], { encoding: 'utf8' });
    const dev = /dev (\S+)/.exec(route)![1]!;
    const host = /inet (\d+\.\d+\.\d+\.\d+)/.exec(execFileSync('ip', ['-4', '-o', 'addr', 'show', 'dev', dev], { encoding: 'utf8' }))![1]!;
    assert.match(r.output, new RegExp(`inet ${host.replace(/\./g, '\\.')}/`));
  });

  it("a TCP connection from the guest reaches the host's server, both ways", function () {
    assert.equal(received, 'ping from the guest\n');
    assert.match(r.output, /pong from the host/);
  });

  it('the net device ran jailed under its enforcing policy', function () {
    assert.deepEqual(logRecords<{ seccomp: string }>(device.log(), 'seccomp policy installed').map((l) => l.seccomp).slice(-1), ['enforce']);
  });
});

describe('guest userspace over vhost-user: a net device process killed during a TCP upload is replaced and the upload completes', function () {
  this.timeout(180000);
  const BYTES = 6 * 1024 * 1024;
  let dir: string;
  let device: RunningDevice;
  let server: net.Server;
  let received = 0;
  let wrong = 0;
  let ended = false;
  const killed: number[] = [];
  let r: QemuGuestResult;

  before(async function () {
    dir = mkdtempSync(join(tmpdir(), 'splitvm-vu-netkill-'));
    // The guest sends `yes` (y, newline, again and again); the server counts the bytes and any that break the pattern.
    server = net.createServer((s) => {
      s.on('data', (d: Buffer) => {
        for (let i = 0; i < d.length; i++) if (d[i] !== ((received + i) % 2 === 0 ? 0x79 : 0x0a)) wrong++;
        received += d.length;
      });
      s.on('end', () => {
        ended = true;
        s.end();
      });
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as net.AddressInfo).port;
    device = await startDevice(['net', '--socket', join(dir, 'net.sock'), '--net', 'user,mac=02:00:00:00:0b:02']);
    // Once a quarter of the upload has arrived, kill the serving device process; again at half.
    const killer = setInterval(() => {
      const due = killed.length === 0 ? BYTES / 4 : BYTES / 2;
      if (killed.length >= 2 || received < due) return;
      const pid = servingPids(device, 'net0').at(-1);
      if (pid && !killed.includes(pid)) {
        killed.push(pid);
        process.kill(pid, 'SIGKILL');
      }
    }, 20);
    r = await runQemuGuest({
      net: { socket: join(dir, 'net.sock'), mac: '02:00:00:00:0b:02' },
      timeoutMs: 120000,
      commands:
        'ip link set eth0 up\n' +
        'udhcpc -i eth0 -n -q -t 5 -s /usr/share/udhcpc/default.script >/dev/null\n' +
        'gw=$(ip route | awk \'/default/ {print $3}\')\n' +
        // passt does not pass the host's FIN back after the guest's (see above): timeout ends nc.
        `yes | head -c ${BYTES} | timeout 60 nc $gw ${port} || true\n` +
        'cat /sys/class/net/eth0/operstate\n',
    });
    clearInterval(killer);
  });

  after(async function () {
    await device.stop();
    server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('every byte arrives, in order, and the guest exits 0', function () {
    assert.equal(r.exitCode, 0, `${explain(r)}\ndevice log:\n${device.log().slice(-3000)}`);
    assert.equal(received, BYTES, `received ${received} of ${BYTES}`);
    assert.equal(wrong, 0, 'no byte out of the pattern');
    assert.ok(ended, "the guest's end of the upload arrived");
    assert.match(r.output, /^up$/m, 'the link stayed up');
  });

  it('the net device process was killed twice, each time replaced on the same rings', function () {
    assert.equal(killed.length, 2, `killed ${killed.length}`);
    const restarts = logRecords(device.log()).filter((l) => typeof l.msg === 'string' && l.msg.startsWith('device net0 restarted after it died'));
    assert.equal(restarts.length, 2, device.log().slice(-3000));
  });
});
