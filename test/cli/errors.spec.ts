// Every mistake a user can make on the command line ends with one sentence
// on stderr and a non-zero status, never a stack trace.
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runSplitvm, assertOneSentence } from '../helpers/run-splitvm.js';
import { tinyGuest } from '../helpers/tiny-guest.js';


/**
 * Runs splitvm, as root, without the capabilities that let root ignore file
 * permissions, so a file's mode applies to it as to any user. (Dropping to
 * another user would also need the checkout to be readable by that user,
 * wherever it lies.) Any other user is subject to file modes already.
 */
const WITHOUT_FILE_PERMISSION_OVERRIDE = process.getuid?.() === 0 ? ['setpriv', '--bounding-set=-dac_override,-dac_read_search', '--'] : [];

describe('splitvm run: user errors', function () {
  this.timeout(30000);
  const dir = mkdtempSync(join(tmpdir(), 'splitvm-cli-'));
  const notKernel = join(dir, 'notes.txt');
  writeFileSync(notKernel, 'these are not the bytes of a kernel\n'.repeat(100));
  // A tiny valid ELF kernel, so that errors found after the kernel check can be reached.
  const elf = tinyGuest('halt', '  hlt');

  it('an unknown flag', async function () {
    assertOneSentence(await runSplitvm(['run', '--bogus']), 2, /unknown option '--bogus'/i);
  });

  it('an unknown command', async function () {
    assertOneSentence(await runSplitvm(['fly']), 2, /unknown command "fly"/);
  });

  it('a flag without its value', async function () {
    assertOneSentence(await runSplitvm(['run', '--kernel']), 2, /--kernel/);
  });

  it('bad values for --mem, --cpus and --log-level', async function () {
    assertOneSentence(await runSplitvm(['run', '--mem', 'lots']), 2, /--mem needs a whole number/);
    assertOneSentence(await runSplitvm(['run', '--cpus', '0']), 2, /--cpus must be between 1 and/);
    assertOneSentence(await runSplitvm(['run', '--cpus', '1000']), 2, /--cpus must be between 1 and/);
    assertOneSentence(await runSplitvm(['run', '--log-level', 'loud']), 2, /--log-level must be one of/);
  });

  it('a missing kernel', async function () {
    assertOneSentence(await runSplitvm(['run', '--kernel', join(dir, 'nope')]), 1, /kernel .*nope does not exist/);
  });

  it('a kernel that is a directory', async function () {
    assertOneSentence(await runSplitvm(['run', '--kernel', dir]), 1, /is not a regular file/);
  });

  it('an unreadable kernel', async function () {
    const secret = join(dir, 'secret.elf');
    writeFileSync(secret, 'x');
    chmodSync(secret, 0o000);
    const r = await runSplitvm(['run', '--kernel', secret], { wrapper: WITHOUT_FILE_PERMISSION_OVERRIDE });
    assertOneSentence(r, 1, /cannot read kernel .*secret\.elf: EACCES/);
  });

  it('a file that is not a kernel', async function () {
    assertOneSentence(await runSplitvm(['run', '--kernel', notKernel]), 1, /is not a Linux kernel/);
  });

  it('more memory than the host can give', async function () {
    assertOneSentence(await runSplitvm(['run', '--kernel', elf, '--mem', '1000000']), 1, /--mem 1000000 is more than this host can give/);
  });

  it('no /dev/kvm', async function () {
    // bwrap's --dev gives a /dev with null, zero, urandom… and no kvm.
    const r = await runSplitvm(['run', '--kernel', elf], { wrapper: ['bwrap', '--dev-bind', '/', '/', '--dev', '/dev', '--'] });
    assertOneSentence(r, 1, /\/dev\/kvm does not exist/);
  });

  it('a /dev/kvm that is not KVM', async function () {
    const fake = join(dir, 'not-kvm');
    writeFileSync(fake, '');
    const r = await runSplitvm(['run', '--kernel', elf], { wrapper: ['bwrap', '--dev-bind', '/', '/', '--dev', '/dev', '--bind', fake, '/dev/kvm', '--'] });
    assertOneSentence(r, 1, /\/dev\/kvm is not a KVM device/);
  });

  it('no permission on /dev/kvm', async function () {
    // A /dev/kvm nobody may open, in a mount namespace of the test's own,
    // over a /dev of bwrap's own (so the mount point is never made on the host).
    const kvm = join(dir, 'kvm-no-access');
    writeFileSync(kvm, '');
    chmodSync(kvm, 0o000);
    const r = await runSplitvm(['run', '--kernel', elf], {
      wrapper: ['bwrap', '--dev-bind', '/', '/', '--dev', '/dev', '--bind', kvm, '/dev/kvm', '--', ...WITHOUT_FILE_PERMISSION_OVERRIDE],
    });
    assertOneSentence(r, 1, /no permission to open \/dev\/kvm/);
  });
});
