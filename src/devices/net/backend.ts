// The virtio-net backend: a receive queue (0) that the backend pulls buffers
// from as frames arrive, and a transmit queue (1) whose chains the server
// hands over. Frames move through a FrameLink (tap or passt) on the
// non-blocking backend fd, waited for only when there is something to wait
// for: readable on the event loop (the link's LoopReader), writable with an
// FdWatcher (poll on libuv's pool; a full tap or socket is rare).
//   receive: buffers are taken only when the guest has posted some; with
//     none, the backend fd is not read (frames wait in the host kernel) until
//     the guest kicks the receive queue. Without MRG_RXBUF a frame goes in
//     one chain; with it, in as many chains as it needs (num_buffers). A
//     frame larger than the buffers taken is dropped and counted.
//   transmit: chains are sent in order; when the backend cannot take more,
//     they wait (at most a ring's worth, since the guest cannot post more)
//     until the fd is writable. No frame the backend accepted is lost.
// When the backend hangs up (passt died, tap removed) the link goes down:
// STATUS loses LINK_UP, the guest is told, transmitted frames are dropped.
import type { Logger } from 'pino';
import type { DeviceBackend, PulledQueue } from '../backend.js';
import type { GuestMemory } from '../guest-memory.js';
import { FdWatcher, POLLOUT } from '../../sys/poll.js';
import { ioctl } from '../../sys/libc.js';
import { VIRTIO_F_INDIRECT_DESC, VIRTIO_F_RING_EVENT_IDX, type DescriptorChain } from '../virtio/queue.js';
import { hasFeature } from '../../ipc/messages.js';
import * as C from './constants.js';
import { LinkDown, RX_AGAIN, RX_DROPPED, setU16, type FrameLink, type RxTarget } from './link.js';
import { PasstLink } from './passt-link.js';
import { MAX_RX_BUFFERS, TapLink } from './tap-link.js';

export interface NetOptions {
  /** tap: a tap fd with a 12-byte vnet header; passt: passt's socket (4-byte length + frame). */
  backend: 'tap' | 'passt';
  /** aa:bb:cc:dd:ee:ff */
  mac: string;
  mtu: number;
  /** TUN_F_* offloads the tap accepted when the core probed it (tap only; 0 for passt). */
  tapOffloads: number;
}

export const NET_MAX_QUEUE_SIZE = 256;
/** Frames received per event-loop turn before yielding to the other work. */
const RX_BUDGET = 64;

const bit = (n: number): number => 2 ** n;

/** The guest's receive offloads each TUN_F_* flag stands for. */
const TAP_GUEST_OFFLOADS: [tunFlag: number, feature: number][] = [
  [C.TUN_F_CSUM, C.VIRTIO_NET_F_GUEST_CSUM],
  [C.TUN_F_TSO4, C.VIRTIO_NET_F_GUEST_TSO4],
  [C.TUN_F_TSO6, C.VIRTIO_NET_F_GUEST_TSO6],
  [C.TUN_F_TSO_ECN, C.VIRTIO_NET_F_GUEST_ECN],
];

interface TxWaiting {
  chain: DescriptorChain;
  done: (len: number) => void;
}

export class NetBackend implements DeviceBackend {
  readonly kind = 'net' as const;
  readonly deviceFeatures: number;
  readonly maxQueueSize = NET_MAX_QUEUE_SIZE;
  readonly pulledQueues = [C.RX_QUEUE] as const;
  onConfigChanged: () => void = () => {};
  private readonly mac: Uint8Array;
  private readonly link: FrameLink;
  private readonly watcher: FdWatcher;
  private linkUp = true;
  private features = 0;
  private rx: PulledQueue | null = null;
  /** Receive chains taken and not yet filled, in order. */
  private reserve: DescriptorChain[] = [];
  private reserveBytes = 0;
  /** The backend had nothing to read: the link waits until it is readable before reading again. */
  private rxWaiting = false;
  private rxScheduled = false;
  private readonly txQueue: TxWaiting[] = [];
  private readonly counters = { rxFrames: 0, rxBytes: 0, rxDropped: 0, rxNoBuffers: 0, txFrames: 0, txBytes: 0, txDropped: 0, txWaits: 0, linkDowns: 0 };

  constructor(
    private readonly fd: number,
    private readonly opts: NetOptions,
    mem: GuestMemory,
    private readonly log: Logger,
  ) {
    const events = { readable: () => this.onReadable(), down: (e: LinkDown) => this.down(e) };
    this.link = opts.backend === 'tap' ? new TapLink(fd, mem, events) : new PasstLink(fd, mem, events);
    this.mac = Uint8Array.from(opts.mac.split(':').map((h) => parseInt(h, 16)));
    let features =
      bit(C.VIRTIO_F_VERSION_1) + bit(VIRTIO_F_RING_EVENT_IDX) + bit(VIRTIO_F_INDIRECT_DESC) +
      bit(C.VIRTIO_NET_F_MAC) + bit(C.VIRTIO_NET_F_STATUS) + bit(C.VIRTIO_NET_F_MTU) + bit(C.VIRTIO_NET_F_MRG_RXBUF);
    if (opts.backend === 'tap') {
      // A tap takes checksum and segmentation offload from us through the vnet header.
      features += bit(C.VIRTIO_NET_F_CSUM) + bit(C.VIRTIO_NET_F_HOST_TSO4) + bit(C.VIRTIO_NET_F_HOST_TSO6) + bit(C.VIRTIO_NET_F_HOST_ECN);
      // It gives the guest only what it accepted when the core probed it.
      for (const [flag, feature] of TAP_GUEST_OFFLOADS) if (opts.tapOffloads & flag) features += bit(feature);
    }
    this.deviceFeatures = features;
    this.watcher = new FdWatcher(fd, (events) => this.onWritable(events));
  }

  config(): Uint8Array {
    const cfg = new Uint8Array(C.CONFIG.size);
    const dv = new DataView(cfg.buffer);
    cfg.set(this.mac, C.CONFIG.mac);
    dv.setUint16(C.CONFIG.status, this.linkUp ? C.VIRTIO_NET_S_LINK_UP : 0, true);
    dv.setUint16(C.CONFIG.maxVirtqueuePairs, 1, true);
    dv.setUint16(C.CONFIG.mtu, this.opts.mtu, true);
    return cfg;
  }

  configWrite(): void {
    // The MAC is read-only in virtio 1.x (no VIRTIO_NET_F_CTRL_MAC_ADDR).
  }

  activate(features: number): void {
    this.features = features;
    if (this.opts.backend === 'tap') {
      // What the tap may hand us is what the guest said it can take — as far
      // as it is a combination the tap accepts (segmentation needs checksum
      // offload, ECN needs segmentation); a guest that accepts the rest alone
      // gets none of it rather than a tap that refuses the call.
      let offload = 0;
      for (const [flag, feature] of TAP_GUEST_OFFLOADS) if (hasFeature(features, feature)) offload |= flag;
      if (!(offload & C.TUN_F_CSUM)) offload = 0;
      if (!(offload & (C.TUN_F_TSO4 | C.TUN_F_TSO6))) offload &= ~C.TUN_F_TSO_ECN;
      try {
        ioctl(this.fd, C.TUNSETOFFLOAD, offload);
      } catch (e) {
        this.log.warn({ offload, err: (e as Error).message }, 'the tap refused the receive offloads: none are used');
        ioctl(this.fd, C.TUNSETOFFLOAD, 0);
      }
    }
  }

  attach(queues: PulledQueue[]): void {
    this.rx = queues.find((q) => q.index === C.RX_QUEUE) ?? null;
    this.pumpRx();
  }

  kicked(): void {
    this.onReadable(); // new buffers: try the backend again
  }

  reset(): void {
    const sending = this.txQueue[0];
    if (sending) this.link.abandon(sending.chain.readable, sending.chain.readableBytes);
    this.rx = null;
    this.reserve = [];
    this.reserveBytes = 0;
    this.rxWaiting = false;
    for (const t of this.txQueue.splice(0)) t.done(0);
    this.updateInterest();
  }

  /** A replacement for a dead device process: the link is down. */
  markFailed(): void {
    this.linkUp = false;
  }

  describe(): Record<string, unknown> {
    return { backend: this.opts.backend, mac: this.opts.mac, mtu: this.opts.mtu };
  }

  stats(): Record<string, number> {
    return { ...this.counters, txRefused: this.link.txRefused, linkUp: this.linkUp ? 1 : 0 };
  }

  handle(chain: DescriptorChain): number | Promise<number> {
    if (!this.linkUp || chain.readableBytes < C.NET_HDR_BYTES) {
      this.counters.txDropped++;
      return 0;
    }
    if (this.txQueue.length === 0 && this.trySend(chain)) return 0;
    return new Promise((done) => {
      this.txQueue.push({ chain, done });
      this.counters.txWaits++;
      this.updateInterest();
    });
  }

  fail(): number {
    this.counters.txDropped++;
    return 0;
  }

  /** Sends one chain; false when the backend cannot take it now. */
  private trySend(chain: DescriptorChain): boolean {
    const refused = this.link.txRefused;
    try {
      if (!this.link.send(chain.readable, chain.readableBytes)) return false;
      if (this.link.txRefused !== refused) return true; // counted there, not sent
    } catch (e) {
      if (!(e instanceof LinkDown)) throw e;
      this.down(e);
      return true;
    }
    this.counters.txFrames++;
    this.counters.txBytes += chain.readableBytes - C.NET_HDR_BYTES;
    return true;
  }

  private flushTx(): void {
    while (this.txQueue.length > 0) {
      const t = this.txQueue[0]!;
      if (this.linkUp && !this.trySend(t.chain)) break;
      if (!this.linkUp) this.counters.txDropped++;
      this.txQueue.shift();
      t.done(0);
    }
  }

  /** The fd is writable, or failed (POLLERR, POLLHUP: the next read or write finds out how). */
  private onWritable(events: number): void {
    this.flushTx();
    if (events & ~POLLOUT) this.onReadable();
    else this.updateInterest();
  }

  /** The link has something to read (or its fd failed). */
  private onReadable(): void {
    this.rxWaiting = false;
    this.pumpRx();
    this.updateInterest();
  }

  private updateInterest(): void {
    this.link.waitReadable(this.linkUp && this.rx !== null && this.rxWaiting);
    this.watcher.want(this.linkUp && this.txQueue.length > 0 ? POLLOUT : 0);
  }

  /** Takes receive chains until a frame surely fits (or the guest has no more); false when there are none. */
  private fillReserve(): boolean {
    const rx = this.rx!;
    const merge = hasFeature(this.features, C.VIRTIO_NET_F_MRG_RXBUF);
    const want = merge ? this.maxFrame() : 1;
    while (merge ? this.reserveBytes < want : this.reserve.length === 0) {
      let chain = rx.pop();
      if (chain === null && rx.enableNotify()) chain = rx.pop();
      if (chain === null) break;
      if (chain.readableBytes > 0 || chain.writableBytes < C.NET_HDR_BYTES) {
        rx.fail(`receive chain ${chain.head} is not a writable buffer of at least ${C.NET_HDR_BYTES} bytes`);
        return false;
      }
      this.reserve.push(chain);
      this.reserveBytes += chain.writableBytes;
    }
    return this.reserve.length > 0;
  }

  /** The largest frame the tap may hand the guest, header included. */
  private maxFrame(): number {
    const gso = [C.VIRTIO_NET_F_GUEST_TSO4, C.VIRTIO_NET_F_GUEST_TSO6, C.VIRTIO_NET_F_GUEST_UFO].some((f) => hasFeature(this.features, f));
    return C.NET_HDR_BYTES + (gso ? C.MAX_GSO_FRAME : this.opts.mtu + C.ETH_HLEN + C.VLAN_HLEN);
  }

  private pumpRx(): void {
    if (this.rxScheduled) return;
    for (let budget = RX_BUDGET; budget > 0; budget--) {
      if (!this.rx || !this.linkUp || this.rxWaiting) return;
      if (!this.fillReserve()) {
        this.counters.rxNoBuffers++;
        return; // the guest's kick brings us back
      }
      const target = this.target();
      let n: number;
      try {
        n = this.link.receive(target);
      } catch (e) {
        if (!(e instanceof LinkDown)) throw e;
        this.down(e);
        return;
      }
      if (n === RX_AGAIN) {
        this.rxWaiting = true;
        this.updateInterest();
        return;
      }
      if (n === RX_DROPPED) {
        this.counters.rxDropped++;
        continue;
      }
      this.deliver(n);
    }
    this.rxScheduled = true;
    setImmediate(() => {
      this.rxScheduled = false;
      this.pumpRx();
    });
  }

  /** The buffers of the reserve's first chains, as many whole chains as one vectored read takes. */
  private target(): RxTarget {
    if (this.reserve.length === 1) return { bufs: this.reserve[0]!.writable, capacity: this.reserveBytes };
    const bufs: Uint8Array[] = [];
    let capacity = 0;
    for (let i = 0; i < this.reserve.length; i++) {
      const c = this.reserve[i]!;
      if (bufs.length + c.writable.length > MAX_RX_BUFFERS) break;
      bufs.push(...c.writable);
      capacity += c.writableBytes;
    }
    return { bufs, capacity };
  }

  /** Hands the first chains of the reserve, holding `n` bytes, to the guest. */
  private deliver(n: number): void {
    let used = 0;
    let left = n;
    while (left > 0) left -= this.reserve[used++]!.writableBytes;
    setU16(this.reserve[0]!.writable, C.HDR_NUM_BUFFERS, used);
    left = n;
    for (let i = 0; i < used; i++) {
      const chain = this.reserve[i]!;
      const len = Math.min(left, chain.writableBytes);
      this.reserveBytes -= chain.writableBytes;
      left -= len;
      this.rx!.complete(chain, len);
    }
    if (used === this.reserve.length) this.reserve.length = 0;
    else this.reserve.splice(0, used);
    this.counters.rxFrames++;
    this.counters.rxBytes += n - C.NET_HDR_BYTES;
  }

  private down(e: LinkDown): void {
    if (!this.linkUp) return;
    this.linkUp = false;
    this.counters.linkDowns++;
    this.log.error({ err: e.message }, 'network backend gone: link down');
    this.flushTx(); // with the link down, waiting frames are dropped
    this.updateInterest();
    this.onConfigChanged();
  }
}
