// The `splitvm` command line: parses `splitvm run [flags]`, checks what a
// user can get wrong (one sentence each, exit status 2 for usage, 1 for the
// rest, never a stack trace), builds the kernel command line, wires the
// serial console to the terminal and runs the machine.
import { execFileSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { BootError, KernelFormatError, detectKernelFormat } from './boot/kernel.js';
import { MPTABLE_MAX_CPUS } from './boot/mptable.js';
import { attachConsole } from './console.js';
import { LaunchError, type SeccompMode } from './jail/launch.js';
import { KvmUnavailableError } from './kvm/vm.js';
import { DeviceStartError } from './supervisor/device-process.js';
import { CORE_DEVICE_KINDS, DeviceSpecError, type DeviceRequest } from './kinds/index.js';
import { Machine } from './machine.js';
import { VHOST_USER_USAGE, VhostUserUsageError, parseVhostUserArgs, serveVhostUser } from './vhost-user/command.js';
import { MiB } from './memory.js';
import { isSoftwareKvmHost, withHostKernelParams } from './quirks.js';
import { repoRoot } from '../sys/paths.js';
import { ApiSocketError, startApiServer, type ApiServer } from './api/server.js';
import { CtlUsageError, ctlMain } from './api/ctl.js';
import { deviceIdentity, IdentityError, type HostIds } from './jail/identity.js';
import { CoreJailError, enterCoreNamespace } from './jail/core-namespace.js';


export const USAGE = `usage: splitvm run [options]
  --kernel FILE      guest kernel: ELF vmlinux or bzImage (default: the built-in guest, built on first use)
  --initrd FILE      initramfs (default with the built-in guest: its own)
  --cmdline S        kernel command line, replacing the default
  --append S         appended to the kernel command line
  --mem MiB          guest RAM in MiB (default 128)
  --cpus N           number of vCPUs, 1 to ${MPTABLE_MAX_CPUS} (default 1)
${CORE_DEVICE_KINDS.map((k) => k.usage).join('\n')}
  --name NAME        the VM's name, in logs and in its devices' default MAC addresses (default splitvm)
  --seccomp MODE     the seccomp policy of device processes and of the sealed core: enforce
                     (default), log (only log what it forbids, for writing policies) or off
  --uid N, --gid N   the host ids device processes run as when splitvm runs as root
                     (default 65534, nobody; one pair per VM keeps tenants apart)
  --spare-devices    keep a spare process per device, ready to take its queues over the moment
                     the serving one dies (a restart in milliseconds; one more process's memory)
  --no-jail-core     do not seal the core (no seccomp filter or namespaces of its own, no launcher): for debugging only
  --api-socket PATH  serve the control API (HTTP, JSON) on the UNIX socket PATH, mode 0600;
                     steer it with splitvm ctl PATH VERB or curl --unix-socket PATH
  --log-level L      fatal, error, warn, info, debug or trace (default warn)
  -h, --help         this text
On the serial console, Ctrl-A x quits and Ctrl-A Ctrl-A sends Ctrl-A.`;

export const DEFAULT_CMDLINE = 'console=ttyS0 reboot=k panic=-1';
const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

/** An error the user caused: printed as one sentence. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly status = 2,
  ) {
    super(message);
  }
}

export interface RunOptions {
  kernelPath?: string;
  initrdPath?: string;
  cmdline: string;
  memMiB: number;
  cpus: number;
  devices: DeviceRequest[];
  name: string;
  seccomp: SeccompMode;
  logLevel: string;
  apiSocket?: string;
  deviceIds?: HostIds;
  noJailCore?: boolean;
  spareDevices?: boolean;
}

function positiveInt(flag: string, value: string, min: number, max: number): number {
  if (!/^\d+$/.test(value)) throw new UsageError(`${flag} needs a whole number, not "${value}"`);
  const n = Number(value);
  if (n < min || n > max) throw new UsageError(`${flag} must be between ${min} and ${max}, not ${n}`);
  return n;
}

export function parseRunArgs(argv: string[]): RunOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        kernel: { type: 'string' },
        initrd: { type: 'string' },
        cmdline: { type: 'string' },
        append: { type: 'string' },
        mem: { type: 'string', default: '128' },
        cpus: { type: 'string', default: '1' },
        ...Object.fromEntries(CORE_DEVICE_KINDS.map((k) => [k.flag, { type: 'string' as const, multiple: true as const, default: [] as string[] }])),
        name: { type: 'string', default: 'splitvm' },
        seccomp: { type: 'string', default: 'enforce' },
        'log-level': { type: 'string', default: 'warn' },
        'api-socket': { type: 'string' },
        uid: { type: 'string' },
        gid: { type: 'string' },
        'no-jail-core': { type: 'boolean' },
        'spare-devices': { type: 'boolean' },
      },
    });
  } catch (e) {
    throw new UsageError((e as Error).message.split('\n')[0]!.replace(/\. To specify.*$/, ''));
  }
  const v = parsed.values;
  const logLevel = v['log-level']!;
  if (!LOG_LEVELS.includes(logLevel)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}, not "${logLevel}"`);
  const seccomp = v.seccomp!;
  if (seccomp !== 'enforce' && seccomp !== 'log' && seccomp !== 'off') throw new UsageError(`--seccomp must be enforce, log or off, not "${seccomp}"`);
  const devices: DeviceRequest[] = [];
  for (const kind of CORE_DEVICE_KINDS) {
    const values = (v as Record<string, unknown>)[kind.flag] as string[];
    try {
      const specs = values.map((value, i) => kind.parse(value, i));
      kind.checkAll?.(specs);
      for (const spec of specs) devices.push({ kind, spec });
    } catch (e) {
      if (e instanceof DeviceSpecError) throw new UsageError(e.message);
      throw e;
    }
  }
  const name = v.name!;
  if (!/^[\w.-]{1,64}$/.test(name)) throw new UsageError(`--name must be 1 to 64 characters of letters, digits, _ . -, not "${name}"`);
  const deviceIds = deviceIdentity(v.uid, v.gid);
  let cmdline = v.cmdline ?? DEFAULT_CMDLINE;
  if (v.append) cmdline = `${cmdline} ${v.append}`;
  return {
    kernelPath: v.kernel,
    initrdPath: v.initrd,
    cmdline,
    memMiB: positiveInt('--mem', v.mem!, 16, 1024 * 1024),
    cpus: positiveInt('--cpus', v.cpus!, 1, MPTABLE_MAX_CPUS),
    devices,
    name,
    seccomp,
    logLevel,
    ...(v['api-socket'] ? { apiSocket: v['api-socket'] } : {}),
    ...(deviceIds ? { deviceIds } : {}),
    ...(v['no-jail-core'] ? { noJailCore: true } : {}),
    ...(v['spare-devices'] ? { spareDevices: true } : {}),
  };
}

function readInput(what: string, path: string): Uint8Array {
  let st;
  try {
    st = statSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') throw new UsageError(`${what} ${path} does not exist`, 1);
    throw new UsageError(`cannot read ${what} ${path}: ${code ?? (e as Error).message}`, 1);
  }
  if (!st.isFile()) throw new UsageError(`${what} ${path} is not a regular file`, 1);
  try {
    return readFileSync(path);
  } catch (e) {
    throw new UsageError(`cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 1);
  }
}

/** Builds the default guest if needed (progress on stderr) and returns its files. */
export function defaultGuest(): { kernel: string; initrd: string } {
  let dir: string;
  try {
    dir = execFileSync('bash', [join(repoRoot(), 'scripts/guest/build-kernel.sh')], { stdio: ['ignore', 'pipe', 'inherit'], encoding: 'utf8' }).trim();
  } catch {
    throw new UsageError('building the default guest kernel failed (see the messages above)', 1);
  }
  return { kernel: join(dir, 'vmlinux'), initrd: join(dir, 'initramfs.cpio') };
}

/** MemAvailable from /proc/meminfo, in bytes. */
function hostAvailableMemory(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  return m ? Number(m[1]) * 1024 : Number.MAX_SAFE_INTEGER;
}

export async function run(opts: RunOptions): Promise<number> {
  if (!opts.noJailCore) enterCoreNamespace(); // as root: re-executes this process in its own namespaces
  const memBytes = opts.memMiB * MiB;
  const available = hostAvailableMemory();
  if (memBytes > available) {
    throw new UsageError(`--mem ${opts.memMiB} is more than this host can give (${Math.floor(available / MiB)} MiB available)`, 1);
  }
  if (opts.memMiB % 2 !== 0) throw new UsageError(`--mem must be a multiple of 2 MiB, not ${opts.memMiB}`);
  let { kernelPath, initrdPath } = opts;
  if (!kernelPath) {
    const guest = defaultGuest();
    kernelPath = guest.kernel;
    initrdPath ??= guest.initrd;
  }
  const kernel = readInput('kernel', kernelPath);
  try {
    detectKernelFormat(kernel);
  } catch (e) {
    if (e instanceof KernelFormatError) throw new UsageError(`${kernelPath} is not a Linux kernel (neither an ELF vmlinux nor a bzImage)`, 1);
    throw e;
  }
  const initrd = initrdPath ? readInput('initrd', initrdPath) : undefined;

  const log = pino({ name: 'splitvm', level: opts.logLevel }, pino.destination({ fd: 2, sync: true }));
  const quirks = isSoftwareKvmHost();
  const cmdline = withHostKernelParams(opts.cmdline, quirks);
  if (quirks) log.info('software KVM host (kvm_pvm): applying its fixups and kernel parameters');

  if (opts.seccomp !== 'enforce' && opts.devices.length > 0) {
    process.stderr.write(
      `splitvm: WARNING: --seccomp=${opts.seccomp}: device processes run ${opts.seccomp === 'log' ? 'with a filter that only LOGS forbidden system calls' : 'WITHOUT a seccomp filter'}; a compromised device is not contained. Do not run untrusted guests like this.\n`,
    );
  }
  if (opts.noJailCore) {
    process.stderr.write('splitvm: WARNING: --no-jail-core: the core, which answers every exit of the guest, runs unsealed (no seccomp filter, full privileges); for debugging only\n');
  }
  const console_ = attachConsole();
  let machine: Machine;
  try {
    machine = Machine.create({
      kernel, initrd, cmdline, memBytes, cpus: opts.cpus, devices: opts.devices, name: opts.name, seccomp: opts.seccomp, jail: true, ...(opts.deviceIds ? { deviceIds: opts.deviceIds } : {}),
      sealCore: !opts.noJailCore, spareDevices: opts.spareDevices === true, ...(opts.apiSocket ? { removeOnExit: [opts.apiSocket] } : {}),
      serialOutput: console_.writeByte, log,
    });
  } catch (e) {
    console_.detach();
    throw e;
  }
  let api: ApiServer | null = null;
  if (opts.apiSocket) {
    try {
      api = await startApiServer(opts.apiSocket, machine, log);
    } catch (e) {
      console_.detach();
      throw e;
    }
  }
  console_.onInput((bytes) => machine.serial.enqueueInput(bytes));
  machine.serial.onRxSpace = () => console_.resume();
  console_.onQuit(() => machine.stop());
  let exit;
  try {
    exit = await machine.run();
  } finally {
    console_.detach();
    await api?.close();
  }
  if (exit.kind === 'error') {
    process.stderr.write(`splitvm: ${exit.message}\n`);
    return 1;
  }
  log.info({ exit: exit.kind, fixups: exit.fixups }, 'guest stopped');
  return 0;
}

/** `splitvm device KIND …`: one device served outside a VM (vhost-user for blk and net). */
async function deviceCommand(argv: string[]): Promise<number> {
  const [verb, ...rest] = argv;
  if (!verb || verb === '-h' || verb === '--help' || rest.includes('-h') || rest.includes('--help')) {
    process.stdout.write(`${VHOST_USER_USAGE}\n`);
    return 0;
  }
  try {
    return await serveVhostUser(parseVhostUserArgs(verb, rest));
  } catch (e) {
    if (e instanceof VhostUserUsageError) throw new UsageError(e.message);
    throw e;
  }
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === '-h' || command === '--help' || command === 'help') {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    if (command === 'device' && rest[0] === '9p') return await (await import('./p9-listen.js')).main(rest.slice(1));
    if (command === 'device') return await deviceCommand(rest);
    if (command === 'ctl') {
      try {
        return await ctlMain(rest);
      } catch (e) {
        if (e instanceof CtlUsageError) throw new UsageError(e.message);
        throw e;
      }
    }
    if (command !== 'run') {
      throw new UsageError(command ? `unknown command "${command}" (run, device, ctl; try: splitvm run --help)` : 'no command given (try: splitvm run --help)');
    }
    if (rest.includes('-h') || rest.includes('--help')) {
      process.stdout.write(`${USAGE}\n`);
      return 0;
    }
    return await run(parseRunArgs(rest));
  } catch (e) {
    if (e instanceof UsageError || e instanceof IdentityError) {
      process.stderr.write(`splitvm: ${e.message}\n`);
      return e instanceof UsageError ? e.status : 2;
    }
    if (e instanceof KvmUnavailableError || e instanceof RangeError || e instanceof BootError || e instanceof DeviceStartError || e instanceof LaunchError || e instanceof ApiSocketError || e instanceof CoreJailError) {
      process.stderr.write(`splitvm: ${e.message}\n`);
      return 1;
    }
    process.stderr.write(`splitvm: internal error: ${(e as Error).stack ?? e}\n`);
    return 70;
  }
}
