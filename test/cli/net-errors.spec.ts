// Each mistake a user can make with --net ends with one sentence and a
// non-zero status. The backend is opened by the same code for `splitvm run`
// and `splitvm device net`; the device command is used here because it
// needs no /dev/kvm, so these run on any host.
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runSplitvm, type RunResult, assertOneSentence } from '../helpers/run-splitvm.js';


/** As root, without the capabilities that let root ignore file modes or manage interfaces. */
const UNPRIVILEGED = process.getuid?.() === 0 ? ['setpriv', '--bounding-set=-dac_override,-dac_read_search,-net_admin', '--'] : [];

describe('splitvm --net: user errors', function () {
  this.timeout(30000);
  const dir = mkdtempSync(join(tmpdir(), 'splitvm-net-cli-'));
  const device = (net: string, wrapper: string[] = []): Promise<RunResult> => runSplitvm(['device', 'net', '--socket', join(dir, 'n.sock'), '--net', net, '--log-level', 'error'], { wrapper });

  it('a MAC that is not six hex bytes', async () => {
    assertOneSentence(await device('user,mac=02:00:00:00:00'), 2, /--net mac must be six hex bytes/, { ignoreLog: true });
  });

  it('a multicast MAC', async () => {
    assertOneSentence(await device('user,mac=03:00:00:00:00:01'), 2, /multicast/, { ignoreLog: true });
  });

  it('neither user nor tap', async () => {
    assertOneSentence(await device('bridge=br0'), 2, /--net needs user or tap=NAME/, { ignoreLog: true });
  });

  it('a tap that does not exist, without the right to create one', async () => {
    assertOneSentence(await device('tap=svnope0', UNPRIVILEGED), 1, /tap svnope0 does not exist, and creating it needs CAP_NET_ADMIN/, { ignoreLog: true });
  });

  it('no permission on /dev/net/tun', async () => {
    const tun = join(dir, 'tun-no-access');
    writeFileSync(tun, '');
    chmodSync(tun, 0o000);
    const r = await device('tap=tap0', ['bwrap', '--dev-bind', '/', '/', '--dev', '/dev', '--bind', tun, '/dev/net/tun', '--', ...UNPRIVILEGED]);
    assertOneSentence(r, 1, /no permission to open \/dev\/net\/tun/, { ignoreLog: true });
  });

  it('passt not installed', async () => {
    assertOneSentence(await device('user', ['env', 'PATH=/var/empty']), 1, /passt is not installed: install the Debian package passt/, { ignoreLog: true });
  });
});
