// Unit tests for the 16550A UART: registers, FIFO, interrupts, loopback and
// the flow-controlled host input path.
import assert from 'node:assert/strict';
import { Uart8250, UART_FIFO_SIZE, type Uart8250Options } from '../../../src/core/legacy/uart-8250.js';

const THR = 0, RBR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2, LCR = 3, MCR = 4, LSR = 5, MSR = 6, SCR = 7;

class FakeIrq {
  transitions: boolean[] = [];
  set(level: boolean): void {
    this.transitions.push(level);
  }
  get level(): boolean {
    return this.transitions.at(-1) ?? false;
  }
}

function setup(opts: Partial<Uart8250Options> = {}) {
  const irq = new FakeIrq();
  const out: number[] = [];
  const uart = new Uart8250({ irq, output: (b) => out.push(b), ...opts });
  const rd = (off: number): number => {
    const d = new Uint8Array(1);
    uart.read(off, d);
    return d[0]!;
  };
  const wr = (off: number, v: number): void => uart.write(off, Uint8Array.of(v));
  return { uart, irq, out, rd, wr };
}

describe('Uart8250', () => {
  it('programs the divisor latch through LCR.DLAB without touching IER/RBR', () => {
    const { rd, wr, out } = setup();
    wr(IER, 0x05);
    wr(LCR, 0x83);
    wr(DLL, 0x01);
    wr(DLM, 0x02);
    assert.equal(rd(DLL), 0x01);
    assert.equal(rd(DLM), 0x02);
    assert.deepEqual(out, []);
    wr(LCR, 0x03);
    assert.equal(rd(LCR), 0x03);
    assert.equal(rd(IER), 0x05);
    wr(LCR, 0x83);
    assert.equal(rd(DLL) | (rd(DLM) << 8), 0x0201);
  });

  it('keeps the scratch register', () => {
    const { rd, wr } = setup();
    wr(SCR, 0x5a);
    assert.equal(rd(SCR), 0x5a);
    wr(SCR, 0xa5);
    assert.equal(rd(SCR), 0xa5);
  });

  it('has a quiet reset state', () => {
    const { rd } = setup();
    assert.equal(rd(LSR), 0x60); // THRE | TEMT
    assert.equal(rd(IIR), 0x01);
    assert.equal(rd(IER), 0x00);
    assert.equal(rd(MCR), 0x00);
    assert.equal(rd(MSR), 0xb0); // CTS | DSR | DCD, no deltas
  });

  it('sends THR bytes to output', () => {
    const { wr, out, rd } = setup();
    for (const b of Buffer.from('hi\n')) wr(THR, b);
    assert.deepEqual(out, [0x68, 0x69, 0x0a]);
    assert.equal(rd(LSR) & 0x60, 0x60);
  });

  it('splits a wide access into byte accesses on consecutive ports', () => {
    const { uart, rd } = setup();
    uart.write(SCR - 1, Uint8Array.of(0x00, 0x77)); // MSR write ignored, SCR = 0x77
    assert.equal(rd(SCR), 0x77);
  });

  it('raises THRE when ETBEI is enabled and clears it on reading IIR', () => {
    const { rd, wr, irq } = setup();
    wr(MCR, 0x08); // OUT2
    wr(IER, 0x02);
    assert.equal(irq.level, true);
    assert.equal(rd(IIR), 0x02);
    assert.equal(irq.level, false);
    assert.equal(rd(IIR), 0x01);
    // Each transmitted byte makes THR empty again.
    wr(THR, 0x41);
    assert.equal(irq.level, true);
    assert.equal(rd(IIR), 0x02);
    assert.equal(rd(IIR), 0x01);
    // Re-enabling ETBEI raises it again (Linux's THRE probe relies on this).
    wr(IER, 0x00);
    wr(IER, 0x02);
    assert.equal(rd(IIR), 0x02);
    assert.deepEqual(irq.transitions, [true, false, true, false, true, false]);
  });

  it('reports RX data available, with the FIFO bits when FIFOs are on', () => {
    const { uart, rd, wr, irq } = setup();
    wr(MCR, 0x08);
    wr(IER, 0x01);
    assert.equal(uart.enqueueInput(Uint8Array.of(0x31)), 1);
    assert.equal(irq.level, true);
    assert.equal(rd(IIR), 0x04);
    assert.equal(rd(LSR) & 0x01, 0x01);
    assert.equal(rd(RBR), 0x31);
    assert.equal(irq.level, false);
    assert.equal(rd(IIR), 0x01);
    assert.equal(rd(LSR) & 0x01, 0x00);

    wr(FCR, 0xc7); // enable + clear both, trigger 14
    assert.equal(uart.rxTriggerLevel, 14);
    assert.equal(rd(IIR), 0xc1);
    uart.enqueueInput(Uint8Array.of(0x32));
    assert.equal(rd(IIR), 0xc4); // reported below the trigger level too (simplified timeout)
    assert.equal(rd(RBR), 0x32);
    assert.equal(rd(IIR), 0xc1);
  });

  it('holds 16 bytes in the FIFO, overruns on the 17th, and gives line status priority', () => {
    const { rd, wr, irq, out } = setup();
    wr(FCR, 0x01);
    wr(MCR, 0x18); // LOOP | OUT2: THR bytes arrive at the receiver
    wr(IER, 0x07); // RX data, THRE, line status
    for (let i = 0; i < UART_FIFO_SIZE; i++) wr(THR, 0x40 + i);
    assert.deepEqual(out, []);
    assert.equal(rd(LSR) & 0x03, 0x01); // DR, no OE yet
    wr(THR, 0x99); // overrun: dropped
    assert.equal(irq.level, true);
    assert.equal(rd(IIR), 0xc6); // line status beats RX data and THRE
    const lsr = rd(LSR);
    assert.equal(lsr & 0x63, 0x63); // DR | OE | THRE | TEMT
    assert.equal(rd(LSR) & 0x02, 0x00); // OE cleared by the read
    assert.equal(rd(IIR), 0xc4); // now RX data
    const got: number[] = [];
    while (rd(LSR) & 0x01) got.push(rd(RBR));
    assert.deepEqual(got, Array.from({ length: 16 }, (_, i) => 0x40 + i));
    assert.equal(rd(IIR), 0xc2); // THRE, last
    assert.equal(rd(IIR), 0xc1);
    assert.equal(irq.level, false);
  });

  it('overruns the single RBR when FIFOs are off', () => {
    const { rd, wr } = setup();
    wr(MCR, 0x10);
    wr(THR, 1);
    wr(THR, 2);
    assert.equal(rd(LSR) & 0x03, 0x03);
    assert.equal(rd(RBR), 1);
  });

  it('clears the receive FIFO through FCR', () => {
    const { uart, rd, wr } = setup();
    wr(FCR, 0x01);
    assert.equal(uart.enqueueInput(Uint8Array.of(1, 2, 3)), 3);
    assert.equal(rd(LSR) & 0x01, 0x01);
    wr(FCR, 0x03);
    assert.equal(rd(LSR) & 0x01, 0x00);
    // Turning FIFOs off also empties them.
    uart.enqueueInput(Uint8Array.of(4));
    wr(FCR, 0x00);
    assert.equal(rd(LSR) & 0x01, 0x00);
    assert.equal(rd(IIR), 0x01);
  });

  it('gates the IRQ line with MCR.OUT2', () => {
    const { uart, rd, wr, irq } = setup();
    wr(IER, 0x01);
    uart.enqueueInput(Uint8Array.of(0x41));
    assert.deepEqual(irq.transitions, []);
    assert.equal(rd(IIR), 0x04); // pending, just not delivered
    wr(MCR, 0x08);
    assert.deepEqual(irq.transitions, [true]);
    wr(MCR, 0x03); // DTR | RTS without OUT2
    assert.deepEqual(irq.transitions, [true, false]);
    wr(MCR, 0x0b);
    rd(RBR);
    assert.deepEqual(irq.transitions, [true, false, true, false]);
    assert.equal(uart.irqAsserted, false);
  });

  it('loops THR to RBR and MCR to MSR in loopback mode', () => {
    const { rd, wr, out, irq } = setup();
    wr(MCR, 0x1a); // LOOP | OUT2 | RTS
    assert.equal(rd(MSR) & 0xf0, 0x90); // DCD | CTS, as Linux's probe expects
    wr(MCR, 0x1f);
    assert.equal(rd(MSR), 0xf0 | 0x02); // all inputs; DSR changed
    wr(MCR, 0x1b); // OUT1 off: RI trailing edge
    assert.equal(rd(MSR), 0xb0 | 0x04);
    wr(THR, 0x55);
    assert.deepEqual(out, []);
    assert.equal(rd(RBR), 0x55);
    // Modem status interrupt from a loopback change.
    wr(IER, 0x08);
    assert.equal(rd(IIR), 0x01);
    wr(MCR, 0x19); // RTS off → DCTS
    assert.equal(irq.level, true);
    assert.equal(rd(IIR), 0x00);
    assert.equal(rd(MSR), 0xa0 | 0x01);
    assert.equal(rd(IIR), 0x01);
    assert.equal(irq.level, false);
    // Leaving loopback: bytes go to the line again.
    wr(MCR, 0x08);
    wr(THR, 0x66);
    assert.deepEqual(out, [0x66]);
    assert.equal(rd(MSR) & 0xf0, 0xb0);
  });

  it('keeps host input in a pending queue that feeds the FIFO as the guest drains it', () => {
    let spaceCalls = 0;
    const { uart, rd, wr, irq } = setup({ inputBufferBytes: 8, onRxSpace: () => spaceCalls++ });
    wr(FCR, 0x01);
    wr(MCR, 0x08);
    wr(IER, 0x01);
    const input = Uint8Array.from({ length: 30 }, (_, i) => i);
    assert.equal(uart.inputSpace, 24);
    const first = uart.enqueueInput(input);
    assert.equal(first, 24); // 16 in the FIFO, 8 pending
    assert.equal(uart.inputSpace, 0);
    assert.equal(rd(LSR) & 0x02, 0); // never an overrun
    const got: number[] = [];
    for (let i = 0; i < 3; i++) got.push(rd(RBR));
    assert.equal(spaceCalls, 0); // 3 free, below half of 8
    got.push(rd(RBR));
    assert.equal(spaceCalls, 1);
    assert.equal(uart.enqueueInput(input.subarray(first)), 4);
    assert.equal(uart.enqueueInput(input.subarray(first + 4)), 0);
    while (rd(LSR) & 0x01) got.push(rd(RBR));
    assert.equal(spaceCalls, 2);
    assert.equal(uart.enqueueInput(input.subarray(first + 4)), 2);
    while (rd(LSR) & 0x01) got.push(rd(RBR));
    assert.deepEqual(got, Array.from(input));
    assert.equal(irq.level, false);
    assert.equal(uart.inputSpace, 24);
  });

  it('feeds pending input one byte at a time when FIFOs are off', () => {
    const { uart, rd } = setup();
    assert.equal(uart.enqueueInput(Buffer.from('abc')), 3);
    const got: number[] = [];
    while (rd(LSR) & 0x01) got.push(rd(RBR));
    assert.equal(Buffer.from(got).toString(), 'abc');
  });

  it('holds host input back while in loopback mode', () => {
    const { uart, rd, wr } = setup();
    wr(MCR, 0x10);
    assert.equal(uart.enqueueInput(Uint8Array.of(0x41)), 1);
    assert.equal(rd(LSR) & 0x01, 0);
    wr(MCR, 0x00);
    assert.equal(rd(RBR), 0x41);
  });

  it('can refuse all host input beyond the FIFO when it has no pending queue', () => {
    let spaceCalls = 0;
    const { uart, rd, wr } = setup({ inputBufferBytes: 0, onRxSpace: () => spaceCalls++ });
    wr(FCR, 0x01);
    assert.equal(uart.enqueueInput(new Uint8Array(20)), 16);
    rd(RBR);
    assert.equal(spaceCalls, 1);
    assert.equal(uart.enqueueInput(new Uint8Array(4)), 1);
  });

  it('returns to the power-on state on reset', () => {
    const { uart, rd, wr, irq } = setup();
    wr(MCR, 0x08);
    wr(IER, 0x02);
    assert.equal(irq.level, true);
    uart.reset();
    assert.equal(irq.level, false);
    assert.equal(rd(IER), 0);
    assert.equal(rd(LSR), 0x60);
    assert.equal(rd(IIR), 0x01);
  });
});
