// Framing of control-channel messages: a 4-byte little-endian length, then
// the msgpack encoding of the message. Frames are bounded; an oversized,
// empty or undecodable frame is a ProtocolError.
import { Packr } from 'msgpackr';
import { ProtocolError, type Message } from './messages.js';

export const MAX_FRAME_BYTES = 64 * 1024;

// Plain msgpack only: no records, no structured clone, maps decode to plain objects.
const packr = new Packr({ useRecords: false, structuredClone: false, mapsAsObjects: true, moreTypes: false });

/** Encodes one message as a frame (length prefix included). */
export function encode(msg: Message): Buffer {
  const body = packr.pack(msg);
  if (body.length === 0 || body.length > MAX_FRAME_BYTES) throw new ProtocolError(`frame of ${body.length} bytes exceeds ${MAX_FRAME_BYTES}`);
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32LE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

/** Decodes one frame body (without its length prefix) into an unvalidated value. */
export function decode(body: Uint8Array): unknown {
  try {
    return packr.unpack(body);
  } catch (e) {
    throw new ProtocolError(`undecodable frame: ${(e as Error).message.slice(0, 100)}`);
  }
}

/** Splits a byte stream into frame bodies. Throws ProtocolError on a bad length. */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);

  /** Adds received bytes; returns the complete frame bodies now available. */
  push(chunk: Buffer): Buffer[] {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    const out: Buffer[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32LE(0);
      if (len === 0 || len > MAX_FRAME_BYTES) throw new ProtocolError(`frame length ${len} out of range 1..${MAX_FRAME_BYTES}`);
      if (this.buf.length < 4 + len) break;
      out.push(this.buf.subarray(4, 4 + len));
      this.buf = this.buf.subarray(4 + len);
    }
    return out;
  }
}
