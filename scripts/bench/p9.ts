// scripts/bench/p9.ts — owns the virtio-9p benchmark: the same 9P2000.L
// client code (src/devices/harness/p9-driver.ts) drives, on the same folder,
//   - splitvm's server over a TCP socket (`splitvm device 9p --listen`: a
//     jailed device process per client, seccomp enforced),
//   - Debian's diod over a TCP socket (`diod -f -n`, the peer),
//   - splitvm's device process over its virtqueue (the device harness, as a
//     guest driver would: the path a VM takes),
// for: walk+getattr+clunk of a file two levels down, 4 KiB reads at random
// offsets of an open 64 MiB file, 1 MiB reads (in msize-sized Treads), and
// small files (create, write 4 KiB, remove), each at 1 and 8
// requests in flight, 2 s per case. Prints ops/s, the ratio to diod, and
// the private memory of one 9p device process; with --json the last line is
// one JSON object (index.ts).
//   npm run bench -- p9
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { DeviceHarness, MiB, P9Client, QueueTransport, SocketTransport } from '../../src/devices/harness/index.js';
import * as libc from '../../src/sys/libc.js';
import { BenchError, killChild, makeTempDir, printTable, say, spawnTracked, splitvmBin, type Figures } from './lib.js';

export const title = '9P2000.L: splitvm (socket, virtqueue) vs diod (socket) on the same folder';

const SECONDS = Number(process.env.P9_BENCH_SECONDS ?? 2);
const MSIZE = MiB + 4096;
const BIG = 64 * MiB;
const DEPTHS = [1, 8];
const O_RDONLY = 0;
const O_RDWR = 2;
const O_CREAT = 0o100;
const ROOT = 1;

type Op = (c: P9Client, worker: number, i: number) => Promise<number>;

interface Case {
  name: string;
  /** ops/s means this unit */
  unit: string;
  setup?: (c: P9Client, worker: number) => Promise<void>;
  teardown?: (c: P9Client, worker: number) => Promise<void>;
  op: Op;
}

const fileFid = (w: number): number => 100 + w;
const dirFid = (w: number): number => 200 + w;
const tmpFid = (w: number): number => 300 + w;

function randomBlock(size: number): number {
  return Math.floor(Math.random() * (BIG / size)) * size;
}

const CASES: Case[] = [
  {
    name: 'walk+getattr+clunk',
    unit: 'ops/s',
    op: async (c, w) => {
      await c.walk(ROOT, tmpFid(w), ['dir', 'file']);
      await c.getattr(tmpFid(w));
      await c.clunk(tmpFid(w));
      return 1;
    },
  },
  {
    name: '4 KiB read',
    unit: 'ops/s',
    op: async (c, w) => {
      const d = await c.read(fileFid(w), randomBlock(4096), 4096);
      if (d.length !== 4096) throw new BenchError(`a 4 KiB read returned ${d.length} bytes`);
      return 1;
    },
  },
  {
    name: '1 MiB read',
    unit: 'ops/s (= MiB/s)',
    op: async (c, w) => {
      const at = randomBlock(MiB);
      const chunk = c.msize - 24;
      const parts = [];
      for (let off = 0; off < MiB; off += chunk) parts.push(c.read(fileFid(w), at + off, Math.min(chunk, MiB - off)));
      const got = (await Promise.all(parts)).reduce((n, d) => n + d.length, 0);
      if (got !== MiB) throw new BenchError(`a 1 MiB read returned ${got} bytes`);
      return 1;
    },
  },
  {
    name: 'small file create/write/remove',
    unit: 'ops/s',
    setup: async (c, w) => {
      await c.walk(ROOT, dirFid(w), ['small']);
    },
    teardown: (c, w) => c.clunk(dirFid(w)),
    op: async (c, w, i) => {
      const name = `f${w}-${i}`;
      await c.walk(dirFid(w), tmpFid(w), []);
      await c.lcreate(tmpFid(w), name, O_RDWR | O_CREAT, 0o644);
      await c.write(tmpFid(w), 0, PAYLOAD);
      await c.remove(tmpFid(w)); // diod has no Tunlinkat: Tremove (which also clunks) on both

      return 1;
    },
  },
];
const PAYLOAD = new Uint8Array(4096).fill(0x39);

async function measure(c: P9Client, kase: Case, depth: number): Promise<number> {
  for (let w = 0; w < depth; w++) await kase.setup?.(c, w);
  const end = performance.now() + SECONDS * 1000;
  let ops = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: depth }, async (_, w) => {
      for (let i = 0; performance.now() < end; i++) {
        const n = await kase.op(c, w, i); // not `ops += await …`: that would add to the value read before the await
        ops += n;
      }
    }),
  );
  const secs = (performance.now() - t0) / 1000;
  for (let w = 0; w < depth; w++) await kase.teardown?.(c, w);
  return ops / secs;
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

async function connect(port: number): Promise<net.Socket> {
  for (let tries = 0; ; tries++) {
    try {
      const sock = net.connect(port, '127.0.0.1');
      await new Promise<void>((resolve, reject) => {
        sock.once('connect', resolve);
        sock.once('error', reject);
      });
      sock.setNoDelay(true);
      return sock;
    } catch (e) {
      if (tries > 50) throw new BenchError(`cannot connect to 127.0.0.1:${port}: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

async function socketClient(port: number, aname: string): Promise<P9Client> {
  const c = new P9Client(new SocketTransport(await connect(port)));
  await c.version(MSIZE);
  await c.attach(ROOT, aname, 'root', 0);
  return c;
}

/** Opens the big file on fids 100+w for every worker (the read cases share them). */
async function openBig(c: P9Client): Promise<void> {
  for (let w = 0; w < Math.max(...DEPTHS); w++) {
    await c.walk(ROOT, fileFid(w), ['big']);
    await c.lopen(fileFid(w), O_RDONLY);
  }
}

function privateMiB(pid: number): number {
  const rollup = fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8');
  const smaps = fs.readFileSync(`/proc/${pid}/smaps`, 'utf8');
  const kib = (text: string, field: string): number => [...text.matchAll(new RegExp(`^${field}:\\s+(\\d+) kB`, 'gm'))].reduce((n, m) => n + Number(m[1]), 0);
  const memfd = smaps.split(/^(?=[0-9a-f]+-[0-9a-f]+ )/m).filter((b) => b.includes('memfd:splitvm-harness-ram')).join('\n');
  const priv = (t: string): number => kib(t, 'Private_Clean') + kib(t, 'Private_Dirty');
  return (priv(rollup) - priv(memfd)) / 1024;
}

/** Makes every folder below `p` (and `p`) 0777 and every file 0666. */
function openTree(p: string): void {
  const dir = fs.lstatSync(p).isDirectory();
  fs.chmodSync(p, dir ? 0o777 : 0o666);
  if (dir) for (const e of fs.readdirSync(p)) openTree(path.join(p, e));
}

export async function run(): Promise<Figures> {
  if (!fs.existsSync('/usr/sbin/diod')) throw new BenchError('diod is not installed (Debian package diod)');
  const dir = makeTempDir('p9');
  fs.mkdirSync(path.join(dir, 'dir'));
  fs.writeFileSync(path.join(dir, 'dir', 'file'), 'x');
  fs.mkdirSync(path.join(dir, 'small'));
  const big = Buffer.alloc(BIG);
  for (let i = 0; i < BIG; i += 4096) big.writeUInt32LE(i, i);
  fs.writeFileSync(path.join(dir, 'big'), big);
  // Run as root, `splitvm device 9p` serves the share as nobody (its --uid/--gid default) while diod
  // serves it as root: open the folder to every user (diod's root may not bypass permissions).
  if (process.getuid?.() === 0) openTree(dir);
  say(`folder ${dir} (${fs.statfsSync(dir).type.toString(16)} file system), msize asked ${MSIZE}, ${SECONDS} s per case`);

  const ourPort = await freePort();
  const ours = spawnTracked(process.execPath, [splitvmBin, 'device', '9p', '--share', dir, '--listen', `127.0.0.1:${ourPort}`], { stdio: ['ignore', 'pipe', 'ignore'] });
  const diodPort = await freePort();
  const diod = spawnTracked('/usr/sbin/diod', ['-f', '-n', '-l', `127.0.0.1:${diodPort}`, '-e', dir, '-L', 'stderr', '-c', '/dev/null'], { stdio: ['ignore', 'ignore', 'ignore'] });
  const rootFd = libc.open(dir, libc.O_PATH | libc.O_DIRECTORY);
  const h = await DeviceHarness.start({ kind: 'p9', options: { tag: 'bench', readOnly: false }, backendFd: rootFd, memSize: 64 * MiB, queueSize: 128, logLevel: 'warn' });
  try {
    const [q] = h.activate();
    const viaQueue = new P9Client(new QueueTransport(h, q!, MSIZE, Math.max(...DEPTHS)));
    await viaQueue.version(MSIZE);
    await viaQueue.attach(ROOT);
    const targets: [string, P9Client][] = [
      ['splitvm (socket)', await socketClient(ourPort, dir)],
      ['diod (socket)', await socketClient(diodPort, dir)],
      ['splitvm (virtqueue)', viaQueue],
    ];
    say(`msize agreed: ${targets.map(([n, c]) => `${n} ${c.msize}`).join(', ')}`);
    for (const [, c] of targets) await openBig(c);
    const results: Record<string, Record<string, number>> = {};
    const rows: (string | number)[][] = [];
    for (const kase of CASES) {
      for (const depth of DEPTHS) {
        const key = `${kase.name} qd${depth}`;
        const r: Record<string, number> = {};
        for (const [name, c] of targets) r[name] = await measure(c, kase, depth);
        const ratio = r['splitvm (socket)']! / r['diod (socket)']!;
        results[key] = { splitvmSocket: Math.round(r['splitvm (socket)']!), diodSocket: Math.round(r['diod (socket)']!), splitvmVirtqueue: Math.round(r['splitvm (virtqueue)']!), ratioToDiod: Number(ratio.toFixed(2)) };
        rows.push([key, kase.unit, Math.round(r['splitvm (socket)']!), Math.round(r['diod (socket)']!), Math.round(r['splitvm (virtqueue)']!), ratio.toFixed(2)]);
      }
    }
    printTable(['case', 'unit', 'splitvm socket', 'diod socket', 'splitvm virtqueue', 'splitvm/diod'], rows);
    const mem = privateMiB(h.pid);
    say(`private memory of the 9p device process (virtqueue, after the run, guest-RAM mapping excluded): ${mem.toFixed(1)} MiB`);
    for (const [, c] of targets.slice(0, 2)) c.transport.close();
    return { seconds: SECONDS, results, deviceMemoryMiB: Number(mem.toFixed(1)) };
  } finally {
    await h.close();
    libc.close(rootFd);
    await Promise.all([killChild(ours), killChild(diod)]);
  }
}
