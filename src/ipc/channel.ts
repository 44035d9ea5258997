// ControlChannel: one end of the core↔device socketpair. Sends framed
// messages and emits validated received ones; any protocol error closes the
// channel. The same class serves both sides: `role` says which one we are,
// and therefore which validator the peer's messages go through.
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { encode, decode, FrameReader } from './codec.js';
import {
  PROTOCOL_VERSION, ProtocolError, validateCoreMessage, validateDeviceMessage,
  type CoreMessage, type DeviceMessage, type Message, type Unversioned,
} from './messages.js';

export type Role = 'core' | 'device';
type Outgoing<R extends Role> = R extends 'core' ? CoreMessage : DeviceMessage;
type Incoming<R extends Role> = R extends 'core' ? DeviceMessage : CoreMessage;

export interface ControlChannelEvents<R extends Role> {
  message: [Incoming<R>];
  error: [Error];
  close: [];
}

export class ControlChannel<R extends Role> extends EventEmitter<ControlChannelEvents<R>> {
  private readonly reader = new FrameReader();
  private closed = false;

  constructor(
    readonly role: R,
    private readonly socket: Duplex,
  ) {
    super();
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', (e) => this.fail(e));
    socket.on('close', () => this.finish());
    socket.on('end', () => this.close());
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Sends a message (validated first: sending a bad one is a bug and throws). */
  send(msg: Unversioned<Outgoing<R>>): void {
    const full = { v: PROTOCOL_VERSION, ...msg } as Message;
    if (this.role === 'core') validateCoreMessage(full);
    else validateDeviceMessage(full);
    if (this.closed) throw new ProtocolError('control channel is closed');
    this.socket.write(encode(full));
  }

  /** Bytes sent but not yet taken by the peer. */
  get backlog(): number {
    return this.socket.writableLength;
  }

  /** Closes the channel (and the socket). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.emit('close');
  }

  private onData(chunk: Buffer): void {
    if (this.closed) return;
    try {
      for (const body of this.reader.push(chunk)) {
        const value = decode(body);
        const msg = (this.role === 'core' ? validateDeviceMessage(value) : validateCoreMessage(value)) as Incoming<R>;
        this.emit('message', msg);
        if (this.closed) return;
      }
    } catch (e) {
      this.fail(e as Error);
    }
  }

  private fail(e: Error): void {
    if (this.closed) return;
    if (this.listenerCount('error') > 0) this.emit('error', e);
    this.close();
  }

  private finish(): void {
    if (!this.closed) {
      this.closed = true;
      this.emit('close');
    }
  }
}
