// The blk fuzzer (scripts/fuzz/blk.ts) as a short smoke run with a fixed
// seed: thousands of well-formed and malformed rounds against the jailed
// device must end without a finding (a death, a hang, a silent request).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const FUZZER = fileURLToPath(new URL('../../scripts/fuzz/blk.ts', import.meta.url));

describe('blk fuzzer, short run', function () {
  this.timeout(60000);

  it('finds nothing in 4 seconds with seed 7', function () {
    const r = spawnSync(process.execPath, ['--import', 'tsx', FUZZER, '--seconds', '4', '--seed', '7'], { encoding: 'utf8' });
    assert.equal(r.status, 0, `${r.stdout}\n${r.stderr}`);
    const m = /(\d+) rounds: (\d+) well-formed requests answered, (\d+) malformed rings \((\d+) needs-reset\), no finding/.exec(r.stdout);
    assert.ok(m, r.stdout);
    assert.ok(Number(m[2]) > 50 && Number(m[3]) > 50, r.stdout);
  });
});
