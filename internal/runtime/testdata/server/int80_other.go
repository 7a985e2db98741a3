//go:build !amd64

package main

func int80(uintptr) uintptr { panic("int $0x80 is an amd64 instruction") }

const haveInt80 = false
