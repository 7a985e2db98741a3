package httpapi

import (
	"context"
	"errors"
	"net"
	"net/http"
	"time"
)

// Serve serves srv on l until ctx ends, then shuts it down, giving
// requests in flight up to grace to finish. A clean shutdown is nil; an
// error is a listener that failed.
func Serve(ctx context.Context, srv *http.Server, l net.Listener, grace time.Duration) error {
	served := make(chan error, 1)
	go func() { served <- srv.Serve(l) }()
	select {
	case err := <-served:
		return err // never ErrServerClosed: only Shutdown below closes it
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}
