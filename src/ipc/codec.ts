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

/**
 * Splits a byte stream into frame bodies. Throws ProtocolError on a bad
 * length. Linear in the bytes received however the peer fragments them: a
 * frame's body is gathered into one buffer of its announced length, never
 * re-concatenated per chunk (a peer writing one byte at a time would
 * otherwise cost a quadratic amount of copying).
 */
export class FrameReader {
  /** Bytes of a length prefix not yet complete. */
  private readonly prefix = Buffer.alloc(4);
  private prefixBytes = 0;
  /** The body being gathered (its length announced by the prefix), and how much of it has arrived. */
  private body: Buffer | null = null;
  private bodyBytes = 0;

  /** Adds received bytes; returns the complete frame bodies now available. */
  push(chunk: Buffer): Buffer[] {
    const out: Buffer[] = [];
    let at = 0;
    while (at < chunk.length) {
      if (this.body === null) {
        // A whole frame inside this chunk: hand out a view, no copy.
        if (this.prefixBytes === 0 && chunk.length - at >= 4) {
          const len = checkLength(chunk.readUInt32LE(at));
          if (chunk.length - at - 4 >= len) {
            out.push(chunk.subarray(at + 4, at + 4 + len));
            at += 4 + len;
            continue;
          }
        }
        const n = Math.min(4 - this.prefixBytes, chunk.length - at);
        chunk.copy(this.prefix, this.prefixBytes, at, at + n);
        this.prefixBytes += n;
        at += n;
        if (this.prefixBytes < 4) break;
        this.body = Buffer.allocUnsafe(checkLength(this.prefix.readUInt32LE(0)));
        this.bodyBytes = 0;
        this.prefixBytes = 0;
      }
      const n = Math.min(this.body.length - this.bodyBytes, chunk.length - at);
      chunk.copy(this.body, this.bodyBytes, at, at + n);
      this.bodyBytes += n;
      at += n;
      if (this.bodyBytes === this.body.length) {
        out.push(this.body);
        this.body = null;
      }
    }
    return out;
  }
}

function checkLength(len: number): number {
  if (len === 0 || len > MAX_FRAME_BYTES) throw new ProtocolError(`frame length ${len} out of range 1..${MAX_FRAME_BYTES}`);
  return len;
}
