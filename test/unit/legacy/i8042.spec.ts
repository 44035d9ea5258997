// Unit tests for the i8042 keyboard controller: commands, status, reset.
import assert from 'node:assert/strict';
import { I8042 } from '../../../src/core/legacy/i8042.js';

const DATA = 0, CMD = 4;

function setup() {
  let resets = 0;
  const irqLevels: boolean[] = [];
  const kbc = new I8042({ onReset: () => resets++, irq: { set: (l) => irqLevels.push(l) } });
  const rd = (off: number): number => {
    const d = new Uint8Array(1);
    kbc.read(off, d);
    return d[0]!;
  };
  const wr = (off: number, v: number): void => kbc.write(off, Uint8Array.of(v));
  return { kbc, rd, wr, resets: () => resets, irqLevels };
}

describe('I8042', () => {
  it('calls onReset for the pulse-reset command 0xFE only', () => {
    const t = setup();
    t.wr(CMD, 0xff); // pulses nothing
    assert.equal(t.resets(), 0);
    t.wr(CMD, 0xfe);
    assert.equal(t.resets(), 1);
  });

  it('calls onReset when the output port is written with bit 0 clear', () => {
    const t = setup();
    t.wr(CMD, 0xd0);
    assert.equal(t.rd(DATA) & 0x03, 0x03);
    t.wr(CMD, 0xd1);
    t.wr(DATA, 0x03);
    assert.equal(t.resets(), 0);
    t.wr(CMD, 0xd0);
    assert.equal(t.rd(DATA), 0x03);
    t.wr(CMD, 0xd1);
    t.wr(DATA, 0x02);
    assert.equal(t.resets(), 1);
  });

  it('passes its self test and interface test', () => {
    const t = setup();
    assert.equal(t.rd(CMD) & 0x01, 0);
    t.wr(CMD, 0xaa);
    assert.equal(t.rd(CMD) & 0x0d, 0x0d); // OBF | SYS | last write was a command
    assert.equal(t.rd(DATA), 0x55);
    assert.equal(t.rd(CMD) & 0x01, 0);
    t.wr(CMD, 0xab);
    assert.equal(t.rd(DATA), 0x00);
  });

  it('reads and writes the command byte, and keyboard enable/disable updates it', () => {
    const t = setup();
    t.wr(CMD, 0x20);
    assert.equal(t.rd(DATA), 0x45);
    t.wr(CMD, 0x60);
    t.wr(DATA, 0x74);
    assert.equal(t.rd(CMD) & 0x08, 0); // last write was data
    assert.equal(t.kbc.commandByte, 0x74);
    t.wr(CMD, 0xae);
    t.wr(CMD, 0x20);
    assert.equal(t.rd(DATA), 0x64);
    t.wr(CMD, 0xad);
    t.wr(CMD, 0x20);
    assert.equal(t.rd(DATA), 0x74);
  });

  it('raises IRQ 1 for a reply only while keyboard interrupts are enabled', () => {
    const t = setup();
    t.wr(CMD, 0xaa);
    t.rd(DATA);
    assert.deepEqual(t.irqLevels, [true, false]);
    t.wr(CMD, 0x60);
    t.wr(DATA, 0x44);
    t.wr(CMD, 0xaa);
    t.rd(DATA);
    assert.deepEqual(t.irqLevels, [true, false]);
  });

  it('reads 0xff at the ports between data and command, and ignores writes there', () => {
    const t = setup();
    t.wr(1, 0xfe);
    assert.equal(t.resets(), 0);
    assert.equal(t.rd(2), 0xff);
  });
});
