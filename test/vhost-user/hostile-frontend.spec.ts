// Hostile vhost-user frontends against `splitvm device blk --socket` (no VM):
// malformed messages, bad memory tables, rings outside memory or out of
// range, fds where none are due. Each case runs against a fresh backend; the
// backend must refuse the message (a non-zero ack when REPLY_ACK is
// negotiated and NEED_REPLY set, a "vhost-user message refused" log line
// otherwise; an unreadable header ends the connection) and stay up, and a
// well-behaved frontend — on the same connection when it is still open —
// then writes and reads correctly through a device process that runs under
// its enforcing seccomp policy.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import * as libc from '../../src/sys/libc.js';
import { Req } from '../../src/core/vhost-user/protocol.js';
import { memTablePayload, u64, u64Bytes, vringAddr, vringState, VhostUserFrontend, type FrontendRegion } from '../../src/devices/harness/index.js';
import { assertAlive, assertServes, countLog, startBlkBackend, waitForLog, type Backend } from './backend.js';

const REFUSED = 'vhost-user message refused';
const VRING_NOFD = 0x100;

/** Sends a message that must be refused with a non-zero ack. */
async function refusedWithAck(f: VhostUserFrontend, req: number, payload: Uint8Array, fds: number[] = []): Promise<void> {
  assert.ok(f.replyAcked, 'REPLY_ACK was not negotiated');
  const ack = await f.call(req, payload, { fds, needReply: true });
  assert.notEqual(u64(ack), 0n, `request ${req} was accepted`);
}

/** A region table like the frontend's with `change` applied to region `i`. */
function table(f: VhostUserFrontend, i: number, change: Partial<FrontendRegion>): FrontendRegion[] {
  return f.memTable.map((r, j) => (j === i ? { ...r, ...change } : r));
}

interface Case {
  name: string;
  /** Runs on a negotiated frontend (REPLY_ACK unless `replyAck` is false); returns whether the connection stays open. */
  run: (f: VhostUserFrontend, b: Backend) => Promise<'open' | 'closed'>;
  replyAck?: boolean;
}

const withAck = (req: number, payload: (f: VhostUserFrontend) => Uint8Array, fds: (f: VhostUserFrontend) => number[] = () => []): Case['run'] => async (f) => {
  await refusedWithAck(f, req, payload(f), fds(f));
  return 'open';
};

/** A header the backend cannot read: it must end the connection (and nothing else). */
const unreadable = (flags: number, size: number): Case['run'] => async (f) => {
  f.send(Req.GET_FEATURES, new Uint8Array(0), { flags, size });
  await assert.rejects(f.reply(5000), /closed the connection/);
  return 'closed';
};

/** The frontend's memfd twice (one fd per region). */
const twoFds = (f: VhostUserFrontend): number[] => [f.memfd, f.memfd];

const CASES: Case[] = [
  // malformed messages
  { name: 'a SET_FEATURES payload of 4 bytes', run: withAck(Req.SET_FEATURES, () => new Uint8Array(4)) },
  { name: 'a SET_VRING_ADDR payload of 20 bytes', run: withAck(Req.SET_VRING_ADDR, () => new Uint8Array(20)) },
  { name: 'a SET_MEM_TABLE payload of 4 bytes', run: withAck(Req.SET_MEM_TABLE, () => new Uint8Array(4)) },
  { name: 'a memory table claiming 2 regions with room for 1', run: withAck(Req.SET_MEM_TABLE, (f) => memTablePayload(f.memTable.slice(0, 1), 2), (f) => [f.memfd]) },
  { name: 'an unknown request number (99)', run: withAck(99, () => u64Bytes(0n)) },
  { name: 'features the device did not offer', run: withAck(Req.SET_FEATURES, () => u64Bytes(1n << 62n)) },
  {
    name: 'a short payload without REPLY_ACK (logged, not answered)',
    replyAck: false,
    run: async (f, b) => {
      const before = countLog(b, REFUSED);
      f.send(Req.SET_VRING_NUM, new Uint8Array(3));
      await waitForLog(b, REFUSED, before);
      return 'open';
    },
  },
  { name: 'message version 2 in the flags', run: unreadable(0x2, 0) },
  { name: 'message version 0 in the flags', run: unreadable(0x0, 0) },
  { name: 'the reply flag on a frontend message', run: unreadable(0x5, 0) },
  { name: 'a payload size of 4096, over the limit', run: unreadable(0x1, 4096) },
  { name: 'a payload size of 2^32-1', run: unreadable(0x1, 0xffffffff) },
  // bad memory tables
  { name: 'a memory table of 0 regions', run: withAck(Req.SET_MEM_TABLE, () => memTablePayload([], 0)) },
  { name: 'a memory table of 9 regions', run: withAck(Req.SET_MEM_TABLE, (f) => memTablePayload([...f.memTable, ...f.memTable, ...f.memTable, ...f.memTable, f.memTable[0]!]), (f) => [f.memfd]) },
  { name: 'overlapping regions', run: withAck(Req.SET_MEM_TABLE, (f) => memTablePayload(table(f, 1, { gpa: f.regions[0]!.size / 2 })), twoFds) },
  { name: 'a region past the end of its fd', run: withAck(Req.SET_MEM_TABLE, (f) => memTablePayload(table(f, 1, { offset: f.regions[1]!.offset * 2 })), twoFds) },
  { name: 'a region of 2^60 bytes', run: withAck(Req.SET_MEM_TABLE, (f) => memTablePayload(table(f, 1, { size: 2 ** 60 })), twoFds) },
  { name: 'a region of 2^52 bytes (within 2^53, past the fd)', run: withAck(Req.SET_MEM_TABLE, (f) => memTablePayload(table(f, 1, { size: 2 ** 52 })), twoFds) },
  { name: 'a region with an unaligned offset', run: withAck(Req.SET_MEM_TABLE, (f) => memTablePayload(table(f, 1, { offset: f.regions[1]!.offset + 512 })), twoFds) },
  { name: 'fewer fds than regions', run: withAck(Req.SET_MEM_TABLE, (f) => memTablePayload(f.memTable), (f) => [f.memfd]) },
  {
    name: 'regions in two different files',
    run: async (f) => {
      const other = libc.memfdCreate('splitvm-test-other');
      libc.ftruncate(other, f.regions[1]!.offset + f.regions[1]!.size);
      try {
        await refusedWithAck(f, Req.SET_MEM_TABLE, memTablePayload(f.memTable), [f.memfd, other]);
      } finally {
        libc.close(other);
      }
      return 'open';
    },
  },
  // rings
  {
    name: 'a ring that starts inside a region and runs past its end',
    run: async (f) => {
      await assertAck0(f, Req.SET_MEM_TABLE, memTablePayload(f.memTable), twoFds(f));
      await assertAck0(f, Req.SET_VRING_NUM, vringState(0, 256));
      const r = f.memTable[1]!;
      const inside = f.memTable[0]!.uaddr + 0x1000;
      await refusedWithAck(f, Req.SET_VRING_ADDR, vringAddr(0, r.uaddr + r.size - 16, inside, inside));
      return 'open';
    },
  },
  {
    name: 'ring addresses before the ring size',
    run: async (f) => {
      await assertAck0(f, Req.SET_MEM_TABLE, memTablePayload(f.memTable), twoFds(f));
      const inside = f.memTable[0]!.uaddr + 0x1000;
      await refusedWithAck(f, Req.SET_VRING_ADDR, vringAddr(0, inside, inside + 0x1000, inside + 0x2000));
      return 'open';
    },
  },
  {
    name: 'sixty refused messages carrying fds leave no fd behind in the backend',
    run: async (f, b) => {
      const fdsOf = (): number => fs.readdirSync(`/proc/${b.dev.proc.pid}/fd`).length;
      const round = async (): Promise<void> => {
        const efd = libc.eventfd();
        await refusedWithAck(f, Req.SET_VRING_KICK, u64Bytes(9n), [efd]);
        await refusedWithAck(f, Req.SET_MEM_TABLE, memTablePayload([], 0), [efd]);
        await refusedWithAck(f, Req.SET_VRING_NUM, vringState(0, 64), [efd, efd]);
        libc.close(efd);
      };
      await round(); // Node's own fds (a pool thread's, a timer's) settle first
      const before = fdsOf();
      for (let i = 0; i < 20; i++) await round();
      // Each leak would be 80 fds; a few of Node's own may come and go.
      assert.ok(fdsOf() < before + 8, `the backend held ${before} fds before and ${fdsOf()} after`);
      return 'open';
    },
  },
  {
    name: 'vring addresses outside every region',
    run: async (f) => {
      await assertAck0(f, Req.SET_MEM_TABLE, memTablePayload(f.memTable), twoFds(f));
      const m = f.memTable;
      // the two mappings may be adjacent: go past both ends of the pair
      const above = Math.max(...m.map((r) => r.uaddr + r.size)) + 0x1000;
      const below = Math.min(...m.map((r) => r.uaddr)) - 0x1000;
      const inside = m[0]!.uaddr + 0x1000;
      await assertAck0(f, Req.SET_VRING_NUM, vringState(0, 64));
      await refusedWithAck(f, Req.SET_VRING_ADDR, vringAddr(0, 0x1000, inside, inside));
      await refusedWithAck(f, Req.SET_VRING_ADDR, vringAddr(0, inside, above, inside));
      await refusedWithAck(f, Req.SET_VRING_ADDR, vringAddr(0, inside, inside, below));
      return 'open';
    },
  },
  { name: 'vring addresses before any memory table', run: withAck(Req.SET_VRING_ADDR, () => vringAddr(0, 0x10000, 0x20000, 0x30000)) },
  { name: 'a ring size of 100 (not a power of 2)', run: withAck(Req.SET_VRING_NUM, () => vringState(0, 100)) },
  { name: 'a ring size of 0', run: withAck(Req.SET_VRING_NUM, () => vringState(0, 0)) },
  { name: 'a ring size of 32768 (over the device maximum)', run: withAck(Req.SET_VRING_NUM, () => vringState(0, 32768)) },
  { name: 'SET_VRING_NUM on ring 1 of a 1-ring device', run: withAck(Req.SET_VRING_NUM, () => vringState(1, 64)) },
  { name: 'SET_VRING_BASE on ring 2^32-1', run: withAck(Req.SET_VRING_BASE, () => vringState(0xffffffff, 0)) },
  { name: 'SET_VRING_BASE past 16 bits', run: withAck(Req.SET_VRING_BASE, () => vringState(0, 0x10000)) },
  { name: 'SET_VRING_ENABLE on ring 7', run: withAck(Req.SET_VRING_ENABLE, () => vringState(7, 1)) },
  { name: 'SET_VRING_ADDR on ring 200', run: withAck(Req.SET_VRING_ADDR, (f) => vringAddr(200, f.memTable[0]!.uaddr, f.memTable[0]!.uaddr, f.memTable[0]!.uaddr)) },
  // fds
  { name: 'an fd with SET_OWNER', run: withAck(Req.SET_OWNER, () => new Uint8Array(0), () => [eventfd()]) },
  { name: 'an fd with SET_VRING_NUM', run: withAck(Req.SET_VRING_NUM, () => vringState(0, 64), () => [eventfd()]) },
  { name: 'two fds with SET_VRING_CALL', run: withAck(Req.SET_VRING_CALL, () => u64Bytes(0n), () => [eventfd(), eventfd()]) },
  { name: 'an fd with SET_VRING_CALL and the no-fd flag', run: withAck(Req.SET_VRING_CALL, () => u64Bytes(BigInt(VRING_NOFD)), () => [eventfd()]) },
  { name: 'SET_VRING_KICK with the no-fd flag and no fd', run: withAck(Req.SET_VRING_KICK, () => u64Bytes(BigInt(VRING_NOFD))) },
  { name: 'SET_VRING_KICK without an fd or the no-fd flag', run: withAck(Req.SET_VRING_KICK, () => u64Bytes(0n)) },
  { name: 'SET_VRING_KICK with unknown bits', run: withAck(Req.SET_VRING_KICK, () => u64Bytes(0x10000n), () => [eventfd()]) },
  { name: 'SET_VRING_KICK on ring 9 with an fd', run: withAck(Req.SET_VRING_KICK, () => u64Bytes(9n), () => [eventfd()]) },
];

const open: number[] = [];
function eventfd(): number {
  const fd = libc.eventfd();
  open.push(fd);
  return fd;
}

async function assertAck0(f: VhostUserFrontend, req: number, payload: Uint8Array, fds: number[] = []): Promise<void> {
  assert.equal(u64(await f.call(req, payload, { fds, needReply: true })), 0n, `request ${req} was refused`);
}

describe('vhost-user: a hostile frontend against splitvm device blk', function () {
  this.timeout(60000);
  let b: Backend | undefined;

  afterEach(async () => {
    for (const fd of open.splice(0)) libc.close(fd);
    await b?.stop();
    b = undefined;
  });

  for (const c of CASES) {
    it(`refuses ${c.name}, stays up and then serves I/O from its jailed device`, async () => {
      b = await startBlkBackend();
      const replyAck = c.replyAck ?? true;
      const f = VhostUserFrontend.open(b.socket, { replyAck });
      let same: VhostUserFrontend | undefined = f;
      try {
        await f.negotiate();
        const refusedBefore = countLog(b, REFUSED);
        const state = await c.run(f, b);
        assertAlive(b);
        if (state === 'closed') {
          f.close();
          same = undefined;
          await waitForLog(b, 'vhost-user frontend gone', 0);
        } else assert.ok(countLog(b, REFUSED) > refusedBefore || (await waitForLog(b, REFUSED, refusedBefore)), 'no refusal was logged');
      } catch (e) {
        f.close();
        throw e;
      }
      // the same connection when it is still open, a new one otherwise
      await assertServes(b, same, { negotiated: true, replyAck });
    });
  }

  it('survives every malformed message above on one connection, then serves a new one', async () => {
    b = await startBlkBackend();
    for (const c of CASES) {
      const f = VhostUserFrontend.open(b.socket, { replyAck: c.replyAck ?? true });
      try {
        await f.negotiate();
        await c.run(f, b);
      } finally {
        f.close();
      }
      for (const fd of open.splice(0)) libc.close(fd);
    }
    assertAlive(b);
    await assertServes(b);
  });
});
