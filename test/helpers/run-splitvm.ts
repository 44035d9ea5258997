// Runs the real `splitvm` command as a child process and collects its
// output and exit status, reads its JSON log, and checks what a user sees
// after a mistake, for CLI and guest tests.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

export const SPLITVM = fileURLToPath(new URL('../../bin/splitvm.mjs', import.meta.url));

export interface RunResult {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `[wrapper...] node bin/splitvm.mjs args...` and resolves when it exits. */
export function runSplitvm(
  args: string[],
  opts: { wrapper?: string[]; timeoutMs?: number; input?: string; onStderrLine?: (line: string) => void } = {},
): Promise<RunResult> {
  const wrapper = opts.wrapper ?? [];
  const cmd = [...wrapper, process.execPath, SPLITVM, ...args];
  return new Promise((resolve, reject) => {
    const child = spawn(cmd[0]!, cmd.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    let partial = '';
    child.stderr.on('data', (d) => {
      stderr += d;
      if (!opts.onStderrLine) return;
      const lines = (partial + d).split('\n');
      partial = lines.pop()!;
      for (const l of lines) opts.onStderrLine(l);
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60000);
    child.on('error', reject);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
    child.stdin.end(opts.input ?? '');
  });
}

/** The JSON log records on splitvm's stderr (its own and its devices'), or only those whose msg is `msg`. */
export function logRecords<T = Record<string, unknown>>(stderr: string, msg?: string): T[] {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((rec) => msg === undefined || rec.msg === msg) as T[];
}

/**
 * What a user sees after a mistake: exit `status` and one sentence on stderr,
 * `splitvm: …` matching `pattern`, never a stack trace. With `ignoreLog`, the
 * JSON log lines of the command (its --log-level) are not counted.
 */
export function assertOneSentence(r: RunResult, status: number, pattern: RegExp, opts: { ignoreLog?: boolean } = {}): void {
  assert.equal(r.status, status, `exit status (stderr: ${r.stderr})`);
  const lines = r.stderr.trim().split('\n').filter((l) => !opts.ignoreLog || !l.startsWith('{'));
  assert.equal(lines.length, 1, `one line on stderr, got:\n${r.stderr}`);
  assert.match(lines[0]!, /^splitvm: /);
  assert.match(lines[0]!, pattern);
  assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
}
