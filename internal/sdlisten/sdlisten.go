// Package sdlisten takes the listening sockets systemd passes a service
// that has socket units (sd_listen_fds(3)). A socket that systemd holds
// outlives the process serving it: while a new binary starts, connections
// wait in the socket's backlog instead of being refused.
package sdlisten

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// firstFD is SD_LISTEN_FDS_START: passed sockets follow stdin, stdout and
// stderr.
const firstFD = 3

// Listeners returns the listening sockets passed to this process, by their
// name (a socket unit's FileDescriptorName=). Without LISTEN_FDS, or when
// LISTEN_PID names another process (the variables were inherited, not
// meant for us), it returns none. Either way it removes the variables, so
// that no child takes our sockets for its own.
func Listeners() (map[string]net.Listener, error) {
	pid, fds, names := os.Getenv("LISTEN_PID"), os.Getenv("LISTEN_FDS"), os.Getenv("LISTEN_FDNAMES")
	os.Unsetenv("LISTEN_PID")
	os.Unsetenv("LISTEN_FDS")
	os.Unsetenv("LISTEN_FDNAMES")
	if fds == "" || pid != strconv.Itoa(os.Getpid()) {
		return nil, nil
	}
	n, err := strconv.Atoi(fds)
	if err != nil || n < 0 {
		return nil, fmt.Errorf("LISTEN_FDS=%q is not a count", fds)
	}
	for i := range n {
		// Ours alone: a process we start must not hold a socket open.
		syscall.CloseOnExec(firstFD + i)
	}
	nameOf := strings.Split(names, ":")
	ls := map[string]net.Listener{}
	for i := range n {
		fd := firstFD + i
		name := "unknown" // what systemd calls a socket without a name
		if i < len(nameOf) && nameOf[i] != "" {
			name = nameOf[i]
		}
		f := os.NewFile(uintptr(fd), name)
		l, err := net.FileListener(f) // a duplicate; the original is closed below
		f.Close()
		if err != nil {
			closeAll(ls)
			return nil, fmt.Errorf("LISTEN_FDS: socket %d (%s): %w", fd, name, err)
		}
		if _, dup := ls[name]; dup {
			l.Close()
			closeAll(ls)
			return nil, fmt.Errorf("LISTEN_FDNAMES: two sockets named %q", name)
		}
		ls[name] = l
	}
	return ls, nil
}

func closeAll(ls map[string]net.Listener) {
	for _, l := range ls {
		l.Close()
	}
}

// Set is the sockets systemd passed a role, each taken by name for the
// listener it is meant for; what no listener took is closed by Close.
type Set struct {
	ls  map[string]net.Listener
	log *slog.Logger
}

// Inherit takes the sockets passed to this process (Listeners).
func Inherit(log *slog.Logger) (*Set, error) {
	ls, err := Listeners()
	if err != nil {
		return nil, err
	}
	return &Set{ls: ls, log: log}, nil
}

// Has reports whether systemd passed a socket named name not yet taken.
func (s *Set) Has(name string) bool {
	_, ok := s.ls[name]
	return ok
}

// Listen returns the socket named name when systemd passed one (saying so
// in the log), else a listener of its own on addr. setting names the
// variable addr came from, for the log and errors.
func (s *Set) Listen(ctx context.Context, name, setting, addr string) (net.Listener, error) {
	if l, ok := s.ls[name]; ok {
		delete(s.ls, name)
		s.log.InfoContext(ctx, "listening on a socket from systemd", "name", name, "addr", l.Addr().String(), "instead_of", setting+"="+addr)
		return l, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", setting, addr, err)
	}
	return l, nil
}

// Close closes the sockets no listener took, with a warning each: a
// socket unit the role does not serve is a mistake in its units. Only our
// copies are closed; systemd keeps its own.
func (s *Set) Close(ctx context.Context) {
	for name, l := range s.ls {
		s.log.WarnContext(ctx, "socket from systemd not served", "name", name, "addr", l.Addr().String())
		l.Close()
	}
	clear(s.ls)
}
