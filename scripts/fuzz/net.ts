// A mutation fuzzer for the virtio-net device process, through the device
// harness: the real device, in its jail under its enforcing policy, with
// passt's framing on a socketpair whose other end this script holds (it
// plays passt). Features are renegotiated at random after every reset
// (with or without MRG_RXBUF, EVENT_IDX, INDIRECT_DESC). Each round is one of:
//   traffic   receive chains of random layout (1..4 writable descriptors,
//             tiny to 64 KiB, indirect), frames from the backend of every
//             length passt allows, transmit chains split anywhere (inside
//             the header too), indirect, header-only, too long — published
//             and kicked in random order, with more buffers posted when the
//             device starves. Checked: every transmitted frame reaches the
//             peer intact and in order; every received frame is one the peer
//             sent, in order, intact, within the chains it was given (used
//             lengths ≤ the chain, num_buffers right); delivered + dropped
//             = sent; and no byte of guest memory changed outside the posted
//             receive buffers and the used rings.
//   chaos     random descriptors and available entries on either queue
//             (addresses inside, across and outside guest RAM, huge lengths,
//             loops, bad flags, the index far ahead), frames in flight.
//   malformed one targeted bad ring (readable or tiny receive chain, a
//             loop, bad indirect tables, an index jump, a buffer outside
//             RAM): the device must answer with needs-reset.
//   framing   a broken length word from the backend: the link must go down
//             (config-changed) and the device live on; a fresh device follows.
// After every round the device must be alive and answer stats, and a reset
// must complete. A death, a hang or a failed check is a finding: the seed
// and round are printed to replay it.
//   npm run fuzz -- net [--seconds N] [--seed S]
import net from 'node:net';
import { DeviceHarness, FOUR_GIB, MiB, type Buf, type DriverQueue } from '../../src/devices/harness/index.js';
import * as C from '../../src/devices/net/constants.js';
import { VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_EVENT_IDX, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, ringSizes } from '../../src/devices/virtio/queue.js';
import { hasFeature } from '../../src/ipc/messages.js';
import * as libc from '../../src/sys/libc.js';
import { ANSWER_MS, fuzzMain, rng } from './lib.js';

const QUEUE_SIZE = 32;
const MEM_SIZE = 16 * MiB;
const MAC = '02:53:50:00:00:42';
/** The longest frame passt's framing carries (the device's limit). */
const MAX_FRAME = C.MAX_GSO_FRAME;
const ROUND_TIMEOUT_MS = 4000;

interface Counts {
  rounds: number;
  traffic: number;
  framesOut: number;
  framesIn: number;
  dropped: number;
  chaos: number;
  malformed: number;
  needsReset: number;
  linkDowns: number;
}

class Finding extends Error {}

/** passt's side of the socketpair: frames are a 4-byte big-endian length, then the frame. */
class Peer {
  readonly frames: Uint8Array[] = [];
  /** Frames sent to the device, in order. */
  readonly sent: Uint8Array[] = [];
  broken = '';
  private buf: Buffer = Buffer.alloc(0);
  constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      while (!this.broken && this.buf.length >= 4) {
        const len = this.buf.readUInt32BE(0);
        if (len === 0 || len > MAX_FRAME) this.broken = `the device wrote a frame length of ${len} to passt's socket`;
        else if (this.buf.length < 4 + len) break;
        else {
          this.frames.push(new Uint8Array(this.buf.subarray(4, 4 + len)));
          this.buf = this.buf.subarray(4 + len);
        }
      }
    });
    socket.on('error', () => {});
  }
  send(frame: Uint8Array): void {
    this.sent.push(frame);
    this.raw(frame.length, frame);
  }
  raw(len: number, body: Uint8Array): void {
    const word = Buffer.alloc(4);
    word.writeUInt32BE(len >>> 0);
    this.socket.write(Buffer.concat([word, body]));
  }
}

interface Session {
  h: DeviceHarness;
  peer: Peer;
  rx: DriverQueue;
  tx: DriverQueue;
  features: number;
}

/** A posted receive chain: its writable buffers. */
interface RxChain {
  bufs: Buf[];
  capacity: number;
}

/** A receive chain the device returned. */
interface RxUsed {
  id: number;
  len: number;
  chain: RxChain;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

class NetFuzzer {
  s!: Session;
  private roundNo = 0;
  private tag = 0;

  constructor(
    private readonly r: () => number,
    readonly n: Counts,
  ) {}

  private pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.r() * xs.length)]!;
  }
  private int(lo: number, hi: number): number {
    return lo + Math.floor(this.r() * (hi - lo + 1));
  }

  async start(): Promise<void> {
    const [ours, theirs] = libc.socketpair();
    libc.setNonBlocking(theirs);
    let h: DeviceHarness;
    try {
      h = await DeviceHarness.start({ kind: 'net', numQueues: 2, backendFd: theirs, queueSize: QUEUE_SIZE, memSize: MEM_SIZE, logLevel: 'warn', options: { backend: 'passt', mac: MAC, mtu: 1500, tapOffloads: 0 } });
    } finally {
      libc.close(theirs);
    }
    const peer = new Peer(new net.Socket({ fd: ours, readable: true, writable: true }));
    this.s = { h, peer, rx: undefined!, tx: undefined!, features: 0 };
    this.activate();
  }

  async stop(): Promise<void> {
    await this.s.h.close().catch(() => {});
    this.s.peer.socket.destroy();
  }

  /** Activates with a random subset of the optional features. */
  private activate(): void {
    let features = this.s.h.hello.deviceFeatures;
    for (const f of [C.VIRTIO_NET_F_MRG_RXBUF, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_INDIRECT_DESC]) if (this.r() < 0.3) features -= 2 ** f;
    const [rx, tx] = this.s.h.activate({ features });
    Object.assign(this.s, { rx, tx, features });
  }

  private has(feature: number): boolean {
    return hasFeature(this.s.features, feature);
  }

  async round(): Promise<void> {
    this.roundNo++;
    this.n.rounds++;
    const c = this.r();
    if (c < 0.5) await this.traffic();
    else if (c < 0.78) await this.chaos();
    else if (c < 0.97) await this.malformed();
    else return this.framing();
    const { h } = this.s;
    if (!h.alive) throw new Finding(`the device died (${JSON.stringify(await h.exited)})`);
    await h.stats(ANSWER_MS).catch(() => {
      throw new Finding('the device stopped answering its control channel');
    });
    this.n.needsReset += h.received.filter((m) => m.type === 'needs-reset').length;
    h.received.length = 0;
    try {
      await h.reset(ANSWER_MS);
    } catch (e) {
      throw new Finding(`the device did not finish a reset: ${(e as Error).message}`);
    }
    this.activate();
  }

  // ---- traffic: well-formed rings, every result checked ----

  /** A frame: broadcast destination, our source, a tag that names it, then a pattern. */
  private frame(len: number): Uint8Array {
    const f = new Uint8Array(len);
    const tag = ++this.tag;
    for (let i = 0; i < len; i++) f[i] = (i * 31 + tag) & 0xff;
    if (len >= 18) {
      f.fill(0xff, 0, 6);
      f.set([0x02, 0x53, 0x50, 0, 0, 0x01], 6);
      f.set([0x88, 0xb5], 12);
      new DataView(f.buffer).setUint32(14, tag);
    }
    return f;
  }

  private frameLen(): number {
    return this.pick([1, 14, 42, 60, 64, 1500, 1514, 1518, 1519, 2048, 9000, 65535, MAX_FRAME, this.int(1, 1600), this.int(1, MAX_FRAME)]);
  }

  /** Writes one receive chain (1..4 writable buffers, ≥ the header in all) and puts it in the ring. */
  private addRx(posted: Map<number, RxChain>, allBufs: Buf[]): boolean {
    const { h, rx } = this.s;
    const pieces = this.int(1, 4);
    const sizes = Array.from({ length: pieces }, () => this.pick([1, 12, 60, 256, 1000, 1526, 2048, 4096, 9000, 65550, this.int(0, 3000)]));
    if (sizes.reduce((a, b) => a + b, 0) < C.NET_HDR_BYTES) sizes[0] = C.NET_HDR_BYTES;
    const indirect = this.has(VIRTIO_F_INDIRECT_DESC) && this.r() < 0.3;
    if (rx.freeDescriptors < (indirect ? 1 : pieces)) return false;
    const bufs = sizes.map((len) => h.buffer(len, true));
    const head = rx.add(bufs, { indirect });
    posted.set(head, { bufs, capacity: sizes.reduce((a, b) => a + b, 0) });
    allBufs.push(...bufs);
    return true;
  }

  /** A transmit chain for `frame` (or a broken one), split at random points, maybe indirect. */
  private addTx(frame: Uint8Array, header: Uint8Array): number {
    const { h, tx } = this.s;
    const all = new Uint8Array(header.length + frame.length);
    all.set(header);
    all.set(frame, header.length);
    const cuts = [...new Set(Array.from({ length: this.int(0, 3) }, () => this.pick([1, 5, 11, 12, 13, this.int(1, Math.max(1, all.length - 1))])))]
      .filter((x) => x > 0 && x < all.length)
      .sort((a, b) => a - b);
    const bounds = [0, ...cuts, all.length];
    const bufs = bounds.slice(1).map((end, i) => h.buffer(all.subarray(bounds[i], end)));
    const indirect = this.has(VIRTIO_F_INDIRECT_DESC) && this.r() < 0.3;
    return tx.add(bufs, { indirect });
  }

  private async traffic(): Promise<void> {
    this.n.traffic++;
    const { h, peer, rx, tx } = this.s;
    const merge = this.has(C.VIRTIO_NET_F_MRG_RXBUF);
    const before = await h.stats(ANSWER_MS);
    const accounted0 = before.rxFrames! + before.rxDropped!;
    const firstFrame = peer.frames.length;
    const snap = new Snapshot(h);

    const posted = new Map<number, RxChain>();
    const allBufs: Buf[] = [];
    const txHeads = new Set<number>();
    const txExpected: Uint8Array[] = [];
    const actions: (() => void)[] = [];
    // Receive buffers: added now (the snapshot must see every descriptor), published and kicked as an action.
    const rxChains = this.int(0, 10);
    for (let i = 0; i < rxChains; i++) this.addRx(posted, allBufs);
    actions.push(() => rx.publish());
    if (this.r() < 0.9) actions.push(() => rx.kick());
    for (let i = this.int(0, 8); i > 0; i--) {
      const f = this.frame(this.frameLen());
      actions.push(() => peer.send(f));
    }
    for (let i = this.int(0, 6); i > 0; i--) {
      if (tx.freeDescriptors < 5) break;
      const kind = this.r();
      const header = new Uint8Array(C.NET_HDR_BYTES);
      let f: Uint8Array;
      if (kind < 0.8) {
        f = this.frame(this.frameLen());
        txExpected.push(f);
      } else if (kind < 0.9) f = new Uint8Array(0); // header only: refused
      else if (kind < 0.95) f = this.frame(MAX_FRAME + this.int(1, 100)); // too long: refused
      else {
        txHeads.add(this.addTx(new Uint8Array(0), new Uint8Array(this.int(0, C.NET_HDR_BYTES - 1)))); // shorter than the header: dropped
        continue;
      }
      txHeads.add(this.addTx(f, header));
    }
    actions.push(() => tx.publish());
    actions.push(() => tx.kick());
    snap.take();
    // Random order, except that a kick is only meaningful after its publish: shuffle, then run.
    for (let i = actions.length - 1; i > 0; i--) {
      const j = Math.floor(this.r() * (i + 1));
      [actions[i], actions[j]] = [actions[j]!, actions[i]!];
    }
    for (const a of actions) {
      a();
      if (this.r() < 0.3) await turn();
    }
    rx.publish();
    rx.kick();
    tx.publish();
    tx.kick();

    // Collect until every transmit chain is back, every frame reached the peer, and every sent frame is accounted for.
    const used: RxUsed[] = [];
    const deadline = Date.now() + ROUND_TIMEOUT_MS;
    let lastProgress = Date.now();
    let stats: Record<string, number>;
    for (;;) {
      // Counters first: what they count is in the used ring by the time they answer.
      stats = await h.stats(ANSWER_MS);
      for (const u of tx.takeUsed()) {
        if (!txHeads.delete(u.id)) throw new Finding(`the device returned transmit head ${u.id}, which was not in flight`);
        if (u.len !== 0) throw new Finding(`the device claims to have written ${u.len} bytes into a transmit chain`);
      }
      // A head comes back to the driver's free list here and may be posted again: match it to its chain now.
      const got = rx.takeUsed();
      for (const u of got) {
        const chain = posted.get(u.id);
        if (!chain) throw new Finding(`the device returned receive head ${u.id}, which was not posted (or returned it twice)`);
        if (u.len > chain.capacity) throw new Finding(`receive head ${u.id}: used length ${u.len} > the chain's ${chain.capacity} bytes`);
        posted.delete(u.id);
        used.push({ ...u, chain });
      }
      const accounted = stats.rxFrames! + stats.rxDropped! - accounted0;
      const want = peer.sent.length - accounted0;
      const txDone = txHeads.size === 0 && peer.frames.length - firstFrame >= txExpected.length;
      if (peer.broken) throw new Finding(peer.broken);
      if (txDone && accounted >= want) break;
      if (got.length) lastProgress = Date.now();
      if (Date.now() > deadline) {
        throw new Finding(`traffic round did not settle: ${txHeads.size} transmit chains out, ${peer.frames.length - firstFrame}/${txExpected.length} frames at the peer, ${accounted}/${want} received frames accounted for (${JSON.stringify(stats)})`);
      }
      // The device starves (it waits for buffers): post more, as a driver refilling its ring would.
      if (accounted < want && Date.now() - lastProgress > 30) {
        const at = h.alloc(0, 1);
        let added = 0;
        for (let i = 0; i < 4 && rx.freeDescriptors > 0; i++, added++) {
          const b = h.buffer(2048, true);
          posted.set(rx.add([b]), { bufs: [b], capacity: b.len });
          allBufs.push(b);
        }
        snap.refresh(at, h.alloc(0, 1));
        snap.refreshRings();
        if (added) {
          rx.publish();
          rx.kick();
        }
        lastProgress = Date.now();
      }
      await sleep(1);
    }
    this.checkTx(peer.frames.slice(firstFrame), txExpected);
    this.checkRx(used, merge, peer.sent.slice(accounted0), stats.rxFrames! - before.rxFrames!);
    const changed = snap.changedOutside(allBufs);
    if (changed) throw new Finding(`the device wrote guest memory outside the posted receive buffers and the used rings: ${changed}`);
    this.n.framesOut += txExpected.length;
    this.n.dropped += stats.rxDropped! - before.rxDropped!;
  }

  private checkTx(got: Uint8Array[], want: Uint8Array[]): void {
    if (got.length !== want.length) throw new Finding(`the peer got ${got.length} frames, ${want.length} were sent`);
    want.forEach((f, i) => {
      if (!Buffer.from(f).equals(got[i]!)) throw new Finding(`transmitted frame ${i} (${f.length} bytes) reached the peer as ${got[i]!.length} different bytes`);
    });
  }

  private checkRx(used: RxUsed[], merge: boolean, sent: Uint8Array[], delivered: number): void {
    const mem = this.s.h.mem;
    const gather = (c: RxChain, len: number): Uint8Array => {
      const out = new Uint8Array(len);
      let at = 0;
      for (const b of c.bufs) {
        const n = Math.min(b.len, len - at);
        if (n <= 0) break;
        out.set(mem.slice(b.addr, n), at);
        at += n;
      }
      return out;
    };
    let next = 0; // index in `sent` of the next frame that may come
    let frames = 0;
    for (let i = 0; i < used.length; ) {
      const first = used[i]!;
      if (first.len < C.NET_HDR_BYTES) throw new Finding(`receive head ${first.id}: used length ${first.len} is shorter than the header`);
      const head = gather(first.chain, first.len);
      const numBuffers = new DataView(head.buffer).getUint16(C.HDR_NUM_BUFFERS, true);
      if (numBuffers < 1 || (!merge && numBuffers !== 1) || i + numBuffers > used.length) {
        throw new Finding(`a received frame says num_buffers ${numBuffers} (MRG_RXBUF ${merge}, ${used.length - i} chains used)`);
      }
      if (head.subarray(0, C.HDR_NUM_BUFFERS).some((b) => b !== 0)) throw new Finding('a frame from passt came with a non-zero virtio-net header');
      const parts = [head.subarray(C.NET_HDR_BYTES)];
      for (let k = 1; k < numBuffers; k++) {
        const u = used[i + k]!;
        if (u.len === 0) throw new Finding(`receive head ${u.id}: an empty buffer in a merged frame`);
        parts.push(gather(u.chain, u.len));
      }
      i += numBuffers;
      const frame = Buffer.concat(parts);
      while (next < sent.length && !frame.equals(sent[next]!)) next++;
      if (next === sent.length) throw new Finding(`a received frame of ${frame.length} bytes is none of the frames the peer sent (in order)`);
      next++;
      frames++;
    }
    if (frames !== delivered) throw new Finding(`${frames} frames reached the receive ring, the device counts ${delivered}`);
    this.n.framesIn += frames;
  }

  // ---- chaos: random rings ----

  private async chaos(): Promise<void> {
    this.n.chaos++;
    const { peer } = this.s;
    const addr = (): number => {
      const c = this.r();
      if (c < 0.5) return FOUR_GIB + Math.floor(this.r() * MEM_SIZE); // data region, sometimes past its end
      if (c < 0.6) return Math.floor(this.r() * 65536); // the rings themselves
      if (c < 0.7) return FOUR_GIB - Math.floor(this.r() * 4096); // just below RAM's second region
      if (c < 0.8) return 2 ** 53 - 1 - Math.floor(this.r() * 4096);
      return Math.floor(this.r() * 2 ** 32);
    };
    const len = (): number => this.pick([0, 1, 11, 12, 16, 512, 1526, 4096, 65536, 0xffffffff, Math.floor(this.r() * 2 ** 32)]);
    for (let step = this.int(1, 3); step > 0; step--) {
      const q = this.r() < 0.5 ? this.s.rx : this.s.tx;
      for (let i = this.int(1, 8); i > 0; i--) q.writeDesc(this.int(0, QUEUE_SIZE - 1), { addr: addr(), len: len(), flags: this.int(0, 7), next: this.int(0, QUEUE_SIZE + 3) });
      const entries = this.int(1, 4);
      for (let i = 0; i < entries; i++) q.setAvailEntry((q.availIdx + i) % QUEUE_SIZE, this.int(0, QUEUE_SIZE + 1));
      q.setAvailIdx(this.r() < 0.1 ? this.int(0, 65535) : q.availIdx + entries);
      if (this.r() < 0.5) peer.send(this.frame(this.frameLen()));
      q.kick();
      if (this.r() < 0.5) await turn();
    }
    await sleep(5);
    if (peer.broken) throw new Finding(peer.broken);
  }

  // ---- malformed: one bad ring, which must be answered with needs-reset ----

  private async malformed(): Promise<void> {
    this.n.malformed++;
    const { h, peer, rx, tx } = this.s;
    const indirect = this.has(VIRTIO_F_INDIRECT_DESC);
    // Each maker picks its queue and publishes (raw or through add); both are kicked.
    const cases: [string, () => void][] = [
      ['a readable receive chain', () => this.publish(rx, [h.buffer(2048)])],
      ['a receive chain shorter than the header', () => this.publish(rx, [h.buffer(this.int(0, C.NET_HDR_BYTES - 1), true)])],
      ['a readable buffer after a writable one', () => this.publish(rx, [h.buffer(64, true), h.buffer(64)])],
      ['a descriptor loop', () => this.loop(this.r() < 0.5 ? rx : tx)],
      ['a next index past the queue', () => this.raw(this.pick([rx, tx]), [{ addr: h.alloc(64), len: 64, flags: VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE, next: QUEUE_SIZE + this.int(0, 100) }])],
      ['a buffer outside guest RAM', () => this.raw(this.pick([rx, tx]), [{ addr: this.pick([FOUR_GIB + MEM_SIZE / 2 - 8, MEM_SIZE / 2 - 100, 2 ** 40]), len: this.pick([4096, 0xffffffff]), flags: VIRTQ_DESC_F_WRITE, next: 0 }])],
      ['an available index far ahead', () => this.jump(this.pick([rx, tx]))],
      ['a head past the queue', () => this.badHead(this.pick([rx, tx]))],
      [indirect ? 'an indirect table of a bad length' : 'an indirect descriptor not negotiated', () => this.indirect(this.pick([rx, tx]), indirect ? this.pick([0, 8, 17, 16 * (QUEUE_SIZE + 1)]) : 16)],
    ];
    if (indirect) cases.push(['a nested indirect table', () => this.nested(this.pick([rx, tx]))]);
    const [what, make] = this.pick(cases);
    make();
    if (this.r() < 0.5) peer.send(this.frame(this.frameLen()));
    rx.kick();
    tx.kick();
    try {
      await h.next('needs-reset', 2000);
    } catch {
      throw new Finding(`${what} was not answered with needs-reset`);
    }
  }

  private publish(q: DriverQueue, bufs: Buf[]): void {
    q.add(bufs);
    q.publish();
  }

  private raw(q: DriverQueue, descs: { addr: number; len: number; flags: number; next: number }[]): void {
    descs.forEach((d, i) => q.writeDesc(i, d));
    q.setAvailEntry(q.availIdx, 0);
    q.setAvailIdx(q.availIdx + 1);
  }

  private loop(q: DriverQueue): void {
    const n = this.int(1, 4);
    const write = q === this.s.rx ? VIRTQ_DESC_F_WRITE : 0;
    this.raw(q, Array.from({ length: n }, (_, i) => ({ addr: this.s.h.alloc(64), len: 64, flags: VIRTQ_DESC_F_NEXT | write, next: (i + 1) % n })));
  }

  private jump(q: DriverQueue): void {
    q.setAvailIdx(q.availIdx + QUEUE_SIZE + this.int(1, 60000));
  }

  private badHead(q: DriverQueue): void {
    q.setAvailEntry(q.availIdx, QUEUE_SIZE + this.int(0, 65535 - QUEUE_SIZE));
    q.setAvailIdx(q.availIdx + 1);
  }

  private indirect(q: DriverQueue, len: number): void {
    const table = this.s.h.alloc(Math.max(len, 16), 16);
    this.raw(q, [{ addr: table, len, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }]);
  }

  private nested(q: DriverQueue): void {
    const { h } = this.s;
    const inner = h.alloc(16, 16);
    const outer = h.alloc(16, 16);
    q.writeDesc(0, { addr: inner, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }, outer);
    this.raw(q, [{ addr: outer, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }]);
  }

  // ---- framing: a broken length word from the backend ----

  private async framing(): Promise<void> {
    const { h, peer } = this.s;
    const len = this.pick([0, MAX_FRAME + 1, 0x7fffffff, 0xffffffff, MAX_FRAME + this.int(1, 1 << 20)]);
    if (this.r() < 0.5) peer.send(this.frame(this.frameLen()));
    peer.raw(len, new Uint8Array(this.int(0, 64)));
    // The device reads the stream only with receive buffers to fill.
    for (let i = 0; i < 8 && this.s.rx.freeDescriptors > 0; i++) this.s.rx.add([h.buffer(2048, true)]);
    this.s.rx.publish();
    this.s.rx.kick();
    try {
      await h.next('config-changed', 3000);
    } catch (e) {
      throw new Finding(`a frame length of ${len} from passt did not take the link down: ${(e as Error).message}`);
    }
    const s = await h.stats(ANSWER_MS).catch(() => {
      throw new Finding('after a broken stream, the device stopped answering');
    });
    if (!h.alive || s.linkUp !== 0) throw new Finding(`after a broken stream: alive ${h.alive}, linkUp ${s.linkUp}`);
    this.n.linkDowns++;
    await this.stop();
    await this.start();
  }
}

/** Guest memory before a round, to find writes the device had no business making. */
class Snapshot {
  private readonly rings: Uint8Array;
  private data = new Uint8Array(0);
  constructor(private readonly h: DeviceHarness) {
    this.rings = new Uint8Array(this.ringBytes());
  }
  private ringBytes(): number {
    return Math.max(...this.h.queues.map((q) => q.addrs.used + ringSizes(q.size).used));
  }
  take(): void {
    this.rings.set(this.h.mem.slice(0, this.rings.length));
    this.data = this.h.mem.slice(FOUR_GIB, MEM_SIZE / 2).slice();
  }
  /** The driver wrote [lo, hi) (new buffers and tables): take it again. */
  refresh(lo: number, hi: number): void {
    this.data.set(this.h.mem.slice(lo, hi - lo), lo - FOUR_GIB);
  }
  /** The driver wrote descriptors and available entries. */
  refreshRings(): void {
    for (const q of this.h.queues) {
      const s = ringSizes(q.size);
      this.rings.set(this.h.mem.slice(q.addrs.desc, s.desc), q.addrs.desc);
      this.rings.set(this.h.mem.slice(q.addrs.avail, s.avail), q.addrs.avail);
    }
  }
  /** The first changed byte outside `allowed`, the used rings and the available indexes (the driver publishes), or ''. */
  changedOutside(allowed: Buf[]): string {
    const rings = this.h.queues.flatMap((q) => [{ addr: q.addrs.used, len: ringSizes(q.size).used }, { addr: q.addrs.avail + 2, len: 2 }]);
    const ranges = [...rings, ...allowed].sort((a, b) => a.addr - b.addr);
    const check = (base: number, before: Uint8Array): string => {
      const now = this.h.mem.slice(base, before.length);
      let at = base;
      for (const r of [...ranges.filter((x) => x.addr >= base && x.addr < base + before.length), { addr: base + before.length, len: 0 }]) {
        if (r.addr > at && !Buffer.from(now.subarray(at - base, r.addr - base)).equals(before.subarray(at - base, r.addr - base))) {
          for (let i = at; i < r.addr; i++) if (now[i - base] !== before[i - base]) return `0x${i.toString(16)}`;
        }
        at = Math.max(at, r.addr + r.len);
      }
      return '';
    };
    return check(0, this.rings) || check(FOUR_GIB, this.data);
  }
}

async function fuzz(seconds: number, seed: number, n: Counts): Promise<void> {
  const f = new NetFuzzer(rng(seed), n);
  await f.start();
  const end = Date.now() + seconds * 1000;
  try {
    while (Date.now() < end) await f.round();
  } catch (e) {
    if (e instanceof Finding) e.message = `round ${f.n.rounds}: ${e.message}\nreplay: npm run fuzz -- net --seed ${seed} --seconds ${seconds}\ndevice log tail:\n${f.s.h.logs.slice(-10).join('\n')}`;
    throw e;
  } finally {
    await f.stop();
  }
}

process.exitCode = await fuzzMain('net', 'jailed device under its enforcing policy, passt framing', async (seconds, seed) => {
  const n: Counts = { rounds: 0, traffic: 0, framesOut: 0, framesIn: 0, dropped: 0, chaos: 0, malformed: 0, needsReset: 0, linkDowns: 0 };
  await fuzz(seconds, seed, n);
  return (
    `${n.rounds} rounds: ${n.traffic} traffic rounds (${n.framesOut} frames out, ${n.framesIn} in, ${n.dropped} dropped), ` +
    `${n.chaos} chaotic rings, ${n.malformed} malformed rings (${n.needsReset} needs-reset), ${n.linkDowns} broken streams`
  );
});
