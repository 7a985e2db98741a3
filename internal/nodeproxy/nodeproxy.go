// Package nodeproxy is the node-proxy: the one door into a worker's
// instances. The edge sends each request to the node that runs a healthy
// instance of the app, naming the instance in a header and proving itself
// with the node-proxy token (NODE_PROXY_TOKEN, which opens nothing else);
// the node-proxy forwards it to that instance's [ipv6]:port inside the node.
// Nothing else can open a connection to an instance (the network policy
// drops it), so this is where isolation and routing meet.
package nodeproxy

import (
	"cmp"
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"syscall"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/httpapi"
)

// Headers the edge sets. Both are removed before the request reaches the
// app: the token must never leak into customer code, and the app has no
// business knowing instance ids.
const (
	HeaderInstance = "X-Zeitwork-Instance"
	HeaderToken    = "X-Zeitwork-Proxy-Token"
	// HeaderError marks a response as the node-proxy's own error, not the
	// app's, with its code: the edge retries another instance on a code
	// for which Retryable is true. Apps cannot set it (it is stripped from
	// their responses).
	HeaderError = "X-Zeitwork-Proxy-Error"
)

// Retryable says whether a node-proxy error code means the request reached
// no app: the instance is not on the node, not healthy, or refused the
// connection before anything was written to it.
func Retryable(code string) bool {
	switch code {
	case codeGone, codeUnhealthy, codeUnreachable:
		return true
	}
	return false
}

const (
	codeGone        = "instance_gone"
	codeUnhealthy   = "instance_unhealthy"
	codeUnreachable = "instance_unreachable"
)

// Target is where an instance listens and whether it may take traffic.
type Target struct {
	Addr    netip.AddrPort
	Healthy bool
}

// Lookup finds a local instance; ok is false when this node has no such
// instance.
type Lookup func(ctx context.Context, instanceID uuid.UUID) (t Target, ok bool)

// Proxy forwards edge traffic to local instances.
type Proxy struct {
	token  []byte
	lookup Lookup
	rp     *httputil.ReverseProxy
	api    httpapi.Server
}

// Dialer opens connections to instances.
type Dialer func(ctx context.Context, network, addr string) (net.Conn, error)

// New returns a proxy that admits requests carrying token. dial may be nil
// for a plain dialer; tests whose instances live in another network
// namespace than the test pass one that dials from there.
func New(token string, lookup Lookup, dial Dialer, log *slog.Logger) *Proxy {
	p := &Proxy{token: []byte(token), lookup: lookup, api: httpapi.Server{Log: log}}
	if dial == nil {
		dial = (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	}
	transport := &http.Transport{
		DialContext:           dial,
		MaxIdleConns:          1024,
		MaxIdleConnsPerHost:   64, // per instance: the edge multiplexes many clients onto few nodes
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: 0, // apps may take long to answer; the edge bounds whole requests
		ExpectContinueTimeout: time.Second,
		ForceAttemptHTTP2:     false, // instances speak HTTP/1.1 (and upgrade to websockets)
	}
	p.rp = &httputil.ReverseProxy{
		Transport:     transport,
		FlushInterval: -1, // stream: server-sent events and chunked bodies go through as written
		Rewrite: func(pr *httputil.ProxyRequest) {
			target := pr.In.Context().Value(targetKey{}).(netip.AddrPort)
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = target.String()
			// The edge has already set X-Forwarded-*; Rewrite strips them
			// from the outbound request, so put back what the edge said.
			for _, h := range []string{"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
			pr.Out.Host = pr.In.Host
		},
		ModifyResponse: func(resp *http.Response) error {
			resp.Header.Del(HeaderError)
			return nil
		},
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.api.Handle(func(w http.ResponseWriter, _ *http.Request) error { return mark(w, upstreamError(err)) }).ServeHTTP(w, r)
		},
		// What ReverseProxy logs itself (an app's body breaking off) goes
		// through our logger, not the standard one.
		ErrorLog: slog.NewLogLogger(cmp.Or(log, slog.New(slog.DiscardHandler)).Handler(), slog.LevelDebug),
	}
	return p
}

type targetKey struct{}

// ServeHTTP implements http.Handler.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.api.Middleware(p.api.Handle(p.serve)).ServeHTTP(w, r)
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) error {
	got := []byte(r.Header.Get(HeaderToken))
	if len(p.token) == 0 || subtle.ConstantTimeCompare(got, p.token) != 1 {
		return httpapi.Unauthorized()
	}
	raw := r.Header.Get(HeaderInstance)
	instanceID, err := uuid.Parse(raw)
	if err != nil {
		return httpapi.BadRequest("%s header must be an instance id", HeaderInstance)
	}
	target, ok := p.lookup(r.Context(), instanceID)
	if !ok {
		return mark(w, &httpapi.Error{Status: http.StatusBadGateway, Code: codeGone, Message: "instance " + instanceID.String() + " is not on this node"})
	}
	if !target.Healthy {
		return mark(w, &httpapi.Error{Status: http.StatusServiceUnavailable, Code: codeUnhealthy, Message: "instance " + instanceID.String() + " is not healthy"})
	}
	r.Header.Del(HeaderToken)
	r.Header.Del(HeaderInstance)
	fullDuplex(w)
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), targetKey{}, target.Addr)))
	return nil
}

// mark labels a response as the node-proxy's own error.
func mark(w http.ResponseWriter, err *httpapi.Error) *httpapi.Error {
	w.Header().Set(HeaderError, err.Code)
	return err
}

// upstreamError says why the instance could not be reached. Refused and
// unreachable mean the instance is gone or not listening (502, the edge
// may retry elsewhere: nothing was sent); a timeout is 504.
func upstreamError(err error) *httpapi.Error {
	var netErr net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return &httpapi.Error{Status: http.StatusBadGateway, Code: codeUnreachable, Message: "instance refused the connection", Err: err}
	case errors.Is(err, context.Canceled):
		// The client went away; nobody reads this response.
		return &httpapi.Error{Status: 499, Code: "client_closed", Message: "client closed the request", Err: err}
	case errors.As(err, &netErr) && netErr.Timeout():
		return &httpapi.Error{Status: http.StatusGatewayTimeout, Code: "instance_timeout", Message: "instance did not answer in time", Err: err}
	default:
		msg := "instance failed to answer"
		if strings.Contains(err.Error(), "EOF") {
			msg = "instance closed the connection"
		}
		return &httpapi.Error{Status: http.StatusBadGateway, Code: "instance_error", Message: msg, Err: err}
	}
}

// fullDuplex keeps the request body the proxy's own while the app's
// response streams back. By default net/http's HTTP/1 server, on the
// response's first write, reads what is left of the request body and
// closes it, concurrently with the transport still reading it for the
// app; the transport then sees its body closed, drops the connection to
// the app, and the response the client is reading ends mid-way (an app
// that flushes a first chunk and finishes later, once it has the whole
// upload: TestStreamsResponsesAndRequestBodies, one run in some hundreds).
// HTTP/2 is full duplex already and says so with an error, ignored.
func fullDuplex(w http.ResponseWriter) {
	_ = http.NewResponseController(w).EnableFullDuplex()
}
