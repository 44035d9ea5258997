// The fid journal (src/devices/p9/journal.ts) as a successor reads it: the
// fids a session recorded are taken over, and what a taken-over predecessor
// could have written instead — paths out of the share, through a symlink,
// with bad names, garbage bytes, O_TRUNC on an open fid — is dropped or
// defused, never followed. Run on a real folder with the real Share.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { FidJournal, P9_JOURNAL_BYTES } from '../../../src/devices/p9/journal.js';
import { P9Session } from '../../../src/devices/p9/session.js';
import { Share } from '../../../src/devices/p9/share.js';
import * as libc from '../../../src/sys/libc.js';

const O_WRONLY = 1;
const O_TRUNC = 0o1000;
const O_CREAT = 0o100;

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

  it('an empty or zeroed journal takes nothing over', () => {
    assert.deepEqual(successor().takeOver(), { kept: 0, dropped: 0 });
  });

  it('takes over walked and open fids, and drops escapes, symlinks and bad names', () => {
    const j = new FidJournal(view);
    j.reset(8192);
    j.record(1, [], undefined);
    j.record(2, ['kept'], 0);
    j.record(3, ['..', 'outside'], undefined);
    j.record(4, ['link'], 0);
    j.record(5, ['kept', '', 'x'], undefined);
    j.record(6, ['a\0b'], undefined);
    j.record(7, ['missing'], undefined);
    const s = successor();
    assert.deepEqual(s.takeOver(), { kept: 2, dropped: 5 });
    assert.equal(s.fidCount, 2);
    assert.equal(s.openFids, 1);
    // What was dropped is forgotten: a third process finds only the two.
    assert.deepEqual(successor().takeOver(), { kept: 2, dropped: 0 });
  });

  it('never truncates or creates again: only the access mode and O_APPEND are reused', () => {
    const j = new FidJournal(view);
    j.reset(8192);
    j.record(2, ['kept'], O_WRONLY | O_TRUNC | O_CREAT);
    j.record(3, ['new-file'], O_WRONLY | O_CREAT);
    assert.deepEqual(successor().takeOver(), { kept: 1, dropped: 1 });
    assert.equal(fs.readFileSync(path.join(dir, 'share', 'kept'), 'utf8'), 'keep me\n');
    assert.ok(!fs.existsSync(path.join(dir, 'share', 'new-file')));
  });

  it('survives garbage: random bytes give no fid it cannot look up, and no crash', () => {
    const j = new FidJournal(view);
    j.reset(8192);
    j.record(1, ['kept'], undefined);
    const bytes = new Uint8Array(view.buffer);
    let seed = 7;
    for (let i = 64; i < 64 + 512 * 64; i++) {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      if (i >= 64 + 512) bytes[i] = seed & 0xff; // slot 0 (fid 1) is left whole
    }
    view.setUint32(8, 64, true); // the high-water mark covers the garbage
    const r = successor().takeOver();
    assert.ok(r.kept >= 1, 'the whole slot is still taken over');
    assert.equal(r.kept + r.dropped <= 64, true);
  });
});
