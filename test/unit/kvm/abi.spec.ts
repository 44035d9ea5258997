// Checks the koffi layouts of abi.ts and the ioctl numbers of ioctls.ts
// against the kernel's own <linux/kvm.h>, through a C program built here.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import koffi, { type TypeObject } from 'koffi';
import * as abi from '../../../src/core/kvm/abi.js';
import * as ioctls from '../../../src/core/kvm/ioctls.js';

const STRUCT_FIELDS: Record<string, string[]> = {
  kvm_regs: ['rax', 'rsi', 'rsp', 'r15', 'rip', 'rflags'],
  kvm_segment: ['base', 'limit', 'selector', 'type', 'present', 'dpl', 'db', 's', 'l', 'g', 'avl', 'unusable'],
  kvm_dtable: ['base', 'limit'],
  kvm_sregs: ['cs', 'ds', 'tr', 'ldt', 'gdt', 'idt', 'cr0', 'cr2', 'cr3', 'cr4', 'cr8', 'efer', 'apic_base', 'interrupt_bitmap'],
  kvm_fpu: ['fpr', 'fcw', 'fsw', 'ftwx', 'last_opcode', 'last_ip', 'last_dp', 'xmm', 'mxcsr'],
  kvm_userspace_memory_region: ['slot', 'flags', 'guest_phys_addr', 'memory_size', 'userspace_addr'],
  kvm_cpuid_entry2: ['function', 'index', 'flags', 'eax', 'ebx', 'ecx', 'edx'],
  kvm_cpuid2: ['nent'],
  kvm_msr_entry: ['index', 'data'],
  kvm_msrs: ['nmsrs'],
  kvm_lapic_state: ['regs'],
  kvm_irq_level: ['irq', 'level'],
  kvm_pit_config: ['flags'],
  kvm_irqfd: ['fd', 'gsi', 'flags', 'resamplefd'],
  kvm_ioeventfd: ['datamatch', 'addr', 'len', 'fd', 'flags'],
  kvm_irq_routing_entry: ['gsi', 'type', 'flags', 'u'],
  kvm_irq_routing: ['nr', 'flags'],
  kvm_msi: ['address_lo', 'address_hi', 'data', 'flags', 'devid'],
  kvm_translation: ['linear_address', 'physical_address', 'valid', 'writeable', 'usermode'],
  kvm_vcpu_events: ['exception', 'interrupt', 'nmi', 'sipi_vector', 'flags', 'smi', 'triple_fault', 'exception_has_payload', 'exception_payload'],
  kvm_enable_cap: ['cap', 'flags', 'args'],
};

const RUN_FIELDS: Record<string, number> = {
  immediate_exit: abi.RUN.immediate_exit,
  exit_reason: abi.RUN.exit_reason,
  if_flag: abi.RUN.if_flag,
  cr8: abi.RUN.cr8,
  apic_base: abi.RUN.apic_base,
  'io.direction': abi.RUN.io.direction,
  'io.size': abi.RUN.io.size,
  'io.port': abi.RUN.io.port,
  'io.count': abi.RUN.io.count,
  'io.data_offset': abi.RUN.io.data_offset,
  'mmio.phys_addr': abi.RUN.mmio.phys_addr,
  'mmio.data': abi.RUN.mmio.data,
  'mmio.len': abi.RUN.mmio.len,
  'mmio.is_write': abi.RUN.mmio.is_write,
  'internal.suberror': abi.RUN.internal.suberror,
  'internal.ndata': abi.RUN.internal.ndata,
  'internal.data': abi.RUN.internal.data,
  'fail_entry.hardware_entry_failure_reason': abi.RUN.fail_entry.hardware_entry_failure_reason,
  'fail_entry.cpu': abi.RUN.fail_entry.cpu,
  'system_event.type': abi.RUN.system_event.type,
};

const IOCTLS = Object.keys(ioctls).filter((k) => k.startsWith('KVM_') && /^KVM_(GET|SET|CREATE|CHECK|RUN|IRQ|TRANSLATE|SIGNAL|ENABLE|IOEVENTFD)/.test(k));

function cProgram(): string {
  const lines = ['#include <stdio.h>', '#include <stddef.h>', '#include <linux/kvm.h>', 'int main(void) {', 'printf("{");'];
  const emit = (key: string, expr: string) => lines.push(`printf("\\"${key}\\":%lu,", (unsigned long)(${expr}));`);
  for (const [s, fields] of Object.entries(STRUCT_FIELDS)) {
    emit(`sizeof ${s}`, `sizeof(struct ${s})`);
    for (const f of fields) emit(`${s}.${f}`, `offsetof(struct ${s}, ${f})`);
  }
  for (const f of Object.keys(RUN_FIELDS)) emit(`kvm_run.${f}`, `offsetof(struct kvm_run, ${f})`);
  for (const name of IOCTLS) emit(name, name);
  lines.push('printf("\\"end\\":0}\\n");', 'return 0; }');
  return lines.join('\n');
}

describe('KVM ABI (against <linux/kvm.h>)', function () {
  this.timeout(60000);
  let c: Record<string, number>;

  before(function () {
    const dir = mkdtempSync(join(tmpdir(), 'splitvm-abi-'));
    writeFileSync(join(dir, 'abi.c'), cProgram());
    execFileSync('cc', ['-o', join(dir, 'abi'), join(dir, 'abi.c')]);
    c = JSON.parse(execFileSync(join(dir, 'abi'), { encoding: 'utf8' }));
  });

  for (const [s, fields] of Object.entries(STRUCT_FIELDS)) {
    it(`struct ${s}: size and field offsets`, function () {
      const t = (abi as unknown as Record<string, TypeObject>)[s]!;
      assert.equal(koffi.sizeof(t), c[`sizeof ${s}`], `sizeof(struct ${s})`);
      for (const f of fields) assert.equal(koffi.offsetof(t, f), c[`${s}.${f}`], `offsetof(struct ${s}, ${f})`);
    });
  }

  it('struct kvm_run: exit union offsets', function () {
    for (const [f, off] of Object.entries(RUN_FIELDS)) assert.equal(off, c[`kvm_run.${f}`], `offsetof(struct kvm_run, ${f})`);
  });

  it('ioctl request numbers', function () {
    assert.ok(IOCTLS.length >= 30, `found ${IOCTLS.length} ioctls`);
    for (const name of IOCTLS) {
      assert.equal((ioctls as unknown as Record<string, number>)[name], c[name], name);
    }
  });
});
