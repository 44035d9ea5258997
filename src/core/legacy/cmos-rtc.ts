// The CMOS RTC (MC146818) and its 128 bytes of CMOS RAM at ports 0x70
// (index; bit 7 is the NMI mask, ignored) and 0x71 (data), one device of 2
// ports. It owns: the time and date registers, read in BCD or binary and in
// 12- or 24-hour form as status register B says; the century byte (0x32);
// status registers A–D; the guest setting the clock (kept as an offset from
// the host clock); and the memory-size bytes a PC BIOS leaves in CMOS RAM.
//
// Modelling choices:
// - The time comes from an injected clock (milliseconds since the epoch,
//   default the host's `Date.now()`), read as UTC, and advances with it.
//   Update-in-progress (status A bit 7) never reads as set: every read sees
//   a consistent time.
// - Setting the clock: while status B's SET bit is on, the time registers
//   are frozen and guest writes go into them; clearing SET starts the clock
//   from them. A write to a time register without SET takes effect at once.
//   Either way the guest's time is kept as an offset from the injected clock.
// - The weekday register is derived from the date; writes to it are ignored.
// - No interrupts: the alarm registers (0x01, 0x03, 0x05) are plain storage,
//   the PIE/AIE/UIE bits in B are stored but nothing fires, C reads 0.

import type { BusDevice } from '../bus.js';

/** Base port: index at 0x70, data at 0x71. */
export const CMOS_PORT = 0x70;
/** Number of ports the device spans. */
export const CMOS_PORT_COUNT = 2;

const OFFSET_INDEX = 0;
const OFFSET_DATA = 1;

// Register indices.
const REG_SECONDS = 0x00;
const REG_MINUTES = 0x02;
const REG_HOURS = 0x04;
const REG_WEEKDAY = 0x06;
const REG_DAY = 0x07;
const REG_MONTH = 0x08;
const REG_YEAR = 0x09;
const REG_STATUS_A = 0x0a;
const REG_STATUS_B = 0x0b;
const REG_STATUS_C = 0x0c;
const REG_STATUS_D = 0x0d;
const REG_CENTURY = 0x32;

// Memory-size bytes (PC BIOS conventions).
const REG_BASE_MEM_LO = 0x15; // base memory in KiB
const REG_EXT_MEM_LO = 0x17; // memory above 1 MiB in KiB (max 0xffff)
const REG_CHECKSUM_HI = 0x2e; // sum of 0x10–0x2d, big-endian
const REG_EXT_MEM2_LO = 0x30; // same as 0x17/0x18
const REG_MEM_ABOVE_16M_LO = 0x34; // memory 16 MiB–4 GiB in 64 KiB units
const REG_MEM_ABOVE_4G = 0x5b; // memory above 4 GiB in 64 KiB units, 3 bytes

// Status register A: divider 010 (32.768 kHz time base), rate 0110 (1024 Hz).
const STATUS_A_DEFAULT = 0x26;
const STATUS_A_UIP = 0x80;
// Status register B.
const STATUS_B_SET = 0x80;
const STATUS_B_DM_BINARY = 0x04;
const STATUS_B_24H = 0x02;
const STATUS_B_DEFAULT = STATUS_B_24H; // BCD, 24-hour
// Status register D: valid RAM and time (battery good).
const STATUS_D_VRT = 0x80;

const KiB = 1024;
const MiB = 1024 * KiB;

/** A broken-down UTC time. */
interface TimeFields {
  second: number;
  minute: number;
  hour: number;
  /** 0 = Sunday. */
  weekday: number;
  day: number;
  /** 1–12. */
  month: number;
  /** Full year, e.g. 2025. */
  year: number;
}

function fieldsAt(ms: number): TimeFields {
  const d = new Date(ms);
  return {
    second: d.getUTCSeconds(),
    minute: d.getUTCMinutes(),
    hour: d.getUTCHours(),
    weekday: d.getUTCDay(),
    day: d.getUTCDate(),
    month: d.getUTCMonth() + 1,
    year: d.getUTCFullYear(),
  };
}

/** Milliseconds since the epoch of `f`; out-of-range fields carry over. */
function msOf(f: TimeFields): number {
  const d = new Date(0);
  d.setUTCFullYear(f.year, f.month - 1, f.day);
  d.setUTCHours(f.hour, f.minute, f.second, 0);
  return d.getTime();
}

function toBcd(v: number): number {
  return (Math.floor(v / 10) % 10) * 16 + (v % 10);
}

function fromBcd(v: number): number {
  return (v >> 4) * 10 + (v & 0x0f);
}

export interface CmosRtcOptions {
  /** Guest RAM below 4 GiB, in bytes. */
  ramBelow4G?: number;
  /** Guest RAM above 4 GiB, in bytes. */
  ramAbove4G?: number;
  /** Milliseconds since the epoch (UTC); default `Date.now`. */
  clock?: () => number;
}

export class CmosRtc implements BusDevice {
  private readonly clock: () => number;
  private readonly ram = new Uint8Array(128);
  private index = 0;
  /** Guest time minus clock time, in ms. */
  private offsetMs = 0;
  /** The time registers while status B's SET bit holds them. */
  private frozen: TimeFields | undefined;

  constructor(options: CmosRtcOptions = {}) {
    this.clock = options.clock ?? Date.now;
    this.ram[REG_STATUS_A] = STATUS_A_DEFAULT;
    this.ram[REG_STATUS_B] = STATUS_B_DEFAULT;
    this.setMemorySize(options.ramBelow4G ?? 0, options.ramAbove4G ?? 0);
  }

  /** The guest's current time in ms since the epoch (whole seconds while frozen). */
  get guestTime(): number {
    return this.frozen ? msOf(this.frozen) : this.clock() + this.offsetMs;
  }

  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const port = offset + i;
      // The index port is write-only.
      data[i] = port === OFFSET_DATA ? this.readRegister(this.index) : 0xff;
    }
  }

  write(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) {
      const port = offset + i;
      if (port === OFFSET_INDEX) this.index = data[i]! & 0x7f;
      else if (port === OFFSET_DATA) this.writeRegister(this.index, data[i]!);
    }
  }

  private get binary(): boolean {
    return (this.ram[REG_STATUS_B]! & STATUS_B_DM_BINARY) !== 0;
  }

  private get hours24(): boolean {
    return (this.ram[REG_STATUS_B]! & STATUS_B_24H) !== 0;
  }

  private encode(v: number): number {
    return this.binary ? v : toBcd(v);
  }

  private decode(v: number): number {
    return this.binary ? v : fromBcd(v);
  }

  private encodeHour(h: number): number {
    if (this.hours24) return this.encode(h);
    const h12 = h % 12 === 0 ? 12 : h % 12;
    return this.encode(h12) | (h >= 12 ? 0x80 : 0);
  }

  private decodeHour(v: number): number {
    if (this.hours24) return this.decode(v & 0x7f);
    return (this.decode(v & 0x7f) % 12) + (v & 0x80 ? 12 : 0);
  }

  private now(): TimeFields {
    return this.frozen ?? fieldsAt(this.clock() + this.offsetMs);
  }

  private readRegister(index: number): number {
    switch (index) {
      case REG_SECONDS:
        return this.encode(this.now().second);
      case REG_MINUTES:
        return this.encode(this.now().minute);
      case REG_HOURS:
        return this.encodeHour(this.now().hour);
      case REG_WEEKDAY:
        return this.encode(this.now().weekday + 1);
      case REG_DAY:
        return this.encode(this.now().day);
      case REG_MONTH:
        return this.encode(this.now().month);
      case REG_YEAR:
        return this.encode(this.now().year % 100);
      case REG_CENTURY:
        return this.encode(Math.floor(this.now().year / 100));
      case REG_STATUS_A:
        return this.ram[REG_STATUS_A]! & ~STATUS_A_UIP;
      case REG_STATUS_C:
        return 0; // no interrupt flags: nothing fires
      case REG_STATUS_D:
        return STATUS_D_VRT;
      default:
        return this.ram[index]!;
    }
  }

  private writeRegister(index: number, value: number): void {
    switch (index) {
      case REG_SECONDS:
      case REG_MINUTES:
      case REG_HOURS:
      case REG_DAY:
      case REG_MONTH:
      case REG_YEAR:
      case REG_CENTURY:
        this.setTimeField(index, value);
        break;
      case REG_WEEKDAY:
        break; // derived from the date
      case REG_STATUS_A:
        this.ram[REG_STATUS_A] = value & ~STATUS_A_UIP;
        break;
      case REG_STATUS_B:
        this.writeStatusB(value);
        break;
      case REG_STATUS_C:
      case REG_STATUS_D:
        break; // read-only
      default:
        this.ram[index] = value;
        break;
    }
  }

  private writeStatusB(value: number): void {
    const wasSet = (this.ram[REG_STATUS_B]! & STATUS_B_SET) !== 0;
    const isSet = (value & STATUS_B_SET) !== 0;
    if (!wasSet && isSet) {
      this.frozen = fieldsAt(this.clock() + this.offsetMs);
    } else if (wasSet && !isSet && this.frozen) {
      // The clock restarts from the written time, at the start of its second.
      this.offsetMs = msOf(this.frozen) - this.clock();
      this.frozen = undefined;
    }
    this.ram[REG_STATUS_B] = value;
  }

  private setTimeField(index: number, value: number): void {
    const before = this.now();
    const f = { ...before };
    switch (index) {
      case REG_SECONDS:
        f.second = this.decode(value);
        break;
      case REG_MINUTES:
        f.minute = this.decode(value);
        break;
      case REG_HOURS:
        f.hour = this.decodeHour(value);
        break;
      case REG_DAY:
        f.day = this.decode(value);
        break;
      case REG_MONTH:
        f.month = this.decode(value);
        break;
      case REG_YEAR:
        f.year = Math.floor(f.year / 100) * 100 + this.decode(value);
        break;
      case REG_CENTURY:
        f.year = this.decode(value) * 100 + (f.year % 100);
        break;
    }
    if (this.frozen) {
      // Held as written; the date is checked only when the clock restarts.
      this.frozen = f;
    } else {
      this.offsetMs += msOf(f) - msOf(before);
    }
  }

  /** Fills the memory-size bytes as a PC BIOS would. */
  private setMemorySize(below4G: number, above4G: number): void {
    const put16 = (index: number, v: number): void => {
      this.ram[index] = v & 0xff;
      this.ram[index + 1] = (v >> 8) & 0xff;
    };
    put16(REG_BASE_MEM_LO, below4G >= MiB ? 640 : Math.min(640, Math.floor(below4G / KiB)));
    const extKiB = Math.min(0xffff, Math.max(0, Math.floor((below4G - MiB) / KiB)));
    put16(REG_EXT_MEM_LO, extKiB);
    put16(REG_EXT_MEM2_LO, extKiB);
    put16(REG_MEM_ABOVE_16M_LO, Math.min(0xffff, Math.max(0, Math.floor((below4G - 16 * MiB) / (64 * KiB)))));
    const high = Math.min(0xffffff, Math.floor(above4G / (64 * KiB)));
    this.ram[REG_MEM_ABOVE_4G] = high & 0xff;
    this.ram[REG_MEM_ABOVE_4G + 1] = (high >> 8) & 0xff;
    this.ram[REG_MEM_ABOVE_4G + 2] = (high >> 16) & 0xff;
    let sum = 0;
    for (let i = 0x10; i <= 0x2d; i++) sum += this.ram[i]!;
    this.ram[REG_CHECKSUM_HI] = (sum >> 8) & 0xff;
    this.ram[REG_CHECKSUM_HI + 1] = sum & 0xff;
  }
}
