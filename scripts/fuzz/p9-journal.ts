// A mutation fuzzer for what a 9p device's successor reads after a death:
// the fid journal (src/devices/p9/journal.ts), which a taken-over
// predecessor may have filled with anything. Each round a real session
// writes a journal on a scratch share (walks, opens, renames, clunks over
// names such as "..", symlinks out, long ones), the fuzzer mutates it
// (bytes flipped, slots copied over each other, the header's msize and
// high-water mark lied about, whole slots of noise), and a fresh session
// takes it over, then serves a few requests on the fids it kept. The
// successor must not throw, must keep at most the fids and open files a
// session may hold, must never open what lies beside the share (a canary
// file there must stay closed and unchanged), and must leave the share
// itself as the predecessor left it (taking over opens, never creates or
// truncates). In-process: the journal is parsed by the same code the jailed
// device runs, with no jail needed to see what it does. A finding prints
// its seed.
//   npm run fuzz -- p9-journal [--seconds N] [--seed S]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { P9Client, P9ClientError } from '../../src/devices/harness/p9-driver.js';
import { FidJournal, P9_JOURNAL_BYTES } from '../../src/devices/p9/journal.js';
import { MAX_FIDS, MAX_OPEN_FIDS } from '../../src/devices/p9/protocol.js';
import { P9Session } from '../../src/devices/p9/session.js';
import { Share } from '../../src/devices/p9/share.js';
import * as libc from '../../src/sys/libc.js';
import { inProcess } from '../../src/devices/harness/p9-in-process.js';
import { fuzzMain, rng } from './lib.js';

class Finding extends Error {}

const NAMES = ['a', 'b', 'dir', 'file', 'link', '..', '.', '', 'a/b', 'n'.repeat(255)];
const nextTurn = (): Promise<void> => new Promise((r) => setImmediate(r));

/** Every file below `dir`, with its size and content hash stand-in (its bytes), as one string. */
function snapshot(dir: string): string {
  const out: string[] = [];
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true }).sort((x, y) => x.name.localeCompare(y.name))) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      out.push(`${path.relative(dir, p)}:${e.isFile() ? fs.readFileSync(p, 'hex') : e.isSymbolicLink() ? fs.readlinkSync(p) : 'dir'}`);
    }
  };
  walk(dir);
  return out.join('\n');
}

/** Gives every regular file below `dir` content again (same inodes), so a takeover that truncated one would show. */
function refill(dir: string): void {
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) refill(p);
    else if (e.isFile()) fs.writeFileSync(p, `content of ${e.name}`);
  }
}

/** The fds this process holds that name `file`. */
function fdsOn(file: string): number {
  return fs.readdirSync('/proc/self/fd').filter((fd) => {
    try {
      return fs.readlinkSync(`/proc/self/fd/${fd}`) === file;
    } catch {
      return false;
    }
  }).length;
}

async function predecessor(share: Share, view: DataView, r: () => number): Promise<void> {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)]!;
  const session = new P9Session(share, undefined, new FidJournal(view));
  const c = new P9Client(inProcess(session));
  await c.version(8192);
  await c.attach(0);
  for (let i = 0; i < 40; i++) {
    const fid = 1 + Math.floor(r() * 8);
    try {
      const op = pick(['walk', 'walk', 'open', 'clunk', 'rename', 'create'] as const);
      if (op === 'walk') await c.walk(pick([0, fid]), 1 + Math.floor(r() * 8), [pick(NAMES), ...(r() < 0.3 ? [pick(NAMES)] : [])]);
      else if (op === 'open') await c.lopen(fid, pick([0, 1, 2, 0o2000 | 1, 0o1000 | 1]));
      else if (op === 'clunk') await c.clunk(fid);
      else if (op === 'rename') await c.renameat(0, pick(NAMES), 0, pick(NAMES));
      else await c.lcreate(fid, `f${i}`, 2, 0o644);
    } catch (e) {
      if (!(e instanceof P9ClientError)) throw e;
    }
  }
  await nextTurn(); // the journal is written
  session.close();
}

function mutate(bytes: Uint8Array, r: () => number): void {
  const n = 1 + Math.floor(r() * 8);
  for (let i = 0; i < n; i++) {
    const kind = Math.floor(r() * 5);
    if (kind === 0) bytes[Math.floor(r() * 64 * 1024)]! ^= 1 << Math.floor(r() * 8);
    else if (kind === 1) new DataView(bytes.buffer).setUint32(8, Math.floor(r() * 2 * MAX_FIDS), true); // the high-water mark
    else if (kind === 2) new DataView(bytes.buffer).setUint32(4, Math.floor(r() * 2 ** 32), true); // the msize
    else if (kind === 3) bytes.copyWithin(64 + 1024 * Math.floor(r() * 16), 64 + 1024 * Math.floor(r() * 16), 64 + 1024 * Math.floor(r() * 16) + 1024);
    else for (let j = 0, at = 64 + 1024 * Math.floor(r() * 16); j < 1024; j++) bytes[at + j] = Math.floor(r() * 256);
  }
}

async function fuzz(seconds: number, seed: number): Promise<{ rounds: number; kept: number; dropped: number }> {
  const r = rng(seed);
  const top = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-fuzz-journal-'));
  const shareDir = path.join(top, 'share');
  const canary = path.join(top, 'canary');
  const totals = { rounds: 0, kept: 0, dropped: 0 };
  try {
    fs.writeFileSync(canary, 'canary');
    const deadline = Date.now() + seconds * 1000;
    while (Date.now() < deadline) {
      fs.rmSync(shareDir, { recursive: true, force: true });
      fs.mkdirSync(path.join(shareDir, 'dir'), { recursive: true });
      fs.writeFileSync(path.join(shareDir, 'file'), 'file');
      fs.writeFileSync(path.join(shareDir, 'dir', 'a'), 'inner');
      fs.symlinkSync('../canary', path.join(shareDir, 'link'));
      const rootFd = libc.open(shareDir, libc.O_PATH | libc.O_DIRECTORY | libc.O_CLOEXEC);
      try {
        const share = new Share(rootFd, false);
        const view = new DataView(new ArrayBuffer(P9_JOURNAL_BYTES));
        await predecessor(share, view, r);
        mutate(new Uint8Array(view.buffer), r);
        refill(shareDir);
        const before = snapshot(shareDir);
        const successor = new P9Session(share, undefined, new FidJournal(view));
        let took: { kept: number; dropped: number };
        try {
          took = successor.takeOver();
        } catch (e) {
          throw new Finding(`takeOver threw: ${(e as Error).stack ?? e}`);
        }
        if (successor.fidCount > MAX_FIDS || successor.openFids > MAX_OPEN_FIDS) throw new Finding(`${successor.fidCount} fids, ${successor.openFids} open, past the limits`);
        if (fdsOn(canary) > 0) throw new Finding('the successor opened the file beside the share');
        const c = new P9Client(inProcess(successor));
        for (let fid = 0; fid < 9; fid++) {
          try {
            await c.getattr(fid);
            await c.read(fid, 0, 64);
          } catch (e) {
            if (!(e instanceof P9ClientError)) throw new Finding(`a request on a taken-over fid failed outside 9P: ${(e as Error).message}`);
          }
        }
        if (snapshot(shareDir) !== before) throw new Finding('taking over changed the share');
        successor.close();
        totals.kept += took.kept;
        totals.dropped += took.dropped;
        totals.rounds++;
      } finally {
        libc.close(rootFd);
      }
      if (fs.readFileSync(canary, 'utf8') !== 'canary' || fs.readdirSync(top).sort().join() !== 'canary,share') throw new Finding('something beside the share changed');
    }
    return totals;
  } finally {
    fs.rmSync(top, { recursive: true, force: true });
  }
}

process.exitCode = await fuzzMain('p9-journal', "a 9p successor taking over a mutated fid journal, in-process", async (seconds, seed) => {
  const n = await fuzz(seconds, seed);
  return `${n.rounds} rounds: ${n.kept} fids taken over, ${n.dropped} dropped`;
});
