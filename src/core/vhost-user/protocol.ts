// The vhost-user wire protocol, backend side: message numbers, feature
// bits, the 12-byte header, and a decoder per payload that checks sizes and
// values (the frontend is not trusted: a malformed message is refused with
// one sentence, never acted upon). Byte order is the host's (little-endian).

export const Req = {
  GET_FEATURES: 1, SET_FEATURES: 2, SET_OWNER: 3, RESET_OWNER: 4, SET_MEM_TABLE: 5, SET_LOG_BASE: 6, SET_LOG_FD: 7,
  SET_VRING_NUM: 8, SET_VRING_ADDR: 9, SET_VRING_BASE: 10, GET_VRING_BASE: 11, SET_VRING_KICK: 12, SET_VRING_CALL: 13,
  SET_VRING_ERR: 14, GET_PROTOCOL_FEATURES: 15, SET_PROTOCOL_FEATURES: 16, GET_QUEUE_NUM: 17, SET_VRING_ENABLE: 18,
  GET_CONFIG: 24, SET_CONFIG: 25, GET_INFLIGHT_FD: 31, SET_INFLIGHT_FD: 32, GET_MAX_MEM_SLOTS: 36,
} as const;
export const REQ_NAMES = new Map<number, string>(Object.entries(Req).map(([k, v]) => [v, k]));

/** Requests the frontend always waits for an answer to (with REPLY_ACK or not). */
export const REPLY_REQUESTS: readonly number[] = [
  Req.GET_FEATURES, Req.GET_PROTOCOL_FEATURES, Req.GET_QUEUE_NUM, Req.GET_VRING_BASE, Req.GET_CONFIG, Req.GET_INFLIGHT_FD, Req.GET_MAX_MEM_SLOTS,
];

/** Device feature bit: the protocol-feature messages are understood. */
export const VHOST_USER_F_PROTOCOL_FEATURES = 30;
export const Proto = { MQ: 0, REPLY_ACK: 3, CONFIG: 9, INFLIGHT_SHMFD: 12 } as const;

export const HEADER_BYTES = 12;
export const FLAG_VERSION = 0x1;
export const FLAG_REPLY = 0x4;
export const FLAG_NEED_REPLY = 0x8;
/** The largest payload we accept (a full memory table is 8 + 8 × 32 bytes; a config read 12 + 256). */
export const MAX_PAYLOAD = 512;
export const MAX_REGIONS = 8;
/** SET_VRING_KICK/CALL/ERR: no fd comes with the message (the frontend wants polling). */
export const VRING_NOFD = 0x100;

export class ProtocolViolation extends Error {
  override name = 'ProtocolViolation';
}

export interface Header {
  request: number;
  flags: number;
  size: number;
}

export function decodeHeader(b: Uint8Array): Header {
  const dv = new DataView(b.buffer, b.byteOffset, HEADER_BYTES);
  const h = { request: dv.getUint32(0, true), flags: dv.getUint32(4, true), size: dv.getUint32(8, true) };
  if ((h.flags & 0x3) !== FLAG_VERSION) throw new ProtocolViolation(`message version ${h.flags & 0x3} is not 1`);
  if (h.flags & FLAG_REPLY) throw new ProtocolViolation('a frontend message has the reply flag set');
  if (h.size > MAX_PAYLOAD) throw new ProtocolViolation(`payload of ${h.size} bytes is larger than ${MAX_PAYLOAD}`);
  return h;
}

export function encodeReply(request: number, payload: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES + payload.length);
  const dv = new DataView(out.buffer);
  dv.setUint32(0, request, true);
  dv.setUint32(4, FLAG_VERSION | FLAG_REPLY, true);
  dv.setUint32(8, payload.length, true);
  out.set(payload, HEADER_BYTES);
  return out;
}

export function u64Payload(v: bigint | number): Uint8Array {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(v), true);
  return b;
}

function need(p: Uint8Array, bytes: number, what: string): DataView {
  if (p.length < bytes) throw new ProtocolViolation(`${what} payload is ${p.length} bytes, needs ${bytes}`);
  return new DataView(p.buffer, p.byteOffset, p.length);
}

/** A u64 as a number, refused above 2^53 (no address or size of ours is larger). */
function safe(v: bigint, what: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new ProtocolViolation(`${what} 0x${v.toString(16)} is beyond 2^53`);
  return Number(v);
}

export const decodeU64 = (p: Uint8Array, what: string): bigint => need(p, 8, what).getBigUint64(0, true);

export interface VringState {
  index: number;
  num: number;
}
export function decodeVringState(p: Uint8Array, what: string): VringState {
  const dv = need(p, 8, what);
  return { index: dv.getUint32(0, true), num: dv.getUint32(4, true) };
}
export function encodeVringState(s: VringState): Uint8Array {
  const b = new Uint8Array(8);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, s.index, true);
  dv.setUint32(4, s.num, true);
  return b;
}

export interface VringAddr {
  index: number;
  flags: number;
  /** Frontend virtual addresses. */
  desc: number;
  used: number;
  avail: number;
}
export function decodeVringAddr(p: Uint8Array): VringAddr {
  const dv = need(p, 40, 'SET_VRING_ADDR');
  return {
    index: dv.getUint32(0, true), flags: dv.getUint32(4, true),
    desc: safe(dv.getBigUint64(8, true), 'descriptor table address'),
    used: safe(dv.getBigUint64(16, true), 'used ring address'),
    avail: safe(dv.getBigUint64(24, true), 'available ring address'),
  };
}

/** SET_VRING_KICK/CALL/ERR: the queue index, and whether an fd comes with it. */
export function decodeVringFd(p: Uint8Array, what: string): { index: number; noFd: boolean } {
  const v = decodeU64(p, what);
  if (v & ~0x1ffn) throw new ProtocolViolation(`${what}: unknown bits in 0x${v.toString(16)}`);
  return { index: Number(v & 0xffn), noFd: (v & BigInt(VRING_NOFD)) !== 0n };
}

export interface MemRegion {
  gpa: number;
  size: number;
  /** Where the frontend has it mapped (ring addresses are given in this space). */
  uaddr: number;
  /** Offset of the region in its fd. */
  offset: number;
}
export function decodeMemTable(p: Uint8Array): MemRegion[] {
  const dv = need(p, 8, 'SET_MEM_TABLE');
  const n = dv.getUint32(0, true);
  if (n === 0 || n > MAX_REGIONS) throw new ProtocolViolation(`memory table with ${n} regions (1 to ${MAX_REGIONS})`);
  need(p, 8 + 32 * n, 'SET_MEM_TABLE');
  const regions: MemRegion[] = [];
  for (let i = 0; i < n; i++) {
    const at = 8 + 32 * i;
    const r = {
      gpa: safe(dv.getBigUint64(at, true), 'region guest address'),
      size: safe(dv.getBigUint64(at + 8, true), 'region size'),
      uaddr: safe(dv.getBigUint64(at + 16, true), 'region frontend address'),
      offset: safe(dv.getBigUint64(at + 24, true), 'region offset'),
    };
    if (r.size === 0) throw new ProtocolViolation(`memory region ${i} is empty`);
    if (r.gpa + r.size > Number.MAX_SAFE_INTEGER || r.uaddr + r.size > Number.MAX_SAFE_INTEGER || r.offset + r.size > Number.MAX_SAFE_INTEGER) {
      throw new ProtocolViolation(`memory region ${i} wraps past 2^53`);
    }
    regions.push(r);
  }
  return regions;
}

export interface ConfigAccess {
  offset: number;
  size: number;
  flags: number;
  data: Uint8Array;
}
export function decodeConfig(p: Uint8Array, what: string): ConfigAccess {
  const dv = need(p, 12, what);
  const c = { offset: dv.getUint32(0, true), size: dv.getUint32(4, true), flags: dv.getUint32(8, true) };
  if (c.offset > 256 || c.size > 256 - c.offset) throw new ProtocolViolation(`${what} of ${c.size} bytes at ${c.offset} is outside the 256-byte config space`);
  if (what === 'SET_CONFIG') need(p, 12 + c.size, what);
  return { ...c, data: p.slice(12, 12 + c.size) };
}
export function encodeConfig(offset: number, data: Uint8Array): Uint8Array {
  const b = new Uint8Array(12 + data.length);
  const dv = new DataView(b.buffer);
  dv.setUint32(0, offset, true);
  dv.setUint32(4, data.length, true);
  b.set(data, 12);
  return b;
}

export interface InflightInfo {
  mmapSize: number;
  mmapOffset: number;
  numQueues: number;
  queueSize: number;
}
export function decodeInflight(p: Uint8Array, what: string): InflightInfo {
  const dv = need(p, 20, what);
  return {
    mmapSize: safe(dv.getBigUint64(0, true), 'inflight size'), mmapOffset: safe(dv.getBigUint64(8, true), 'inflight offset'),
    numQueues: dv.getUint16(16, true), queueSize: dv.getUint16(18, true),
  };
}
export function encodeInflight(i: InflightInfo): Uint8Array {
  const b = new Uint8Array(24);
  const dv = new DataView(b.buffer);
  dv.setBigUint64(0, BigInt(i.mmapSize), true);
  dv.setBigUint64(8, BigInt(i.mmapOffset), true);
  dv.setUint16(16, i.numQueues, true);
  dv.setUint16(18, i.queueSize, true);
  return b;
}
