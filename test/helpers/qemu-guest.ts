// Boots a test guest with a userspace under QEMU with -accel tcg (no
// /dev/kvm needed) and returns what its commands printed and their exit
// status; vhost-user devices (ours or a peer backend) are attached by socket.
//
// The guest: the kernel of `scripts/guest/build-kernel.sh --userspace` and
// the initramfs of `scripts/guest/build-initramfs.sh [--fio]` (both cached
// in ~/.cache/splitvm, built on first use), plus a small archive appended
// here with the test's commands as /commands.sh. /init runs them with
// `sh -e`, between the console lines `SPLITVM-TEST: begin` and
// `SPLITVM-TEST: exit=N`, then reboots; QEMU (-no-reboot) exits.
//
//   const r = await runQemuGuest({
//     commands: 'fio --name=v --filename=/dev/vda --rw=randwrite --size=4M --verify=crc32c',
//     blk: { socket: '/tmp/blk.sock' }, // first disk is /dev/vda
//     withFio: true,                     // fio in the initramfs; needs memMiB >= 512
//   });
//   assert.equal(r.exitCode, 0, r.console);
//
// Disks appear as /dev/vda, /dev/vdb, ... in the order given; the network
// device is eth0 (`udhcpc -i eth0` takes a lease). QEMU 7.2 crashes when a
// vhost-user-net device uses MSI-X, so that one runs with `vectors=0`.
// Guest memory is a shared memfd, as vhost-user requires.
import { execFileSync, spawn } from 'node:child_process';
import { appendFileSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repoRoot = fileURLToPath(new URL('../..', import.meta.url));

/** A vhost-user-blk backend listening on `socket`. */
export interface VhostUserBlk {
  socket: string;
  /** QEMU reconnects (after 1 s) when the backend goes away, e.g. to test a restart. */
  reconnect?: boolean;
  /** Request queues the guest uses (default 1). */
  queues?: number;
}

/** A vhost-user-net backend listening on `socket`. */
export interface VhostUserNet {
  socket: string;
  mac?: string;
}

export interface QemuGuestOptions {
  /** A shell script run in the guest with `sh -e` (busybox ash). */
  commands: string;
  blk?: VhostUserBlk | VhostUserBlk[];
  net?: VhostUserNet;
  /** Guest memory; 256 MiB by default, 512 with fio (its libraries live in the initramfs). */
  memMiB?: number;
  cpus?: number;
  /** QEMU is killed after this long; 60 s by default. */
  timeoutMs?: number;
  withFio?: boolean;
  /** More kernel parameters. */
  append?: string;
}

export interface QemuGuestResult {
  /** QEMU's exit status (0 after the guest's reboot), null if it was killed. */
  status: number | null;
  timedOut: boolean;
  /** Everything on the serial console, with \n line ends. */
  console: string;
  /** QEMU's own messages. */
  stderr: string;
  /** What the commands printed: the console between the begin and exit markers. */
  output: string;
  /** The commands' exit status, null if the marker never came. */
  exitCode: number | null;
  elapsedMs: number;
}

let kernel: string | undefined;
const initramfs = new Map<boolean, string>();

/** The test guest's kernel (an ELF vmlinux QEMU boots through PVH); builds it on first use. */
export function testGuestKernel(): string {
  kernel ??= join(runScript('build-kernel.sh', ['--userspace']), 'vmlinux');
  return kernel;
}

/** The base initramfs (without commands); builds it on first use. */
export function testGuestInitramfs(withFio: boolean): string {
  let path = initramfs.get(withFio);
  if (path === undefined) {
    path = runScript('build-initramfs.sh', withFio ? ['--fio'] : []);
    initramfs.set(withFio, path);
  }
  return path;
}

function runScript(name: string, args: string[]): string {
  return execFileSync('bash', [join(repoRoot, 'scripts/guest', name), ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
    encoding: 'utf8',
  }).trim();
}

/** A newc cpio archive holding regular files owned by root. */
function newcArchive(files: { name: string; data: Buffer; mode: number }[]): Buffer {
  const parts: Buffer[] = [];
  const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
  const entry = (ino: number, name: string, mode: number, data: Buffer): void => {
    const fields = [ino, mode, 0, 0, 1, 0, data.length, 0, 0, 0, 0, name.length + 1, 0];
    const header = `070701${fields.map((f) => f.toString(16).padStart(8, '0')).join('')}${name}\0`;
    parts.push(Buffer.from(header, 'latin1'), pad4(header.length), data, pad4(data.length));
  };
  files.forEach((f, i) => entry(i + 1, f.name, 0o100000 | f.mode, f.data));
  entry(0, 'TRAILER!!!', 0, Buffer.alloc(0));
  return Buffer.concat(parts);
}

/** The QEMU arguments that attach the vhost-user devices. */
function deviceArgs(blk: VhostUserBlk[], net: VhostUserNet | undefined): string[] {
  const args: string[] = [];
  blk.forEach((b, i) => {
    args.push('-chardev', `socket,id=blk${i},path=${b.socket}${b.reconnect === true ? ',reconnect=1' : ''}`);
    args.push('-device', `vhost-user-blk-pci,chardev=blk${i},num-queues=${b.queues ?? 1}`);
  });
  if (net !== undefined) {
    args.push('-chardev', `socket,id=net0,path=${net.socket}`);
    args.push('-netdev', 'vhost-user,id=n0,chardev=net0');
    args.push('-device', `virtio-net-pci,netdev=n0,vectors=0${net.mac === undefined ? '' : `,mac=${net.mac}`}`);
  }
  return args;
}

const BEGIN = 'SPLITVM-TEST: begin\n';
const EXIT = /^SPLITVM-TEST: exit=(\d+)$/m;

/** Boots the test guest, runs `commands` in it and resolves when QEMU exits or is killed. */
export async function runQemuGuest(opts: QemuGuestOptions): Promise<QemuGuestResult> {
  const withFio = opts.withFio ?? false;
  const memMiB = opts.memMiB ?? (withFio ? 512 : 256);
  const timeoutMs = opts.timeoutMs ?? 60000;
  const blk = opts.blk === undefined ? [] : [opts.blk].flat();
  const vmlinux = testGuestKernel();
  const base = testGuestInitramfs(withFio);

  const dir = mkdtempSync(join(tmpdir(), 'splitvm-qemu-guest-'));
  try {
    const initrd = join(dir, 'initrd.cpio');
    copyFileSync(base, initrd);
    appendFileSync(initrd, newcArchive([{ name: 'commands.sh', data: Buffer.from(opts.commands), mode: 0o644 }]));
    const args = [
      '-accel', 'tcg', '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-no-reboot',
      '-M', 'q35,memory-backend=mem', '-m', `${memMiB}M`, '-smp', String(opts.cpus ?? 1),
      '-object', `memory-backend-memfd,id=mem,size=${memMiB}M,share=on`,
      '-kernel', vmlinux, '-initrd', initrd,
      '-append', `console=ttyS0 reboot=k panic=-1 tsc=reliable ${opts.append ?? ''}`.trim(),
      ...deviceArgs(blk, opts.net),
    ];
    const started = Date.now();
    const child = spawn('qemu-system-x86_64', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    const status = await new Promise<number | null>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (code) => resolve(code));
    }).finally(() => clearTimeout(timer));
    const elapsedMs = Date.now() - started;

    const console = Buffer.concat(out).toString('utf8').replace(/\r\n/g, '\n');
    const begin = console.indexOf(BEGIN);
    const exit = EXIT.exec(console);
    const exitCode = exit === null ? null : Number(exit[1]);
    const output = begin < 0 ? '' : console.slice(begin + BEGIN.length, exit === null ? undefined : exit.index);
    const stderr = Buffer.concat(err).toString('utf8');
    return { status, timedOut, console, stderr, output, exitCode, elapsedMs };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
