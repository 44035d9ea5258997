// The request-latency histogram a device process keeps and reports in its
// stats counters (cumulative buckets, as Prometheus histograms are), and the
// names both sides agree on. The device times each request from the moment
// it takes the chain to its completion (those completed inline, together, to
// the end of their turn); the core turns the counters into a Prometheus
// histogram.

/** Upper bounds of the buckets, in microseconds (a last +Inf bucket is the count). */
export const LATENCY_BUCKETS_US = [10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000, 100000, 1000000] as const;

export const latencyBucketName = (le: number): string => `latencyLe${le}us`;
export const LATENCY_COUNT = 'latencyCount';
export const LATENCY_SUM_US = 'latencySumUs';

export class LatencyHistogram {
  /** Non-cumulative counts per bucket; the last one is above every bound. */
  private readonly counts = new Float64Array(LATENCY_BUCKETS_US.length + 1);
  private sumUs = 0;

  /** `n` requests that each took `us`. */
  record(us: number, n = 1): void {
    let i = 0;
    while (i < LATENCY_BUCKETS_US.length && us > LATENCY_BUCKETS_US[i]!) i++;
    this.counts[i]! += n;
    this.sumUs += us * n;
  }

  /** The histogram as stats counters: cumulative buckets, count and sum. */
  counters(): Record<string, number> {
    const out: Record<string, number> = {};
    let running = 0;
    LATENCY_BUCKETS_US.forEach((le, i) => {
      running += this.counts[i]!;
      out[latencyBucketName(le)] = running;
    });
    out[LATENCY_COUNT] = running + this.counts[LATENCY_BUCKETS_US.length]!;
    out[LATENCY_SUM_US] = Math.round(this.sumUs);
    return out;
  }
}
