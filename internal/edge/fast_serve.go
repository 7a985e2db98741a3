package edge

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/zeitwork/zeitwork/internal/nodeproxy"
)

// serveFast forwards the request fc has read; false closes the client
// connection. The guarantees are the stdlib path's (upstream.RoundTrip):
// the same instance choice, a retry only when no app saw the request, the
// same passive health, headers and error pages.
func (p *Proxy) serveFast(fc *fastConn) bool {
	q, route := &fc.x.req, fc.x.route
	start := time.Now()
	rid := q.rid
	if !validRequestID(rid) {
		rid = fc.newRequestID(start)
	}
	prefix := fc.upstreamHead(rid)
	// A body is always whole in memory here, so any attempt can send it;
	// a request without one can also go again on a fresh connection if a
	// reused one turns out closed (what net/http calls replayable).
	replayable := q.contentLength == 0 && isReplayableMethod(q.method)

	// The client is watched if the wait goes long (awaitHead).
	w := &fc.x.watch
	w.begin()
	w.client = fc.c
	uc, h, failure := p.attempt(route, fc.x, prefix, q.body, isHead(q.method), replayable, start, w)
	w.end()
	w.client = nil
	if errors.Is(failure, context.Canceled) {
		p.cfg.Metrics.requestFast(route.ProjectID, statusClientClosed, time.Since(start))
		return false // it left
	}
	if failure == nil {
		took := time.Since(start)
		keep := fc.forward(p, uc, rid, start)
		h.inflight.Add(-1)
		p.cfg.Metrics.requestFast(route.ProjectID, fc.x.resp.status, took)
		return keep
	}
	status, ok := fc.errorPage(failure, rid, start)
	p.cfg.Metrics.requestFast(route.ProjectID, status, time.Since(start))
	p.cfg.Log.Debug("upstream failed", "project_id", route.ProjectID, "request_id", string(rid), "status", status, "err", failure)
	return ok
}

// attempt sends the request, whose head up to the instance field is
// x.out[:prefix], with body, to the route's instances in turn until one
// answers or none is left that may be tried. The guarantees are the stdlib
// path's (upstream.RoundTrip): the same instance choice, a retry only when
// no app saw the request, the same passive health. On success the response
// head is in x.resp, and the instance's in-flight count stays raised until
// the caller has forwarded the response. With a watch, a client that
// leaves ends it with context.Canceled.
func (p *Proxy) attempt(route Route, x *exchangeState, prefix int, body []byte, head, replayable bool, start time.Time, w *headWatch) (*upConn, *health, error) {
	var triedBuf [maxAttempts]int
	tried := triedBuf[:0]
	var failure error = errNoInstance
	for len(tried) < maxAttempts {
		i, ok := pick(route.Backends, tried)
		if !ok {
			break
		}
		tried = append(tried, i)
		b := &route.Backends[i]
		h := b.health
		if h == nil {
			h = &health{}
		}
		x.out = x.out[:prefix]
		x.out = append(x.out, "X-Zeitwork-Instance: "...)
		x.out = appendUUID(x.out, b.InstanceID)
		x.out = append(x.out, "\r\n\r\n"...)
		x.out = append(x.out, body...)

		h.inflight.Add(1)
		uc, err := p.roundTrip(x.out, &x.resp, b.NodeProxy, replayable, start, w)
		if errors.Is(err, context.Canceled) {
			h.inflight.Add(-1)
			return nil, nil, err // the client left: not the instance's fault
		}
		if err != nil {
			h.inflight.Add(-1)
			reason := reasonOf(err)
			p.cfg.Metrics.upstreamError(route.ProjectID.String(), reason)
			if reason == "refused" {
				h.down(time.Now())
				continue // nothing left the edge: another instance is safe
			}
			failure = err
			break
		}
		resp := &x.resp
		if code := resp.proxyError; code != nil {
			if c := string(code); nodeproxy.Retryable(c) {
				// The node-proxy says the instance is gone or refused it:
				// the app saw nothing.
				h.down(time.Now())
				p.cfg.Metrics.upstreamError(route.ProjectID.String(), c)
				p.discard(uc, resp, resp.body(head))
				h.inflight.Add(-1)
				failure = errNoInstance
				continue
			}
		} else {
			h.up()
		}
		return uc, h, nil
	}
	return nil, nil, failure
}

// upstreamHead writes the request to the node-proxy, up to the instance
// header, into fc.x.out and returns its length. The fields are the
// client's, less the hop-by-hop ones and those the edge sets (as Rewrite
// does on the stdlib path).
func (fc *fastConn) upstreamHead(rid []byte) int {
	q := &fc.x.req
	o := append(fc.x.out[:0], q.method...)
	o = append(o, ' ')
	o = append(o, q.target...)
	o = append(o, " HTTP/1.1\r\nHost: "...)
	o = append(o, q.host...)
	o = append(o, "\r\n"...)
	for i := range q.n {
		f := &q.fields[i]
		if f.drop || f.spoofable && !fc.trusted {
			continue
		}
		o = append(o, f.name...)
		o = append(o, ": "...)
		o = append(o, f.value...)
		o = append(o, "\r\n"...)
	}
	if q.teTrailers {
		o = append(o, "Te: trailers\r\n"...)
	}
	o = append(o, "X-Forwarded-For: "...)
	o = fc.appendClient(o)
	o = append(o, "\r\nX-Forwarded-Host: "...)
	o = append(o, q.host...)
	o = append(o, "\r\nX-Forwarded-Proto: "...)
	if fc.trusted && (string(q.xfProto) == "https" || string(q.xfProto) == "http") {
		o = append(o, q.xfProto...)
	} else {
		o = append(o, fc.fl.proto...)
	}
	o = append(o, "\r\nX-Request-Id: "...)
	o = append(o, rid...)
	o = append(o, "\r\nX-Zeitwork-Proxy-Token: "...)
	o = append(o, fc.fl.p.cfg.Token...)
	o = append(o, "\r\n"...)
	if q.contentLength > 0 || !isHead(q.method) && string(q.method) != "GET" {
		// What net/http's transport sends: a length for any body, and 0
		// for the methods servers expect a body with.
		o = append(o, "Content-Length: "...)
		o = strconv.AppendInt(o, q.contentLength, 10)
		o = append(o, "\r\n"...)
	}
	fc.x.out = o
	return len(o)
}

// appendClient is the client's address: the peer, or what a trusted proxy
// in front says it is.
func (fc *fastConn) appendClient(o []byte) []byte {
	if fc.trusted && fc.x.req.cfIP != nil {
		if ip, err := netip.ParseAddr(string(fc.x.req.cfIP)); err == nil {
			return ip.AppendTo(o)
		}
	}
	return append(o, fc.peerText...)
}

// roundTrip sends out to addr and reads the response head into resp.
func (p *Proxy) roundTrip(out []byte, resp *response, addr string, replayable bool, now time.Time, w *headWatch) (*upConn, error) {
	for {
		uc, reused, err := p.pool.get(addr, !replayable, now)
		if err != nil {
			return nil, err
		}
		n := 0
		if w.track(uc) {
			if n, err = uc.c.Write(out); err == nil {
				err = p.awaitHead(uc, resp, now, w)
			}
		}
		if w.untrack() {
			err = context.Canceled // the connection is closed: no retry
		}
		if err == nil {
			return uc, nil
		}
		uc.c.Close()
		if err == context.Canceled {
			return nil, err
		}
		// A reused connection the node-proxy had closed: nothing of the
		// request was written, or it was replayable and nothing came back.
		// Either way no app saw it; try a fresh connection.
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout()
		if reused && !timeout && (n == 0 || replayable && uc.nread == 0) {
			continue
		}
		return nil, err
	}
}

// headWatch ends the direct exchange's wait for a response head when its
// client leaves (the request's context ends: an HTTP/2 stream reset, a
// closed connection): the node-proxy connection is closed, so the app
// hears of it rather than work for nobody until the upstream timeout, and
// nothing is retried. It lives in the pooled exchange state; a
// generation keeps a late call for an earlier request from touching the
// next one.
type headWatch struct {
	mu   sync.Mutex
	gen  uint64
	gone bool    // the client of this generation left
	uc   *upConn // the connection waited on

	// The goroutine path's client, watched once a wait goes long; nil on
	// the direct exchange, which watches its own way. Set and read by the
	// request's goroutine only.
	client net.Conn
}

// begin starts a request's watch, returning its generation.
func (w *headWatch) begin() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.gen++
	w.gone, w.uc = false, nil
	return w.gen
}

// end ends the watch of the request begun last.
func (w *headWatch) end() {
	w.mu.Lock()
	w.gen++
	w.uc = nil
	w.mu.Unlock()
}

// leave says the client of generation gen left.
func (w *headWatch) leave(gen uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.gen != gen {
		return // that request is over
	}
	w.gone = true
	if w.uc != nil {
		w.uc.c.Close()
	}
}

// track says uc is waited on; false when the client left already. A nil
// watch (the fast path's) never says so.
func (w *headWatch) track(uc *upConn) bool {
	if w == nil {
		return true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.uc = uc
	return !w.gone
}

// untrack ends the wait on the connection; true when the client left
// (the connection may then be closed).
func (w *headWatch) untrack() (gone bool) {
	if w == nil {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.uc = nil
	return w.gone
}

// forward writes the response head and streams its body to the client;
// false closes the client connection.
func (fc *fastConn) forward(p *Proxy, uc *upConn, rid []byte, now time.Time) bool {
	kind := fc.x.resp.body(isHead(fc.x.req.method))
	fc.appendResponseHead(kind, rid, now)
	resp := &fc.x.resp

	// clientOK is false when the client's response could not be completed
	// (it must then be closed); upstreamOK when the node-proxy connection
	// ended its response cleanly and may be used again.
	clientOK, upstreamOK := true, true
	switch kind {
	case bodyNone:
		clientOK = fc.write(fc.x.out)
	case bodyLength:
		clientOK, upstreamOK = fc.copyLength(uc, resp.contentLength)
	case bodyChunked:
		clientOK, upstreamOK = fc.copyChunked(uc)
	case bodyEOF:
		clientOK = fc.copyEOF(uc)
		upstreamOK = false
	}
	if upstreamOK && !resp.close && uc.r == uc.w {
		p.pool.put(uc, now)
	} else {
		uc.c.Close()
	}
	return clientOK
}

// appendResponseHead writes the client's response head into fc.x.out:
// the node-proxy's fields less the hop-by-hop ones, the request id, a
// Date, and chunked framing for a body that ends with the connection.
func (fc *fastConn) appendResponseHead(kind bodyKind, rid []byte, now time.Time) {
	resp, q := &fc.x.resp, &fc.x.req
	o := append(fc.x.out[:0], "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(resp.status), 10)
	o = append(o, ' ')
	if resp.reason != nil {
		o = append(o, resp.reason...)
	}
	o = append(o, "\r\n"...)
	for i := range resp.n {
		f := &resp.fields[i]
		if f.drop {
			continue
		}
		o = append(o, f.name...)
		o = append(o, ": "...)
		o = append(o, f.value...)
		o = append(o, "\r\n"...)
	}
	o = append(o, "X-Request-Id: "...)
	o = append(o, rid...)
	o = append(o, "\r\n"...)
	if !resp.hasDate {
		o = append(o, "Date: "...)
		o = appendDate(o, now)
		o = append(o, "\r\n"...)
	}
	if kind == bodyChunked || kind == bodyEOF {
		o = append(o, "Transfer-Encoding: chunked\r\n"...)
	}
	if q.close {
		o = append(o, "Connection: close\r\n"...)
	}
	o = append(o, "\r\n"...)
	fc.x.out = o
}

func (fc *fastConn) write(b []byte) bool {
	_, err := fc.c.Write(b)
	return err == nil
}

// copyLength streams n body bytes: what is already read goes out with the
// head, the rest as it arrives.
func (fc *fastConn) copyLength(uc *upConn, n int64) (clientOK, upstreamOK bool) {
	k := min(int64(uc.w-uc.r), n)
	fc.x.out = append(fc.x.out, uc.buf[uc.r:uc.r+int(k)]...)
	uc.r += int(k)
	n -= k
	if !fc.write(fc.x.out) {
		return false, false
	}
	if n > 0 {
		uc.clearDeadline() // a streamed body runs as long as it flows
	}
	for n > 0 {
		uc.r, uc.w = 0, 0
		m, err := uc.c.Read(uc.buf[:min(int64(len(uc.buf)), n)])
		if m > 0 {
			n -= int64(m)
			if !fc.write(uc.buf[:m]) {
				return false, false
			}
		}
		if err != nil && n > 0 {
			return false, false // the client's response is cut short: close it
		}
	}
	return true, true
}

// copyChunked passes a chunked body on unchanged, each piece as it comes.
func (fc *fastConn) copyChunked(uc *upConn) (clientOK, upstreamOK bool) {
	var s chunkScanner
	n, err := s.scan(uc.buf[uc.r:uc.w])
	if err != nil {
		return false, false
	}
	fc.x.out = append(fc.x.out, uc.buf[uc.r:uc.r+n]...)
	uc.r += n
	if !fc.write(fc.x.out) {
		return false, false
	}
	if s.state != chunkDone {
		uc.clearDeadline()
	}
	for s.state != chunkDone {
		uc.r, uc.w = 0, 0
		m, rerr := uc.c.Read(uc.buf)
		uc.w = m
		if m > 0 {
			n, err := s.scan(uc.buf[:m])
			if err != nil {
				return false, false
			}
			uc.r = n
			if !fc.write(uc.buf[:n]) {
				return false, false
			}
		}
		if rerr != nil && s.state != chunkDone {
			return false, false
		}
	}
	return true, true
}

// copyEOF forwards a body that ends when the node-proxy closes, chunked
// so the client connection can stay open.
func (fc *fastConn) copyEOF(uc *upConn) bool {
	if uc.w > uc.r {
		fc.x.out = appendChunk(fc.x.out, uc.buf[uc.r:uc.w])
	}
	if !fc.write(fc.x.out) {
		return false
	}
	uc.clearDeadline()
	for {
		m, err := uc.c.Read(uc.buf)
		if m > 0 {
			fc.x.out = appendChunk(fc.x.out[:0], uc.buf[:m])
			if !fc.write(fc.x.out) {
				return false
			}
		}
		if errors.Is(err, io.EOF) {
			return fc.write([]byte("0\r\n\r\n"))
		}
		if err != nil {
			return false
		}
	}
}

func appendChunk(o, b []byte) []byte {
	o = strconv.AppendInt(o, int64(len(b)), 16)
	o = append(o, "\r\n"...)
	o = append(o, b...)
	return append(o, "\r\n"...)
}

// discard drops a refused attempt's response: a small body is read so the
// connection can be used again, anything else closes it.
func (p *Proxy) discard(uc *upConn, resp *response, kind bodyKind) {
	switch kind {
	case bodyNone:
		p.pool.put(uc, time.Now())
		return
	case bodyLength:
		if n := resp.contentLength; n <= smallBody {
			for int64(uc.w-uc.r) < n {
				if uc.fill() != nil {
					uc.c.Close()
					return
				}
			}
			uc.r += int(n)
			if uc.r == uc.w {
				p.pool.put(uc, time.Now())
				return
			}
		}
	}
	uc.c.Close()
}

// errorPage answers a request no instance could take, as errorHandler
// does on the stdlib path; ok is false when the client is gone.
func (fc *fastConn) errorPage(err error, rid []byte, now time.Time) (status int, ok bool) {
	status = fc.appendErrorPage(err, rid, now)
	return status, fc.write(fc.x.out)
}

// appendErrorPage writes the error page for err into fc.x.out.
func (fc *fastConn) appendErrorPage(err error, rid []byte, now time.Time) (status int) {
	status, code, title, msg, retry := failurePage(err)
	var body bytes.Buffer
	writePage(&body, status, code, title, msg)
	o := append(fc.x.out[:0], "HTTP/1.1 "...)
	o = strconv.AppendInt(o, int64(status), 10)
	o = append(o, ' ')
	o = append(o, http.StatusText(status)...)
	o = append(o, "\r\nContent-Type: text/html; charset=utf-8\r\nCache-Control: no-store\r\nX-Zeitwork-Error: "...)
	o = append(o, code...)
	o = append(o, "\r\nX-Content-Type-Options: nosniff\r\nX-Request-Id: "...)
	o = append(o, rid...)
	if retry {
		o = append(o, "\r\nRetry-After: 5"...)
	}
	o = append(o, "\r\nDate: "...)
	o = appendDate(o, now)
	o = append(o, "\r\nContent-Length: "...)
	o = strconv.AppendInt(o, int64(body.Len()), 10)
	if fc.x.req.close {
		o = append(o, "\r\nConnection: close"...)
	}
	o = append(o, "\r\n\r\n"...)
	if !isHead(fc.x.req.method) {
		o = append(o, body.Bytes()...)
	}
	fc.x.out = o
	return status
}

// failurePage is the error page for a request no instance answered: the
// same on every data path.
func failurePage(err error) (status int, code, title, msg string, retry bool) {
	var netErr net.Error
	switch {
	case errors.Is(err, errNoInstance):
		return 503, "no_healthy_instance", "App unavailable", "No instance of this app could be reached. Try again in a few seconds.", true
	case errors.As(err, &netErr) && netErr.Timeout():
		return 504, "upstream_timeout", "App timed out", "The app did not answer in time.", false
	}
	return 502, "upstream_error", "App failed", "The app closed the connection or sent a broken response.", false
}

func isHead(method []byte) bool { return string(method) == "HEAD" }

func isReplayableMethod(method []byte) bool {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE":
		return true
	}
	return false
}

// validRequestID is requestID's rule for keeping a client's id.
func validRequestID(v []byte) bool {
	if len(v) < 8 || len(v) > 64 {
		return false
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == ':') {
			return false
		}
	}
	return true
}

func appendUUID(o []byte, u [16]byte) []byte {
	const hex = "0123456789abcdef"
	for i, x := range u {
		if i == 4 || i == 6 || i == 8 || i == 10 {
			o = append(o, '-')
		}
		o = append(o, hex[x>>4], hex[x&0x0f])
	}
	return o
}
