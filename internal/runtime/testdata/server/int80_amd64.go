package main

// int80 makes system call trap through the 32-bit x86 ABI (int $0x80), as
// an i386 binary would, and returns what the kernel put in eax.
func int80(trap uintptr) uintptr

const haveInt80 = true
