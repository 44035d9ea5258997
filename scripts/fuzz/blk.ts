// A mutation fuzzer for the virtio-blk device process, through the device
// harness: the real device, in its jail under its enforcing policy, on a
// scratch image. Each round is either a well-formed request with random
// type, range and layout (sectors past the end, odd lengths, scattered and
// indirect buffers), or a ring of random descriptors and available entries
// (addresses inside, across and outside guest RAM, huge lengths, loops, bad
// flags, an index far ahead). After every round the device must still be
// alive and answer: a malformed ring may only cost a needs-reset. A death or
// a hang is a finding: the seed and round are printed to replay it.
//   npm run fuzz -- [--seconds N] [--seed S]
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import * as C from '../../src/devices/blk/constants.js';
import { BlkDriver, DeviceHarness, FOUR_GIB, MiB, dwzSegments, type DriverQueue } from '../../src/devices/harness/index.js';
import { ANSWER_MS, fuzzMain, rng } from './lib.js';

const SECTORS = 4096; // a 2 MiB image
const QUEUE_SIZE = 16;
const MEM_SIZE = 16 * MiB;

interface Counts {
  rounds: number;
  requests: number;
  malformed: number;
  needsReset: number;
}

class Finding extends Error {}

async function validRound(r: () => number, h: DeviceHarness, q: DriverQueue, n: Counts): Promise<void> {
  const d = new BlkDriver(h, q);
  const pick = <T>(xs: T[]): T => xs[Math.floor(r() * xs.length)]!;
  const sector = pick([0, Math.floor(r() * SECTORS), SECTORS - 1, SECTORS, 2 ** 40, 2 ** 53 - 1]);
  const len = pick([512, 4096, 1 + Math.floor(r() * 9000), 0]);
  const indirect = r() < 0.3;
  const seg = pick([undefined, 200, 512, 1000]);
  // A driver never makes a chain longer than its queue (or an indirect table than that).
  const segmentBytes = seg !== undefined && Math.ceil(len / seg) + 2 <= QUEUE_SIZE ? seg : undefined;
  const layout = { segmentBytes, indirect };
  const type = pick([C.VIRTIO_BLK_T_IN, C.VIRTIO_BLK_T_OUT, C.VIRTIO_BLK_T_FLUSH, C.VIRTIO_BLK_T_GET_ID, C.VIRTIO_BLK_T_DISCARD, C.VIRTIO_BLK_T_WRITE_ZEROES, 99]);
  const spec =
    type === C.VIRTIO_BLK_T_IN ? { type, sector, inLen: len, ...layout }
    : type === C.VIRTIO_BLK_T_OUT ? { type, sector, out: new Uint8Array(len).fill(0xa5), ...layout }
    : type === C.VIRTIO_BLK_T_GET_ID ? { type, inLen: pick([20, 5, 0, 64]) }
    : type === C.VIRTIO_BLK_T_DISCARD || type === C.VIRTIO_BLK_T_WRITE_ZEROES
      ? { type, out: dwzSegments([{ sector, sectors: pick([1, 8, SECTORS, 0]), flags: pick([0, 1, 2, 0xffffffff]) }]) }
      : { type, sector };
  try {
    await d.request(spec, 2000);
    n.requests++;
  } catch (e) {
    // A request the device refused as malformed (e.g. no room for its status) is answered by needs-reset.
    if (!h.received.some((m) => m.type === 'needs-reset')) {
      throw new Finding(`a well-formed request (${JSON.stringify({ ...spec, out: undefined })}) got neither a reply nor a needs-reset: ${(e as Error).message}`);
    }
  }
}

function chaosRound(r: () => number, q: DriverQueue): void {
  const addr = (): number => {
    const c = r();
    if (c < 0.5) return FOUR_GIB + Math.floor(r() * MEM_SIZE); // data region, sometimes past its end
    if (c < 0.6) return Math.floor(r() * 65536); // the rings themselves
    if (c < 0.7) return FOUR_GIB - Math.floor(r() * 4096); // just below RAM's second region
    if (c < 0.8) return 2 ** 53 - 1 - Math.floor(r() * 4096);
    return Math.floor(r() * 2 ** 32);
  };
  const len = (): number => [0, 1, 16, 512, 4096, 65536, 0xffffffff, Math.floor(r() * 2 ** 32)][Math.floor(r() * 8)]!;
  const descs = 1 + Math.floor(r() * 8);
  for (let i = 0; i < descs; i++) {
    q.writeDesc(Math.floor(r() * QUEUE_SIZE), { addr: addr(), len: len(), flags: Math.floor(r() * 8), next: Math.floor(r() * (QUEUE_SIZE + 4)) });
  }
  const entries = 1 + Math.floor(r() * 4);
  for (let i = 0; i < entries; i++) q.setAvailEntry((q.availIdx + i) % QUEUE_SIZE, Math.floor(r() * (QUEUE_SIZE + 2)));
  q.setAvailIdx(r() < 0.1 ? Math.floor(r() * 65536) : q.availIdx + entries);
  q.kick();
}

async function fuzz(seconds: number, seed: number): Promise<Counts> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-fuzz-'));
  const image = path.join(dir, 'disk.img');
  fs.writeFileSync(image, Buffer.alloc(SECTORS * 512));
  const fd = fs.openSync(image, 'r+');
  const h = await DeviceHarness.start({ backendFd: fd, blk: { readOnly: false, serial: 'fuzz' }, queueSize: QUEUE_SIZE, memSize: MEM_SIZE, logLevel: 'fatal' });
  const r = rng(seed);
  const n: Counts = { rounds: 0, requests: 0, malformed: 0, needsReset: 0 };
  const end = Date.now() + seconds * 1000;
  try {
    let [q] = h.activate();
    while (Date.now() < end) {
      n.rounds++;
      const chaos = r() < 0.5;
      if (chaos) {
        n.malformed++;
        chaosRound(r, q!);
        await new Promise((res) => setTimeout(res, 5));
      } else await validRound(r, h, q!, n);
      if (!h.alive) throw new Finding(`the device died (${JSON.stringify(await h.exited)})`);
      // Start every chaotic round, and every 50th, from fresh rings.
      if (chaos || n.rounds % 50 === 0) {
        n.needsReset += h.received.filter((m) => m.type === 'needs-reset').length;
        h.received.length = 0;
        try {
          await h.reset(ANSWER_MS);
        } catch (e) {
          throw new Finding(`the device did not finish a reset: ${(e as Error).message}`);
        }
        [q] = h.activate();
      }
    }
    await h.stats(ANSWER_MS).catch(() => {
      throw new Finding('the device stopped answering its control channel');
    });
    return n;
  } catch (e) {
    if (e instanceof Finding) {
      e.message = `round ${n.rounds}: ${e.message}\nreplay: npm run fuzz -- --seed ${seed} --seconds ${seconds}\ndevice log tail:\n${h.logs.slice(-10).join('')}`;
    }
    throw e;
  } finally {
    await h.close().catch(() => {});
    fs.closeSync(fd);
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

process.exitCode = await fuzzMain('blk', 'jailed device under its enforcing policy', async (seconds, seed) => {
  const n = await fuzz(seconds, seed);
  return `${n.rounds} rounds: ${n.requests} well-formed requests answered, ${n.malformed} malformed rings (${n.needsReset} needs-reset)`;
});
