// scripts/bench/blk/direct.ts — owns the ceiling of the blk benchmark: the
// same I/O as the device serves (same sizes, offsets, queue depth) done
// directly with pread/pwrite from one Node process, through the libuv pool
// (FileHandle.read/write promises, `depth` of them in flight). ../blk.ts runs
// it as a child with the device's pool size and sends it one JSON line per
// run on stdin: { op, bs, depth, random, ms, latencies?, gapMs? }; it answers each
// with { ops, seconds, latencyUs? } on stdout (latencyUs: each request's
// time from its call to its answer, when asked: the ceiling's own tail;
// gapMs: a pause after each request, as an idle guest makes).
// argv[2]: { image, imageBytes }.
import { open } from 'node:fs/promises';
import readline from 'node:readline';

interface DirectRun {
  op: 'read' | 'write';
  bs: number;
  depth: number;
  random: boolean;
  ms: number;
  latencies?: boolean;
  gapMs?: number;
}

const { image, imageBytes } = JSON.parse(process.argv[2]!) as { image: string; imageBytes: number };
const fh = await open(image, 'r+');
let seq = 0;

async function run(c: DirectRun): Promise<{ ops: number; seconds: number; latencyUs?: number[] }> {
  const nextPos = (): number => {
    if (c.random) return Math.floor(Math.random() * (imageBytes / c.bs)) * c.bs;
    const at = seq;
    seq = (seq + c.bs) % imageBytes;
    return at;
  };
  const t0 = performance.now();
  const deadline = t0 + c.ms;
  let ops = 0;
  const latencyUs: number[] | undefined = c.latencies ? [] : undefined;
  await Promise.all(
    Array.from({ length: c.depth }, async () => {
      const buf = Buffer.alloc(c.bs, 0x5a);
      for (let t = performance.now(); t < deadline; ) {
        if (c.op === 'read') await fh.read(buf, 0, c.bs, nextPos());
        else await fh.write(buf, 0, c.bs, nextPos());
        ops++;
        latencyUs?.push((performance.now() - t) * 1000);
        if (c.gapMs) await new Promise((resolve) => setTimeout(resolve, c.gapMs));
        t = performance.now();
      }
    }),
  );
  return { ops, seconds: (performance.now() - t0) / 1000, ...(latencyUs ? { latencyUs } : {}) };
}

for await (const line of readline.createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  process.stdout.write(`${JSON.stringify(await run(JSON.parse(line) as DirectRun))}\n`);
}
await fh.close();
