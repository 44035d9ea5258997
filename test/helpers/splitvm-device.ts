// Runs `splitvm device KIND --socket PATH …` (a vhost-user backend) as a
// child process for tests: resolves once it listens, collects its JSON log,
// and stops it with SIGTERM.
import { spawn, type ChildProcess } from 'node:child_process';
import { SPLITVM } from './run-splitvm.js';

export interface RunningDevice {
  proc: ChildProcess;
  /** Everything it wrote to stderr (JSON log lines). */
  log(): string;
  /** SIGTERM, then waits for it to exit; resolves with its exit status. */
  stop(): Promise<number | null>;
}

/** Starts `splitvm device ...args` and waits until it says it listens (or fails after `timeoutMs`). */
export async function startDevice(args: string[], timeoutMs = 20000): Promise<RunningDevice> {
  const proc = spawn(process.execPath, [SPLITVM, 'device', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  proc.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  const deadline = Date.now() + timeoutMs;
  while (!log.includes('"waiting for a vhost-user frontend"')) {
    if (proc.exitCode !== null || Date.now() > deadline) {
      proc.kill('SIGKILL');
      throw new Error(`splitvm device ${args.join(' ')} did not start listening:\n${log}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    proc,
    log: () => log,
    stop: async () => {
      if (proc.exitCode === null) proc.kill('SIGTERM');
      return exited;
    },
  };
}
