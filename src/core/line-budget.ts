// A budget of log lines: a token bucket that lets through at most `perSecond`
// lines a second on average (bursts up to `burst`) and counts what it refuses,
// so the next line let through can say how many were dropped. For whatever a
// device or a guest can make the core log without end.
export class LineBudget {
  private tokens: number;
  private last: number;
  private refused = 0;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number = perSecond,
    private readonly now: () => number = Date.now,
  ) {
    this.tokens = burst;
    this.last = now();
  }

  /** null: drop this line (counted). Otherwise let it through; the number is how many were dropped since the last one let through. */
  take(): number | null {
    const t = this.now();
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) * this.perSecond) / 1000);
    this.last = t;
    if (this.tokens < 1) {
      this.refused++;
      return null;
    }
    this.tokens--;
    const dropped = this.refused;
    this.refused = 0;
    return dropped;
  }
}
