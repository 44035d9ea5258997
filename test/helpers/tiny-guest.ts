// Builds tiny hand-written guests: a few lines of x86-64 assembly linked as
// an ELF "kernel" loaded at 16 MiB and entered in 64-bit mode at `_start`.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const dir = mkdtempSync(join(tmpdir(), 'splitvm-tiny-guest-'));

/** Guest code that resets the machine through the i8042 (splitvm then exits 0). */
export const RESET = '  mov $0xfe, %al\n  out %al, $0x64\n1: hlt\n  jmp 1b';

/** Assembles `body` (AT&T syntax, after the `_start:` label) and returns the ELF's path. */
export function tinyGuest(name: string, body: string): string {
  const src = join(dir, `${name}.S`);
  const elf = join(dir, `${name}.elf`);
  writeFileSync(src, `.globl _start\n.text\n.code64\n_start:\n${body}\n`);
  execFileSync('cc', ['-nostdlib', '-static', '-no-pie', '-Wl,--build-id=none', '-Wl,-Ttext-segment=0x1000000', '-o', elf, src]);
  return elf;
}
