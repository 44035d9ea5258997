// A device's log reaches the user's terminal only as re-encoded JSON records.
import assert from 'node:assert/strict';
import { PassThrough } from 'node:stream';
import { MAX_LOG_LINE, relayDeviceLog } from '../../../src/core/supervisor/log-relay.js';

function relay(input: string[]): Promise<string[]> {
  const stream = new PassThrough();
  const out: string[] = [];
  relayDeviceLog(stream, 'blk0', (l) => out.push(l));
  for (const chunk of input) stream.write(chunk);
  stream.end();
  return new Promise((resolve) => stream.on('end', () => setImmediate(() => resolve(out))));
}

describe('device log relay', function () {
  it('passes JSON records, even split across chunks, tagged with the device the core knows', async function () {
    const out = await relay(['{"level":30,"msg":"he', 'llo","device":"forged"}\n{"level":40,"msg":"two"}\n']);
    assert.deepEqual(out.map((l) => JSON.parse(l)), [
      { level: 30, msg: 'hello', device: 'blk0' },
      { level: 40, msg: 'two', device: 'blk0' },
    ]);
  });

  it('never lets an escape sequence through to the terminal', async function () {
    const out = await relay(['{"msg":"\\u001b]0;owned\\u0007"}\n', '\u001b[2J\u001b]0;owned\u0007 plain text\n']);
    assert.equal(out.length, 2);
    for (const l of out) {
      const controls = [...l.slice(0, -1)].filter((c) => c.charCodeAt(0) < 0x20 || c.charCodeAt(0) === 0x7f);
      assert.deepEqual(controls, [], 'no raw control characters');
      assert.ok(l.endsWith('\n'));
    }
    assert.equal(JSON.parse(out[1]!).msg, 'device wrote a line that is not a JSON log record');
  });

  it('cuts a line that never ends', async function () {
    const out = await relay(['x'.repeat(MAX_LOG_LINE + 10)]);
    assert.equal(out.length, 1);
    const rec = JSON.parse(out[0]!);
    assert.equal(rec.cut, true);
    assert.ok(rec.line.length <= 200);
  });
});
