// The fid journal (src/devices/p9/journal.ts) as a successor reads it: the
// fids a session recorded are taken over, and what a taken-over predecessor
// could have written instead — paths out of the share, through a symlink,
// with bad names, garbage bytes, O_TRUNC on an open fid — is dropped or
// defused, never followed; a path that names another file now (replaced
// meanwhile) is dropped; fids open for appending or holding a lock are not
// kept; a request the death interrupted before the journal recorded it is
// taken again and succeeds. Run on a real folder with the real Share.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FidJournal, P9_JOURNAL_BYTES } from '../../../src/devices/p9/journal.js';
import { P9Session } from '../../../src/devices/p9/session.js';
import { Share } from '../../../src/devices/p9/share.js';
import * as libc from '../../../src/sys/libc.js';
import { P9Client } from '../../../src/devices/harness/p9-driver.js';
import { inProcess } from '../../../src/devices/harness/p9-in-process.js';

const O_WRONLY = 1;
const O_TRUNC = 0o1000;
const O_CREAT = 0o100;
const O_APPEND = 0o2000;

describe('p9 fid journal', () => {
  let dir: string;
  let rootFd: number;
  let view: DataView;

  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-journal-'));
    fs.mkdirSync(path.join(dir, 'share'));
    fs.writeFileSync(path.join(dir, 'share', 'kept'), 'keep me\n');
    fs.writeFileSync(path.join(dir, 'outside'), 'not yours\n');
    fs.symlinkSync('../outside', path.join(dir, 'share', 'link'));
    rootFd = libc.open(path.join(dir, 'share'), libc.O_RDONLY | libc.O_DIRECTORY | libc.O_CLOEXEC);
    view = new DataView(new ArrayBuffer(P9_JOURNAL_BYTES));
  });
  afterEach(() => {
    libc.close(rootFd);
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const successor = () => new P9Session(new Share(rootFd, false), undefined, new FidJournal(view));
  const ino = (name: string): bigint => fs.statSync(path.join(dir, 'share', name), { bigint: true }).ino;

  it('an empty or zeroed journal takes nothing over', () => {
    assert.deepEqual(successor().takeOver(), { kept: 0, dropped: 0 });
  });

  it('takes over walked and open fids, and drops escapes, symlinks and bad names', () => {
    const j = new FidJournal(view);
    j.reset(8192);
    j.record(1, { path: [], ino: ino('.') });
    j.record(2, { path: ['kept'], ino: ino('kept'), openFlags: 0 });
    j.record(3, { path: ['..', 'outside'], ino: ino('../outside') });
    j.record(4, { path: ['link'], ino: ino('link'), openFlags: 0 });
    j.record(5, { path: ['kept', '', 'x'], ino: 1n });
    j.record(6, { path: ['a\0b'], ino: 1n });
    j.record(7, { path: ['missing'], ino: 1n });
    const s = successor();
    assert.deepEqual(s.takeOver(), { kept: 2, dropped: 5 });
    assert.equal(s.fidCount, 2);
    assert.equal(s.openFids, 1);
    // What was dropped is forgotten: a third process finds only the two.
    assert.deepEqual(successor().takeOver(), { kept: 2, dropped: 0 });
  });

  it('never truncates or creates again: only the access mode (and O_SYNC, O_DSYNC) is reused', () => {
    const j = new FidJournal(view);
    j.reset(8192);
    j.record(2, { path: ['kept'], ino: ino('kept'), openFlags: O_WRONLY | O_TRUNC | O_CREAT });
    j.record(3, { path: ['new-file'], ino: 1n, openFlags: O_WRONLY | O_CREAT });
    assert.deepEqual(successor().takeOver(), { kept: 1, dropped: 1 });
    assert.equal(fs.readFileSync(path.join(dir, 'share', 'kept'), 'utf8'), 'keep me\n');
    assert.ok(!fs.existsSync(path.join(dir, 'share', 'new-file')));
  });

  it('drops a path that names another file now, and keeps no fid open for appending', () => {
    const j = new FidJournal(view);
    j.reset(8192);
    j.record(1, { path: ['kept'], ino: ino('kept') });
    j.record(2, { path: ['kept'], ino: ino('kept'), openFlags: O_WRONLY | O_APPEND });
    fs.renameSync(path.join(dir, 'share', 'kept'), path.join(dir, 'share', 'old'));
    fs.writeFileSync(path.join(dir, 'share', 'kept'), 'a new file by the same name\n');
    assert.deepEqual(successor().takeOver(), { kept: 0, dropped: 1 }, 'only fid 1 was kept in the journal, and its file was replaced');
  });

  const nextTurn = () => new Promise((r) => setImmediate(r));

  it('a session writes its fids once its requests are answered; a fid holding a lock is not kept', async () => {
    const first = new P9Session(new Share(rootFd, false), undefined, new FidJournal(view));
    const a = new P9Client(inProcess(first));
    await a.version(8192);
    await a.attach(1);
    await a.walk(1, 2, ['kept']);
    await a.lopen(2, 0);
    await a.walk(1, 3, ['kept']);
    await a.lopen(3, O_WRONLY);
    assert.equal(await a.lock(3, 1 /* write lock */), 0);
    await nextTurn();
    assert.deepEqual(successor().takeOver(), { kept: 2, dropped: 0 }, 'the root and the reading fid; not the locked one');
    first.close();
  });

  it('the requests a death interrupted before the journal was written are taken again and succeed (a walk onto itself too)', async () => {
    const first = new P9Session(new Share(rootFd, false), undefined, new FidJournal(view));
    const a = new P9Client(inProcess(first));
    await a.version(8192);
    await a.attach(1);
    await a.walk(1, 2, []);
    await nextTurn(); // fids 1 and 2, at the root, are in the journal
    await a.walk(2, 2, ['kept']);
    await a.walk(1, 3, ['kept']);
    await a.lopen(3, 0);
    // The process dies now, before the journal records these: a successor finds the state of before them.
    const next = successor();
    assert.deepEqual(next.takeOver(), { kept: 2, dropped: 0 });
    const b = new P9Client(inProcess(next));
    await b.walk(2, 2, ['kept']);
    await b.walk(1, 3, ['kept']);
    await b.lopen(3, 0);
    assert.equal(Buffer.from(await b.read(3, 0, 100)).toString(), 'keep me\n');
    assert.equal((await b.getattr(2)).size, 8, 'fid 2 walked onto the file once, as the first time');
    first.close();
    next.close();
  });

  it('survives garbage: random bytes give no fid it cannot look up, and no crash', () => {
    const j = new FidJournal(view);
    j.reset(8192);
    j.record(1, { path: ['kept'], ino: ino('kept') });
    const bytes = new Uint8Array(view.buffer);
    let seed = 7;
    for (let i = 64; i < 64 + 1024 * 64; i++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      if (i >= 64 + 1024) bytes[i] = seed & 0xff; // slot 0 (fid 1) is left whole
    }
    view.setUint32(8, 64, true); // the high-water mark covers the garbage
    const r = successor().takeOver();
    assert.equal(r.kept, 1, 'the whole slot is taken over, and nothing of the garbage');
    assert.ok(r.kept + r.dropped <= 64);
  });
});
