// scripts/bench/net.ts — owns the virtio-net device benchmark: the real
// device process, jailed with its seccomp policy enforced, driven through the
// device harness (which plays the guest's driver: keeps the ring full,
// reposts buffers as they come back), against the ceiling of one Node process
// moving the same frames on the same kind of fd directly. Rounds alternate
// device and ceiling (figures here move by tens of percent between runs);
// the median of each is printed, with their ratio.
//   guest tx: a tap (multi-queue, vnet header) this benchmark creates in the
//     current namespace and which goes away with its fds; frames go to a
//     destination MAC that is not the host's, so the host stack drops them.
//     Counted by the tap's /sys/class/net/NAME/statistics/rx_packets. The
//     ceiling writes the same frames (zero vnet header) to a second queue of
//     the same tap. Needs root (CAP_NET_ADMIN).
//   guest rx: passt's framing on a socketpair (a 4-byte length, then the
//     frame), fed by a writer process at full speed. A tap's read side is
//     only fed by the host stack's transmit path, which one Node process
//     cannot drive at these rates; so rx is measured over the socketpair,
//     the ceiling being a Node process reading and parsing the same framed
//     stream directly. Counted in received frames.
// Frames: 64 bytes (packets/s), 1500 and 64 KiB (Gbit/s; 64 KiB frames are
// plain, without a GSO header).
//   guest rx latency: an idle link, one 64-byte frame each RX_GAP_MS written
//     to passt's end of the socketpair, to the driver seeing it used, woken
//     by its interrupt (a pipe its event loop watches, as a halted vCPU): the
//     device finds every frame asleep. The ceiling: a Node process that
//     reads the same socket on its event loop and writes a pipe for each
//     read — the two wake-ups across processes any process in the middle costs.
// Also: the private memory (Private_Clean +
// Private_Dirty, smaps_rollup) of one serving device process. The last line
// (with --json) is one JSON object with every case.
//   npm run bench -- net        or   node --import tsx scripts/bench/net.ts
//   NET_BENCH_ONLY=rx-latency runs the latency case alone; NET_BENCH_ENTRY=dist/old/device/main.cjs
//   runs another build of the device (inside dist/): before/after figures.
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { DeviceHarness, MiB, type DriverQueue } from '../../src/devices/harness/index.js';
import * as C from '../../src/devices/net/constants.js';
import { IovecList, readv, writev } from '../../src/sys/iovec.js';
import * as libc from '../../src/sys/libc.js';
import { PipeInterrupts } from './blk/load.js';
import { BenchError, isMain, killChild, median, percentile, printTable, runStandalone, say, spawnTracked, type Figures } from './lib.js';

export const title = 'virtio-net device process (jailed, seccomp enforced) driven from the host, vs one Node process on the same fd';

const ROUNDS = 3;
const ROUND_MS = Number(process.env.NET_BENCH_ROUND_MS ?? 1000);
const QUEUE_SIZE = 256;
const RX_BUF = 4096;
const IFF_MULTI_QUEUE = 0x0100;
const SIZES = [64, 1500, 65536] as const;
const MAC = '02:53:50:00:00:07';
/** The rx latency case: frames, and the pause before each. */
const RX_LAT_FRAMES = Number(process.env.NET_BENCH_LAT_FRAMES ?? 1500);
const RX_GAP_MS = 1;
/** The device build to run (default: the launcher's). */
const DEVICE = process.env.NET_BENCH_ENTRY ? { entry: path.resolve(process.env.NET_BENCH_ENTRY) } : {};
const here = fileURLToPath(import.meta.url);

interface CaseResult {
  name: string;
  len: number;
  device: number;
  ceiling: number;
}

/** Opens (creating it if need be) queue fd of tap `name`: no packet info, 12-byte vnet header, multi-queue. */
function openTapQueue(name: string): number {
  const fd = libc.open('/dev/net/tun', libc.O_RDWR | libc.O_NONBLOCK);
  const ifr = new Uint8Array(40);
  ifr.set(Buffer.from(name), 0);
  new DataView(ifr.buffer).setUint16(16, C.IFF_TAP | C.IFF_NO_PI | C.IFF_VNET_HDR | IFF_MULTI_QUEUE, true);
  libc.ioctlIn(fd, C.TUNSETIFF, ifr);
  const hdr = new Uint8Array(4);
  new DataView(hdr.buffer).setInt32(0, C.NET_HDR_BYTES, true);
  libc.ioctlIn(fd, C.TUNSETVNETHDRSZ, hdr);
  return fd;
}

/** An Ethernet frame to a MAC that is nobody's (the host drops it), EtherType 0x88b5, a pattern. */
function frame(len: number): Uint8Array {
  const f = new Uint8Array(len);
  for (let i = 14; i < len; i++) f[i] = i & 0xff;
  f.set([0x02, 0x53, 0x50, 0xde, 0xad, 0x01], 0);
  f.set([0x02, 0x53, 0x50, 0, 0, 0x07], 6);
  f.set([0x88, 0xb5], 12);
  return f;
}

const tapCount = (name: string): number => Number(fs.readFileSync(`/sys/class/net/${name}/statistics/rx_packets`, 'utf8'));

// ---- child roles (this file run with a role argument) ---------------------

/** Writes `len`-byte frames to tap queue fd for `ms`, spinning on a full queue. */
function childTapWrite(tap: string, len: number, ms: number): void {
  const fd = openTapQueue(tap);
  const buf = new Uint8Array(C.NET_HDR_BYTES + len);
  buf.set(frame(len), C.NET_HDR_BYTES);
  const iov = new IovecList();
  const addr = libc.mmap(buf.length, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS, -1);
  new Uint8Array(libc.view(addr, buf.length)).set(buf);
  iov.push(Number(addr), buf.length);
  const end = performance.now() + ms;
  let n = 0;
  while (performance.now() < end) for (let i = 0; i < 64; i++) if (writev(fd, iov) > 0) n++;
  process.stdout.write(`${n}\n`);
}

/** Writes passt-framed `len`-byte frames to fd 3 until killed (blocking writes of batches). */
function childSockWrite(len: number): void {
  const one = Buffer.alloc(4 + len);
  one.writeUInt32BE(len);
  Buffer.from(frame(len)).copy(one, 4);
  const batch = Buffer.concat(Array.from({ length: Math.max(1, Math.floor((256 * 1024) / one.length)) }, () => one));
  libc.setBlocking(3);
  for (let at = 0; ; at = (at + fs.writeSync(3, batch, at)) % batch.length);
}

/** The rx ceiling: reads and parses the framed stream on fd 3 for `ms`; prints the frames. */
function childSockRead(ms: number): void {
  libc.setNonBlocking(3);
  const size = 4 * MiB;
  const addr = libc.mmap(size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS, -1);
  const buf = new Uint8Array(libc.view(addr, size));
  const dv = new DataView(buf.buffer);
  const dst = new Uint8Array(C.MAX_GSO_FRAME + C.NET_HDR_BYTES);
  const iov = new IovecList();
  let start = 0;
  let end = 0;
  let frames = 0;
  // The clock starts with the first bytes (the writer starts as we do).
  let stop = Infinity;
  while (performance.now() < stop) {
    if (start > 0) {
      buf.copyWithin(0, start, end);
      end -= start;
      start = 0;
    }
    iov.clear().push(Number(addr) + end, size - end);
    const n = readv(3, iov);
    if (n > 0) end += n;
    if (n > 0 && stop === Infinity) stop = performance.now() + ms;
    // Like the device: each frame copied out after a header (here into one buffer).
    while (end - start >= 4 && end - start >= 4 + dv.getUint32(start)) {
      const len = dv.getUint32(start);
      dst.set(buf.subarray(start + 4, start + 4 + len), C.NET_HDR_BYTES);
      start += 4 + len;
      frames++;
    }
  }
  process.stdout.write(`${frames}\n`);
}

/** The rx latency ceiling: reads the socket on fd 3 on its event loop, writes 8 bytes to the pipe on fd 4 for each read; prints 0 once it reads. */
function childSockForward(): void {
  const ping = Buffer.alloc(8, 1);
  new net.Socket({ fd: 3, readable: true, writable: false }).on('data', () => fs.writeSync(4, ping));
  process.stdout.write('0\n');
}

// ---- the device side -----------------------------------------------------

/** Keeps the transmit ring full of `len`-byte frames for `ms`; returns frames the tap took. */
async function deviceTx(h: DeviceHarness, tx: DriverQueue, slots: number[], tap: string, len: number, ms: number): Promise<number> {
  const data = new Uint8Array(C.NET_HDR_BYTES + len);
  data.set(frame(len), C.NET_HDR_BYTES);
  for (const a of slots) h.mem.write(a, data);
  const bySlot = new Map<number, number>();
  const add = (a: number): void => void bySlot.set(tx.add([{ addr: a, len: data.length }]), a);
  for (const a of slots) add(a);
  tx.publish();
  tx.kick();
  const before = tapCount(tap);
  const end = performance.now() + ms;
  let spins = 0;
  while (bySlot.size > 0) {
    const used = tx.takeUsed();
    const more = performance.now() < end;
    for (const u of used) {
      const a = bySlot.get(u.id)!;
      bySlot.delete(u.id);
      if (more) add(a);
    }
    if (used.length && more) {
      tx.publish();
      tx.kick();
      spins = 0;
    } else await new Promise((r) => (++spins < 100 ? setImmediate(r) : setTimeout(r, 0)));
  }
  return tapCount(tap) - before;
}

/** Receives for `ms` while the writer fills the socket; returns frames delivered. Buffers are reposted as they come back. */
async function deviceRx(h: DeviceHarness, rx: DriverQueue, ms: number, onWay?: () => void): Promise<number> {
  // The writer is a process that takes a moment to start: the clock starts with its first frame.
  const ready = performance.now() + 10_000;
  while (rx.usedIdx() === rx.lastUsedIdx) {
    if (performance.now() > ready) throw new BenchError('no frame reached the device within 10 s');
    await new Promise((r) => setTimeout(r, 1));
  }
  const before = (await h.stats()).rxFrames!;
  const end = performance.now() + ms;
  let spins = 0;
  let midway = onWay;
  while (performance.now() < end) {
    const used = rx.takeUsed();
    for (const u of used) {
      const a = slotOf.get(u.id)!;
      slotOf.delete(u.id);
      slotOf.set(rx.add([{ addr: a, len: RX_BUF, write: true }]), a);
    }
    if (used.length) {
      rx.publish();
      rx.kick();
      spins = 0;
      if (midway && performance.now() > end - ms / 2) {
        midway();
        midway = undefined;
      }
    } else await new Promise((r) => (++spins < 100 ? setImmediate(r) : setTimeout(r, 0)));
  }
  return (await h.stats()).rxFrames! - before;
}
/** A 64-byte frame in passt's framing. */
function framed64(): Buffer {
  const one = Buffer.alloc(4 + 64);
  one.writeUInt32BE(64);
  Buffer.from(frame(64)).copy(one, 4);
  return one;
}

/** Writes RX_LAT_FRAMES frames to `fd`, RX_GAP_MS apart, each once `arrived` says the last arrived; returns each one's latency (µs). */
async function pacedLatencies(fd: number, arrived: () => Promise<void>): Promise<number[]> {
  const one = framed64();
  const lat: number[] = [];
  for (let i = 0; i < RX_LAT_FRAMES; i++) {
    await new Promise((r) => setTimeout(r, RX_GAP_MS));
    const t0 = performance.now();
    fs.writeSync(fd, one);
    await arrived();
    lat.push((performance.now() - t0) * 1000);
  }
  return lat;
}

/** The device's rx latency on an idle link (passt framing over a socketpair). */
async function deviceRxLatency(): Promise<number[]> {
  const [ours, theirs] = libc.socketpair();
  libc.setNonBlocking(theirs);
  const d = await DeviceHarness.start({ kind: 'net', numQueues: 2, backendFd: theirs, queueSize: QUEUE_SIZE, memSize: 64 * MiB, logLevel: 'warn', callPipes: true, options: { backend: 'passt', mac: MAC, mtu: 1500, tapOffloads: 0 }, ...DEVICE });
  libc.close(theirs);
  const irq = new PipeInterrupts(libc.dup(d.callFds[0]!));
  try {
    const [rx] = d.activate();
    const q = rx!;
    const bufs = new Map<number, number>();
    for (let k = 0; k < 64; k++) {
      const a = d.alloc(RX_BUF, 64);
      bufs.set(q.add([{ addr: a, len: RX_BUF, write: true }]), a);
    }
    q.publish();
    q.kick();
    return await pacedLatencies(ours, async () => {
      for (;;) {
        q.setUsedEvent(q.lastUsedIdx); // interrupt me at the next frame
        if (q.usedIdx() !== q.lastUsedIdx) break;
        await irq.wait();
      }
      const old = q.availIdx;
      for (const u of q.takeUsed()) {
        const a = bufs.get(u.id)!;
        bufs.delete(u.id);
        bufs.set(q.add([{ addr: a, len: RX_BUF, write: true }]), a);
      }
      q.publish();
      if (q.kickNeeded(old)) q.kick();
    });
  } finally {
    irq.close();
    libc.close(ours);
    await d.close();
  }
}

/** The same through one Node process reading the socket and writing a pipe. */
async function nodeRxLatency(): Promise<number[]> {
  const [ours, theirs] = libc.socketpair();
  const [pipeRd, pipeWr] = libc.pipe();
  const c = child('sock-forward', [], [theirs, pipeWr]);
  libc.close(theirs);
  libc.close(pipeWr);
  const irq = new PipeInterrupts(pipeRd);
  try {
    await c.out; // it reads
    return await pacedLatencies(ours, irq.wait);
  } finally {
    irq.close();
    libc.close(ours);
    await killChild(c.proc);
  }
}

/** Receive buffer address by head. */
const slotOf = new Map<number, number>();

function privateKiB(pid: number): number {
  const t = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  return ['Private_Clean', 'Private_Dirty'].reduce((s, f) => s + Number(new RegExp(`^${f}:\\s+(\\d+) kB`, 'm').exec(t)?.[1] ?? 0), 0);
}

function child(role: string, args: string[], fds: number | number[] = []): { out: Promise<number>; proc: ReturnType<typeof spawnTracked> } {
  const stdio: ('ignore' | 'pipe' | 'inherit' | number)[] = ['ignore', 'pipe', 'inherit', ...[fds].flat()];
  const proc = spawnTracked(process.execPath, ['--import', 'tsx', here, role, ...args], { stdio });
  const lines = readline.createInterface({ input: proc.stdout! });
  const out = new Promise<number>((resolve, reject) => {
    lines.once('line', (l) => resolve(Number(l)));
    proc.once('exit', (code) => reject(new BenchError(`the ${role} process ended (status ${code}) without a result`)));
  });
  out.catch(() => {});
  return { out, proc };
}

const fmt = (n: number, digits = 0): string => n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits });
const figure = (len: number, fps: number): string => (len === 64 ? `${fmt(fps)} pps` : `${fmt((fps * len * 8) / 1e9, 2)} Gbit/s`);

export async function run(): Promise<Figures> {
  if (process.getuid?.() !== 0) throw new BenchError('needs root: it creates a tap (CAP_NET_ADMIN) for the transmit cases');
  const tap = `svbench${process.pid % 100000}`;
  const results: CaseResult[] = [];
  let memoryKiB = 0;
  if (DEVICE.entry) say(`device: ${DEVICE.entry}`);
  say(`${ROUNDS} rounds of ${ROUND_MS} ms per case, device and ceiling alternating; ${fs.readFileSync('/proc/cpuinfo', 'utf8').match(/^processor/gm)?.length ?? '?'} CPUs`);

  // ---- guest rx latency on an idle link (device, then the ceiling) ----
  const latency = { device: await deviceRxLatency(), node: await nodeRxLatency() };
  if (process.env.NET_BENCH_ONLY === 'rx-latency') return latencyFigures(latency);

  // ---- guest tx through a tap ----
  const tapFd = openTapQueue(tap);
  let h: DeviceHarness | undefined;
  try {
    fs.writeFileSync(`/proc/sys/net/ipv6/conf/${tap}/disable_ipv6`, '1');
    execFileSync('ip', ['link', 'set', tap, 'up']);
    h = await DeviceHarness.start({ kind: 'net', numQueues: 2, backendFd: tapFd, queueSize: QUEUE_SIZE, memSize: 64 * MiB, logLevel: 'warn', options: { backend: 'tap', mac: MAC, mtu: 1500, tapOffloads: 0 }, ...DEVICE });
    const [, tx] = h.activate();
    say(`tap ${tap}, device pid ${h.pid}, jailed, seccomp enforce`);
    const slots = Array.from({ length: QUEUE_SIZE }, () => h!.alloc(C.NET_HDR_BYTES + 65536, 64));
    for (const len of SIZES) {
      const dev: number[] = [];
      const top: number[] = [];
      await deviceTx(h, tx!, slots, tap, len, ROUND_MS / 4); // warm-up
      for (let i = 0; i < ROUNDS; i++) {
        const t0 = performance.now();
        const n = await deviceTx(h, tx!, slots, tap, len, ROUND_MS);
        dev.push(n / ((performance.now() - t0) / 1000));
        // The writer counts the frames the tap took (each write is one frame).
        const c = child('tap-write', [tap, String(len), String(ROUND_MS)]);
        top.push((await c.out) / (ROUND_MS / 1000));
        await killChild(c.proc);
      }
      results.push({ name: `${len === 65536 ? '64KiB' : `${len}B`} tx`, len, device: median(dev), ceiling: median(top) });
    }
    const s = await h.stats();
    if (s.txRefused) say(`note: the tap refused ${s.txRefused} frames`);
  } finally {
    if (h) await h.close();
    libc.close(tapFd);
  }

  // ---- guest rx through passt's framing ----
  for (const len of SIZES) {
    const dev: number[] = [];
    const top: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      // The device: a fresh socketpair, the writer on one end, the device on the other.
      {
        const [ours, theirs] = libc.socketpair();
        libc.setNonBlocking(theirs);
        const d = await DeviceHarness.start({ kind: 'net', numQueues: 2, backendFd: theirs, queueSize: QUEUE_SIZE, memSize: 64 * MiB, logLevel: 'warn', options: { backend: 'passt', mac: MAC, mtu: 65520, tapOffloads: 0 }, ...DEVICE });
        libc.close(theirs);
        try {
          const [rx] = d.activate();
          slotOf.clear();
          for (let k = 0; k < QUEUE_SIZE; k++) {
            const a = d.alloc(RX_BUF, 64);
            slotOf.set(rx!.add([{ addr: a, len: RX_BUF, write: true }]), a);
          }
          rx!.publish();
          rx!.kick();
          const w = child('sock-write', [String(len)], ours);
          libc.close(ours);
          await deviceRx(d, rx!, ROUND_MS / 4);
          const t0 = performance.now();
          const n = await deviceRx(d, rx!, ROUND_MS, len === 1500 && i === 1 ? () => (memoryKiB = privateKiB(d.pid)) : undefined);
          dev.push(n / ((performance.now() - t0) / 1000));
          await killChild(w.proc);
        } finally {
          await d.close();
        }
      }
      // The ceiling: the same writer, one Node process reading the stream.
      {
        const [a, b] = libc.socketpair();
        const w = child('sock-write', [String(len)], a);
        const r = child('sock-read', [String(ROUND_MS)], b);
        libc.close(a);
        libc.close(b);
        top.push((await r.out) / (ROUND_MS / 1000));
        await killChild(w.proc);
        await killChild(r.proc);
      }
    }
    results.push({ name: `${len === 65536 ? '64KiB' : `${len}B`} rx`, len, device: median(dev), ceiling: median(top) });
  }

  say();
  printTable(
    ['case', 'backend', 'device', 'ceiling (one Node process)', 'ratio'],
    results.map((r) => [r.name, r.name.endsWith('tx') ? 'tap' : 'passt framing', figure(r.len, r.device), figure(r.len, r.ceiling), fmt(r.device / r.ceiling, 2)]),
  );
  say();
  say(`private memory of a net device process serving 1500-byte rx (Private_Clean + Private_Dirty): ${fmt(memoryKiB / 1024, 1)} MiB`);
  const cases = results.map((r) => {
    const base = { case: r.name, ratio: Number((r.device / r.ceiling).toFixed(3)) };
    return r.len === 64 ? { ...base, pps: Math.round(r.device), ceilingPps: Math.round(r.ceiling) } : { ...base, gbps: Number(((r.device * r.len * 8) / 1e9).toFixed(3)), ceilingGbps: Number(((r.ceiling * r.len * 8) / 1e9).toFixed(3)) };
  });
  return { cases, deviceMemoryMiB: Number((memoryKiB / 1024).toFixed(1)), ...latencyFigures(latency) };
}

/** Prints the rx latency table; returns its figures. */
function latencyFigures(l: { device: number[]; node: number[] }): Figures {
  say();
  say(`guest rx latency on an idle link: a 64-byte frame every ${RX_GAP_MS} ms, from its write to passt's end of the socket to the driver seeing it used`);
  const row = (name: string, xs: number[]): (string | number)[] => [name, fmt(xs.length), fmt(percentile(xs, 50)), fmt(percentile(xs, 99)), fmt(percentile(xs, 99.9))];
  printTable(['case', 'frames', 'p50 µs', 'p99 µs', 'p99.9 µs'], [row('device', l.device), row('Node process reading the socket, writing a pipe', l.node)]);
  const r = (xs: number[], p: number): number => Math.round(percentile(xs, p));
  return { rxLatency: { p50us: r(l.device, 50), p99us: r(l.device, 99), p999us: r(l.device, 99.9), nodeP50us: r(l.node, 50), nodeP99us: r(l.node, 99), nodeP999us: r(l.node, 99.9) } };
}

const role = process.argv[2];
if (isMain(import.meta.url)) {
  if (role === 'tap-write') childTapWrite(process.argv[3]!, Number(process.argv[4]), Number(process.argv[5]));
  else if (role === 'sock-write') childSockWrite(Number(process.argv[3]));
  else if (role === 'sock-read') childSockRead(Number(process.argv[3]));
  else if (role === 'sock-forward') childSockForward();
  else await runStandalone('net', run);
}
