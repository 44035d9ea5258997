// libseccomp (libseccomp.so.2) bound through koffi: the only place the policy
// compiler touches the library. Holds the numeric constants of seccomp.h that
// the compiler needs and thin wrappers that throw on failure.
import koffi from 'koffi';

export const SCMP_ACT_KILL_PROCESS = 0x80000000;
export const SCMP_ACT_LOG = 0x7ffc0000;
export const SCMP_ACT_ALLOW = 0x7fff0000;
export const scmpActErrno = (errno: number): number => (0x00050000 | (errno & 0xffff)) >>> 0;

export const SCMP_FLTATR_ACT_BADARCH = 2;
export const SCMP_FLTATR_CTL_NNP = 3;
export const SCMP_FLTATR_CTL_TSYNC = 4;
/** 2: the filter finds a system call by a binary search on its number, not a linear scan (libseccomp ≥ 2.5). */
export const SCMP_FLTATR_CTL_OPTIMIZE = 8;

/** enum scmp_compare */
export const SCMP_CMP = { ne: 1, lt: 2, le: 3, eq: 4, ge: 5, gt: 6, masked_eq: 7 } as const;
export type CmpOp = keyof typeof SCMP_CMP;

/** One argument comparison, as struct scmp_arg_cmp wants it. */
export interface ArgCmp {
  arg: number;
  op: CmpOp;
  /** for masked_eq: the mask */
  a: bigint;
  /** for masked_eq: the value the masked argument must equal; else unused */
  b: bigint;
}

let fns: {
  init: (def: number) => unknown;
  release: (ctx: unknown) => void;
  attrSet: (ctx: unknown, attr: number, value: number) => number;
  ruleAddArray: (ctx: unknown, action: number, nr: number, n: number, arr: Uint8Array | null) => number;
  load: (ctx: unknown) => number;
  resolveName: (name: string) => number;
} | null = null;

function bind(): NonNullable<typeof fns> {
  if (fns) return fns;
  let lib: ReturnType<typeof koffi.load>;
  try {
    lib = koffi.load('libseccomp.so.2');
  } catch {
    throw new Error('libseccomp.so.2 is not installed (Debian package libseccomp2); device processes cannot be confined without it');
  }
  fns = {
    init: lib.func('void *seccomp_init(uint32_t def_action)'),
    release: lib.func('void seccomp_release(void *ctx)'),
    attrSet: lib.func('int seccomp_attr_set(void *ctx, int attr, uint32_t value)'),
    // struct scmp_arg_cmp is 24 bytes: u32 arg, u32 op, u64 datum_a, u64 datum_b;
    // we pack the array ourselves.
    ruleAddArray: lib.func('int seccomp_rule_add_array(void *ctx, uint32_t action, int syscall, unsigned int n, const uint8_t *arr)'),
    load: lib.func('int seccomp_load(void *ctx)'),
    resolveName: lib.func('int seccomp_syscall_resolve_name(const char *name)'),
  };
  return fns;
}

/** The native syscall number of `name`, or -1 when libseccomp does not know it. */
export function resolveSyscall(name: string): number {
  return bind().resolveName(name);
}

function packArgs(cmps: readonly ArgCmp[]): Uint8Array | null {
  if (cmps.length === 0) return null;
  const buf = new Uint8Array(24 * cmps.length);
  const dv = new DataView(buf.buffer);
  cmps.forEach((c, i) => {
    dv.setUint32(i * 24, c.arg, true);
    dv.setUint32(i * 24 + 4, SCMP_CMP[c.op], true);
    dv.setBigUint64(i * 24 + 8, BigInt.asUintN(64, c.a), true);
    dv.setBigUint64(i * 24 + 16, BigInt.asUintN(64, c.b), true);
  });
  return buf;
}

/** A libseccomp filter context; `release()` it when done (load does not). */
export class SeccompFilter {
  private ctx: unknown;

  constructor(defaultAction: number) {
    const f = bind();
    this.ctx = f.init(defaultAction >>> 0);
    if (!this.ctx) throw new Error('seccomp_init failed');
  }

  private fail(what: string, rc: number): never {
    throw new Error(`${what} failed: errno ${-rc}`);
  }

  attr(attr: number, value: number): void {
    const rc = bind().attrSet(this.ctx, attr, value >>> 0);
    if (rc < 0) this.fail(`seccomp_attr_set(${attr})`, rc);
  }

  /** Adds one rule; its comparisons are ANDed. Returns 0 or a negative errno. */
  addRule(action: number, nr: number, cmps: readonly ArgCmp[]): number {
    return bind().ruleAddArray(this.ctx, action >>> 0, nr, cmps.length, packArgs(cmps));
  }

  load(): void {
    const rc = bind().load(this.ctx);
    if (rc < 0) this.fail('seccomp_load', rc);
  }

  release(): void {
    if (this.ctx) bind().release(this.ctx);
    this.ctx = null;
  }
}
