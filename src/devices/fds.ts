// The fixed file-descriptor layout of every device process. The launcher
// (the core's jail, or the test harness) must place the fds exactly so:
//
//   0  /dev/null
//   1  /dev/null
//   2  log: pino JSON lines, written synchronously
//   3  control socket (one end of a socketpair; src/ipc/)
//   4  guest memory memfd (mapped MAP_SHARED with the region table of the config)
//   5  backend fd (blk: the disk image, opened by the core; /dev/null when none)
//   6 + 2i  queue i's kick eventfd (the ioeventfd KVM writes on a queue notify)
//   7 + 2i  queue i's call eventfd (the irqfd this process writes to interrupt)
export const FD_LOG = 2;
export const FD_CONTROL = 3;
export const FD_MEMORY = 4;
export const FD_BACKEND = 5;
export const FD_FIRST_QUEUE = 6;

export const kickFd = (queue: number): number => FD_FIRST_QUEUE + 2 * queue;
export const callFd = (queue: number): number => FD_FIRST_QUEUE + 2 * queue + 1;
