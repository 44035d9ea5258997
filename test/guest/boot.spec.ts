// Guest test: boots the default guest kernel once under splitvm and checks,
// from what the guest kernel prints on its serial console, everything a
// boot should show: the command line it got, its memory, both CPUs, the
// real time from the CMOS RTC, and reaching /init. On this host guest user
// mode cannot make system calls, so /init dies, the kernel panics, and with
// panic=-1 resets the machine: `splitvm run` must then exit 0.
import assert from 'node:assert/strict';
import { defaultGuest } from '../../src/core/cli.js';
import { isSoftwareKvmHost } from '../../src/core/quirks.js';
import { logRecords, runSplitvm, type RunResult } from '../helpers/run-splitvm.js';
import { requireKvm } from '../helpers/kvm.js';

describe('guest: default kernel boot (2 vCPUs, 96 MiB)', function () {
  this.timeout(300000);
  before(function () {
    requireKvm(this);
  });
  let r: RunResult;
  let startedAt: Date;

  before(async function () {
    defaultGuest(); // builds the kernel on first use, outside the boot's timing
    startedAt = new Date();
    r = await runSplitvm(['run', '--cpus', '2', '--mem', '96', '--log-level', 'info', '--append', 'splitvm.marker=b00t'], { timeoutMs: 240000 });
  });

  it('exits 0 when the guest resets', function () {
    assert.equal(r.status, 0, `status ${r.status}, stderr:\n${r.stderr}\nconsole tail:\n${r.stdout.slice(-2000)}`);
  });

  it('passes the command line to the kernel', function () {
    const line = /Command line: (.*)/.exec(r.stdout)?.[1] ?? '';
    assert.match(line, /console=ttyS0/);
    assert.match(line, /splitvm\.marker=b00t/);
  });

  it('gives the guest the memory asked for', function () {
    const m = /Memory: (\d+)K\/(\d+)K available/.exec(r.stdout);
    assert.ok(m, 'the kernel reports its memory');
    const totalKiB = Number(m[2]);
    // The kernel counts usable RAM: 96 MiB less the low 1 MiB's reserved parts.
    assert.ok(totalKiB > 94 * 1024 && totalKiB <= 96 * 1024, `total ${totalKiB} KiB`);
  });

  it('brings up both vCPUs', function () {
    assert.match(r.stdout, /smp: Brought up 1 node, 2 CPUs/);
  });

  it('reads the real time from the CMOS RTC', function () {
    const m = /setting system clock to (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)/.exec(r.stdout);
    assert.ok(m, 'the RTC driver sets the clock');
    const guest = new Date(`${m[1]}Z`).getTime();
    assert.ok(Math.abs(guest - startedAt.getTime()) < 5 * 60 * 1000, `guest time ${m[1]} vs host ${startedAt.toISOString()}`);
  });

  it('applies the software-KVM quirks exactly when the host needs them', function () {
    const line = /Command line: (.*)/.exec(r.stdout)?.[1] ?? '';
    const stopped = logRecords<{ fixups: number }>(r.stderr, 'guest stopped')[0];
    if (isSoftwareKvmHost()) {
      assert.match(line, /noxsave nofsgsbase nopku noinvpcid clearcpuid=308,141,151/);
      // The kernel's INT3 self-test during alternatives patching, at least.
      assert.ok(stopped?.fixups >= 1, `fixups: ${stopped?.fixups}`);
    } else {
      assert.doesNotMatch(line, /clearcpuid/);
      assert.equal(stopped?.fixups, 0);
    }
  });

  it('reaches /init', function () {
    assert.match(r.stdout, /Run \/init as init process/);
  });
});
