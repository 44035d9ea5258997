// Control-channel schema, framing and channel: validators reject anything
// malformed a (possibly compromised) device or a buggy core could send.
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import fc from 'fast-check';
import { pack } from 'msgpackr';
import {
  ControlChannel, FrameReader, MAX_FRAME_BYTES, ProtocolError, decode, encode,
  validateCoreMessage, validateDeviceMessage, type DeviceMessage,
} from '../../../src/ipc/index.js';

const hello = (over: Record<string, unknown> = {}): Record<string, unknown> => ({
  v: 1, type: 'hello', kind: 'blk', deviceFeatures: 2 ** 32 + 6, numQueues: 1, maxQueueSize: 256, config: new Uint8Array(60), ...over,
});

function rejects(fn: () => unknown, re: RegExp): void {
  assert.throws(fn, (e: Error) => e instanceof ProtocolError && re.test(e.message));
}

/** Two connected in-memory duplex streams. */
function duplexPair(): [Duplex, Duplex] {
  const ends: Duplex[] = [];
  const make = (peer: () => Duplex): Duplex =>
    new Duplex({
      read() {},
      write(chunk, _enc, cb) {
        peer().push(chunk);
        cb();
      },
      final(cb) {
        peer().push(null);
        cb();
      },
    });
  ends.push(make(() => ends[1]!), make(() => ends[0]!));
  return [ends[0]!, ends[1]!];
}

describe('ipc: device → core validation', () => {
  it('accepts a well-formed hello, with features above 2^32', () => {
    const m = validateDeviceMessage(hello());
    assert.equal(m.type, 'hello');
  });
  it('rejects unknown fields, types, versions and kinds', () => {
    rejects(() => validateDeviceMessage(hello({ extra: 1 })), /unknown field/);
    rejects(() => validateDeviceMessage({ v: 1, type: 'pwn' }), /unknown device message type/);
    rejects(() => validateDeviceMessage(hello({ v: 2 })), /version/);
    rejects(() => validateDeviceMessage(hello({ kind: 'gpu' })), /kind/);
    rejects(() => validateDeviceMessage([1, 2]), /map/);
    rejects(() => validateDeviceMessage(null), /map/);
    rejects(() => validateDeviceMessage(new Uint8Array(3)), /map/);
  });
  it('checks hello ranges', () => {
    rejects(() => validateDeviceMessage(hello({ numQueues: 0 })), /numQueues/);
    rejects(() => validateDeviceMessage(hello({ numQueues: 17 })), /numQueues/);
    rejects(() => validateDeviceMessage(hello({ maxQueueSize: 100 })), /power of 2/);
    rejects(() => validateDeviceMessage(hello({ maxQueueSize: 65536 })), /maxQueueSize/);
    rejects(() => validateDeviceMessage(hello({ deviceFeatures: 2 ** 53 })), /deviceFeatures/);
    rejects(() => validateDeviceMessage(hello({ deviceFeatures: -1 })), /deviceFeatures/);
    rejects(() => validateDeviceMessage(hello({ deviceFeatures: 1.5 })), /deviceFeatures/);
    rejects(() => validateDeviceMessage(hello({ deviceFeatures: 5n })), /deviceFeatures/);
    rejects(() => validateDeviceMessage(hello({ config: new Uint8Array(257) })), /config/);
    rejects(() => validateDeviceMessage(hello({ config: 'abc' })), /config/);
    const noConfig = hello();
    delete noConfig.config;
    rejects(() => validateDeviceMessage(noConfig), /missing field config/);
  });
  it('checks needs-reset, config-changed, reset-done and stats', () => {
    validateDeviceMessage({ v: 1, type: 'needs-reset', reason: 'bad ring', queue: 3 });
    validateDeviceMessage({ v: 1, type: 'needs-reset', reason: 'x'.repeat(200) });
    rejects(() => validateDeviceMessage({ v: 1, type: 'needs-reset', reason: 'x'.repeat(201) }), /reason/);
    rejects(() => validateDeviceMessage({ v: 1, type: 'needs-reset', reason: 'x', queue: 16 }), /queue/);
    rejects(() => validateDeviceMessage({ v: 1, type: 'needs-reset', reason: 7 }), /reason/);
    validateDeviceMessage({ v: 1, type: 'config-changed', config: new Uint8Array(8) });
    validateDeviceMessage({ v: 1, type: 'reset-done' });
    rejects(() => validateDeviceMessage({ v: 1, type: 'reset-done', x: 1 }), /unknown field/);
    validateDeviceMessage({ v: 1, type: 'stats', counters: { reads: 1, bytes: 2 ** 40 } });
    rejects(() => validateDeviceMessage({ v: 1, type: 'stats', counters: { reads: -1 } }), /counter/);
    rejects(() => validateDeviceMessage({ v: 1, type: 'stats', counters: { reads: 'a' } }), /counter/);
    rejects(() => validateDeviceMessage({ v: 1, type: 'stats', counters: { ['x'.repeat(65)]: 1 } }), /name/);
    const many = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`c${i}`, i]));
    rejects(() => validateDeviceMessage({ v: 1, type: 'stats', counters: many }), /at most/);
  });
});

describe('ipc: core → device validation', () => {
  const q = { index: 0, size: 256, desc: 0x1000, avail: 0x2000, used: 0x3000 };
  it('accepts activate with u64 addresses as numbers', () => {
    validateCoreMessage({ v: 1, type: 'activate', features: 2 ** 32, queues: [q, { ...q, index: 1, desc: 2 ** 52 }] });
  });
  it('rejects bad queues', () => {
    rejects(() => validateCoreMessage({ v: 1, type: 'activate', features: 0, queues: [q, q] }), /duplicate/);
    rejects(() => validateCoreMessage({ v: 1, type: 'activate', features: 0, queues: [{ ...q, size: 3 }] }), /power of 2/);
    rejects(() => validateCoreMessage({ v: 1, type: 'activate', features: 0, queues: [{ ...q, size: 65536 }] }), /size/);
    rejects(() => validateCoreMessage({ v: 1, type: 'activate', features: 0, queues: [{ ...q, desc: 2 ** 53 }] }), /desc/);
    rejects(() => validateCoreMessage({ v: 1, type: 'activate', features: 0, queues: [{ ...q, x: 1 }] }), /unknown field/);
    rejects(() => validateCoreMessage({ v: 1, type: 'activate', features: 0, queues: {} }), /array/);
  });
  it('checks config-write bounds and the empty messages', () => {
    validateCoreMessage({ v: 1, type: 'config-write', offset: 250, data: new Uint8Array(6) });
    rejects(() => validateCoreMessage({ v: 1, type: 'config-write', offset: 251, data: new Uint8Array(6) }), /past the end/);
    rejects(() => validateCoreMessage({ v: 1, type: 'config-write', offset: 256, data: new Uint8Array(0) }), /offset/);
    for (const type of ['reset', 'stats-request', 'shutdown']) {
      validateCoreMessage({ v: 1, type });
      rejects(() => validateCoreMessage({ v: 1, type, junk: true }), /unknown field/);
    }
    rejects(() => validateCoreMessage({ v: 1, type: 'hello' }), /unknown core message type/);
  });
});

describe('ipc: framing', () => {
  it('round-trips a message through encode, FrameReader and decode, byte by byte', () => {
    const frame = encode({ v: 1, type: 'hello', kind: 'blk', deviceFeatures: 2 ** 40 + 1, numQueues: 2, maxQueueSize: 128, config: new Uint8Array([1, 2, 3]) });
    const r = new FrameReader();
    const bodies: Buffer[] = [];
    for (const b of frame) bodies.push(...r.push(Buffer.from([b])));
    assert.equal(bodies.length, 1);
    const m = validateDeviceMessage(decode(bodies[0]!)) as DeviceMessage & { deviceFeatures: number; config: Uint8Array };
    assert.equal(m.deviceFeatures, 2 ** 40 + 1);
    assert.deepEqual([...m.config], [1, 2, 3]);
  });
  it('rejects an oversized or empty frame length before buffering it', () => {
    const big = Buffer.alloc(4);
    big.writeUInt32LE(MAX_FRAME_BYTES + 1);
    assert.throws(() => new FrameReader().push(big), ProtocolError);
    assert.throws(() => new FrameReader().push(Buffer.alloc(4)), ProtocolError);
  });
  it('splits any fragmentation of a stream of frames into the same bodies', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ minLength: 1, maxLength: 300 }), { minLength: 1, maxLength: 6 }),
        fc.array(fc.integer({ min: 1, max: 400 }), { minLength: 1, maxLength: 20 }),
        (bodies, cuts) => {
          const stream = Buffer.concat(bodies.flatMap((b) => {
            const len = Buffer.alloc(4);
            len.writeUInt32LE(b.length);
            return [len, Buffer.from(b)];
          }));
          const r = new FrameReader();
          const got: Buffer[] = [];
          for (let at = 0, i = 0; at < stream.length; i++) {
            const n = cuts[i % cuts.length]!;
            got.push(...r.push(stream.subarray(at, at + n)));
            at += n;
          }
          assert.deepEqual(got.map((b) => [...b]), bodies.map((b) => [...b]));
        },
      ),
    );
  });
  it('costs linear time however a peer fragments a frame (no re-copy per chunk)', () => {
    // A compromised device writing one byte at a time must not make the core
    // copy a frame's bytes once per chunk: time for one maximal frame fed
    // byte by byte stays within twice that of the same bytes as 16 small frames
    // (the old re-concatenating reader took 3–4 times as long).
    const body = (n: number): Buffer => {
      const f = Buffer.alloc(4 + n);
      f.writeUInt32LE(n);
      return f;
    };
    const feed = (stream: Buffer): number => {
      const r = new FrameReader();
      const t = process.hrtime.bigint();
      let frames = 0;
      for (let i = 0; i < stream.length; i++) frames += r.push(stream.subarray(i, i + 1)).length;
      assert.ok(frames > 0);
      return Number(process.hrtime.bigint() - t) / 1e6;
    };
    const small = Buffer.concat(Array.from({ length: 16 }, () => body(MAX_FRAME_BYTES / 16)));
    const large = body(MAX_FRAME_BYTES);
    feed(small); // warm up
    const tSmall = Math.min(feed(small), feed(small));
    const tLarge = Math.min(feed(large), feed(large));
    assert.ok(tLarge < 2 * tSmall + 10, `one 64 KiB frame byte by byte took ${tLarge.toFixed(1)} ms, 16 × 4 KiB took ${tSmall.toFixed(1)} ms`);
  });
  it('refuses to encode a message bigger than a frame', () => {
    assert.throws(() => encode({ v: 1, type: 'config-write', offset: 0, data: new Uint8Array(MAX_FRAME_BYTES + 1) }), ProtocolError);
  });
  it('turns undecodable bytes into a ProtocolError', () => {
    assert.throws(() => decode(Buffer.from([0x92, 0x01])), ProtocolError);
    assert.throws(() => decode(Buffer.from([0xd4, 0x01, 0x00])), ProtocolError);
    // msgpack's timestamp extension decodes to a Date: valid msgpack, not a message.
    assert.throws(() => validateCoreMessage(decode(Buffer.from([0xd6, 0xff, 0, 0, 0, 1]))), ProtocolError);
  });
  it('does not let a __proto__ key pollute prototypes', () => {
    const v = decode(pack({ v: 1, type: 'reset', ['__proto__']: { polluted: true } }));
    assert.equal(({} as Record<string, unknown>).polluted, undefined);
    assert.throws(() => validateCoreMessage(v), ProtocolError);
  });
});

describe('ipc: ControlChannel', () => {
  it('carries messages both ways, validated', async () => {
    const [a, b] = duplexPair();
    const core = new ControlChannel('core', a);
    const dev = new ControlChannel('device', b);
    const got = new Promise((r) => dev.once('message', r));
    core.send({ type: 'stats-request' });
    assert.deepEqual(await got, { v: 1, type: 'stats-request' });
    const back = new Promise((r) => core.once('message', r));
    dev.send({ type: 'stats', counters: { x: 1 } });
    assert.deepEqual(await back, { v: 1, type: 'stats', counters: { x: 1 } });
  });
  it('refuses to send an invalid message', () => {
    const [a] = duplexPair();
    const core = new ControlChannel('core', a);
    assert.throws(() => core.send({ type: 'config-write', offset: 300, data: new Uint8Array(1) }), ProtocolError);
  });
  it('closes on a message that is valid msgpack but not in the schema', async () => {
    const [a, b] = duplexPair();
    const core = new ControlChannel('core', a);
    const err = new Promise<Error>((r) => core.once('error', r));
    const closed = new Promise<void>((r) => core.once('close', r));
    const body = pack({ v: 1, type: 'hello', kind: 'blk' });
    const len = Buffer.alloc(4);
    len.writeUInt32LE(body.length);
    b.write(Buffer.concat([len, body]));
    assert.match((await err).message, /missing field/);
    await closed;
    assert.equal(core.isClosed, true);
  });
  it('closes on an oversized frame', async () => {
    const [a, b] = duplexPair();
    const core = new ControlChannel('core', a);
    const err = new Promise<Error>((r) => core.once('error', r));
    b.write(Buffer.from([0xff, 0xff, 0xff, 0xff]));
    assert.ok((await err) instanceof ProtocolError);
    assert.equal(core.isClosed, true);
  });
});
