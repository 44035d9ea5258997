// The 16550A UART (COM1: 8 ports at 0x3f8, IRQ 4): its register file
// (RBR/THR, IER, IIR/FCR, LCR with the divisor latch, MCR, LSR, MSR, SCR),
// the 16-byte receive FIFO, interrupt identification and priority, loopback
// mode, OUT2 gating of the interrupt line as on a PC, and the flow-controlled
// path that feeds host console input into the receiver.
//
// Modelling choices (where the emulation is simpler than the chip):
// - Transmission is instant: a THR write goes straight to `output(byte)`
//   (or, in loopback, into the receive FIFO), so THR and the transmitter are
//   always empty (LSR.THRE and LSR.TEMT are always set). The transmit FIFO
//   therefore never holds anything; FCR's "clear TX FIFO" has nothing to do.
// - Receive trigger level (FCR bits 6-7) is kept but not used for the
//   interrupt: the chip raises "RX data available" (IIR 0x04) at the trigger
//   level and a "character timeout" (IIR 0x0C) a few character times after
//   data stops below it. We report RX data available whenever the FIFO holds
//   data; drivers treat both causes the same way.
// - There are no parity, framing or break errors; the only line status
//   condition is overrun (OE), which happens when a byte arrives while the
//   receive FIFO is full (the byte is dropped and OE is set until LSR is read).
// - The IRQ output is (an enabled interrupt is pending) && MCR.OUT2, in
//   loopback mode too.
//
// Host input is flow-controlled so a paste into the console is not lost:
// `enqueueInput` takes bytes into a bounded pending queue (default 4 KiB)
// that feeds the receive FIFO whenever the guest drains it. It returns how
// many bytes it took; when it could not take them all, `onRxSpace` is called
// once the pending queue has room again (half of it free), and the caller
// offers the rest then. Host input therefore never overruns the FIFO. While
// the UART is in loopback mode its receiver is disconnected from the line, so
// host input waits in the pending queue.

import type { BusDevice, IrqLine } from '../bus.js';

/** Base port of COM1. */
export const COM1_PORT = 0x3f8;
/** ISA IRQ of COM1. */
export const COM1_IRQ = 4;
/** Number of ports the UART decodes. */
export const UART_PORT_COUNT = 8;
/** Depth of the 16550A's receive FIFO. */
export const UART_FIFO_SIZE = 16;

// Register offsets.
const REG_DATA = 0; // RBR (read) / THR (write); DLL when LCR.DLAB
const REG_IER = 1; // DLM when LCR.DLAB
const REG_IIR_FCR = 2;
const REG_LCR = 3;
const REG_MCR = 4;
const REG_LSR = 5;
const REG_MSR = 6;
const REG_SCR = 7;

// IER bits.
const IER_ERBFI = 0x01; // received data available
const IER_ETBEI = 0x02; // THR empty
const IER_ELSI = 0x04; // receiver line status
const IER_EDSSI = 0x08; // modem status

// IIR values.
const IIR_NONE = 0x01;
const IIR_LINE_STATUS = 0x06;
const IIR_RX_DATA = 0x04;
const IIR_THR_EMPTY = 0x02;
const IIR_MODEM_STATUS = 0x00;
const IIR_FIFO_ENABLED = 0xc0;

// FCR bits.
const FCR_ENABLE = 0x01;
const FCR_CLEAR_RX = 0x02;
const RX_TRIGGER_LEVELS = [1, 4, 8, 14] as const;

const LCR_DLAB = 0x80;

// MCR bits.
const MCR_DTR = 0x01;
const MCR_RTS = 0x02;
const MCR_OUT1 = 0x04;
const MCR_OUT2 = 0x08;
const MCR_LOOP = 0x10;
const MCR_MASK = 0x1f;

// LSR bits.
const LSR_DR = 0x01;
const LSR_OE = 0x02;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;

// MSR bits.
const MSR_DCTS = 0x01;
const MSR_DDSR = 0x02;
const MSR_TERI = 0x04;
const MSR_DDCD = 0x08;
const MSR_CTS = 0x10;
const MSR_DSR = 0x20;
const MSR_RI = 0x40;
const MSR_DCD = 0x80;

/** Divisor after reset: 12, i.e. 9600 baud from the PC's 1.8432 MHz clock. */
const DEFAULT_DIVISOR = 12;
const DEFAULT_INPUT_BUFFER = 4096;

/** A fixed-capacity byte queue. */
class ByteQueue {
  private readonly buf: Uint8Array;
  private head = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    this.buf = new Uint8Array(Math.max(capacity, 1));
  }

  get length(): number {
    return this.count;
  }

  push(byte: number): void {
    this.buf[(this.head + this.count) % this.capacity] = byte;
    this.count++;
  }

  shift(): number {
    const byte = this.buf[this.head]!;
    this.head = (this.head + 1) % this.capacity;
    this.count--;
    return byte;
  }

  clear(): void {
    this.head = 0;
    this.count = 0;
  }
}

export interface Uart8250Options {
  /** The interrupt input the UART drives (IRQ 4 for COM1). */
  irq: IrqLine;
  /** Receives each transmitted byte. */
  output: (byte: number) => void;
  /** Called when `enqueueInput` has room again after it refused bytes. */
  onRxSpace?: () => void;
  /** Size of the pending queue in front of the receive FIFO; default 4096. */
  inputBufferBytes?: number;
}

export class Uart8250 implements BusDevice {
  private readonly irq: IrqLine;
  private readonly output: (byte: number) => void;
  /** Called when `enqueueInput` has room again after it refused bytes. */
  onRxSpace: (() => void) | undefined;

  private readonly rxFifo = new ByteQueue(UART_FIFO_SIZE);
  private readonly pending: ByteQueue;
  private waitingForSpace = false;

  private divisor = DEFAULT_DIVISOR;
  private ier = 0;
  private fifoEnabled = false;
  private rxTrigger: number = RX_TRIGGER_LEVELS[0];
  private lcr = 0;
  private mcr = 0;
  private overrun = false;
  /** THR-empty interrupt source is latched (cleared by IIR read or THR write). */
  private threPending = false;
  /** MSR bits 4-7 (modem inputs) and 0-3 (deltas). */
  private msrInputs = MSR_CTS | MSR_DSR | MSR_DCD;
  private msrDeltas = 0;
  private scr = 0;
  private irqLevel = false;

  constructor(options: Uart8250Options) {
    this.irq = options.irq;
    this.output = options.output;
    this.onRxSpace = options.onRxSpace;
    const size = options.inputBufferBytes ?? DEFAULT_INPUT_BUFFER;
    if (!Number.isInteger(size) || size < 0) throw new RangeError('inputBufferBytes must be a non-negative integer');
    this.pending = new ByteQueue(size);
  }

  /** Returns the UART to its power-on state; pending host input is discarded. */
  reset(): void {
    this.rxFifo.clear();
    this.pending.clear();
    this.divisor = DEFAULT_DIVISOR;
    this.ier = 0;
    this.fifoEnabled = false;
    this.rxTrigger = RX_TRIGGER_LEVELS[0];
    this.lcr = 0;
    this.mcr = 0;
    this.overrun = false;
    this.threPending = false;
    this.msrInputs = MSR_CTS | MSR_DSR | MSR_DCD;
    this.msrDeltas = 0;
    this.scr = 0;
    this.updateIrq();
    this.notifySpace();
  }

  /** Whether the IRQ line is currently asserted. */
  get irqAsserted(): boolean {
    return this.irqLevel;
  }

  /** Receive FIFO trigger level the guest selected (1, 4, 8 or 14). */
  get rxTriggerLevel(): number {
    return this.rxTrigger;
  }

  /** How many bytes `enqueueInput` would take right now. */
  get inputSpace(): number {
    const fifoRoom = this.pending.length === 0 && !this.loopback ? this.rxCapacity - this.rxFifo.length : 0;
    return fifoRoom + (this.pending.capacity - this.pending.length);
  }

  /**
   * Offers host input to the receiver. Returns how many leading bytes of
   * `bytes` were taken; if fewer than all, `onRxSpace` fires once there is
   * room again.
   */
  enqueueInput(bytes: Uint8Array): number {
    let taken = 0;
    while (taken < bytes.length) {
      if (this.pending.length === 0 && !this.loopback && this.rxFifo.length < this.rxCapacity) {
        this.rxFifo.push(bytes[taken]!);
      } else if (this.pending.length < this.pending.capacity) {
        this.pending.push(bytes[taken]!);
      } else {
        break;
      }
      taken++;
    }
    if (taken < bytes.length) this.waitingForSpace = true;
    this.updateIrq();
    return taken;
  }

  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = this.readRegister(offset + i);
  }

  write(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) this.writeRegister(offset + i, data[i]!);
  }

  private get loopback(): boolean {
    return (this.mcr & MCR_LOOP) !== 0;
  }

  private get dlab(): boolean {
    return (this.lcr & LCR_DLAB) !== 0;
  }

  /** The receive FIFO holds 16 bytes with FIFOs on, one (the RBR) without. */
  private get rxCapacity(): number {
    return this.fifoEnabled ? UART_FIFO_SIZE : 1;
  }

  private readRegister(offset: number): number {
    switch (offset) {
      case REG_DATA:
        return this.dlab ? this.divisor & 0xff : this.readRbr();
      case REG_IER:
        return this.dlab ? this.divisor >> 8 : this.ier;
      case REG_IIR_FCR:
        return this.readIir();
      case REG_LCR:
        return this.lcr;
      case REG_MCR:
        return this.mcr;
      case REG_LSR:
        return this.readLsr();
      case REG_MSR:
        return this.readMsr();
      case REG_SCR:
        return this.scr;
      default:
        return 0xff;
    }
  }

  private writeRegister(offset: number, value: number): void {
    switch (offset) {
      case REG_DATA:
        if (this.dlab) this.divisor = (this.divisor & 0xff00) | value;
        else this.writeThr(value);
        break;
      case REG_IER:
        if (this.dlab) this.divisor = (this.divisor & 0x00ff) | (value << 8);
        else this.writeIer(value);
        break;
      case REG_IIR_FCR:
        this.writeFcr(value);
        break;
      case REG_LCR:
        this.lcr = value;
        break;
      case REG_MCR:
        this.writeMcr(value);
        break;
      case REG_SCR:
        this.scr = value;
        break;
      default:
        // LSR and MSR are read-only (LSR writes are a factory test mode).
        break;
    }
  }

  private readRbr(): number {
    const byte = this.rxFifo.length > 0 ? this.rxFifo.shift() : 0;
    this.refillFromPending();
    this.updateIrq();
    this.notifySpace();
    return byte;
  }

  private writeThr(value: number): void {
    this.threPending = false;
    if (this.loopback) this.receive(value);
    else this.output(value);
    // The byte has gone out at once: THR is empty again.
    this.threPending = true;
    this.updateIrq();
  }

  private writeIer(value: number): void {
    const before = this.ier;
    this.ier = value & 0x0f;
    // Enabling ETBEI while THR is empty (always, here) raises THRE at once.
    if (!(before & IER_ETBEI) && this.ier & IER_ETBEI) this.threPending = true;
    this.updateIrq();
  }

  private writeFcr(value: number): void {
    const enable = (value & FCR_ENABLE) !== 0;
    if (enable !== this.fifoEnabled) {
      // Switching FIFO mode resets both FIFOs.
      this.rxFifo.clear();
      this.fifoEnabled = enable;
    }
    if (enable) {
      if (value & FCR_CLEAR_RX) this.rxFifo.clear();
      this.rxTrigger = RX_TRIGGER_LEVELS[value >> 6]!;
    }
    this.refillFromPending();
    this.updateIrq();
    this.notifySpace();
  }

  private writeMcr(value: number): void {
    const wasLoopback = this.loopback;
    this.mcr = value & MCR_MASK;
    this.setModemInputs(this.modemInputs());
    if (wasLoopback && !this.loopback) {
      this.refillFromPending();
      this.notifySpace();
    }
    this.updateIrq();
  }

  private readIir(): number {
    const id = this.interruptId();
    if (id === IIR_THR_EMPTY) {
      this.threPending = false;
      this.updateIrq();
    }
    return id | (this.fifoEnabled ? IIR_FIFO_ENABLED : 0);
  }

  private readLsr(): number {
    let lsr = LSR_THRE | LSR_TEMT;
    if (this.rxFifo.length > 0) lsr |= LSR_DR;
    if (this.overrun) lsr |= LSR_OE;
    this.overrun = false;
    this.updateIrq();
    return lsr;
  }

  private readMsr(): number {
    const msr = this.msrInputs | this.msrDeltas;
    this.msrDeltas = 0;
    this.updateIrq();
    return msr;
  }

  /** Modem inputs: looped back from MCR in loopback mode, else CTS/DSR/DCD asserted. */
  private modemInputs(): number {
    if (!this.loopback) return MSR_CTS | MSR_DSR | MSR_DCD;
    let inputs = 0;
    if (this.mcr & MCR_RTS) inputs |= MSR_CTS;
    if (this.mcr & MCR_DTR) inputs |= MSR_DSR;
    if (this.mcr & MCR_OUT1) inputs |= MSR_RI;
    if (this.mcr & MCR_OUT2) inputs |= MSR_DCD;
    return inputs;
  }

  private setModemInputs(inputs: number): void {
    const changed = this.msrInputs ^ inputs;
    if (changed & MSR_CTS) this.msrDeltas |= MSR_DCTS;
    if (changed & MSR_DSR) this.msrDeltas |= MSR_DDSR;
    if (this.msrInputs & MSR_RI && !(inputs & MSR_RI)) this.msrDeltas |= MSR_TERI; // trailing edge
    if (changed & MSR_DCD) this.msrDeltas |= MSR_DDCD;
    this.msrInputs = inputs;
  }

  /** A byte arriving at the receiver; a full FIFO overruns and drops it. */
  private receive(byte: number): void {
    if (this.rxFifo.length >= this.rxCapacity) {
      this.overrun = true;
      return;
    }
    this.rxFifo.push(byte);
  }

  private refillFromPending(): void {
    if (this.loopback) return;
    while (this.pending.length > 0 && this.rxFifo.length < this.rxCapacity) {
      this.rxFifo.push(this.pending.shift());
    }
  }

  private notifySpace(): void {
    if (!this.waitingForSpace) return;
    const threshold = Math.max(1, Math.floor(this.pending.capacity / 2));
    if (this.inputSpace < threshold) return;
    this.waitingForSpace = false;
    this.onRxSpace?.();
  }

  /** The highest-priority enabled pending interrupt, as IIR bits 0-3. */
  private interruptId(): number {
    if (this.ier & IER_ELSI && this.overrun) return IIR_LINE_STATUS;
    if (this.ier & IER_ERBFI && this.rxFifo.length > 0) return IIR_RX_DATA;
    if (this.ier & IER_ETBEI && this.threPending) return IIR_THR_EMPTY;
    if (this.ier & IER_EDSSI && this.msrDeltas !== 0) return IIR_MODEM_STATUS;
    return IIR_NONE;
  }

  private updateIrq(): void {
    const level = this.interruptId() !== IIR_NONE && (this.mcr & MCR_OUT2) !== 0;
    if (level === this.irqLevel) return;
    this.irqLevel = level;
    this.irq.set(level);
  }
}
