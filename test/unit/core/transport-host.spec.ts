// The VM side of the virtio-pci transport: an MSI the guest aimed at no CPU
// is dropped instead of throwing into the device process's message handler,
// and a GSI route KVM refuses does not stay in the table to break every
// later update (checked on this host's /dev/kvm, skipped without it).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Bus } from '../../../src/core/bus.js';
import { FIRST_MSI_GSI, Kvm, type Vm } from '../../../src/core/kvm/vm.js';
import { KvmTransportHost } from '../../../src/core/virtio/transport-host.js';
import * as libc from '../../../src/sys/libc.js';

function kvmUsable(): boolean {
  try {
    fs.accessSync('/dev/kvm', fs.constants.R_OK | fs.constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

describe('KvmTransportHost and Vm interrupt routing', function () {
  it('drops an MSI KVM cannot deliver instead of throwing', function () {
    const vm = { signalMsi: () => { throw new libc.SysError('ioctl 0xae... (KVM_SIGNAL_MSI)', 1); } } as unknown as Vm;
    const host = new KvmTransportHost(vm, new Bus('mmio'));
    assert.doesNotThrow(() => host.signalMsi({ addressLo: 0xfee05000, addressHi: 0, data: 0x41 }));
  });

  it('keeps the routing table loadable after KVM refuses a route', function () {
    if (!kvmUsable()) this.skip();
    const vm = Kvm.open().createVm();
    try {
      vm.createIrqchip();
      assert.throws(() => vm.setMsiRoute({ gsi: 1 << 20, addressLo: 0xfee00000, addressHi: 0, data: 0x41 }), libc.SysError);
      vm.setMsiRoute({ gsi: FIRST_MSI_GSI, addressLo: 0xfee00000, addressHi: 0, data: 0x41 });
    } finally {
      libc.close(vm.fd);
      libc.close(vm.kvm.fd);
    }
  });
});
