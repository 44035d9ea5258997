// The i8042 keyboard controller, as much of it as a PC guest needs with no
// keyboard or mouse attached: the data port (0x60) and the status/command
// port (0x64), mapped as one device of 5 ports at 0x60 (offsets 0 and 4; the
// ports between read 0xff and ignore writes). It answers the controller
// commands a kernel uses to probe it (self test, interface test, command
// byte, output port, keyboard enable/disable) and turns a reset request —
// command 0xFE, or an output-port write clearing bit 0 — into `onReset()`.
//
// Not modelled: the keyboard and the auxiliary (mouse) device. Bytes written
// to the data port for the keyboard, and commands not listed here, are
// ignored; a Linux guest should be told `i8042.noaux` (and usually
// `i8042.nopnp i8042.dumbkbd`) so it does not wait for answers that never
// come. Controller replies raise the optional IRQ 1 line while the command
// byte enables keyboard interrupts, as the chip does.

import type { BusDevice, IrqLine } from '../bus.js';

/** Base port: data at 0x60, status/command at 0x64. */
export const I8042_PORT = 0x60;
/** Number of ports the device spans (0x60–0x64). */
export const I8042_PORT_COUNT = 5;
/** ISA IRQ of the keyboard. */
export const I8042_KBD_IRQ = 1;

const OFFSET_DATA = 0;
const OFFSET_STATUS_COMMAND = 4;

// Status register bits.
const STATUS_OBF = 0x01;
const STATUS_SYS = 0x04;
const STATUS_CMD = 0x08; // last write went to the command port
const STATUS_UNLOCKED = 0x10; // keyboard not inhibited by the key lock

// Command byte bits.
const CB_KBD_INT = 0x01;
const CB_SYS = 0x04;
const CB_KBD_DISABLE = 0x10;
const CB_AUX_DISABLE = 0x20;
/** After POST: keyboard interrupt on, system flag set, scan-code translation. */
const DEFAULT_COMMAND_BYTE = 0x45;

// Output port bits.
const OUTPORT_RESET = 0x01; // active low: 0 resets the CPU
const OUTPORT_A20 = 0x02;
const DEFAULT_OUTPUT_PORT = OUTPORT_RESET | OUTPORT_A20;

// Controller commands.
const CMD_READ_RAM = 0x20; // 0x20–0x3f: read RAM byte (0x20 = command byte)
const CMD_WRITE_RAM = 0x60; // 0x60–0x7f: write RAM byte (0x60 = command byte)
const CMD_AUX_DISABLE = 0xa7;
const CMD_AUX_ENABLE = 0xa8;
const CMD_SELF_TEST = 0xaa;
const CMD_KBD_INTERFACE_TEST = 0xab;
const CMD_KBD_DISABLE = 0xad;
const CMD_KBD_ENABLE = 0xae;
const CMD_READ_OUTPUT_PORT = 0xd0;
const CMD_WRITE_OUTPUT_PORT = 0xd1;
const CMD_WRITE_KBD_BUFFER = 0xd2;
const CMD_PULSE_FIRST = 0xf0; // 0xf0–0xff: pulse output lines whose bit is 0

const SELF_TEST_OK = 0x55;
const INTERFACE_TEST_OK = 0x00;

export interface I8042Options {
  /** Called when the guest asks the controller to reset the CPU. */
  onReset: () => void;
  /** IRQ 1, raised while a reply waits and keyboard interrupts are on. */
  irq?: IrqLine;
}

export class I8042 implements BusDevice {
  private readonly onReset: () => void;
  private readonly irq: IrqLine | undefined;

  /** Controller RAM; byte 0 is the command byte. */
  private readonly ram = new Uint8Array(32);
  private outputPort = DEFAULT_OUTPUT_PORT;
  private outputBuffer = 0;
  private outputFull = false;
  private lastWriteWasCommand = false;
  /** A command waiting for its parameter on the data port. */
  private pendingCommand: number | undefined;
  private irqLevel = false;

  constructor(options: I8042Options) {
    this.onReset = options.onReset;
    this.irq = options.irq;
    this.ram[0] = DEFAULT_COMMAND_BYTE;
  }

  /** Returns the controller to its post-POST state. */
  reset(): void {
    this.ram.fill(0);
    this.ram[0] = DEFAULT_COMMAND_BYTE;
    this.outputPort = DEFAULT_OUTPUT_PORT;
    this.outputBuffer = 0;
    this.outputFull = false;
    this.lastWriteWasCommand = false;
    this.pendingCommand = undefined;
    this.updateIrq();
  }

  /** The controller command byte. */
  get commandByte(): number {
    return this.ram[0]!;
  }

  read(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) data[i] = this.readPort(offset + i);
  }

  write(offset: number, data: Uint8Array): void {
    for (let i = 0; i < data.length; i++) this.writePort(offset + i, data[i]!);
  }

  private readPort(offset: number): number {
    if (offset === OFFSET_DATA) {
      this.outputFull = false;
      this.updateIrq();
      return this.outputBuffer;
    }
    if (offset === OFFSET_STATUS_COMMAND) return this.status();
    return 0xff;
  }

  private writePort(offset: number, value: number): void {
    if (offset === OFFSET_DATA) {
      this.lastWriteWasCommand = false;
      this.writeData(value);
    } else if (offset === OFFSET_STATUS_COMMAND) {
      this.lastWriteWasCommand = true;
      this.command(value);
    }
  }

  private status(): number {
    let s = STATUS_UNLOCKED;
    if (this.outputFull) s |= STATUS_OBF;
    if (this.ram[0]! & CB_SYS) s |= STATUS_SYS;
    if (this.lastWriteWasCommand) s |= STATUS_CMD;
    return s;
  }

  private command(cmd: number): void {
    this.pendingCommand = undefined;
    if (cmd >= CMD_READ_RAM && cmd < CMD_READ_RAM + 0x20) {
      this.reply(this.ram[cmd - CMD_READ_RAM]!);
      return;
    }
    if (cmd >= CMD_WRITE_RAM && cmd < CMD_WRITE_RAM + 0x20) {
      this.pendingCommand = cmd;
      return;
    }
    if (cmd >= CMD_PULSE_FIRST) {
      if ((cmd & OUTPORT_RESET) === 0) this.onReset();
      return;
    }
    switch (cmd) {
      case CMD_AUX_DISABLE:
        this.ram[0] = this.ram[0]! | CB_AUX_DISABLE;
        break;
      case CMD_AUX_ENABLE:
        this.ram[0] = this.ram[0]! & ~CB_AUX_DISABLE;
        break;
      case CMD_SELF_TEST:
        this.ram[0] = this.ram[0]! | CB_SYS;
        this.reply(SELF_TEST_OK);
        break;
      case CMD_KBD_INTERFACE_TEST:
        this.reply(INTERFACE_TEST_OK);
        break;
      case CMD_KBD_DISABLE:
        this.ram[0] = this.ram[0]! | CB_KBD_DISABLE;
        break;
      case CMD_KBD_ENABLE:
        this.ram[0] = this.ram[0]! & ~CB_KBD_DISABLE;
        break;
      case CMD_READ_OUTPUT_PORT:
        this.reply(this.outputPort);
        break;
      case CMD_WRITE_OUTPUT_PORT:
      case CMD_WRITE_KBD_BUFFER:
        this.pendingCommand = cmd;
        break;
      default:
        // Unmodelled command (aux device, vendor extensions): no reply.
        break;
    }
  }

  private writeData(value: number): void {
    const cmd = this.pendingCommand;
    this.pendingCommand = undefined;
    if (cmd === undefined) return; // for the keyboard, which is not there
    if (cmd >= CMD_WRITE_RAM && cmd < CMD_WRITE_RAM + 0x20) {
      this.ram[cmd - CMD_WRITE_RAM] = value;
      this.updateIrq();
    } else if (cmd === CMD_WRITE_OUTPUT_PORT) {
      this.outputPort = value;
      if ((value & OUTPORT_RESET) === 0) this.onReset();
    } else if (cmd === CMD_WRITE_KBD_BUFFER) {
      this.reply(value);
    }
  }

  private reply(value: number): void {
    this.outputBuffer = value;
    this.outputFull = true;
    this.updateIrq();
  }

  private updateIrq(): void {
    if (!this.irq) return;
    const level = this.outputFull && (this.ram[0]! & CB_KBD_INT) !== 0;
    if (level === this.irqLevel) return;
    this.irqLevel = level;
    this.irq.set(level);
  }
}
