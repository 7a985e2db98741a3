package edge

import (
	"fmt"
	"os"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The event loops' system calls on their hot path: reads and writes of
// non-blocking sockets, and epoll_wait with a zero timeout. None of them
// can block, so they go to the kernel without telling the runtime
// (RawSyscall). Through unix.Read and friends each one is a system call
// the runtime may think is blocking: its monitor hands the P of a loop
// caught in one (a write to loopback that delivers to the reader can span
// its 20 µs tick) to another thread, waking it, and stays at its shortest
// tick while it does. Measured on the loop edge under wrk: 42 % of the
// process's context switches were that monitor's.

// rawRead is unix.Read of a non-blocking descriptor.
func rawRead(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// rawWrite is unix.Write to a non-blocking descriptor.
func rawWrite(fd int, p []byte) (int, error) {
	n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(bufPtr(p)), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// rawPoll is unix.EpollWait with a zero timeout (epoll_pwait without a
// signal mask, which every architecture has).
func rawPoll(epfd int, events []unix.EpollEvent) (int, error) {
	var p unsafe.Pointer
	if len(events) > 0 {
		p = unsafe.Pointer(&events[0])
	}
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(epfd), uintptr(p), uintptr(len(events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// rawYield is sched_yield: the calling thread goes behind the others
// runnable on its CPU, if there are any.
func rawYield() { unix.RawSyscall(unix.SYS_SCHED_YIELD, 0, 0, 0) }

func bufPtr(p []byte) unsafe.Pointer {
	if len(p) == 0 {
		return nil
	}
	return unsafe.Pointer(&p[0])
}

// pollableEpoll makes an epoll set that Go's own poller watches like a
// socket: a goroutine waits for the set's readiness through the returned
// RawConn's Read, parked in the runtime, not blocked in a system call.
func pollableEpoll(name string) (epfd int, file *os.File, raw syscall.RawConn, err error) {
	epfd, err = unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return -1, nil, nil, os.NewSyscallError("epoll_create1", err)
	}
	// Non-blocking, so that os.NewFile puts it in Go's poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		unix.Close(epfd)
		return -1, nil, nil, os.NewSyscallError("fcntl", err)
	}
	file = os.NewFile(uintptr(epfd), name)
	raw, err = file.SyscallConn()
	if err == nil {
		err = file.SetReadDeadline(time.Time{}) // fails unless it is in the poller
	}
	if err != nil {
		file.Close()
		return -1, nil, nil, fmt.Errorf("epoll set in Go's poller: %w", err)
	}
	return epfd, file, raw, nil
}
