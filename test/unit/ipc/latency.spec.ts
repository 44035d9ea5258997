// The request-latency histogram devices report in their stats: cumulative
// buckets that a Prometheus scraper reads as they are.
import assert from 'node:assert/strict';
import { LATENCY_BUCKETS_US, LATENCY_COUNT, LATENCY_SUM_US, LatencyHistogram, latencyBucketName } from '../../../src/ipc/latency.js';

describe('latency histogram', () => {
  it('counts each request in the first bucket whose bound is at or above it, cumulatively', () => {
    const h = new LatencyHistogram();
    for (const us of [3, 10, 11, 99, 100, 101, 2_000_000]) h.record(us);
    const c = h.counters();
    assert.equal(c[latencyBucketName(10)], 2, '3 and 10 µs');
    assert.equal(c[latencyBucketName(25)], 3);
    assert.equal(c[latencyBucketName(100)], 5, 'a bound is inclusive (le)');
    assert.equal(c[latencyBucketName(250)], 6);
    assert.equal(c[latencyBucketName(1000000)], 6, 'two seconds is above every bound');
    assert.equal(c[LATENCY_COUNT], 7);
    assert.equal(c[LATENCY_SUM_US], 3 + 10 + 11 + 99 + 100 + 101 + 2_000_000);
    assert.equal(Object.keys(c).length, LATENCY_BUCKETS_US.length + 2);
  });

  it('records n requests of one duration at once (those a turn completed inline)', () => {
    const h = new LatencyHistogram();
    h.record(30, 5);
    h.record(7);
    const c = h.counters();
    assert.equal(c[latencyBucketName(10)], 1);
    assert.equal(c[latencyBucketName(50)], 6);
    assert.equal(c[LATENCY_COUNT], 6);
    assert.equal(c[LATENCY_SUM_US], 157);
  });
});
