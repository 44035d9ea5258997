// Sealing the core once it is set up: everything it needs to open or create
// is open (KVM, guest memory, backends, sockets, the launcher), so it turns
// its root into an empty one if it has a mount namespace of its own
// (core-namespace.ts), drops to an unprivileged uid and gid if it runs as root (the ids its
// devices get), installs policies/core.policy on all its threads (seccomp
// with TSYNC, no_new_privs) and makes itself non-dumpable (no ptrace or
// /proc/PID/mem by a process of the same uid, such as a device). From then on starting a
// device is the launcher's business. --seccomp=log|off apply here as to the
// devices; `--no-jail-core` skips the seal, for debugging, and says so loudly.
import type { Logger } from 'pino';
import { loadFilter } from '../../devices/seccomp/compile.js';
import { readPolicy } from '../../devices/seccomp/index.js';
import { prctl } from '../../sys/libc.js';
import { inCoreNamespace, pivotToEmptyRoot } from './core-namespace.js';
import type { HostIds } from './identity.js';
import type { SeccompMode } from './launch.js';
import { RUNNING_VM_REQUESTS } from '../kvm/ioctls.js';

const PR_SET_DUMPABLE = 4;


export function sealCore(mode: SeccompMode, log: Logger, ids?: HostIds): void {
  const rules = mode === 'off' ? [] : readPolicy('core', RUNNING_VM_REQUESTS); // a file: read before the root goes
  pivotToEmptyRoot();
  if (ids && process.getuid!() === 0) {
    // glibc applies these to every thread of the process (the vCPU threads wait, not yet released, in Atomics.wait).
    process.setgroups!([]);
    process.setgid!(ids.gid);
    process.setuid!(ids.uid);
  }
  prctl(PR_SET_DUMPABLE, 0);
  if (mode === 'off') {
    process.stderr.write('splitvm: WARNING: --seccomp=off: the core itself runs WITHOUT a system-call filter\n');
    return;
  }
  loadFilter(rules, mode === 'log' ? 'log' : 'kill');
  log.info({ seccomp: mode, uid: process.getuid!(), gid: process.getgid!(), emptyRoot: inCoreNamespace() }, 'core sealed: seccomp policy installed');
}
