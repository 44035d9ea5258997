/* The exit-cost baseline: the smallest C VMM that runs the same guest loop
 * (LOOPS writes to port 0x80, then a write of 0xfe to port 0x64) in a KVM
 * vCPU and answers each exit. The loop runs in real mode here (no paging to
 * set up); it is the same instructions, and each exit costs the same. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

static void die(const char *what) { perror(what); exit(1); }

int main(int argc, char **argv) {
    unsigned loops = argc > 1 ? (unsigned)strtoul(argv[1], 0, 0) : 100000;
    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("/dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    size_t memsz = 0x10000;
    unsigned char *mem = mmap(0, memsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    /* mov ecx, loops; 1: out 0x80, al; dec ecx; jnz 1b; mov al, 0xfe; out 0x64, al; hlt */
    unsigned char code[] = {0x66, 0xb9, 0, 0, 0, 0, 0xe6, 0x80, 0x66, 0x49, 0x75, 0xfa, 0xb0, 0xfe, 0xe6, 0x64, 0xf4};
    memcpy(code + 2, &loops, 4);
    memcpy(mem + 0x1000, code, sizeof code);
    struct kvm_userspace_memory_region region = {.slot = 0, .guest_phys_addr = 0, .memory_size = memsz, .userspace_addr = (unsigned long)mem};
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) die("KVM_CREATE_VCPU");
    int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    struct kvm_run *run = mmap(0, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    struct kvm_sregs sregs;
    ioctl(vcpu, KVM_GET_SREGS, &sregs);
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    ioctl(vcpu, KVM_SET_SREGS, &sregs);
    struct kvm_regs regs = {.rip = 0x1000, .rflags = 2};
    ioctl(vcpu, KVM_SET_REGS, &regs);
    unsigned long exits = 0;
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
        if (run->exit_reason != KVM_EXIT_IO) {
            fprintf(stderr, "unexpected exit %u\n", run->exit_reason);
            return 1;
        }
        exits++;
        if (run->io.port == 0x64) break;
    }
    printf("%lu\n", exits);
    return 0;
}
