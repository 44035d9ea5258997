// The blk and net fuzzers (scripts/fuzz/blk.ts, net.ts) as short smoke runs
// with a fixed seed: well-formed and malformed rounds against the jailed
// device must end without a finding (a death, a hang, a silent request, a
// lost or misplaced frame).
import assert from 'node:assert/strict';
import { runFuzzSmoke } from '../helpers/fuzz-smoke.js';

describe('blk fuzzer, short run', function () {
  this.timeout(60000);

  it('finds nothing in 4 seconds with seed 7', function () {
    const out = runFuzzSmoke('blk', 4);
    const m = /(\d+) rounds: (\d+) well-formed requests answered, (\d+) malformed rings \((\d+) needs-reset\), no finding/.exec(out);
    assert.ok(m, out);
    assert.ok(Number(m[2]) > 50 && Number(m[3]) > 50, out);
  });
});

describe('net fuzzer, short run', function () {
  this.timeout(60000);

  it('finds nothing in 4 seconds with seed 7', function () {
    const out = runFuzzSmoke('net', 4);
    const m = /(\d+) rounds: (\d+) traffic rounds \((\d+) frames out, (\d+) in, \d+ dropped\), (\d+) chaotic rings, (\d+) malformed rings \(\d+ needs-reset\), \d+ broken streams, no finding/.exec(out);
    assert.ok(m, out);
    assert.ok(Number(m[2]) > 10 && Number(m[3]) > 10 && Number(m[4]) > 10 && Number(m[5]) + Number(m[6]) > 10, out);
  });
});
