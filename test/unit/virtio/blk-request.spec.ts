// virtio-blk request parsing (no I/O) and the device config validation.
import assert from 'node:assert/strict';
import { parseRequest, skipBytes, gather } from '../../../src/devices/blk/request.js';
import { parseDeviceConfig, ConfigError } from '../../../src/devices/config.js';
import { QueueError, type DescriptorChain } from '../../../src/devices/virtio/queue.js';

function chain(readable: Uint8Array[], writable: Uint8Array[]): DescriptorChain {
  return { head: 0, readable, writable, readableBytes: readable.reduce((a, b) => a + b.length, 0), writableBytes: writable.reduce((a, b) => a + b.length, 0) };
}

describe('blk request parsing', () => {
  const header = new Uint8Array(16);
  new DataView(header.buffer).setUint32(0, 1, true);
  new DataView(header.buffer).setBigUint64(8, 0x1_0000_0005n, true);

  it('reads a header split over buffers and finds data and status', () => {
    const data = new Uint8Array(512).fill(3);
    const inBuf = new Uint8Array(513);
    const r = parseRequest(chain([header.subarray(0, 5), header.subarray(5), data], [inBuf]));
    assert.equal(r.type, 1);
    assert.equal(r.sector, 2 ** 32 + 5);
    assert.equal(r.readBytes, 512);
    assert.equal(r.readData.length, 1);
    assert.equal(r.writeBytes, 512);
    assert.equal(r.writeData[0]!.length, 512);
    r.status[0] = 9;
    assert.equal(inBuf[512], 9);
  });
  it('takes the status from the last non-empty writable buffer', () => {
    const a = new Uint8Array(4);
    const b = new Uint8Array(1);
    const r = parseRequest(chain([header], [a, b, new Uint8Array(0)]));
    r.status[0] = 7;
    assert.equal(b[0], 7);
    assert.equal(r.writeData.length, 1);
  });
  it('rejects a short header or no status byte as malformed', () => {
    assert.throws(() => parseRequest(chain([header.subarray(0, 15)], [new Uint8Array(1)])), QueueError);
    assert.throws(() => parseRequest(chain([header], [])), QueueError);
    assert.throws(() => parseRequest(chain([header], [new Uint8Array(0)])), QueueError);
  });
  it('skips and gathers across buffers', () => {
    const bufs = [new Uint8Array([1, 2]), new Uint8Array([3, 4, 5])];
    assert.deepEqual(skipBytes(bufs, 3).map((b) => [...b]), [[4, 5]]);
    assert.deepEqual([...gather(bufs, 4)], [1, 2, 3, 4]);
    assert.throws(() => gather(bufs, 6), QueueError);
  });
});

describe('device config', () => {
  const good = { kind: 'blk', regions: [{ gpa: 0, size: 4096, offset: 0 }], numQueues: 1, seccomp: 'off', logLevel: 'info', blk: { readOnly: true, serial: 'x' } };
  it('accepts a good config', () => {
    const c = parseDeviceConfig(JSON.stringify(good));
    assert.equal(c.name, 'blk');
    assert.deepEqual(c.options, { readOnly: true, serial: 'x' });
  });
  it('reports one clear problem', () => {
    const bad: [unknown, RegExp][] = [
      [{ ...good, kind: 'gpu' }, /unsupported kind/],
      [{ ...good, numQueues: 17 }, /numQueues/],
      [{ ...good, seccomp: 'maybe' }, /seccomp/],
      [{ ...good, extra: 1 }, /unknown field "extra"/],
      [{ ...good, blk: { readOnly: 'no' } }, /readOnly/],
      [{ ...good, blk: { readOnly: false, serial: 'x'.repeat(21) } }, /serial/],
      [{ ...good, regions: [{ gpa: 0, size: 4096, offset: 1 }] }, /aligned/],
      [{ ...good, testAttemptAfterJail: 'ptrace' }, /testAttemptAfterJail/],
    ];
    for (const [cfg, re] of bad) assert.throws(() => parseDeviceConfig(JSON.stringify(cfg)), (e: Error) => e instanceof ConfigError && re.test(e.message));
    assert.throws(() => parseDeviceConfig('{'), /not valid JSON/);
    assert.throws(() => parseDeviceConfig(undefined), /missing/);
  });
});
