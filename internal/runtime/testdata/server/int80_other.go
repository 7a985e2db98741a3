//go:build !amd64

package main

func int80(uintptr) uintptr { panic("int $0x80 is an amd64 instruction") }

const i386GetPID = 20

const haveInt80 = false
