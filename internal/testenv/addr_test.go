package testenv

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

func TestRefusedAddrRefusesAndStaysReserved(t *testing.T) {
	addr := RefusedAddr(t)
	if _, err := net.DialTimeout("tcp", addr, time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial %s: %v, want connection refused", addr, err)
	}
	if l, err := net.Listen("tcp", addr); err == nil {
		l.Close()
		t.Fatalf("%s could be taken by a listener", addr)
	}
}

func TestReservedAddrIsForItsServerOnly(t *testing.T) {
	addr := ReservedAddr(t)
	// No one else can reserve it: not another test's DevPortBase, nor a
	// second ReservedAddr.
	if _, _, err := reserve(mustPort(t, addr)); !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("second reservation of %s: %v, want address in use", addr, err)
	}
	// The server it was kept for listens on it.
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("server cannot listen on its reserved %s: %v", addr, err)
	}
	defer l.Close()
	go func() {
		if c, err := l.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.Close()
}

func TestDevPortBaseReservesItsRange(t *testing.T) {
	base := DevPortBase(t, 5)
	for _, p := range []int{base - 20, base, base + 5} {
		if _, _, err := reserve(p); !errors.Is(err, syscall.EADDRINUSE) {
			t.Errorf("port %d of the range could be reserved again: %v", p, err)
		}
	}
}

func mustPort(t *testing.T, addr string) int {
	t.Helper()
	a, err := net.ResolveTCPAddr("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	return a.Port
}
