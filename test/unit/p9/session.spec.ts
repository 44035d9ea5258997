// The 9P session in-process (no jail, no virtqueue) on a temporary folder:
// what the device-process tests cannot see from outside — fids follow a
// rename, Tversion drops every fid, a clunk during a read closes the file
// only once the read is done, and a handler's bug is an Rlerror, not a crash.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as libc from '../../../src/sys/libc.js';
import { P9Client, errnoOf } from '../../../src/devices/harness/p9-driver.js';
import { P9Session } from '../../../src/devices/p9/session.js';
import { Share } from '../../../src/devices/p9/share.js';
import { inProcess } from '../../../src/devices/harness/p9-in-process.js';

describe('9p session (in-process)', () => {
  let dir: string;
  let rootFd: number;
  let session: P9Session;
  let c: P9Client;

  beforeEach(async () => {
    // tmpfs when there is one: RWF_NOWAIT reads fail there, so every read goes to the pool (the race below is real)
    dir = fs.mkdtempSync(path.join(fs.existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'splitvm-p9unit-'));
    fs.mkdirSync(path.join(dir, 'a', 'b'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'a', 'b', 'f'), 'content');
    rootFd = libc.open(dir, libc.O_PATH | libc.O_DIRECTORY);
    session = new P9Session(new Share(rootFd, false), undefined);
    c = new P9Client(inProcess(session));
    await c.version(65536);
    await c.attach(1);
  });
  afterEach(() => {
    session.close();
    libc.close(rootFd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('moves fids at and below a renamed directory with it', async () => {
    await c.walk(1, 2, ['a', 'b', 'f']);
    await c.walk(1, 3, ['a']);
    await c.renameat(1, 'a', 1, 'z');
    assert.equal((await c.getattr(2)).size, 7, 'the file fid follows');
    await c.walk(3, 4, ['b']);
    assert.equal((await c.getattr(4)).qid.type, 0x80, 'the directory fid follows');
    assert.equal(await errnoOf(c.walk(1, 5, ['a'])), 2);
  });

  it('drops every fid on Tversion', async () => {
    await c.walk(1, 2, ['a']);
    assert.equal(session.fidCount, 2);
    await c.version(65536);
    assert.equal(session.fidCount, 0);
    assert.equal(await errnoOf(c.getattr(2)), 9);
  });

  it('keeps an open file until a read in flight is done, even when clunked meanwhile', async () => {
    fs.writeFileSync(path.join(dir, 'big'), Buffer.alloc(4 << 20, 7));
    await c.walk(1, 2, ['big']);
    await c.lopen(2, 0);
    const reads = Array.from({ length: 8 }, (_, i) => c.read(2, i * 65000, 65000));
    const clunk = c.clunk(2);
    const got = await Promise.all(reads);
    await clunk;
    assert.ok(got.every((d) => d.length === 65000 && d.every((b) => b === 7)));
    assert.equal(session.openFids, 0);
  });

  it('answers a malformed message with Rlerror(EINVAL) and stays usable', async () => {
    assert.equal(await errnoOf(c.rpc(110, (w) => w.u32(1).u32(2).u16(3).str('a'))), 22);
    assert.equal((await c.walk(1, 2, ['a'])).length, 1);
  });
});
