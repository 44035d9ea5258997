// Guest test of the control API on `splitvm run --api-socket`: while the
// built-in guest boots with a disk (the core sealed, its vCPU thread under
// its own filter too), an operator reads GET /vm, pauses the VM
// (the console and every vCPU's exit counts stand still), resumes it (the
// console goes on), restarts the disk's device process, reads the vCPU
// exits in /metrics, and stops the VM with POST /vm/stop (exit status 0).
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defaultGuest } from '../../src/core/cli.js';
import { api, metric, parseMetrics } from '../helpers/api-client.js';
import { requireKvm } from '../helpers/kvm.js';
import { SPLITVM } from '../helpers/run-splitvm.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The sum of every vCPU's exits in a /metrics text. */
function totalExits(text: string): number {
  const family = parseMetrics(text).find((f) => f.name === 'splitvm_vcpu_exits_total');
  return (family?.metrics ?? []).reduce((n, m) => n + Number(m.value), 0);
}

describe('guest: the control API of splitvm run', function () {
  this.timeout(300000);
  before(function () {
    requireKvm(this);
  });

  it('GET /vm, pause (console and vCPUs stand still), resume, restart a device, metrics, then POST /vm/stop ends the VM with 0', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'splitvm-api-guest-'));
    const sock = join(dir, 'api.sock');
    const disk = join(dir, 'data.img');
    writeFileSync(disk, Buffer.alloc(1024 * 1024));
    const guest = defaultGuest();
    const vm = spawn(process.execPath, [SPLITVM, 'run', '--kernel', guest.kernel, '--initrd', guest.initrd, '--mem', '96', '--disk', disk, '--api-socket', sock, '--log-level', 'info'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let consoleText = '';
    let log = '';
    vm.stdout!.on('data', (d: Buffer) => (consoleText += d.toString()));
    vm.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    const exited = new Promise<number | null>((resolve) => vm.once('exit', (code) => resolve(code)));
    try {
      for (let i = 0; !consoleText.includes('Linux version') || !log.includes('"virtio-blk device started"'); i++) {
        assert.ok(i < 1200 && vm.exitCode === null, `the guest did not start printing:\n${consoleText}\n${log.slice(-2000)}`);
        await sleep(100);
      }
      assert.equal(statSync(sock).mode & 0o777, 0o600);

      const info = (await api(sock, 'GET', '/vm')).json as { state: string; vcpus: number; memoryMiB: number; devices: { name: string; pid: number; state: string }[] };
      assert.equal(info.state, 'running');
      assert.equal(info.vcpus, 1);
      assert.equal(info.memoryMiB, 96);
      assert.deepEqual(info.devices.map((d) => [d.name, d.state]), [['blk0', 'running']]);
      // The core runs sealed: every thread under core.policy, the one vCPU thread under its own filter as well.
      const filters = readdirSync(`/proc/${vm.pid}/task`).map((tid) => {
        const status = readFileSync(`/proc/${vm.pid}/task/${tid}/status`, 'utf8');
        assert.match(status, /^Seccomp:\s+2$/m, `thread ${tid}`);
        return Number(/^Seccomp_filters:\s+(\d+)$/m.exec(status)![1]);
      });
      assert.deepEqual(filters.filter((n) => n === 2).length, 1, `filters per thread: ${filters}`);

      assert.equal((await api(sock, 'PUT', '/vm/state', '{"state":"paused"}')).status, 200);
      const heldConsole = consoleText.length;
      const heldExits = totalExits((await api(sock, 'GET', '/metrics')).body);
      assert.ok(heldExits > 0, 'the vCPU counted its exits');
      await sleep(3000);
      assert.equal(consoleText.length, heldConsole, 'no console output while paused');
      const metricsPaused = (await api(sock, 'GET', '/metrics')).body;
      assert.equal(totalExits(metricsPaused), heldExits, 'no vCPU exit while paused');
      assert.equal(metric(metricsPaused, 'splitvm_vm_paused'), 1);
      assert.equal(((await api(sock, 'GET', '/vm')).json as { state: string }).state, 'paused');

      assert.equal((await api(sock, 'PUT', '/vm/state', '{"state":"running"}')).status, 200);
      const restarted = await api(sock, 'POST', '/devices/blk0/restart');
      assert.equal(restarted.status, 200, restarted.body);
      assert.notEqual((restarted.json as { pid: number }).pid, info.devices[0]!.pid, 'a new device process');
      for (let i = 0; consoleText.length === heldConsole && vm.exitCode === null; i++) {
        assert.ok(i < 600, 'the console went on after resume');
        await sleep(100);
      }

      const stop = await api(sock, 'POST', '/vm/stop');
      assert.equal(stop.status, 202);
      assert.equal(await exited, 0, log.slice(-3000));
      assert.match(log, /"machine stopped"/);
    } finally {
      if (vm.exitCode === null) vm.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
