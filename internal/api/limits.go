package api

import (
	"context"
	"net/http"
	"net/netip"
	"slices"
	"strings"

	"github.com/danielgtaylor/huma/v2"

	"github.com/zeitwork/zeitwork/internal/ratelimit"
)

// Limits are the API's rate limits (config.RateLimits). A nil Limiter
// applies none.
type Limits struct {
	Limiter *ratelimit.Limiter
	// SignIn counts sign-in starts and callbacks per client address;
	// Tokens, tokens created per user; DeviceCodes, device sign-ins started
	// per client address; DomainChecks, custom-domain checks per user.
	SignIn, Tokens, DeviceCodes, DomainChecks ratelimit.Limit
	// TrustedProxies are the load balancers whose X-Forwarded-For is
	// believed; nobody else's is.
	TrustedProxies []netip.Prefix
}

// limit counts a request against key and answers 429, with Retry-After,
// once the window's limit is spent.
func (a *API) limit(ctx context.Context, key string, lim ratelimit.Limit) error {
	err := a.Limits.Limiter.Allow(ctx, key, lim)
	if ex, ok := ratelimit.IsExceeded(err); ok {
		return huma.ErrorWithHeaders(
			huma.Error429TooManyRequests("too many requests: try again in "+ex.Seconds()+" s"),
			http.Header{"Retry-After": {ex.Seconds()}},
		)
	}
	return err
}

// limitAddress counts a request against name for the client's address.
func (a *API) limitAddress(ctx context.Context, name string, c client, lim ratelimit.Limit) error {
	if a.Limits.Limiter == nil || lim.Off() {
		return nil
	}
	subject := "unknown"
	if ip := a.clientIP(c); ip.IsValid() {
		subject = ratelimit.Subject(ip)
	}
	return a.limit(ctx, name+":ip:"+subject, lim)
}

// client is where a request came from. huma resolves it for every input
// struct holding one (as a field named Client: huma looks at exported
// fields only).
type client struct {
	remote    string
	forwarded []string // X-Forwarded-For, every header's hops in order
	host      string
	tls       bool
}

func (c *client) Resolve(ctx huma.Context) []error {
	c.remote, c.host, c.tls = ctx.RemoteAddr(), ctx.Host(), ctx.TLS() != nil
	ctx.EachHeader(func(name, value string) {
		if strings.EqualFold(name, "X-Forwarded-For") {
			for hop := range strings.SplitSeq(value, ",") {
				c.forwarded = append(c.forwarded, strings.TrimSpace(hop))
			}
		}
	})
	return nil
}

// clientIP is the address a request is counted against: the connection's
// peer, unless that is a trusted proxy; then the last X-Forwarded-For hop
// that is not a trusted proxy (hops further left are whatever the client
// claimed). The zero Addr when nothing parses.
func (a *API) clientIP(c client) netip.Addr {
	ip := peer(c.remote)
	trusted := func(ip netip.Addr) bool {
		return slices.ContainsFunc(a.Limits.TrustedProxies, func(p netip.Prefix) bool { return p.Contains(ip) })
	}
	for i := len(c.forwarded) - 1; i >= 0 && ip.IsValid() && trusted(ip); i-- {
		hop, err := netip.ParseAddr(c.forwarded[i])
		if err != nil {
			// A proxy we trust wrote garbage: count the proxy itself
			// rather than believe a hop further left.
			break
		}
		ip = hop.Unmap()
	}
	return ip
}

func peer(remote string) netip.Addr {
	if ap, err := netip.ParseAddrPort(remote); err == nil {
		return ap.Addr().Unmap()
	}
	ip, _ := netip.ParseAddr(remote)
	return ip.Unmap()
}
