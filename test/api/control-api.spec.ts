// The control API (src/core/api/) served by `splitvm device blk --socket …
// --api-socket …`, steered as an operator would (HTTP on the UNIX socket,
// and `splitvm ctl`), while the harness plays a vhost-user frontend driving
// real I/O through the jailed device: the socket's mode, GET /vm, metrics
// read by a Prometheus parser, pause and resume of the device's queues, a
// restart, every kind of bad request, and a clean stop.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as C from '../../src/devices/blk/constants.js';
import { BlkDriver, VhostUserFrontend } from '../../src/devices/harness/index.js';
import { api, metric, parseMetrics } from '../helpers/api-client.js';
import { assertOneSentence, runSplitvm } from '../helpers/run-splitvm.js';
import { startDevice, type RunningDevice } from '../helpers/splitvm-device.js';

interface VmBody {
  state: string;
  frontend: string;
  devices: { name: string; kind: string; pid: number; state: string; restarts: number; backend: { image: string }; jail: { jailed: boolean; seccomp: string; uid: number } }[];
}

describe('control API: splitvm device blk --api-socket', function () {
  this.timeout(60000);
  let dir: string;
  let image: string;
  let sock: string;
  let dev: RunningDevice;
  let f: VhostUserFrontend;
  let d: BlkDriver;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-api-'));
    image = path.join(dir, 'disk.img');
    fs.writeFileSync(image, Buffer.alloc(4 * 1024 * 1024));
    sock = path.join(dir, 'api.sock');
    dev = await startDevice(['blk', '--socket', path.join(dir, 'blk.sock'), '--disk', image, '--api-socket', sock]);
  });

  after(async () => {
    f?.close();
    await dev.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('creates its socket with mode 0600', () => {
    const st = fs.statSync(sock);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o600);
  });

  it('GET /vm before a frontend connects: running, waiting, no device process', async () => {
    const r = await api(sock, 'GET', '/vm');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /application\/json/);
    const vm = r.json as VmBody;
    assert.equal(vm.state, 'running');
    assert.equal(vm.frontend, 'waiting');
    assert.deepEqual(vm.devices, []);
  });

  it('GET /vm once a frontend drives it: the device, its pid, backend and jail as the host sees them', async () => {
    f = await VhostUserFrontend.connect(path.join(dir, 'blk.sock'));
    d = new BlkDriver(f, f.queues[0]!);
    assert.equal((await d.write(0, new Uint8Array(4096).fill(7))).status, C.VIRTIO_BLK_S_OK);
    const vm = (await api(sock, 'GET', '/vm')).json as VmBody;
    assert.equal(vm.frontend, 'connected');
    assert.equal(vm.devices.length, 1);
    const [blk] = vm.devices;
    assert.equal(blk!.name, 'blk0');
    assert.equal(blk!.kind, 'blk');
    assert.equal(blk!.state, 'running');
    assert.equal(blk!.backend.image, image);
    assert.deepEqual([blk!.jail.jailed, blk!.jail.seccomp], [true, 'enforce']);
    const status = fs.readFileSync(`/proc/${blk!.pid}/status`, 'utf8');
    assert.match(status, /^Seccomp:\s+2$/m, 'the pid is the jailed device process');
    assert.equal(blk!.jail.uid, Number(/^Uid:\s+(\d+)/m.exec(status)![1]));
    // Started as root, the backend runs its device as nobody (--uid/--gid default); otherwise as its caller.
    assert.equal(blk!.jail.uid, process.getuid!() === 0 ? 65534 : process.getuid!());
  });

  it('GET /metrics: Prometheus text with the device\'s requests, bytes, latency histogram and the core\'s memory', async () => {
    const r = await api(sock, 'GET', '/metrics');
    assert.equal(r.status, 200);
    assert.match(String(r.headers['content-type']), /^text\/plain; version=0\.0\.4/);
    const families = parseMetrics(r.body);
    const blk = { device: 'blk0', kind: 'blk' };
    assert.equal(metric(r.body, 'splitvm_device_up', blk), 1);
    assert.ok(metric(r.body, 'splitvm_device_requests_total', blk)! >= 1);
    assert.ok(metric(r.body, 'splitvm_device_bytes_total', { ...blk, direction: 'write' })! >= 4096);
    assert.equal(metric(r.body, 'splitvm_device_in_flight', blk), 0);
    const latency = families.find((x) => x.name === 'splitvm_device_request_duration_seconds')!;
    assert.equal(latency.type, 'HISTOGRAM');
    // (This parser flattens a labelled histogram into its buckets and drops _count and _sum: those are read as text.)
    const buckets = Object.entries(latency.metrics[0]!.buckets!).map(([le, n]) => [Number(le), Number(n)] as const).sort((a, b) => a[0] - b[0]);
    const completions = metric(r.body, 'splitvm_device_completions_total', blk)!;
    assert.equal(buckets.at(-1)![1], completions, 'one observation per completed request');
    assert.ok(buckets.every(([, n], i) => i === 0 || n >= buckets[i - 1]![1]), 'cumulative buckets');
    assert.match(r.body, new RegExp(`^splitvm_device_request_duration_seconds_count\\{device="blk0",kind="blk"\\} ${completions}$`, 'm'));
    assert.match(r.body, /^splitvm_device_request_duration_seconds_sum\{device="blk0",kind="blk"\} [0-9.e-]+$/m);
    assert.ok(metric(r.body, 'splitvm_core_memory_bytes', { type: 'private' })! > 1024 * 1024);
    assert.ok(metric(r.body, 'splitvm_vhost_user_messages_total')! > 5);
  });

  it('PUT /vm/state paused: the device takes no request until resumed, then completes it', async () => {
    const paused = await api(sock, 'PUT', '/vm/state', JSON.stringify({ state: 'paused' }), { 'content-type': 'application/json' });
    assert.equal(paused.status, 200);
    assert.deepEqual(paused.json, { state: 'paused' });
    const q = f.queues[0]!;
    const used = q.usedIdx();
    const { reply } = d.add({ type: C.VIRTIO_BLK_T_IN, sector: 0, inLen: 4096 }, 20000);
    q.kick();
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(q.usedIdx(), used, 'nothing completed while paused');
    assert.equal(((await api(sock, 'GET', '/vm')).json as VmBody).state, 'paused');
    const resumed = await api(sock, 'PUT', '/vm/state', JSON.stringify({ state: 'running' }));
    assert.deepEqual(resumed.json, { state: 'running' });
    const r = await reply;
    assert.equal(r.status, C.VIRTIO_BLK_S_OK);
    assert.deepEqual(r.data, new Uint8Array(4096).fill(7));
  });

  it('POST /devices/blk0/restart: a new device process takes the rings over, and the data is still there', async () => {
    const before = ((await api(sock, 'GET', '/vm')).json as VmBody).devices[0]!;
    const r = await api(sock, 'POST', '/devices/blk0/restart');
    assert.equal(r.status, 200, r.body);
    const after = r.json as VmBody['devices'][number];
    assert.notEqual(after.pid, before.pid, 'a new process');
    assert.equal(after.restarts, before.restarts + 1);
    assert.equal(after.state, 'running');
    const read = await d.read(0, 4096);
    assert.equal(read.status, C.VIRTIO_BLK_S_OK);
    assert.deepEqual(read.data, new Uint8Array(4096).fill(7));
  });

  const bad: [string, string, string | undefined, number, RegExp][] = [
    ['GET', '/nowhere', undefined, 404, /^There is no endpoint \/nowhere\.$/],
    ['DELETE', '/vm', undefined, 405, /^\/vm takes GET, not DELETE\.$/],
    ['PUT', '/vm/state', '{"state":', 400, /is not JSON/],
    ['PUT', '/vm/state', '["paused"]', 400, /must be a JSON object/],
    ['PUT', '/vm/state', '{"state":"asleep"}', 400, /"state" must be "paused" or "running", not "asleep"\.$/],
    ['PUT', '/vm/state', '{"state":"paused","force":true}', 400, /Unknown field "force"/],
    ['PUT', '/vm/state', 'x'.repeat(5000), 413, /larger than 4096 bytes/],
    ['POST', '/devices/disk9/restart', undefined, 404, /^There is no device named "disk9" \(devices: blk0\)\.$/],
    ['POST', '/vm/stop', '{}', 400, /takes no body/],
  ];
  for (const [method, url, body, status, message] of bad) {
    it(`${method} ${url}${body ? ` with ${body.slice(0, 30)}` : ''}: ${status} and one sentence`, async () => {
      const r = await api(sock, method, url, body);
      assert.equal(r.status, status, r.body);
      const { error } = r.json as { error: string };
      assert.match(error, message);
      assert.equal(error.split('\n').length, 1);
      if (status === 405) assert.equal(r.headers.allow, 'GET');
    });
  }

  it('splitvm ctl: info as JSON; a refused request, a bad verb and a missing socket as one sentence each', async () => {
    const info = await runSplitvm(['ctl', sock, 'info']);
    assert.equal(info.status, 0, info.stderr);
    assert.equal((JSON.parse(info.stdout) as VmBody).devices[0]!.name, 'blk0');
    assertOneSentence(await runSplitvm(['ctl', sock, 'restart', 'disk9']), 1, /There is no device named "disk9"/);
    assertOneSentence(await runSplitvm(['ctl', sock, 'fly']), 2, /unknown verb "fly"/);
    assertOneSentence(await runSplitvm(['ctl', path.join(dir, 'none.sock'), 'info']), 1, /cannot reach the control API at .*none\.sock: no such socket/);
    const metrics = await runSplitvm(['ctl', sock, 'metrics']);
    assert.equal(metrics.status, 0);
    assert.ok(metric(metrics.stdout, 'splitvm_device_up', { device: 'blk0' }) === 1);
  });

  it('POST /vm/stop: 202, then the backend shuts its device down and exits 0, removing its sockets', async () => {
    const r = await api(sock, 'POST', '/vm/stop');
    assert.equal(r.status, 202);
    assert.deepEqual(r.json, { state: 'stopping' });
    assert.equal(await dev.stop(), 0);
    assert.ok(!fs.existsSync(sock), 'the API socket is gone');
    assert.ok(!fs.existsSync(path.join(dir, 'blk.sock')), 'the vhost-user socket is gone');
  });
});
