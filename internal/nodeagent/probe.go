package nodeagent

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/zeitwork/zeitwork/internal/nodeproxy"
)

// Prober health-checks one instance once.
type Prober func(ctx context.Context, addr netip.AddrPort, path string) error

// HTTPProbe returns the default health check: an HTTP GET of path that
// answers with any status below 500 within a second. A 404 still proves the
// app is up and serving; a 5xx or no answer does not. dial may be nil.
func HTTPProbe(dial nodeproxy.Dialer) Prober {
	transport := &http.Transport{DisableKeepAlives: true}
	if dial != nil {
		transport.DialContext = dial
	}
	client := &http.Client{
		Transport: transport,
		// A redirect is an answer: do not follow it somewhere else.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context, addr netip.AddrPort, path string) error {
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+net.JoinHostPort(addr.Addr().String(), strconv.Itoa(int(addr.Port())))+path, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "zeitwork-health-check")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			return fmt.Errorf("status %s", resp.Status)
		}
		return nil
	}
}
