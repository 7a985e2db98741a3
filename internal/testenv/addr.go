package testenv

import (
	"fmt"
	"net"
	"syscall"
	"testing"
)

// RefusedAddr returns a loopback host:port that refuses connections for
// the rest of the test. Closing a listener to get such an address leaves
// the port free for anyone to take, and then the "dead" address answers;
// a socket that is bound but never listens keeps the port reserved while
// every connection to it is refused.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("refused address: socket: %v", err)
	}
	syscall.CloseOnExec(fd)
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatalf("refused address: bind: %v", err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatalf("refused address: getsockname: %v", err)
	}
	in4, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		t.Fatalf("refused address: unexpected socket address %T", sa)
	}
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(in4.Port))
}
