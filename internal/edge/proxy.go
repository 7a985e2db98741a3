package edge

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"html"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/nodeproxy"
)

// HeaderRequestID carries a request's id from the client (if it sent a
// sane one) or the edge, to the app, and back in the response.
const HeaderRequestID = "X-Request-Id"

// maxAttempts bounds how many instances one request may try.
const maxAttempts = 3

// dialTimeout bounds opening a connection to a node-proxy.
const dialTimeout = 3 * time.Second

// ProxyConfig configures a Proxy.
type ProxyConfig struct {
	Routes *Routes
	// Token proves the edge to the node-proxies (NODE_PROXY_TOKEN).
	Token string
	// UpstreamTimeout bounds the wait for an instance's response headers.
	UpstreamTimeout time.Duration
	// TrustForwarded says whether a peer is a proxy in front of the edge
	// (Cloudflare) whose CF-Connecting-IP and X-Forwarded-Proto are true.
	// Nil trusts no one: the peer is the client.
	TrustForwarded func(peer netip.Addr) bool
	Metrics        *Metrics
	Log            *slog.Logger
	// Dial opens connections to node-proxies; nil dials directly.
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)
	// LoopSpin is how long an event loop polls again before it parks
	// (EDGE_LOOP_SPIN); 0 parks at once.
	LoopSpin time.Duration
}

// Proxy is the edge's request path: Host → route → instance (through the
// node-proxy of its node).
type Proxy struct {
	cfg       ProxyConfig
	rp        *httputil.ReverseProxy
	transport *http.Transport
	pool      upstreamPool // the fast path's node-proxy connections
	ownDial   bool         // ProxyConfig.Dial was set: the event loops cannot dial
	direct    atomic.Int64 // requests the direct exchange forwarded (tests read it)

	hangupAfter atomic.Int64 // nanoseconds a wait for a head goes before the client is watched (tests shorten it)
	hangupOnce  sync.Once
	hangups     *hangupWatch
}

// NewProxy builds a proxy.
func NewProxy(cfg ProxyConfig) *Proxy {
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	ownDial := cfg.Dial != nil
	if cfg.Dial == nil {
		cfg.Dial = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	p := &Proxy{cfg: cfg, ownDial: ownDial}
	p.hangupAfter.Store(int64(defaultHangupAfter))
	p.pool.dial = cfg.Dial
	// Few node-proxies carry many clients: keep plenty of idle connections
	// per node so bursts do not pay for new handshakes.
	p.transport = &http.Transport{
		DialContext:           cfg.Dial,
		MaxIdleConns:          4096,
		MaxIdleConnsPerHost:   512,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: cfg.UpstreamTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass bodies through as the app encoded them
	}
	p.rp = &httputil.ReverseProxy{
		Transport:      upstream{p},
		FlushInterval:  -1, // stream: events and chunks reach the client as the app writes them
		Rewrite:        p.rewrite,
		ModifyResponse: p.modifyResponse,
		ErrorHandler:   p.errorHandler,
		ErrorLog:       slog.NewLogLogger(cfg.Log.Handler(), slog.LevelDebug),
	}
	return p
}

// exchange is one request's state as it passes through the proxy.
type exchange struct {
	route     Route
	project   string
	requestID string
	start     time.Time
	status    int
	took      time.Duration
}

type exchangeKey struct{}

// ServeHTTP routes one request.
func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	x := &exchange{requestID: requestID(r), start: time.Now()}
	w.Header().Set(HeaderRequestID, x.requestID)
	route, ok := p.cfg.Routes.Load().Lookup(r.Host)
	switch {
	case !ok:
		page(w, http.StatusNotFound, "unknown_host", "No app here",
			fmt.Sprintf("There is no app at %s. If you just added this domain, it is routed once it is verified.", r.Host))
		p.cfg.Metrics.request("", http.StatusNotFound, time.Since(x.start))
		return
	case len(route.Backends) == 0:
		w.Header().Set("Retry-After", "5")
		page(w, http.StatusServiceUnavailable, "no_healthy_instance", "App unavailable",
			"This app has no healthy instance right now. It may be starting or recovering; try again in a few seconds.")
		p.cfg.Metrics.request(route.ProjectID.String(), http.StatusServiceUnavailable, time.Since(x.start))
		return
	}
	x.route, x.project = route, route.ProjectID.String()
	// Without it, net/http closes the request body on the response's first
	// write while the transport may still read it, and the connection to
	// the app, with the response, is dropped (see nodeproxy's fullDuplex).
	_ = http.NewResponseController(w).EnableFullDuplex()
	p.rp.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), exchangeKey{}, x)))
	if x.status == 0 {
		x.status, x.took = http.StatusBadGateway, time.Since(x.start)
	}
	p.cfg.Metrics.request(x.project, x.status, x.took)
}

// requestID keeps a client's id when it is short and plain (so traces
// join up across a client's own proxies), else makes one.
func requestID(r *http.Request) string {
	if v := r.Header.Get(HeaderRequestID); len(v) >= 8 && len(v) <= 64 {
		ok := true
		for _, c := range []byte(v) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
				ok = false
				break
			}
		}
		if ok {
			return v
		}
	}
	var b [36]byte
	u := id.New()
	hex.Encode(b[:8], u[:4])
	b[8] = '-'
	hex.Encode(b[9:13], u[4:6])
	b[13] = '-'
	hex.Encode(b[14:18], u[6:8])
	b[18] = '-'
	hex.Encode(b[19:23], u[8:10])
	b[23] = '-'
	hex.Encode(b[24:], u[10:])
	return string(b[:]) // as u.String(), which costs a second allocation
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	x := pr.In.Context().Value(exchangeKey{}).(*exchange)
	// Rewrite has already dropped hop-by-hop and client-sent X-Forwarded-*
	// headers: the edge is the first hop that tells the truth.
	client, proto, trusted := p.client(pr.In)
	if !trusted {
		// Others that apps and frameworks read as the client's address
		// or scheme: only a trusted proxy in front may say.
		for _, h := range spoofable {
			pr.Out.Header.Del(h)
		}
	}
	pr.Out.URL.Scheme = "http"
	pr.Out.Host = pr.In.Host
	pr.Out.Header.Set("X-Forwarded-For", client)
	pr.Out.Header.Set("X-Forwarded-Host", pr.In.Host)
	pr.Out.Header.Set("X-Forwarded-Proto", proto)
	pr.Out.Header.Set(HeaderRequestID, x.requestID)
	pr.Out.Header.Set(nodeproxy.HeaderToken, p.cfg.Token)
}

// spoofable are the headers besides X-Forwarded-* that say who the client
// is or how it came (the fast path's classify knows them too): forwarded
// from a trusted proxy only.
var spoofable = []string{"X-Real-Ip", "True-Client-Ip", "X-Forwarded-Ssl", "Cf-Connecting-Ip"}

// client is the client's address and the scheme it used: the peer and our
// own listener, unless the peer is a trusted proxy that tells us.
func (p *Proxy) client(r *http.Request) (ip, proto string, trusted bool) {
	proto = "http"
	if r.TLS != nil {
		proto = "https"
	}
	peer, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr, proto, false
	}
	if a := peer.Addr(); a.Is4() {
		ip = r.RemoteAddr[:strings.LastIndexByte(r.RemoteAddr, ':')] // as String() would say it, without a copy
	} else {
		ip = a.Unmap().String()
	}
	if p.cfg.TrustForwarded != nil && p.cfg.TrustForwarded(peer.Addr().Unmap()) {
		trusted = true
		if cf, err := netip.ParseAddr(r.Header.Get("CF-Connecting-IP")); err == nil {
			ip = cf.String()
		}
		if fp := r.Header.Get("X-Forwarded-Proto"); fp == "https" || fp == "http" {
			proto = fp
		}
	}
	return ip, proto, trusted
}

func (p *Proxy) modifyResponse(resp *http.Response) error {
	x := resp.Request.Context().Value(exchangeKey{}).(*exchange)
	x.status, x.took = resp.StatusCode, time.Since(x.start)
	resp.Header.Del(HeaderRequestID) // the edge's, already set, is the one
	return nil
}

// statusClientClosed is what the metrics count for a request whose client
// left before its answer (nginx's 499): nobody reads a response.
const statusClientClosed = 499

// errNoInstance: every instance of the route refused or was gone.
var errNoInstance = errors.New("no instance could be reached")

func (p *Proxy) errorHandler(w http.ResponseWriter, r *http.Request, err error) {
	x := r.Context().Value(exchangeKey{}).(*exchange)
	x.took = time.Since(x.start)
	if errors.Is(err, context.Canceled) {
		x.status = statusClientClosed
	} else {
		var code, title, msg string
		var retry bool
		x.status, code, title, msg, retry = failurePage(err)
		if retry {
			w.Header().Set("Retry-After", "5")
		}
		page(w, x.status, code, title, msg)
	}
	p.cfg.Log.DebugContext(r.Context(), "upstream failed", "project_id", x.project, "request_id", x.requestID, "status", x.status, "err", err)
}

// upstream is the proxy's transport: it picks an instance for each attempt
// and retries on another one when the request provably reached no app.
type upstream struct{ p *Proxy }

func (u upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	p := u.p
	x := req.Context().Value(exchangeKey{}).(*exchange)
	body, err := retryableBody(req)
	if err != nil {
		return nil, err
	}
	var triedBuf [maxAttempts]int
	tried := triedBuf[:0]
	var lastErr error = errNoInstance
	for len(tried) < maxAttempts {
		i, ok := pick(x.route.Backends, tried)
		if !ok {
			break
		}
		tried = append(tried, i)
		b := x.route.Backends[i]
		h := b.health
		if h == nil {
			h = &health{}
		}
		out := *req
		if body != nil {
			out.Body = body.attempt()
		}
		u := *req.URL
		u.Host = b.NodeProxy
		out.URL = &u
		out.Header.Set(nodeproxy.HeaderInstance, b.InstanceID.String())

		h.inflight.Add(1)
		resp, err := p.transport.RoundTrip(&out)
		if err != nil {
			h.inflight.Add(-1)
			reason := reasonOf(err)
			p.cfg.Metrics.upstreamError(x.project, reason)
			if reason == "refused" {
				h.down(time.Now())
				if !body.started() {
					continue // nothing left the edge: another instance is safe
				}
			}
			return nil, err
		}
		// The node-proxy says the instance is gone or refused it: the app
		// saw nothing. Retry elsewhere, unless part of a body went out.
		if code := resp.Header.Get(nodeproxy.HeaderError); code != "" {
			resp.Header.Del(nodeproxy.HeaderError)
			if nodeproxy.Retryable(code) {
				h.down(time.Now())
				p.cfg.Metrics.upstreamError(x.project, code)
				if !body.started() {
					io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
					resp.Body.Close()
					h.inflight.Add(-1)
					lastErr = errNoInstance
					continue
				}
			}
		} else {
			h.up()
		}
		resp.Body = released(resp.Body, h)
		return resp, nil
	}
	return nil, lastErr
}

func reasonOf(err error) string {
	var netErr net.Error
	var op *net.OpError
	switch {
	case errors.As(err, &op) && op.Op == "dial", errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "client_closed"
	default:
		return "error"
	}
}

// smallBody is the largest request body held in memory so that a request
// can be retried after its body went to a node-proxy that then said the
// instance was gone.
const smallBody = 64 << 10

// trackedBody knows whether the transport read any of the request body, so
// a failed attempt can be retried only when nothing was sent, unless the
// body is small and held in memory, when every attempt starts afresh.
type trackedBody struct {
	r        io.ReadCloser
	buffered []byte // a small body, whole
	isBuf    bool
	read     bool
}

// retryableBody prepares req's body for attempts; nil when there is none.
func retryableBody(req *http.Request) (*trackedBody, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	if req.ContentLength > 0 && req.ContentLength <= smallBody {
		buf := make([]byte, req.ContentLength)
		if _, err := io.ReadFull(req.Body, buf); err != nil {
			return nil, fmt.Errorf("read request body: %w", err)
		}
		return &trackedBody{buffered: buf, isBuf: true}, nil
	}
	return &trackedBody{r: req.Body}, nil
}

// attempt is the body for one attempt.
func (b *trackedBody) attempt() io.ReadCloser {
	if b.isBuf {
		return io.NopCloser(bytes.NewReader(b.buffered))
	}
	return b
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.read = true
	return b.r.Read(p)
}

// Close is a no-op: the transport closes bodies on failure, and a retry
// still needs this one (the server closes the real body when the handler
// returns).
func (b *trackedBody) Close() error { return nil }

// started says whether a retry would send a body that is partly gone.
func (b *trackedBody) started() bool { return b != nil && !b.isBuf && b.read }

// released lowers the instance's in-flight count when the response is
// done, which for a stream or a websocket is when it closes.
func released(body io.ReadCloser, h *health) io.ReadCloser {
	r := &releaser{ReadCloser: body, h: h}
	if rw, ok := body.(io.ReadWriteCloser); ok {
		return &rwReleaser{releaser: r, w: rw} // a 101 upgrade: the proxy writes to it
	}
	return r
}

type releaser struct {
	io.ReadCloser
	h    *health
	once sync.Once
}

func (r *releaser) Close() error {
	err := r.ReadCloser.Close()
	r.once.Do(func() { r.h.inflight.Add(-1) })
	return err
}

type rwReleaser struct {
	*releaser
	w io.Writer
}

func (r *rwReleaser) Write(p []byte) (int, error) { return r.w.Write(p) }

// page writes the edge's own error page: a person reading it learns what
// happened, a program reads the code in X-Zeitwork-Error.
func page(w http.ResponseWriter, status int, code, title, message string) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Zeitwork-Error", code)
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	writePage(w, status, code, title, message)
}

// writePage writes the page's HTML, for either data path.
func writePage(w io.Writer, status int, code, title, message string) {
	fmt.Fprintf(w, `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>%d %s</title>
<style>body{font:16px system-ui,sans-serif;max-width:36em;margin:15vh auto;padding:0 1em;color:#222}h1{font-size:1.4em}small{color:#777}</style>
</head><body><h1>%s</h1><p>%s</p><p><small>%d · %s · zeitwork edge</small></p></body></html>
`, status, html.EscapeString(title), html.EscapeString(title), html.EscapeString(message), status, code)
}
