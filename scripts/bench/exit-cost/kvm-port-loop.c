/* scripts/bench/exit-cost/kvm-port-loop.c — owns the exit-cost baseline: the
 * smallest C VMM that runs the very same guest as splitvm in the exit-cost
 * benchmark. It loads the same ELF (port-loop.S built with -DLOOPS=n: LOOPS
 * writes to port 0x80, then 0xfe to port 0x64) at its physical addresses and
 * enters it in 64-bit long mode the way splitvm does (identity page tables in
 * 2 MiB pages, CS with L=1, CR0 PE|PG, CR4 PAE, EFER LME|LMA), then answers
 * each port exit until the write to port 0x64.
 *
 * Usage: kvm-port-loop FILE.elf [MEM_MiB]   (default 128 MiB, as splitvm)
 * Prints the number of port exits on stdout. Errors: one line on stderr, exit 1.
 */
#include <elf.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PML4_ADDR 0x9000ul
#define PDPT_ADDR 0xa000ul
#define PD_ADDR 0xb000ul
#define PD_COUNT 4 /* 4 GiB identity map */
#define STACK_TOP 0x8ff0ul

#define CR0_PE 0x1ul
#define CR0_MP 0x2ul
#define CR0_ET 0x10ul
#define CR0_NE 0x20ul
#define CR0_WP 0x10000ul
#define CR0_PG 0x80000000ul
#define CR4_PAE 0x20ul
#define EFER_LME 0x100ul
#define EFER_LMA 0x400ul

static void die(const char *what) {
    perror(what);
    exit(1);
}

static void fail(const char *msg) {
    fprintf(stderr, "kvm-port-loop: %s\n", msg);
    exit(1);
}

/* Copies every PT_LOAD segment of the ELF image to its physical address; returns the entry point. */
static uint64_t load_elf(const char *path, unsigned char *mem, size_t memsz) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die(path);
    struct stat st;
    if (fstat(fd, &st) < 0) die("fstat");
    unsigned char *img = mmap(0, st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (img == MAP_FAILED) die("mmap ELF");
    close(fd);
    if ((size_t)st.st_size < sizeof(Elf64_Ehdr)) fail("kernel file too small for an ELF header");
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)img;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 || eh->e_machine != EM_X86_64)
        fail("not a 64-bit x86 ELF file");
    for (unsigned i = 0; i < eh->e_phnum; i++) {
        const Elf64_Phdr *ph = (const Elf64_Phdr *)(img + eh->e_phoff + (size_t)i * eh->e_phentsize);
        if (ph->p_type != PT_LOAD) continue;
        if (ph->p_paddr + ph->p_memsz > memsz || ph->p_offset + ph->p_filesz > (uint64_t)st.st_size)
            fail("an ELF segment does not fit in guest RAM");
        memcpy(mem + ph->p_paddr, img + ph->p_offset, ph->p_filesz);
        memset(mem + ph->p_paddr + ph->p_filesz, 0, ph->p_memsz - ph->p_filesz);
    }
    uint64_t entry = eh->e_entry;
    munmap(img, st.st_size);
    return entry;
}

/* PML4 -> one PDPT -> four page directories of 2 MiB pages: identity map of 4 GiB. */
static void write_page_tables(unsigned char *mem) {
    uint64_t *pml4 = (uint64_t *)(mem + PML4_ADDR);
    uint64_t *pdpt = (uint64_t *)(mem + PDPT_ADDR);
    uint64_t *pd = (uint64_t *)(mem + PD_ADDR);
    pml4[0] = PDPT_ADDR | 0x3;
    for (int i = 0; i < PD_COUNT; i++) pdpt[i] = (PD_ADDR + i * 0x1000ul) | 0x3;
    for (uint64_t i = 0; i < PD_COUNT * 512ul; i++) pd[i] = (i << 21) | 0x83; /* present, writable, 2 MiB */
}

static struct kvm_segment flat(uint16_t selector, uint8_t type, int code) {
    struct kvm_segment s = {
        .base = 0, .limit = 0xffffffff, .selector = selector, .type = type, .present = 1,
        .dpl = 0, .db = code ? 0 : 1, .s = 1, .l = code ? 1 : 0, .g = 1,
    };
    return s;
}

int main(int argc, char **argv) {
    if (argc < 2) fail("usage: kvm-port-loop FILE.elf [MEM_MiB]");
    size_t memsz = (argc > 2 ? strtoul(argv[2], 0, 0) : 128) << 20;

    int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
    if (kvm < 0) die("/dev/kvm");
    int vm = ioctl(kvm, KVM_CREATE_VM, 0);
    if (vm < 0) die("KVM_CREATE_VM");
    unsigned char *mem = mmap(0, memsz, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (mem == MAP_FAILED) die("mmap guest RAM");
    uint64_t entry = load_elf(argv[1], mem, memsz);
    write_page_tables(mem);
    struct kvm_userspace_memory_region region = {
        .slot = 0, .guest_phys_addr = 0, .memory_size = memsz, .userspace_addr = (unsigned long)mem,
    };
    if (ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region) < 0) die("KVM_SET_USER_MEMORY_REGION");
    int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
    if (vcpu < 0) die("KVM_CREATE_VCPU");
    int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
    if (runsz < 0) die("KVM_GET_VCPU_MMAP_SIZE");
    struct kvm_run *run = mmap(0, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
    if (run == MAP_FAILED) die("mmap kvm_run");

    struct kvm_sregs sregs;
    if (ioctl(vcpu, KVM_GET_SREGS, &sregs) < 0) die("KVM_GET_SREGS");
    sregs.cs = flat(0x08, 0xb, 1);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = flat(0x10, 0x3, 0);
    sregs.tr.base = 0;
    sregs.tr.limit = 0xffffffff;
    sregs.tr.selector = 0x18;
    sregs.tr.type = 0xb; /* busy 64-bit TSS */
    sregs.tr.present = 1;
    sregs.tr.s = 0;
    sregs.tr.g = 1;
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = PML4_ADDR;
    sregs.cr4 = CR4_PAE;
    sregs.efer = EFER_LME | EFER_LMA;
    if (ioctl(vcpu, KVM_SET_SREGS, &sregs) < 0) die("KVM_SET_SREGS");
    struct kvm_regs regs = {.rip = entry, .rsp = STACK_TOP, .rbp = STACK_TOP, .rflags = 2};
    if (ioctl(vcpu, KVM_SET_REGS, &regs) < 0) die("KVM_SET_REGS");

    unsigned long exits = 0;
    for (;;) {
        if (ioctl(vcpu, KVM_RUN, 0) < 0) die("KVM_RUN");
        if (run->exit_reason != KVM_EXIT_IO) {
            fprintf(stderr, "kvm-port-loop: unexpected exit reason %u after %lu port exits\n", run->exit_reason, exits);
            return 1;
        }
        exits++;
        if (run->io.port == 0x64) break;
    }
    printf("%lu\n", exits);
    return 0;
}
