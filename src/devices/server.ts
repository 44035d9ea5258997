// Serves a backend's virtqueues inside a device process: answers the core's
// control messages, waits for kicks, pops chains, hands them to the backend,
// publishes completions and raises interrupts. A malformed ring stops only
// its queue and is reported as needs-reset; the process keeps answering.
//
// How kicks are awaited: the event loop reads each queue's kick eventfd
// itself (src/sys/loop-reader.ts: one thread wake-up per kick, no pool
// thread parked per queue) and drains the queue; after completing, it may
// watch the available ring a little while instead (pollAvail).
// Its figures: npm run bench -- blk (README, "Benchmarks").
import type { Logger } from 'pino';
import * as libc from '../sys/libc.js';
import { LoopReader } from '../sys/loop-reader.js';
import type { ControlChannel } from '../ipc/channel.js';
import { LatencyHistogram } from '../ipc/latency.js';
import { MAX_STATS_ENTRIES, hasFeature, type ActivateMessage, type CoreMessage } from '../ipc/messages.js';
import type { DeviceBackend, PulledQueue } from './backend.js';
import { callFd, kickFd } from './contract.js';
import type { GuestMemory } from './guest-memory.js';
import { InflightRegion, inflightQueueBytes } from './virtio/inflight.js';
import { QueueError, SplitQueue, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_EVENT_IDX, type DescriptorChain } from './virtio/queue.js';

interface ServedQueue {
  index: number;
  queue: SplitQueue;
  call: number;
  stopped: boolean;
  notifyScheduled: boolean;
  /** The backend takes this queue's chains itself (DeviceBackend.pulledQueues). */
  pulled: boolean;
  /** Adaptive polling (see pollAvail): how often looking paid lately (0..1), and idle turns since it last looked. */
  pollScore: number;
  pollSkipped: number;
}

/**
 * Adaptive polling of the available ring, QEMU's poll-max-ns idea: after a
 * turn's completions are signalled and nothing is in flight, the server
 * looks at the ring for up to POLL_MAX_US before going back to wait for a
 * kick (kicks are suppressed meanwhile), so a driver that answers quickly
 * is served without the kick's thread wake-ups (two, plus one to re-arm the
 * wait: 20-40 µs of CPU each on these VMs). Whether it pays is learnt per
 * queue: an average of hits (the driver answered within the window) and
 * misses, each weighing 1/8; below POLL_MIN_SCORE the queue waits for kicks
 * and looks only once every POLL_PROBE_EVERY idle turns, to notice when the
 * driver gets quick again (a driver whose CPU is busy elsewhere, or one
 * that answers a batch of 32 completions, is not worth the spin). The spin
 * holds the event loop for at most POLL_MAX_US. 0 turns polling off.
 */
export const POLL_MAX_US = 100;
const POLL_MIN_SCORE = 0.5;
const POLL_PROBE_EVERY = 16;

export class DeviceServer {
  private queues: (ServedQueue | undefined)[] = [];
  /** One per queue, made before the policy is installed; started once the queue is first activated. */
  private readonly kickReaders: LoopReader[];
  private inFlight = 0;
  private resetPending = false;
  /** A reset that completes what is in flight: nothing new is taken meanwhile. */
  private draining = false;
  /** Paused by the core (an operator's pause): nothing new is taken until resume. */
  private paused = false;
  private pausePending = false;
  private readonly counters = { kicks: 0, polled: 0, requests: 0, completions: 0, interrupts: 0, queueErrors: 0, activations: 0, resets: 0 };
  /** From taking a chain to completing it, for the requests this process serves itself (not pulled queues). */
  private readonly latency = new LatencyHistogram();

  constructor(
    private readonly backend: DeviceBackend,
    private readonly mem: GuestMemory,
    private readonly channel: ControlChannel<'device'>,
    private readonly log: Logger,
    private readonly numQueues: number,
    /** Replacing a device process that died: resume at the used index and fail every request. */
    private readonly failed = false,
    /** The in-flight record file, mapped (activate gives each queue its offset in it). */
    private readonly inflight: DataView | null = null,
  ) {
    this.kickReaders = Array.from(
      { length: numQueues },
      (_, i) =>
        // 16 bytes: larger than the counter's 8, so each wake-up is one read(2) (loop-reader.ts).
        new LoopReader(kickFd(i), new Uint8Array(16), (e) => {
          this.log.error({ queue: i, err: e.message }, 'kick eventfd failed: queue no longer served');
          this.needsReset(`kick eventfd failed: ${e.message}`, i);
        }),
    );
  }

  /** Sends hello and starts answering the core. */
  start(): void {
    if (this.failed) this.backend.markFailed?.();
    this.backend.onConfigChanged = () => this.channel.send({ type: 'config-changed', config: this.backend.config() });
    this.channel.on('message', (m) => this.onMessage(m));
    this.channel.on('error', (e) => {
      this.log.error({ err: e.message }, 'control channel error');
      libc.exitNow(1);
    });
    this.channel.on('close', () => {
      this.log.info('control channel closed: exiting');
      libc.exitNow(0);
    });
    this.channel.send({
      type: 'hello',
      kind: this.backend.kind,
      deviceFeatures: this.backend.deviceFeatures,
      numQueues: this.numQueues,
      maxQueueSize: this.backend.maxQueueSize,
      config: this.backend.config(),
    });
  }

  onMessage(msg: CoreMessage): void {
    switch (msg.type) {
      case 'activate':
        this.activate(msg);
        break;
      case 'reset':
        this.reset(msg.complete === true);
        break;
      case 'config-write':
        this.backend.configWrite(msg.offset, msg.data);
        break;
      case 'stats-request': {
        const all: Record<string, number> = { ...this.counters, inFlight: this.inFlight, ...this.latency.counters(), ...this.backend.stats() };
        const counters = Object.fromEntries(Object.entries(all).slice(0, MAX_STATS_ENTRIES));
        this.channel.send({ type: 'stats', counters });
        break;
      }
      case 'pause':
        this.paused = true;
        this.pausePending = true;
        this.maybeSettled();
        break;
      case 'resume':
        this.paused = false;
        this.pausePending = false;
        for (const sq of this.queues) if (sq && !sq.stopped) this.onKick(sq);
        break;
      case 'shutdown':
        this.log.info('shutdown requested');
        libc.exitNow(0);
    }
  }

  private needsReset(reason: string, queue?: number): void {
    this.channel.send(queue === undefined ? { type: 'needs-reset', reason: reason.slice(0, 200) } : { type: 'needs-reset', reason: reason.slice(0, 200), queue });
  }

  private activate(msg: ActivateMessage): void {
    this.draining = false;
    if (this.queues.length > 0) {
      this.log.warn('activate while active: resetting first');
      this.stopAll();
    }
    this.counters.activations++;
    if ((BigInt(msg.features) & ~BigInt(this.backend.deviceFeatures)) !== 0n) {
      this.log.warn({ features: msg.features }, 'driver accepted features the device did not offer');
      this.needsReset('negotiated features the device did not offer');
      return;
    }
    const opts = { eventIdx: hasFeature(msg.features, VIRTIO_F_RING_EVENT_IDX), indirect: hasFeature(msg.features, VIRTIO_F_INDIRECT_DESC) };
    this.backend.activate(msg.features);
    const started: ServedQueue[] = [];
    for (const q of msg.queues) {
      if (q.index >= this.numQueues || q.size > this.backend.maxQueueSize) {
        this.log.warn({ queue: q.index, size: q.size }, 'activate: queue index or size out of range');
        this.needsReset(`queue ${q.index}: index or size out of range`, q.index);
        continue;
      }
      try {
        const pulled = this.backend.pulledQueues?.includes(q.index) ?? false;
        const sq: ServedQueue = { index: q.index, queue: new SplitQueue(this.mem, q, opts), call: callFd(q.index), stopped: false, notifyScheduled: false, pulled, pollScore: POLL_MIN_SCORE, pollSkipped: 0 };
        if (this.failed && q.inflight === undefined) sq.queue.resumeFromUsed();
        else if (q.inflight !== undefined) {
          // A record a dead device left says where to resume; a fresh one starts at the base.
          sq.queue.trackInflight(this.inflightRecord(q.inflight, q.size), q.base);
          if (sq.queue.resubmitting > 0) this.log.info({ queue: q.index, chains: sq.queue.resubmitting }, 'taking again the chains a dead device had taken');
        } else if (q.base !== undefined) sq.queue.resumeAt(q.base);
        this.queues[q.index] = sq;
        started.push(sq);
      } catch (e) {
        this.counters.queueErrors++;
        this.log.warn({ queue: q.index, err: (e as Error).message }, 'activate: bad queue');
        this.needsReset(`queue ${q.index}: ${(e as Error).message}`, q.index);
      }
    }
    this.log.info({ features: msg.features, queues: started.map((s) => s.index), ...opts }, 'activated');
    // A replacement that fails every request has no use for buffers it would fill;
    // it tells the driver its config (net: link down) once it serves the queues.
    if (this.failed && this.backend.markFailed) this.backend.onConfigChanged?.();
    else this.backend.attach?.(started.filter((sq) => sq.pulled).map((sq) => this.pulledPort(sq)));
    for (const sq of started) {
      this.startKickReader(sq.index);
      this.onKick(sq); // buffers may have been made available before the first kick
      if (sq.queue.takenOver) this.interrupt(sq); // completions a predecessor published may never have been signalled
    }
  }

  /** The in-flight record of a queue at `offset` of the in-flight file (bounds-checked). */
  private inflightRecord(offset: number, size: number): InflightRegion {
    const bytes = inflightQueueBytes(size);
    if (!this.inflight || offset % 8 !== 0 || offset + bytes > this.inflight.byteLength) throw new QueueError(`in-flight record at ${offset} is outside the in-flight file`);
    return new InflightRegion(new DataView(this.inflight.buffer, this.inflight.byteOffset + offset, bytes));
  }

  private onKick(sq: ServedQueue): void {
    if (!sq.pulled) this.drain(sq);
    else if (!this.failed) this.backend.kicked?.(sq.index);
  }

  private pulledPort(sq: ServedQueue): PulledQueue {
    return {
      index: sq.index,
      pop: () => {
        if (sq.stopped || this.draining || this.paused) return null;
        try {
          const chain = sq.queue.pop();
          if (chain) this.counters.requests++;
          return chain;
        } catch (e) {
          this.fail(sq, e as Error);
          return null;
        }
      },
      complete: (chain, len) => {
        this.counters.completions++;
        if (sq.stopped) return;
        sq.queue.pushUsed(chain.head, len);
        this.scheduleNotify(sq);
      },
      enableNotify: () => {
        if (sq.stopped) return false;
        try {
          return sq.queue.enableNotify();
        } catch (e) {
          this.fail(sq, e as Error);
          return false;
        }
      },
      fail: (reason) => this.fail(sq, new QueueError(reason)),
    };
  }

  private stopAll(): void {
    for (const sq of this.queues) if (sq) sq.stopped = true;
    this.queues = [];
    this.backend.reset?.();
  }

  private reset(complete: boolean): void {
    this.counters.resets++;
    this.resetPending = true;
    if (complete) {
      // Take nothing new; what is in flight completes onto the rings, then they stop.
      this.draining = true;
      this.backend.reset?.();
    } else this.stopAll();
    this.maybeSettled();
  }

  /** Answers a reset or a pause once nothing is in flight any more. */
  private maybeSettled(): void {
    if (this.inFlight !== 0) return;
    if (this.pausePending) {
      this.pausePending = false;
      this.channel.send({ type: 'paused' });
    }
    if (this.resetPending) {
      if (this.draining) {
        this.draining = false;
        this.stopAll();
      }
      this.resetPending = false;
      this.log.info('reset done');
      this.channel.send({ type: 'reset-done' });
    }
  }

  /** Takes the queue's kicks from now on (read on the event loop: sys/loop-reader.ts). */
  private startKickReader(index: number): void {
    this.kickReaders[index]!.start(() => {
      this.onKickRead(index);
    });
  }

  private onKickRead(index: number): void {
    this.counters.kicks++;
    const sq = this.queues[index];
    if (sq && !sq.stopped) this.onKick(sq);
  }

  /**
   * Called once a turn's completions are signalled: when nothing is in
   * flight and looking has paid lately (or it is time to probe), looks at
   * the available ring for up to POLL_MAX_US (kicks suppressed meanwhile)
   * and drains what turns up; else the queue waits for its kick.
   */
  private pollAvail(sq: ServedQueue): void {
    if (this.inFlight > 0 || this.draining || sq.pulled) return;
    if (sq.pollScore < POLL_MIN_SCORE && ++sq.pollSkipped < POLL_PROBE_EVERY) return;
    sq.pollSkipped = 0;
    try {
      sq.queue.disableNotify();
      const end = performance.now() + POLL_MAX_US / 1000;
      while (!sq.queue.hasAvailable()) {
        if (performance.now() >= end) {
          sq.pollScore -= sq.pollScore / 8;
          if (!sq.queue.enableNotify()) return; // idle: wait for the kick
          break; // it came just now
        }
      }
    } catch (e) {
      this.fail(sq, e as Error);
      return;
    }
    sq.pollScore += (1 - sq.pollScore) / 8;
    this.counters.polled++;
    this.drain(sq);
  }

  /**
   * Takes what the driver made available, at most a queue's worth per call:
   * chains completed at once (a failed device's) would otherwise let a guest
   * that keeps adding them hold the event loop, and with it the control
   * channel and the other queues. The rest is taken on the next turn.
   */
  private drain(sq: ServedQueue): void {
    // One clock read for the whole turn: every chain of it is taken now. Those completed inline
    // are timed together, to the turn's end, when their interrupt can go out.
    const taken = performance.now();
    let inline = 0;
    try {
      let budget = sq.queue.size;
      for (;;) {
        let chain: DescriptorChain | null;
        while (!sq.stopped && !this.draining && !this.paused && budget > 0 && (chain = sq.queue.pop()) !== null) {
          if (this.submit(sq, chain, taken)) inline++;
          budget--;
        }
        if (sq.stopped || this.paused || this.draining) break; // (enableNotify would report the chains left: no spinning)
        if (budget === 0) {
          setImmediate(() => !sq.stopped && this.drain(sq));
          break;
        }
        if (!sq.queue.enableNotify()) break;
      }
    } catch (e) {
      this.fail(sq, e as Error);
    }
    if (inline > 0) this.latency.record((performance.now() - taken) * 1000, inline);
  }

  /** Hands a chain taken at `taken` to the backend; true when it completed at once (inline). */
  private submit(sq: ServedQueue, chain: DescriptorChain, taken: number): boolean {
    this.counters.requests++;
    const r = this.failed ? this.backend.fail(chain) : this.backend.handle(chain); // a QueueError here propagates to drain()
    this.inFlight++;
    if (typeof r === 'number') {
      this.complete(sq, chain.head, r);
      return true;
    }
    r.then(
      (len) => {
        this.latency.record((performance.now() - taken) * 1000);
        this.complete(sq, chain.head, len);
      },
      (e: Error) => {
        this.inFlight--;
        this.fail(sq, e);
        this.maybeSettled();
      },
    );
    return false;
  }

  private complete(sq: ServedQueue, head: number, len: number): void {
    this.inFlight--;
    this.counters.completions++;
    if (!sq.stopped) {
      sq.queue.pushUsed(head, len);
      this.scheduleNotify(sq);
    }
    this.maybeSettled();
  }

  /** Coalesces the completions of one event-loop turn into at most one interrupt. */
  private scheduleNotify(sq: ServedQueue): void {
    if (sq.notifyScheduled) return;
    sq.notifyScheduled = true;
    setImmediate(() => {
      sq.notifyScheduled = false;
      if (sq.stopped) return;
      if (sq.queue.needsNotify()) this.interrupt(sq);
      if (POLL_MAX_US > 0) this.pollAvail(sq);
    });
  }

  private interrupt(sq: ServedQueue): void {
    this.counters.interrupts++;
    try {
      libc.eventfdWrite(sq.call);
    } catch (e) {
      this.log.error({ queue: sq.index, err: (e as Error).message }, 'call eventfd write failed');
    }
  }

  private fail(sq: ServedQueue, e: Error): void {
    if (sq.stopped) return;
    sq.stopped = true;
    this.counters.queueErrors++;
    const reason = e instanceof QueueError ? e.message : `internal error: ${e.message}`;
    this.log.warn({ queue: sq.index, err: reason }, 'queue stopped: device needs reset');
    this.needsReset(reason, sq.index);
  }
}
