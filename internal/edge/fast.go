package edge

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// The edge has two data paths for plain HTTP/1.1 (EDGE_DATA_PATH):
//
//   - stdlib: net/http's server and httputil.ReverseProxy, for everything.
//   - fast: a forwarding loop written for the one case that is nearly all
//     traffic, a well-formed HTTP/1.1 request with at most a small body for
//     a routed host. It owns the client connection, parses the request in
//     place, writes it to a pooled node-proxy connection and streams the
//     response back, allocating nothing per request in the steady state.
//     Anything else (HTTP/1.0, Upgrade, Expect, chunked or large request
//     bodies, absolute-form targets, odd or oversized headers, unknown
//     hosts, apps with no healthy instance) hands the connection, with the
//     bytes already read, to the stdlib path for the rest of its life, so
//     both paths answer such requests the same way.
//
// One behaviour differs: while it waits for a response head the fast path
// does not read the client (that would take a second goroutine per
// request), so a client that leaves is noticed when the response is
// written or the upstream timeout ends the wait, where net/http cancels
// the upstream request at once.
//
// The profile of the stdlib path puts the edge's own code at a few percent
// of its CPU; the rest is net/http's per-request objects (Request, Header
// maps, contexts, bufio), ReverseProxy's copies and the GC they cause.
//
// And the fast path can run on event loops of its own (fast_loop.go):
//
//   - loop: the fast path's exchange, driven by epoll instead of a
//     goroutine per connection.
//
// On fast and loop, the requests net/http serves (hand-overs) and HTTP/2
// (h2.go) go through the direct exchange (direct.go) where they can.
const (
	DataPathStdlib = "stdlib"
	DataPathFast   = "fast"
	DataPathLoop   = "loop"
)

// DataPaths are the data paths the edge can run.
var DataPaths = []string{DataPathStdlib, DataPathFast, DataPathLoop}

// Buffer sizes of the fast path. A client request whose head does not fit
// clientBuf goes to the stdlib path (which allows 64 KiB and answers 431
// above that).
const (
	clientBuf      = 8 << 10
	upstreamBuf    = 16 << 10
	outBuf         = 16 << 10
	maxHeaders     = 100
	maxIdlePerNode = 512
	idleUpstream   = 90 * time.Second
)

// FastListener serves the fast data path on a listener and passes the
// connections it does not handle to an http.Server through Accept:
//
//	srv.Serve(proxy.FastListener(l, readHeaderTimeout, idleTimeout))
type FastListener struct {
	inner                          net.Listener
	p                              *Proxy
	readHeaderTimeout, idleTimeout time.Duration

	fallback  chan net.Conn
	handed    atomic.Int64 // connections given to the stdlib path
	offLoop   atomic.Int64 // connections the event loops gave to goroutines
	onLoop    atomic.Int64 // TLS connections the event loops took after the handshake
	onLoopH2  atomic.Int64 // HTTP/2 streams the event loops served themselves (h2_native.go)
	done      chan struct{}
	accepting chan struct{} // closed when acceptLoop returns
	closeOnce sync.Once
	closing   atomic.Bool

	mu    sync.Mutex
	conns map[*fastConn]struct{}
	wg    sync.WaitGroup

	// On event loops (LoopListener): the loops and the listener's fd.
	loops   []*evLoop
	loopLfd int

	// On TLS (FastTLSListener): the server's configuration, the scheme
	// the app is told the client used, and the handler of HTTP/2
	// requests (nil: net/http serves HTTP/2).
	tls   *tls.Config
	proto string
	h2    http.Handler
}

func newFastListener(p *Proxy, l net.Listener, readHeaderTimeout, idleTimeout time.Duration) *FastListener {
	return &FastListener{
		inner: l, p: p, readHeaderTimeout: readHeaderTimeout, idleTimeout: idleTimeout, proto: "http",
		fallback: make(chan net.Conn), done: make(chan struct{}), accepting: make(chan struct{}), conns: map[*fastConn]struct{}{},
	}
}

// FastListener starts serving l on the fast path.
func (p *Proxy) FastListener(l net.Listener, readHeaderTimeout, idleTimeout time.Duration) *FastListener {
	fl := newFastListener(p, l, readHeaderTimeout, idleTimeout)
	go fl.acceptLoop()
	return fl
}

// FastTLSListener starts serving l, a listener of plain TCP connections,
// as TLS with cfg: the fast path takes the connections that negotiate
// HTTP/1.1 (or nothing), and h2 serves those that negotiate HTTP/2 with
// the edge's own HTTP/2 server (h2.go). The rest are handed to the
// stdlib server after the handshake, as *tls.Conn: ACME's acme-tls/1
// validation, and HTTP/2 when h2 is nil (net/http serves it when Accept
// returns a connection that negotiated h2). Serve the stdlib side with
// KeepTLSState, so that requests handed over mid-connection are still
// seen as TLS.
func (p *Proxy) FastTLSListener(l net.Listener, cfg *tls.Config, h2 http.Handler, readHeaderTimeout, idleTimeout time.Duration) *FastListener {
	fl := newFastListener(p, l, readHeaderTimeout, idleTimeout)
	fl.setTLS(cfg, h2)
	go fl.acceptLoop()
	return fl
}

// LoopTLSListener is FastTLSListener with HTTP/1.1 over TLS 1.3 on event
// loops (one per GOMAXPROCS): crypto/tls makes the handshake on the
// connection's goroutine, then a loop takes the connection and its keys
// (tls_tap.go, tls_records.go). HTTP/2, acme-tls/1 and TLS 1.2 stay on
// goroutines, as on FastTLSListener, which this falls back to when the
// proxy dials node-proxies its own way or there are no loops to be had.
func (p *Proxy) LoopTLSListener(l net.Listener, cfg *tls.Config, h2 http.Handler, readHeaderTimeout, idleTimeout time.Duration) *FastListener {
	if p.ownDial {
		return p.FastTLSListener(l, cfg, h2, readHeaderTimeout, idleTimeout)
	}
	fl := newFastListener(p, l, readHeaderTimeout, idleTimeout)
	fl.setTLS(cfg, h2)
	if err := fl.startLoops(-1); err != nil {
		p.cfg.Log.Warn("event loops unavailable, serving HTTPS on goroutines", "err", err)
	} else {
		fl.tls = tapConfig(fl.tls)
	}
	go fl.acceptLoop()
	return fl
}

func (fl *FastListener) setTLS(cfg *tls.Config, h2 http.Handler) {
	fl.tls, fl.proto, fl.h2 = cfg.Clone(), "https", h2
	// What net/http's ServeTLS offers: HTTP/2 first, then HTTP/1.1.
	for _, proto := range []string{"h2", "http/1.1"} {
		if !slices.Contains(fl.tls.NextProtos, proto) {
			fl.tls.NextProtos = append(fl.tls.NextProtos, proto)
		}
	}
}

// KeepTLSState makes srv, serving a FastTLSListener, see the requests of a
// connection the fast path handed over mid-way (a *replayConn, no longer
// a *tls.Conn) as TLS: r.TLS is the connection's state, as it would have
// been had net/http served it from the start.
func KeepTLSState(srv *http.Server) {
	conn := srv.ConnContext
	srv.ConnContext = func(ctx context.Context, c net.Conn) context.Context {
		if conn != nil {
			ctx = conn(ctx, c)
		}
		if rc, ok := c.(*replayConn); ok && rc.tls != nil {
			ctx = context.WithValue(ctx, tlsStateKey{}, rc.tls)
		}
		return ctx
	}
	next := srv.Handler
	srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if st, ok := r.Context().Value(tlsStateKey{}).(*tls.ConnectionState); ok && r.TLS == nil {
			r.TLS = st
		}
		next.ServeHTTP(w, r)
	})
}

type tlsStateKey struct{}

func (fl *FastListener) acceptLoop() {
	var backoff time.Duration
	for {
		c, err := fl.inner.Accept()
		if err != nil {
			if isTemporaryAccept(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				time.Sleep(backoff)
				continue
			}
			close(fl.accepting)
			fl.Close()
			return
		}
		backoff = 0
		if fl.tls != nil {
			if fl.loops != nil {
				c = newTLSTap(c)
			}
			c = tls.Server(c, fl.tls) // the handshake runs on the connection's goroutine
		}
		fc := newFastConn(fl, c)
		fl.mu.Lock()
		if fl.closing.Load() {
			fl.mu.Unlock()
			c.Close()
			continue
		}
		fl.conns[fc] = struct{}{}
		fl.wg.Add(1)
		fl.mu.Unlock()
		go fc.serve()
	}
}

// isTemporaryAccept says whether an Accept error is worth retrying: out of
// file descriptors, a connection aborted before it was accepted.
func isTemporaryAccept(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() ||
		errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) || errors.Is(err, syscall.ECONNABORTED)
}

// Accept returns the connections the fast path handed over.
func (fl *FastListener) Accept() (net.Conn, error) {
	select {
	case c := <-fl.fallback:
		return c, nil
	case <-fl.done:
		return nil, net.ErrClosed
	}
}

// Addr is the listener's address.
func (fl *FastListener) Addr() net.Addr { return fl.inner.Addr() }

// Close stops accepting and closes the fast path's idle connections; the
// busy ones close after their current response (Shutdown waits for them).
func (fl *FastListener) Close() error {
	var err error
	fl.closeOnce.Do(func() {
		// Every connection accepted is served: those the loop took
		// before the listener closed are registered once it returns.
		// Event loops let go of the listener before it closes, so that
		// none accepts on a descriptor number that is no longer its.
		for _, lp := range fl.loops {
			lp.doWait(lp.unlisten)
		}
		err = fl.inner.Close()
		<-fl.accepting
		fl.mu.Lock()
		fl.closing.Store(true)
		for fc := range fl.conns {
			fc.wake()
		}
		fl.mu.Unlock()
		for _, lp := range fl.loops {
			lp.do(lp.closing)
		}
		close(fl.done)
	})
	return err
}

// Shutdown closes the listener and waits until the fast path's connections
// are gone or ctx ends, then closes what is left.
func (fl *FastListener) Shutdown(ctxDone <-chan struct{}) {
	fl.Close()
	finished := make(chan struct{})
	go func() { fl.wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-ctxDone:
		fl.mu.Lock()
		for fc := range fl.conns {
			fc.c.Close()
		}
		fl.mu.Unlock()
		for _, lp := range fl.loops {
			lp.do(lp.closeAll)
		}
	}
}

// handOver gives c to the stdlib server; false when it no longer accepts.
func (fl *FastListener) handOver(c net.Conn) bool {
	// Counted before the send: once it is received, the stdlib path may
	// answer the client before this goroutine runs again.
	fl.handed.Add(1)
	select {
	case fl.fallback <- c:
		return true
	case <-fl.done:
		fl.handed.Add(-1)
		return false
	}
}

func (fl *FastListener) forget(fc *fastConn) {
	fl.mu.Lock()
	delete(fl.conns, fc)
	fl.mu.Unlock()
	fl.wg.Done()
}

// replayConn is a connection handed to the stdlib path: it first reads the
// bytes the fast path had already read.
type replayConn struct {
	net.Conn
	pending []byte
	tls     *tls.ConnectionState // Conn is a *tls.Conn (KeepTLSState)
}

func (c *replayConn) Read(b []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(b, c.pending)
		c.pending = c.pending[n:]
		return n, nil
	}
	return c.Conn.Read(b)
}

// fastConn is one client connection on the fast path. An idle keep-alive
// connection holds only its read buffer; the state of an exchange is
// taken from a pool when a request arrives.
type fastConn struct {
	fl *FastListener
	c  net.Conn

	buf  []byte // client bytes; buf[r:w] not consumed yet
	r, w int
	x    *exchangeState // nil while idle

	idle atomic.Bool            // waiting for a request: Close may wake it
	h2   atomic.Pointer[h2Conn] // set when the connection speaks HTTP/2
	// accepted is when; served says a request was answered. Until then
	// the client is sending its first request, which a closing listener
	// still answers if it comes within firstRequestWait.
	accepted time.Time
	served   atomic.Bool

	peer     netip.Addr
	peerText []byte // the client's address as X-Forwarded-For says it
	trusted  bool   // the peer is a proxy whose forwarding headers we believe

	// tlsState is the TLS of a connection an event loop served over TLS
	// (c is then a *tlsConn, not a *tls.Conn).
	tlsState *tls.ConnectionState
}

// exchangeState is what a connection needs while it has a request.
type exchangeState struct {
	req   request
	resp  response
	route Route
	out   []byte // the request to the node-proxy, then the response head
	body  []byte // a request body that did not fit in the read buffer
	rng   *rand.ChaCha8
	rid   [36]byte
	watch headWatch // the direct exchange's
}

var exchangePool = sync.Pool{New: func() any {
	var seed [32]byte
	for i := range 4 {
		v := rand.Uint64() // runtime-seeded and unpredictable
		for j := range 8 {
			seed[i*8+j] = byte(v >> (8 * j))
		}
	}
	return &exchangeState{out: make([]byte, 0, outBuf), rng: rand.NewChaCha8(seed)}
}}

func (fc *fastConn) acquire() {
	if fc.x == nil {
		fc.x = exchangePool.Get().(*exchangeState)
	}
}

func (fc *fastConn) release() {
	if fc.x != nil {
		fc.x.route = Route{}
		exchangePool.Put(fc.x)
		fc.x = nil
	}
}

func newFastConn(fl *FastListener, c net.Conn) *fastConn {
	fc := &fastConn{fl: fl, c: c, buf: make([]byte, clientBuf), accepted: time.Now()}
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		fc.setPeer(ap.Addr())
	} else {
		fc.peerText = []byte(c.RemoteAddr().String())
	}
	return fc
}

// setPeer records the client's address and whether it is trusted.
func (fc *fastConn) setPeer(a netip.Addr) {
	fc.peer = a.Unmap()
	fc.peerText = fc.peer.AppendTo(nil)
	fc.trusted = fc.fl.p.cfg.TrustForwarded != nil && fc.fl.p.cfg.TrustForwarded(fc.peer)
}

// firstRequestWait is how long a closing listener waits for a new
// connection's first request (httpapi.Graceful's, net/http's): with the
// socket kept across a restart, the client connected to this process, and
// closing the connection unanswered would lose its request.
const firstRequestWait = 5 * time.Second

// wake makes an idle connection's read return, so it sees the listener
// closing; one yet to send its first request gets until firstRequestWait.
func (fc *fastConn) wake() {
	if sc := fc.h2.Load(); sc != nil {
		go sc.shutdown() // GOAWAY, then close once its streams are answered
		return
	}
	if fc.idle.Load() {
		fc.c.SetReadDeadline(fc.closingDeadline())
	}
}

func (fc *fastConn) closingDeadline() time.Time {
	if fc.served.Load() {
		return time.Unix(1, 0)
	}
	return fc.accepted.Add(firstRequestWait)
}

func (fc *fastConn) serve() {
	handed := false
	defer func() {
		fc.release()
		if !handed {
			fc.c.Close()
		}
		fc.fl.forget(fc)
	}()
	tlsState := fc.tlsState
	if tc, ok := fc.c.(*tls.Conn); ok {
		st, ok := fc.handshake(tc)
		if !ok {
			return
		}
		tap, _ := tc.NetConn().(*tlsTap)
		if st.NegotiatedProtocol == "h2" && fc.fl.h2 != nil {
			if tap != nil && fc.toLoop(tap, &st, true) {
				handed = true
				return
			}
			tap.pass()
			fc.serveH2(tc, &st)
			return
		}
		if st.NegotiatedProtocol != "" && st.NegotiatedProtocol != "http/1.1" {
			tap.pass()
			handed = fc.fl.handOver(tc)
			return
		}
		tlsState = &st
		if tap != nil {
			if fc.toLoop(tap, tlsState, false) {
				handed = true
				return
			}
			tap.pass()
		}
	}
	for {
		switch fc.readRequest() {
		case readClose:
			return
		case readFallback:
			rc := &replayConn{Conn: fc.c, pending: fc.buf[fc.r:fc.w], tls: tlsState}
			fc.c.SetReadDeadline(time.Time{})
			handed = fc.fl.handOver(rc)
			return
		}
		if !fc.fl.p.serveFast(fc) {
			return
		}
		fc.served.Store(true)
		if fc.x.req.close || fc.fl.closing.Load() {
			return
		}
	}
}

// handshake runs the TLS handshake within the time a client has for its
// request head (net/http's limit for it too). A deadline, not a context:
// HandshakeContext would start a goroutine to watch it.
func (fc *fastConn) handshake(tc *tls.Conn) (tls.ConnectionState, bool) {
	if d := fc.fl.readHeaderTimeout; d > 0 {
		tc.SetDeadline(time.Now().Add(d))
		defer tc.SetDeadline(time.Time{})
	}
	if err := tc.Handshake(); err != nil {
		// What net/http tells a client that spoke plain HTTP to it.
		var re tls.RecordHeaderError
		if errors.As(err, &re) && re.Conn != nil && looksLikeHTTP(re.RecordHeader) {
			re.Conn.SetWriteDeadline(time.Now().Add(time.Second))
			io.WriteString(re.Conn, "HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n")
		}
		fc.fl.p.cfg.Log.Debug("TLS handshake failed", "client", fc.c.RemoteAddr().String(), "err", err)
		return tls.ConnectionState{}, false
	}
	return tc.ConnectionState(), true
}

// looksLikeHTTP says whether the first bytes of what should have been a
// TLS record are a plain HTTP request.
func looksLikeHTTP(hdr [5]byte) bool {
	switch string(hdr[:]) {
	case "GET /", "HEAD ", "POST ", "PUT /", "OPTIO":
		return true
	}
	return false
}

type readResult int

const (
	readOK readResult = iota
	readClose
	readFallback
)

// readRequest reads and parses the next request head (and a small body).
func (fc *fastConn) readRequest() readResult {
	if fc.r == fc.w {
		fc.r, fc.w = 0, 0
	} else if fc.r > 0 {
		fc.w = copy(fc.buf, fc.buf[fc.r:fc.w])
		fc.r = 0
	}
	timedPartial := false
	if fc.w == 0 {
		fc.release()
		fc.idle.Store(true)
		if fc.fl.closing.Load() {
			if fc.served.Load() {
				return readClose
			}
			fc.c.SetReadDeadline(fc.closingDeadline())
		} else if fc.fl.idleTimeout > 0 {
			fc.c.SetReadDeadline(time.Now().Add(fc.fl.idleTimeout))
		} else {
			fc.c.SetReadDeadline(time.Time{})
		}
	}
	for {
		if fc.w > 0 {
			fc.idle.Store(false)
			fc.acquire()
			switch res := fc.x.req.parse(fc.buf[:fc.w]); res {
			case parseOK:
				// Only routed hosts with an instance take the fast path: the
				// stdlib path's 404 and 503 pages stay the only ones.
				route, ok := fc.fl.p.cfg.Routes.Load().lookupBytes(fc.x.req.host)
				if !ok || len(route.Backends) == 0 {
					return readFallback
				}
				fc.x.route = route
				return fc.readBody()
			case parseFallback:
				return readFallback
			}
			// parseMore
			if fc.w == len(fc.buf) {
				return readFallback // a big head: the stdlib path takes it (and its 431)
			}
			if !timedPartial {
				timedPartial = true
				if fc.fl.readHeaderTimeout > 0 {
					fc.c.SetReadDeadline(time.Now().Add(fc.fl.readHeaderTimeout))
				}
			}
		}
		n, err := fc.c.Read(fc.buf[fc.w:])
		fc.w += n
		if err != nil && n == 0 {
			return readClose
		}
	}
}

// readBody makes the request's body (Content-Length, at most smallBody)
// whole in memory, so any attempt can send it again.
func (fc *fastConn) readBody() readResult {
	q := &fc.x.req
	start := q.headEnd
	end := start + int(q.contentLength)
	if end <= fc.w {
		q.body = fc.buf[start:end]
		fc.r = end
		return readOK
	}
	if cap(fc.x.body) < int(q.contentLength) {
		fc.x.body = make([]byte, 0, smallBody)
	}
	b := append(fc.x.body[:0], fc.buf[start:fc.w]...)
	fc.r, fc.w = 0, 0
	// The head is parsed into slices of buf, which must stay put: read the
	// rest straight into the body buffer.
	for len(b) < int(q.contentLength) {
		n, err := fc.c.Read(b[len(b):q.contentLength])
		b = b[:len(b)+n]
		if err != nil && n == 0 {
			return readClose
		}
	}
	fc.x.body = b
	q.body = b
	return readOK
}

// newRequestID writes a fresh UUIDv7 into fc.x.rid: the edge's own ids look
// like every other id in Zeitwork, without an allocation or a syscall.
func (fc *fastConn) newRequestID(now time.Time) []byte {
	var u [16]byte
	ms := uint64(now.UnixMilli())
	a, b := fc.x.rng.Uint64(), fc.x.rng.Uint64()
	for i := range 6 {
		u[i] = byte(ms >> (40 - 8*i))
	}
	u[6] = 0x70 | byte(a&0x0f)
	u[7] = byte(a >> 8)
	u[8] = 0x80 | byte(b&0x3f)
	for i := 9; i < 16; i++ {
		u[i] = byte(b >> (8 * (i - 8)))
	}
	const hex = "0123456789abcdef"
	j := 0
	for i, x := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			fc.x.rid[j] = '-'
			j++
		}
		fc.x.rid[j], fc.x.rid[j+1] = hex[x>>4], hex[x&0x0f]
		j += 2
	}
	return fc.x.rid[:]
}
