// The 9P wire codec and name checks: little-endian fields, strings, qids, a
// message cut short, and the names a client may give for one component.
import assert from 'node:assert/strict';
import { Reader, Writer, WireError, finish, reply } from '../../../src/devices/p9/wire.js';
import { checkName, childPath } from '../../../src/devices/p9/share.js';
import { P9Error } from '../../../src/devices/p9/protocol.js';

describe('9p wire format', () => {
  it('round-trips integers, strings and qids, growing its buffer', () => {
    const w = new Writer(4).u8(0xab).u16(0xbeef).u32(0xdeadbeef).u64(2 ** 53 - 1).u64(-1).u64(0xffff_ffff_ffff_ffffn).str('héllo').qid({ type: 0x80, version: 7, path: 123456789012345n });
    const r = new Reader(w.view());
    assert.equal(r.u8(), 0xab);
    assert.equal(r.u16(), 0xbeef);
    assert.equal(r.u32(), 0xdeadbeef);
    assert.equal(r.u64(), 2 ** 53 - 1);
    assert.equal(r.u64big(), 0xffff_ffff_ffff_ffffn, '-1 is all ones');
    assert.equal(r.u64(), Number.MAX_SAFE_INTEGER, 'values past 2^53 read as 2^53 - 1');
    assert.equal(r.str(), 'héllo');
    assert.deepEqual([r.u8(), r.u32(), r.u64big()], [0x80, 7, 123456789012345n]);
    assert.equal(r.remaining, 0);
  });

  it('throws WireError for fields past the end of a message', () => {
    const r = new Reader(Uint8Array.of(5, 0, 1, 2));
    assert.throws(() => r.str(), WireError);
    assert.throws(() => new Reader(Uint8Array.of(1, 2, 3)).u32(), WireError);
    assert.throws(() => new Reader(Uint8Array.of(2, 0, 0xc3, 0x28)).str(), WireError, 'not UTF-8: refused, not replaced');
  });

  it('frames a reply: size counts the data sent after it', () => {
    const bytes = finish(reply(117, 0x1234).u32(10), 10);
    const dv = new DataView(bytes.buffer, bytes.byteOffset);
    assert.equal(bytes.length, 11);
    assert.equal(dv.getUint32(0, true), 21);
    assert.equal(bytes[4], 117);
    assert.equal(dv.getUint16(5, true), 0x1234);
  });

  it('accepts one path component only, bounded', () => {
    assert.equal(checkName('ok.txt'), 'ok.txt');
    for (const bad of ['', '.', '..', 'a/b', '/', 'nul\0']) assert.throws(() => checkName(bad), (e: P9Error) => e.errno === 22, JSON.stringify(bad));
    assert.throws(() => checkName('x'.repeat(256)), (e: P9Error) => e.errno === 36);
    assert.throws(() => checkName('é'.repeat(128)), (e: P9Error) => e.errno === 36, '256 bytes in UTF-8');
    const deep = Array.from({ length: 16 }, () => 'd'.repeat(255));
    assert.throws(() => childPath(deep, 'x'), (e: P9Error) => e.errno === 36, 'a path past PATH_MAX');
    assert.deepEqual(childPath(['a'], 'b'), ['a', 'b']);
  });
});
