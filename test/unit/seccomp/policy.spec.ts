// Tests of the seccomp policy language and compiler: parsing good policies,
// one clear file:line error for each kind of bad line, includes, constants,
// libseccomp accepting the real policies, and real loads in child processes
// (allowed calls work, forbidden ones die with SIGSYS).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildFilter } from '../../../src/devices/seccomp/compile.js';
import { DEVICE_GLIBC_TUNABLES } from '../../../src/devices/contract.js';
import { readPolicy } from '../../../src/devices/seccomp/index.js';
import { resolveSyscall } from '../../../src/devices/seccomp/libseccomp.js';
import { parsePolicy, PolicyError, type PolicyRule } from '../../../src/devices/seccomp/policy.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const U64 = (1n << 64n) - 1n;

function parse(files: Record<string, string>, entry = 'main.policy', constants = {}): PolicyRule[] {
  return parsePolicy(entry, {
    readFile: (name) => {
      const text = files[name];
      if (text === undefined) throw Object.assign(new Error('no such file'), { code: 'ENOENT' });
      return text;
    },
    resolveSyscall,
    constants,
  });
}

function parseError(text: string, files: Record<string, string> = {}): PolicyError {
  try {
    parse({ 'main.policy': text, ...files });
  } catch (e) {
    assert.ok(e instanceof PolicyError, `expected a PolicyError, got ${e}`);
    return e;
  }
  assert.fail('the policy parsed, but it should not have');
}

describe('seccomp policy parser', () => {
  it('parses allow, return and argument filters', () => {
    const rules = parse({
      'main.policy': [
        '# a comment',
        '',
        'read: 1',
        'write: allow   # trailing comment',
        'clone3: return ENOSYS',
        'getppid: return 13',
        'ioctl: arg1 == FIONBIO || arg1 == FIOCLEX',
        'mmap: arg2 in ~PROT_EXEC',
        'clone: arg0 & CLONE_THREAD',
        'fcntl: arg1 & 0xff == 3 && arg0 != 0o7',
        'lseek: arg1 < 10 && arg2 <= 1 || arg1 > 100 && arg2 >= 2',
        'openat: return ENOENT if int(arg0) == AT_FDCWD && int(arg2) == O_RDONLY|O_CLOEXEC',
      ].join('\n'),
    });
    const by = Object.fromEntries(rules.map((r) => [r.syscall, r]));
    assert.equal(rules.length, 10);
    assert.deepEqual(by.read!.action, { type: 'allow' });
    assert.equal(by.read!.when, null);
    assert.equal(by.read!.nr, 0);
    assert.equal(by.read!.where, 'main.policy:3');
    assert.deepEqual(by.clone3!.action, { type: 'errno', errno: 38 });
    assert.deepEqual(by.getppid!.action, { type: 'errno', errno: 13 });
    assert.deepEqual(by.ioctl!.when, [
      [{ arg: 1, op: 'eq', a: 0x5421n, b: 0n }],
      [{ arg: 1, op: 'eq', a: 0x5451n, b: 0n }],
    ]);
    assert.deepEqual(by.mmap!.when, [[{ arg: 2, op: 'masked_eq', a: 4n, b: 0n }]]);
    assert.deepEqual(by.clone!.when, [[{ arg: 0, op: 'masked_eq', a: 0x10000n, b: 0x10000n }]]);
    assert.deepEqual(by.fcntl!.when, [[
      { arg: 1, op: 'masked_eq', a: 0xffn, b: 3n },
      { arg: 0, op: 'ne', a: 7n, b: 0n },
    ]]);
    assert.deepEqual(by.lseek!.when!.map((alt) => alt.map((c) => c.op)), [['lt', 'le'], ['gt', 'ge']]);
    assert.deepEqual(by.openat!.action, { type: 'errno', errno: 2 });
    assert.deepEqual(by.openat!.when, [[
      { arg: 0, op: 'masked_eq', a: 0xffffffffn, b: 0xffffff9cn },
      { arg: 2, op: 'masked_eq', a: 0xffffffffn, b: 0x80000n },
    ]]);
  });

  it('resolves @define, run-time and negative constants, ~ and |', () => {
    const rules = parse(
      {
        'main.policy': [
          '@define MY_FD 0x10',
          '@define BOTH MY_FD|PROT_READ',
          'read: arg0 == MY_FD',
          'write: arg0 == BOTH',
          'tgkill: int(arg0) == PID',
          'lseek: arg0 == -1',
          'pread64: arg0 in ~0',
        ].join('\n'),
      },
      'main.policy',
      { PID: 1234 },
    );
    const when = (name: string) => rules.find((r) => r.syscall === name)!.when![0]![0]!;
    assert.equal(when('read').a, 16n);
    assert.equal(when('write').a, 17n);
    assert.equal(when('tgkill').b, 1234n);
    assert.equal(when('lseek').a, U64);
    assert.equal(when('pread64').a, 0n);
  });

  it('follows @include once, relative to the policy folder', () => {
    const rules = parse({
      'main.policy': '@include a.policy\n@include b.policy\nread: 1',
      'a.policy': '@include base.policy\nwrite: 1',
      'b.policy': '@include base.policy\nclose: 1',
      'base.policy': 'exit_group: 1',
    });
    assert.deepEqual(rules.map((r) => `${r.syscall}@${r.where}`), [
      'exit_group@base.policy:1',
      'write@a.policy:2',
      'close@b.policy:2',
      'read@main.policy:3',
    ]);
  });

  it('lets several filtered lines add alternatives to one system call', () => {
    const rules = parse({ 'main.policy': '@include c.policy\nopenat: arg0 == 9', 'c.policy': 'openat: return ENOENT if arg0 == 1' });
    assert.equal(rules.filter((r) => r.syscall === 'openat').length, 2);
  });

  const bad: [string, string, RegExp][] = [
    ['a line without a colon', 'read 1', /main\.policy:1: expected "syscall: action"/],
    ['an unknown system call', 'read: 1\nfrobnicate: 1', /main\.policy:2: unknown system call "frobnicate"/],
    ['a bad system call name', 'Read-X: 1', /main\.policy:1: "Read-X" is not a system call name/],
    ['an empty action', 'read:', /main\.policy:1: read has no action/],
    ['a ": 0" line', 'read: 0', /main\.policy:1: "read: 0" is meaningless/],
    ['an unknown errno', 'read: return EWHAT', /main\.policy:1: "return" needs an errno name/],
    ['an errno out of range', 'read: return 5000', /main\.policy:1: "return" needs an errno/],
    ['an unknown constant', '\nioctl: arg1 == FIONOPE', /main\.policy:2: unknown constant FIONOPE/],
    ['arg6', 'read: arg6 == 1', /main\.policy:1: expected arg0\.\.arg5/],
    ['a missing comparison', 'read: arg0', /main\.policy:1: expected a comparison after arg0/],
    ['an unknown comparison', 'read: arg0 ~ 1', /main\.policy:1: unknown comparison "~"/],
    ['a missing value', 'read: arg0 ==', /main\.policy:1: expected a value at the end/],
    ['garbage after a filter', 'read: arg0 == 1 2', /main\.policy:1: unexpected "2"/],
    ['an unreadable character', 'read: arg0 == $x', /main\.policy:1: cannot read "\$x"/],
    ['the same argument twice in &&', 'read: arg0 == 1 && arg0 == 2', /main\.policy:1: arg0 is tested twice/],
    ['a second rule beside an unconditional one', 'read: 1\nread: arg0 == 1', /main\.policy:2: read already has a rule at main\.policy:1/],
    ['an impossible mask', 'read: arg0 & 1 == 2', /main\.policy:1: arg0 & 0x1 can never equal 0x2/],
    ['& 0', 'read: arg0 & 0', /main\.policy:1: "arg0 & 0" never holds/],
    ['int() with <', 'read: int(arg0) < 3', /main\.policy:1: int\(arg0\) can only be compared with ==/],
    ['int( without )', 'read: int(arg0 == 3', /main\.policy:1: expected "\)" after int\(arg0/],
    ['a value over 64 bits', 'read: arg0 == 0x10000000000000000', /main\.policy:1: .* does not fit in 64 bits/],
    ['an unknown directive', '@frob x', /main\.policy:1: unknown directive @frob/],
    ['a bad @define', '@define lower 1', /main\.policy:1: @define takes an UPPER_CASE name/],
    ['a redefined constant', '@define PROT_READ 3', /main\.policy:1: constant PROT_READ is already defined/],
    ['an include path', '@include ../etc/x.policy', /main\.policy:1: @include takes a policy file name in the same folder/],
    ['a missing include', 'read: 1\n@include gone.policy', /main\.policy:2: cannot read included policy file gone\.policy \(ENOENT\)/],
  ];
  for (const [what, text, re] of bad) {
    it(`rejects ${what} with file:line`, () => {
      const e = parseError(text);
      assert.match(e.message, re);
      assert.equal(e.file, 'main.policy');
    });
  }

  it('rejects an include cycle at the including line', () => {
    const e = parseError('@include a.policy', { 'a.policy': 'read: 1\n@include main.policy' });
    assert.match(e.message, /^a\.policy:2: @include cycle: main\.policy -> a\.policy -> main\.policy/);
  });

  it('reports a bad line in an included file by that file', () => {
    const e = parseError('@include a.policy', { 'a.policy': 'read: 1\nwrite: arg9 == 1' });
    assert.match(e.message, /^a\.policy:2: /);
  });

  it('reports a missing entry file', () => {
    assert.throws(() => parse({}, 'nope.policy'), /nope\.policy:0: cannot read policy file/);
  });
});

describe('the real policies', () => {
  const names = (rules: PolicyRule[], allowOnly = true) =>
    new Set(rules.filter((r) => !allowOnly || r.action.type === 'allow').map((r) => r.syscall));

  it('blk.policy layers common.policy and adds the image I/O', () => {
    const rules = readPolicy('blk');
    const allowed = names(rules);
    for (const s of ['read', 'write', 'epoll_pwait', 'futex', 'exit_group', 'pread64', 'pwrite64', 'preadv', 'pwritev', 'fdatasync', 'fsync', 'fallocate']) {
      assert.ok(allowed.has(s), `${s} should be allowed`);
    }
    assert.ok(rules.some((r) => r.where.startsWith('common.policy:')));
  });

  it('allows none of the calls a device must never make', () => {
    const allowed = names(readPolicy('blk'));
    for (const s of ['socket', 'connect', 'bind', 'execve', 'execveat', 'fork', 'vfork', 'ptrace', 'process_vm_readv', 'process_vm_writev', 'kill', 'tkill', 'open', 'openat', 'openat2', 'mount', 'bpf', 'unshare', 'setns', 'memfd_create', 'pkey_mprotect', 'prctl', 'io_uring_setup']) {
      assert.ok(!allowed.has(s), `${s} must not be allowed`);
    }
    const rules = readPolicy('blk');
    const clone = rules.find((r) => r.syscall === 'clone')!;
    assert.ok(clone.when, 'clone must be filtered to threads');
    const noExec = { arg: 2, op: 'masked_eq', a: 4n, b: 0n };
    assert.deepEqual(rules.find((x) => x.syscall === 'mprotect')!.when, [[noExec]], 'mprotect must forbid PROT_EXEC');
    assert.deepEqual(rules.find((x) => x.syscall === 'mmap')!.when, [[noExec, { arg: 3, op: 'masked_eq', a: 0x20n, b: 0x20n }]], 'mmap must forbid PROT_EXEC and fd mappings');
  });

  it('is accepted by libseccomp', () => {
    buildFilter(readPolicy('blk'), 'kill').release();
    buildFilter(readPolicy('blk'), 'log').release();
  });

  it('rejects an unknown device kind and a kind that is a path', () => {
    assert.throws(() => readPolicy('nosuch'), /nosuch\.policy:0: cannot read policy file/);
    assert.throws(() => readPolicy('../x'), /is not a policy name/);
  });
});

describe('loading a policy (child processes)', function () {
  this.timeout(30000);
  const fixture = path.join(here, 'fixtures', 'load-policy.ts');
  const run = (mode: string, action: string, o: { flags?: string[]; env?: Record<string, string> } = {}) => {
    const flags = o.flags ?? ['--jitless', '--no-expose-wasm'];
    const r = spawnSync(process.execPath, [...flags, '--import', 'tsx', fixture, 'blk', mode, action], {
      encoding: 'utf8',
      cwd: path.join(here, '..', '..', '..'),
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...(o.env ?? { GLIBC_TUNABLES: DEVICE_GLIBC_TUNABLES }) },
    });
    return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
  };

  it('enforce: allowed calls work and the process exits normally', () => {
    const r = run('enforce', 'none');
    assert.equal(r.signal, null, r.stderr);
    assert.equal(r.status, 0);
    assert.match(r.stdout, /allowed getpid -> ok/);
    assert.equal(r.stderr, '');
  });

  it('enforce: socket() kills the process with SIGSYS', () => {
    const r = run('enforce', 'socket');
    assert.equal(r.signal, 'SIGSYS');
    assert.doesNotMatch(r.stdout, /socket ->/);
  });

  it('enforce: a call not listed at all (getppid) kills with SIGSYS', () => {
    assert.equal(run('enforce', 'getppid').signal, 'SIGSYS');
  });

  it('enforce: mapping an inherited fd (MAP_SHARED, writable) kills; anonymous memory is still mapped', () => {
    const r = run('enforce', 'mmap-fd');
    assert.equal(r.signal, 'SIGSYS', r.stdout + r.stderr);
    assert.match(r.stdout, /mmap anonymous -> ok/);
    assert.doesNotMatch(r.stdout, /mmap fd ->/);
  });

  it('enforce: clone of a thread in a new namespace kills', () => {
    // CLONE_THREAD|CLONE_NEWPID: the kernel would refuse it (EINVAL) anyway,
    // so the call is harmless to try; the filter must refuse it first.
    const r = run('enforce', 'clone-newpid');
    assert.equal(r.signal, 'SIGSYS', r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout, /clone ->/);
  });

  it('enforce: openat kills, even in the shape glibc itself uses', () => {
    assert.equal(run('enforce', 'openat-benign').signal, 'SIGSYS');
  });

  it('enforce: refuses, in one sentence, a process without --jitless or the malloc tunable', () => {
    const noJit = run('enforce', 'none', { flags: [] });
    assert.equal(noJit.signal, null);
    assert.notEqual(noJit.status, 0);
    assert.match(noJit.stderr, /cannot enforce the seccomp policy of device "blk": node runs without --jitless/);
    const noTunable = run('enforce', 'none', { env: {} });
    assert.match(noTunable.stderr, /GLIBC_TUNABLES lacks glibc\.malloc\.arena_max=1/);
    assert.doesNotMatch(noTunable.stdout, /allowed/);
  });

  it('log: the forbidden call goes through, with a loud warning', () => {
    const r = run('log', 'socket');
    assert.equal(r.signal, null);
    assert.match(r.stdout, /socket -> \d+/);
    assert.match(r.stderr, /WARNING: seccomp for device "blk" is in LOG mode/);
  });

  it('off: nothing is installed, with a loud warning', () => {
    const r = run('off', 'socket');
    assert.equal(r.signal, null);
    assert.match(r.stdout, /socket -> \d+/);
    assert.match(r.stderr, /WARNING: seccomp is OFF for device "blk"/);
  });
});
