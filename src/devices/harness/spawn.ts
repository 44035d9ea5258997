// Starts a device process the simple way (no jail): node running the built
// entry with the fixed fd layout of ../fds.ts. The lead will switch callers
// to the core's jail launcher (src/core/jail/launch.ts); this is the stand-in
// the harness, tests, benchmarks and fuzzing use meanwhile.
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { ControlChannel } from '../../ipc/channel.js';

export interface SpawnOptions {
  /** The device config object (becomes argv[2] as JSON). */
  config: { numQueues: number } & Record<string, unknown>;
  memfd: number;
  /** fd 5 in the child; /dev/null when absent. */
  backendFd?: number;
  kickFds: number[];
  callFds: number[];
  /** Where the device's log (fd 2) goes. Default 'pipe' (child.stderr). */
  stderr?: 'pipe' | 'inherit' | 'ignore';
  /** Extra node options (e.g. --jitless). */
  nodeArgs?: string[];
}

export interface SpawnedDevice {
  child: ChildProcess;
  channel: ControlChannel<'core'>;
}

export type SpawnDevice = (opts: SpawnOptions) => SpawnedDevice;

function repoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, 'package.json')) && fs.existsSync(path.join(dir, 'src'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('cannot find the repository root above the harness');
    dir = up;
  }
}

/** The compiled device entry; device processes never run through tsx. */
export function deviceEntry(): string {
  const entry = path.join(repoRoot(), 'dist', 'src', 'devices', 'main.js');
  if (!fs.existsSync(entry)) throw new Error(`${entry} is missing: run "npm run build" first`);
  return entry;
}

export const spawnDevice: SpawnDevice = (opts) => {
  if (opts.kickFds.length !== opts.config.numQueues || opts.callFds.length !== opts.config.numQueues) {
    throw new Error('spawnDevice: one kick and one call eventfd per queue');
  }
  const stdio: StdioOptions = ['ignore', 'ignore', opts.stderr ?? 'pipe', 'pipe', opts.memfd, opts.backendFd ?? 'ignore'];
  for (let i = 0; i < opts.config.numQueues; i++) stdio.push(opts.kickFds[i]!, opts.callFds[i]!);
  // What the seccomp policies require of the process (src/devices/seccomp
  // checks it): no JIT (no executable mappings), and a single malloc arena
  // (glibc would otherwise read /proc to size its arenas).
  const jailed = opts.config.seccomp === 'enforce' || opts.config.seccomp === 'log';
  const nodeArgs = [...(jailed ? ['--jitless'] : []), ...(opts.nodeArgs ?? [])];
  const env: Record<string, string> = { UV_THREADPOOL_SIZE: String(opts.config.numQueues + 8) }; // one pool thread parks per kick eventfd
  if (jailed) env.GLIBC_TUNABLES = 'glibc.malloc.arena_max=1';
  const child = spawn(process.execPath, [...nodeArgs, deviceEntry(), JSON.stringify(opts.config)], { stdio, env });
  const socket = child.stdio[3] as Duplex;
  return { child, channel: new ControlChannel('core', socket) };
};
