// LineBudget: the rate limit on log lines a device or a guest can cause
// (device log relay, the BAR-overlap warning): a burst, then so many a
// second, and the count of what it dropped on the next line let through.
import assert from 'node:assert/strict';
import { LineBudget } from '../../../src/core/line-budget.js';

describe('LineBudget', () => {
  it('lets a burst through, drops the rest of a flood, and counts the drops on the next line let through', () => {
    let now = 0;
    const budget = new LineBudget(5, 10, () => now);
    const taken = Array.from({ length: 100_000 }, () => budget.take());
    assert.equal(taken.filter((t) => t !== null).length, 10);
    now += 1000;
    assert.equal(budget.take(), 100_000 - 10);
    assert.equal(budget.take(), 0);
    for (let i = 0; i < 3; i++) budget.take();
    assert.equal(budget.take(), null);
  });
});
