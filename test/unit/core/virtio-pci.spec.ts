// The virtio-pci transport as a guest driver sees it, through config space
// (0xCF8/0xCFC) and BAR0, with a recording fake in place of KVM and of the
// device process: feature negotiation, queue setup, activation, MSI-X
// routing to irqfds, masking, configuration interrupts, reset.
import assert from 'node:assert/strict';
import { PciRoot } from '../../../src/core/pci/root.js';
import type { MsiMessage } from '../../../src/core/pci/msix.js';
import { BAR0, Status, VirtioPciTransport, type DeviceLink, type TransportHost } from '../../../src/core/virtio/pci-transport.js';
import type { BusDevice } from '../../../src/core/bus.js';

const BAR = 0xc0000000;

class FakeHost implements TransportHost {
  events: string[] = [];
  private gsi = 24;
  mapped = new Map<number, BusDevice>();
  allocGsi() { return this.gsi++; }
  setMsiRoute(gsi: number, m: MsiMessage) { this.events.push(`route ${gsi} ${m.addressLo.toString(16)}/${m.data}`); }
  assignIrqfd(fd: number, gsi: number) { this.events.push(`irqfd ${fd}->${gsi}`); }
  deassignIrqfd(fd: number, gsi: number) { this.events.push(`no-irqfd ${fd}->${gsi}`); }
  signalMsi(m: MsiMessage) { this.events.push(`msi ${m.data}`); }
  assignIoeventfd(fd: number, addr: number, len: number) { this.events.push(`ioeventfd ${fd}@${addr.toString(16)}/${len}`); }
  deassignIoeventfd(fd: number, addr: number) { this.events.push(`no-ioeventfd ${fd}@${addr.toString(16)}`); }
  mapBar(addr: number, _len: number, dev: BusDevice) {
    if (addr === 0xe0000000) return false; // "another device is there"
    this.mapped.set(addr, dev);
    return true;
  }
  unmapBar(addr: number) { this.mapped.delete(addr); }
}

class FakeLink implements DeviceLink {
  activations: { features: number; queues: unknown[] }[] = [];
  resets = 0;
  configWrites: [number, number[]][] = [];
  activate(features: number, queues: unknown[]) { this.activations.push({ features, queues }); }
  async reset() { this.resets++; }
  writeConfig(offset: number, data: Uint8Array) { this.configWrites.push([offset, [...data]]); }
}

function setup() {
  const host = new FakeHost();
  const link = new FakeLink();
  const t = new VirtioPciTransport({
    deviceId: 2, classCode: 0x018000, deviceFeatures: 2 ** 32 + (1 << 9) + (1 << 6), numQueues: 2, maxQueueSize: 256,
    config: Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), kickFds: [100, 101], callFds: [200, 201],
  }, host, link, BAR);
  const root = new PciRoot();
  const slot = root.add(t);
  const cfg = (reg: number, size: number, value?: number) => {
    const a = new Uint8Array(4);
    new DataView(a.buffer).setUint32(0, 0x80000000 | (slot << 11) | (reg & 0xfc), true);
    root.write(0, a);
    const d = new Uint8Array(size);
    if (value === undefined) {
      root.read(4 + (reg & 3), d);
      return d.reduceRight((v, b) => v * 256 + b, 0);
    }
    for (let i = 0; i < size; i++) d[i] = (value >>> (8 * i)) & 0xff;
    root.write(4 + (reg & 3), d);
    return 0;
  };
  const rd = (off: number, size: number): number => {
    const d = new Uint8Array(size);
    t.read(off, d);
    return d.reduceRight((v, b) => v * 256 + b, 0);
  };
  const wr = (off: number, size: number, value: number): void | Promise<void> => {
    const d = new Uint8Array(size);
    for (let i = 0; i < size; i++) d[i] = Math.floor(value / 256 ** i) & 0xff;
    return t.write(off, d);
  };
  return { host, link, t, root, slot, cfg, rd, wr };
}

/** Walks the capability list: [id, offset, cfg_type] for each. */
function caps(cfg: (r: number, s: number) => number): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (let p = cfg(0x34, 1); p; p = cfg(p + 1, 1)) out.push([cfg(p, 1), p, cfg(p + 3, 1)]);
  return out;
}

describe('virtio-pci transport', function () {
  it('shows a host bridge at slot 0 and the device with modern virtio ids', function () {
    const { cfg, root, slot } = setup();
    assert.ok(slot > 0);
    // 00:00.0: what Linux's type-1 probe looks for (a host bridge).
    const select = new Uint8Array(4);
    new DataView(select.buffer).setUint32(0, 0x80000000 | 0x08, true);
    root.write(0, select);
    const classReg = new Uint8Array(4);
    root.read(4, classReg);
    assert.deepEqual([classReg[3], classReg[2]], [0x06, 0x00], 'class: host bridge');
    new DataView(select.buffer).setUint32(0, 0x80000000, true);
    root.write(0, select);
    const vendor = new Uint8Array(2);
    root.read(4, vendor);
    assert.equal(vendor[0]! | (vendor[1]! << 8), 0x8086);
    assert.equal(cfg(0x00, 2), 0x1af4);
    assert.equal(cfg(0x02, 2), 0x1042);
    assert.equal(cfg(0x08, 1), 1, 'revision 1 (modern)');
    assert.equal(cfg(0x0b, 1), 0x01, 'class: mass storage');
  });

  it('sizes BAR0 like real hardware', function () {
    const { cfg } = setup();
    assert.equal(cfg(0x10, 4), BAR);
    cfg(0x10, 4, 0xffffffff);
    assert.equal(cfg(0x10, 4), (~(BAR0.SIZE - 1)) >>> 0);
    cfg(0x10, 4, BAR);
    assert.equal(cfg(0x10, 4), BAR);
  });

  it('lists the common, ISR, device, notify and MSI-X capabilities', function () {
    const { cfg } = setup();
    const list = caps(cfg);
    assert.deepEqual(list.filter(([id]) => id === 9).map(([, , type]) => type), [1, 3, 4, 2]);
    const notify = list.find(([id, , type]) => id === 9 && type === 2)!;
    assert.equal(cfg(notify[1] + 16, 4), BAR0.NOTIFY_MULTIPLIER, 'notify_off_multiplier');
    const msix = list.find(([id]) => id === 0x11)!;
    assert.equal((cfg(msix[1] + 2, 2) & 0x7ff) + 1, 3, 'one vector per queue plus config');
  });

  it('maps BAR0 and the notify ioeventfds when memory decoding is enabled', function () {
    const { cfg, host } = setup();
    assert.equal(host.mapped.size, 0);
    cfg(0x04, 2, 0x6);
    assert.ok(host.mapped.has(BAR));
    assert.deepEqual(host.events.filter((e) => e.startsWith('ioeventfd')), [
      `ioeventfd 100@${(BAR + BAR0.NOTIFY).toString(16)}/2`,
      `ioeventfd 101@${(BAR + BAR0.NOTIFY + 4).toString(16)}/2`,
    ]);
    cfg(0x10, 4, 0xd0000000);
    assert.ok(host.mapped.has(0xd0000000) && !host.mapped.has(BAR), 'BAR moved');
    assert.ok(host.events.includes(`no-ioeventfd 100@${(BAR + BAR0.NOTIFY).toString(16)}`));
    host.events = [];
    cfg(0x10, 4, 0xe0000000); // over another device: nothing decodes, no ioeventfd
    assert.ok(!host.mapped.has(0xd0000000) && !host.mapped.has(0xe0000000));
    assert.ok(!host.events.some((e) => e.startsWith('ioeventfd')), host.events.join());
    host.events = [];
    cfg(0x10, 4, 0xd0000000);
    assert.ok(host.mapped.has(0xd0000000) && host.events.some((e) => e.startsWith('ioeventfd 100')));
  });

  it('negotiates features and refuses FEATURES_OK without VERSION_1 or with unoffered bits', async function () {
    const { rd, wr } = setup();
    wr(0x00, 4, 1);
    assert.equal(rd(0x04, 4), 1, 'VERSION_1 in the high word');
    wr(0x00, 4, 0);
    assert.equal(rd(0x04, 4), (1 << 9) | (1 << 6));
    await wr(0x14, 1, Status.ACKNOWLEDGE | Status.DRIVER);
    wr(0x08, 4, 0);
    wr(0x0c, 4, 1 << 9);
    await wr(0x14, 1, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    assert.equal(rd(0x14, 1) & Status.FEATURES_OK, 0, 'no VERSION_1: refused');
    wr(0x08, 4, 1);
    wr(0x0c, 4, 1 | 2);
    await wr(0x14, 1, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    assert.equal(rd(0x14, 1) & Status.FEATURES_OK, 0, 'unoffered bit 33: refused');
    wr(0x0c, 4, 1);
    await wr(0x14, 1, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    assert.ok(rd(0x14, 1) & Status.FEATURES_OK);
  });

  it('activates the device with the enabled queues, routes vectors and honours masks', async function () {
    const { rd, wr, cfg, link, host } = setup();
    cfg(0x04, 2, 0x6);
    const msixCap = caps(cfg).find(([id]) => id === 0x11)![1];
    cfg(msixCap + 2, 2, 0x8000); // MSI-X enable
    for (let v = 0; v < 3; v++) {
      wr(BAR0.MSIX_TABLE + v * 16, 4, 0xfee00000);
      wr(BAR0.MSIX_TABLE + v * 16 + 8, 4, 0x40 + v);
      wr(BAR0.MSIX_TABLE + v * 16 + 12, 4, 0); // unmask
    }
    await wr(0x14, 1, Status.ACKNOWLEDGE | Status.DRIVER);
    wr(0x08, 4, 1);
    wr(0x0c, 4, 1);
    wr(0x08, 4, 0);
    wr(0x0c, 4, 1 << 9);
    await wr(0x14, 1, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    wr(0x10, 2, 2); // config vector
    assert.equal(rd(0x12, 2), 2, 'num_queues');
    wr(0x16, 2, 0);
    assert.equal(rd(0x18, 2), 256);
    wr(0x18, 2, 100); // not a power of 2: ignored
    assert.equal(rd(0x18, 2), 256);
    wr(0x18, 2, 128);
    wr(0x1a, 2, 0);
    wr(0x20, 8, 0x10000);
    wr(0x28, 4, 0x11000);
    wr(0x2c, 4, 0);
    wr(0x30, 8, 0x12000);
    wr(0x1c, 2, 1);
    assert.ok(host.events.includes('irqfd 200->24'), `queue 0 vector routed: ${host.events}`);
    await wr(0x14, 1, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK);
    assert.deepEqual(link.activations, [{ features: 2 ** 32 + (1 << 9), queues: [{ index: 0, size: 128, desc: 0x10000, avail: 0x11000, used: 0x12000 }] }]);
    wr(0x20, 8, 0x99000); // frozen after DRIVER_OK
    assert.equal(rd(0x20, 4), 0x10000);

    host.events = [];
    wr(BAR0.MSIX_TABLE + 12, 4, 1); // mask vector 0
    assert.deepEqual(host.events, ['no-irqfd 200->24']);
    host.events = [];
    wr(BAR0.MSIX_TABLE + 12, 4, 0);
    assert.deepEqual(host.events, ['irqfd 200->24']);

    host.events = [];
    cfg(msixCap + 2, 2, 0x0000); // MSI-X disabled: no queue can interrupt
    assert.deepEqual(host.events, ['no-irqfd 200->24']);
  });

  it('sends a config interrupt on config change, held while masked, and reads the new config', async function () {
    const { rd, wr, cfg, host, t } = setup();
    cfg(0x04, 2, 0x6);
    const msixCap = caps(cfg).find(([id]) => id === 0x11)![1];
    cfg(msixCap + 2, 2, 0x8000);
    wr(BAR0.MSIX_TABLE + 2 * 16 + 8, 4, 0x77);
    wr(0x10, 2, 2);
    t.configChanged(Uint8Array.of(9, 9, 9, 9, 9, 9, 9, 9));
    assert.ok(!host.events.includes('msi 119'), 'masked: not delivered');
    assert.equal(rd(BAR0.MSIX_PBA, 1) & 4, 4, 'pending bit');
    wr(BAR0.MSIX_TABLE + 2 * 16 + 12, 4, 0);
    assert.ok(host.events.includes('msi 119'), 'delivered on unmask');
    assert.equal(rd(BAR0.MSIX_PBA, 1) & 4, 0);
    assert.equal(rd(0x15, 1), 1, 'config generation');
    assert.equal(rd(BAR0.DEVICE, 4), 0x09090909);
    assert.equal(rd(BAR0.ISR, 1), 2, 'ISR config bit, cleared on read');
    assert.equal(rd(BAR0.ISR, 1), 0);
  });

  it('sets DEVICE_NEEDS_RESET and clears everything on reset, waiting for the device', async function () {
    const { rd, wr, link, t } = setup();
    await wr(0x14, 1, Status.ACKNOWLEDGE);
    t.needsReset();
    assert.ok(rd(0x14, 1) & Status.DEVICE_NEEDS_RESET);
    await wr(0x14, 1, 0);
    assert.equal(rd(0x14, 1), 0);
    assert.equal(link.resets, 1);
  });

  it('forwards device config writes, leaves the config to the device, and ignores reads past the end', async function () {
    const { rd, wr, link } = setup();
    await wr(BAR0.DEVICE + 4, 1, 0xaa);
    assert.deepEqual(link.configWrites, [[4, [0xaa]]]);
    assert.equal(rd(BAR0.DEVICE + 4, 1), 5, 'a read-only field keeps its value until the device says otherwise');
    assert.equal(rd(BAR0.DEVICE + 100, 4), 0);
  });
});

describe('virtio-pci transport against a hostile driver', function () {
  /** ACKNOWLEDGE, DRIVER, features VERSION_1, FEATURES_OK; then queue 0 set up and enabled. */
  async function negotiated(s: ReturnType<typeof setup>) {
    const { wr } = s;
    await wr(0x14, 1, Status.ACKNOWLEDGE | Status.DRIVER);
    await wr(0x08, 4, 1);
    await wr(0x0c, 4, 1);
    await wr(0x14, 1, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    await wr(0x16, 2, 0);
    await wr(0x20, 4, 0x10000);
    await wr(0x28, 4, 0x11000);
    await wr(0x30, 4, 0x12000);
    await wr(0x1c, 2, 1);
  }
  const ALL_OK = Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK | Status.DRIVER_OK;

  it('keeps status bits until reset: clearing DRIVER_OK neither reopens the queues nor starts the device twice', async function () {
    const s = setup();
    const { rd, wr, link } = s;
    await negotiated(s);
    await wr(0x14, 1, ALL_OK);
    assert.equal(link.activations.length, 1);
    await wr(0x14, 1, Status.ACKNOWLEDGE | Status.DRIVER | Status.FEATURES_OK);
    assert.equal(rd(0x14, 1), ALL_OK, 'DRIVER_OK stays');
    await wr(0x20, 4, 0x99000);
    assert.equal(rd(0x20, 4), 0x10000, 'queue registers stay frozen');
    await wr(0x14, 1, ALL_OK);
    assert.equal(link.activations.length, 1, 'not activated again');
  });

  it('starts the device only after FEATURES_OK, so never with features it did not offer', async function () {
    const { rd, wr, link } = setup();
    await wr(0x14, 1, Status.ACKNOWLEDGE | Status.DRIVER);
    await wr(0x08, 4, 1);
    await wr(0x0c, 4, 0xffffffff); // every high feature bit, none of them offered but VERSION_1
    await wr(0x14, 1, Status.ACKNOWLEDGE | Status.DRIVER | Status.DRIVER_OK);
    assert.equal(rd(0x14, 1) & Status.DRIVER_OK, 0);
    await wr(0x14, 1, ALL_OK);
    assert.equal(rd(0x14, 1), Status.ACKNOWLEDGE | Status.DRIVER, 'FEATURES_OK refused, so DRIVER_OK too');
    assert.deepEqual(link.activations, []);
  });

  it('sets DEVICE_NEEDS_RESET instead of starting the device with a ring above 2^53', async function () {
    const s = setup();
    const { rd, wr, link } = s;
    await negotiated(s);
    await wr(0x24, 4, 0xffffffff); // queue_desc high half
    await wr(0x14, 1, ALL_OK);
    assert.deepEqual(link.activations, []);
    assert.ok(rd(0x14, 1) & Status.DEVICE_NEEDS_RESET);
  });

  it('takes common-config writes only at a field\'s own width, 8-byte ring addresses exactly', async function () {
    const { rd, wr, t } = setup();
    await wr(0x16, 4, 0x00010001); // queue_select and queue_size in one access: ignored
    assert.equal(rd(0x16, 2), 0);
    assert.equal(rd(0x18, 2), 256);
    await wr(0x14, 2, 0x0101); // device_status and config_generation: ignored
    assert.equal(rd(0x14, 1), 0);
    await wr(0x19, 1, 0x01); // the high byte of queue_size alone: ignored
    assert.equal(rd(0x18, 2), 256);
    await wr(0x00, 8, 1); // device_feature_select with the read-only device_feature: ignored
    assert.equal(rd(0x00, 4), 0);
    // queue_desc = 0x12345678_9abcdef0 in one 8-byte write, not rounded through a double.
    await t.write(0x20, Uint8Array.of(0xf0, 0xde, 0xbc, 0x9a, 0x78, 0x56, 0x34, 0x12));
    assert.equal(rd(0x20, 4), 0x9abcdef0);
    assert.equal(rd(0x24, 4), 0x12345678);
    await t.write(0x24, Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8)); // 8 bytes at the high half: ignored
    assert.equal(rd(0x24, 4), 0x12345678);
  });

  it('reads an access that straddles fields byte by byte from each field', async function () {
    const { rd, wr } = setup();
    await wr(0x14, 1, Status.ACKNOWLEDGE);
    await wr(0x16, 2, 1);
    assert.equal(rd(0x14, 4), Status.ACKNOWLEDGE | (0 << 8) | (1 << 16), 'status, generation, queue_select');
    assert.equal(rd(0x12, 2), 2, 'num_queues');
    assert.equal(rd(0x11, 2), 0x02ff, 'high byte of config_msix_vector (NO_VECTOR), low byte of num_queues');
    await wr(0x16, 2, 7); // beyond num_queues: the queue is unavailable
    assert.equal(rd(0x18, 2), 0, 'queue_size 0');
    assert.equal(rd(0x1a, 2), 0xffff, 'NO_VECTOR');
    await wr(0x18, 2, 16);
    await wr(0x1c, 2, 1);
    assert.equal(rd(0x1c, 2), 0);
  });

  it('holds another vCPU\'s writes while the device resets, and never resets it twice at once', async function () {
    const { t, host } = setup();
    let finish!: () => void;
    let inFlight = 0;
    let overlapped = false;
    const link: DeviceLink = {
      activate() {},
      writeConfig() {},
      reset: () => {
        if (inFlight++) overlapped = true;
        return new Promise<void>((r) => (finish = () => { inFlight--; r(); }));
      },
    };
    const t2 = new VirtioPciTransport(t.info, host, link, BAR);
    const w2 = (off: number, size: number, v: number) => {
      const d = new Uint8Array(size);
      for (let i = 0; i < size; i++) d[i] = (v >>> (8 * i)) & 0xff;
      return t2.write(off, d);
    };
    const r2 = (off: number) => { const d = new Uint8Array(1); t2.read(off, d); return d[0]!; };
    await w2(0x14, 1, Status.ACKNOWLEDGE);
    let firstDone = false;
    const first = w2(0x14, 1, 0).then(() => (firstDone = true));
    let secondDone = false;
    const second = w2(0x14, 1, Status.ACKNOWLEDGE).then(() => w2(0x14, 1, 0)).then(() => (secondDone = true));
    await new Promise((r) => setImmediate(r));
    assert.equal(r2(0x14), 0, 'the other vCPU\'s ACKNOWLEDGE waits for the reset');
    assert.ok(!firstDone && !secondDone);
    finish();
    await first;
    await new Promise((r) => setImmediate(r));
    finish();
    await second;
    assert.ok(!overlapped, 'resets did not overlap');
    assert.equal(r2(0x14), 0);
  });
});
