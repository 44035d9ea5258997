// The fid-journal fuzzer (scripts/fuzz/p9-journal.ts) as a short smoke run
// with a fixed seed: mutated journals taken over by a 9p session must end
// without a finding (a throw, a fid or open-file count past the limits, the
// file beside the share opened, the share changed).
import assert from 'node:assert/strict';
import { runFuzzSmoke } from '../helpers/fuzz-smoke.js';

describe('p9 fid-journal fuzzer, short run', function () {
  this.timeout(60000);

  it('finds nothing in 3 seconds with seed 7', function () {
    const out = runFuzzSmoke('p9-journal', 3);
    const m = /(\d+) rounds: (\d+) fids taken over, (\d+) dropped, no finding/.exec(out);
    assert.ok(m, out);
    assert.ok(Number(m[1]) > 20 && Number(m[2]) > 20, out);
  });
});
