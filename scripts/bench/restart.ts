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
//   npm run bench -- restart [--json]
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { GuestMemory, MiB } from '../../src/core/memory.js';
import { blkKind } from '../../src/core/kinds/blk.js';
import { VirtioDeviceProcess } from '../../src/core/supervisor/device-process.js';
import { GuestMemory as DeviceView } from '../../src/devices/guest-memory.js';
import { DriverQueue } from '../../src/devices/harness/index.js';
import { DriverMemory } from '../../src/devices/harness/harness.js';
import * as C from '../../src/devices/blk/constants.js';
import { BenchError, cleanupSync, jsonRequested, makeTempDir, median, printJson, printTable, removeTempDir, round, say, type Figures } from './lib.js';

export const title = 'a blk device process restarted under load: death to served, and requests per second through restarts';

const here = fileURLToPath(import.meta.url);
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

async function startRig(dir: string): Promise<Rig> {
  const image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, Buffer.alloc(IMAGE_BYTES, 0x5a));
  const memory = GuestMemory.create(32 * MiB);
  const backend = await blkKind.open({ path: image, readOnly: false }, { index: 0, vmName: 'bench', log: pino({ level: 'silent' }) });
  const dev = await VirtioDeviceProcess.start({
    name: 'blk0', kind: 'blk', numQueues: 1, backendFd: backend.fd, options: backend.options, fileSizeLimit: backend.fileSizeLimit,
    memory, jail: true, seccomp: 'enforce', logLevel: 'error', log: pino({ level: 'silent' }), writeLog: () => {}, replacement: 'resume',
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

export async function run(): Promise<Figures> {
  const dir = makeTempDir('splitvm-bench-restart-');
  let rig: Rig | null = null;
  try {
    rig = await startRig(dir);
    const r = rig;
    let stop = false;
    const running = load(r, () => stop);
    await sleep(500);
    const deaths: number[] = [];
    for (let i = 0; i < 5; i++) {
      deaths.push(await timeToServed(r, 'kill'));
      await sleep(300);
    }
    // The restart budget counts deaths in a minute; the operator's restarts are not counted.
    const requested: number[] = [];
    for (let i = 0; i < 3; i++) {
      requested.push(await timeToServed(r, 'restart'));
      await sleep(300);
    }
    const windowRate = async (kills: boolean): Promise<number> => {
      const start = performance.now();
      const before = r.completions.length;
      let next = start + 1500;
      while (performance.now() - start < 6000) {
        if (kills && performance.now() >= next) {
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
    const windowRestarts = r.dev.restarts - restartsBefore;
    const steady = median(steadyRates);
    const through = median(throughRates);
    stop = true;
    await running;
    if (r.errors > 0) throw new BenchError(`${r.errors} requests failed across the restarts`);

    printTable(
      ['case', 'median', 'min', 'max'],
      [
        ['death (SIGKILL) → first completion from the successor, ms', round(median(deaths), 1)!, round(Math.min(...deaths), 1)!, round(Math.max(...deaths), 1)!],
        ['operator restart → first completion after it, ms', round(median(requested), 1)!, round(Math.min(...requested), 1)!, round(Math.max(...requested), 1)!],
      ],
    );
    say();
    printTable(
      ['4 KiB random reads, depth 8, 6 s', 'requests/s'],
      [
        ['no restart', Math.round(steady)],
        [`a restart every 1.5 s (${windowRestarts} in all)`, Math.round(through)],
        ['ratio', round(through / steady, 2)!],
      ],
    );
    say(`(no request failed or was lost: ${r.completions.length} completions, 0 errors)`);
    return {
      deathToServedMs: round(median(deaths), 1), deathToServedMaxMs: round(Math.max(...deaths), 1), restartToServedMs: round(median(requested), 1),
      rpsSteady: Math.round(steady), rpsThroughRestarts: Math.round(through), ratio: round(through / steady, 3),
    };
  } finally {
    await rig?.stop();
    removeTempDir(dir);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === here) {
  try {
    const figures = await run();
    if (jsonRequested()) printJson(new Map([['restart', figures]]));
  } catch (e) {
    process.stderr.write(`bench restart: ${e instanceof BenchError ? e.message : ((e as Error).stack ?? String(e))}\n`);
    process.exitCode = 1;
  } finally {
    cleanupSync();
  }
}
