// Device-process tests for virtio-9p: the real device process (built entry,
// in its bubblewrap jail, seccomp policy enforced) serving a temporary share,
// driven by the harness's 9P2000.L client over the virtqueue. Every message
// of the protocol, a read-only share, the bounds on a client's state, and the
// escape corpus: nothing outside the share may be read, written or named.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as libc from '../../src/sys/libc.js';
import { DeviceHarness, MiB, P9Client, QueueTransport, errnoOf, type DriverQueue } from '../../src/devices/harness/index.js';
import { MAX_FIDS, MAX_OPEN_FIDS, QTDIR, QTSYMLINK, T } from '../../src/devices/p9/protocol.js';
import type { NeedsResetMessage } from '../../src/ipc/messages.js';

const O_RDONLY = 0;
const O_WRONLY = 1;
const O_RDWR = 2;
const O_CREAT = 0o100;
const O_TRUNC = 0o1000;
const S_IFREG = 0o100000;
const S_IFIFO = 0o010000;
const S_IFCHR = 0o020000;
const S_IFBLK = 0o060000;
const AT_REMOVEDIR = 0x200;
const ENOENT = 2;
const EBADF = 9;
const EEXIST = 17;
const ENOTDIR = 20;
const EINVAL = 22;
const EPERM = 1;
const EMFILE = 24;
const EROFS = 30;
const ENAMETOOLONG = 36;
const ENOTEMPTY = 39;
const ENODATA = 61;
const EOPNOTSUPP = 95;
const MSIZE = 128 * 1024;
const ROOT = 1;

function pattern(len: number, seed: number): Uint8Array {
  const b = new Uint8Array(len);
  for (let i = 0; i < len; i++) b[i] = (i * 13 + seed) & 0xff;
  return b;
}

interface Rig {
  h: DeviceHarness;
  q: DriverQueue;
  c: P9Client;
}

describe('virtio-9p device process', function () {
  this.timeout(30000);
  let top: string;
  let share: string;
  let outside: string;
  let rootFd: number;
  const rigs: Rig[] = [];
  let nextFid = 100;
  const fid = (): number => nextFid++;

  async function rig(opts: { readOnly?: boolean; segment?: number; slots?: number } = {}): Promise<Rig> {
    const h = await DeviceHarness.start({ kind: 'p9', options: { tag: 'share0', readOnly: opts.readOnly ?? false }, backendFd: rootFd, memSize: 32 * MiB, queueSize: 128 });
    const [q] = h.activate();
    const c = new P9Client(new QueueTransport(h, q!, MSIZE, opts.slots ?? 4, opts.segment ?? 0));
    await c.version(MSIZE);
    await c.attach(ROOT);
    const r = { h, q: q!, c };
    rigs.push(r);
    return r;
  }

  /** A fid for `rel` (walked from the root). */
  async function walk(c: P9Client, rel: string): Promise<number> {
    const f = fid();
    const names = rel === '' ? [] : rel.split('/');
    const qids = await c.walk(ROOT, f, names);
    assert.equal(qids.length, names.length, `walk to ${rel}`);
    return f;
  }

  async function readFile(c: P9Client, rel: string): Promise<Buffer> {
    const f = await walk(c, rel);
    await c.lopen(f, O_RDONLY);
    const data = Buffer.from(await c.readAll(f));
    await c.clunk(f);
    return data;
  }

  beforeEach(() => {
    top = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-p9-'));
    share = path.join(top, 'share');
    outside = path.join(top, 'outside');
    fs.mkdirSync(share);
    fs.mkdirSync(outside);
    fs.writeFileSync(path.join(outside, 'secret'), 'outside secret');
    fs.writeFileSync(path.join(top, 'beside'), 'beside the share');
    fs.writeFileSync(path.join(share, 'hello.txt'), 'hello from the host\n');
    fs.mkdirSync(path.join(share, 'dir'));
    fs.writeFileSync(path.join(share, 'dir', 'inner'), 'inner file');
    rootFd = libc.open(share, libc.O_PATH | libc.O_DIRECTORY);
  });
  afterEach(async () => {
    await Promise.all(rigs.splice(0).map((r) => r.h.close()));
    libc.close(rootFd);
    spawnSync('rm', ['-rf', top]); // GNU rm removes trees deeper than PATH_MAX (the path test makes one)
  });

  describe('config and session', () => {
    it('offers the mount tag in its config space and negotiates msize and version', async () => {
      const h = await DeviceHarness.start({ kind: 'p9', options: { tag: 'hostshare', readOnly: false }, backendFd: rootFd });
      rigs.push({ h } as Rig);
      assert.equal(h.hello.kind, 'p9');
      assert.equal(h.hello.numQueues, 1);
      assert.equal(h.hello.deviceFeatures % 2, 1, 'VIRTIO_9P_MOUNT_TAG');
      const cfg = Buffer.from(h.hello.config);
      assert.equal(cfg.readUInt16LE(0), 9);
      assert.equal(cfg.subarray(2).toString(), 'hostshare');
      const [q] = h.activate();
      const c = new P9Client(new QueueTransport(h, q!, MSIZE));
      assert.deepEqual(await c.version(64 * MiB), { msize: 1024 * 1024 + 4096, version: '9P2000.L' });
      assert.deepEqual(await c.version(65536, '9P2000.u'), { msize: 65536, version: 'unknown' });
      assert.equal(await errnoOf(c.version(100)), EINVAL);
      await c.version(MSIZE);
      const qid = await c.attach(ROOT);
      assert.equal(qid.type, QTDIR);
      assert.equal(qid.path, BigInt(fs.statSync(share).ino));
      assert.equal(await errnoOf(c.attach(ROOT)), EBADF, 'fid in use');
      assert.equal(await errnoOf(c.rpc(T.auth, (w) => w.u32(7).str('root').str('').u32(0))), ENOENT, 'no authentication needed');
      assert.equal(await errnoOf(c.rpc(9)), EOPNOTSUPP, 'a 9P2000.u-only message');
      assert.equal(await errnoOf(c.rpc(T.walk, (w) => w.u32(ROOT))), EINVAL, 'a message cut short');
      await c.flush(5);
      // Tversion starts a new session: old fids are gone
      await c.version(MSIZE);
      assert.equal(await errnoOf(c.getattr(ROOT)), EBADF);
    });
  });

  describe('messages', () => {
    it('walks, getattr, lopen, read, readdir, statfs, readlink', async () => {
      const { c } = await rig();
      const f = fid();
      const qids = await c.walk(ROOT, f, ['dir', 'inner']);
      assert.equal(qids.length, 2);
      assert.equal(qids[0]!.type, QTDIR);
      assert.equal(qids[1]!.path, BigInt(fs.statSync(path.join(share, 'dir', 'inner')).ino));
      const a = await c.getattr(f);
      assert.equal(a.size, 10);
      assert.equal(a.mode & 0o170000, S_IFREG);
      assert.equal(a.mtime[0], Math.floor(fs.statSync(path.join(share, 'dir', 'inner')).mtimeMs / 1000));
      // a partial walk answers the qids it found and makes no fid
      const g = fid();
      assert.equal((await c.walk(ROOT, g, ['dir', 'nope', 'x'])).length, 1);
      assert.equal(await errnoOf(c.getattr(g)), EBADF);
      assert.equal(await errnoOf(c.walk(ROOT, fid(), ['nope'])), ENOENT);
      assert.equal(await errnoOf(c.walk(f, fid(), ['x'])), ENOTDIR);
      // clone, then walk a fid onto itself
      const h2 = fid();
      await c.walk(ROOT, h2, []);
      await c.walk(h2, h2, ['dir']);
      assert.equal((await c.getattr(h2)).qid.type, QTDIR);
      assert.equal((await readFile(c, 'hello.txt')).toString(), 'hello from the host\n');
      const d = await walk(c, 'dir');
      await c.lopen(d, O_RDONLY);
      const names = (await c.readdirAll(d)).map((e) => e.name).sort();
      assert.deepEqual(names, ['.', '..', 'inner']);
      const s = await c.statfs(ROOT);
      assert.ok(s.bsize > 0 && s.blocks > 0 && s.namelen === 255);
      fs.symlinkSync('hello.txt', path.join(share, 'ln'));
      assert.equal(await c.readlink(await walk(c, 'ln')), 'hello.txt');
    });

    it('reads a large directory in batches without losing or repeating an entry', async () => {
      const { c } = await rig();
      const many = Array.from({ length: 600 }, (_, i) => `entry-${i}-${'x'.repeat(i % 40)}`);
      fs.mkdirSync(path.join(share, 'big'));
      for (const n of many) fs.writeFileSync(path.join(share, 'big', n), '');
      const d = await walk(c, 'big');
      await c.lopen(d, O_RDONLY);
      const got: string[] = [];
      for (let off = 0n; ; ) {
        const batch = await c.readdir(d, off, 1000); // small batches: many round trips
        if (batch.length === 0) break;
        got.push(...batch.map((e) => e.name));
        off = batch[batch.length - 1]!.offset;
      }
      assert.deepEqual(got.filter((n) => n !== '.' && n !== '..').sort(), [...many].sort());
    });

    it('creates, writes (scattered buffers) and reads back files; fsync; truncates and sets times and mode', async () => {
      for (const segment of [0, 4096]) {
        const { c } = await rig({ segment });
        const dir = await walk(c, 'dir');
        const name = `new-${segment}`;
        const { qid } = await c.lcreate(dir, name, O_RDWR | O_CREAT, 0o640);
        assert.equal(qid.path, BigInt(fs.statSync(path.join(share, 'dir', name)).ino));
        const data = pattern(100_000, segment);
        for (let at = 0; at < data.length; at += 60_000) assert.equal(await c.write(dir, at, data.subarray(at, at + 60_000)), Math.min(60_000, data.length - at));
        await c.fsync(dir);
        await c.fsync(dir, 1);
        assert.deepEqual(new Uint8Array(fs.readFileSync(path.join(share, 'dir', name))), data);
        assert.equal(fs.statSync(path.join(share, 'dir', name)).mode & 0o777, 0o640);
        assert.deepEqual(new Uint8Array(await c.read(dir, 99_990, 100)), data.subarray(99_990));
        assert.equal((await c.read(dir, 200_000, 100)).length, 0, 'read past the end');
        const f = await walk(c, `dir/${name}`);
        await c.setattr(f, { size: 1000, mode: 0o600, mtime: [1_000_000_000, 5], atime: [1_000_000_001, 0] });
        const st = fs.statSync(path.join(share, 'dir', name));
        assert.equal(st.size, 1000);
        assert.equal(st.mode & 0o777, 0o600);
        assert.equal(Math.floor(st.mtimeMs / 1000), 1_000_000_000);
        assert.equal(Math.floor(st.atimeMs / 1000), 1_000_000_001);
        const a = await c.getattr(f);
        await c.setattr(f, { uid: a.uid, gid: a.gid }); // chown to its own owner: allowed
        assert.equal(await errnoOf(c.lcreate(await walk(c, 'dir'), name, O_RDWR | O_CREAT | 0o200, 0o644)), EEXIST, 'O_EXCL on an existing file');
      }
    });

    it('mkdir, mknod (regular, FIFO), symlink, link, rename, renameat, unlinkat, remove', async () => {
      const { c } = await rig();
      const dq = await c.mkdir(ROOT, 'made', 0o750);
      assert.equal(dq.type, QTDIR);
      assert.ok(fs.statSync(path.join(share, 'made')).isDirectory());
      const made = await walk(c, 'made');
      await c.mknod(made, 'plain', S_IFREG | 0o600);
      assert.ok(fs.statSync(path.join(share, 'made', 'plain')).isFile());
      await c.mknod(made, 'fifo', S_IFIFO | 0o600);
      assert.ok(fs.lstatSync(path.join(share, 'made', 'fifo')).isFIFO());
      const sq = await c.symlink(made, 'sym', '../hello.txt');
      assert.equal(sq.type, QTSYMLINK);
      assert.equal(fs.readlinkSync(path.join(share, 'made', 'sym')), '../hello.txt');
      const hello = await walk(c, 'hello.txt');
      await c.link(made, hello, 'hard');
      assert.equal(fs.statSync(path.join(share, 'hello.txt')).nlink, 2);
      // rename moves the fid along: it still names the same file afterwards
      const plain = await walk(c, 'made/plain');
      await c.rename(plain, ROOT, 'moved');
      assert.ok(fs.existsSync(path.join(share, 'moved')));
      await c.lopen(plain, O_WRONLY);
      await c.write(plain, 0, Buffer.from('via moved fid'));
      assert.equal(fs.readFileSync(path.join(share, 'moved'), 'utf8'), 'via moved fid');
      await c.renameat(made, 'hard', ROOT, 'hard2');
      assert.ok(fs.existsSync(path.join(share, 'hard2')));
      await c.unlinkat(ROOT, 'hard2');
      assert.equal(fs.existsSync(path.join(share, 'hard2')), false);
      assert.equal(await errnoOf(c.unlinkat(ROOT, 'made', AT_REMOVEDIR)), ENOTEMPTY);
      await c.unlinkat(made, 'fifo');
      await c.unlinkat(made, 'sym');
      await c.unlinkat(ROOT, 'made', AT_REMOVEDIR);
      assert.equal(fs.existsSync(path.join(share, 'made')), false);
      const m = await walk(c, 'moved');
      await c.remove(m);
      assert.equal(fs.existsSync(path.join(share, 'moved')), false);
      assert.equal(await errnoOf(c.getattr(m)), EBADF, 'remove clunks the fid');
      assert.equal(await errnoOf(c.remove(await walk(c, ''))), EINVAL, 'the root stays');
    });

    it('locks and getlock (open-file-description locks), xattrwalk and xattrcreate answer cleanly', async () => {
      const { c } = await rig();
      const a = await walk(c, 'hello.txt');
      const b = await walk(c, 'hello.txt');
      await c.lopen(a, O_RDWR);
      await c.lopen(b, O_RDWR);
      assert.equal(await c.lock(a, 1, 0, 10), 0, 'write lock granted');
      assert.equal(await c.lock(b, 1, 5, 10), 1, 'a conflicting lock is BLOCKED');
      const g = await c.getlock(b, 1, 0, 0);
      assert.equal(g.type, 1);
      assert.equal(g.start, 0);
      assert.equal(g.length, 10);
      assert.equal((await c.getlock(a, 1, 0, 0)).type, 2, 'its own lock does not conflict');
      assert.equal(await c.lock(a, 2, 0, 10), 0, 'unlock');
      assert.equal(await c.lock(b, 1, 5, 10), 0);
      assert.equal(await errnoOf(c.lock(await walk(c, 'hello.txt'), 1)), EBADF, 'a fid not open');
      const x = fid();
      assert.equal(await c.xattrwalk(a, x, ''), 0, 'an empty attribute list');
      assert.equal((await c.read(x, 0, 100)).length, 0);
      await c.clunk(x);
      assert.equal(await errnoOf(c.xattrwalk(a, fid(), 'user.x')), ENODATA);
      assert.equal(await errnoOf(c.xattrcreate(await walk(c, 'hello.txt'), 'user.x', 1)), EOPNOTSUPP);
    });

    it('serves many requests in flight, each read straight into its own buffers', async () => {
      const big = pattern(4 * MiB, 7);
      fs.writeFileSync(path.join(share, 'big'), big);
      const { c } = await rig({ slots: 16 });
      const f = await walk(c, 'big');
      await c.lopen(f, O_RDONLY);
      const chunk = MSIZE - 24;
      const offsets = Array.from({ length: Math.ceil(big.length / chunk) }, (_, i) => i * chunk);
      const parts = await Promise.all(offsets.map((o) => c.read(f, o, chunk).then((d) => d.slice())));
      assert.deepEqual(Buffer.concat(parts), Buffer.from(big));
    });
  });

  describe('a read-only share', () => {
    it('reads, and refuses every change with EROFS', async () => {
      const { c } = await rig({ readOnly: true });
      assert.equal((await readFile(c, 'hello.txt')).toString(), 'hello from the host\n');
      const f = await walk(c, 'hello.txt');
      assert.equal(await errnoOf(c.lopen(f, O_RDWR)), EROFS);
      assert.equal(await errnoOf(c.lopen(f, O_RDONLY | O_TRUNC)), EROFS);
      await c.lopen(f, O_RDONLY);
      assert.equal(await errnoOf(c.write(f, 0, Buffer.from('x'))), EROFS);
      const dir = await walk(c, 'dir');
      const hello = async (): Promise<number> => walk(c, 'hello.txt');
      const changes: [string, () => Promise<unknown>][] = [
        ['lcreate', async () => c.lcreate(await walk(c, 'dir'), 'n', O_RDWR | O_CREAT, 0o644)],
        ['mkdir', () => c.mkdir(dir, 'n', 0o755)],
        ['mknod', () => c.mknod(dir, 'n', S_IFREG | 0o644)],
        ['symlink', () => c.symlink(dir, 'n', 'x')],
        ['link', async () => c.link(dir, await hello(), 'n')],
        ['rename', async () => c.rename(await hello(), dir, 'n')],
        ['renameat', () => c.renameat(ROOT, 'hello.txt', dir, 'n')],
        ['unlinkat', () => c.unlinkat(ROOT, 'hello.txt')],
        ['remove', async () => c.remove(await hello())],
        ['chmod', async () => c.setattr(await hello(), { mode: 0o600 })],
        ['truncate', async () => c.setattr(await hello(), { size: 0 })],
        ['utimes', async () => c.setattr(await hello(), { mtime: [1, 0] })],
        ['xattrcreate', async () => c.xattrcreate(await hello(), 'user.x', 1)],
      ];
      for (const [what, change] of changes) assert.equal(await errnoOf(change()), EROFS, what);
      assert.equal(fs.readFileSync(path.join(share, 'hello.txt'), 'utf8'), 'hello from the host\n');
      assert.deepEqual(fs.readdirSync(path.join(share, 'dir')), ['inner']);
    });
  });

  describe('bounded state', () => {
    it(`gives EMFILE past ${MAX_OPEN_FIDS} open fids and ${MAX_FIDS} fids, and keeps serving`, async () => {
      const { c, h } = await rig({ slots: 16 });
      const opened: number[] = [];
      for (let i = 0; i < MAX_OPEN_FIDS; i++) {
        const f = await walk(c, 'hello.txt');
        await c.lopen(f, O_RDONLY);
        opened.push(f);
      }
      const extra = await walk(c, 'hello.txt');
      assert.equal(await errnoOf(c.lopen(extra, O_RDONLY)), EMFILE);
      await c.clunk(opened.pop()!);
      await c.lopen(extra, O_RDONLY);
      const base = 10_000;
      const have = (await h.stats()).fids!;
      const results = await Promise.all(Array.from({ length: MAX_FIDS - have + 5 }, (_, i) => errnoOf(c.walk(ROOT, base + i, []))));
      assert.equal(results.filter((e) => e === 0).length, MAX_FIDS - have);
      assert.ok(results.slice(MAX_FIDS - have).every((e) => e === EMFILE));
      await c.clunk(base);
      await c.clunk(opened.pop()!);
      assert.equal((await readFile(c, 'hello.txt')).toString(), 'hello from the host\n', 'served again once fids are given back');
    });

    it('answers a request whose reply does not fit, and a ring with no room for a reply stops the queue', async () => {
      const { h, q } = await rig();
      // a Tversion with only 11 bytes for the reply: Rlerror(ERANGE) fits, Rversion does not
      const tv = Buffer.alloc(19);
      tv.writeUInt32LE(19, 0);
      tv[4] = T.version;
      tv.writeUInt16LE(3, 5);
      tv.writeUInt32LE(8192, 7);
      tv.writeUInt16LE(8, 11);
      tv.write('9P2000.L', 13);
      const out = h.buffer(tv.subarray(0, 21));
      const small = h.buffer(11, true);
      const head = q.submit([out, small]);
      const u = await q.waitFor(head);
      assert.equal(u.len, 11);
      assert.equal(h.mem.slice(small.addr, 11)[4], 7, 'Rlerror');
      q.submit([h.buffer(tv), h.buffer(4, true)]);
      const msg = (await h.next('needs-reset')) as NeedsResetMessage;
      assert.match(msg.reason, /reply/);
      assert.equal(h.alive, true);
    });
  });

  describe('escape corpus: nothing outside the share is reached', () => {
    it('".." never goes above the root', async () => {
      const { c } = await rig();
      const rootQid = (await c.getattr(ROOT)).qid;
      const f = fid();
      const qids = await c.walk(ROOT, f, ['..', '..', '..']);
      assert.deepEqual(qids.map((q) => q.path), [rootQid.path, rootQid.path, rootQid.path]);
      assert.equal((await c.walk(ROOT, fid(), ['..', 'beside'])).length, 1, 'the file beside the share is not found');
      assert.equal((await c.walk(ROOT, fid(), ['dir', '..', '..', 'outside'])).length, 3);
      await c.lopen(f, O_RDONLY);
      assert.deepEqual((await c.readdirAll(f)).map((e) => e.name).sort(), ['.', '..', 'dir', 'hello.txt']);
    });

    it('absolute and relative symlinks out, and one to /proc/self/root, are never followed', async () => {
      fs.symlinkSync('/etc', path.join(share, 'abs'));
      fs.symlinkSync('../outside', path.join(share, 'rel'));
      fs.symlinkSync('../outside/secret', path.join(share, 'relfile'));
      fs.symlinkSync('/proc/self/root', path.join(share, 'proc'));
      const { c } = await rig();
      for (const [link, inside] of [['abs', 'passwd'], ['rel', 'secret'], ['proc', 'etc']] as const) {
        const l = fid();
        const qids = await c.walk(ROOT, l, [link]);
        assert.equal(qids[0]!.type, QTSYMLINK, `${link} is seen as a symlink`);
        assert.notEqual(await errnoOf(c.walk(l, fid(), [inside])), 0, `walk through ${link}`);
        assert.equal(await errnoOf(c.lopen(l, O_RDONLY)), EPERM, `open ${link}`);
        assert.equal((await c.getattr(l)).mode & 0o170000, 0o120000, 'getattr of the link itself');
      }
      const rf = await walk(c, 'relfile');
      assert.equal(await errnoOf(c.lopen(rf, O_RDONLY)), EPERM);
      assert.equal(await c.readlink(rf), '../outside/secret', 'the guest gets the target to resolve itself');
      // changes through a link change the link or fail, never its target
      await errnoOf(c.setattr(rf, { mode: 0o777 }));
      await errnoOf(c.setattr(rf, { size: 0 }));
      await errnoOf(c.lcreate(await walk(c, 'rel'), 'planted', O_RDWR | O_CREAT, 0o644));
      await errnoOf(c.mkdir(await walk(c, 'rel'), 'planted', 0o755));
      assert.equal(fs.readFileSync(path.join(outside, 'secret'), 'utf8'), 'outside secret');
      assert.equal(fs.statSync(path.join(outside, 'secret')).mode & 0o777, 0o644);
      assert.deepEqual(fs.readdirSync(outside), ['secret']);
    });

    it('a symlink swapped in between walk and open (or setattr, or create) is not followed', async () => {
      const { c } = await rig();
      const victim = await walk(c, 'dir/inner');
      const dirFid = await walk(c, 'dir');
      fs.rmSync(path.join(share, 'dir'), { recursive: true });
      fs.symlinkSync(outside, path.join(share, 'dir'));
      assert.notEqual(await errnoOf(c.lopen(victim, O_RDONLY)), 0);
      assert.notEqual(await errnoOf(c.setattr(victim, { mode: 0o777 })), 0);
      assert.notEqual(await errnoOf(c.setattr(victim, { size: 0 })), 0);
      assert.notEqual(await errnoOf(c.lcreate(dirFid, 'planted', O_RDWR | O_CREAT, 0o644)), 0);
      assert.notEqual(await errnoOf(c.walk(dirFid, fid(), ['secret'])), 0);
      assert.notEqual(await errnoOf(c.unlinkat(await walk(c, ''), 'dir/secret')), 0);
      // a file replaced by a symlink to a file outside
      const f = await walk(c, 'hello.txt');
      fs.rmSync(path.join(share, 'hello.txt'));
      fs.symlinkSync(path.join(outside, 'secret'), path.join(share, 'hello.txt'));
      assert.equal(await errnoOf(c.lopen(f, O_RDONLY)), EPERM);
      await errnoOf(c.setattr(f, { mode: 0o777, size: 0 }));
      assert.equal(fs.readFileSync(path.join(outside, 'secret'), 'utf8'), 'outside secret');
      assert.equal(fs.statSync(path.join(outside, 'secret')).mode & 0o777, 0o644);
      assert.deepEqual(fs.readdirSync(outside), ['secret']);
    });

    it('hard links, renames and names cannot reach across the root', async () => {
      fs.symlinkSync(path.join(outside, 'secret'), path.join(share, 'out'));
      const { c } = await rig();
      const out = await walk(c, 'out');
      await c.link(ROOT, out, 'hl'); // links the symlink itself, not its target
      assert.ok(fs.lstatSync(path.join(share, 'hl')).isSymbolicLink());
      assert.equal(fs.statSync(path.join(outside, 'secret')).nlink, 1);
      const hello = await walk(c, 'hello.txt');
      for (const name of ['..', '.', '../escaped', 'a/b', '/tmp/escaped', 'nul\0byte', '']) {
        assert.equal(await errnoOf(c.rename(hello, ROOT, name)), EINVAL, `rename to ${JSON.stringify(name)}`);
        assert.equal(await errnoOf(c.renameat(ROOT, 'hello.txt', ROOT, name)), EINVAL);
        assert.equal(await errnoOf(c.link(ROOT, hello, name)), EINVAL);
        assert.equal(await errnoOf(c.mkdir(ROOT, name, 0o755)), EINVAL);
      }
      assert.equal(await errnoOf(c.renameat(ROOT, '..', ROOT, 'x')), EINVAL);
      assert.equal(await errnoOf(c.walk(ROOT, fid(), ['dir/inner'])), EINVAL);
      assert.equal(await errnoOf(c.walk(ROOT, fid(), ['/etc'])), EINVAL);
      assert.equal(fs.existsSync(path.join(top, 'escaped')), false);
      assert.deepEqual(fs.readdirSync(outside), ['secret']);
    });

    it('refuses to make device nodes and to open a FIFO or a device node for I/O', async () => {
      const { c } = await rig();
      assert.equal(await errnoOf(c.mknod(ROOT, 'null', S_IFCHR | 0o666, 1, 3)), EPERM);
      assert.equal(await errnoOf(c.mknod(ROOT, 'sda', S_IFBLK | 0o666, 8, 0)), EPERM);
      assert.equal(fs.existsSync(path.join(share, 'null')), false);
      spawnSync('mkfifo', [path.join(share, 'fifo')]);
      spawnSync('mknod', [path.join(share, 'zero'), 'c', '1', '5']);
      for (const name of ['fifo', 'zero']) {
        if (!fs.existsSync(path.join(share, name))) continue;
        for (const flags of [O_RDONLY, O_WRONLY, O_RDWR]) assert.equal(await errnoOf(c.lopen(await walk(c, name), flags)), EPERM, `${name} ${flags}`);
      }
    });

    it('bounds names, paths and walks; a clunked fid is gone', async () => {
      const { c } = await rig();
      assert.equal(await errnoOf(c.mkdir(ROOT, 'n'.repeat(256), 0o755)), ENAMETOOLONG);
      assert.equal(await errnoOf(c.walk(ROOT, fid(), ['n'.repeat(300)])), ENAMETOOLONG);
      // a path deeper than PATH_MAX is refused, and the server goes on
      let at = ROOT;
      let err = 0;
      for (let depth = 0; depth < 20 && err === 0; depth++) {
        const name = `${depth}`.padEnd(250, 'd');
        err = await errnoOf(c.mkdir(at, name, 0o755));
        if (err === 0) {
          const next = fid();
          err = await errnoOf(c.walk(at, next, [name]));
          at = next;
        }
      }
      assert.equal(err, ENAMETOOLONG);
      // 16 names per walk at most
      fs.mkdirSync(path.join(share, ...Array.from({ length: 17 }, () => 'a')), { recursive: true });
      assert.equal((await c.walk(ROOT, fid(), Array.from({ length: 16 }, () => 'a'))).length, 16);
      assert.equal(await errnoOf(c.walk(ROOT, fid(), Array.from({ length: 17 }, () => 'a'))), EINVAL);
      // fid reuse after clunk
      const f = await walk(c, 'hello.txt');
      await c.lopen(f, O_RDONLY);
      await c.clunk(f);
      assert.equal(await errnoOf(c.read(f, 0, 10)), EBADF);
      assert.equal(await errnoOf(c.clunk(f)), EBADF);
      await c.walk(ROOT, f, ['dir', 'inner']);
      await c.lopen(f, O_RDONLY);
      assert.equal(Buffer.from(await c.read(f, 0, 100)).toString(), 'inner file', 'the reused fid names its new file');
      assert.equal((await readFile(c, 'hello.txt')).toString(), 'hello from the host\n');
    });
  });
});
