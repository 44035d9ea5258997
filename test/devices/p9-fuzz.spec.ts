// The 9p fuzzer (scripts/fuzz/p9.ts) as a short smoke run with a fixed seed:
// random, mutated and malformed requests and rings against the jailed 9p
// device must end without a finding (a death, a hang, a request left
// unanswered, a change beside the share).
import assert from 'node:assert/strict';
import { runFuzzSmoke } from '../helpers/fuzz-smoke.js';

describe('p9 fuzzer, short run', function () {
  this.timeout(60000);

  it('finds nothing in 5 seconds with seed 7', function () {
    const out = runFuzzSmoke('p9', 5);
    const m = /(\d+) rounds: (\d+) requests answered \((\d+) with Rlerror, (\d+) mutated\), (\d+) malformed rings \(\d+ needs-reset\), no finding/.exec(out);
    assert.ok(m, out);
    assert.ok(Number(m[2]) + Number(m[3]) > 20 && Number(m[4]) > 5 && Number(m[5]) > 5, out);
  });
});
