// The serial console end to end, with tiny hand-written guests that drive
// the real 8250 model: host stdin reaches the guest's receiver, the guest's
// transmitter reaches stdout, and on a terminal Ctrl-A x quits.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { RESET, tinyGuest } from '../helpers/tiny-guest.js';
import { runSplitvm, SPLITVM } from '../helpers/run-splitvm.js';
import { requireKvm } from '../helpers/kvm.js';


// Polls LSR.DR, reads RBR, upper-cases letters and writes them back to THR;
// a 'q' resets the machine.
const ECHO_UPPER = `
wait:
  mov $0x3fd, %dx
  in (%dx), %al
  test $1, %al
  jz wait
  mov $0x3f8, %dx
  in (%dx), %al
  cmp $'q', %al
  je reset
  cmp $'a', %al
  jb send
  cmp $'z', %al
  ja send
  sub $0x20, %al
send:
  out %al, (%dx)
  jmp wait
reset:
${RESET}`;

describe('serial console', function () {
  this.timeout(60000);
  before(function () {
    requireKvm(this);
  });

  it('carries stdin to the guest and the guest\'s output to stdout', async function () {
    const elf = tinyGuest('echo', ECHO_UPPER);
    const text = 'hello, guest! '.repeat(300); // more than the UART's FIFO and its pending queue hold at once
    const r = await runSplitvm(['run', '--kernel', elf], { input: `${text}q` });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, text.toUpperCase());
  });

  it('quits on Ctrl-A x when stdin is a terminal', async function () {
    const elf = tinyGuest('spin', '1: pause\n  jmp 1b');
    // script(1) gives splitvm a pseudo-terminal and types what we write.
    const child = spawn('script', ['-qec', `${process.execPath} ${SPLITVM} run --kernel ${elf}`, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    const status = new Promise<number | null>((resolve) => child.on('close', resolve));
    await new Promise((r) => setTimeout(r, 3000)); // let the VM start
    child.stdin.write('\x01x');
    const timer = setTimeout(() => child.kill('SIGKILL'), 20000);
    assert.equal(await status, 0);
    clearTimeout(timer);
  });
});
