/*
 * scripts/guest/init.S — owns /init of the splitvm default guest initramfs.
 *
 * A static x86-64 Linux program with no libc (GNU as syntax; built by
 * build-kernel.sh with `gcc -nostdlib -static -no-pie`). It writes one line
 * to fd 1 (the kernel opens /dev/console as fds 0, 1 and 2 before running
 * /init) and restarts the machine with reboot(2). If reboot returns, it
 * exits, and the kernel panics "Attempted to kill init!" (with panic=-1
 * that reboots as well).
 *
 * On a KVM whose guest user mode cannot make system calls (see
 * /work/shared/HOST-KVM.md) the first `syscall` already kills init; the
 * kernel then panics and, with panic=-1, reboots — which also ends the VM.
 */

#define SYS_write       1
#define SYS_reboot      169
#define SYS_exit_group  231

#define LINUX_REBOOT_MAGIC1      0xfee1dead
#define LINUX_REBOOT_MAGIC2      672274793   /* 0x28121969 */
#define LINUX_REBOOT_CMD_RESTART 0x01234567

	.section .rodata
msg:
	.ascii "splitvm-guest: init running\n"
	.set msg_len, . - msg

	.text
	.globl _start
	.type _start, @function
_start:
	/* write(1, msg, msg_len) */
	mov	$SYS_write, %eax
	mov	$1, %edi
	lea	msg(%rip), %rsi
	mov	$msg_len, %edx
	syscall

	/* reboot(MAGIC1, MAGIC2, LINUX_REBOOT_CMD_RESTART, NULL) */
	mov	$SYS_reboot, %eax
	mov	$LINUX_REBOOT_MAGIC1, %edi
	mov	$LINUX_REBOOT_MAGIC2, %esi
	mov	$LINUX_REBOOT_CMD_RESTART, %edx
	xor	%r10d, %r10d
	syscall

	/* Only reached if reboot failed: exit_group(1). */
	mov	$SYS_exit_group, %eax
	mov	$1, %edi
	syscall
	hlt			/* not reached; faults in user mode if it were */
	.size _start, . - _start

	.section .note.GNU-stack, "", @progbits
