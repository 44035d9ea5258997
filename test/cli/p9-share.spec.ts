// `splitvm run --share`: each mistake a user can make with the flag is one
// sentence and a non-zero exit. A bad tag or option is found before
// anything starts; a missing folder or a file given as one when the core
// opens it (after /dev/kvm, so those need a host with KVM).
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireKvm } from '../helpers/kvm.js';
import { runSplitvm, assertOneSentence } from '../helpers/run-splitvm.js';
import { tinyGuest } from '../helpers/tiny-guest.js';


describe('splitvm run --share: user errors', function () {
  this.timeout(30000);
  const dir = mkdtempSync(join(tmpdir(), 'splitvm-share-cli-'));
  const file = join(dir, 'file');
  writeFileSync(file, 'not a folder');
  const elf = tinyGuest('halt', '  hlt');

  it('a tag with a character a mount tag cannot have', async () => {
    assertOneSentence(await runSplitvm(['run', '--kernel', elf, '--share', `${dir},tag=a/b`]), 2, /--share tag "a\/b" is not valid: a mount tag is made of letters/, { ignoreLog: true });
  });

  it('a tag longer than 64 characters', async () => {
    assertOneSentence(await runSplitvm(['run', '--kernel', elf, '--share', `${dir},tag=${'t'.repeat(65)}`]), 2, /at most 64 characters/, { ignoreLog: true });
  });

  it('an option that is not tag= or ro', async () => {
    assertOneSentence(await runSplitvm(['run', '--kernel', elf, '--share', `${dir},rw`]), 2, /--share option "rw" is not one of tag=TAG, ro/, { ignoreLog: true });
  });

  it('two shares with the same tag', async () => {
    assertOneSentence(await runSplitvm(['run', '--kernel', elf, '--share', `${dir},tag=data`, '--share', `${dir},tag=data`]), 2, /two --share folders have the tag "data"/, { ignoreLog: true });
  });

  it('no folder', async () => {
    assertOneSentence(await runSplitvm(['run', '--kernel', elf, '--share', ',ro']), 2, /--share needs a folder/, { ignoreLog: true });
  });

  describe('when the core opens the folder', () => {
    before(function () {
      requireKvm(this);
    });

    it('a folder that does not exist', async () => {
      assertOneSentence(await runSplitvm(['run', '--kernel', elf, '--share', join(dir, 'nope')]), 1, /the shared folder .*nope does not exist/, { ignoreLog: true });
    });

    it('a file instead of a folder', async () => {
      assertOneSentence(await runSplitvm(['run', '--kernel', elf, '--share', file]), 1, /is not a folder, and --share shares a folder/, { ignoreLog: true });
    });
  });
});
