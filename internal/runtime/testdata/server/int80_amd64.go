package main

// int80 makes system call trap through the 32-bit x86 ABI (int $0x80), as
// an i386 binary would, and returns what the kernel put in eax.
func int80(trap uintptr) uintptr

// i386GetPID is getpid's number in the 32-bit x86 table.
const i386GetPID = 20

const haveInt80 = true
