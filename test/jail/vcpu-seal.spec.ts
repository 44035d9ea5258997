// A vCPU thread's own filter (src/core/vcpu/thread-seal.ts, policies/vcpu.policy),
// stacked on the core's: the probe seals itself as the core does, then its
// vCPU-like thread seals itself as a vCPU thread does and runs as the run
// loop does (its KVM_RUN request, exits through the exit channel, kick
// signals, messages, garbage) and ends. The thread carries two filters and
// every other thread one; a call the core may make but a vCPU thread may
// not kills the process with SIGSYS when the vCPU thread makes it, and not
// when the main thread does; so does its own run request on another fd than
// its vCPU's; a SIGTERM sent to the thread itself waits, blocked, instead of
// running Node's handler under the thread's filter. (The real vCPU loop
// needs /dev/kvm; this host may have none, so the thread is a stand-in
// running the same seal code, an eventfd standing for its vCPU's fd.)
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as libc from '../../src/sys/libc.js';

const PROBE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'vcpu-probe.ts');

interface ProbeRun { stdout: string; signal: NodeJS.Signals | null; status: number | null; filters: Map<number, number>; vcpu: number; main: number }

/** Runs the probe until its thread runs sealed, reads each thread's filter count, then lets it make `call`. */
async function probe(call: string, signalThread?: NodeJS.Signals): Promise<ProbeRun> {
  const child = spawn(process.execPath, ['--import', 'tsx', PROBE, call], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stdout += d.toString()));
  const ended = new Promise<[number | null, NodeJS.Signals | null]>((resolve) => child.on('exit', (code, sig) => resolve([code, sig])));
  for (let i = 0; !/^running /m.test(stdout) && i < 600 && child.exitCode === null && child.signalCode === null; i++) await new Promise((r) => setTimeout(r, 100));
  const m = /^running pid=(\d+) vcpu=(\d+) main=(\d+)$/m.exec(stdout);
  if (!m) {
    child.kill('SIGKILL');
    await ended;
    throw new Error(`the probe did not run: ${stdout}`);
  }
  const filters = new Map<number, number>();
  for (const tid of fs.readdirSync(`/proc/${m[1]}/task`)) {
    const n = /^Seccomp_filters:\s+(\d+)$/m.exec(fs.readFileSync(`/proc/${m[1]}/task/${tid}/status`, 'utf8'));
    filters.set(Number(tid), Number(n![1]));
  }
  if (signalThread) libc.tgkill(Number(m[1]), Number(m[2]), os.constants.signals[signalThread]);
  child.kill('SIGHUP');
  const [status, signal] = await ended;
  return { stdout, signal, status, filters, vcpu: Number(m[2]), main: Number(m[3]) };
}

describe('vCPU thread seal: the filter each vCPU thread stacks on the core’s', function () {
  this.timeout(60000);

  it('the vCPU thread carries two filters, every other thread one, and it runs and ends under them', async () => {
    const r = await probe('none');
    assert.equal(r.filters.get(r.vcpu), 2, `vCPU thread: ${[...r.filters]}`);
    for (const [tid, n] of r.filters) if (tid !== r.vcpu) assert.equal(n, 1, `thread ${tid}`);
    assert.ok(r.filters.size > 3);
    assert.equal(r.status, 0, r.stdout);
    assert.match(r.stdout, /^survived exit=0 messages=\d+$/m);
  });

  it('the main thread still makes a call the core allows and the vCPU thread may not (memfd_create)', async () => {
    const r = await probe('main-memfd');
    assert.equal(r.status, 0, r.stdout);
    assert.match(r.stdout, /^survived /m);
  });

  it('a SIGTERM sent to the vCPU thread itself waits, blocked there, and the process goes on and ends normally', async () => {
    const r = await probe('none', 'SIGTERM');
    assert.equal(r.signal, null, `killed by ${r.signal}: ${r.stdout}`);
    assert.equal(r.status, 0, r.stdout);
    assert.match(r.stdout, /^survived /m);
  });

  for (const call of ['memfd', 'ioctl-irqfd', 'eventfd', 'run-other-fd']) {
    it(`${call} from the vCPU thread kills the process with SIGSYS`, async () => {
      const r = await probe(call);
      assert.equal(r.signal, 'SIGSYS', `status ${r.status}, output ${r.stdout}`);
      assert.doesNotMatch(r.stdout, /survived/);
    });
  }
});
