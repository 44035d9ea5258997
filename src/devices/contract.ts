// What every device process is started with, which its launcher (the core's
// jail launcher, src/core/jail/launch.ts) must provide: the fixed fd layout,
// and the Node flags and environment its seccomp policy depends on.
//
// The fds, placed exactly so:
//
//   0  /dev/null
//   1  /dev/null
//   2  log: pino JSON lines, written synchronously
//   3  control socket (one end of a socketpair; src/ipc/)
//   4  guest memory memfd (mapped MAP_SHARED with the region table of the config)
//   5  backend fd (blk: the disk image, opened by the core; /dev/null when none)
//   6 + 2i  queue i's kick eventfd (the ioeventfd KVM writes on a queue notify)
//   7 + 2i  queue i's call eventfd (the irqfd this process writes to interrupt)
//   6 + 2n  (n queues) the in-flight record file, when the config has `inflight`
//           (the queues' records, then the kind's own state from inflight.stateOffset)
export const FD_LOG = 2;
export const FD_CONTROL = 3;
export const FD_MEMORY = 4;
export const FD_BACKEND = 5;
export const FD_FIRST_QUEUE = 6;

export const kickFd = (queue: number): number => FD_FIRST_QUEUE + 2 * queue;
export const callFd = (queue: number): number => FD_FIRST_QUEUE + 2 * queue + 1;
export const inflightFd = (numQueues: number): number => FD_FIRST_QUEUE + 2 * numQueues;

/**
 * Node flags of a device process: no JIT, so no executable memory, which the
 * policies forbid (and no WebAssembly, which would need it).
 */
export const DEVICE_NODE_FLAGS = ['--jitless', '--no-expose-wasm'];

/**
 * One malloc arena: with several, glibc's free() may open
 * /proc/sys/vm/overcommit_memory during a GC, and the policies forbid open.
 */
export const DEVICE_GLIBC_TUNABLES = 'glibc.malloc.arena_max=1';
