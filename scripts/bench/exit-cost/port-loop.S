# The exit-cost guest for splitvm: a 64-bit ELF "kernel" that writes the
# POST port LOOPS times (one port-I/O exit each), then resets through the
# i8042. LOOPS is set at build time (-DLOOPS=n).
.globl _start
.text
.code64
_start:
  mov $LOOPS, %ecx
1:
  out %al, $0x80
  dec %ecx
  jnz 1b
  mov $0xfe, %al
  out %al, $0x64
2:
  hlt
  jmp 2b
