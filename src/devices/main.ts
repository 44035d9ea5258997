// The one entry every device process runs (compiled to dist/src/devices/main.js):
//   node dist/src/devices/main.js '<json config>'
// Takes the inherited fds (layout in contract.ts), parses the config, maps guest
// memory, loads the backend, installs the seccomp policy, then says hello and
// serves. Nothing may be opened or imported after the policy is installed.
import fs from 'node:fs';
import net from 'node:net';
import { pino, type Logger } from 'pino';
import * as libc from '../sys/libc.js';
import { ControlChannel } from '../ipc/channel.js';
import { ConfigError, parseDeviceConfig, type DeviceConfig, type JailProbe } from './config.js';
import { FD_BACKEND, FD_CONTROL, FD_LOG, FD_MEMORY, inflightFd } from './contract.js';
import { GuestMemory } from './guest-memory.js';
import { deviceKind } from './kinds.js';
import { TUNSETIFF } from './net/constants.js';
import type { DeviceBackend } from './backend.js';
import { installPolicy } from './seccomp/index.js';
import { DeviceServer } from './server.js';

/** Pool threads a device needs at least: one a backend may park in poll(2), one for I/O (the launcher gives more). */
const MIN_POOL_THREADS = 2;

function fatal(log: Logger | undefined, msg: string): never {
  if (log) log.fatal(msg);
  else fs.writeSync(FD_LOG, `${JSON.stringify({ level: 60, time: Date.now(), msg })}\n`);
  libc.exitNow(1);
}

function installSeccomp(config: DeviceConfig, constants: Record<string, number>, log: Logger): void {
  try {
    installPolicy(config.kind, config.seccomp, constants);
  } catch (e) {
    fatal(log, `cannot install the seccomp policy: ${(e as Error).message}`);
  }
  log.info({ seccomp: config.seccomp }, 'seccomp policy installed');
}

/** Test only: what a taken-over device might try, right after the policy is installed (config.ts). */
function attemptAfterJail(probe: JailProbe, log: Logger): void {
  log.warn({ probe }, 'test probe: attempting what the jail must stop');
  if (probe === 'allocate') {
    // Once serving (after its hello), keeps every MiB it gets until its memory bound ends it.
    setTimeout(() => {
      const held: Buffer[] = [];
      for (;;) held.push(Buffer.alloc(1024 * 1024, 0x42));
    }, 100);
    return;
  }
  try {
    if (probe === 'socket') libc.close(libc.socket(libc.AF_INET, libc.SOCK_STREAM));
    else if (probe === 'open') fs.closeSync(fs.openSync('/etc/hostname', 'r'));
    else if (probe === 'grow-image') libc.pwrite(FD_BACKEND, Uint8Array.of(0x42), 2 ** 40); // far past any test image's end
    else if (probe === 'openat2-cwd') libc.close(libc.openat2(libc.AT_FDCWD, '/etc/hostname', libc.O_RDONLY, 0, 0));
    else if (probe === 'mknod-device') libc.mknodat(FD_BACKEND, 'splitvm-probe-null', libc.S_IFCHR | 0o666); // in the share (9p)
    else if (probe === 'tap-setiff') libc.ioctlIn(FD_BACKEND, TUNSETIFF, new Uint8Array(40)); // net: attach the tap fd elsewhere
    else libc.execve('/nonexistent/splitvm-probe', ['probe']);
  } catch (e) {
    log.warn({ probe, err: (e as Error).message }, 'test probe: the call failed but the process lives');
    return;
  }
  log.warn({ probe }, 'test probe: the call succeeded');
}

async function main(): Promise<void> {
  // ms since the process started (performance's time origin): Node's own start-up plus loading our modules
  const loadedMs = performance.now();
  let config: DeviceConfig;
  try {
    config = parseDeviceConfig(process.argv[2]);
  } catch (e) {
    fatal(undefined, e instanceof ConfigError ? e.message : `device config: ${(e as Error).message}`);
  }
  const log = pino({ level: config.logLevel, base: { device: config.name, pid: process.pid } }, pino.destination({ fd: FD_LOG, sync: true }));
  // A bug must end the process, not hang it (see libc.exitNow); the core sees it exit.
  process.on('uncaughtException', (e) => fatal(log, `uncaught exception: ${e.stack ?? e.message}`));
  process.on('unhandledRejection', (e) => fatal(log, `unhandled rejection: ${(e as Error)?.stack ?? String(e)}`));

  const poolSize = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  if (!(poolSize >= MIN_POOL_THREADS)) {
    fatal(log, `UV_THREADPOOL_SIZE must be at least ${MIN_POOL_THREADS} (one for a backend's poll, one for I/O); the launcher sets it`);
  }

  let memory: GuestMemory;
  let backend: DeviceBackend;
  let inflight: DataView | null = null;
  let state: DataView | undefined;
  const kind = deviceKind(config.kind)!; // parseDeviceConfig checked it
  try {
    memory = GuestMemory.map(FD_MEMORY, config.regions);
    if (config.inflight) {
      const { size } = config.inflight;
      if (fs.fstatSync(inflightFd(config.numQueues)).size < size) throw new Error('the in-flight file is smaller than its size');
      inflight = new DataView(libc.view(libc.mmap(size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, inflightFd(config.numQueues)), size));
      const at = config.inflight.stateOffset;
      if (at !== undefined) state = new DataView(inflight.buffer, inflight.byteOffset + at, size - at);
    }
    backend = kind.createBackend({ fd: FD_BACKEND, options: config.options, numQueues: config.numQueues, memory, log, ...(state ? { state } : {}) });
  } catch (e) {
    fatal(log, `device setup failed: ${(e as Error).message}`);
  }
  const channel = new ControlChannel('device', new net.Socket({ fd: FD_CONTROL, readable: true, writable: true }));

  // The server makes its kick watchers now: nothing may be created once the policy is in.
  const server = new DeviceServer(backend, memory, channel, log, config.numQueues, config.failed ?? false, inflight);
  const setUpMs = performance.now();
  installSeccomp(config, kind.policyConstants?.(config.options) ?? {}, log);
  const sealedMs = performance.now();
  if (config.testAttemptAfterJail) attemptAfterJail(config.testAttemptAfterJail, log);

  server.start();
  if (config.failed) log.warn('replacing a device process that died: every request fails');
  const round = (ms: number): number => Math.round(ms * 10) / 10;
  log.info({ queues: config.numQueues, ...backend.describe(), startMs: { loaded: round(loadedMs), setUp: round(setUpMs), sealed: round(sealedMs) } }, 'device ready');
}

// Not a top-level await: the bundled entry is CommonJS (Node starts a CommonJS entry sooner than a module).
main().catch((e: unknown) => fatal(undefined, `device start-up failed: ${(e as Error)?.stack ?? String(e)}`));
