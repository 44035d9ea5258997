// Guest tests for virtio-net, the guest kernel's own DHCP client (ip=dhcp)
// as the client, each net device in its own jailed process:
//   user mode: passt answers the DHCP and gives the guest the host's address
//     (passt copies the address of the host's default-route interface);
//   tap mode: in a network namespace the test makes, Debian's dnsmasq on a
//     tap offers an address from its range. In the same boot a second net
//     device's process is killed as soon as it starts: the core logs the
//     death, starts a replacement, and the VM boots on.
import assert from 'node:assert/strict';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { defaultGuest } from '../../src/core/cli.js';
import { defaultMac } from '../../src/core/kinds/net.js';
import { logRecords, runSplitvm, type RunResult } from '../helpers/run-splitvm.js';
import { requireKvm } from '../helpers/kvm.js';

function ipConfig(console_: string): Record<string, string> {
  const m = /IP-Config: Complete:\s+(device=[^\n]*)\n\s+(host=[^\n]*)\n?/.exec(console_) ?? /IP-Config: Complete:\s+(device=[^\n]*)/.exec(console_);
  assert.ok(m, `no "IP-Config: Complete" on the console:\n${console_.slice(-3000)}`);
  const fields: Record<string, string> = {};
  for (const part of m.slice(1).join(',').split(/,\s*/)) {
    const [k, v] = part.trim().split('=');
    if (k && v !== undefined) fields[k] = v;
  }
  return fields;
}

function hostDefaultAddress(): string {
  const route = execFileSync('ip', ['-4', '-o', 'route', 'show', 'default'], { encoding: 'utf8' });
  const dev = /dev (\S+)/.exec(route)?.[1];
  assert.ok(dev, 'the host has a default route (passt needs one)');
  const addr = execFileSync('ip', ['-4', '-o', 'addr', 'show', 'dev', dev], { encoding: 'utf8' });
  return /inet (\d+\.\d+\.\d+\.\d+)/.exec(addr)![1]!;
}

describe('guest: DHCP through virtio-net with passt (--net user)', function () {
  this.timeout(300000);
  before(function () {
    requireKvm(this);
  });
  let r: RunResult;
  before(async function () {
    const guest = defaultGuest();
    r = await runSplitvm(['run', '--kernel', guest.kernel, '--initrd', guest.initrd, '--mem', '96', '--log-level', 'info', '--net', 'user', '--append', 'ip=dhcp'], { timeoutMs: 240000 });
  });

  it('boots and exits 0, its net device under the enforcing policy', function () {
    assert.equal(r.status, 0, `status ${r.status}, stderr:\n${r.stderr.slice(-3000)}\nconsole:\n${r.stdout.slice(-2000)}`);
    assert.deepEqual(logRecords(r.stderr, 'seccomp policy installed').map((l) => [l.device, l.seccomp]), [['net0', 'enforce']]);
  });

  it('the guest kernel gets the address passt offers, on the MAC splitvm chose', function () {
    const c = ipConfig(r.stdout);
    assert.equal(c.device, 'eth0');
    assert.equal(c.ipaddr, hostDefaultAddress());
    assert.equal(c.hwaddr, defaultMac('splitvm', 0));
    assert.match(r.stdout, /IP-Config: Got DHCP answer from/);
  });

  it('stops passt with the VM', function () {
    const started = logRecords<{ passtPid: number }>(r.stderr, 'virtio-net device started')[0];
    assert.ok(started?.passtPid);
    assert.throws(() => process.kill(started.passtPid, 0), /ESRCH/);
  });
});

describe('guest: DHCP from dnsmasq on a tap (--net tap); a killed net device is contained', function () {
  this.timeout(300000);
  before(function () {
    requireKvm(this);
  });
  const ns = `splitvm-net-${process.pid}`;
  let dnsmasq: ChildProcess | undefined;
  let r: RunResult;
  let killedPid = 0;
  const inNs = (...args: string[]) => execFileSync('ip', ['netns', 'exec', ns, ...args], { stdio: 'pipe' });

  before(async function () {
    const guest = defaultGuest();
    execFileSync('ip', ['netns', 'add', ns]);
    for (const tap of ['tap0', 'tap1']) {
      inNs('ip', 'tuntap', 'add', 'dev', tap, 'mode', 'tap');
      inNs('ip', 'link', 'set', tap, 'up');
    }
    inNs('ip', 'addr', 'add', '10.0.2.2/24', 'dev', 'tap0');
    dnsmasq = spawn('ip', ['netns', 'exec', ns, 'dnsmasq', '--keep-in-foreground', '--no-daemon', '--conf-file=/dev/null', '--no-resolv', '--no-hosts',
      '--interface=tap0', '--bind-interfaces', '--port=0', '--dhcp-range=10.0.2.10,10.0.2.50,255.255.255.0,1h', '--dhcp-leasefile=/dev/null'], { stdio: 'ignore' });
    r = await runSplitvm([
      'run', '--kernel', guest.kernel, '--initrd', guest.initrd, '--mem', '96', '--log-level', 'info',
      '--net', 'tap=tap0,mac=02:00:00:00:0a:01', '--net', 'tap=tap1', '--append', 'ip=:::::eth0:dhcp',
    ], {
      wrapper: ['ip', 'netns', 'exec', ns],
      timeoutMs: 240000,
      onStderrLine: (line) => {
        if (!line.includes('"virtio-net device started"')) return;
        const started = JSON.parse(line) as { device: string; pid: number };
        if (started.device === 'net1') {
          killedPid = started.pid;
          process.kill(started.pid, 'SIGKILL');
        }
      },
    });
  });
  after(function () {
    dnsmasq?.kill();
    try {
      execFileSync('ip', ['netns', 'del', ns]);
    } catch {
      /* already gone */
    }
  });

  it('boots and exits 0', function () {
    assert.equal(r.status, 0, `status ${r.status}, stderr:\n${r.stderr.slice(-3000)}\nconsole:\n${r.stdout.slice(-2000)}`);
    assert.match(r.stdout, /Run \/init as init process/);
  });

  it('the guest kernel gets an address from dnsmasq\'s range on the tap', function () {
    const c = ipConfig(r.stdout);
    assert.equal(c.device, 'eth0');
    assert.equal(c.hwaddr, '02:00:00:00:0a:01');
    assert.match(c.ipaddr ?? '', /^10\.0\.2\.(1\d|[2-4]\d|50)$/);
    assert.match(r.stdout, /IP-Config: Got DHCP answer from 10\.0\.2\.2/);
  });

  it('logs the killed device\'s death and replaces it; the VM goes on', function () {
    assert.ok(killedPid > 0);
    const died = logRecords(r.stderr).find((l) => l.msg === 'device net1 died: killed by SIGKILL');
    assert.ok(died, r.stderr.slice(-3000));
    assert.equal(died.pid, killedPid);
    assert.deepEqual(logRecords(r.stderr, 'seccomp policy installed').map((l) => l.device).sort(), ['net0', 'net1', 'net1']);
  });
});
