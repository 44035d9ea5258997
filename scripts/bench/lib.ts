// scripts/bench/lib.ts — owns the helpers the benchmarks share: child
// processes that are always cleaned up (tracked, killed on exit and on
// Ctrl-C), temporary directories that are always removed, the default guest's
// files and command line, waiting for a line of console output, QEMU
// discovery, medians and the small printed tables, and the one JSON line
// for machines (`--json`): each benchmark's run() returns its figures, the
// runner (index.ts) prints them. Benchmarks print figures; they never fail on them.
import { execFileSync, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEFAULT_CMDLINE, defaultGuest as buildDefaultGuest } from '../../src/core/cli.js';
import { withHostKernelParams } from '../../src/core/quirks.js';
import { repoRoot as findRepoRoot, which } from '../../src/sys/paths.js';
import { DeviceStartError } from '../../src/devices/harness/index.js';

export const repoRoot = findRepoRoot();
export const splitvmBin = join(repoRoot, 'bin', 'splitvm.mjs');

/** A failure worth one line: printed as "bench NAME: message", no stack trace. */
export class BenchError extends Error {}

/** Whether `e` is the host's state, told in one sentence (BenchError, a device that cannot start: bwrap missing, say), not a bug to show with its stack. */
export const isPlainFailure = (e: unknown): e is Error => e instanceof BenchError || e instanceof DeviceStartError;

// ---- Children and temporary files, always cleaned up ------------------------

const children = new Set<ChildProcess>();
const tempDirs = new Set<string>();

/** Spawns a tracked child: it is killed when the benchmark run ends, however it ends. */
export function spawnTracked(cmd: string, args: string[], opts: SpawnOptions = {}): ChildProcess {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
  children.add(child);
  child.on('exit', () => children.delete(child));
  child.on('error', () => children.delete(child));
  return child;
}

/** SIGTERM, then SIGKILL if it is still there after `graceMs`; resolves once it is gone. */
export function killChild(child: ChildProcess, graceMs = 2000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

export async function killAll(): Promise<void> {
  await Promise.all([...children].map((c) => killChild(c)));
}

export function makeTempDir(prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `splitvm-bench-${prefix}-`));
  tempDirs.add(dir);
  return dir;
}

export function removeTempDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
  tempDirs.delete(dir);
}

/** Last-resort cleanup, synchronous so it also runs from process 'exit'. */
export function cleanupSync(): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  }
  children.clear();
  for (const d of tempDirs) rmSync(d, { recursive: true, force: true });
  tempDirs.clear();
}

// ---- Running things ----------------------------------------------------------

/** Runs a command to completion (in `env` when given, else ours); resolves with its output, rejects with one line on failure. */
export function runToEnd(cmd: string, args: string[], what: string, timeoutMs = 300_000, env?: NodeJS.ProcessEnv): Promise<{ stdout: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawnTracked(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(env ? { env } : {}) });
    let stdout = '';
    let stderr = '';
    child.stdout!.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new BenchError(`${what} did not finish within ${timeoutMs / 1000} s`));
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(new BenchError(`${what}: cannot start ${cmd}: ${e.message}`));
    });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code === 0) resolve({ stdout, ms });
      else reject(new BenchError(`${what} failed (${signal ?? `exit status ${code}`}): ${lastLine(stderr) || lastLine(stdout)}`));
    });
  });
}

function lastLine(text: string): string {
  const lines = text.trim().split('\n');
  return (lines[lines.length - 1] ?? '').trim();
}

export interface LineWatch {
  /** Milliseconds from spawn to the first line matching the pattern. */
  ms: number;
  line: string;
}

/**
 * Watches a child's stdout (or stderr, with `stream: 'err'`) for a line matching `pattern`.
 * Resolves with the time since `t0` (hrtime ns) when it appears; rejects with
 * one line if the child exits first, a `failure` pattern matches on either
 * stream, or the timeout passes. The child keeps running either way.
 */
export function waitForLine(
  child: ChildProcess,
  t0: bigint,
  pattern: RegExp,
  opts: { timeoutMs: number; what: string; failure?: RegExp; explain?: (output: string) => string; stream?: 'out' | 'err' },
): Promise<LineWatch> {
  return new Promise((resolve, reject) => {
    let done = false;
    let tail = '';
    let output = '';
    const finish = (err: Error | null, value?: LineWatch) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(value!);
    };
    const scan = (stream: 'out' | 'err') => {
      let buf = '';
      return (d: Buffer) => {
        const now = process.hrtime.bigint();
        const text = d.toString('latin1');
        buf += text;
        if (output.length < 1 << 20) output += text;
        const lines = buf.split('\n');
        buf = lines.pop()!;
        for (const raw of lines) {
          const line = raw.replace(/\r$/, '');
          if (line.trim()) tail = line.trim();
          if (stream === (opts.stream ?? 'out') && pattern.test(line)) return finish(null, { ms: Number(now - t0) / 1e6, line });
          if (opts.failure?.test(line)) {
            // Give the rest of the report (e.g. QEMU's register dump) a moment to arrive.
            const explain = opts.explain;
            if (!explain) return finish(new BenchError(`${opts.what}: ${line.trim()}`));
            setTimeout(() => finish(new BenchError(`${opts.what}: ${explain(output)}`)), 300);
            clearTimeout(timer);
            return;
          }
        }
      };
    };
    child.stdout?.on('data', scan('out'));
    child.stderr?.on('data', scan('err'));
    const timer = setTimeout(
      () => finish(new BenchError(`${opts.what}: no "${pattern.source}" within ${opts.timeoutMs / 1000} s (last output: ${tail || 'none'})`)),
      opts.timeoutMs,
    );
    child.on('error', (e) => finish(new BenchError(`${opts.what}: cannot start: ${e.message}`)));
    child.on('exit', (code, signal) =>
      finish(new BenchError(`${opts.what}: exited (${signal ?? `status ${code}`}) before "${pattern.source}" (last output: ${tail || 'none'})`)),
    );
  });
}

// ---- The default guest -----------------------------------------------------

export interface GuestFiles {
  kernel: string;
  initrd: string;
}

/** Builds (or finds in the cache) the default guest; progress goes to stderr. */
export function defaultGuest(): GuestFiles {
  let files: GuestFiles;
  try {
    files = buildDefaultGuest();
  } catch (e) {
    throw new BenchError((e as Error).message);
  }
  if (!existsSync(files.kernel) || !existsSync(files.initrd)) throw new BenchError(`the guest build did not leave ${files.kernel} and ${files.initrd}`);
  return files;
}

/** The command line splitvm really boots with for `base` (it adds the quirk parameters itself). */
export function effectiveCmdline(base = DEFAULT_CMDLINE): string {
  return withHostKernelParams(base);
}

export { DEFAULT_CMDLINE };

// ---- QEMU ------------------------------------------------------------------

export const QEMU = 'qemu-system-x86_64';

/** Makes sure qemu-system-x86_64 is there, installing Debian's qemu-system-x86 if not (and saying so). */
export function ensureQemu(): void {
  if (which(QEMU)) return;
  process.stdout.write(`${QEMU} is missing: installing the Debian package qemu-system-x86 with apt-get...\n`);
  const asRoot = (args: string[]) =>
    process.getuid?.() === 0 ? execFileSync(args[0]!, args.slice(1), { stdio: ['ignore', 'ignore', 'inherit'] }) : execFileSync('sudo', args, { stdio: ['ignore', 'ignore', 'inherit'] });
  try {
    asRoot(['apt-get', 'update']);
    asRoot(['env', 'DEBIAN_FRONTEND=noninteractive', 'apt-get', 'install', '-y', 'qemu-system-x86']);
  } catch {
    throw new BenchError('installing qemu-system-x86 with apt-get failed (see the messages above)');
  }
  if (!which(QEMU)) throw new BenchError(`apt-get installed qemu-system-x86 but ${QEMU} is still not on PATH`);
  process.stdout.write(`installed qemu-system-x86.\n`);
}

/** True if the ELF vmlinux carries the Xen PVH entry note, which QEMU's -kernel needs to boot an ELF. */
export function hasPvhNote(vmlinux: string): boolean {
  const b = readFileSync(vmlinux);
  if (b.readUInt32BE(0) !== 0x7f454c46 || b[4] !== 2) return false;
  const phoff = Number(b.readBigUInt64LE(0x20));
  const phentsize = b.readUInt16LE(0x36);
  const phnum = b.readUInt16LE(0x38);
  for (let i = 0; i < phnum; i++) {
    const ph = phoff + i * phentsize;
    if (b.readUInt32LE(ph) !== 4 /* PT_NOTE */) continue;
    let off = Number(b.readBigUInt64LE(ph + 8));
    const end = off + Number(b.readBigUInt64LE(ph + 32));
    while (off + 12 <= end) {
      const namesz = b.readUInt32LE(off);
      const descsz = b.readUInt32LE(off + 4);
      const type = b.readUInt32LE(off + 8);
      const name = b.toString('latin1', off + 12, off + 12 + namesz).replace(/\0+$/, '');
      if (name === 'Xen' && type === 18 /* XEN_ELFNOTE_PHYS32_ENTRY */) return true;
      off += 12 + align4(namesz) + align4(descsz);
    }
  }
  return false;
}

const align4 = (n: number) => (n + 3) & ~3;

// ---- Figures and tables ------------------------------------------------------

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** The p-th percentile (0..100) of `xs`, nearest rank. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** Prints rows as a left/right-aligned text table (first column left, the rest right). */
export function printTable(header: string[], rows: (string | number)[][]): void {
  const cells = [header, ...rows.map((r) => r.map(String))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  process.stdout.write(`${fmt(header)}\n${widths.map((w) => '-'.repeat(w)).join('  ')}\n`);
  for (const r of cells.slice(1)) process.stdout.write(`${fmt(r)}\n`);
}

export const say = (s = '') => process.stdout.write(`${s}\n`);

// ---- Figures for machines (--json) --------------------------------------------

/** What a benchmark's run() returns: its figures, as plain JSON values. */
export type Figures = Record<string, unknown>;

/** True when the command line asks for the JSON line (`npm run bench -- blk --json`). */
export const jsonRequested = (argv: string[] = process.argv.slice(2)): boolean => argv.includes('--json');

/** A figure rounded for the JSON line: `digits` significant decimals, NaN and infinities as null. */
export function round(x: number, digits = 2): number | null {
  return Number.isFinite(x) ? Number(x.toFixed(digits)) : null;
}

/**
 * The JSON line: one object, printed last. With one benchmark, its figures
 * (and `bench`: its name); with several, `{ "benches": { NAME: figures } }`.
 * A benchmark that failed has `{ "error": "..." }` as its figures.
 */
export function printJson(figures: Map<string, Figures>): void {
  const entries = [...figures];
  const obj = entries.length === 1 ? { bench: entries[0]![0], ...entries[0]![1] } : { benches: Object.fromEntries(entries) };
  say(JSON.stringify(obj));
}

/** Whether the module at `url` is the script node was started with (a benchmark run on its own, not by index.ts). */
export const isMain = (url: string): boolean => !!process.argv[1] && resolve(process.argv[1]) === fileURLToPath(url);

/** Runs one benchmark on its own: its tables, its JSON line with --json, one sentence and status 1 if it fails. */
export async function runStandalone(name: string, run: () => Promise<Figures>): Promise<void> {
  try {
    const figures = await run();
    if (jsonRequested()) printJson(new Map([[name, figures]]));
  } catch (e) {
    process.stderr.write(`bench ${name}: ${isPlainFailure(e) ? e.message : ((e as Error).stack ?? String(e))}\n`);
    process.exitCode = 1;
  } finally {
    cleanupSync();
  }
}

// ---- Starting VMs --------------------------------------------------------------

export interface StartedVm {
  child: ChildProcess;
  /** process.hrtime.bigint() just before the spawn. */
  t0: bigint;
}

/** Starts `node bin/splitvm.mjs run ARGS`. */
export function startSplitvm(args: string[]): StartedVm {
  const t0 = process.hrtime.bigint();
  const child = spawnTracked(process.execPath, [splitvmBin, 'run', ...args]);
  return { child, t0 };
}

export type QemuMachine = 'microvm' | 'pc';

/** The fastest-to-start QEMU command line for a direct kernel boot: no firmware devices, serial on stdio. */
export function qemuArgs(machine: QemuMachine | string, guest: GuestFiles, cmdline: string, memMiB: number, extra: string[] = []): string[] {
  return [
    '-enable-kvm', '-M', machine, '-cpu', 'host', '-m', String(memMiB), '-smp', '1',
    '-nodefaults', '-no-user-config', '-nographic', '-serial', 'stdio', '-no-reboot',
    '-kernel', guest.kernel, '-initrd', guest.initrd, '-append', cmdline,
    ...extra,
  ];
}

export function startQemu(args: string[]): StartedVm {
  const t0 = process.hrtime.bigint();
  const child = spawnTracked(QEMU, args);
  return { child, t0 };
}

/** QEMU's lines that mean the guest stopped for good (KVM_EXIT_INTERNAL_ERROR): it pauses rather than exits. */
export const QEMU_FAILURE = /KVM internal error|emulation failure/;

const KNOWN_INSNS: [RegExp, string][] = [
  [/^cc/, 'INT3'],
  [/^0f 01 ca/, 'CLAC'],
  [/^0f 01 cb/, 'STAC'],
  [/^0f c7/, 'CMPXCHG16B/8B'],
  [/^9b/, 'FWAIT'],
  [/^f3 0f b8/, 'POPCNT'],
];

/** One sentence from QEMU's KVM internal-error report: what stopped the guest, and where. */
export function explainQemuFailure(output: string, vmlinux?: string): string {
  const sub = /KVM internal error\. Suberror: (\d+)/.exec(output)?.[1];
  const emu = /emulation failure/.test(output) || sub === '1';
  const rip = /RIP=([0-9a-f]{16})/.exec(output)?.[1];
  const code = /Code=.*<([0-9a-f]{2})>((?: [0-9a-f]{2}){0,3})/.exec(output);
  const bytes = code ? `${code[1]}${code[2]}` : '';
  const insn = KNOWN_INSNS.find(([re]) => re.test(bytes))?.[1];
  const sym = rip && vmlinux ? symbolFor(vmlinux, BigInt(`0x${rip}`)) : undefined;
  let why = emu ? 'KVM emulation failure' : `KVM internal error${sub ? ` (suberror ${sub})` : ''}`;
  if (insn) why += ` on ${insn}`;
  else if (bytes) why += ` on the instruction bytes ${bytes.split(' ')[0]}…`;
  if (sym) why += ` in ${sym}`;
  if (rip) why += ` at RIP ${rip}`;
  return `${why}, which QEMU cannot step over`;
}

/** The function containing `addr` in an ELF vmlinux, from nm; undefined if nm or the symbol is missing. */
function symbolFor(vmlinux: string, addr: bigint): string | undefined {
  let out: string;
  try {
    out = execFileSync('nm', ['-n', vmlinux], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] });
  } catch {
    return undefined;
  }
  let best: string | undefined;
  for (const line of out.split('\n')) {
    const m = /^([0-9a-f]+) [tTwW] (\S+)/.exec(line);
    if (!m) continue;
    if (BigInt(`0x${m[1]}`) > addr) break;
    best = m[2];
  }
  return best;
}
