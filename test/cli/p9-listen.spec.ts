// `splitvm device 9p --share DIR --listen ADDR`: the 9p server reached over a
// socket, checked with 9P clients written by others (Debian's diodls and
// diodcat) and with the project's own client over a UNIX socket; and the
// mistakes a user can make on its command line.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { P9Client, SocketTransport, errnoOf } from '../../src/devices/harness/index.js';
import { MAX_CLIENTS } from '../../src/core/p9-listen.js';
import { SPLITVM, runSplitvm, assertOneSentence } from '../helpers/run-splitvm.js';

const DIODLS = '/usr/sbin/diodls';
const DIODCAT = '/usr/sbin/diodcat';


/** Starts the server; resolves with the process and the address it printed. */
function serve(args: string[]): Promise<{ child: ChildProcess; address: string }> {
  const child = spawn(process.execPath, [SPLITVM, 'device', '9p', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d) => (err += d));
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d) => {
      out += d;
      const m = /over 9P2000\.L on (\S+)/.exec(out);
      if (m) resolve({ child, address: m[1]! });
    });
    child.on('exit', (code) => reject(new Error(`splitvm device 9p exited (${code}): ${err}`)));
  });
}

function diod(tool: string, args: string[]): { status: number | null; stdout: Buffer; stderr: string } {
  const r = spawnSync(tool, args, { timeout: 20000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.toString() };
}

describe('splitvm device 9p --listen', function () {
  this.timeout(60000);
  let top: string;
  let share: string;
  const children: ChildProcess[] = [];

  beforeEach(function () {
    if (!fs.existsSync(DIODLS) || !fs.existsSync(DIODCAT)) this.skip(); // Debian package diod
    top = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-p9cli-'));
    share = path.join(top, 'share');
    fs.mkdirSync(path.join(share, 'sub'), { recursive: true });
    fs.mkdirSync(path.join(top, 'outside'));
    fs.writeFileSync(path.join(top, 'outside', 'secret'), 'outside secret\n');
  });
  afterEach(() => {
    for (const c of children.splice(0)) c.kill('SIGTERM');
    fs.rmSync(top, { recursive: true, force: true });
  });

  it('diodls lists and diodcat reads back byte-identical; a symlink out of the share is not followed', async () => {
    const data = randomBytes(700_000);
    fs.writeFileSync(path.join(share, 'sub', 'data.bin'), data);
    fs.writeFileSync(path.join(share, 'notes.txt'), 'notes\n');
    fs.symlinkSync(path.join(top, 'outside', 'secret'), path.join(share, 'out'));
    fs.symlinkSync('../outside/secret', path.join(share, 'sub', 'rel'));
    const { child, address } = await serve(['--share', share, '--listen', '127.0.0.1:0']);
    children.push(child);
    const ls = diod(DIODLS, ['-s', address, '-a', share, '-l', '/']);
    assert.equal(ls.status, 0, ls.stderr);
    const names = ls.stdout.toString().trim().split('\n').map((l) => l.split(/\s+/).pop());
    assert.deepEqual(names.filter((n) => n !== '.' && n !== '..').sort(), ['notes.txt', 'out', 'sub']);
    assert.deepEqual(diod(DIODLS, ['-s', address, '-a', share, 'sub']).stdout.toString().trim().split('\n').sort(), ['data.bin', 'rel']);
    const cat = diod(DIODCAT, ['-s', address, '-a', share, 'sub/data.bin']);
    assert.equal(cat.status, 0, cat.stderr);
    assert.ok(cat.stdout.equals(data), 'byte-identical');
    for (const link of ['out', 'sub/rel']) {
      const evil = diod(DIODCAT, ['-s', address, '-a', share, link]);
      assert.notEqual(evil.status, 0);
      assert.doesNotMatch(evil.stdout.toString(), /outside secret/);
    }
    // each client had its own jailed device process, and the server still answers
    assert.equal(diod(DIODCAT, ['-s', address, '-a', share, 'notes.txt']).stdout.toString(), 'notes\n');
  });

  it('serves a UNIX socket; ro refuses changes with EROFS', async () => {
    fs.writeFileSync(path.join(share, 'notes.txt'), 'notes\n');
    const sock = path.join(top, '9p.sock');
    const { child } = await serve(['--share', `${share},ro`, '--listen', sock]);
    children.push(child);
    const conn = net.connect(sock);
    await new Promise((r) => conn.once('connect', r));
    const c = new P9Client(new SocketTransport(conn));
    assert.equal((await c.version(65536)).version, '9P2000.L');
    await c.attach(1);
    await c.walk(1, 2, ['notes.txt']);
    await c.lopen(2, 0);
    assert.equal(Buffer.from(await c.read(2, 0, 100)).toString(), 'notes\n');
    assert.equal(await errnoOf(c.lopen(2, 2)), 9, 'already open');
    await c.walk(1, 3, ['notes.txt']);
    assert.equal(await errnoOf(c.lopen(3, 2)), 30);
    assert.equal(await errnoOf(c.mkdir(1, 'x', 0o755)), 30);
    assert.equal(await errnoOf(c.unlinkat(1, 'notes.txt')), 30);
    c.transport.close();
    assert.deepEqual(fs.readdirSync(share).sort(), ['notes.txt', 'sub']);
  });

  it(`serves at most ${MAX_CLIENTS} clients at once, and the next once one leaves`, async () => {
    fs.writeFileSync(path.join(share, 'notes.txt'), 'notes\n');
    const { child, address } = await serve(['--share', share, '--listen', '127.0.0.1:0']);
    children.push(child);
    const port = Number(address.split(':').pop());
    const open = async (): Promise<P9Client> => {
      const conn = net.connect(port, '127.0.0.1');
      await new Promise((r) => conn.once('connect', r));
      const c = new P9Client(new SocketTransport(conn));
      await c.version(65536);
      return c;
    };
    const clients = await Promise.all(Array.from({ length: MAX_CLIENTS }, open));
    await assert.rejects(open(), /closed|ECONNRESET/, 'one too many is turned away');
    clients.pop()!.transport.close();
    await new Promise((r) => setTimeout(r, 500)); // its device process sees the end and exits
    const again = await open();
    await again.attach(1);
    assert.equal((await again.walk(1, 2, ['notes.txt'])).length, 1);
    for (const c of [...clients, again]) c.transport.close();
  });

  it('a missing folder, a file, and missing or bad flags: one sentence each', async () => {
    const file = path.join(top, 'file');
    fs.writeFileSync(file, 'x');
    assertOneSentence(await runSplitvm(['device', '9p', '--share', path.join(top, 'nope'), '--listen', '127.0.0.1:0']), 1, /shared folder .*nope does not exist/);
    assertOneSentence(await runSplitvm(['device', '9p', '--share', file, '--listen', '127.0.0.1:0']), 1, /is not a folder/);
    assertOneSentence(await runSplitvm(['device', '9p', '--share', share]), 2, /needs --listen/);
    assertOneSentence(await runSplitvm(['device', '9p', '--listen', '127.0.0.1:0']), 2, /needs --share/);
    assertOneSentence(await runSplitvm(['device', '9p', '--share', share, '--listen', 'nowhere']), 2, /--listen takes HOST:PORT/);
    assertOneSentence(await runSplitvm(['device', '9p', '--share', `${share},rw`, '--listen', '127.0.0.1:0']), 2, /option "rw"/);
    assertOneSentence(await runSplitvm(['device', '9p', '--share', share, '--listen', '127.0.0.1:0', '--bogus']), 2, /--bogus/);
  });
});
