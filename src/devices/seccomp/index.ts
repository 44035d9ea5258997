// The device process's seccomp entry point: parses the repository's
// policies/<kind>.policy (which @includes common.policy) and loads it on all
// of the process's threads.
import fs from 'node:fs';
import path from 'node:path';
import { loadFilter } from './compile.js';
import { resolveSyscall } from './libseccomp.js';
import { parsePolicy, type PolicyRule } from './policy.js';
import type { SeccompMode } from '../config.js';
import { repoRoot } from '../../sys/paths.js';
import { DEVICE_GLIBC_TUNABLES, FD_BACKEND, FD_CONTROL, FD_MEMORY } from '../contract.js';

export { PolicyError, parsePolicy, type PolicyRule } from './policy.js';

export type { SeccompMode } from '../config.js';

/** The repository's policies/ folder. */
export function policiesDir(): string {
  return path.join(repoRoot(), 'policies');
}

/**
 * What the policies assume of the process they confine: no JIT (they forbid
 * executable memory) and a single malloc arena (they forbid openat, which
 * glibc would call when shrinking a thread arena). Returns what is missing.
 */
export function missingPrerequisites(): string[] {
  const missing: string[] = [];
  const nodeOptions = (process.env.NODE_OPTIONS ?? '').split(/\s+/);
  if (!process.execArgv.includes('--jitless') && !nodeOptions.includes('--jitless')) {
    missing.push("node runs without --jitless, but the policy forbids the executable memory V8's JIT needs");
  }
  if (!(process.env.GLIBC_TUNABLES ?? '').split(':').includes(DEVICE_GLIBC_TUNABLES)) {
    missing.push(`GLIBC_TUNABLES lacks ${DEVICE_GLIBC_TUNABLES}, so glibc's malloc may open a /proc file the policy forbids`);
  }
  return missing;
}

/** Parses policies/<kind>.policy without loading it (for tests and tools). */
export function readPolicy(kind: string, constants: Readonly<Record<string, bigint | number>> = {}): PolicyRule[] {
  if (!/^[a-z0-9_-]+$/.test(kind)) throw new Error(`device kind "${kind}" is not a policy name`);
  const dir = policiesDir();
  return parsePolicy(`${kind}.policy`, {
    readFile: (name) => fs.readFileSync(path.join(dir, name), 'utf8'),
    resolveSyscall,
    // The fixed fd layout of every device process (../contract.ts) is known to every policy.
    constants: { PID: process.pid, CONTROL_FD: FD_CONTROL, MEMORY_FD: FD_MEMORY, BACKEND_FD: FD_BACKEND, ...constants },
  });
}

/**
 * Confines this process with the policy of device `kind`. 'enforce' kills the
 * whole process on any call the policy does not allow; 'log' only logs such
 * calls to the kernel audit log (for writing policies); 'off' installs
 * nothing. Run-time constants (PID is always given) may be used by the policy.
 * Must be called after everything the process needs has been opened/imported.
 */
export function installPolicy(
  kind: string,
  mode: SeccompMode,
  constants: Readonly<Record<string, bigint | number>> = {},
): void {
  if (mode === 'off') {
    process.stderr.write(`WARNING: seccomp is OFF for device "${kind}": this device process is not confined by a system-call filter\n`);
    return;
  }
  const rules = readPolicy(kind, constants);
  const missing = missingPrerequisites();
  if (missing.length > 0 && mode === 'enforce') {
    throw new Error(`cannot enforce the seccomp policy of device "${kind}": ${missing.join('; ')}`);
  }
  for (const m of missing) process.stderr.write(`WARNING: seccomp policy of device "${kind}": ${m}\n`);
  if (mode === 'log') {
    process.stderr.write(
      `WARNING: seccomp for device "${kind}" is in LOG mode: forbidden system calls are only logged (kernel audit log), not stopped\n`,
    );
    loadFilter(rules, 'log');
    return;
  }
  loadFilter(rules, 'kill');
}
