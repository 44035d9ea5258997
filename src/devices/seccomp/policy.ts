// The seccomp policy language: parses policy files (with @include and
// @define) into a list of rules, each remembering its file:line. Pure: the
// file reader and the syscall-name resolver are passed in, so it can be tested
// without libseccomp or a file system.
//
// One rule per line; `#` starts a comment.
//
//   read: 1                                  allow
//   clone3: return ENOSYS                    fail with an errno, never kill
//   ioctl: arg1 == FIONBIO || arg1 == FIOCLEX   allow when an alternative holds
//   openat: return ENOENT if arg2 == O_RDONLY   errno when the filter holds
//   mmap: arg2 in ~PROT_EXEC                 argument has no bit outside the mask
//   clone: arg0 & CLONE_THREAD               argument has every bit of the mask
//   fcntl: arg1 & 0xff == 3                  masked argument equals a value
//   tgkill: arg0 == PID && arg2 != SIGKILL   `&&` binds tighter than `||`
//   openat: arg0 == SHARE_FD                 run-time constants come from the loader
//   @include common.policy                   a file in the same folder, once
//   @define SHARE_FLAGS O_RDONLY|O_CLOEXEC   a named constant for later lines
//
// Comparisons: argN (0-5) with == != < <= > >=, `in`, `&`, `& M == V`, on
// all 64 bits of the register. For a parameter the kernel declares `int`
// (fds, flags, pids, futex ops), write int(argN): only its low 32 bits are
// compared (with == in & only), since a caller (glibc, koffi) may leave
// anything in the upper half: `openat: … if int(arg0) == AT_FDCWD`.
// Values: decimal, 0x hex, 0o octal, negative numbers (two's complement),
// named constants, `~X` (bitwise not), and `A|B` (bitwise or).
// A system call not listed gets the default action (kill the process); so do
// calls whose arguments match none of the filters given for them. A system
// call may have several lines (e.g. a device file adding an alternative to
// common's) as long as each has a filter; an unconditional line is its only one.
import { ERRNO_CONSTANTS, POLICY_CONSTANTS } from './constants.js';
import type { ArgCmp } from './libseccomp.js';

export type RuleAction = { type: 'allow' } | { type: 'errno'; errno: number };

export interface PolicyRule {
  syscall: string;
  nr: number;
  action: RuleAction;
  /** null: unconditional; else alternatives (ORed) of comparisons (ANDed) */
  when: ArgCmp[][] | null;
  /** "file:line" of the rule, for errors */
  where: string;
}

export class PolicyError extends Error {
  constructor(
    readonly file: string,
    readonly line: number,
    detail: string,
  ) {
    super(`${file}:${line}: ${detail}`);
    this.name = 'PolicyError';
  }
}

export interface ParseOptions {
  /** Returns a policy file's text by its plain name (e.g. "common.policy"), or throws. */
  readFile: (name: string) => string;
  /** Native syscall number for a name, or a negative value when unknown. */
  resolveSyscall: (name: string) => number;
  /** Run-time constants supplied by the loader (e.g. PID). */
  constants?: Readonly<Record<string, bigint | number>>;
}

const U64 = (1n << 64n) - 1n;
const U32 = (1n << 32n) - 1n;
const FILE_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
const SYSCALL_NAME = /^[a-z_][a-z0-9_]*$/;
const TOKEN = /\s*(?:(\|\||&&|==|!=|<=|>=|[<>&|~;()])|(-?(?:0[xX][0-9a-fA-F]+|0[oO]?[0-7]+|[0-9]+))|([A-Za-z_][A-Za-z0-9_]*))/y;

type Token = { kind: 'op' | 'num' | 'id'; text: string };

/** Parses `entry` (and what it includes) into rules. Throws PolicyError. */
export function parsePolicy(entry: string, opts: ParseOptions): PolicyRule[] {
  const defines = new Map<string, bigint>();
  for (const [k, v] of Object.entries(opts.constants ?? {})) defines.set(k, BigInt.asUintN(64, BigInt(v)));
  const rules: PolicyRule[] = [];
  const bySyscall = new Map<string, PolicyRule>();
  const done = new Set<string>();
  const stack: string[] = [];

  const parseFile = (name: string, from?: { file: string; line: number }): void => {
    if (stack.includes(name)) {
      throw new PolicyError(from!.file, from!.line, `@include cycle: ${[...stack, name].join(' -> ')}`);
    }
    if (done.has(name)) return; // included twice through different paths: once is enough
    let text: string;
    try {
      text = opts.readFile(name);
    } catch (e) {
      const why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      if (!from) throw new PolicyError(name, 0, `cannot read policy file (${why})`);
      throw new PolicyError(from.file, from.line, `cannot read included policy file ${name} (${why})`);
    }
    stack.push(name);
    text.split('\n').forEach((raw, i) => parseLine(name, i + 1, raw));
    stack.pop();
    done.add(name);
  };

  const parseLine = (file: string, line: number, raw: string): void => {
    const err = (detail: string): never => {
      throw new PolicyError(file, line, detail);
    };
    const text = raw.replace(/#.*/, '').trim();
    if (text === '') return;

    if (text.startsWith('@')) {
      const m = /^@(\w+)\s*(.*)$/.exec(text)!;
      const [, directive, rest] = m as unknown as [string, string, string];
      if (directive === 'include') {
        if (!FILE_NAME.test(rest)) err(`@include takes a policy file name in the same folder, got "${rest}"`);
        parseFile(rest, { file, line });
        return;
      }
      if (directive === 'define') {
        const d = /^([A-Z_][A-Z0-9_]*)\s+(.+)$/.exec(rest);
        if (!d) err('@define takes an UPPER_CASE name and a value');
        const [, name, expr] = d as unknown as [string, string, string];
        if (POLICY_CONSTANTS[name] !== undefined || defines.has(name)) err(`constant ${name} is already defined`);
        const toks = tokenize(expr, err);
        const cur = { i: 0 };
        const v = parseValue(toks, cur, err);
        if (cur.i !== toks.length) err(`unexpected "${toks[cur.i]!.text}" after the value of ${name}`);
        defines.set(name, v);
        return;
      }
      return err(`unknown directive @${directive} (known: @include, @define)`);
    }

    const colon = text.indexOf(':');
    if (colon < 0) err('expected "syscall: action", e.g. "read: 1"');
    const syscall = text.slice(0, colon).trim();
    const body = text.slice(colon + 1).trim();
    if (!SYSCALL_NAME.test(syscall)) err(`"${syscall}" is not a system call name`);
    const nr = opts.resolveSyscall(syscall);
    if (nr < 0) err(`unknown system call "${syscall}" on this architecture`);
    if (body === '') err(`${syscall} has no action (use 1, return ERRNO, or an argument filter)`);

    let action: RuleAction = { type: 'allow' };
    let when: ArgCmp[][] | null = null;
    if (body === '1' || body === 'allow') {
      // unconditional allow
    } else if (/^return\b/.test(body)) {
      const m = /^return\s+(\S+)(?:\s+if\s+(.*))?$/.exec(body);
      const e = m?.[1] ?? '';
      const n = /^[0-9]+$/.test(e) ? Number(e) : ERRNO_CONSTANTS[e];
      if (n === undefined || n < 1 || n > 4095) {
        err(`"return" needs an errno name (e.g. ENOSYS) or number 1-4095, then optionally "if <filter>"; got "${body}"`);
      }
      action = { type: 'errno', errno: n! };
      if (m?.[2] !== undefined) when = parseFilter(tokenize(m[2], err), err);
    } else if (body === '0') {
      err(`"${syscall}: 0" is meaningless: a system call not listed is already forbidden; remove the line`);
    } else {
      when = parseFilter(tokenize(body, err), err);
    }
    const rule: PolicyRule = { syscall, nr, action, when, where: `${file}:${line}` };
    const prev = bySyscall.get(syscall);
    if (prev && (prev.when === null || when === null)) {
      err(`${syscall} already has a rule at ${prev.where}; an unconditional rule must be a system call's only one`);
    }
    bySyscall.set(syscall, rule);
    rules.push(rule);
  };

  const tokenize = (s: string, err: (d: string) => never): Token[] => {
    const out: Token[] = [];
    TOKEN.lastIndex = 0;
    while (TOKEN.lastIndex < s.length) {
      if (/^\s*$/.test(s.slice(TOKEN.lastIndex))) break;
      const at = TOKEN.lastIndex;
      const m = TOKEN.exec(s);
      if (!m) err(`cannot read "${s.slice(at).trim()}"`);
      out.push(m![1] ? { kind: 'op', text: m![1] } : m![2] ? { kind: 'num', text: m![2] } : { kind: 'id', text: m![3]! });
    }
    return out;
  };

  const parseTerm = (toks: Token[], cur: { i: number }, err: (d: string) => never): bigint => {
    const t = toks[cur.i++];
    if (!t) return err('expected a value at the end of the line');
    if (t.kind === 'op' && t.text === '~') return ~parseTerm(toks, cur, err) & U64;
    if (t.kind === 'num') {
      const neg = t.text.startsWith('-');
      const digits = neg ? t.text.slice(1) : t.text;
      const v = /^0[0-7]+$/.test(digits) ? BigInt('0o' + digits.slice(1)) : BigInt(digits);
      if (v > U64) err(`${t.text} does not fit in 64 bits`);
      return BigInt.asUintN(64, neg ? -v : v);
    }
    if (t.kind === 'id') {
      const v = defines.get(t.text) ?? POLICY_CONSTANTS[t.text];
      if (v === undefined) err(`unknown constant ${t.text}`);
      return BigInt.asUintN(64, v!);
    }
    return err(`expected a value, got "${t.text}"`);
  };

  const parseValue = (toks: Token[], cur: { i: number }, err: (d: string) => never): bigint => {
    let v = parseTerm(toks, cur, err);
    while (toks[cur.i]?.text === '|') {
      cur.i++;
      v |= parseTerm(toks, cur, err);
    }
    return v;
  };

  const parseFilter = (toks: Token[], err: (d: string) => never): ArgCmp[][] => {
    const cur = { i: 0 };
    const alts: ArgCmp[][] = [];
    for (;;) {
      const all: ArgCmp[] = [];
      for (;;) {
        all.push(parseCmp(toks, cur, err));
        if (toks[cur.i]?.text !== '&&') break;
        cur.i++;
      }
      const seen = new Set<number>();
      for (const c of all) {
        if (seen.has(c.arg)) err(`arg${c.arg} is tested twice in one && group; libseccomp allows one test per argument there`);
        seen.add(c.arg);
      }
      alts.push(all);
      if (toks[cur.i]?.text !== '||') break;
      cur.i++;
    }
    if (cur.i !== toks.length) err(`unexpected "${toks[cur.i]!.text}"`);
    return alts;
  };

  const parseCmp = (toks: Token[], cur: { i: number }, err: (d: string) => never): ArgCmp => {
    // argN, or int(argN) for the low 32 bits only
    const isInt = toks[cur.i]?.kind === 'id' && toks[cur.i]!.text === 'int' && toks[cur.i + 1]?.text === '(';
    if (isInt) cur.i += 2;
    const a = toks[cur.i++];
    const am = a && a.kind === 'id' ? /^arg([0-5])$/.exec(a.text) : null;
    if (!am) return err(`expected arg0..arg5 or int(argN), got "${a?.text ?? 'end of line'}"`);
    const arg = Number(am[1]);
    const name = isInt ? `int(arg${arg})` : `arg${arg}`;
    if (isInt && toks[cur.i++]?.text !== ')') err(`expected ")" after int(arg${arg}`);
    const width = isInt ? U32 : U64;
    const op = toks[cur.i++];
    if (!op) return err(`expected a comparison after ${name}`);
    const ops: Record<string, ArgCmp['op']> = { '==': 'eq', '!=': 'ne', '<': 'lt', '<=': 'le', '>': 'gt', '>=': 'ge' };
    if (op.kind === 'op' && op.text in ops) {
      const v = parseValue(toks, cur, err);
      if (!isInt) return { arg, op: ops[op.text]!, a: v, b: 0n };
      if (op.text !== '==') err(`${name} can only be compared with == in & (libseccomp has no 32-bit ${op.text})`);
      return { arg, op: 'masked_eq', a: U32, b: v & U32 };
    }
    if (op.kind === 'id' && op.text === 'in') {
      // only bits of the mask may be set: (arg & ~mask) == 0
      return { arg, op: 'masked_eq', a: ~parseValue(toks, cur, err) & width, b: 0n };
    }
    if (op.kind === 'op' && op.text === '&') {
      const mask = parseValue(toks, cur, err) & width;
      if (toks[cur.i]?.text === '==') {
        cur.i++;
        const v = parseValue(toks, cur, err) & width;
        if ((v & ~mask & U64) !== 0n) err(`${name} & 0x${mask.toString(16)} can never equal 0x${v.toString(16)}`);
        return { arg, op: 'masked_eq', a: mask, b: v };
      }
      if (mask === 0n) err(`"${name} & 0" never holds`);
      return { arg, op: 'masked_eq', a: mask, b: mask }; // every bit of the mask set
    }
    return err(`unknown comparison "${op.text}" (use == != < <= > >= in &)`);
  };

  parseFile(entry);
  return rules;
}
