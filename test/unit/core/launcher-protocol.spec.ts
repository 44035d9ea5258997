// The launcher's check of what a (possibly taken-over) sealed core asks of
// it: only well-formed requests naming a device to start or to end; never
// how it is confined, never a command line.
import assert from 'node:assert/strict';
import { Packr } from 'msgpackr';
import { encode, LauncherProtocolError, parseRequest } from '../../../src/core/launcher/protocol.js';

const pack = (m: unknown): Uint8Array => new Packr({ useRecords: false }).pack(m);
const launch = { t: 'launch', id: 1, name: 'blk0', kind: 'blk', config: { blk: {} }, control: 0, log: 1, fdMap: [2, 3, -1] };

describe('launcher protocol', () => {
  it('takes a well-formed launch, fds, kill and exit', () => {
    assert.deepEqual(parseRequest(encode(launch as never)), launch);
    assert.deepEqual(parseRequest(encode({ t: 'fds' })), { t: 'fds' });
    assert.deepEqual(parseRequest(encode({ t: 'kill', id: 7 })), { t: 'kill', id: 7 });
    assert.deepEqual(parseRequest(encode({ t: 'exit' })), { t: 'exit' });
  });

  it('drops fields it does not know: a request cannot say how the device is confined', () => {
    const r = parseRequest(pack({ ...launch, seccomp: 'off', jail: false, hostIds: { uid: 0, gid: 0 }, nodeFlags: ['--allow-natives-syntax'] }));
    assert.deepEqual(Object.keys(r).sort(), Object.keys(launch).sort());
  });

  const bad: [string, unknown][] = [
    ['not msgpack', new Uint8Array([0xc1])],
    ['not a map', [1, 2]],
    ['an unknown request', { t: 'exec', argv: ['/bin/sh'] }],
    ['a kind that does not exist', { ...launch, kind: 'gpu' }],
    ['a name with a path in it', { ...launch, name: '../../etc' }],
    ['a negative id', { ...launch, id: -1 }],
    ['a config that is not a map', { ...launch, config: 'x' }],
    ['too many fds', { ...launch, fdMap: Array.from({ length: 64 }, (_, i) => i) }],
    ['an fd index out of range', { ...launch, fdMap: [1e9] }],
    ['a bad control index', { ...launch, control: -1 }],
    ['an entry that is not a string', { ...launch, entry: 42 }],
    ['a kill without an id', { t: 'kill' }],
  ];
  for (const [what, m] of bad) {
    it(`refuses ${what}`, () => {
      assert.throws(() => parseRequest(m instanceof Uint8Array ? m : pack(m)), LauncherProtocolError);
    });
  }
});
