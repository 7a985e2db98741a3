package edge

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The direct exchange forwards requests that net/http parsed (HTTP/2, and
// the HTTP/1 connections the fast path handed over) on the fast path's
// pooled node-proxy connections. The stdlib path's httputil.ReverseProxy
// and http.Transport cost, per request, a clone of the request and its
// header map, and hand-offs between the handler and the two goroutines
// the transport runs for each upstream connection. Here the handler's
// own goroutine writes the request and reads the response.
//
// It takes what the fast path takes: a routed host with an instance, a
// body of known length that fits in memory, no upgrade, no Expect. The
// rest goes to ServeHTTP, the stdlib path, which answers it the same way
// it always has.

// Direct is the handler for the net/http server behind the fast and loop
// data paths.
func (p *Proxy) Direct() http.Handler { return http.HandlerFunc(p.serveDirect) }

func (p *Proxy) serveDirect(w http.ResponseWriter, r *http.Request) {
	if !directable(r) {
		p.ServeHTTP(w, r)
		return
	}
	route, ok := p.cfg.Routes.Load().Lookup(r.Host)
	if !ok || len(route.Backends) == 0 {
		p.ServeHTTP(w, r) // its 404 and 503 pages
		return
	}
	p.direct.Add(1)
	start := time.Now()
	x := exchangePool.Get().(*exchangeState)
	defer exchangePool.Put(x)
	rid := requestID(r)
	w.Header().Set(HeaderRequestID, rid)

	if r.ContentLength > 0 {
		if cap(x.body) < int(r.ContentLength) {
			x.body = make([]byte, 0, smallBody)
		}
		x.body = x.body[:r.ContentLength]
		if _, err := io.ReadFull(r.Body, x.body); err != nil {
			status := statusClientClosed
			if r.Context().Err() == nil {
				status = http.StatusBadRequest
				page(w, status, "bad_request", "Bad request", "The request body ended before its Content-Length.")
			}
			p.cfg.Metrics.requestFast(route.ProjectID, status, time.Since(start))
			return
		}
	} else {
		x.body = x.body[:0]
	}
	prefix := p.directHead(x, r, rid)
	replayable := len(x.body) == 0 && (r.Method == "GET" || r.Method == "HEAD" || r.Method == "OPTIONS" || r.Method == "TRACE")

	// While it waits for the head, a client that leaves ends the wait.
	gen := x.watch.begin()
	hs, _ := w.(*h2Stream)
	stop := func() bool { return false }
	if hs != nil {
		hs.watchHead(&x.watch, gen)
	} else {
		stop = context.AfterFunc(r.Context(), func() { x.watch.leave(gen) })
	}
	uc, h, failure := p.attempt(route, x, prefix, x.body, r.Method == "HEAD", replayable, start, &x.watch)
	if hs != nil {
		hs.watchHead(nil, 0)
	} else {
		stop()
	}
	x.watch.end()
	if errors.Is(failure, context.Canceled) {
		p.cfg.Metrics.requestFast(route.ProjectID, statusClientClosed, time.Since(start))
		return // nobody to answer
	}
	if failure == nil {
		took := time.Since(start)
		cut := p.forwardDirect(w, r, uc, &x.resp, start)
		h.inflight.Add(-1)
		p.cfg.Metrics.requestFast(route.ProjectID, x.resp.status, took)
		if cut {
			// As ReverseProxy does: a response that ended early must not
			// look whole (a last chunk, an END_STREAM) to the client.
			panic(http.ErrAbortHandler)
		}
		return
	}
	status, code, title, msg, retry := failurePage(failure)
	if retry {
		w.Header().Set("Retry-After", "5")
	}
	page(w, status, code, title, msg)
	p.cfg.Metrics.requestFast(route.ProjectID, status, time.Since(start))
	p.cfg.Log.DebugContext(r.Context(), "upstream failed", "project_id", route.ProjectID, "request_id", rid, "status", status, "err", failure)
}

// toHeader adds the fields the fast path keeps to h. The values are cut
// from one string and their slices from one array, and the names most
// responses have need no string of their own: a response head costs three
// allocations however many fields it has.
func (resp *response) toHeader(h http.Header) {
	size, kept := 0, 0
	for i := range resp.n {
		if f := &resp.fields[i]; !f.drop {
			size += len(f.value)
			kept++
		}
	}
	var b strings.Builder
	b.Grow(size)
	for i := range resp.n {
		if f := &resp.fields[i]; !f.drop {
			b.Write(f.value)
		}
	}
	all, vals, at := b.String(), make([]string, kept), 0
	for i := range resp.n {
		f := &resp.fields[i]
		if f.drop {
			continue
		}
		k, ok := canonicalCommon[string(f.name)]
		if !ok {
			k = http.CanonicalHeaderKey(string(f.name))
		}
		v := all[at : at+len(f.value)]
		at += len(f.value)
		if prev := h[k]; len(prev) > 0 {
			h[k] = append(prev, v)
			continue
		}
		vals[0] = v
		h[k], vals = vals[:1:1], vals[1:]
	}
}

// canonicalCommon maps the names most responses have, as apps spell them,
// to their canonical form.
var canonicalCommon = func() map[string]string {
	m := map[string]string{}
	for _, k := range []string{"Accept-Ranges", "Age", "Cache-Control", "Content-Encoding", "Content-Language", "Content-Length",
		"Content-Type", "Date", "Etag", "Expires", "Last-Modified", "Location", "Server", "Set-Cookie", "Strict-Transport-Security",
		"Vary", "X-Content-Type-Options", "X-Frame-Options", "Retry-After", "Access-Control-Allow-Origin", "Connection", "Keep-Alive", "Trailer"} {
		m[k] = k
		m[strings.ToLower(k)] = k
	}
	m["ETag"] = "Etag"
	return m
}()

// directable says whether the direct exchange takes r: what the fast path
// would have taken had it parsed r itself.
func directable(r *http.Request) bool {
	if r.Method == http.MethodConnect || r.ContentLength < 0 || r.ContentLength > smallBody || len(r.TransferEncoding) > 0 {
		return false
	}
	if _, ok := r.Header["Upgrade"]; ok {
		return false
	}
	_, expect := r.Header["Expect"]
	return !expect
}

// directDropped are the request fields never forwarded: the hop-by-hop
// ones and those the edge sets itself (the fast path's classify drops the
// same). net/http's keys are canonical.
var directDropped = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Te": true, "Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true, "X-Forwarded-Proto": true,
	"X-Request-Id": true, "X-Zeitwork-Proxy-Token": true, "X-Zeitwork-Instance": true,
	"Content-Length": true, "Host": true,
}

// directHead writes the request to the node-proxy, up to the instance
// field, into x.out and returns its length: what the stdlib path's
// Rewrite and transport would send.
func (p *Proxy) directHead(x *exchangeState, r *http.Request, rid string) int {
	client, proto, trusted := p.client(r)
	o := append(x.out[:0], r.Method...)
	o = append(o, ' ')
	o = append(o, r.URL.RequestURI()...)
	o = append(o, " HTTP/1.1\r\nHost: "...)
	o = append(o, r.Host...)
	o = append(o, "\r\n"...)
	listed := r.Header["Connection"] // HTTP/1 only: HTTP/2 has no such field
	for k, vs := range r.Header {
		if directDropped[k] || !trusted && isSpoofable(k) || len(listed) > 0 && namedIn(listed, k) {
			continue
		}
		for _, v := range vs {
			o = append(o, k...)
			o = append(o, ": "...)
			o = append(o, v...)
			o = append(o, "\r\n"...)
		}
	}
	if hasTrailers(r.Header["Te"]) {
		o = append(o, "Te: trailers\r\n"...)
	}
	o = append(o, "X-Forwarded-For: "...)
	o = append(o, client...)
	o = append(o, "\r\nX-Forwarded-Host: "...)
	o = append(o, r.Host...)
	o = append(o, "\r\nX-Forwarded-Proto: "...)
	o = append(o, proto...)
	o = append(o, "\r\nX-Request-Id: "...)
	o = append(o, rid...)
	o = append(o, "\r\nX-Zeitwork-Proxy-Token: "...)
	o = append(o, p.cfg.Token...)
	o = append(o, "\r\n"...)
	if len(x.body) > 0 || r.Method != "GET" && r.Method != "HEAD" {
		o = append(o, "Content-Length: "...)
		o = strconv.AppendInt(o, int64(len(x.body)), 10)
		o = append(o, "\r\n"...)
	}
	x.out = o
	return len(o)
}

func isSpoofable(k string) bool {
	for _, s := range spoofable {
		if k == s {
			return true
		}
	}
	return false
}

// namedIn says whether the Connection values name field k.
func namedIn(connection []string, k string) bool {
	for _, v := range connection {
		for tok := range bytes.SplitSeq([]byte(v), []byte(",")) {
			if eqFoldBytes(trimOWS(tok), []byte(k)) {
				return true
			}
		}
	}
	return false
}

func hasTrailers(te []string) bool {
	for _, v := range te {
		if hasToken([]byte(v), "trailers") {
			return true
		}
	}
	return false
}

// forwardDirect writes the response to w and streams its body: flushed
// whenever the next read of the node-proxy could block, so a stream's
// events reach the client as the app writes them while a response that
// is all here goes out in one piece (over HTTP/2, its HEADERS and a
// single DATA frame). cut says the node-proxy's body broke off while the
// client was still there.
func (p *Proxy) forwardDirect(w http.ResponseWriter, r *http.Request, uc *upConn, resp *response, now time.Time) (cut bool) {
	kind := resp.body(r.Method == "HEAD")
	h := w.Header()
	resp.toHeader(h)
	w.WriteHeader(resp.status)
	s := directStream{w: w, uc: uc, ctx: r.Context()}
	upstreamOK := false
	switch kind {
	case bodyNone:
		upstreamOK = true
	case bodyLength:
		upstreamOK = s.copyLength(resp.contentLength)
	case bodyChunked:
		upstreamOK = s.copyChunked(h)
	case bodyEOF:
		s.copyEOF()
	}
	if s.stopWatch != nil && !s.stopWatch() {
		// The client left mid-body, and the watch closed the connection.
		s.clientGone, upstreamOK = true, false
	}
	if upstreamOK && !resp.close && uc.r == uc.w {
		p.pool.put(uc, now)
	} else {
		uc.c.Close()
	}
	return kind != bodyEOF && !upstreamOK && !s.clientGone
}

// directStream copies a response body from a node-proxy connection to a
// ResponseWriter.
type directStream struct {
	w          http.ResponseWriter
	uc         *upConn
	pending    bool // written since the last flush
	cleared    bool // the head's read deadline is off
	clientGone bool // a write or flush to the client failed
	// While a body streams, the request's context watches the client: a
	// client that leaves (an HTTP/2 stream reset, a closed connection)
	// closes the node-proxy connection, so a quiet stream (server-sent
	// events) does not hold it, and the app hears the client is gone.
	ctx       context.Context
	stopWatch func() bool
}

// write sends b on; false when the client is gone.
func (s *directStream) write(b []byte) bool {
	if len(b) == 0 {
		return true
	}
	s.pending = true
	if _, err := s.w.Write(b); err != nil {
		s.clientGone = true
		return false
	}
	return true
}

// flush flushes w as http.ResponseController does, without the
// controller's allocation: every writer the edge serves has FlushError.
func (s *directStream) flush() error {
	if f, ok := s.w.(interface{ FlushError() error }); ok {
		return f.FlushError()
	}
	return http.NewResponseController(s.w).Flush()
}

// fill flushes what was written (the next read may wait for the app) and
// reads more of the body.
func (s *directStream) fill() error {
	if s.pending {
		if err := s.flush(); err != nil {
			s.clientGone = true
			return err
		}
		s.pending = false
	}
	if !s.cleared {
		s.uc.clearDeadline() // a streamed body runs as long as it flows
		s.cleared = true
		c := s.uc.c
		s.stopWatch = context.AfterFunc(s.ctx, func() { c.Close() })
	}
	if s.uc.r == s.uc.w {
		s.uc.r, s.uc.w = 0, 0
	}
	return s.uc.fill()
}

// copyLength copies n bytes; true when all of them came.
func (s *directStream) copyLength(n int64) bool {
	uc := s.uc
	for {
		k := min(int64(uc.w-uc.r), n)
		if !s.write(uc.buf[uc.r : uc.r+int(k)]) {
			return false
		}
		uc.r += int(k)
		if n -= k; n == 0 {
			return true
		}
		if s.fill() != nil {
			return false // the client's response is cut short
		}
	}
}

// copyEOF copies a body that ends when the node-proxy closes. (Whether it
// closed early nobody can tell: the client's response ends too.)
func (s *directStream) copyEOF() {
	uc := s.uc
	for {
		if !s.write(uc.buf[uc.r:uc.w]) {
			return
		}
		uc.r = uc.w
		if s.fill() != nil {
			return
		}
	}
}

// copyChunked decodes a chunked body, and sets its trailer fields (to be
// sent after the body) in h.
func (s *directStream) copyChunked(h http.Header) bool {
	uc := s.uc
	for {
		line, err := s.line()
		if err != nil {
			return false
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i] // chunk extensions mean nothing here
		}
		size, err := strconv.ParseInt(string(trimOWS(line)), 16, 64)
		if err != nil || size < 0 {
			return false
		}
		if size == 0 {
			break
		}
		for size > 0 {
			if uc.r == uc.w && s.fill() != nil {
				return false
			}
			k := min(int64(uc.w-uc.r), size)
			if !s.write(uc.buf[uc.r : uc.r+int(k)]) {
				return false
			}
			uc.r += int(k)
			size -= k
		}
		if line, err := s.line(); err != nil || len(line) != 0 {
			return false
		}
	}
	for {
		line, err := s.line()
		if err != nil {
			return false
		}
		if len(line) == 0 {
			return true
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 || !isToken(line[:colon]) {
			return false
		}
		k := http.TrailerPrefix + http.CanonicalHeaderKey(string(line[:colon]))
		h[k] = append(h[k], string(trimOWS(line[colon+1:])))
	}
}

// line reads one CRLF-terminated line of chunked framing.
func (s *directStream) line() ([]byte, error) {
	uc := s.uc
	for {
		line, next, res := nextLine(uc.buf[:uc.w], uc.r)
		switch res {
		case parseOK:
			uc.r = next
			return line, nil
		case parseFallback:
			return nil, errBadChunk
		}
		if err := s.fill(); err != nil {
			return nil, err
		}
	}
}
