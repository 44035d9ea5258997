// Device-process tests for virtio-net: the real jailed device process under
// its enforcing policy, driven through its queues by the harness, with a
// backend the test holds the other end of: a socketpair speaking passt's
// framing (the test plays passt), and a real tap in a network namespace
// the test makes (the test plays the host's network stack).
import assert from 'node:assert/strict';
import net from 'node:net';
import { DeviceHarness, NetDriver, testFrame, type HarnessOptions } from '../../src/devices/harness/index.js';
import * as C from '../../src/devices/net/constants.js';
import { hasFeature } from '../../src/ipc/messages.js';
import * as libc from '../../src/sys/libc.js';

const MAC = '02:53:50:00:00:01';

/** The test's end of a passt-style socket: frames are a 4-byte big-endian length, then the frame. */
class PasstPeer {
  readonly frames: Uint8Array[] = [];
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  constructor(readonly socket: net.Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      while (this.buf.length >= 4 && this.buf.length >= 4 + this.buf.readUInt32BE(0)) {
        const len = this.buf.readUInt32BE(0);
        this.frames.push(new Uint8Array(this.buf.subarray(4, 4 + len)));
        this.buf = this.buf.subarray(4 + len);
      }
      for (const w of this.waiters.splice(0)) w();
    });
  }
  send(frame: Uint8Array): void {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(frame.length);
    this.socket.write(Buffer.concat([len, frame]));
  }
  async waitFrames(n: number, timeoutMs = 5000): Promise<Uint8Array[]> {
    const deadline = Date.now() + timeoutMs;
    while (this.frames.length < n) {
      if (Date.now() > deadline) throw new Error(`peer got ${this.frames.length} of ${n} frames`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 50);
      });
    }
    return this.frames.splice(0, n);
  }
}

describe('virtio-net device process', function () {
  this.timeout(20000);
  const open: DeviceHarness[] = [];
  const sockets: net.Socket[] = [];
  afterEach(async () => {
    await Promise.all(open.splice(0).map((h) => h.close()));
    for (const s of sockets.splice(0)) s.destroy();
  });

  async function passtDevice(opts: HarnessOptions = {}, activate: { features?: number } = {}): Promise<{ h: DeviceHarness; d: NetDriver; peer: PasstPeer }> {
    const [ours, theirs] = libc.socketpair();
    libc.setNonBlocking(theirs);
    const h = await DeviceHarness.start({ kind: 'net', numQueues: 2, backendFd: theirs, options: { backend: 'passt', mac: MAC, mtu: 1500, tapOffloads: 0 }, ...opts });
    libc.close(theirs);
    open.push(h);
    const socket = new net.Socket({ fd: ours, readable: true, writable: true });
    sockets.push(socket);
    const [rx, tx] = h.activate(activate);
    return { h, d: new NetDriver(h, rx!, tx!), peer: new PasstPeer(socket) };
  }

  describe('with passt framing', () => {
    it('offers the MAC, link up, MTU and merged buffers, and no offloads', async () => {
      const { h } = await passtDevice();
      const f = h.hello.deviceFeatures;
      for (const b of [C.VIRTIO_NET_F_MAC, C.VIRTIO_NET_F_STATUS, C.VIRTIO_NET_F_MTU, C.VIRTIO_NET_F_MRG_RXBUF, C.VIRTIO_F_VERSION_1]) assert.ok(hasFeature(f, b), `feature ${b}`);
      for (const b of [C.VIRTIO_NET_F_CSUM, C.VIRTIO_NET_F_GUEST_CSUM, C.VIRTIO_NET_F_HOST_TSO4, C.VIRTIO_NET_F_GUEST_TSO4]) assert.ok(!hasFeature(f, b), `feature ${b}`);
      const cfg = Buffer.from(h.hello.config);
      assert.equal([...cfg.subarray(0, 6)].map((x) => x.toString(16).padStart(2, '0')).join(':'), MAC);
      assert.equal(cfg.readUInt16LE(C.CONFIG.status), C.VIRTIO_NET_S_LINK_UP);
      assert.equal(cfg.readUInt16LE(C.CONFIG.mtu), 1500);
    });

    it('carries frames both ways, byte for byte, including split transmit chains', async () => {
      const { d, peer } = await passtDevice();
      const out = [testFrame(60, 1), testFrame(1514, 2), testFrame(700, 3)];
      await d.send(out[0]!);
      await d.send(out[1]!, { splitAt: 5 }); // header itself split over two buffers
      await d.send(out[2]!, { splitAt: 400 });
      assert.deepEqual(await peer.waitFrames(3), out);

      d.postRx(8, 2048);
      const inbound = [testFrame(42, 4), testFrame(1514, 5)];
      for (const f of inbound) peer.send(f);
      for (const f of inbound) {
        const r = await d.receive();
        assert.deepEqual(r.frame, f);
        assert.deepEqual([...r.header.subarray(0, 10)], new Array(10).fill(0));
        assert.equal(r.numBuffers, 1);
      }
    });

    it('spreads a frame over several small buffers with MRG_RXBUF (num_buffers)', async () => {
      const { d, peer } = await passtDevice();
      d.postRx(32, 256);
      const big = testFrame(1514, 9);
      peer.send(big);
      const r = await d.receive();
      assert.equal(r.numBuffers, Math.ceil((1514 + 12) / 256));
      assert.deepEqual(r.frame, big);
    });

    it('without MRG_RXBUF drops and counts a frame larger than the buffer, and delivers the next', async () => {
      const { h, d, peer } = await passtDevice({}, { features: 0 });
      const features = h.hello.deviceFeatures - 2 ** C.VIRTIO_NET_F_MRG_RXBUF;
      await h.reset();
      const [rx, tx] = h.activate({ features });
      const d2 = new NetDriver(h, rx!, tx!);
      void d;
      d2.postRx(2, 600);
      peer.send(testFrame(1000, 1));
      peer.send(testFrame(500, 2));
      const r = await d2.receive();
      assert.deepEqual(r.frame, testFrame(500, 2));
      const s = await h.stats();
      assert.equal(s.rxDropped, 1);
      assert.equal(s.rxFrames, 1);
    });

    it('reads nothing while no receive buffers are posted, then delivers every frame once they are', async () => {
      const { h, d, peer } = await passtDevice();
      const frames = Array.from({ length: 20 }, (_, i) => testFrame(100 + i, i));
      for (const f of frames) peer.send(f);
      await new Promise((r) => setTimeout(r, 300));
      const before = await h.stats();
      assert.equal(before.rxFrames, 0);
      d.postRx(20, 2048);
      for (const f of frames) assert.deepEqual((await d.receive()).frame, f);
    });

    it('holds transmit chains while the backend is full, and loses none', async () => {
      const { h, d, peer } = await passtDevice();
      peer.socket.pause(); // passt stops reading: the socket buffer fills
      const frames = Array.from({ length: 48 }, (_, i) => testFrame(60000, i));
      const heads = frames.map((f) => d.addTx(f));
      d.tx.kick();
      await new Promise((r) => setTimeout(r, 300));
      const waiting = await h.stats();
      assert.ok(waiting.txWaits > 0, 'some chains waited');
      assert.ok(d.tx.takeUsed().length < frames.length, 'not every chain came back while the backend was full');
      peer.socket.resume();
      const got = await peer.waitFrames(frames.length, 10000);
      assert.deepEqual(got, frames);
      void heads;
    });

    it('a reset in the middle of a frame to passt still leaves whole frames in the stream', async () => {
      const { h, d, peer } = await passtDevice();
      peer.socket.pause();
      const frames = Array.from({ length: 48 }, (_, i) => testFrame(60000, i));
      for (const f of frames) d.addTx(f);
      d.tx.kick();
      await new Promise((r) => setTimeout(r, 300));
      assert.ok((await h.stats()).txWaits > 0, 'the device was in the middle of sending');
      await h.reset();
      const [rx, tx] = h.activate();
      const d2 = new NetDriver(h, rx!, tx!);
      peer.socket.resume();
      const last = testFrame(100, 99);
      await d2.send(last);
      // The stream parses: every frame before the last is one of those sent, whole and in order.
      for (;;) {
        const [got] = await peer.waitFrames(1);
        if (got!.length === last.length) {
          assert.deepEqual(got, last);
          break;
        }
        assert.deepEqual(got, frames.shift(), 'a whole frame, in order');
      }
    });

    it('a malformed receive chain (readable buffer) stops the queue with needs-reset, and the process lives', async () => {
      const { h, d } = await passtDevice();
      const b = h.buffer(2048);
      d.rx.add([b]);
      d.rx.publish();
      d.rx.kick();
      const m = await h.next('needs-reset');
      assert.match((m as { reason: string }).reason, /receive chain/);
      assert.ok((await h.stats()).queueErrors >= 1);
    });

    it('takes the link down when passt goes away, and tells the driver', async () => {
      const { h, d, peer } = await passtDevice();
      d.postRx(4, 2048);
      peer.socket.destroy();
      const m = await h.next('config-changed');
      assert.equal(Buffer.from((m as { config: Uint8Array }).config).readUInt16LE(C.CONFIG.status), 0);
      await d.send(testFrame(60, 1)); // dropped, but the chain comes back
      assert.equal((await h.stats()).linkUp, 0);
    });
  });
});
