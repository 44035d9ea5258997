// The 9p fuzzer (scripts/fuzz/p9.ts) as a short smoke run with a fixed seed:
// random, mutated and malformed requests and rings against the jailed 9p
// device must end without a finding (a death, a hang, a request left
// unanswered, a change beside the share).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const FUZZER = fileURLToPath(new URL('../../scripts/fuzz/p9.ts', import.meta.url));

describe('p9 fuzzer, short run', function () {
  this.timeout(60000);

  it('finds nothing in 5 seconds with seed 7', function () {
    const r = spawnSync(process.execPath, ['--import', 'tsx', FUZZER, '--seconds', '5', '--seed', '7'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const m = /(\d+) rounds: (\d+) requests answered \((\d+) with Rlerror, (\d+) mutated\), (\d+) malformed rings \(\d+ needs-reset\), no finding/.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.ok(Number(m[2]) + Number(m[3]) > 20 && Number(m[4]) > 5 && Number(m[5]) > 5, r.stdout);
  });
});
