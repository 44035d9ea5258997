// A 9P2000.L client for tests, benchmarks and fuzzing, over either
// transport: a virtqueue of a device process the harness drives
// (QueueTransport: each request one chain, the T-message readable and room
// for the R-message writable, in reusable slots of guest memory), or a
// stream socket (SocketTransport: size-framed messages matched by tag), so
// the same client code measures splitvm's server and diod alike.
import type { Socket } from 'node:net';
import { RLERROR, T } from '../p9/protocol.js';
import { Reader, Writer, type Qid } from '../p9/wire.js';
import type { Buf, DriverQueue } from './driver-queue.js';
import type { DriverMemory } from './harness.js';

export class P9ClientError extends Error {
  constructor(readonly errno: number) {
    super(`Rlerror ${errno}`);
    this.name = 'P9ClientError';
  }
}

export interface P9Transport {
  /** Sends one T-message (its tag already in it); resolves with the R-message. */
  rpc(msg: Uint8Array, tag: number): Promise<Uint8Array>;
  close(): void;
}

/** Requests over a virtqueue: `slots` requests may be in flight, each with `msize` bytes each way. */
export class QueueTransport implements P9Transport {
  private readonly free: { out: number; in: number }[] = [];
  private readonly waiting: (() => void)[] = [];

  constructor(
    private readonly h: DriverMemory,
    private readonly q: DriverQueue,
    private readonly msize: number,
    slots = 4,
    /** Split each buffer into descriptors of this many bytes (scatter-gather). */
    private readonly segment = 0,
  ) {
    for (let i = 0; i < slots; i++) this.free.push({ out: h.alloc(msize, 64), in: h.alloc(msize, 64) });
  }

  private pieces(addr: number, len: number, write: boolean): Buf[] {
    const seg = this.segment || len;
    const out: Buf[] = [];
    for (let at = 0; at < len; at += seg) out.push({ addr: addr + at, len: Math.min(seg, len - at), write });
    return out;
  }

  async rpc(msg: Uint8Array): Promise<Uint8Array> {
    if (msg.length > this.msize) throw new Error(`T-message of ${msg.length} bytes exceeds msize ${this.msize}`);
    while (this.free.length === 0) await new Promise<void>((r) => this.waiting.push(r));
    const slot = this.free.pop()!;
    try {
      this.h.mem.write(slot.out, msg);
      const head = this.q.add([...this.pieces(slot.out, msg.length, false), ...this.pieces(slot.in, this.msize, true)]);
      this.q.publish();
      this.q.kick();
      const used = await this.q.waitFor(head, 10000);
      return this.h.mem.slice(slot.in, Math.min(used.len, this.msize)).slice();
    } finally {
      this.free.push(slot);
      this.waiting.shift()?.();
    }
  }

  close(): void {}
}

/** Requests over a connected stream socket. */
export class SocketTransport implements P9Transport {
  private readonly pending = new Map<number, { resolve: (m: Uint8Array) => void; reject: (e: Error) => void }>();
  /** Received bytes not yet part of a whole message, kept as chunks (joined once per message, not per chunk). */
  private chunks: Buffer[] = [];
  private total = 0;

  constructor(private readonly sock: Socket) {
    sock.on('data', (d: Buffer) => this.onData(d));
    const fail = (e: Error): void => {
      for (const p of this.pending.values()) p.reject(e);
      this.pending.clear();
    };
    sock.on('error', fail);
    sock.on('close', () => fail(new Error('9P connection closed')));
  }

  private onData(d: Buffer): void {
    this.chunks.push(d);
    this.total += d.length;
    for (;;) {
      if (this.total < 7) return;
      if (this.chunks[0]!.length < 7) this.chunks = [Buffer.concat(this.chunks, this.total)];
      const size = this.chunks[0]!.readUInt32LE(0);
      if (this.total < size) return;
      const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.total);
      const msg = all.subarray(0, size);
      const rest = all.subarray(size);
      this.chunks = rest.length > 0 ? [rest] : [];
      this.total = rest.length;
      const tag = msg.readUInt16LE(5);
      const p = this.pending.get(tag);
      this.pending.delete(tag);
      p?.resolve(msg);
    }
  }

  rpc(msg: Uint8Array, tag: number): Promise<Uint8Array> {
    return new Promise((resolve, reject) => {
      this.pending.set(tag, { resolve, reject });
      this.sock.write(msg);
    });
  }

  close(): void {
    this.sock.destroy();
  }
}

export interface P9Attr {
  valid: bigint;
  qid: Qid;
  mode: number;
  uid: number;
  gid: number;
  nlink: number;
  rdev: number;
  size: number;
  blksize: number;
  blocks: number;
  atime: [number, number];
  mtime: [number, number];
  ctime: [number, number];
}

export interface P9Dirent {
  qid: Qid;
  offset: bigint;
  type: number;
  name: string;
}

export interface P9SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  atime?: [number, number];
  mtime?: [number, number];
}

const u64 = (r: Reader): number => r.u64();
const qid = (r: Reader): Qid => ({ type: r.u8(), version: r.u32(), path: r.u64big() });

export class P9Client {
  private nextTag = 1;
  msize = 0;

  constructor(readonly transport: P9Transport) {}

  /** Sends type + body; returns a Reader after the R-message's header, or throws P9ClientError on Rlerror. */
  async rpc(type: number, body: (w: Writer) => Writer = (w) => w): Promise<Reader> {
    const tag = this.nextTag;
    this.nextTag = this.nextTag >= 0xfffe ? 1 : this.nextTag + 1;
    const w = body(new Writer(64).u32(0).u8(type).u16(tag));
    w.patch32(0, w.length);
    const reply = await this.transport.rpc(w.view().slice(), tag);
    const r = new Reader(reply, 4);
    const rtype = r.u8();
    r.u16();
    if (rtype === RLERROR) throw new P9ClientError(r.u32());
    if (rtype !== type + 1) throw new Error(`R-message type ${rtype} answers T-message ${type}`);
    return r;
  }

  async version(msize: number, version = '9P2000.L'): Promise<{ msize: number; version: string }> {
    const r = await this.rpc(T.version, (w) => w.u32(msize).str(version));
    const out = { msize: r.u32(), version: r.str() };
    this.msize = out.msize;
    return out;
  }
  async attach(fid: number, aname = '', uname = 'root', nUname = 0): Promise<Qid> {
    return qid(await this.rpc(T.attach, (w) => w.u32(fid).u32(0xffffffff).str(uname).str(aname).u32(nUname)));
  }
  async walk(fid: number, newfid: number, names: string[]): Promise<Qid[]> {
    const r = await this.rpc(T.walk, (w) => {
      w.u32(fid).u32(newfid).u16(names.length);
      for (const n of names) w.str(n);
      return w;
    });
    return Array.from({ length: r.u16() }, () => qid(r));
  }
  async clunk(fid: number): Promise<void> {
    await this.rpc(T.clunk, (w) => w.u32(fid));
  }
  async remove(fid: number): Promise<void> {
    await this.rpc(T.remove, (w) => w.u32(fid));
  }
  async flush(oldtag: number): Promise<void> {
    await this.rpc(T.flush, (w) => w.u16(oldtag));
  }
  async getattr(fid: number): Promise<P9Attr> {
    const r = await this.rpc(T.getattr, (w) => w.u32(fid).u64(0x3fff));
    return {
      valid: r.u64big(), qid: qid(r), mode: r.u32(), uid: r.u32(), gid: r.u32(), nlink: u64(r), rdev: u64(r), size: u64(r),
      blksize: u64(r), blocks: u64(r), atime: [u64(r), u64(r)], mtime: [u64(r), u64(r)], ctime: [u64(r), u64(r)],
    };
  }
  async setattr(fid: number, a: P9SetAttr): Promise<void> {
    let valid = 0;
    if (a.mode !== undefined) valid |= 0x1;
    if (a.uid !== undefined) valid |= 0x2;
    if (a.gid !== undefined) valid |= 0x4;
    if (a.size !== undefined) valid |= 0x8;
    if (a.atime) valid |= 0x10 | 0x80;
    if (a.mtime) valid |= 0x20 | 0x100;
    await this.rpc(T.setattr, (w) =>
      w.u32(fid).u32(valid).u32(a.mode ?? 0).u32(a.uid ?? 0).u32(a.gid ?? 0).u64(a.size ?? 0)
        .u64(a.atime?.[0] ?? 0).u64(a.atime?.[1] ?? 0).u64(a.mtime?.[0] ?? 0).u64(a.mtime?.[1] ?? 0));
  }
  async statfs(fid: number): Promise<{ type: number; bsize: number; blocks: number; bfree: number; bavail: number; files: number; ffree: number; namelen: number }> {
    const r = await this.rpc(T.statfs, (w) => w.u32(fid));
    const type = r.u32();
    const bsize = r.u32();
    const [blocks, bfree, bavail, files, ffree] = [u64(r), u64(r), u64(r), u64(r), u64(r)];
    u64(r); // fsid
    return { type, bsize, blocks, bfree, bavail, files, ffree, namelen: r.u32() };
  }
  async lopen(fid: number, flags: number): Promise<{ qid: Qid; iounit: number }> {
    const r = await this.rpc(T.lopen, (w) => w.u32(fid).u32(flags));
    return { qid: qid(r), iounit: r.u32() };
  }
  async lcreate(fid: number, name: string, flags: number, mode: number, gid = 0): Promise<{ qid: Qid; iounit: number }> {
    const r = await this.rpc(T.lcreate, (w) => w.u32(fid).str(name).u32(flags).u32(mode).u32(gid));
    return { qid: qid(r), iounit: r.u32() };
  }
  async read(fid: number, offset: number, count: number): Promise<Uint8Array> {
    const r = await this.rpc(T.read, (w) => w.u32(fid).u64(offset).u32(count));
    const n = r.u32();
    return r.bytes.subarray(11, 11 + n);
  }
  async write(fid: number, offset: number, data: Uint8Array): Promise<number> {
    const r = await this.rpc(T.write, (w) => w.u32(fid).u64(offset).u32(data.length).bytes(data));
    return r.u32();
  }
  /** Reads a whole open file in msize-sized requests. */
  async readAll(fid: number): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    for (let off = 0; ; ) {
      const d = await this.read(fid, off, this.msize - 24);
      if (d.length === 0) break;
      parts.push(d.slice());
      off += d.length;
    }
    return Buffer.concat(parts);
  }
  async readdir(fid: number, offset: bigint, count: number): Promise<P9Dirent[]> {
    const r = await this.rpc(T.readdir, (w) => w.u32(fid).u64(offset).u32(count));
    const end = 11 + r.u32();
    const out: P9Dirent[] = [];
    while (r.bytes.length - r.remaining < end) out.push({ qid: qid(r), offset: r.u64big(), type: r.u8(), name: r.str() });
    return out;
  }
  /** Every entry of an open directory. */
  async readdirAll(fid: number): Promise<P9Dirent[]> {
    const all: P9Dirent[] = [];
    for (let off = 0n; ; ) {
      const batch = await this.readdir(fid, off, 8192);
      if (batch.length === 0) return all;
      all.push(...batch);
      off = batch[batch.length - 1]!.offset;
    }
  }
  async mkdir(dfid: number, name: string, mode: number, gid = 0): Promise<Qid> {
    return qid(await this.rpc(T.mkdir, (w) => w.u32(dfid).str(name).u32(mode).u32(gid)));
  }
  async mknod(dfid: number, name: string, mode: number, major = 0, minor = 0, gid = 0): Promise<Qid> {
    return qid(await this.rpc(T.mknod, (w) => w.u32(dfid).str(name).u32(mode).u32(major).u32(minor).u32(gid)));
  }
  async symlink(dfid: number, name: string, target: string, gid = 0): Promise<Qid> {
    return qid(await this.rpc(T.symlink, (w) => w.u32(dfid).str(name).str(target).u32(gid)));
  }
  async readlink(fid: number): Promise<string> {
    return (await this.rpc(T.readlink, (w) => w.u32(fid))).str();
  }
  async link(dfid: number, fid: number, name: string): Promise<void> {
    await this.rpc(T.link, (w) => w.u32(dfid).u32(fid).str(name));
  }
  async rename(fid: number, dfid: number, name: string): Promise<void> {
    await this.rpc(T.rename, (w) => w.u32(fid).u32(dfid).str(name));
  }
  async renameat(olddfid: number, oldname: string, newdfid: number, newname: string): Promise<void> {
    await this.rpc(T.renameat, (w) => w.u32(olddfid).str(oldname).u32(newdfid).str(newname));
  }
  async unlinkat(dfid: number, name: string, flags = 0): Promise<void> {
    await this.rpc(T.unlinkat, (w) => w.u32(dfid).str(name).u32(flags));
  }
  async fsync(fid: number, datasync = 0): Promise<void> {
    await this.rpc(T.fsync, (w) => w.u32(fid).u32(datasync));
  }
  async lock(fid: number, type: number, start = 0, length = 0, procId = 1, clientId = 'test'): Promise<number> {
    return (await this.rpc(T.lock, (w) => w.u32(fid).u8(type).u32(0).u64(start).u64(length).u32(procId).str(clientId))).u8();
  }
  async getlock(fid: number, type: number, start = 0, length = 0, procId = 1, clientId = 'test'): Promise<{ type: number; start: number; length: number; procId: number; clientId: string }> {
    const r = await this.rpc(T.getlock, (w) => w.u32(fid).u8(type).u64(start).u64(length).u32(procId).str(clientId));
    return { type: r.u8(), start: u64(r), length: u64(r), procId: r.u32(), clientId: r.str() };
  }
  async xattrwalk(fid: number, newfid: number, name: string): Promise<number> {
    return u64(await this.rpc(T.xattrwalk, (w) => w.u32(fid).u32(newfid).str(name)));
  }
  async xattrcreate(fid: number, name: string, size: number, flags = 0): Promise<void> {
    await this.rpc(T.xattrcreate, (w) => w.u32(fid).str(name).u64(size).u32(flags));
  }
}

/** The errno a 9P call failed with (P9ClientError), or 0 when it succeeded. */
export async function errnoOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 0;
  } catch (e) {
    if (e instanceof P9ClientError) return e.errno;
    throw e;
  }
}
