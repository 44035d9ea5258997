// The 9P wire format: little-endian integers, strings as u16 length plus
// UTF-8 bytes, qids as type[1] version[4] path[8]. A Reader over a received
// message throws WireError when the message is shorter than its fields say
// (the server answers EINVAL); a Writer builds a reply in a growing buffer.
export class WireError extends Error {
  override name = 'WireError';
}

export interface Qid {
  type: number;
  version: number;
  path: bigint;
}

/** Names are UTF-8: bytes that are not are refused (EINVAL), never silently replaced by another name. */
const decoder = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

export class Reader {
  private at: number;
  private readonly dv: DataView;

  constructor(
    readonly bytes: Uint8Array,
    start = 0,
  ) {
    this.at = start;
    this.dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }

  private take(n: number): number {
    const at = this.at;
    if (at + n > this.bytes.length) throw new WireError('message ends before its fields do');
    this.at += n;
    return at;
  }
  get remaining(): number {
    return this.bytes.length - this.at;
  }
  u8(): number {
    return this.dv.getUint8(this.take(1));
  }
  u16(): number {
    return this.dv.getUint16(this.take(2), true);
  }
  u32(): number {
    return this.dv.getUint32(this.take(4), true);
  }
  /** A u64 as a number; values above 2^53 (no real offset or size) become 2^53. */
  u64(): number {
    const at = this.take(8);
    const v = this.dv.getUint32(at, true) + this.dv.getUint32(at + 4, true) * 0x1_0000_0000;
    return Math.min(v, Number.MAX_SAFE_INTEGER);
  }
  /** A u64 exactly (directory cookies use all 64 bits). */
  u64big(): bigint {
    return this.dv.getBigUint64(this.take(8), true);
  }
  /** A UTF-8 string; throws WireError for bytes that are not UTF-8. */
  str(): string {
    const len = this.u16();
    try {
      return decoder.decode(this.bytes.subarray(this.take(len), this.at));
    } catch (e) {
      if (e instanceof WireError) throw e;
      throw new WireError('a string is not UTF-8');
    }
  }
  /** A string's bytes as they are (echoed back, never used as a name). */
  rawStr(): Uint8Array {
    const len = this.u16();
    return this.bytes.subarray(this.take(len), this.at);
  }
}

export class Writer {
  private buf: Uint8Array;
  private dv: DataView;
  length = 0;

  constructor(capacity = 64) {
    this.buf = new Uint8Array(capacity);
    this.dv = new DataView(this.buf.buffer);
  }

  private room(n: number): number {
    if (this.length + n > this.buf.length) {
      const bigger = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
      bigger.set(this.buf.subarray(0, this.length));
      this.buf = bigger;
      this.dv = new DataView(bigger.buffer);
    }
    const at = this.length;
    this.length += n;
    return at;
  }
  u8(v: number): this {
    const at = this.room(1); // before reading this.dv, which room() may replace
    this.dv.setUint8(at, v);
    return this;
  }
  u16(v: number): this {
    const at = this.room(2);
    this.dv.setUint16(at, v, true);
    return this;
  }
  u32(v: number): this {
    const at = this.room(4);
    this.dv.setUint32(at, v >>> 0, true);
    return this;
  }
  /** A u64: numbers in 0..2^53 as two u32 halves (BigInt is slow without a JIT), anything else as a BigInt. */
  u64(v: number | bigint): this {
    const at = this.room(8);
    if (typeof v === 'number' && v >= 0 && v <= Number.MAX_SAFE_INTEGER) {
      this.dv.setUint32(at, v >>> 0, true);
      this.dv.setUint32(at + 4, Math.floor(v / 0x1_0000_0000), true);
    } else this.dv.setBigUint64(at, BigInt.asUintN(64, BigInt(v)), true);
    return this;
  }
  bytes(b: Uint8Array): this {
    const at = this.room(b.length);
    this.buf.set(b, at);
    return this;
  }
  str(s: string | Uint8Array): this {
    const b = typeof s === 'string' ? encoder.encode(s) : s;
    if (b.length > 0xffff) throw new WireError('string longer than 65535 bytes');
    return this.u16(b.length).bytes(b);
  }
  qid(q: Qid): this {
    return this.u8(q.type).u32(q.version).u64(q.path);
  }
  /** Sets the u32 at `at` (a size or count filled in afterwards). */
  patch32(at: number, v: number): this {
    this.dv.setUint32(at, v >>> 0, true);
    return this;
  }
  /** The bytes written so far (a view: valid until the next write). */
  view(): Uint8Array {
    return this.buf.subarray(0, this.length);
  }
}

/** Starts an R-message: size (patched by `finish`), type, tag. */
export function reply(type: number, tag: number, capacity = 256): Writer {
  return new Writer(capacity).u32(0).u8(type).u16(tag);
}
/** Sets the size field of a message built with `reply`, counting `extra` bytes sent after it. */
export function finish(w: Writer, extra = 0): Uint8Array {
  w.patch32(0, w.length + extra);
  return w.view();
}
