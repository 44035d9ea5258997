// Unit tests for the CMOS RTC: time formats, century, status registers,
// the guest setting the clock, and the BIOS memory-size bytes.
import assert from 'node:assert/strict';
import { CmosRtc, type CmosRtcOptions } from '../../../src/core/legacy/cmos-rtc.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

function setup(startMs: number, opts: CmosRtcOptions = {}) {
  let now = startMs;
  const rtc = new CmosRtc({ clock: () => now, ...opts });
  const rd = (index: number): number => {
    rtc.write(0, Uint8Array.of(index | 0x80)); // NMI mask bit is ignored
    const d = new Uint8Array(1);
    rtc.read(1, d);
    return d[0]!;
  };
  const wr = (index: number, v: number): void => {
    rtc.write(0, Uint8Array.of(index));
    rtc.write(1, Uint8Array.of(v));
  };
  return { rtc, rd, wr, advance: (ms: number) => (now += ms) };
}

// Tuesday 2025-03-04 17:05:09 UTC
const T = Date.UTC(2025, 2, 4, 17, 5, 9, 250);

describe('CmosRtc', () => {
  it('reads the time in BCD, 24-hour, by default', () => {
    const { rd } = setup(T);
    assert.equal(rd(0x0b), 0x02);
    assert.deepEqual([0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map(rd), [0x09, 0x05, 0x17, 0x03, 0x04, 0x03, 0x25, 0x20]);
  });

  it('reads binary when the guest sets DM, and 12-hour with the PM bit', () => {
    const { rd, wr } = setup(T);
    wr(0x0b, 0x06);
    assert.deepEqual([0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32].map(rd), [9, 5, 17, 4, 3, 25, 20]);
    wr(0x0b, 0x04); // binary, 12-hour
    assert.equal(rd(0x04), 0x80 | 5);
    wr(0x0b, 0x00); // BCD, 12-hour
    assert.equal(rd(0x04), 0x85);
  });

  it('reads 12 AM and 12 PM as 12', () => {
    const midnight = setup(Date.UTC(2024, 0, 1, 0, 30));
    midnight.wr(0x0b, 0x00);
    assert.equal(midnight.rd(0x04), 0x12);
    const noon = setup(Date.UTC(2024, 0, 1, 12, 30));
    noon.wr(0x0b, 0x00);
    assert.equal(noon.rd(0x04), 0x92);
  });

  it('reads the century from the clock', () => {
    const { rd } = setup(Date.UTC(1999, 11, 31, 23, 59, 59));
    assert.equal(rd(0x32), 0x19);
    assert.equal(rd(0x09), 0x99);
  });

  it('has status A with no update in progress, D valid, C empty', () => {
    const { rd, wr } = setup(T);
    assert.equal(rd(0x0a), 0x26);
    wr(0x0a, 0xa6);
    assert.equal(rd(0x0a) & 0x80, 0);
    assert.equal(rd(0x0d), 0x80);
    assert.equal(rd(0x0c), 0x00);
  });

  it('advances with the clock', () => {
    const { rd, advance } = setup(T);
    advance(61_000);
    assert.equal(rd(0x00), 0x10);
    assert.equal(rd(0x02), 0x06);
  });

  it('lets the guest set the time under SET and keeps counting from it', () => {
    const { rtc, rd, wr, advance } = setup(T);
    // Linux's order: year first, then month, day, hours, minutes, seconds.
    // From 4 March, writing February before the day must not roll over.
    wr(0x0b, 0x82);
    wr(0x09, 0x30);
    wr(0x08, 0x02);
    advance(5_000); // frozen while SET is on
    assert.equal(rd(0x00), 0x09);
    wr(0x07, 0x28);
    wr(0x04, 0x23);
    wr(0x02, 0x59);
    wr(0x00, 0x58);
    wr(0x32, 0x20);
    wr(0x0b, 0x02);
    assert.equal(rtc.guestTime, Date.UTC(2030, 1, 28, 23, 59, 58));
    advance(3_000);
    assert.deepEqual([0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09].map(rd), [0x01, 0x00, 0x00, 0x06, 0x01, 0x03, 0x30]);
  });

  it('applies a time write without SET at once', () => {
    const { rd, wr, advance } = setup(T);
    wr(0x04, 0x08);
    assert.equal(rd(0x04), 0x08);
    assert.equal(rd(0x02), 0x05);
    advance(2_000);
    assert.equal(rd(0x00), 0x11);
  });

  it('decodes binary 12-hour writes', () => {
    const { rd, wr } = setup(T);
    wr(0x0b, 0x06);
    wr(0x0b, 0x04); // binary, 12-hour
    wr(0x04, 0x80 | 11); // 11 PM
    wr(0x0b, 0x06);
    assert.equal(rd(0x04), 23);
  });

  it('keeps CMOS RAM and alarm bytes', () => {
    const { rd, wr } = setup(T);
    wr(0x01, 0x30);
    wr(0x40, 0xab);
    wr(0x7f, 0xcd);
    assert.equal(rd(0x01), 0x30);
    assert.equal(rd(0x40), 0xab);
    assert.equal(rd(0x7f), 0xcd);
  });

  it('fills the memory-size bytes as a BIOS does', () => {
    const { rd } = setup(T, { ramBelow4G: 3 * GiB, ramAbove4G: 5 * GiB });
    assert.equal(rd(0x15) | (rd(0x16) << 8), 640);
    assert.equal(rd(0x17) | (rd(0x18) << 8), 0xffff);
    assert.equal(rd(0x30) | (rd(0x31) << 8), 0xffff);
    assert.equal(rd(0x34) | (rd(0x35) << 8), (3 * GiB - 16 * MiB) / 65536);
    assert.equal(rd(0x5b) | (rd(0x5c) << 8) | (rd(0x5d) << 16), (5 * GiB) / 65536);
    let sum = 0;
    for (let i = 0x10; i <= 0x2d; i++) sum += rd(i);
    assert.equal((rd(0x2e) << 8) | rd(0x2f), sum);
    const small = setup(T, { ramBelow4G: 8 * MiB });
    assert.equal(small.rd(0x17) | (small.rd(0x18) << 8), 7 * 1024);
    assert.equal(small.rd(0x34) | (small.rd(0x35) << 8), 0);
  });

  it('reads 0xff from the write-only index port', () => {
    const { rtc } = setup(T);
    const d = new Uint8Array(1);
    rtc.read(0, d);
    assert.equal(d[0], 0xff);
  });
});
