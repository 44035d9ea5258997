// scripts/bench/blk.ts — owns the virtio-blk device benchmark: the real
// device process, jailed with its seccomp policy enforced (launched by the
// core's launcher through the device harness), serves a 256 MiB pre-filled
// image, page cache warm; the harness drives its queue from the host as a
// guest driver would — EVENT_IDX kick suppression, used_event set before it
// sleeps, woken by its interrupt: the device writes its call fd as it would
// a guest's irqfd, here a pipe the harness's event loop watches (one thread
// wake-up per interrupt, like a halted vCPU; an eventfd would have to be read
// on libuv's pool, two wake-ups, which is the harness's cost, not the device's).
//
// The image lives on the disk's file system (/var/tmp, where disk images
// live; /dev/shm only when /var/tmp is tmpfs): ext4 answers the device's
// inline RWF_NOWAIT reads. A second, shorter table runs the 4 KiB cases on
// the other file system (tmpfs, /dev/shm), which refuses RWF_NOWAIT.
//
// Cases: 4 KiB random read / write (IOPS) and 1 MiB sequential read / write
// (MiB/s) at queue depth 1 and 32. Each case runs ROUNDS rounds side by side
// (device, then the two ceilings, on the same file):
//   - the Node ceiling (blk/direct.ts): the same I/O done directly with
//     pread/pwrite from one Node process through libuv's pool, `depth` in
//     flight, with the device's pool size — what the device is judged by
//     (ratio = device ÷ Node ceiling, per round; median and min printed);
//   - the C ceiling (blk/pio-loop.c, compiled here with the system cc): a
//     pread/pwrite loop, one thread at depth 1, one per CPU at depth 32 —
//     this machine's page cache, no event loop, no thread hops.
// Also: the device's and the harness's CPU per request, kicks and interrupts
// per request; at depth 1 the latency of every request (publication to the
// driver seeing it used) as p50 / p99 / p99.9, and the same for an idle
// guest, one 4 KiB read every IDLE_GAP_MS, whose every request finds the
// device asleep and kicks it (how a guest that is not busy sees the disk); the private memory of the
// device process while it serves (guest-RAM memfd mapping excluded); and the
// time from the launcher's spawn to the device's hello (ready), over
// READY_STARTS starts, with the device's own clock at each step of its start,
// beside Node alone in a device's environment (its first line, and spawn to
// exit; as many starts, alternated): the floor of ready. With --json (index.ts) the figures are one JSON line.
//
//   npm run bench -- blk [--json]     or   node --import tsx scripts/bench/blk.ts [--json]
//   BLK_BENCH_ROUNDS (default 5), BLK_BENCH_ROUND_MS (default 600) change the run's length;
//   BLK_BENCH_CASES="4k randread qd1,4k randwrite" runs only the cases whose names start so
//   (and skips the tmpfs table and the ready starts);
//   BLK_BENCH_ENTRY=dist/old/src/devices/main.js runs another build of the device (inside dist/),
//   with BLK_BENCH_NODE_FLAGS="--jitless --no-expose-wasm" if its flags differ: before/after figures.
import readline from 'node:readline';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PipeInterrupts, runLoad, type Slot } from './blk/load.js';
import { DeviceHarness, MiB, type DriverQueue } from '../../src/devices/harness/index.js';
import * as libc from '../../src/sys/libc.js';
import { DEVICE_HEAP_FLAGS, DEVICE_NODE_FLAGS, DEVICE_NOFILE, DEVICE_POOL_THREADS, deviceEnv, jailArgs } from '../../src/core/jail/launch.js';
import { which } from '../../src/sys/paths.js';
import { BenchError, isMain, killChild, makeTempDir, median, percentile, printTable, removeTempDir, repoRoot, round, runStandalone, runToEnd, say, spawnTracked, type Figures } from './lib.js';

export const title = 'virtio-blk device process (jailed, seccomp enforced) driven from the host, vs pread/pwrite from Node and from C';

const IMAGE_BYTES = 256 * MiB;
const ROUNDS = Number(process.env.BLK_BENCH_ROUNDS ?? 5);
const ROUND_MS = Number(process.env.BLK_BENCH_ROUND_MS ?? 600);
/** Rounds of the second file system's table. */
const OTHER_ROUNDS = 3;
const WARMUP_MS = 200;
const MAX_DEPTH = 32;
const MAX_BS = MiB;
const READY_STARTS = 5;
/** The idle guest's pause between its 4 KiB reads, and how long it reads (device, then the Node ceiling). */
const IDLE_GAP_MS = 1;
const IDLE_MS = 2000;
/** The device's pool threads for I/O (all but the one a backend may park in poll: launch.ts DEVICE_POOL_THREADS); the Node ceiling gets as many. */
const IO_THREADS = DEVICE_POOL_THREADS - 1;
const CPUS = os.cpus().length;
const here = path.dirname(fileURLToPath(import.meta.url));
const TMPFS_MAGIC = 0x01021994;

interface Case {
  /** e.g. "4k randread qd32" */
  name: string;
  /** e.g. "4k randread" (the JSON's `case`) */
  kind: string;
  op: 'read' | 'write';
  bs: number;
  depth: number;
  random: boolean;
}

const CASES: Case[] = [];
for (const [kind, op, bs, random] of [
  ['4k randread', 'read', 4096, true],
  ['4k randwrite', 'write', 4096, true],
  ['1m seqread', 'read', MiB, false],
  ['1m seqwrite', 'write', MiB, false],
] as const) {
  for (const depth of [1, MAX_DEPTH]) CASES.push({ name: `${kind} qd${depth}`, kind, op, bs, depth, random });
}
const ONLY = process.env.BLK_BENCH_CASES?.split(',').map((x) => x.trim()).filter(Boolean);
const SELECTED = ONLY ? CASES.filter((c) => ONLY.some((o) => c.name.startsWith(o))) : CASES;
const SMALL_CASES = CASES.filter((c) => c.bs === 4096);
/** The device build and Node flags to run (default: the launcher's). */
const DEVICE: { entry?: string; nodeFlags?: string[] } = {
  ...(process.env.BLK_BENCH_ENTRY ? { entry: path.resolve(process.env.BLK_BENCH_ENTRY) } : {}),
  ...(process.env.BLK_BENCH_NODE_FLAGS ? { nodeFlags: process.env.BLK_BENCH_NODE_FLAGS.split(/\s+/).filter(Boolean) } : {}),
};

interface DeviceResult {
  ops: number;
  seconds: number;
  errors: number;
  kicks: number;
  interrupts: number;
  deviceCpuMs: number;
  harnessCpuMs: number;
}

/** One case's rounds: rates (ops/s) of the device and both ceilings, side by side, and the device's counters summed. */
interface CaseResult {
  c: Case;
  device: number[];
  node: number[];
  cLoop: number[];
  counters: DeviceResult;
  latencyUs?: number[];
  /** The Node ceiling's own per-request latencies (depth 1): the host's tail, beside the device's. */
  nodeLatencyUs?: number[];
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
async function driveDevice(h: DeviceHarness, q: DriverQueue, slots: Slot[], c: Case, ms: number, extra: { midway?: () => void; latencies?: number[]; waitCall?: () => Promise<void>; gapMs?: number } = {}): Promise<DeviceResult> {
  const cpu0 = { device: processCpuMs(h.pid), harness: process.cpuUsage() };
  const r = await runLoad(h.mem, q, slots, c, ms, { imageBytes: IMAGE_BYTES, completion: 'irq', ...extra });
  const hc = process.cpuUsage(cpu0.harness);
  return { ...r, deviceCpuMs: processCpuMs(h.pid) - cpu0.device, harnessCpuMs: (hc.user + hc.system) / 1000 };
}

/** The Node pread/pwrite ceiling: a child Node process with the device's I/O pool size, one run per request. */
function startNodeCeiling(image: string): { run: (c: Case, ms: number, latencies?: number[], gapMs?: number) => Promise<number>; stop: () => Promise<void> } {
  const child = spawnTracked(process.execPath, ['--import', 'tsx', path.join(here, 'blk', 'direct.ts'), JSON.stringify({ image, imageBytes: IMAGE_BYTES })], {
    stdio: ['pipe', 'pipe', 'inherit'],
    env: { ...process.env, UV_THREADPOOL_SIZE: String(IO_THREADS) },
  });
  const lines = readline.createInterface({ input: child.stdout! })[Symbol.asyncIterator]();
  return {
    async run(c, ms, latencies, gapMs) {
      child.stdin!.write(`${JSON.stringify({ op: c.op, bs: c.bs, depth: c.depth, random: c.random, ms, latencies: latencies !== undefined, gapMs })}\n`);
      const r = await lines.next();
      if (r.done) throw new BenchError('the Node pread/pwrite ceiling process ended early');
      const x = JSON.parse(r.value as string) as { ops: number; seconds: number; latencyUs?: number[] };
      if (latencies && x.latencyUs) for (const us of x.latencyUs) latencies.push(us);
      return x.ops / x.seconds;
    },
    async stop() {
      child.stdin!.end();
      await killChild(child);
    },
  };
}

/** Compiles the C pread/pwrite loop into a temporary folder (as exit-cost builds its C VMM). */
async function buildCLoop(): Promise<{ bin: string; dir: string }> {
  const dir = makeTempDir('blk-c');
  const bin = path.join(dir, 'pio-loop');
  await runToEnd('cc', ['-O2', '-Wall', '-pthread', '-o', bin, path.join(here, 'blk', 'pio-loop.c')], 'building blk/pio-loop.c with cc');
  return { bin, dir };
}

/** One C-loop run: ops/s. One thread at depth 1, one per CPU deeper. */
async function runCLoop(bin: string, image: string, c: Case, ms: number): Promise<number> {
  const threads = Math.min(c.depth, CPUS);
  const { stdout } = await runToEnd(bin, [image, c.op, String(c.bs), c.random ? '1' : '0', String(threads), String(ms)], `the C ${c.op} loop`);
  const [ops, seconds] = stdout.trim().split(/\s+/).map(Number);
  if (!ops || !seconds) throw new BenchError(`the C loop printed "${stdout.trim()}"`);
  return ops / seconds;
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

const ratios = (r: CaseResult): number[] => r.device.map((d, i) => d / r.node[i]!);

interface ImageRun {
  dir: string;
  fsType: string;
  results: CaseResult[];
  memory?: Memory;
  stats?: Record<string, number> | null;
  /** An idle guest's reads (IDLE_GAP_MS apart): each one's latency, through the device and the Node ceiling, and the device's kicks per request. */
  idle?: { device: number[]; node: number[]; kicksPerReq: number };
}

/** Runs `cases` against a device serving an image in a new folder under `parent`, each case `rounds` rounds side by side with both ceilings. */
async function benchImage(parent: string, cases: Case[], rounds: number, cLoop: string, full: boolean): Promise<ImageRun> {
  const dir = fs.mkdtempSync(path.join(parent, 'splitvm-bench-blk-'));
  const image = path.join(dir, 'disk.img');
  const fsType = `0x${fs.statfsSync(parent).type.toString(16)}${fs.statfsSync(parent).type === TMPFS_MAGIC ? ' (tmpfs)' : ''}`;
  let fd = -1;
  let h: DeviceHarness | undefined;
  let node: ReturnType<typeof startNodeCeiling> | undefined;
  let irq: PipeInterrupts | undefined;
  try {
    fd = makeImage(image);
    h = await DeviceHarness.start({ backendFd: fd, blk: { readOnly: false }, memSize: 128 * MiB, queueSize: 256, logLevel: 'warn', callPipes: true, ...DEVICE });
    const [q] = h.activate();
    irq = new PipeInterrupts(libc.dup(q!.callFd));
    const waitCall = irq.wait;
    const slots: Slot[] = Array.from({ length: MAX_DEPTH }, () => ({ hdr: h!.alloc(16), data: h!.alloc(MAX_BS, 4096), status: h!.alloc(1) }));
    node = startNodeCeiling(image);
    const results: CaseResult[] = [];
    let memory: Memory | undefined;
    for (const c of cases) {
      await driveDevice(h, q!, slots, c, WARMUP_MS, { waitCall });
      await node.run(c, WARMUP_MS);
      const r: CaseResult = { c, device: [], node: [], cLoop: [], counters: { ops: 0, seconds: 0, errors: 0, kicks: 0, interrupts: 0, deviceCpuMs: 0, harnessCpuMs: 0 } };
      if (full && c.depth === 1 && c.bs === 4096) {
        r.latencyUs = [];
        r.nodeLatencyUs = [];
      }
      for (let i = 0; i < rounds; i++) {
        const midway = full && c.name === `4k randread qd${MAX_DEPTH}` && i === 1 ? () => (memory = measureMemory(h!.pid)) : undefined;
        const d = await driveDevice(h, q!, slots, c, ROUND_MS, { waitCall, ...(midway ? { midway } : {}), ...(r.latencyUs ? { latencies: r.latencyUs } : {}) });
        if (d.errors) throw new BenchError(`${c.name}: ${d.errors} requests failed`);
        r.device.push(d.ops / d.seconds);
        for (const k of ['ops', 'seconds', 'kicks', 'interrupts', 'deviceCpuMs', 'harnessCpuMs'] as const) r.counters[k] += d[k];
        r.node.push(await node.run(c, ROUND_MS, r.nodeLatencyUs));
        r.cLoop.push(await runCLoop(cLoop, image, c, ROUND_MS));
      }
      results.push(r);
    }
    let idle: ImageRun['idle'];
    const read1 = cases.find((c) => c.name === '4k randread qd1');
    if (full && read1) {
      const device: number[] = [];
      const nodeLatencies: number[] = [];
      const d = await driveDevice(h, q!, slots, read1, IDLE_MS, { waitCall, latencies: device, gapMs: IDLE_GAP_MS });
      await node.run(read1, IDLE_MS, nodeLatencies, IDLE_GAP_MS);
      idle = { device, node: nodeLatencies, kicksPerReq: d.kicks / d.ops };
    }
    const stats = await h.stats();
    return { dir: parent, fsType, results, ...(memory ? { memory } : {}), ...(idle ? { idle } : {}), stats };
  } finally {
    await node?.stop();
    irq?.close();
    if (h) await h.close();
    if (fd >= 0) fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

interface ReadyTimes {
  /** launcher spawn to hello (ms) */
  times: number[];
  /** the device's own clock at each step of its start (ms since its process began; its "device ready" log record) */
  loaded: number[];
  setUp: number[];
  sealed: number[];
  /** Node alone, in a device's environment: its first line (ms since its process began), and spawn to exit */
  nodeFirstLine: number[];
  nodeAlone: number[];
  /** prlimit and bwrap with a device's jail running `true`: the jail's own cost. */
  jailAlone: number[];
}

/**
 * READY_STARTS starts of a blk device process on an image, alternated with
 * as many of Node alone (`node --jitless -e …`) in the environment a device
 * gets: empty but for deviceEnv (launch.ts). The bench's own environment
 * would not do: a variable such as NODE_EXTRA_CA_CERTS makes Node parse
 * certificates at start, 40-90 ms on our hosts, which a device never does.
 * And as many of the jail alone: prlimit, then bwrap with a device's jail
 * (jailArgs), running `true` instead of Node. Jail plus Node is the floor.
 */
async function readyTimes(parent: string): Promise<ReadyTimes> {
  const dir = fs.mkdtempSync(path.join(parent, 'splitvm-bench-blk-ready-'));
  const fd = fs.openSync(path.join(dir, 'disk.img'), 'w+');
  fs.ftruncateSync(fd, 64 * MiB);
  const r: ReadyTimes = { times: [], loaded: [], setUp: [], sealed: [], nodeFirstLine: [], nodeAlone: [], jailAlone: [] };
  const prlimit = which('prlimit');
  const bwrap = which('bwrap');
  const trueBin = which('true');
  if (!prlimit || !bwrap || !trueBin) throw new BenchError('prlimit, bwrap and true must be on PATH (scripts/host-packages.sh installs them)');
  const jail = [`--nofile=${DEVICE_NOFILE}:${DEVICE_NOFILE}`, bwrap, ...jailArgs({ root: repoRoot, kind: 'blk', statusFd: 1, env: deviceEnv() }), '--', trueBin];
  const firstLine = 'process.stdout.write(String(process.uptime() * 1000))';
  try {
    for (let i = 0; i < READY_STARTS; i++) {
      const t0 = performance.now();
      const h = await DeviceHarness.start({ backendFd: fd, blk: { readOnly: false }, memSize: 16 * MiB, logLevel: 'info', ...DEVICE });
      r.times.push(performance.now() - t0);
      const startMs = (await readyRecord(h)).startMs as { loaded: number; setUp: number; sealed: number };
      r.loaded.push(startMs.loaded);
      r.setUp.push(startMs.setUp);
      r.sealed.push(startMs.sealed);
      await h.close();
      const node = await runToEnd(process.execPath, [...(DEVICE.nodeFlags ?? [...DEVICE_NODE_FLAGS, ...DEVICE_HEAP_FLAGS]), '-e', firstLine], 'node alone', 30_000, deviceEnv());
      r.nodeAlone.push(node.ms);
      r.nodeFirstLine.push(Number(node.stdout));
      r.jailAlone.push((await runToEnd(prlimit, jail, 'the jail alone', 30_000, {})).ms);
    }
  } finally {
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return r;
}

/** The device's "device ready" log record (it may reach us just after its hello). */
async function readyRecord(h: DeviceHarness): Promise<Record<string, unknown>> {
  for (let waited = 0; waited < 2000; waited += 10) {
    const rec = h.logRecords().find((l) => l.msg === 'device ready');
    if (rec) return rec;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new BenchError('the device said hello but never logged "device ready"');
}

function printResults(run: ImageRun): void {
  printTable(
    ['case', 'device', 'Node pread/pwrite', 'C pread/pwrite', 'ratio (median)', 'ratio (min)', 'device/C', 'device CPU µs/req', 'harness CPU µs/req', 'kicks/req', 'irqs/req'],
    run.results.map((r) => {
      const { c } = r;
      const rs = ratios(r);
      const ops = r.counters.ops;
      return [
        c.name,
        figure(c, median(r.device)),
        figure(c, median(r.node)),
        figure(c, median(r.cLoop)),
        fmt(median(rs), 2),
        fmt(Math.min(...rs), 2),
        fmt(median(r.device) / median(r.cLoop), 2),
        fmt((r.counters.deviceCpuMs * 1000) / ops, 1),
        fmt((r.counters.harnessCpuMs * 1000) / ops, 1),
        fmt(r.counters.kicks / ops, 2),
        fmt(r.counters.interrupts / ops, 2),
      ];
    }),
  );
}

function caseFigures(r: CaseResult): Figures {
  const { c } = r;
  const rs = ratios(r);
  const unit = c.bs === 4096 ? 'iops' : 'mibps';
  const conv = (x: number): number | null => (c.bs === 4096 ? round(x, 0) : round((x * c.bs) / MiB, 0));
  const out: Figures = {
    case: c.kind,
    qd: c.depth,
    ratio: round(median(rs)),
    ratioMin: round(Math.min(...rs)),
    [unit]: conv(median(r.device)),
    [`node${unit === 'iops' ? 'Iops' : 'Mibps'}`]: conv(median(r.node)),
    [`c${unit === 'iops' ? 'Iops' : 'Mibps'}`]: conv(median(r.cLoop)),
    ratioToC: round(median(r.device) / median(r.cLoop), 3),
    deviceCpuUsPerReq: round((r.counters.deviceCpuMs * 1000) / r.counters.ops, 1),
    kicksPerReq: round(r.counters.kicks / r.counters.ops, 3),
    irqsPerReq: round(r.counters.interrupts / r.counters.ops, 3),
  };
  if (r.latencyUs) Object.assign(out, { p50us: round(percentile(r.latencyUs, 50), 0), p99us: round(percentile(r.latencyUs, 99), 0), p999us: round(percentile(r.latencyUs, 99.9), 0) });
  if (r.nodeLatencyUs?.length) Object.assign(out, { nodeP50us: round(percentile(r.nodeLatencyUs, 50), 0), nodeP99us: round(percentile(r.nodeLatencyUs, 99), 0), nodeP999us: round(percentile(r.nodeLatencyUs, 99.9), 0) });
  return out;
}

export async function run(): Promise<Figures> {
  const diskIsTmpfs = fs.statfsSync('/var/tmp').type === TMPFS_MAGIC;
  const mainDir = diskIsTmpfs ? '/dev/shm' : '/var/tmp';
  const otherDir = !diskIsTmpfs && fs.existsSync('/dev/shm') && fs.statfsSync('/dev/shm').type === TMPFS_MAGIC ? '/dev/shm' : null;
  const { bin: cLoop, dir: cDir } = await buildCLoop();
  try {
    if (DEVICE.entry || DEVICE.nodeFlags) say(`device: ${DEVICE.entry ?? 'the default entry'}, Node flags ${DEVICE.nodeFlags?.join(' ') ?? 'the default'}`);
    say(`image: ${IMAGE_BYTES / MiB} MiB in ${mainDir}, pre-filled, page cache warm; ${ROUNDS} rounds of ${ROUND_MS} ms per case, side by side with both ceilings; ${CPUS} CPUs`);
    const main = await benchImage(mainDir, SELECTED, ROUNDS, cLoop, true);
    say(`file system ${main.fsType}; ratio = device ÷ Node ceiling, per round (median and min of ${ROUNDS}); C loop: 1 thread at depth 1, ${Math.min(MAX_DEPTH, CPUS)} at depth ${MAX_DEPTH}`);
    say();
    printResults(main);
    const lat = main.results.filter((r) => r.latencyUs);
    say();
    say('depth-1 latency (every request of every round): the device, from publishing the request to the driver seeing it used;');
    say('the Node ceiling, from its pread/pwrite call to the answer (the same host, the same pool hop): the tail this host gives any Node I/O');
    const latencyRow = (name: string, xs: number[]): (string | number)[] => {
      const p50 = percentile(xs, 50);
      const p99 = percentile(xs, 99);
      return [name, fmt(xs.length), fmt(p50), fmt(p99), fmt(percentile(xs, 99.9)), fmt(p99 / p50, 2)];
    };
    const idle = main.idle;
    printTable(
      ['case', 'requests', 'p50 µs', 'p99 µs', 'p99.9 µs', 'p99 / p50'],
      [
        ...lat.flatMap((r) => [latencyRow(`${r.c.name}, device`, r.latencyUs!), latencyRow(`${r.c.name}, Node ceiling`, r.nodeLatencyUs ?? [])]),
        ...(idle ? [latencyRow(`idle: 4k read every ${IDLE_GAP_MS} ms, device`, idle.device), latencyRow(`idle: 4k read every ${IDLE_GAP_MS} ms, Node ceiling`, idle.node)] : []),
      ],
    );
    if (idle) say(`idle: the device found ${fmt(idle.kicksPerReq * 100, 0)}% of these requests by their kick (its ring polling had given up), as a guest that is not busy makes it do`);

    let other: ImageRun | undefined;
    if (otherDir && !ONLY) {
      say();
      say(`the 4 KiB cases again with the image in ${otherDir} (tmpfs: no RWF_NOWAIT), ${OTHER_ROUNDS} rounds:`);
      other = await benchImage(otherDir, SMALL_CASES, OTHER_ROUNDS, cLoop, false);
      printResults(other);
    }

    const ready = ONLY ? null : await readyTimes(mainDir);
    const m = main.memory;
    const mib = (k: number): string => fmt(k / 1024, 1);
    if (m) {
      say();
      say(`memory of the device process while it serves 4k randread qd${MAX_DEPTH} (MiB; guest RAM is a ${128} MiB memfd):`);
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
    if (ready) {
      const ms = (v: number[]): string => `${fmt(median(v), 1)} ms (min ${fmt(Math.min(...v), 1)})`;
      say(`ready (launcher spawn to hello, jailed, seccomp installed), ${READY_STARTS} starts: median ${ms(ready.times)}`);
      say(`  on the device's own clock (since its process began): code loaded ${ms(ready.loaded)}, set up ${ms(ready.setUp)}, policy installed ${ms(ready.sealed)};`);
      say(`  the rest is the launcher's spawn, prlimit, bwrap and the hello`);
      say(`  Node alone in a device's environment, alternated with them: first line at ${ms(ready.nodeFirstLine)}, spawn to exit ${ms(ready.nodeAlone)}`);
      say(`  the jail alone (prlimit, bwrap with a device's jail, running true): ${ms(ready.jailAlone)}; with Node alone, the floor of ready: ${fmt(median(ready.jailAlone) + median(ready.nodeAlone), 1)} ms`);
    }
    say(`device counters at the end: ${JSON.stringify(main.stats)}`);

    const read1 = main.results.find((r) => r.c.name === '4k randread qd1')?.latencyUs ?? [];
    return {
      image: { dir: mainDir, fs: main.fsType, rounds: ROUNDS, roundMs: ROUND_MS },
      ...(DEVICE.entry || DEVICE.nodeFlags ? { device: DEVICE } : {}),
      cases: main.results.map(caseFigures),
      ...(other ? { tmpfsCases: other.results.map(caseFigures) } : {}),
      deviceMemoryMiB: m ? round((m.privateKiB - m.memfd.privateKiB) / 1024, 1) : null,
      devicePssMiB: m ? round((m.pssKiB - m.memfd.pssKiB) / 1024, 1) : null,
      ...(ready
        ? {
            readyMs: round(median(ready.times), 1),
            readyMinMs: round(Math.min(...ready.times), 1),
            deviceLoadedMs: round(median(ready.loaded), 1),
            deviceSealedMs: round(median(ready.sealed), 1),
            nodeFirstLineMs: round(median(ready.nodeFirstLine), 1),
            nodeAloneMs: round(median(ready.nodeAlone), 1),
            jailAloneMs: round(median(ready.jailAlone), 1),
          }
        : {}),
      p50us: round(percentile(read1, 50), 0),
      p99us: round(percentile(read1, 99), 0),
      p999us: round(percentile(read1, 99.9), 0),
      ...(idle
        ? {
            idle: {
              gapMs: IDLE_GAP_MS,
              kicksPerReq: round(idle.kicksPerReq, 3),
              p50us: round(percentile(idle.device, 50), 0),
              p99us: round(percentile(idle.device, 99), 0),
              nodeP50us: round(percentile(idle.node, 50), 0),
              nodeP99us: round(percentile(idle.node, 99), 0),
            },
          }
        : {}),
    };
  } finally {
    removeTempDir(cDir);
  }
}

if (isMain(import.meta.url)) await runStandalone('blk', run);
