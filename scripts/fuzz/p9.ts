// A mutation fuzzer for the virtio-9p device process, through the device
// harness: the real device, in its jail under its enforcing policy, on a
// scratch share with a canary folder beside it. Each round is one of:
// - a well-formed 9P2000.L request with random arguments (fids from a small
//   pool so they collide, names such as "..", "", "a/b", very long ones,
//   symlinks pointing out, random offsets, counts, flags and modes);
// - a mutated one (bytes flipped, cut short, grown, its size field lying);
// - a ring of random descriptors (as the blk fuzzer's).
// Every request must be answered (an R-message or Rlerror with its tag),
// a malformed ring may only cost a needs-reset, the device must stay alive,
// and nothing beside the share may change. A finding prints its seed.
//   npm run fuzz -- p9 [--seconds N] [--seed S]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { DeviceHarness, FOUR_GIB, MiB, P9Client, P9ClientError, QueueTransport, type DriverQueue } from '../../src/devices/harness/index.js';
import * as libc from '../../src/sys/libc.js';
import { T } from '../../src/devices/p9/protocol.js';
import { Writer } from '../../src/devices/p9/wire.js';
import { ANSWER_MS, fuzzMain, rng } from './lib.js';

const QUEUE_SIZE = 16;
const MEM_SIZE = 16 * MiB;
const MSIZE = 64 * 1024;

interface Counts {
  rounds: number;
  answered: number;
  errors: number;
  mutated: number;
  malformedRings: number;
  needsReset: number;
}

class Finding extends Error {}

const NAMES = ['a', 'b', 'dir', 'file', 'out', '..', '.', '', 'a/b', '/etc', 'n'.repeat(255), 'n'.repeat(256), 'x\0y', 'fifo', 'ln'];

function request(r: () => number): { type: number; body: (w: Writer) => Writer } {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const fid = (): number => pick([0, 1, 2, 3, 4, 5, 6, 7, 0xffffffff]);
  const name = (): string => pick(NAMES);
  const u64 = (): number => pick([0, 1, 4096, Math.floor(r() * 2 ** 32), 2 ** 53 - 1]);
  const count = (): number => pick([0, 1, 100, 8192, MSIZE, 0xffffffff]);
  const mode = (): number => pick([0o644, 0o755, 0o100644, 0o010644, 0o020666, 0o060666, 0o140644, 0xffffffff]);
  const flags = (): number => pick([0, 1, 2, 0o100, 0o1000, 0o2000, 0o200000, 0o400000, 0o40000, Math.floor(r() * 2 ** 32)]);
  const menu: [number, (w: Writer) => Writer][] = [
    [T.version, (w) => w.u32(pick([MSIZE, 4096, 100, 0xffffffff])).str(pick(['9P2000.L', '9P2000', '']))],
    [T.attach, (w) => w.u32(fid()).u32(0xffffffff).str('root').str(name()).u32(0)],
    [T.walk, (w) => {
      const n = pick([0, 1, 2, 3, 16, 17]);
      w.u32(fid()).u32(fid()).u16(n);
      for (let i = 0; i < n; i++) w.str(name());
      return w;
    }],
    [T.clunk, (w) => w.u32(fid())],
    [T.remove, (w) => w.u32(fid())],
    [T.getattr, (w) => w.u32(fid()).u64(0x3fff)],
    [T.setattr, (w) => w.u32(fid()).u32(Math.floor(r() * 0x200)).u32(mode()).u32(pick([0, 65534, 0xffffffff])).u32(0).u64(pick([0, 10, 1 << 20])).u64(u64()).u64(0).u64(u64()).u64(0)],
    [T.statfs, (w) => w.u32(fid())],
    [T.lopen, (w) => w.u32(fid()).u32(flags())],
    [T.lcreate, (w) => w.u32(fid()).str(name()).u32(flags()).u32(mode()).u32(0)],
    [T.read, (w) => w.u32(fid()).u64(u64()).u32(count())],
    [T.write, (w) => {
      const len = pick([0, 1, 100, 5000]);
      return w.u32(fid()).u64(pick([0, 10, 1 << 30])).u32(r() < 0.8 ? len : len + 10).bytes(new Uint8Array(len).fill(0x5a));
    }],
    [T.readdir, (w) => w.u32(fid()).u64(u64()).u32(count())],
    [T.mkdir, (w) => w.u32(fid()).str(name()).u32(mode()).u32(0)],
    [T.mknod, (w) => w.u32(fid()).str(name()).u32(mode()).u32(1).u32(3).u32(0)],
    [T.symlink, (w) => w.u32(fid()).str(name()).str(pick(['../outside', '/etc/passwd', '/proc/self/root', 'a', ''])).u32(0)],
    [T.readlink, (w) => w.u32(fid())],
    [T.link, (w) => w.u32(fid()).u32(fid()).str(name())],
    [T.rename, (w) => w.u32(fid()).u32(fid()).str(name())],
    [T.renameat, (w) => w.u32(fid()).str(name()).u32(fid()).str(name())],
    [T.unlinkat, (w) => w.u32(fid()).str(name()).u32(pick([0, 0x200, 0xffffffff]))],
    [T.fsync, (w) => w.u32(fid()).u32(pick([0, 1]))],
    [T.lock, (w) => w.u32(fid()).u8(pick([0, 1, 2, 9])).u32(pick([0, 1])).u64(u64()).u64(u64()).u32(1).str('fuzz')],
    [T.getlock, (w) => w.u32(fid()).u8(pick([0, 1, 2, 9])).u64(u64()).u64(u64()).u32(1).str('fuzz')],
    [T.xattrwalk, (w) => w.u32(fid()).u32(fid()).str(pick(['', 'user.x']))],
    [T.xattrcreate, (w) => w.u32(fid()).str('user.x').u64(u64()).u32(0)],
    [T.flush, (w) => w.u16(Math.floor(r() * 65536))],
    [T.auth, (w) => w.u32(fid()).str('root').str('').u32(0)],
    [pick([0, 6, 9, 99, 255]), (w) => w],
  ];
  const [type, body] = pick(menu);
  return { type, body };
}

function mutate(r: () => number, msg: Uint8Array): Uint8Array {
  const c = r();
  if (c < 0.3) return msg.subarray(0, Math.floor(r() * msg.length)); // cut short (its size field now lies)
  const out = c < 0.5 ? new Uint8Array(msg.length + Math.floor(r() * 64)) : new Uint8Array(msg);
  out.set(msg.subarray(0, out.length));
  for (let i = 0, n = 1 + Math.floor(r() * 6); i < n; i++) out[Math.floor(r() * out.length)] = Math.floor(r() * 256);
  if (r() < 0.3) new DataView(out.buffer).setUint32(0, Math.floor(r() * 2 ** 32), true);
  out[5] = 0x42; // keep the tag recognisable in the reply
  out[6] = 0x42;
  return out;
}

function chaosRound(r: () => number, q: DriverQueue): void {
  const addr = (): number => {
    const c = r();
    if (c < 0.5) return FOUR_GIB + Math.floor(r() * MEM_SIZE);
    if (c < 0.7) return Math.floor(r() * 65536);
    return Math.floor(r() * 2 ** 32);
  };
  const len = (): number => [0, 1, 6, 7, 11, 512, 65536, 0xffffffff][Math.floor(r() * 8)]!;
  for (let i = 0, n = 1 + Math.floor(r() * 8); i < n; i++) {
    q.writeDesc(Math.floor(r() * QUEUE_SIZE), { addr: addr(), len: len(), flags: Math.floor(r() * 8), next: Math.floor(r() * (QUEUE_SIZE + 4)) });
  }
  const entries = 1 + Math.floor(r() * 4);
  for (let i = 0; i < entries; i++) q.setAvailEntry((q.availIdx + i) % QUEUE_SIZE, Math.floor(r() * (QUEUE_SIZE + 2)));
  q.setAvailIdx(r() < 0.1 ? Math.floor(r() * 65536) : q.availIdx + entries);
  q.kick();
}

function listing(dir: string): string {
  return JSON.stringify(fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).sort().map((p) => [p, fs.lstatSync(path.join(dir, p)).mtimeMs]));
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<T>((_, reject) => (timer = setTimeout(() => reject(new Finding(`${what}: no answer in ${ms} ms`)), ms)))]).finally(() => clearTimeout(timer));
}

async function fuzz(seconds: number, seed: number): Promise<Counts> {
  const top = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-fuzz9p-'));
  const share = path.join(top, 'share');
  fs.mkdirSync(path.join(share, 'dir'), { recursive: true });
  fs.writeFileSync(path.join(share, 'file'), 'file');
  fs.symlinkSync('../outside', path.join(share, 'out'));
  fs.mkdirSync(path.join(top, 'outside'));
  fs.writeFileSync(path.join(top, 'outside', 'canary'), 'canary');
  const outsideBefore = listing(path.join(top, 'outside'));
  const rootFd = libc.open(share, libc.O_PATH | libc.O_DIRECTORY);
  const h = await DeviceHarness.start({ kind: 'p9', options: { tag: 'fuzz', readOnly: false }, backendFd: rootFd, queueSize: QUEUE_SIZE, memSize: MEM_SIZE, logLevel: 'fatal' });
  const r = rng(seed);
  const n: Counts = { rounds: 0, answered: 0, errors: 0, mutated: 0, malformedRings: 0, needsReset: 0 };
  const end = Date.now() + seconds * 1000;
  const session = async (q: DriverQueue): Promise<P9Client> => {
    const c = new P9Client(new QueueTransport(h, q, MSIZE, 4));
    await withTimeout(c.version(MSIZE), ANSWER_MS, 'Tversion');
    await withTimeout(c.attach(0), ANSWER_MS, 'Tattach');
    return c;
  };
  try {
    let [q] = h.activate();
    let c = await session(q!);
    while (Date.now() < end) {
      n.rounds++;
      const kind = r();
      if (kind < 0.15) {
        n.malformedRings++;
        chaosRound(r, q!);
        await new Promise((res) => setTimeout(res, 5));
      } else {
        const { type, body } = request(r);
        try {
          if (kind < 0.4) {
            n.mutated++;
            const w = body(new Writer().u32(0).u8(type).u16(0x4242));
            w.patch32(0, w.length);
            const reply = await withTimeout(c.transport.rpc(mutate(r, w.view()), 0x4242), ANSWER_MS, `a mutated message of type ${type}`);
            if (reply.length < 7 || reply[5] !== 0x42 || reply[6] !== 0x42 || new DataView(reply.buffer, reply.byteOffset).getUint32(0, true) !== reply.length) {
              throw new Finding(`a mutated message of type ${type} got a malformed reply`);
            }
          } else await withTimeout(c.rpc(type, body), ANSWER_MS, `a request of type ${type}`);
          n.answered++;
        } catch (e) {
          // Rlerror is an answer; a message too short to answer (no tag) may only stop the queue (needs-reset).
          if (e instanceof P9ClientError) n.errors++;
          else if (!h.received.some((m) => m.type === 'needs-reset')) throw e instanceof Finding ? e : new Finding(`request of type ${type}: ${(e as Error).message}`);
        }
      }
      if (!h.alive) throw new Finding(`the device died (${JSON.stringify(await h.exited)})`);
      if (kind < 0.15 || n.rounds % 100 === 0 || h.received.some((m) => m.type === 'needs-reset')) {
        n.needsReset += h.received.filter((m) => m.type === 'needs-reset').length;
        h.received.length = 0;
        await h.reset(ANSWER_MS).catch((e: Error) => {
          throw new Finding(`the device did not finish a reset: ${e.message}`);
        });
        [q] = h.activate();
        c = await session(q!);
      }
    }
    await h.stats(ANSWER_MS).catch(() => {
      throw new Finding('the device stopped answering its control channel');
    });
    if (listing(path.join(top, 'outside')) !== outsideBefore) throw new Finding('the folder beside the share changed');
    if (fs.readdirSync(top).sort().join() !== 'outside,share') throw new Finding(`something appeared beside the share: ${fs.readdirSync(top).join(', ')}`);
    return n;
  } catch (e) {
    if (e instanceof Finding) {
      e.message = `round ${n.rounds}: ${e.message}\nreplay: npm run fuzz -- p9 --seed ${seed} --seconds ${seconds}\ndevice log tail:\n${h.logs.slice(-10).join('')}`;
    }
    throw e;
  } finally {
    await h.close().catch(() => {});
    libc.close(rootFd);
    fs.rmSync(top, { recursive: true, force: true });
  }
}

process.exitCode = await fuzzMain('p9', 'jailed device under its enforcing policy', async (seconds, seed) => {
  const n = await fuzz(seconds, seed);
  return `${n.rounds} rounds: ${n.answered} requests answered (${n.errors} with Rlerror, ${n.mutated} mutated), ${n.malformedRings} malformed rings (${n.needsReset} needs-reset)`;
});
