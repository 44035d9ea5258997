// scripts/bench/restart.ts — owns the device-restart benchmark: a real
// jailed blk device process under the core's supervisor (replacement
// 'resume', as `splitvm run` uses it) serving 4 KiB reads at depth 8 from
// the harness, which plays the guest's driver and polls the used ring.
//   death → served: the device process is killed (SIGKILL) and the time is
//     taken until the first request completes from its successor (which
//     took the queue over from the in-flight record). Five deaths.
//   operator restart: the same through VirtioDeviceProcess.restart() (what
//     POST /devices/NAME/restart runs), to the first completion after it.
//   through restarts: requests per second over 6 s with an operator restart
//     every 1.5 s, against 6 s without, alternated twice in one run.
// Each first as `splitvm run` does by default (the new process is started
// at the death), then with a spare process waiting (--spare-devices).
//   npm run bench -- restart [--json]
import fs from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { GuestMemory, MiB } from '../../src/core/memory.js';
import { blkKind } from '../../src/core/kinds/blk.js';
import { VirtioDeviceProcess } from '../../src/core/supervisor/device-process.js';
import { GuestMemory as DeviceView } from '../../src/devices/guest-memory.js';
import { DriverQueue } from '../../src/devices/harness/index.js';
import { DriverMemory } from '../../src/devices/harness/harness.js';
import * as C from '../../src/devices/blk/constants.js';
import { BenchError, isMain, makeTempDir, median, printTable, removeTempDir, round, runStandalone, say, type Figures } from './lib.js';

export const title = 'a blk device process restarted under load: death to served, and requests per second through restarts';

const IMAGE_BYTES = 64 * MiB;
const DEPTH = 8;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Rig {
  dev: VirtioDeviceProcess;
  dm: DriverMemory;
  q: DriverQueue;
  /** performance.now() of every completion, in order. */
  completions: number[];
  errors: number;
  stop(): Promise<void>;
}

async function startRig(dir: string, spare: boolean): Promise<Rig> {
  const image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, Buffer.alloc(IMAGE_BYTES, 0x5a));
  const memory = GuestMemory.create(32 * MiB);
  const backend = await blkKind.open({ path: image, readOnly: false }, { index: 0, vmName: 'bench', log: pino({ level: 'silent' }) });
  const dev = await VirtioDeviceProcess.start({
    name: 'blk0', kind: 'blk', numQueues: 1, backendFd: backend.fd, options: backend.options, fileSizeLimit: backend.fileSizeLimit,
    memory, jail: true, seccomp: 'enforce', logLevel: 'error', log: pino({ level: 'silent' }), writeLog: () => {}, replacement: 'resume', spare,
  });
  const view = DeviceView.map(memory.fd, memory.regions);
  const dm = new DriverMemory(view, [{ gpa: 0, size: 16 * MiB, offset: 0 }, { gpa: 16 * MiB, size: 16 * MiB, offset: 16 * MiB }]);
  const q = new DriverQueue(view, 0, 128, dm.allocRings(128), (len, align) => dm.alloc(len, align), dev.kickFds[0], dev.callFds[0]);
  dev.activate(dev.hello.deviceFeatures, [{ index: 0, size: 128, ...q.addrs }]);
  const rig: Rig = { dev, dm, q, completions: [], errors: 0, stop: () => dev.shutdown() };
  return rig;
}

/** Keeps DEPTH random 4 KiB reads in flight until `until()` says stop; each worker reuses its own buffers. */
async function load(rig: Rig, until: () => boolean): Promise<void> {
  const { dm, q } = rig;
  const worker = async () => {
    const hdr = dm.alloc(16, 16);
    const data = dm.alloc(4096, 4096);
    const status = dm.alloc(1, 1);
    while (!until()) {
      const header = dm.mem.dataView(hdr, 16);
      header.setUint32(0, C.VIRTIO_BLK_T_IN, true);
      header.setUint32(4, 0, true);
      header.setBigUint64(8, BigInt(Math.floor(Math.random() * (IMAGE_BYTES / 4096)) * 8), true);
      const head = q.add([{ addr: hdr, len: 16, write: false }, { addr: data, len: 4096, write: true }, { addr: status, len: 1, write: true }]);
      q.publish();
      q.kick();
      await q.waitFor(head, 30_000);
      if (dm.mem.slice(status, 1)[0] !== C.VIRTIO_BLK_S_OK) rig.errors++;
      rig.completions.push(performance.now());
    }
  };
  await Promise.all(Array.from({ length: DEPTH }, worker));
}

/** Kills (or restarts) the device and returns the ms until a request completes from its successor. */
async function timeToServed(rig: Rig, how: 'kill' | 'restart'): Promise<number> {
  const pid = rig.dev.pid;
  const t0 = performance.now();
  if (how === 'kill') process.kill(pid, 'SIGKILL');
  else await rig.dev.restart();
  const deadline = t0 + 10_000;
  while (rig.dev.pid === pid) {
    if (performance.now() > deadline) throw new BenchError('no successor device process within 10 s');
    await sleep(1);
  }
  const seen = rig.completions.length;
  while (rig.completions.length === seen) {
    if (performance.now() > deadline) throw new BenchError('the successor served nothing within 10 s');
    await new Promise((r) => setImmediate(r));
  }
  return rig.completions[seen]! - t0;
}

interface Measured {
  deaths: number[];
  requested: number[];
  steady: number;
  through: number;
  windowRestarts: number;
  completions: number;
}

/** Waits until a spare process is ready (a death right after another must not race the spare's own start). */
async function spareReady(r: Rig): Promise<void> {
  for (let i = 0; r.dev.info().spare === null; i++) {
    if (i > 1000) throw new BenchError('no spare device process within 10 s');
    await sleep(10);
  }
}

async function measure(dir: string, spare: boolean): Promise<Measured> {
  const r = await startRig(dir, spare);
  try {
    let stop = false;
    const running = load(r, () => stop);
    await sleep(500);
    const settle = async () => (spare ? spareReady(r) : sleep(300));
    const deaths: number[] = [];
    for (let i = 0; i < 5; i++) {
      await settle();
      deaths.push(await timeToServed(r, 'kill'));
    }
    // The restart budget counts deaths in a minute; the operator's restarts are not counted.
    const requested: number[] = [];
    for (let i = 0; i < 3; i++) {
      await settle();
      requested.push(await timeToServed(r, 'restart'));
    }
    const windowRate = async (restarts: boolean): Promise<number> => {
      const start = performance.now();
      const before = r.completions.length;
      let next = start + 1500;
      while (performance.now() - start < 6000) {
        if (restarts && performance.now() >= next) {
          await r.dev.restart();
          next += 1500;
        }
        await sleep(20);
      }
      return (r.completions.length - before) / ((performance.now() - start) / 1000);
    };
    // Alternated, twice each: other load on the host then falls on both alike.
    const steadyRates: number[] = [];
    const throughRates: number[] = [];
    const restartsBefore = r.dev.restarts;
    for (let i = 0; i < 2; i++) {
      steadyRates.push(await windowRate(false));
      throughRates.push(await windowRate(true));
    }
    stop = true;
    await running;
    if (r.errors > 0) throw new BenchError(`${r.errors} requests failed across the restarts`);
    return { deaths, requested, steady: median(steadyRates), through: median(throughRates), windowRestarts: r.dev.restarts - restartsBefore, completions: r.completions.length };
  } finally {
    await r.stop();
  }
}

export async function run(): Promise<Figures> {
  const dir = makeTempDir('splitvm-bench-restart-');
  try {
    const plain = await measure(dir, false);
    const spared = await measure(dir, true);
    const stats = (xs: number[]) => [round(median(xs), 1)!, round(Math.min(...xs), 1)!, round(Math.max(...xs), 1)!];
    printTable(
      ['ms, until a request completes from the new process', 'median', 'min', 'max'],
      [
        ['death (SIGKILL), a process started then', ...stats(plain.deaths)],
        ['death (SIGKILL), the spare takes over (--spare-devices)', ...stats(spared.deaths)],
        ['operator restart, a process started then', ...stats(plain.requested)],
        ['operator restart, the spare takes over', ...stats(spared.requested)],
      ],
    );
    say();
    printTable(
      ['4 KiB random reads, depth 8, 6 s windows', 'requests/s', 'ratio'],
      [
        ['no restart', Math.round(plain.steady), 1],
        [`a restart every 1.5 s (${plain.windowRestarts} in all)`, Math.round(plain.through), round(plain.through / plain.steady, 2)!],
        ['no restart, with a spare', Math.round(spared.steady), 1],
        [`a restart every 1.5 s, the spare taking over (${spared.windowRestarts})`, Math.round(spared.through), round(spared.through / spared.steady, 2)!],
      ],
    );
    say(`(no request failed or was lost: ${plain.completions + spared.completions} completions, 0 errors)`);
    return {
      deathToServedMs: round(median(plain.deaths), 1), deathToServedMaxMs: round(Math.max(...plain.deaths), 1), restartToServedMs: round(median(plain.requested), 1),
      spareDeathToServedMs: round(median(spared.deaths), 1), spareDeathToServedMaxMs: round(Math.max(...spared.deaths), 1),
      rpsSteady: Math.round(plain.steady), rpsThroughRestarts: Math.round(plain.through), ratio: round(plain.through / plain.steady, 3),
      ratioWithSpare: round(spared.through / spared.steady, 3),
    };
  } finally {
    removeTempDir(dir);
  }
}

if (isMain(import.meta.url)) await runStandalone('restart', run);
