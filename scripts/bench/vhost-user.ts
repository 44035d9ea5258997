// scripts/bench/vhost-user.ts — owns the vhost-user blk benchmark: the
// harness as a vhost-user frontend (VhostUserFrontend) drives our jailed,
// seccomp-enforcing blk device (`splitvm device blk --socket`) and
// qemu-storage-daemon's vhost-user-blk export, both on the same 256 MiB
// image in /dev/shm (pre-filled, so reads hit the page cache), with the same
// driver loop: EVENT_IDX kick suppression, used_event set before it sleeps
// on the call eventfd. Cases: 4 KiB random read at queue depth 1 and 32, 1
// MiB sequential read at depth 1 and 32; ROUNDS rounds each, the two
// backends alternating, median printed with the ratio splitvm / qsd (goal:
// ≥ 0.8 at QD32).
//
// A second line runs fio in a QEMU TCG guest (test/helpers/qemu-guest.ts)
// against each backend in turn on the same image, GUEST_ROUNDS boots each,
// alternating: 4 KiB random read at iodepth 1 and 32, libaio, --direct=1,
// GUEST_SECONDS s a job, median IOPS printed with the ratio. Each guest
// request goes through TCG-emulated guest code and QEMU's vhost-user
// frontend before it reaches the backend, so the absolute IOPS measure the
// emulation as much as the backend: the ratio is the figure to read. With
// --json the last line is one JSON object (index.ts); the guest cases are in its `results` too,
// with "via":"qemu-tcg-guest".
//
//   npm run bench -- vhost-user
import fs from 'node:fs';
import path from 'node:path';
import { runLoad, type Slot } from './blk/load.js';
import { MiB, VhostUserFrontend, type DriverQueue } from '../../src/devices/harness/index.js';
import * as libc from '../../src/sys/libc.js';
import { which } from '../../src/sys/paths.js';
import { runQemuGuest } from '../../test/helpers/qemu-guest.js';
import { BenchError, ensureQemu, median, printTable, say, spawnTracked, splitvmBin, killChild, type Figures } from './lib.js';

export const title = 'vhost-user blk: the harness frontend driving splitvm device blk and qemu-storage-daemon side by side';

const IMAGE_BYTES = 256 * MiB;
const SECONDS = Number(process.env.VU_BENCH_SECONDS ?? 3);
const ROUNDS = 5;
const ROUND_MS = (SECONDS * 1000) / ROUNDS;
const WARMUP_MS = 300;
const MAX_DEPTH = 32;
const GUEST_ROUNDS = 3;
const GUEST_SECONDS = 5;

interface Case {
  name: string;
  bs: number;
  depth: number;
  random: boolean;
}
const CASES: Case[] = [
  { name: '4k-randread qd1', bs: 4096, depth: 1, random: true },
  { name: '4k-randread qd32', bs: 4096, depth: 32, random: true },
  { name: '1m-seqread qd1', bs: MiB, depth: 1, random: false },
  { name: '1m-seqread qd32', bs: MiB, depth: 32, random: false },
];

interface Backend {
  name: string;
  f: VhostUserFrontend;
  q: DriverQueue;
  slots: Slot[];
}

/** Keeps `c.depth` reads in flight for `ms`, then lets them finish; returns requests per second. */
async function drive(b: Backend, c: Case, ms: number): Promise<number> {
  const r = await runLoad(b.f.mem, b.q, b.slots, { ...c, op: 'read' }, ms, { imageBytes: IMAGE_BYTES, completion: 'irq' });
  if (r.errors > 0) throw new BenchError(`${b.name}: a ${c.name} request failed`);
  return r.ops / r.seconds;
}

async function waitForSocket(socket: string, what: string, exited: () => boolean): Promise<void> {
  for (const deadline = Date.now() + 20000; !fs.existsSync(socket); ) {
    if (exited() || Date.now() > deadline) throw new BenchError(`${what} did not listen on ${socket}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

interface Daemons {
  /** The sockets of splitvm device blk and qemu-storage-daemon, by backend name. */
  sockets: { splitvm: string; qsd: string };
  stop: () => Promise<void>;
}

/** Starts splitvm device blk and qemu-storage-daemon on `image`, each listening on a socket in `dir`. */
async function startDaemons(dir: string, image: string): Promise<Daemons> {
  const ours = path.join(dir, 'splitvm.sock');
  const dev = spawnTracked(process.execPath, [splitvmBin, 'device', 'blk', '--socket', ours, '--disk', image, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitForSocket(ours, 'splitvm device blk', () => dev.exitCode !== null);
  const theirs = path.join(dir, 'qsd.sock');
  const qsd = spawnTracked('qemu-storage-daemon', ['--blockdev', `driver=file,node-name=f0,filename=${image}`, '--blockdev', 'driver=raw,node-name=d0,file=f0',
    '--export', `type=vhost-user-blk,id=e0,node-name=d0,addr.type=unix,addr.path=${theirs},writable=on`], { stdio: ['ignore', 'ignore', 'inherit'] });
  await waitForSocket(theirs, 'qemu-storage-daemon', () => qsd.exitCode !== null);
  return { sockets: { splitvm: ours, qsd: theirs }, stop: async () => void (await Promise.all([killChild(dev), killChild(qsd)])) };
}

async function frontend(name: string, socket: string): Promise<Backend> {
  const f = await VhostUserFrontend.connect(socket, { memSize: 128 * MiB, queueSize: 256 });
  const q = f.queues[0]!;
  libc.setBlocking(q.callFd); // the driver sleeps in a pool read on it
  const slots = Array.from({ length: MAX_DEPTH }, () => ({ hdr: f.alloc(16), data: f.alloc(MiB, 4096), status: f.alloc(1) }));
  return { name, f, q, slots };
}

const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const figure = (c: Case, rate: number): string => (c.bs === 4096 ? `${fmt(rate)} IOPS` : `${fmt((rate * c.bs) / MiB)} MiB/s`);

interface Result {
  splitvm: number;
  qsd: number;
  ratio: number;
  /** Set on the guest line's cases, with their own job length and rounds. */
  via?: 'qemu-tcg-guest';
  seconds?: number;
  rounds?: number;
}

const GUEST_CASES = [
  { name: '4k-randread qd1', job: 'qd1', depth: 1 },
  { name: '4k-randread qd32', job: 'qd32', depth: 32 },
];
const FIO_COMMANDS =
  `fio --filename=/dev/vda --rw=randread --bs=4k --ioengine=libaio --direct=1 --time_based --runtime=${GUEST_SECONDS} --ramp_time=1` +
  ` --output-format=json --output=/tmp/fio.json ${GUEST_CASES.map((c) => `--name=${c.job} --iodepth=${c.depth} --stonewall`).join(' ')}\n` +
  'cat /tmp/fio.json\n';

interface FioJob {
  jobname: string;
  error: number;
  read: { iops: number };
}

/** Boots the TCG guest against `socket`, runs the fio jobs and returns their read IOPS by job name. */
async function guestRound(backend: string, socket: string): Promise<Map<string, number>> {
  const r = await runQemuGuest({ commands: FIO_COMMANDS, blk: { socket }, withFio: true, timeoutMs: 180_000 });
  const what = `fio in the TCG guest against ${backend}`;
  const tail = (r.output || r.console).trim().split('\n').slice(-3).join(' | ');
  if (r.exitCode !== 0) throw new BenchError(`${what}: ${r.timedOut ? 'timed out' : `exit status ${r.exitCode ?? 'missing'}`} (${tail || r.stderr.trim()})`);
  let jobs: FioJob[];
  try {
    jobs = (JSON.parse(r.output.slice(r.output.indexOf('{'), r.output.lastIndexOf('}') + 1)) as { jobs: FioJob[] }).jobs;
  } catch {
    throw new BenchError(`${what}: no JSON report (${tail})`);
  }
  const iops = new Map<string, number>();
  for (const c of GUEST_CASES) {
    const job = jobs.find((j) => j.jobname === c.job);
    if (!job || job.error !== 0) throw new BenchError(`${what}: job ${c.job} ${job ? `failed with error ${job.error}` : 'is missing from the report'}`);
    iops.set(c.job, job.read.iops);
  }
  return iops;
}

/** The second line: fio in a QEMU TCG guest against each backend, alternating; prints its table and returns its cases. */
async function guestLine(dir: string, image: string): Promise<Record<string, Result>> {
  ensureQemu();
  say();
  say(`fio in a QEMU TCG guest (1 vCPU): ${GUEST_SECONDS} s a job after 1 s ramp, ${GUEST_ROUNDS} boots per backend, alternating, median; TCG emulation bounds these figures, read the ratio`);
  const daemons = await startDaemons(dir, image);
  const iops: Record<string, Record<string, number[]>> = Object.fromEntries(GUEST_CASES.map((c) => [c.job, { splitvm: [], qsd: [] }]));
  const order = ['splitvm', 'qsd'] as const;
  for (let i = 0; i < GUEST_ROUNDS; i++) {
    for (const name of i % 2 ? [...order].reverse() : order) {
      for (const [job, v] of await guestRound(name, daemons.sockets[name])) iops[job]![name]!.push(v);
    }
  }
  await daemons.stop();
  const results: Record<string, Result> = {};
  for (const c of GUEST_CASES) {
    const s = median(iops[c.job]!.splitvm!);
    const t = median(iops[c.job]!.qsd!);
    results[`guest ${c.name}`] = { splitvm: Math.round(s), qsd: Math.round(t), ratio: Number((s / t).toFixed(2)), via: 'qemu-tcg-guest', seconds: GUEST_SECONDS, rounds: GUEST_ROUNDS };
  }
  printTable(['fio in the TCG guest', 'splitvm device blk', 'qemu-storage-daemon', 'ratio'], GUEST_CASES.map((c) => {
    const r = results[`guest ${c.name}`]!;
    return [c.name, `${fmt(r.splitvm)} IOPS`, `${fmt(r.qsd)} IOPS`, fmt(r.ratio, 2)];
  }));
  return results;
}

export async function run(): Promise<Figures> {
  if (!which('qemu-storage-daemon')) throw new BenchError('qemu-storage-daemon is missing (Debian package qemu-system-common)');
  const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'splitvm-bench-vu-'));
  const backends: Backend[] = [];
  try {
    const image = path.join(dir, 'disk.img');
    const chunk = Buffer.alloc(MiB);
    for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
    const fd = fs.openSync(image, 'w');
    for (let at = 0; at < IMAGE_BYTES; at += MiB) fs.writeSync(fd, chunk, 0, MiB, at);
    fs.closeSync(fd);
    say(`image: ${IMAGE_BYTES / MiB} MiB in ${path.dirname(dir)}, pre-filled; ${SECONDS} s per case and backend (${ROUNDS} rounds, alternating, median); ${fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm)?.length ?? '?'} CPUs`);

    const daemons = await startDaemons(dir, image);
    backends.push(await frontend('splitvm', daemons.sockets.splitvm), await frontend('qsd', daemons.sockets.qsd));
    say(`negotiated features: splitvm 0x${backends[0]!.f.features.toString(16)}, qsd 0x${backends[1]!.f.features.toString(16)}`);

    const results: Record<string, Result> = {};
    for (const c of CASES) {
      for (const b of backends) await drive(b, c, WARMUP_MS);
      const rates: Record<string, number[]> = { splitvm: [], qsd: [] };
      for (let i = 0; i < ROUNDS; i++) {
        // alternate who goes first: the host's state drifts from one second to the next
        for (const b of i % 2 ? [...backends].reverse() : backends) rates[b.name]!.push(await drive(b, c, ROUND_MS));
      }
      const s = median(rates.splitvm!);
      const t = median(rates.qsd!);
      results[c.name] = { splitvm: Math.round(s), qsd: Math.round(t), ratio: Number((s / t).toFixed(2)) };
    }
    for (const b of backends.splice(0)) b.f.close();
    await daemons.stop();

    say();
    printTable(['case', 'splitvm device blk', 'qemu-storage-daemon', 'ratio'], CASES.map((c) => {
      const r = results[c.name]!;
      return [c.name, figure(c, r.splitvm), figure(c, r.qsd), fmt(r.ratio, 2)];
    }));
    say(`QD32 4 KiB random read: ${fmt(results['4k-randread qd32']!.ratio, 2)}× qemu-storage-daemon (goal ≥ 0.8×)`);
    Object.assign(results, await guestLine(dir, image));
    return { unit: 'requests/s', seconds: SECONDS, rounds: ROUNDS, results };
  } finally {
    for (const b of backends) b.f.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
