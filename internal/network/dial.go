package network

import (
	"context"
	"net"
	"runtime"
	"time"

	"golang.org/x/sys/unix"
)

// DialFrom returns a dialer that opens connections from inside the network
// namespace at path. An agent whose node is a namespace rather than the
// machine (NodeNetns: `zeitwork dev`'s simulated workers, tests) reaches
// its instances through it, as a real node's agent does from its own.
// Empty path: an ordinary dialer.
func DialFrom(path string) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
	if path == "" {
		return d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			// Never unlocked: the thread ends with this goroutine instead of
			// going back to the scheduler inside the other namespace. The
			// socket keeps the namespace it was made in.
			runtime.LockOSThread()
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				ch <- result{nil, err}
				return
			}
			defer unix.Close(fd)
			if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
				ch <- result{nil, err}
				return
			}
			c, err := d.DialContext(ctx, network, addr)
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}
