// Relays a device process's log to the core's stderr. The device is not
// trusted with the user's terminal: each line it writes must be a JSON
// object, and is written out re-encoded (so no control character or escape
// sequence of its own reaches the terminal) and bounded in length; anything
// else is reported, not passed through.
import type { Readable } from 'node:stream';

/** Longest device log line relayed; a longer one is cut and marked. */
export const MAX_LOG_LINE = 16 * 1024;

export function relayDeviceLog(stream: Readable, device: string, write: (line: string) => void): void {
  let partial = '';
  const emit = (raw: string, cut: boolean) => {
    if (raw.trim() === '') return;
    let obj: unknown;
    try {
      obj = cut ? undefined : JSON.parse(raw);
    } catch {
      obj = undefined;
    }
    if (typeof obj === 'object' && obj !== null && !Array.isArray(obj)) {
      write(`${JSON.stringify({ ...(obj as object), device })}\n`);
    } else {
      write(`${JSON.stringify({ level: 40, time: Date.now(), device, msg: 'device wrote a line that is not a JSON log record', line: raw.slice(0, 200), cut })}\n`);
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
