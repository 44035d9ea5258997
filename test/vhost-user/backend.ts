// What the vhost-user tests share: a fresh `splitvm device blk --socket` on
// a scratch image, and the check that a backend still serves a
// well-behaved frontend correctly (a write and a read through BlkDriver, the
// data seen in the image) from a device process that runs under its
// enforcing seccomp policy.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { BlkDriver, VhostUserFrontend, type FrontendOptions } from '../../src/devices/harness/index.js';
import { logRecords } from '../helpers/run-splitvm.js';
import { startDevice, type RunningDevice } from '../helpers/splitvm-device.js';

export const IMAGE_BYTES = 4 * 1024 * 1024;

export interface Backend {
  dev: RunningDevice;
  dir: string;
  image: string;
  socket: string;
  /** Stops the backend and removes its files. */
  stop(): Promise<void>;
}

export function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 31 + seed) & 0xff;
  return b;
}

/** A fresh backend serving a 4 MiB image of pattern(…, 1). */
export async function startBlkBackend(extra = ''): Promise<Backend> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-vu-'));
  const image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, pattern(IMAGE_BYTES, 1));
  const socket = path.join(dir, 'blk.sock');
  const dev = await startDevice(['blk', '--socket', socket, '--disk', `${image}${extra}`]);
  return {
    dev, dir, image, socket,
    async stop() {
      await dev.stop();
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** How many log records with message `msg` the backend wrote so far. */
export const countLog = (b: Backend, msg: string): number => logRecords(b.dev.log(), msg).length;

/** Waits until the backend has logged `msg` more than `after` times. */
export async function waitForLog(b: Backend, msg: string, after: number, timeoutMs = 10000): Promise<Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const recs = logRecords(b.dev.log(), msg);
    if (recs.length > after) return recs[recs.length - 1]!;
    if (Date.now() > deadline) throw new Error(`no new "${msg}" from the backend within ${timeoutMs} ms; log:\n${b.dev.log().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The backend process still runs. */
export function assertAlive(b: Backend): void {
  assert.equal(b.dev.proc.exitCode, null, `the backend exited; log:\n${b.dev.log().slice(-3000)}`);
  assert.equal(b.dev.proc.signalCode, null, `the backend was killed; log:\n${b.dev.log().slice(-3000)}`);
}

/**
 * A well-behaved setup on `f` (negotiated already when `negotiated`), or on
 * a new connection when `f` is absent; then a write and a read at a sector
 * of its own, checked in the image, from a device process that runs jailed
 * under its enforcing policy. Closes the frontend.
 */
export async function assertServes(b: Backend, f?: VhostUserFrontend, opts: { negotiated?: boolean; seed?: number } & FrontendOptions = {}): Promise<void> {
  assertAlive(b);
  const starts = countLog(b, 'device started for the vhost-user frontend');
  const policies = logRecords(b.dev.log(), 'seccomp policy installed').length;
  let front = f;
  try {
    if (!front) front = await VhostUserFrontend.connect(b.socket, opts);
    else {
      if (!opts.negotiated) await front.negotiate();
      await front.start();
    }
    const d = new BlkDriver(front, front.queues[0]!);
    const seed = opts.seed ?? 77;
    const sector = 64 + seed;
    const data = pattern(8192, seed);
    assert.equal((await d.write(sector, data)).status, 0, 'the write failed');
    const r = await d.read(sector, data.length);
    assert.equal(r.status, 0, 'the read failed');
    assert.deepEqual(r.data, data, 'the read returned other data than written');
    const onDisk = Buffer.alloc(data.length);
    const fd = fs.openSync(b.image, 'r');
    fs.readSync(fd, onDisk, 0, data.length, sector * 512);
    fs.closeSync(fd);
    assert.deepEqual(new Uint8Array(onDisk), data, 'the image does not hold what was written');
    await assertJailed(b, starts, policies);
  } finally {
    front?.close();
  }
  assertAlive(b);
}

/** The device process started after `starts` starts runs under seccomp filter mode, having logged its enforcing policy. */
export async function assertJailed(b: Backend, starts: number, policies: number): Promise<void> {
  const started = await waitForLog(b, 'device started for the vhost-user frontend', starts);
  const pid = started.pid as number;
  const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8');
  assert.match(status, /^Seccomp:\s+2$/m, `device process ${pid} does not run under a seccomp filter`);
  // Its log comes through a relay pipe: the line may come after the I/O.
  let installed = logRecords<{ seccomp: string }>(b.dev.log(), 'seccomp policy installed');
  for (let i = 0; installed.length <= policies && i < 100; i++) {
    await new Promise((r) => setTimeout(r, 50));
    installed = logRecords<{ seccomp: string }>(b.dev.log(), 'seccomp policy installed');
  }
  assert.ok(installed.length > policies, 'the device process did not log its seccomp policy');
  assert.equal(installed[installed.length - 1]!.seccomp, 'enforce');
}
