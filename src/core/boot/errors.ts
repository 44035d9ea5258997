// Errors the boot path raises for things a user can cause: a file that is not
// a kernel, a command line that is too long, an initrd that does not fit.
// Each carries one sentence meant to be shown as is.

/** A boot input (kernel, initrd, command line, CPU count) the VMM cannot use. */
export class BootError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BootError';
  }
}

/** The kernel image is malformed or not a kernel this VMM can boot. */
export class KernelFormatError extends BootError {
  constructor(message: string) {
    super(message);
    this.name = 'KernelFormatError';
  }
}
