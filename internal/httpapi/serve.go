package httpapi

import (
	"context"
	"net"
	"net/http"
	"time"
)

// Serve serves srv on l until ctx ends, then shuts it down (Graceful),
// giving requests in flight up to grace to finish. A clean shutdown is
// nil; an error is a listener that failed.
func Serve(ctx context.Context, srv *http.Server, l net.Listener, grace time.Duration) error {
	var g Graceful
	served := make(chan error, 1)
	go func() { served <- g.Serve(srv, l, srv.Serve) }()
	select {
	case err := <-served:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	err := g.Shutdown(sctx)
	if serr := <-served; err == nil {
		err = serr
	}
	return err
}
