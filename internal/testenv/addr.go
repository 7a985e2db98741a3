package testenv

import (
	"fmt"
	"net"
	"syscall"
	"testing"
)

// Tests must not pick a port, free it, and have a server bind it later:
// in between, another process (an outgoing connection's source port, a
// parallel test) takes it, and the test fails with "address already in
// use". The helpers here hold the port instead, with a socket that is
// bound but never listens, for the rest of the test.

// ReservedAddr returns a loopback host:port kept for a server the test
// starts later (a subprocess, a role's Main). The kernel chooses the port
// and keeps it out of its own choices (other listeners on :0, outgoing
// connections) while reserved; a server that sets SO_REUSEADDR before
// binding, as every Go listener does, can still listen on it.
func ReservedAddr(t testing.TB) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(ReservedPort(t)))
}

// ReservedPort is ReservedAddr's port.
func ReservedPort(t testing.TB) int {
	t.Helper()
	port, release, err := reserve(0)
	if err != nil {
		t.Fatalf("reserve a port: %v", err)
	}
	t.Cleanup(release)
	return port
}

// ReservePort is ReservedPort for programs without a test (the benchmarks
// under bench/): the port is held until release is called or the process
// ends.
func ReservePort() (port int, release func(), err error) {
	return reserve(0)
}

// RefusedAddr returns a loopback host:port that refuses connections for
// the rest of the test. Closing a listener to get such an address leaves
// the port free for anyone to take, and then the "dead" address answers;
// a socket that is bound but never listens keeps the port while every
// connection to it is refused. Unlike ReservedAddr, no one can listen on it.
func RefusedAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatalf("refused address: socket: %v", err)
	}
	syscall.CloseOnExec(fd)
	t.Cleanup(func() { syscall.Close(fd) })
	port, err := bindLoopback(fd, 0)
	if err != nil {
		t.Fatalf("refused address: %v", err)
	}
	return net.JoinHostPort("127.0.0.1", fmt.Sprint(port))
}

// reserve binds 127.0.0.1:port (0: the kernel chooses) exclusively, so it
// fails if anyone holds the port, reserved or listening, and then allows
// address reuse, so that the server meant to have it can listen. release
// gives the port back.
func reserve(port int) (_ int, release func(), _ error) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		return 0, nil, fmt.Errorf("socket: %w", err)
	}
	syscall.CloseOnExec(fd)
	port, err = bindLoopback(fd, port)
	if err == nil {
		err = syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1)
	}
	if err != nil {
		syscall.Close(fd)
		return 0, nil, err
	}
	return port, func() { syscall.Close(fd) }, nil
}

func bindLoopback(fd, port int) (int, error) {
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}); err != nil {
		return 0, fmt.Errorf("bind 127.0.0.1:%d: %w", port, err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		return 0, fmt.Errorf("getsockname: %w", err)
	}
	in4, ok := sa.(*syscall.SockaddrInet4)
	if !ok {
		return 0, fmt.Errorf("unexpected socket address %T", sa)
	}
	return in4.Port, nil
}
