// Relays a device process's log to the core's stderr. The device is not
// trusted with the user's terminal: each line it writes must be a JSON
// object, and is written out re-encoded (so no control character or escape
// sequence of its own reaches the terminal) and bounded in length; anything
// else is reported, not passed through. Nor is it trusted with the core's
// stderr: each device gets a budget of lines a second, and what reaches
// stderr is queued (bounded in bytes) and written asynchronously, so a
// flood is dropped and counted instead of crashing or blocking the core.
import fs from 'node:fs';
import type { Readable } from 'node:stream';
import { LineBudget } from '../line-budget.js';

/** Longest device log line relayed; a longer one is cut and marked. */
export const MAX_LOG_LINE = 16 * 1024;
/** Lines a second one device may log on average, and in a burst. */
export const DEVICE_LOG_LINES_PER_SECOND = 200;
const DEVICE_LOG_BURST = 1000;
/** Bytes of log lines queued for the core's stderr beyond which lines are dropped. */
export const MAX_STDERR_BACKLOG = 1024 * 1024;
/** How soon a write refused with EAGAIN (a full non-blocking stderr) is tried again. */
const RETRY_MS = 50;

const record = (fields: Record<string, unknown>): string => `${JSON.stringify({ level: 40, time: Date.now(), ...fields })}\n`;

/**
 * Writes lines to an fd without ever throwing or blocking the event loop:
 * one asynchronous write at a time (a blocking pipe nobody reads holds a pool
 * thread, not the core), a full non-blocking one is retried later, and past
 * MAX_STDERR_BACKLOG queued bytes lines are dropped, then counted in a line.
 */
export class LogWriter {
  /** Queued bytes, oldest first; while a write is under way, the first is what it writes. */
  private readonly pending: Buffer[] = [];
  private queued = 0;
  private dropped = 0;
  private writing = false;

  constructor(private readonly fd: number) {}

  write(line: string): void {
    const data = Buffer.from(line);
    if (this.queued + data.length > MAX_STDERR_BACKLOG) {
      this.dropped++;
      return;
    }
    if (this.dropped > 0) {
      this.push(Buffer.from(record({ msg: "log lines dropped: the core's stderr was not read fast enough", dropped: this.dropped })));
      this.dropped = 0;
    }
    this.push(data);
  }

  private push(data: Buffer): void {
    this.pending.push(data);
    this.queued += data.length;
    this.next();
  }

  private next(): void {
    if (this.writing || this.pending.length === 0) return;
    this.writing = true;
    const data = Buffer.concat(this.pending.splice(0));
    this.pending.push(data);
    fs.write(this.fd, data, (err, written) => {
      this.writing = false;
      if (err?.code === 'EAGAIN') {
        setTimeout(() => this.next(), RETRY_MS).unref();
        return;
      }
      // Any other error (a closed stderr): what was queued is lost, as the lines after it would be.
      const n = err ? data.length : written;
      this.queued -= n;
      if (n === data.length) this.pending.shift();
      else this.pending[0] = data.subarray(n);
      this.next();
    });
  }
}

/** The core's stderr, for every device's relayed log. */
export const coreStderr = new LogWriter(2);

export function relayDeviceLog(stream: Readable, device: string, write: (line: string) => void): void {
  let partial = '';
  const budget = new LineBudget(DEVICE_LOG_LINES_PER_SECOND, DEVICE_LOG_BURST);
  const emit = (raw: string, cut: boolean) => {
    if (raw.trim() === '') return;
    const dropped = budget.take();
    if (dropped === null) return;
    if (dropped > 0) write(record({ device, msg: `device logged more than ${DEVICE_LOG_LINES_PER_SECOND} lines a second; lines dropped`, dropped }));
    let obj: unknown;
    try {
      obj = cut ? undefined : JSON.parse(raw);
    } catch {
      obj = undefined;
    }
    if (typeof obj === 'object' && obj !== null && !Array.isArray(obj)) {
      write(`${JSON.stringify({ ...(obj as object), device })}\n`);
    } else {
      write(record({ device, msg: 'device wrote a line that is not a JSON log record', line: raw.slice(0, 200), cut }));
    }
  };
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop()!;
    for (const l of lines) emit(l, false);
    if (partial.length > MAX_LOG_LINE) {
      emit(partial, true);
      partial = '';
    }
  });
  stream.on('end', () => emit(partial, false));
}
