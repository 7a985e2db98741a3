package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// Graceful serves HTTP servers so that shutting them down answers every
// request a client sent on a connection that was accepted.
//
// net/http's Shutdown closes the listeners, then closes, unanswered, a
// connection whose first request it reads after Shutdown began: one it
// had accepted a moment before, whose client was still sending. The
// client sees the connection closed. When a listening socket outlives the
// process (systemd holds it across a restart), that connection is one the
// next process would have served. So Shutdown here first stops accepting,
// waits until every connection accepted has read its first request (or
// gone, or stayed silent for freshFor), with keep-alives off so that none
// asks for another, and only then shuts the servers down.
type Graceful struct {
	mu       sync.Mutex
	stopping bool
	servers  []*http.Server
	ls       []net.Listener
	serving  sync.WaitGroup
	fresh    map[net.Conn]time.Time // accepted (when), no request read yet
}

// freshFor is how long Shutdown waits for a connection's first request:
// net/http's own limit before it counts a new connection idle. A client
// that sent nothing for so long (a browser's preconnection) is closed.
const freshFor = 5 * time.Second

// Serve runs serve (srv.Serve or srv.ServeTLS) on l until Shutdown, and
// then returns nil; a listener that fails before is its error.
func (g *Graceful) Serve(srv *http.Server, l net.Listener, serve func(net.Listener) error) error {
	g.mu.Lock()
	if g.stopping {
		g.mu.Unlock()
		l.Close()
		return nil
	}
	if g.fresh == nil {
		g.fresh = map[net.Conn]time.Time{}
	}
	hook := srv.ConnState
	srv.ConnState = func(c net.Conn, s http.ConnState) {
		g.mu.Lock()
		if s == http.StateNew {
			g.fresh[c] = time.Now()
		} else {
			delete(g.fresh, c)
		}
		g.mu.Unlock()
		if hook != nil {
			hook(c, s)
		}
	}
	g.servers, g.ls = append(g.servers, srv), append(g.ls, l)
	g.serving.Add(1)
	g.mu.Unlock()
	err := serve(l)
	g.serving.Done()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopping || errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, lets the connections accepted read their
// first request (for at most half the time ctx leaves), and shuts the
// servers down, waiting for the requests in flight until ctx ends.
func (g *Graceful) Shutdown(ctx context.Context) error {
	g.mu.Lock()
	g.stopping = true
	for _, srv := range g.servers {
		srv.SetKeepAlivesEnabled(false)
	}
	for _, l := range g.ls {
		l.Close()
	}
	servers := g.servers
	g.mu.Unlock()
	// A Serve loop returns once it has tracked the last connection it
	// accepted: after that, fresh holds every one.
	g.serving.Wait()
	// Half the time left at most: the other half is for the requests in
	// flight.
	until := time.Now().Add(freshFor)
	if d, ok := ctx.Deadline(); ok {
		until = time.Now().Add(time.Until(d) / 2)
	}
	for wait := time.Millisecond; time.Now().Before(until); wait = min(2*wait, 100*time.Millisecond) {
		n := 0
		g.mu.Lock()
		for _, at := range g.fresh {
			if time.Since(at) < freshFor {
				n++
			}
		}
		g.mu.Unlock()
		if n == 0 || ctx.Err() != nil {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
	var errs []error
	for _, srv := range servers {
		errs = append(errs, srv.Shutdown(ctx))
	}
	return errors.Join(errs...)
}
