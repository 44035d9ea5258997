// `splitvm device 9p --share DIR[,ro] --listen ADDR`: the 9p device's
// server reached over a socket, for development and for 9P clients outside
// a VM (Debian's diodls, diodcat). This process opens the folder and
// listens; each accepted connection is served by its own device process,
// started by the same launcher, in the same jail and under the same policy
// as a VM's 9p device (src/devices/p9/listen-main.ts), holding only that
// connection and the folder's fd. A client therefore never shares a process
// with another, and one that crashes its server takes down nothing else.
import net from 'node:net';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { launchDevice, type DeviceProcess } from './jail/launch.js';
import { DeviceSpecError } from './kinds/kind.js';
import { openShare, parseShareSpec } from './kinds/p9.js';
import { DeviceStartError } from './supervisor/device-process.js';
import { repoRoot } from '../sys/paths.js';
import { deviceIdentity, type HostIds } from './jail/identity.js';

export const P9_LISTEN_USAGE = `usage: splitvm device 9p --share DIR[,ro] --listen HOST:PORT|/path/to/socket [--uid N --gid N]

Serves DIR over 9P2000.L on a TCP address or a UNIX socket, one jailed
device process per client, with the same confinement as --share in a VM;
ro refuses every change with EROFS. Ends on SIGINT or SIGTERM.
  --uid N, --gid N   the host ids the device processes run as, and so access
                     DIR's files as, when started as root (default 65534, nobody)`;

class UsageError extends Error {}

/** Clients served at once (each is a device process of some 40 MiB); more are turned away until one leaves. */
export const MAX_CLIENTS = 16;

type Address = { port: number; host: string } | { path: string };

function parseAddress(value: string): Address {
  if (value.includes('/')) return { path: value };
  const m = /^(.+):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[2]) : -1;
  if (!m || port > 65535) throw new UsageError(`--listen takes HOST:PORT or a socket path, not "${value}"`);
  return { host: m[1]!.replace(/^\[|\]$/g, ''), port };
}

function parse(argv: string[]): { dir: string; readOnly: boolean; address: Address; hostIds: HostIds | undefined } {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: { share: { type: 'string' }, listen: { type: 'string' }, uid: { type: 'string' }, gid: { type: 'string' } }, strict: true, allowPositionals: false }));
  } catch (e) {
    throw new UsageError((e as Error).message.split('\n')[0]!.replace(/\. To specify a positional argument.*$/, ''));
  }
  if (!values.share) throw new UsageError('splitvm device 9p needs --share DIR');
  if (!values.listen) throw new UsageError('splitvm device 9p needs --listen HOST:PORT or --listen /path/to/socket');
  let spec;
  try {
    spec = parseShareSpec(values.share, 0);
  } catch (e) {
    if (e instanceof DeviceSpecError) throw new UsageError(e.message);
    throw e;
  }
  // An IdentityError is a usage error: cli.ts says it in one sentence, status 2.
  return { dir: spec.path, readOnly: spec.readOnly, address: parseAddress(values.listen), hostIds: deviceIdentity(values.uid, values.gid) };
}

function describe(server: net.Server): string {
  const a = server.address();
  if (typeof a === 'string') return a;
  return a ? `${a.address.includes(':') ? `[${a.address}]` : a.address}:${a.port}` : '?';
}

export async function main(argv: string[]): Promise<number> {
  if (argv.includes('-h') || argv.includes('--help')) {
    process.stdout.write(`${P9_LISTEN_USAGE}\n`);
    return 0;
  }
  let opts;
  let fd: number;
  try {
    opts = parse(argv);
    fd = openShare(opts.dir);
  } catch (e) {
    if (e instanceof UsageError || e instanceof DeviceStartError) {
      process.stderr.write(`splitvm: ${e.message}\n`);
      return e instanceof UsageError ? 2 : 1;
    }
    throw e;
  }
  const { readOnly, hostIds } = opts;
  const children = new Set<DeviceProcess>();
  let count = 0;
  const entry = path.join(repoRoot(), 'dist', 'src', 'devices', 'p9', 'listen-main.js');
  let starting = 0;
  const server = net.createServer({ pauseOnConnect: true }, (sock) => {
    if (children.size + starting >= MAX_CLIENTS) {
      process.stderr.write(`splitvm: turning a 9P client away: ${MAX_CLIENTS} are being served\n`);
      sock.destroy();
      return;
    }
    const connFd = (sock as unknown as { _handle?: { fd?: number } })._handle?.fd ?? -1;
    if (connFd < 0) {
      sock.destroy();
      return;
    }
    sock.setNoDelay(true); // on the connection itself, which the device process shares: replies go out at once
    const name = `p9-client${count++}`;
    starting++;
    launchDevice({ name, kind: 'p9', config: { p9: { tag: 'share0', readOnly } }, fds: [connFd, fd], jail: true, seccomp: 'enforce', entry, ...(hostIds ? { hostIds } : {}) })
      .then((proc) => {
        children.add(proc);
        void proc.exited.then(() => children.delete(proc));
      })
      .catch((e: Error) => process.stderr.write(`splitvm: cannot serve a 9P client: ${e.message}\n`))
      .finally(() => {
        starting--;
        sock.destroy(); // the device process has its own copy of the connection
      });
  });
  const listening = new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  if ('path' in opts.address) server.listen(opts.address.path);
  else server.listen(opts.address.port, opts.address.host);
  try {
    await listening;
  } catch (e) {
    process.stderr.write(`splitvm: cannot listen on ${'path' in opts.address ? opts.address.path : `${opts.address.host}:${opts.address.port}`}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}\n`);
    return 1;
  }
  process.stdout.write(`splitvm: serving ${opts.dir}${readOnly ? ' read-only' : ''} over 9P2000.L on ${describe(server)}\n`);
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
  });
  server.close();
  for (const c of children) c.kill();
  return 0;
}
