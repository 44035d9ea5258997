// The fid-journal fuzzer (scripts/fuzz/p9-journal.ts) as a short smoke run
// with a fixed seed: mutated journals taken over by a 9p session must end
// without a finding (a throw, a fid or open-file count past the limits, the
// file beside the share opened, the share changed).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const FUZZER = fileURLToPath(new URL('../../scripts/fuzz/p9-journal.ts', import.meta.url));

describe('p9 fid-journal fuzzer, short run', function () {
  this.timeout(60000);

  it('finds nothing in 3 seconds with seed 7', function () {
    const r = spawnSync(process.execPath, ['--import', 'tsx', FUZZER, '--seconds', '3', '--seed', '7'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const m = /(\d+) rounds: (\d+) fids taken over, (\d+) dropped, no finding/.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.ok(Number(m[1]) > 20 && Number(m[2]) > 20, r.stdout);
  });
});
