// The blk backend's gate for inline I/O (src/devices/blk/backend.ts): a slow
// inline call sends that kind of I/O to the pool for a hold that doubles
// while slow calls repeat, and starts over once calls are fast again. Times
// are given, not measured.
import assert from 'node:assert/strict';
import { INLINE_HOLD_MAX_MS, INLINE_HOLD_MS, INLINE_SLOW_MS, InlineGate } from '../../../src/devices/blk/backend.js';

describe('blk InlineGate', () => {
  it('stays open while inline calls are fast', () => {
    const g = new InlineGate();
    for (let t = 0; t < 100; t += 1) {
      assert.equal(g.open(t), true);
      g.took(t, t + INLINE_SLOW_MS / 2);
    }
    assert.equal(g.slow, 0);
  });
  it('closes for a hold after a slow call, doubling while slow calls repeat, up to the maximum', () => {
    const g = new InlineGate();
    let t = 1000;
    let hold = INLINE_HOLD_MS;
    for (let i = 0; i < 12; i++) {
      g.took(t, t + INLINE_SLOW_MS + 1);
      t += INLINE_SLOW_MS + 1;
      assert.equal(g.open(t + hold - 1), false);
      assert.equal(g.open(t + hold), true);
      t += hold;
      hold = Math.min(hold * 2, INLINE_HOLD_MAX_MS);
    }
    assert.equal(g.slow, 12);
  });
  it('starts over from the first hold once a fast call comes well after a hold ended', () => {
    const g = new InlineGate();
    g.took(0, 2 * INLINE_SLOW_MS);
    g.took(1000, 1000 + 2 * INLINE_SLOW_MS); // a second slow one: the next hold is doubled
    const after = 1000 + 2 * INLINE_SLOW_MS + 2 * INLINE_HOLD_MS;
    g.took(after + 100 * INLINE_HOLD_MS, after + 100 * INLINE_HOLD_MS); // fast, long after
    const t = after + 200 * INLINE_HOLD_MS;
    g.took(t, t + 2 * INLINE_SLOW_MS);
    assert.equal(g.open(t + 2 * INLINE_SLOW_MS + INLINE_HOLD_MS), true);
  });
});
