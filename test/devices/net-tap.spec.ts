// Device-process tests for virtio-net on a real tap (owns this file): the
// jailed net device process under its enforcing policy, given a tap fd that
// the core's own openTap opened, driven through its queues by the harness
// (which plays the guest, MAC GUEST_MAC, IP 10.199.N.2), against the host
// kernel's real network stack on the other side of the tap (10.199.N.1).
//
// Nothing leaks to the host's network: the suite makes its own network
// namespace (ip netns add) and puts the tap, its address and every host-side
// socket in it. The tap is opened from inside that namespace by switching
// only the test's main thread into it for the synchronous openTap call
// (setns(2) on the calling thread through koffi, then back); host-side UDP
// sockets are made the same way (a synchronous lookup makes dgram's bind,
// where libuv creates the socket, run inside the switch). A second tap,
// held by the test, is where the namespace routes 10.198.N.0/24 (to see what
// the host forwards); a third is removed under a device. after() deletes the
// taps and the namespace whether the tests passed or not.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import fs from 'node:fs';
import { openTap } from '../../src/core/kinds/net.js';
import { DeviceHarness, NetDriver, testFrame, type ActivateOptions, type ReceivedFrame } from '../../src/devices/harness/index.js';
import * as C from '../../src/devices/net/constants.js';
import { hasFeature } from '../../src/ipc/messages.js';
import * as libc from '../../src/sys/libc.js';

const NS = `svt${process.pid}`;
const TAP = `svt${process.pid}`;
const N = 1 + (process.pid % 250);
const HOST_IP = `10.199.${N}.1`;
const GUEST_IP = `10.199.${N}.2`;
const GUEST_MAC = '02:53:56:00:00:02';
/** A second tap the namespace routes 10.198.N.0/24 to: the test reads what the host forwards there. */
const TAP2 = `svu${process.pid}`;
const FAR_IP = `10.198.${N}.2`;
const FAR_MAC = '02:53:56:00:00:03';
/** A tap a test removes under the device. */
const TAP3 = `svw${process.pid}`;

// ---- the test's network namespace ----

const setns_ = libc.libcLibrary.func('int setns(int fd, int nstype)');
const CLONE_NEWNET = 0x40000000;

/** Runs `fn` (synchronous) with the calling thread in the suite's network namespace. */
function inNetns<T>(fn: () => T): T {
  const home = libc.open('/proc/thread-self/ns/net', libc.O_RDONLY);
  try {
    const ns = libc.open(`/run/netns/${NS}`, libc.O_RDONLY);
    try {
      libc.check('setns', setns_(ns, CLONE_NEWNET) as number);
    } finally {
      libc.close(ns);
    }
    try {
      return fn();
    } finally {
      libc.check('setns (back)', setns_(home, CLONE_NEWNET) as number);
    }
  } finally {
    libc.close(home);
  }
}

function ip(...args: string[]): string {
  return execFileSync('ip', ['-n', NS, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

/** The namespace's TCP counters (/proc/net/snmp as seen from inside it). */
function tcpCounters(): Record<string, number> {
  const text = execFileSync('ip', ['netns', 'exec', NS, 'cat', '/proc/net/snmp'], { encoding: 'utf8' });
  const [names, values] = text.split('\n').filter((l) => l.startsWith('Tcp:'));
  const k = names!.split(/\s+/).slice(1);
  const v = values!.split(/\s+/).slice(1).map(Number);
  return Object.fromEntries(k.map((name, i) => [name, v[i]!]));
}

/** A UDP socket of the host's stack in the namespace, bound to HOST_IP. */
async function hostSocket(): Promise<dgram.Socket> {
  // A synchronous lookup: dgram binds (and libuv creates the socket) inside the bind() call.
  const lookup = (address: string, _family: unknown, cb: (e: Error | null, a: string, f: number) => void): void => cb(null, address, 4);
  const s = dgram.createSocket({ type: 'udp4', lookup: lookup as unknown as dgram.SocketOptions['lookup'] });
  const bound = new Promise<void>((resolve, reject) => {
    s.once('listening', resolve);
    s.once('error', reject);
  });
  inNetns(() => s.bind(0, HOST_IP));
  await bound;
  assert.equal(s.address().address, HOST_IP);
  return s;
}

// ---- frames ----

const macBytes = (m: string): Uint8Array => Uint8Array.from(m.split(':').map((h) => parseInt(h, 16)));
const ipBytes = (a: string): Uint8Array => Uint8Array.from(a.split('.').map(Number));
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

/** The 16-bit one's-complement sum of `data`, folded, not inverted. */
function sum16(data: Uint8Array, initial = 0): number {
  let s = initial;
  for (let i = 0; i + 1 < data.length; i += 2) s += (data[i]! << 8) | data[i + 1]!;
  if (data.length % 2) s += data[data.length - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

function pseudoSum(src: Uint8Array, dst: Uint8Array, proto: number, len: number): number {
  const p = new Uint8Array(12);
  p.set(src, 0);
  p.set(dst, 4);
  p[9] = proto;
  p[10] = len >> 8;
  p[11] = len & 0xff;
  return sum16(p);
}

function ethernet(dst: Uint8Array, src: Uint8Array, type: number, payload: Uint8Array): Uint8Array {
  const f = new Uint8Array(14 + payload.length);
  f.set(dst, 0);
  f.set(src, 6);
  f[12] = type >> 8;
  f[13] = type & 0xff;
  f.set(payload, 14);
  return f;
}

function ipv4(proto: number, src: string, dst: string, payload: Uint8Array): Uint8Array {
  const p = new Uint8Array(20 + payload.length);
  const v = new DataView(p.buffer);
  p[0] = 0x45;
  v.setUint16(2, p.length);
  v.setUint16(4, 0x1234);
  v.setUint16(6, 0x4000); // DF
  p[8] = 64;
  p[9] = proto;
  p.set(ipBytes(src), 12);
  p.set(ipBytes(dst), 16);
  v.setUint16(10, ~sum16(p.subarray(0, 20)) & 0xffff);
  p.set(payload, 20);
  return p;
}

/** A guest → host UDP frame; `partial`: the checksum left to the device (pseudo-header sum only, NEEDS_CSUM). */
function udpFrame(dstMac: string, sport: number, dport: number, payload: Uint8Array, partial = false): Uint8Array {
  const u = new Uint8Array(8 + payload.length);
  const v = new DataView(u.buffer);
  v.setUint16(0, sport);
  v.setUint16(2, dport);
  v.setUint16(4, u.length);
  u.set(payload, 8);
  const pseudo = pseudoSum(ipBytes(GUEST_IP), ipBytes(HOST_IP), 17, u.length);
  v.setUint16(6, partial ? pseudo : ~sum16(u, pseudo) & 0xffff || 0xffff);
  return ethernet(macBytes(dstMac), macBytes(GUEST_MAC), 0x0800, ipv4(17, GUEST_IP, HOST_IP, u));
}

/** A virtio-net header (the 12-byte v1 layout, little-endian). */
function netHeader(h: { flags?: number; gsoType?: number; hdrLen?: number; gsoSize?: number; csumStart?: number; csumOffset?: number }): Uint8Array {
  const b = new Uint8Array(C.NET_HDR_BYTES);
  const v = new DataView(b.buffer);
  b[0] = h.flags ?? 0;
  b[1] = h.gsoType ?? 0;
  v.setUint16(2, h.hdrLen ?? 0, true);
  v.setUint16(4, h.gsoSize ?? 0, true);
  v.setUint16(6, h.csumStart ?? 0, true);
  v.setUint16(8, h.csumOffset ?? 0, true);
  return b;
}
/** A guest TCP segment of `payload` (no ACK flag, PSH) to `dstIp`:`dport`, as a 64 KiB TSO frame with its virtio-net header. */
function tsoFrame(dstIp: string, dport: number, seq: number, payload: Uint8Array, mss: number): { frame: Uint8Array; header: Uint8Array } {
  const tcp = new Uint8Array(20 + payload.length);
  const v = new DataView(tcp.buffer);
  v.setUint16(0, 40100);
  v.setUint16(2, dport);
  v.setUint32(4, seq);
  tcp[12] = 5 << 4;
  tcp[13] = 0x08; // PSH, no ACK: a RST acknowledges the bytes it answers
  v.setUint16(14, 65535);
  tcp.set(payload, 20);
  // CHECKSUM_PARTIAL: the checksum field holds the pseudo-header sum (over the whole TCP length).
  v.setUint16(16, pseudoSum(ipBytes(GUEST_IP), ipBytes(dstIp), 6, tcp.length));
  const ipPacket = ipv4(6, GUEST_IP, dstIp, tcp);
  const header = netHeader({ flags: NEEDS_CSUM, gsoType: GSO_TCPV4, hdrLen: 14 + 20 + 20, gsoSize: mss, csumStart: 14 + 20, csumOffset: 16 });
  return { frame: ethernet(macBytes(tapMac), macBytes(GUEST_MAC), 0x0800, ipPacket), header };
}
let tapMac = '';
const NEEDS_CSUM = 1;
const GSO_TCPV4 = 1;
const UDP_CSUM_HEADER = netHeader({ flags: NEEDS_CSUM, csumStart: 34, csumOffset: 6 });

interface Parsed {
  dst: string;
  src: string;
  type: number;
  /** IPv4 only. */
  ip?: { proto: number; src: string; dst: string; l4: Uint8Array };
}

function parse(frame: Uint8Array): Parsed {
  const mac = (b: Uint8Array): string => [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
  const p: Parsed = { dst: mac(frame.subarray(0, 6)), src: mac(frame.subarray(6, 12)), type: (frame[12]! << 8) | frame[13]! };
  if (p.type === 0x0800 && frame.length >= 34) {
    const ihl = (frame[14]! & 0xf) * 4;
    const total = (frame[16]! << 8) | frame[17]!;
    p.ip = { proto: frame[23]!, src: frame.subarray(26, 30).join('.'), dst: frame.subarray(30, 34).join('.'), l4: frame.subarray(14 + ihl, 14 + total) };
  }
  return p;
}

function udpOf(p: Parsed): { sport: number; dport: number; check: number; payload: Uint8Array } | null {
  if (p.ip?.proto !== 17) return null;
  const v = new DataView(p.ip.l4.buffer, p.ip.l4.byteOffset, p.ip.l4.length);
  return { sport: v.getUint16(0), dport: v.getUint16(2), check: v.getUint16(6), payload: p.ip.l4.subarray(8, v.getUint16(4)) };
}

/** Receives frames until one matches (others are skipped: a host may always say something). */
async function receiveWhere(d: NetDriver, pred: (p: Parsed) => boolean, timeoutMs = 5000): Promise<{ r: ReceivedFrame; p: Parsed }> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await d.receive(Math.max(1, deadline - Date.now()));
    const p = parse(r.frame);
    if (pred(p)) return { r, p };
  }
}

const isUdpTo = (port: number) => (p: Parsed): boolean => p.ip?.src === HOST_IP && p.ip.dst === GUEST_IP && udpOf(p)?.dport === port;

const without = (features: number, ...bits: number[]): number => bits.reduce((f, b) => (hasFeature(f, b) ? f - 2 ** b : f), features);

describe('virtio-net device process on a real tap', function () {
  this.timeout(30000);
  let made = false;
  let tap2 = -1;
  const open: DeviceHarness[] = [];
  const sockets: dgram.Socket[] = [];

  before(function () {
    execFileSync('ip', ['netns', 'add', NS]);
    made = true;
    // No IPv6 in the namespace: nothing but what a test asks for crosses the tap.
    inNetns(() => {
      fs.writeFileSync('/proc/sys/net/ipv6/conf/all/disable_ipv6', '1');
      fs.writeFileSync('/proc/sys/net/ipv6/conf/default/disable_ipv6', '1');
    });
    ip('link', 'set', 'lo', 'up');
    ip('tuntap', 'add', 'dev', TAP, 'mode', 'tap');
    ip('addr', 'add', `${HOST_IP}/24`, 'dev', TAP);
    ip('link', 'set', TAP, 'up');
    ip('neigh', 'replace', GUEST_IP, 'lladdr', GUEST_MAC, 'dev', TAP, 'nud', 'permanent');
    ip('tuntap', 'add', 'dev', TAP2, 'mode', 'tap');
    ip('addr', 'add', `${FAR_IP.replace(/\.2$/, '.1')}/24`, 'dev', TAP2);
    ip('link', 'set', TAP2, 'up');
    ip('neigh', 'replace', FAR_IP, 'lladdr', FAR_MAC, 'dev', TAP2, 'nud', 'permanent');
    inNetns(() => fs.writeFileSync('/proc/sys/net/ipv4/ip_forward', '1'));
    // Opened with no offloads (openTap leaves them off): the host must segment and checksum what it sends there.
    tap2 = inNetns(() => openTap(TAP2)).fd;
    tapMac = (JSON.parse(ip('-j', 'link', 'show', 'dev', TAP)) as { address: string }[])[0]!.address;
  });

  after(function () {
    if (tap2 >= 0) libc.close(tap2);
    if (!made) return;
    for (const t of [TAP, TAP2, TAP3]) {
      try {
        ip('link', 'del', t);
      } catch {
        /* gone with the namespace below */
      }
    }
    execFileSync('ip', ['netns', 'del', NS]);
    assert.ok(!execFileSync('ip', ['netns', 'list'], { encoding: 'utf8' }).includes(NS), `namespace ${NS} removed`);
  });

  afterEach(async () => {
    await Promise.all(open.splice(0).map((h) => h.close()));
    for (const s of sockets.splice(0)) s.close();
  });

  async function tapDevice(activate: ActivateOptions = {}, tap = TAP): Promise<{ h: DeviceHarness; d: NetDriver; offloads: number }> {
    const { fd, offloads } = inNetns(() => openTap(tap));
    let h: DeviceHarness;
    try {
      h = await DeviceHarness.start({ kind: 'net', numQueues: 2, backendFd: fd, options: { backend: 'tap', mac: GUEST_MAC, mtu: 1500, tapOffloads: offloads } });
    } finally {
      libc.close(fd); // the device process holds the tap now
    }
    open.push(h);
    const [rx, tx] = h.activate(activate);
    await h.stats(); // answered after activate: the tap's offloads are set before the host sends anything
    return { h, d: new NetDriver(h, rx!, tx!), offloads };
  }

  async function socket(): Promise<dgram.Socket> {
    const s = await hostSocket();
    sockets.push(s);
    return s;
  }

  function nextMessage(s: dgram.Socket, timeoutMs = 5000): Promise<{ msg: Buffer; rinfo: dgram.RemoteInfo }> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`the host socket got nothing within ${timeoutMs} ms`)), timeoutMs);
      s.once('message', (msg, rinfo) => {
        clearTimeout(timer);
        resolve({ msg, rinfo });
      });
    });
  }

  it('offers checksum and segmentation offload, and the receive offloads the tap accepted; holds the tap', async () => {
    const { h, offloads } = await tapDevice();
    const must = C.TUN_F_CSUM | C.TUN_F_TSO4 | C.TUN_F_TSO6;
    assert.equal(offloads & must, must, `the tap accepted offloads 0x${offloads.toString(16)}`);
    const f = h.hello.deviceFeatures;
    for (const b of [C.VIRTIO_NET_F_CSUM, C.VIRTIO_NET_F_HOST_TSO4, C.VIRTIO_NET_F_HOST_TSO6, C.VIRTIO_NET_F_MAC, C.VIRTIO_NET_F_STATUS, C.VIRTIO_NET_F_MTU, C.VIRTIO_NET_F_MRG_RXBUF, C.VIRTIO_F_VERSION_1]) {
      assert.ok(hasFeature(f, b), `feature ${b} offered`);
    }
    const guest: [number, number][] = [
      [C.TUN_F_CSUM, C.VIRTIO_NET_F_GUEST_CSUM],
      [C.TUN_F_TSO4, C.VIRTIO_NET_F_GUEST_TSO4],
      [C.TUN_F_TSO6, C.VIRTIO_NET_F_GUEST_TSO6],
      [C.TUN_F_TSO_ECN, C.VIRTIO_NET_F_GUEST_ECN],
    ];
    for (const [flag, b] of guest) assert.equal(hasFeature(f, b), (offloads & flag) !== 0, `feature ${b} offered exactly when the tap accepted 0x${flag.toString(16)}`);
    assert.ok(!hasFeature(f, C.VIRTIO_NET_F_GUEST_UFO), 'no UFO: the tap was not asked for it');
    const cfg = Buffer.from(h.hello.config);
    assert.equal(hex(cfg.subarray(0, 6)), hex(macBytes(GUEST_MAC)));
    assert.equal(cfg.readUInt16LE(C.CONFIG.status), C.VIRTIO_NET_S_LINK_UP);
    // The device process is the tap's only holder: the host sees its carrier.
    const link = (JSON.parse(ip('-j', 'link', 'show', 'dev', TAP)) as { flags: string[] }[])[0]!;
    assert.ok(link.flags.includes('LOWER_UP'), `tap flags ${link.flags.join(',')}`);
  });

  it("gets the host's ARP reply to the guest's ARP request", async () => {
    const { h, d } = await tapDevice();
    d.postRx(16, 2048);
    const arp = new Uint8Array(28);
    arp.set([0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    arp.set(macBytes(GUEST_MAC), 8);
    arp.set(ipBytes(GUEST_IP), 14);
    arp.set(ipBytes(HOST_IP), 24);
    await d.send(ethernet(macBytes('ff:ff:ff:ff:ff:ff'), macBytes(GUEST_MAC), 0x0806, arp));
    const { p, r } = await receiveWhere(d, (x) => x.type === 0x0806);
    const a = r.frame.subarray(14, 42);
    assert.equal(p.dst, GUEST_MAC);
    assert.equal(p.src, tapMac);
    assert.equal((a[6]! << 8) | a[7]!, 2, 'an ARP reply');
    assert.equal(hex(a.subarray(8, 14)), hex(macBytes(tapMac)), 'sender: the tap');
    assert.equal(a.subarray(14, 18).join('.'), HOST_IP);
    assert.equal(hex(a.subarray(18, 24)), hex(macBytes(GUEST_MAC)), 'target: the guest');
    assert.equal(a.subarray(24, 28).join('.'), GUEST_IP);
    const s = await h.stats();
    assert.ok(s.txFrames! >= 1 && s.rxFrames! >= 1, JSON.stringify(s));
  });

  it('delivers guest UDP datagrams to a host socket byte for byte, with the checksum done by the guest or left to the device', async () => {
    const { d } = await tapDevice();
    const s = await socket();
    const port = s.address().port;
    const full = randomBytes(1400);
    let got = nextMessage(s);
    await d.send(udpFrame(tapMac, 40001, port, full));
    let { msg, rinfo } = await got;
    assert.equal(hex(msg), hex(full));
    assert.deepEqual([rinfo.address, rinfo.port], [GUEST_IP, 40001]);

    const partial = randomBytes(999);
    got = nextMessage(s);
    await d.send(udpFrame(tapMac, 40002, port, partial, true), { header: UDP_CSUM_HEADER });
    ({ msg, rinfo } = await got);
    assert.equal(hex(msg), hex(partial));
    assert.deepEqual([rinfo.address, rinfo.port], [GUEST_IP, 40002]);
  });

  it("delivers a host socket's UDP datagram into the guest's receive buffers", async () => {
    const { d } = await tapDevice();
    d.postRx(16, 2048);
    const s = await socket();
    const payload = randomBytes(1200);
    s.send(payload, 5555, GUEST_IP);
    const { r, p } = await receiveWhere(d, isUdpTo(5555));
    const u = udpOf(p)!;
    assert.equal(p.dst, GUEST_MAC);
    assert.equal(p.src, tapMac);
    assert.equal(u.sport, s.address().port);
    assert.equal(hex(u.payload), hex(payload));
    assert.equal(r.numBuffers, 1);
    // GUEST_CSUM was negotiated and the tap took TUN_F_CSUM: the host leaves the checksum to the guest and says where it goes.
    const v = Buffer.from(r.header);
    assert.equal(r.header[0], NEEDS_CSUM, `header ${hex(r.header)}`);
    assert.deepEqual([v.readUInt16LE(6), v.readUInt16LE(8)], [34, 6], 'csum_start, csum_offset');
    const l4 = p.ip!.l4;
    assert.equal(u.check, pseudoSum(ipBytes(HOST_IP), ipBytes(GUEST_IP), 17, l4.length), 'the checksum field holds the pseudo-header sum');
    const done = Uint8Array.from(l4);
    new DataView(done.buffer).setUint16(6, ~sum16(l4) & 0xffff); // what the guest does with NEEDS_CSUM
    assert.equal(sum16(done, pseudoSum(ipBytes(HOST_IP), ipBytes(GUEST_IP), 17, l4.length)), 0xffff);
  });

  it('with the receive offloads declined, frames from the host arrive with their checksum complete', async () => {
    const offered = (await tapDevice()).h.hello.deviceFeatures;
    await Promise.all(open.splice(0).map((h) => h.close()));
    const features = without(offered, C.VIRTIO_NET_F_GUEST_CSUM, C.VIRTIO_NET_F_GUEST_TSO4, C.VIRTIO_NET_F_GUEST_TSO6, C.VIRTIO_NET_F_GUEST_ECN, C.VIRTIO_NET_F_GUEST_UFO);
    const { d } = await tapDevice({ features });
    d.postRx(16, 2048);
    const s = await socket();
    const payload = randomBytes(777);
    s.send(payload, 5556, GUEST_IP);
    const { r, p } = await receiveWhere(d, isUdpTo(5556));
    assert.equal(r.header[0]! & NEEDS_CSUM, 0, 'no NEEDS_CSUM without GUEST_CSUM');
    const u = udpOf(p)!;
    assert.equal(hex(u.payload), hex(payload));
    assert.notEqual(u.check, 0);
    assert.equal(sum16(p.ip!.l4, pseudoSum(ipBytes(HOST_IP), ipBytes(GUEST_IP), 17, p.ip!.l4.length)), 0xffff, 'UDP checksum verifies');
  });

  for (const [what, dropped] of [
    ['segmentation offload without checksum offload', [C.VIRTIO_NET_F_GUEST_CSUM]],
    ['ECN without segmentation offload', [C.VIRTIO_NET_F_GUEST_TSO4, C.VIRTIO_NET_F_GUEST_TSO6]],
  ] as const) {
    it(`a guest that accepts ${what} (offloads the tap refuses together) gets complete frames, and the device lives`, async () => {
      const offered = (await tapDevice()).h.hello.deviceFeatures;
      await Promise.all(open.splice(0).map((h) => h.close()));
      const { h, d } = await tapDevice({ features: without(offered, ...dropped) });
      d.postRx(16, 2048);
      const s = await socket();
      const payload = randomBytes(321);
      s.send(payload, 5557, GUEST_IP);
      const { r, p } = await receiveWhere(d, isUdpTo(5557));
      if (dropped.includes(C.VIRTIO_NET_F_GUEST_CSUM as never)) assert.equal(r.header[0]! & NEEDS_CSUM, 0, 'no partial checksums without GUEST_CSUM');
      assert.equal(hex(udpOf(p)!.payload), hex(payload));
      assert.equal((await h.stats()).linkUp, 1);
    });
  }

  it('without MRG_RXBUF drops and counts a frame larger than the buffer, and delivers the next', async () => {
    const offered = (await tapDevice()).h.hello.deviceFeatures;
    await Promise.all(open.splice(0).map((h) => h.close()));
    const features = without(offered, C.VIRTIO_NET_F_MRG_RXBUF, C.VIRTIO_NET_F_GUEST_TSO4, C.VIRTIO_NET_F_GUEST_TSO6, C.VIRTIO_NET_F_GUEST_ECN, C.VIRTIO_NET_F_GUEST_UFO);
    const { h, d } = await tapDevice({ features });
    d.postRx(2, 600);
    const s = await socket();
    const big = randomBytes(1000);
    const small = randomBytes(300);
    s.send(big, 5560, GUEST_IP, () => s.send(small, 5560, GUEST_IP));
    const { r, p } = await receiveWhere(d, isUdpTo(5560));
    assert.equal(hex(udpOf(p)!.payload), hex(small));
    assert.equal(r.numBuffers, 1);
    const st = await h.stats();
    assert.equal(st.rxDropped, 1, JSON.stringify(st));
  });

  it('with MRG_RXBUF spreads a frame over several 256-byte buffers', async () => {
    const { d } = await tapDevice();
    d.postRx(48, 256);
    const s = await socket();
    const payload = randomBytes(1400);
    s.send(payload, 5557, GUEST_IP);
    const { r, p } = await receiveWhere(d, isUdpTo(5557));
    assert.equal(r.frame.length, 14 + 20 + 8 + 1400);
    assert.equal(r.numBuffers, Math.ceil((C.NET_HDR_BYTES + r.frame.length) / 256));
    assert.equal(hex(udpOf(p)!.payload), hex(payload));
  });

  it('reads nothing from the tap while no receive buffers are posted, then delivers every frame in order', async () => {
    const { h, d } = await tapDevice();
    const s = await socket();
    const payloads = Array.from({ length: 8 }, () => randomBytes(300));
    for (const pl of payloads) s.send(pl, 5558, GUEST_IP);
    await new Promise((r) => setTimeout(r, 400));
    const idle = await h.stats();
    assert.deepEqual([idle.rxFrames, idle.rxDropped], [0, 0], 'nothing read without buffers');
    d.postRx(32, 2048);
    for (const pl of payloads) {
      const { p } = await receiveWhere(d, isUdpTo(5558));
      assert.equal(hex(udpOf(p)!.payload), hex(pl));
    }
    assert.ok((await h.stats()).rxFrames! >= payloads.length);
  });

  it('sends a 64 KiB TSO frame to the host, which takes all of it (and answers with a RST)', async () => {
    const { h, d } = await tapDevice();
    d.postRx(60, 2048);
    const SEQ = 0x10000000;
    const { frame, header } = tsoFrame(HOST_IP, 9, SEQ, randomBytes(64000), 1448);
    const before = tcpCounters();
    const txBefore = (await h.stats()).txFrames!;
    await d.send(frame, { header });
    // Linux delivers a GSO packet to a local socket lookup whole: a RST for port 9 that acknowledges all 64000 bytes.
    const { p } = await receiveWhere(d, (x) => x.ip?.proto === 6 && x.ip.src === HOST_IP);
    const t = new DataView(p.ip!.l4.buffer, p.ip!.l4.byteOffset, p.ip!.l4.length);
    assert.equal(t.getUint16(2), 40100);
    assert.ok(p.ip!.l4[13]! & 0x04, 'RST');
    assert.equal(t.getUint32(8), SEQ + 64000, 'the RST acknowledges every byte of the frame');
    assert.ok(tcpCounters().InSegs! > before.InSegs!, 'the host stack counted it in');
    const s = await h.stats();
    assert.equal(s.txFrames! - txBefore, 1);
    assert.equal(s.txRefused, 0);
  });

  it('sends a 64 KiB TSO frame that the host segments into 45 checksummed segments of at most gso_size when it forwards it', async () => {
    const { h, d } = await tapDevice();
    const SEQ = 0x20000000;
    const MSS = 1448;
    const payload = randomBytes(64000);
    const { frame, header } = tsoFrame(FAR_IP, 9, SEQ, payload, MSS);
    const buf = new Uint8Array(70000);
    while (libc.readRaw(tap2, buf) > 0); // anything stale
    await d.send(frame, { header });
    const segments = new Map<number, Uint8Array>();
    const deadline = Date.now() + 5000;
    let got = 0;
    while (got < payload.length && Date.now() < deadline) {
      const n = libc.readRaw(tap2, buf);
      if (n <= 0) {
        await new Promise((r) => setTimeout(r, 2));
        continue;
      }
      const p = parse(buf.slice(C.NET_HDR_BYTES, n));
      if (p.ip?.proto !== 6 || p.ip.dst !== FAR_IP) continue;
      assert.equal(p.dst, FAR_MAC);
      const l4 = p.ip.l4;
      const t = new DataView(l4.buffer, l4.byteOffset, l4.length);
      const data = l4.subarray((l4[12]! >> 4) * 4);
      assert.ok(data.length <= MSS, `a segment of ${data.length} bytes`);
      assert.equal(sum16(l4, pseudoSum(ipBytes(GUEST_IP), ipBytes(FAR_IP), 6, l4.length)), 0xffff, `TCP checksum of the segment at ${t.getUint32(4) - SEQ}`);
      segments.set(t.getUint32(4) - SEQ, data);
      got += data.length;
    }
    assert.equal(segments.size, Math.ceil(payload.length / MSS), `segments (${got} of ${payload.length} bytes)`);
    const whole = Buffer.concat([...segments.entries()].sort((a, b) => a[0] - b[0]).map(([, b]) => b));
    assert.ok(whole.equals(payload), 'the segments carry the frame\'s payload byte for byte');
    const s = await h.stats();
    assert.equal(s.txFrames, 1);
    assert.equal(s.txRefused, 0);
  });

  it('refuses a frame whose header the tap rejects (gso_type garbage), counts it, and goes on', async () => {
    const { h, d } = await tapDevice();
    const s = await socket();
    const port = s.address().port;
    let heard = 0;
    s.on('message', () => heard++);
    await d.send(udpFrame(tapMac, 40003, port, randomBytes(100)), { header: netHeader({ gsoType: 0x55, gsoSize: 100, hdrLen: 42 }) });
    const after = await h.stats();
    assert.equal(after.txRefused, 1, JSON.stringify(after));
    const good = randomBytes(64);
    const got = nextMessage(s);
    await d.send(udpFrame(tapMac, 40004, port, good));
    const { msg, rinfo } = await got;
    assert.equal(hex(msg), hex(good));
    assert.equal(rinfo.port, 40004);
    assert.equal(heard, 1, 'the refused frame never reached the host');
    assert.equal((await h.stats()).linkUp, 1);
  });

  it('takes the link down when the tap is removed, and tells the driver', async () => {
    ip('tuntap', 'add', 'dev', TAP3, 'mode', 'tap');
    ip('link', 'set', TAP3, 'up');
    const { h, d } = await tapDevice({}, TAP3);
    d.postRx(4, 2048);
    assert.equal((await h.stats()).linkUp, 1);
    ip('link', 'del', TAP3);
    const m = await h.next('config-changed');
    assert.equal(Buffer.from((m as { config: Uint8Array }).config).readUInt16LE(C.CONFIG.status), 0);
    await d.send(testFrame(60, 1)); // dropped, but the chain comes back
    const st = await h.stats();
    assert.deepEqual([st.linkUp, st.linkDowns], [0, 1]);
    assert.ok(h.alive, 'the device process lives on');
  });
});
