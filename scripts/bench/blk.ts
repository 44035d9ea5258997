// scripts/bench/blk.ts — owns the virtio-blk device benchmark: the real
// device process, jailed with its seccomp policy enforced (launched by the
// core's launcher through the device harness), serves a 256 MiB image in
// /dev/shm (pre-filled, so every read hits the page cache); the harness drives
// its queue from the host as a guest driver would — EVENT_IDX kick
// suppression, used_event set before it sleeps, woken by the call eventfd
// (the irqfd a guest would get). Cases: 4 KiB random read / write (IOPS) and
// 1 MiB sequential read / write (MiB/s) at queue depth 1 and 32, 3 s each in
// 3 rounds (median), each round beside one of the ceiling (blk/direct.ts: the
// same I/O done directly with pread/pwrite from one Node process) — thread
// wake-ups on this host vary a lot from one second to the next. Also: the device's and the harness's
// CPU per request, kicks and interrupts per request, the same 4 KiB reads
// with the harness polling the used ring instead of sleeping, and the
// private memory of the device process while it serves (with and without
// the guest-RAM memfd mapping). Printed beside: the 4 KiB random reads again
// from a pre-filled image on the disk's file system (/var/tmp, when it is
// not tmpfs), page cache warm, with its own ceiling — tmpfs refuses the
// device's inline RWF_NOWAIT reads (EOPNOTSUPP), so there every read takes
// the pool; on ext4 a cached read is answered inline.
//
//   npm run bench -- blk        or   node --import tsx scripts/bench/blk.ts
import readline from 'node:readline';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { runLoad, type Slot } from './blk/load.js';
import { DeviceHarness, MiB, type DriverQueue } from '../../src/devices/harness/index.js';
import * as libc from '../../src/sys/libc.js';
import { BenchError, cleanupSync, killChild, median, printTable, say, spawnTracked } from './lib.js';

export const title = 'virtio-blk device process (jailed, seccomp enforced) driven from the host, vs pread/pwrite';

const IMAGE_BYTES = 256 * MiB;
const SECONDS = Number(process.env.BLK_BENCH_SECONDS ?? 3);
const ROUNDS = 3;
const ROUND_MS = (SECONDS * 1000) / ROUNDS;
const WARMUP_MS = 300;
const MAX_DEPTH = 32;
const MAX_BS = MiB;
/** The device's pool: one thread parked on the kick eventfd + 8 for I/O (launch.ts deviceEnv). The ceiling gets the same 8. */
const IO_THREADS = 8;
const here = path.dirname(fileURLToPath(import.meta.url));

interface Case {
  name: string;
  op: 'read' | 'write';
  bs: number;
  depth: number;
  random: boolean;
}

const CASES: Case[] = [];
for (const [kind, op, bs, random] of [
  ['4k-randread', 'read', 4096, true],
  ['4k-randwrite', 'write', 4096, true],
  ['1m-seqread', 'read', MiB, false],
  ['1m-seqwrite', 'write', MiB, false],
] as const) {
  for (const depth of [1, MAX_DEPTH]) CASES.push({ name: `${kind} qd${depth}`, op, bs, depth, random });
}

interface DeviceResult {
  ops: number;
  seconds: number;
  errors: number;
  kicks: number;
  interrupts: number;
  deviceCpuMs: number;
  harnessCpuMs: number;
}

interface Memory {
  privateKiB: number;
  pssKiB: number;
  rssKiB: number;
  memfd: { privateKiB: number; pssKiB: number; rssKiB: number };
}

const CLK_TCK = 100;

/** utime + stime of a process (all its threads), in ms. */
function processCpuMs(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / CLK_TCK;
}

function kib(text: string, field: string): number {
  let sum = 0;
  for (const m of text.matchAll(new RegExp(`^${field}:\\s+(\\d+) kB`, 'gm'))) sum += Number(m[1]);
  return sum;
}

/** Private (clean + dirty), PSS and RSS of a process, and the part of them in the guest-RAM memfd mapping. */
function measureMemory(pid: number): Memory {
  const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const smaps = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8');
  // one block per mapping: its header line, then its fields
  const blocks = smaps.split(/^(?=[0-9a-f]+-[0-9a-f]+ )/m).filter((b) => b.includes('memfd:splitvm-harness-ram'));
  const memfd = blocks.join('\n');
  return {
    privateKiB: kib(rollup, 'Private_Clean') + kib(rollup, 'Private_Dirty'),
    pssKiB: kib(rollup, 'Pss'),
    rssKiB: kib(rollup, 'Rss'),
    memfd: { privateKiB: kib(memfd, 'Private_Clean') + kib(memfd, 'Private_Dirty'), pssKiB: kib(memfd, 'Pss'), rssKiB: kib(memfd, 'Rss') },
  };
}

/** Runs one case through the device for `ms`, then lets the outstanding requests finish; with both processes' CPU time. */
async function driveDevice(
  h: DeviceHarness,
  q: DriverQueue,
  slots: Slot[],
  c: Case,
  ms: number,
  completion: 'irq' | 'poll',
  midway?: () => void,
): Promise<DeviceResult> {
  const cpu0 = { device: processCpuMs(h.pid), harness: process.cpuUsage() };
  const r = await runLoad(h.mem, q, slots, c, ms, { imageBytes: IMAGE_BYTES, completion, ...(midway ? { midway } : {}) });
  const hc = process.cpuUsage(cpu0.harness);
  return { ...r, deviceCpuMs: processCpuMs(h.pid) - cpu0.device, harnessCpuMs: (hc.user + hc.system) / 1000 };
}

/** The pread/pwrite ceiling: a child Node process with the device's I/O pool size, one run per request. */
function startCeiling(image: string): { run: (c: Case, ms: number) => Promise<number>; stop: () => Promise<void> } {
  const child = spawnTracked(process.execPath, ['--import', 'tsx', path.join(here, 'blk', 'direct.ts'), JSON.stringify({ image, imageBytes: IMAGE_BYTES })], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, UV_THREADPOOL_SIZE: String(IO_THREADS) },
  });
  const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return {
    async run(c, ms) {
      child.stdin!.write(`${JSON.stringify({ op: c.op, bs: c.bs, depth: c.depth, random: c.random, ms })}\n`);
      const r = await lines.next();
      if (r.done) throw new BenchError('the pread/pwrite ceiling process ended early');
      const x = JSON.parse(r.value as string) as { ops: number; seconds: number };
      return x.ops / x.seconds;
    },
    async stop() {
      child.stdin!.end();
      await killChild(child);
    },
  };
}

const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const figure = (c: Case, opsPerSec: number): string => (c.bs === 4096 ? `${fmt(opsPerSec)} IOPS` : `${fmt((opsPerSec * c.bs) / MiB)} MiB/s`);

/** A pre-filled image of IMAGE_BYTES at `image` (non-zero data, so it sits in the page cache); returns its fd. */
function makeImage(image: string): number {
  const chunk = Buffer.alloc(MiB);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
  const fd = fs.openSync(image, 'w+');
  for (let at = 0; at < IMAGE_BYTES; at += MiB) fs.writeSync(fd, chunk, 0, MiB, at);
  return fd;
}

const TMPFS_MAGIC = 0x01021994;

/** The 4 KiB random reads from an image in /var/tmp (unless it is tmpfs): [case, device, ceiling] rates, or null. */
async function diskImageReads(): Promise<{ fsType: string; rows: [Case, number, number][] } | null> {
  const st = fs.statfsSync('/var/tmp');
  if (st.type === TMPFS_MAGIC) return null;
  const dir = fs.mkdtempSync('/var/tmp/splitvm-bench-blk-');
  const fd = makeImage(path.join(dir, 'disk.img'));
  let h: DeviceHarness | undefined;
  try {
    h = await DeviceHarness.start({ backendFd: fd, blk: { readOnly: false }, memSize: 128 * MiB, queueSize: 256, logLevel: 'warn' });
    const [q] = h.activate();
    libc.setBlocking(q!.callFd);
    const slots: Slot[] = Array.from({ length: MAX_DEPTH }, () => ({ hdr: h!.alloc(16), data: h!.alloc(MAX_BS, 4096), status: h!.alloc(1) }));
    const top = startCeiling(path.join(dir, 'disk.img'));
    const rows: [Case, number, number][] = [];
    for (const c of CASES.filter((x) => x.bs === 4096 && x.op === 'read')) {
      await driveDevice(h, q!, slots, c, WARMUP_MS, 'irq');
      await top.run(c, WARMUP_MS);
      const dev: number[] = [];
      const tops: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const r = await driveDevice(h, q!, slots, c, ROUND_MS, 'irq');
        if (r.errors) throw new BenchError(`${c.name} (disk image): ${r.errors} requests failed`);
        dev.push(r.ops / r.seconds);
        tops.push(await top.run(c, ROUND_MS));
      }
      rows.push([c, median(dev), median(tops)]);
    }
    await top.stop();
    return { fsType: `0x${st.type.toString(16)}`, rows };
  } finally {
    if (h) await h.close();
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : '/tmp', 'splitvm-bench-blk-'));
  const cleanup = (): void => fs.rmSync(dir, { recursive: true, force: true });
  process.once('exit', cleanup);
  let h: DeviceHarness | undefined;
  let imageFd = -1;
  try {
    const image = path.join(dir, 'disk.img');
    imageFd = makeImage(image);
    say(`image: ${IMAGE_BYTES / MiB} MiB in ${path.dirname(dir)}, pre-filled; ${SECONDS} s per case (${ROUNDS} rounds, median); ${fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm)?.length ?? '?'} CPUs`);

    h = await DeviceHarness.start({ backendFd: imageFd, blk: { readOnly: false }, memSize: 128 * MiB, queueSize: 256, logLevel: 'warn' });
    const [q] = h.activate();
    libc.setBlocking(q!.callFd); // the harness sleeps in a pool read on it, as the device does on its kick
    const slots: Slot[] = Array.from({ length: MAX_DEPTH }, () => ({ hdr: h!.alloc(16), data: h!.alloc(MAX_BS, 4096), status: h!.alloc(1) }));
    say(`device: pid ${h.pid}, jailed, seccomp enforce`);

    const ceilingProc = startCeiling(image);
    const results = new Map<string, DeviceResult>();
    const ceiling = new Map<string, number>();
    let memory: Memory | undefined;
    /** ROUNDS device runs (each followed by a ceiling run when `top`): the median rate, counters summed. */
    const measure = async (c: Case, completion: 'irq' | 'poll', top: boolean, midway?: () => void): Promise<DeviceResult> => {
      await driveDevice(h!, q!, slots, c, WARMUP_MS, completion);
      if (top) await ceilingProc.run(c, WARMUP_MS);
      const runs: DeviceResult[] = [];
      const tops: number[] = [];
      for (let i = 0; i < ROUNDS; i++) {
        const r = await driveDevice(h!, q!, slots, c, ROUND_MS, completion, i === 1 ? midway : undefined);
        if (r.errors) throw new BenchError(`${c.name}: ${r.errors} requests failed`);
        runs.push(r);
        if (top) tops.push(await ceilingProc.run(c, ROUND_MS));
      }
      if (top) ceiling.set(c.name, median(tops));
      const rate = median(runs.map((r) => r.ops / r.seconds));
      const sum = (k: keyof DeviceResult): number => runs.reduce((a, r) => a + r[k], 0);
      return { ops: sum('ops'), seconds: sum('ops') / rate, errors: 0, kicks: sum('kicks'), interrupts: sum('interrupts'), deviceCpuMs: sum('deviceCpuMs'), harnessCpuMs: sum('harnessCpuMs') };
    };
    for (const c of CASES) {
      const measureHere = c.name === `4k-randread qd${MAX_DEPTH}`;
      results.set(c.name, await measure(c, 'irq', true, measureHere ? () => (memory = measureMemory(h!.pid)) : undefined));
    }
    const pollCases = CASES.filter((c) => c.bs === 4096 && c.op === 'read');
    const polled = new Map<string, DeviceResult>();
    for (const c of pollCases) polled.set(c.name, await measure(c, 'poll', false));
    await ceilingProc.stop();
    const stats = await h.stats();
    await h.close();
    h = undefined;
    const disk = await diskImageReads();

    say();
    printTable(
      ['case', 'device', 'pread/pwrite', 'ratio', 'µs/req', 'device CPU µs/req', 'harness CPU µs/req', 'kicks/req', 'irqs/req'],
      CASES.map((c) => {
        const r = results.get(c.name)!;
        const rate = r.ops / r.seconds;
        const top = ceiling.get(c.name) ?? NaN;
        return [
          c.name,
          figure(c, rate),
          figure(c, top),
          fmt(rate / top, 2),
          fmt((1e6 * c.depth) / rate, 1),
          fmt((r.deviceCpuMs * 1000) / r.ops, 1),
          fmt((r.harnessCpuMs * 1000) / r.ops, 1),
          fmt(r.kicks / r.ops, 2),
          fmt(r.interrupts / r.ops, 2),
        ];
      }),
    );
    say();
    say('the same 4 KiB random reads with the harness polling the used ring (a CPU spinning) instead of sleeping on the call eventfd:');
    printTable(
      ['case', 'device (poll)', 'ratio to pread', 'µs/req', 'device CPU µs/req', 'kicks/req'],
      pollCases.map((c) => {
        const r = polled.get(c.name)!;
        const rate = r.ops / r.seconds;
        return [c.name, figure(c, rate), fmt(rate / (ceiling.get(c.name) ?? NaN), 2), fmt((1e6 * c.depth) / rate, 1), fmt((r.deviceCpuMs * 1000) / r.ops, 1), fmt(r.kicks / r.ops, 2)];
      }),
    );
    if (disk) {
      say();
      say(`the same 4 KiB random reads from an image in /var/tmp (file system magic ${disk.fsType}, page cache warm; reads answered inline with RWF_NOWAIT):`);
      printTable(
        ['case', 'device', 'pread', 'ratio'],
        disk.rows.map(([c, dev, top]) => [c.name, figure(c, dev), figure(c, top), fmt(dev / top, 2)]),
      );
    }
    if (memory) {
      const m = memory;
      const mib = (k: number): string => fmt(k / 1024, 1);
      say();
      say(`memory of the device process while it serves 4k-randread qd${MAX_DEPTH} (MiB; guest RAM is a ${128} MiB memfd):`);
      printTable(
        ['', 'private (clean+dirty)', 'PSS', 'RSS'],
        [
          ['whole process', mib(m.privateKiB), mib(m.pssKiB), mib(m.rssKiB)],
          ['guest-RAM memfd mapping', mib(m.memfd.privateKiB), mib(m.memfd.pssKiB), mib(m.memfd.rssKiB)],
          ['without the memfd mapping', mib(m.privateKiB - m.memfd.privateKiB), mib(m.pssKiB - m.memfd.pssKiB), mib(m.rssKiB - m.memfd.rssKiB)],
        ],
      );
    }
    say();
    say(`device counters at the end: ${JSON.stringify(stats)}`);
  } finally {
    if (h) await h.close();
    if (imageFd >= 0) fs.closeSync(imageFd);
    cleanup();
    process.removeListener('exit', cleanup);
  }
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    await run();
  } catch (e) {
    process.stderr.write(`bench blk: ${e instanceof BenchError ? e.message : ((e as Error).stack ?? String(e))}\n`);
    process.exitCode = 1;
  } finally {
    cleanupSync();
  }
}
