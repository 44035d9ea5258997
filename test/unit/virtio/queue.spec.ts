// The device side of the split virtqueue, driven by the harness's driver
// queue over plain buffers: well-formed chains, every kind of malformation,
// notification suppression, and properties over random rings.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../../../src/devices/guest-memory.js';
import { DriverQueue } from '../../../src/devices/harness/driver-queue.js';
import {
  QueueError, SplitQueue, VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, ringSizes,
} from '../../../src/devices/virtio/queue.js';

const FOUR_GIB = 2 ** 32;
const RING_BASE = 0x1000;
const DATA_BASE = FOUR_GIB;

interface Setup {
  mem: GuestMemory;
  drv: DriverQueue;
  dev: SplitQueue;
  low: Uint8Array;
  high: Uint8Array;
}

function setup(size = 8, opts = { eventIdx: false, indirect: true }): Setup {
  const low = new Uint8Array(0x10000);
  const high = new Uint8Array(0x10000);
  const mem = GuestMemory.fromBuffers([{ gpa: 0, bytes: low }, { gpa: DATA_BASE, bytes: high }]);
  const s = ringSizes(size);
  const addrs = { desc: RING_BASE, avail: RING_BASE + s.desc, used: (RING_BASE + s.desc + s.avail + 3) & ~3 };
  let next = DATA_BASE + 0x8000;
  const alloc = (len: number, align: number): number => {
    const at = Math.ceil(next / align) * align;
    next = at + len;
    return at;
  };
  const drv = new DriverQueue(mem, 0, size, addrs, alloc);
  const dev = new SplitQueue(mem, { size, ...addrs }, opts);
  return { mem, drv, dev, low, high };
}

function qerr(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: Error) => e instanceof QueueError && re.test(e.message));
}

describe('SplitQueue: well-formed rings', () => {
  it('pops a chain of readable then writable buffers as views of guest memory', () => {
    const { drv, dev, high } = setup();
    high.set([1, 2, 3], 0x10);
    const head = drv.submit([{ addr: DATA_BASE + 0x10, len: 3 }, { addr: DATA_BASE + 0x100, len: 8, write: true }]);
    const c = dev.pop()!;
    assert.equal(c.head, head);
    assert.deepEqual([...c.readable[0]!], [1, 2, 3]);
    assert.equal(c.readableBytes, 3);
    assert.equal(c.writableBytes, 8);
    c.writable[0]!.fill(7);
    assert.equal(high[0x100], 7);
    assert.equal(dev.pop(), null);
    dev.pushUsed(c.head, 8);
    assert.deepEqual(drv.takeUsed(), [{ id: head, len: 8 }]);
  });
  it('follows an indirect table, and normal descriptors before it', () => {
    const { drv, dev } = setup();
    drv.submit([{ addr: DATA_BASE, len: 16 }, { addr: DATA_BASE + 16, len: 512, write: true }, { addr: DATA_BASE + 600, len: 1, write: true }], { indirect: true });
    const c = dev.pop()!;
    assert.equal(c.readable.length, 1);
    assert.equal(c.writable.length, 2);
    assert.equal(c.writableBytes, 513);
  });
  it('wraps the 16-bit indices', () => {
    const { drv, dev } = setup(4);
    for (let i = 0; i < 70000; i++) {
      const head = drv.submit([{ addr: DATA_BASE, len: 1, write: true }]);
      const c = dev.pop()!;
      assert.equal(c.head, head);
      dev.pushUsed(c.head, 1);
      assert.equal(drv.takeUsed().length, 1);
    }
  });
  it('refuses to complete a head that is not in flight (a bug in the device)', () => {
    const { dev } = setup();
    assert.throws(() => dev.pushUsed(0, 1), /not in flight/);
  });
});

describe('SplitQueue: malformed rings throw QueueError', () => {
  it('a ring outside guest memory or misaligned', () => {
    const { mem } = setup();
    qerr(() => new SplitQueue(mem, { size: 8, desc: 0x10000 - 64, avail: 0x100, used: 0x200 }, { eventIdx: false, indirect: false }), /descriptor table/);
    qerr(() => new SplitQueue(mem, { size: 8, desc: 0x8, avail: 0x100, used: 0x200 }, { eventIdx: false, indirect: false }), /misaligned/);
    qerr(() => new SplitQueue(mem, { size: 6, desc: 0, avail: 0x100, used: 0x200 }, { eventIdx: false, indirect: false }), /power of 2/);
  });
  it('a head index ≥ size', () => {
    const { drv, dev } = setup();
    drv.setAvailEntry(0, 8);
    drv.setAvailIdx(1);
    qerr(() => dev.pop(), /head 8/);
  });
  it('an avail index more than size ahead', () => {
    const { drv, dev } = setup();
    drv.setAvailIdx(9);
    qerr(() => dev.pop(), /ahead/);
    drv.setAvailIdx(0xffff);
    qerr(() => dev.hasAvailable(), /ahead/);
  });
  it('a buffer outside guest memory, crossing a region end, or above 2^53', () => {
    for (const [addr, len] of [[0x20000, 1], [0xfff0, 0x20], [DATA_BASE - 1, 2], [2 ** 53, 1], [2 ** 60, 1]] as const) {
      const { drv, dev } = setup();
      drv.writeDesc(0, { addr, len, flags: 0, next: 0 });
      drv.setAvailEntry(0, 0);
      drv.setAvailIdx(1);
      qerr(() => dev.pop(), /outside|crosses|2\^53|wraps/);
    }
  });
  it('a huge length', () => {
    const { drv, dev } = setup();
    drv.writeDesc(0, { addr: DATA_BASE, len: 0xffff_ffff, flags: VIRTQ_DESC_F_WRITE, next: 0 });
    drv.setAvailEntry(0, 0);
    drv.setAvailIdx(1);
    qerr(() => dev.pop(), /crosses/);
  });
  it('a descriptor loop and a chain longer than the queue', () => {
    const { drv, dev } = setup(4);
    drv.writeDesc(0, { addr: DATA_BASE, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 });
    drv.writeDesc(1, { addr: DATA_BASE, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 0 });
    drv.setAvailEntry(0, 0);
    drv.setAvailIdx(1);
    qerr(() => dev.pop(), /longer than 4/);
    const s2 = setup(4);
    s2.drv.writeDesc(0, { addr: DATA_BASE, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 0 }); // self-loop
    s2.drv.setAvailEntry(0, 0);
    s2.drv.setAvailIdx(1);
    qerr(() => s2.dev.pop(), /longer than/);
  });
  it('a next index ≥ size', () => {
    const { drv, dev } = setup(4);
    drv.writeDesc(0, { addr: DATA_BASE, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 4 });
    drv.setAvailEntry(0, 0);
    drv.setAvailIdx(1);
    qerr(() => dev.pop(), /next index 4/);
  });
  it('a readable descriptor after a writable one', () => {
    const { drv, dev } = setup();
    drv.submit([{ addr: DATA_BASE, len: 1, write: true }, { addr: DATA_BASE, len: 1 }]);
    qerr(() => dev.pop(), /after a writable/);
  });
  it('bad indirect tables: not negotiated, nested, with NEXT, bad length, too long, outside memory', () => {
    const cases: [number, number, number, RegExp, boolean?][] = [
      [DATA_BASE, 16, VIRTQ_DESC_F_INDIRECT, /without VIRTIO_F_INDIRECT_DESC/, false],
      [DATA_BASE, 16, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT, /NEXT/],
      [DATA_BASE, 24, VIRTQ_DESC_F_INDIRECT, /multiple of 16/],
      [DATA_BASE, 0, VIRTQ_DESC_F_INDIRECT, /multiple of 16/],
      [DATA_BASE, 16 * 9, VIRTQ_DESC_F_INDIRECT, /multiple of 16/],
      [0x20000, 16, VIRTQ_DESC_F_INDIRECT, /outside/],
    ];
    for (const [addr, len, flags, re, indirect] of cases) {
      const { drv, dev } = setup(8, { eventIdx: false, indirect: indirect ?? true });
      drv.writeDesc(0, { addr: DATA_BASE + 0x100, len: 1, flags: 0, next: 0 }, DATA_BASE);
      drv.writeDesc(0, { addr, len, flags, next: 1 });
      drv.setAvailEntry(0, 0);
      drv.setAvailIdx(1);
      qerr(() => dev.pop(), re);
    }
    const { drv, dev } = setup();
    drv.writeDesc(0, { addr: DATA_BASE + 0x200, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 }, DATA_BASE);
    drv.writeDesc(0, { addr: DATA_BASE, len: 16, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    drv.setAvailEntry(0, 0);
    drv.setAvailIdx(1);
    qerr(() => dev.pop(), /nested/);
    const loop = setup();
    loop.drv.writeDesc(0, { addr: DATA_BASE + 0x100, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 1 }, DATA_BASE);
    loop.drv.writeDesc(1, { addr: DATA_BASE + 0x100, len: 1, flags: VIRTQ_DESC_F_NEXT, next: 0 }, DATA_BASE);
    loop.drv.writeDesc(0, { addr: DATA_BASE, len: 32, flags: VIRTQ_DESC_F_INDIRECT, next: 0 });
    loop.drv.setAvailEntry(0, 0);
    loop.drv.setAvailIdx(1);
    qerr(() => loop.dev.pop(), /longer than 2/);
  });
  it('a chain longer than 4 GiB in total', () => {
    const big = new Uint8Array(0x10000);
    const mem = GuestMemory.fromBuffers([{ gpa: 0, bytes: big }]);
    // One region can't hold 4 GiB here, so lengths are checked first: use a
    // fake memory whose slice accepts everything to reach the total bound.
    const fake = Object.create(mem) as GuestMemory;
    fake.slice = (gpa: number, len: number) => (gpa < 0x10000 ? big.subarray(gpa, gpa + len) : new Uint8Array(0));
    fake.dataView = (gpa: number, len: number) => new DataView(big.buffer, gpa, len);
    const dev = new SplitQueue(fake, { size: 4, desc: 0x1000, avail: 0x2000, used: 0x3000 }, { eventIdx: false, indirect: false });
    const dv = new DataView(big.buffer);
    for (let i = 0; i < 2; i++) {
      dv.setUint32(0x1000 + 16 * i, 0x20000, true);
      dv.setUint32(0x1000 + 16 * i + 8, 0xffff_0000, true);
      dv.setUint16(0x1000 + 16 * i + 12, VIRTQ_DESC_F_NEXT * (i === 0 ? 1 : 0), true);
      dv.setUint16(0x1000 + 16 * i + 14, 1, true);
    }
    dv.setUint16(0x2002, 1, true);
    qerr(() => dev.pop(), /4 GiB/);
  });
  it('a head made available twice while in flight', () => {
    const { drv, dev } = setup();
    drv.writeDesc(0, { addr: DATA_BASE, len: 1, flags: 0, next: 0 });
    drv.setAvailEntry(0, 0);
    drv.setAvailEntry(1, 0);
    drv.setAvailIdx(2);
    dev.pop();
    qerr(() => dev.pop(), /still in use/);
  });
});

describe('SplitQueue: notifications', () => {
  it('without EVENT_IDX: interrupts unless VIRTQ_AVAIL_F_NO_INTERRUPT, once per batch', () => {
    const { drv, dev } = setup();
    assert.equal(dev.needsNotify(), false); // nothing used yet
    drv.submit([{ addr: DATA_BASE, len: 1, write: true }]);
    dev.pushUsed(dev.pop()!.head, 1);
    assert.equal(dev.needsNotify(), true);
    assert.equal(dev.needsNotify(), false);
    drv.setAvailFlags(VIRTQ_AVAIL_F_NO_INTERRUPT);
    drv.submit([{ addr: DATA_BASE, len: 1, write: true }]);
    dev.pushUsed(dev.pop()!.head, 1);
    assert.equal(dev.needsNotify(), false);
  });
  it('with EVENT_IDX: interrupts only when the used index passes used_event, and publishes avail_event', () => {
    const { drv, dev } = setup(8, { eventIdx: true, indirect: false });
    drv.setUsedEvent(2); // interrupt when used idx goes past 2, i.e. on the 3rd completion
    const results: boolean[] = [];
    for (let i = 0; i < 4; i++) {
      drv.submit([{ addr: DATA_BASE, len: 1, write: true }]);
      dev.pushUsed(dev.pop()!.head, 1);
      assert.equal(drv.availEvent(), i + 1);
      results.push(dev.needsNotify());
      drv.takeUsed();
    }
    assert.deepEqual(results, [false, false, true, false]);
  });
  it('with EVENT_IDX: a batch crossing used_event interrupts once', () => {
    const { drv, dev } = setup(8, { eventIdx: true, indirect: false });
    drv.setUsedEvent(1);
    for (let i = 0; i < 3; i++) drv.add([{ addr: DATA_BASE, len: 1, write: true }]);
    drv.publish();
    for (let c = dev.pop(); c; c = dev.pop()) dev.pushUsed(c.head, 1);
    assert.equal(dev.needsNotify(), true);
    assert.equal(dev.needsNotify(), false);
  });
  for (const eventIdx of [true, false]) {
    it(`disableNotify tells the driver not to kick while the device polls, enableNotify asks again (${eventIdx ? 'EVENT_IDX' : 'VIRTQ_USED_F_NO_NOTIFY'})`, () => {
      const { drv, dev, low } = setup(8, { eventIdx, indirect: false });
      const usedFlags = (): number => low[(RING_BASE + ringSizes(8).desc + ringSizes(8).avail + 3) & ~3]! & 1; // the used ring's flags (setup's layout)
      const kickWanted = (old: number): boolean => (eventIdx ? drv.kickNeeded(old) : usedFlags() === 0);
      drv.submit([{ addr: DATA_BASE, len: 1, write: true }]);
      dev.pushUsed(dev.pop()!.head, 1);
      assert.equal(dev.enableNotify(), false);
      let old = drv.availIdx;
      dev.disableNotify();
      drv.submit([{ addr: DATA_BASE, len: 1, write: true }]);
      assert.equal(kickWanted(old), false);
      assert.equal(dev.hasAvailable(), true);
      dev.pushUsed(dev.pop()!.head, 1);
      assert.equal(dev.enableNotify(), false);
      old = drv.availIdx;
      drv.submit([{ addr: DATA_BASE, len: 1, write: true }]);
      assert.equal(kickWanted(old), true);
    });
  }
  it('enableNotify reports chains that arrived meanwhile', () => {
    const { drv, dev } = setup(8, { eventIdx: true, indirect: false });
    assert.equal(dev.enableNotify(), false);
    drv.submit([{ addr: DATA_BASE, len: 1 }]);
    assert.equal(dev.enableNotify(), true);
  });
});

describe('SplitQueue: properties', () => {
  const sizes = fc.constantFrom(1, 2, 4, 8, 16);
  it('random bytes as rings never throw anything but QueueError and only yield views inside guest memory', () => {
    fc.assert(
      fc.property(sizes, fc.uint8Array({ minLength: 4096, maxLength: 4096 }), fc.boolean(), fc.boolean(), (size, bytes, eventIdx, indirect) => {
        // Guest RAM: 4 KiB of random rings at gpa 0 plus a 4 KiB random region at 4 GiB.
        const low = bytes.slice();
        const high = bytes.slice().reverse();
        const mem = GuestMemory.fromBuffers([{ gpa: 0, bytes: low }, { gpa: FOUR_GIB, bytes: high }]);
        const s = ringSizes(size);
        const desc = 0;
        const avail = s.desc;
        const used = (avail + s.avail + 3) & ~3;
        const dev = new SplitQueue(mem, { size, desc, avail, used }, { eventIdx, indirect });
        try {
          for (let i = 0; i < 2 * size + 2; i++) {
            const c = dev.pop();
            if (c === null) break;
            for (const v of [...c.readable, ...c.writable]) {
              assert.ok(v.buffer === low.buffer || v.buffer === high.buffer, 'a view of guest memory');
              assert.ok(v.byteOffset + v.byteLength <= v.buffer.byteLength);
            }
            assert.ok(c.readableBytes + c.writableBytes <= 0xffff_ffff);
            dev.pushUsed(c.head, c.writableBytes);
            dev.needsNotify();
          }
        } catch (e) {
          if (!(e instanceof QueueError)) throw e;
        }
      }),
      { numRuns: 3000 },
    );
  });
  it('random well-formed chains round-trip through the ring in order', () => {
    const chain = fc.array(fc.record({ off: fc.nat(0x7000), len: fc.nat(0x800), write: fc.boolean() }), { minLength: 1, maxLength: 6 });
    fc.assert(
      fc.property(fc.array(chain, { minLength: 1, maxLength: 40 }), fc.boolean(), (chains, indirect) => {
        const { drv, dev } = setup(8, { eventIdx: true, indirect: true });
        for (const ch of chains) {
          const bufs = [...ch.filter((b) => !b.write), ...ch.filter((b) => b.write)].map((b) => ({ addr: DATA_BASE + b.off, len: b.len, write: b.write }));
          const head = drv.submit(bufs, { indirect });
          const c = dev.pop()!;
          assert.equal(c.head, head);
          assert.equal(c.readableBytes, bufs.filter((b) => !b.write).reduce((a, b) => a + b.len, 0));
          assert.equal(c.writableBytes, bufs.filter((b) => b.write).reduce((a, b) => a + b.len, 0));
          dev.pushUsed(c.head, c.writableBytes);
          assert.deepEqual(drv.takeUsed(), [{ id: head, len: c.writableBytes }]);
        }
      }),
      { numRuns: 300 },
    );
  });
});
