// The host side of the serial console: guest output to stdout (the UART's
// bytes gathered in one buffer, one write per event-loop turn), host stdin
// to the guest (raw mode on a terminal), and the escape Ctrl-A x to quit,
// Ctrl-A Ctrl-A for a literal Ctrl-A. Input the UART cannot take yet is
// held, with stdin paused.

const CTRL_A = 0x01;

export interface Console {
  /** One byte of guest output. */
  writeByte: (byte: number) => void;
  /** `deliver` returns how many bytes the guest took. */
  onInput: (deliver: (bytes: Uint8Array) => number) => void;
  /** The guest has room again: deliver what was held. */
  resume: () => void;
  onQuit: (cb: () => void) => void;
  detach: () => void;
}

export function attachConsole(stdin = process.stdin, stdout = process.stdout): Console {
  let out = new Uint8Array(4096);
  let outLength = 0;
  let scheduled = false;
  const flush = () => {
    scheduled = false;
    if (outLength === 0) return;
    stdout.write(out.slice(0, outLength));
    outLength = 0;
  };

  let deliver: ((bytes: Uint8Array) => number) | undefined;
  let quit: (() => void) | undefined;
  let held = new Uint8Array(0);
  let escape = false;
  const raw = stdin.isTTY === true;

  const offer = () => {
    if (!deliver || held.length === 0) return;
    const took = deliver(held);
    held = held.subarray(took);
    if (held.length > 0) stdin.pause();
    else stdin.resume();
  };

  const onData = (chunk: Buffer) => {
    const out: number[] = [];
    for (const b of chunk) {
      if (raw && escape) {
        escape = false;
        if (b === 0x78 /* x */) {
          quit?.();
          return;
        }
        if (b === CTRL_A) out.push(CTRL_A);
        continue;
      }
      if (raw && b === CTRL_A) escape = true;
      else out.push(b);
    }
    const merged = new Uint8Array(held.length + out.length);
    merged.set(held);
    merged.set(out, held.length);
    held = merged;
    offer();
  };

  if (raw) stdin.setRawMode(true);
  stdin.on('data', onData);

  return {
    writeByte(byte) {
      if (outLength === out.length) {
        const bigger = new Uint8Array(out.length * 2);
        bigger.set(out);
        out = bigger;
      }
      out[outLength++] = byte;
      if (!scheduled) {
        scheduled = true;
        setImmediate(flush);
      }
    },
    onInput(d) {
      deliver = d;
    },
    resume: offer,
    onQuit(cb) {
      quit = cb;
    },
    detach() {
      flush();
      stdin.off('data', onData);
      if (raw) stdin.setRawMode(false);
      stdin.pause();
      stdin.unref?.();
    },
  };
}
