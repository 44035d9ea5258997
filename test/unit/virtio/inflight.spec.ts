// The in-flight record of a split queue (vhost-user's INFLIGHT_SHMFD layout),
// kept by one device and read by the one that replaces it after a death: the
// chains taken and not completed are taken again, oldest first, before any
// new one; none completed is taken twice; a death between publishing a used
// element and clearing its record is recognised.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { GuestMemory } from '../../../src/devices/guest-memory.js';
import { DriverQueue } from '../../../src/devices/harness/driver-queue.js';
import { InflightRegion, inflightQueueBytes } from '../../../src/devices/virtio/inflight.js';
import { SplitQueue, ringSizes } from '../../../src/devices/virtio/queue.js';

const SIZE = 8;

function rig() {
  const low = new Uint8Array(0x10000);
  const high = new Uint8Array(0x10000);
  const mem = GuestMemory.fromBuffers([{ gpa: 0, bytes: low }, { gpa: 2 ** 32, bytes: high }]);
  const s = ringSizes(SIZE);
  const addrs = { desc: 0x1000, avail: 0x1000 + s.desc, used: (0x1000 + s.desc + s.avail + 3) & ~3 };
  let next = 2 ** 32;
  const drv = new DriverQueue(mem, 0, SIZE, addrs, (len, align) => {
    const at = Math.ceil(next / align) * align;
    next = at + len;
    return at;
  });
  const file = new Uint8Array(inflightQueueBytes(SIZE));
  const device = (): { q: SplitQueue; rec: InflightRegion } => {
    const q = new SplitQueue(mem, { size: SIZE, ...addrs }, { eventIdx: false, indirect: false });
    const rec = new InflightRegion(new DataView(file.buffer));
    q.trackInflight(rec, 0);
    return { q, rec };
  };
  return { drv, device, file };
}

describe('in-flight record', () => {
  it('a replacement takes again, oldest first, exactly the chains the dead device took and did not complete', () => {
    const { drv, device } = rig();
    const heads = [0, 1, 2, 3].map(() => drv.add([{ addr: 2 ** 32 + 0x100, len: 16, write: true }]));
    drv.publish();
    const dead = device().q;
    const taken = [dead.pop()!, dead.pop()!, dead.pop()!];
    dead.pushUsed(taken[1]!.head, 4); // completed out of order; 0 and 2 stay in flight
    // The device dies here. Its replacement:
    const { q } = device();
    assert.equal(q.resubmitting, 2);
    const again = [q.pop()!.head, q.pop()!.head];
    assert.deepEqual(again, [heads[0], heads[2]]);
    assert.equal(q.pop()!.head, heads[3], 'then the chain never taken');
    assert.equal(q.pop(), null, 'and nothing completed is taken twice');
  });

  it('recognises a death between publishing a used element and clearing its record', () => {
    const { drv, device, file } = rig();
    const h = drv.add([{ addr: 2 ** 32 + 0x100, len: 16, write: true }]);
    drv.publish();
    const dead = device().q;
    dead.pop();
    dead.pushUsed(h, 0);
    // Undo the record's second step, as a death just before it would have left it.
    const v = new DataView(file.buffer);
    v.setUint8(16 + 16 * h, 1);
    v.setUint16(14, 0, true);
    const { q } = device();
    assert.equal(q.resubmitting, 0);
    assert.equal(q.pop(), null);
  });

  it('property: over random take/complete/die sequences, every chain completes exactly once', () => {
    fc.assert(
      fc.property(fc.array(fc.constantFrom('take', 'complete', 'die'), { maxLength: 60 }), fc.integer({ min: 1, max: 12 }), (ops, total) => {
        const { drv, device } = rig();
        const completions = new Map<number, number>();
        let { q } = device();
        const held: number[] = [];
        let submitted = 0;
        const submitMore = (): void => {
          while (submitted < total && drv.freeDescriptors > 0) {
            drv.add([{ addr: 2 ** 32 + 0x100, len: 16, write: true }]);
            submitted++;
          }
          drv.publish();
        };
        const reap = (): void => {
          for (const u of drv.takeUsed()) completions.set(u.id, (completions.get(u.id) ?? 0) + 1);
        };
        submitMore();
        for (const op of ops) {
          if (op === 'take') {
            const c = q.pop();
            if (c) held.push(c.head);
          } else if (op === 'complete') {
            const h = held.shift();
            if (h !== undefined) q.pushUsed(h, 1);
            reap();
            submitMore();
          } else {
            held.length = 0;
            q = device().q;
          }
        }
        // Then a well-behaved end: take and complete everything left.
        for (let round = 0; round < 20; round++) {
          for (let c = q.pop(); c; c = q.pop()) held.push(c.head);
          for (let h = held.shift(); h !== undefined; h = held.shift()) q.pushUsed(h, 1);
          reap();
          submitMore();
        }
        // Descriptor heads are reused, so count completions against submissions.
        const done = [...completions.values()].reduce((a, b) => a + b, 0);
        return done === submitted && held.length === 0;
      }),
      { numRuns: 200 },
    );
  });
});
