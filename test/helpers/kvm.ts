// Whether this host can run a VM: guest and console tests need a working
// /dev/kvm and skip — loudly, once, with the reason — where there is none
// (a machine whose KVM module did not bind, a container without the device).
// Device-process, jail, unit and CLI-error tests need no KVM and always run.
import { Kvm } from '../../src/core/kvm/vm.js';
import * as libc from '../../src/sys/libc.js';

let reason: string | null | undefined;

/** Why no VM can run here, or null when KVM works. */
export function kvmUnavailable(): string | null {
  if (reason !== undefined) return reason;
  try {
    const kvm = Kvm.open();
    libc.close(kvm.fd);
    reason = null;
  } catch (e) {
    reason = (e as Error).message;
    process.stderr.write(`\n  NOTE: KVM is not usable on this host (${reason}): tests that boot a VM are skipped (pending)\n\n`);
  }
  return reason;
}

/** In a mocha `before`/`it`: skips the suite or test when no VM can run here. */
export function requireKvm(ctx: Mocha.Context): void {
  if (kvmUnavailable() !== null) ctx.skip();
}
