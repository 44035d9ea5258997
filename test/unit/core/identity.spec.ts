// Which host ids device processes run as (--uid/--gid), and the check that
// such a user can reach the code the jail binds in.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkReadable, deviceIdentity, IdentityError, NOBODY } from '../../../src/core/jail/identity.js';

describe('device host identity', () => {
  const root = { uid: 0, gid: 0 };
  const user = { uid: 1000, gid: 1000 };

  it('a root core runs devices as nobody by default, or as the ids given', () => {
    assert.deepEqual(deviceIdentity(undefined, undefined, root), { uid: NOBODY, gid: NOBODY });
    assert.deepEqual(deviceIdentity('4000', '4001', root), { uid: 4000, gid: 4001 });
    assert.deepEqual(deviceIdentity('0', '0', root), { uid: 0, gid: 0 }, 'root only when asked for');
  });

  it('a core that is not root runs devices as itself; asking for other ids is one sentence', () => {
    assert.equal(deviceIdentity(undefined, undefined, user), undefined);
    assert.equal(deviceIdentity('1000', '1000', user), undefined);
    assert.throws(() => deviceIdentity('0', undefined, user), (e: Error) => e instanceof IdentityError && /need splitvm to run as root/.test(e.message));
  });

  it('ids that are not numbers are refused', () => {
    assert.throws(() => deviceIdentity('nobody', undefined, root), /--uid needs a numeric host id, not "nobody"/);
    assert.throws(() => deviceIdentity(undefined, '-1', root), /--gid needs a numeric host id/);
  });

  it('refuses a checkout the device user cannot reach or read, naming the place', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'splitvm-ids-'));
    try {
      const inner = path.join(dir, 'dist');
      fs.mkdirSync(inner);
      fs.chmodSync(dir, 0o755);
      checkReadable({ uid: NOBODY, gid: NOBODY }, [inner]);
      fs.chmodSync(dir, 0o700);
      assert.throws(() => checkReadable({ uid: NOBODY, gid: NOBODY }, [inner]), new RegExp(`uid ${NOBODY}, which cannot enter ${dir}`));
      fs.chmodSync(dir, 0o755);
      fs.chmodSync(inner, 0o711);
      assert.throws(() => checkReadable({ uid: NOBODY, gid: NOBODY }, [inner]), /cannot read .*dist: make the checkout readable/);
      checkReadable({ uid: fs.statSync(inner).uid, gid: 12345 }, [inner]);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
