package simmachine

import (
	"io"
	"net"
	"sync"
	"testing"
)

// Expose makes a service of this host that listens on loopback only (the
// test's Postgres, MinIO, registry) reachable from the machines: it
// returns an address on the bridge that forwards each connection to addr,
// until the test ends.
func (c *Cluster) Expose(t testing.TB, addr string) string {
	t.Helper()
	ln, err := net.Listen("tcp", net.JoinHostPort(c.Gateway, "0"))
	if err != nil {
		t.Fatalf("expose %s: %v", addr, err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := map[net.Conn]bool{}
	track := func(conn net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			open[conn] = true
		} else {
			delete(open, conn)
		}
	}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for conn := range open {
			conn.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			in, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer in.Close()
				out, err := net.Dial("tcp", addr)
				if err != nil {
					return
				}
				defer out.Close()
				track(in, true)
				track(out, true)
				defer track(in, false)
				defer track(out, false)
				done := make(chan struct{}, 2)
				go func() { _, _ = io.Copy(out, in); done <- struct{}{} }()
				go func() { _, _ = io.Copy(in, out); done <- struct{}{} }()
				<-done // either side closing ends both
			}()
		}
	}()
	return ln.Addr().String()
}
